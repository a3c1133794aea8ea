//! Source files: their names and text, and the byte-offset → line/column mapping used only when
//! rendering. Loading from disk is the one I/O edge of the front end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{MietteError, MietteSpanContents, NamedSource, SourceCode, SourceSpan, SpanContents};

/// Index of a source in a [`Sources`] collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub usize);

/// One file's text as read, with the name used in diagnostics.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub path: Option<PathBuf>,
    pub text: Arc<String>,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(name: impl Into<String>, path: Option<PathBuf>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        // Lines end as miette counts them (`\n`, `\r\n` or a lone `\r`), so the window
        // [`SourceCode`] reads agrees with its line numbers.
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        line_starts.extend(bytes.iter().enumerate().filter_map(|(i, &b)| {
            let ends = b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
            ends.then_some(i + 1)
        }));
        Source {
            name: name.into(),
            path,
            text: Arc::new(text),
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    pub fn named(&self) -> NamedSource<Arc<String>> {
        NamedSource::new(self.name.clone(), Arc::clone(&self.text)).with_language("kdl")
    }
}

/// Reads a span's context from the few lines around it, found through the line index, rather
/// than by scanning the text from its start as miette does for a plain string: rendering n
/// diagnostics of one file is then linear in n, not quadratic.
impl SourceCode for Source {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let offset = span.offset().min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        // One line more than asked for: miette's scan then sees the same lines as on the
        // whole text.
        let first = line.saturating_sub(context_lines_before + 1);
        let start = self.line_starts[first];
        let window = &self.text.as_bytes()[start..];
        let local = SourceSpan::new(
            (span.offset() - start.min(span.offset())).into(),
            span.len(),
        );
        let inner = window.read_span(&local, context_lines_before, context_lines_after)?;
        let contents = MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            SourceSpan::new((inner.span().offset() + start).into(), inner.span().len()),
            inner.line() + first,
            inner.column(),
            inner.line_count() + first,
        )
        .with_language("kdl");
        Ok(Box::new(contents))
    }
}

/// Every source a command has read, addressed by [`SourceId`].
#[derive(Debug, Default, Clone)]
pub struct Sources {
    files: Vec<Source>,
}

impl Sources {
    pub fn add(&mut self, source: Source) -> SourceId {
        self.files.push(source);
        SourceId(self.files.len() - 1)
    }

    pub fn get(&self, id: SourceId) -> &Source {
        &self.files[id.0]
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (SourceId, &Source)> {
        self.files.iter().enumerate().map(|(i, s)| (SourceId(i), s))
    }
}

/// The largest file the front end reads: experiments and their bases are small text, so
/// anything larger is a mistake (a data file, `/dev/zero`) that must not be read into memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file could not be read; reported as a diagnostic on the file's name.
#[derive(Debug)]
pub enum ReadFailure {
    Io(std::io::Error),
    /// A FIFO, device, socket or directory: reading it could block or never end.
    NotAFile {
        kind: &'static str,
    },
    TooLarge {
        bytes: u64,
        limit: u64,
    },
    /// The text up to the first invalid byte is valid; `lossy` is the whole file decoded lossily.
    NotUtf8 {
        valid_up_to: usize,
        lossy: String,
    },
}

impl ReadFailure {
    /// A short reason for a diagnostic.
    pub fn reason(&self) -> String {
        match self {
            ReadFailure::Io(e) => match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_owned(),
                std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                _ => e.to_string(),
            },
            ReadFailure::NotAFile { kind } => format!("it is {kind}, not a regular file"),
            ReadFailure::TooLarge { bytes, limit } => format!(
                "it is larger than {} MiB ({bytes} bytes or more)",
                limit.div_ceil(1024 * 1024)
            ),
            ReadFailure::NotUtf8 { .. } => "not UTF-8 text".to_owned(),
        }
    }
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`] as UTF-8 text. Anything else (a FIFO,
/// a device such as `/dev/zero`, a directory) is refused before it is opened, and the read
/// itself stops after the limit, so no path makes this block or fill memory.
pub fn read(path: &Path) -> Result<String, ReadFailure> {
    let bytes = read_bytes(path, MAX_FILE_BYTES)?;
    String::from_utf8(bytes).map_err(|e| {
        let valid_up_to = e.utf8_error().valid_up_to();
        ReadFailure::NotUtf8 {
            valid_up_to,
            lossy: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    })
}

/// The largest JSON or template file of a model directory or tokenizer that xp reads.
pub const MODEL_FILE_BYTES: u64 = 1 << 30;

/// Opens a path a user gave for reading, if it is a regular file: a FIFO, device, socket or
/// directory is refused before it is opened (reading it could block or never end), and the
/// open does not wait should the path have become a FIFO since.
pub fn open_regular(path: &Path) -> Result<std::fs::File, ReadFailure> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let meta = std::fs::metadata(path).map_err(ReadFailure::Io)?;
    let ty = meta.file_type();
    if !ty.is_file() {
        let kind = if ty.is_dir() {
            "a directory"
        } else if ty.is_fifo() {
            "a named pipe (FIFO)"
        } else if ty.is_socket() {
            "a socket"
        } else if ty.is_char_device() || ty.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(ReadFailure::NotAFile { kind });
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadFailure::Io)
}

/// Reads a regular file ([`open_regular`]) of at most `limit` bytes; the read stops after the
/// limit, so a file that grows meanwhile cannot fill memory either.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, ReadFailure> {
    use std::io::Read;
    let file = open_regular(path)?;
    let len = file.metadata().map_err(ReadFailure::Io)?.len();
    if len > limit {
        return Err(ReadFailure::TooLarge { bytes: len, limit });
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadFailure::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadFailure::TooLarge {
            bytes: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// Reads a regular file of at most `limit` bytes as UTF-8 text, the reason as a short phrase.
pub fn read_text_limited(path: &Path, limit: u64) -> Result<String, String> {
    let bytes = read_bytes(path, limit).map_err(|e| e.reason())?;
    String::from_utf8(bytes).map_err(|_| {
        ReadFailure::NotUtf8 {
            valid_up_to: 0,
            lossy: String::new(),
        }
        .reason()
    })
}
