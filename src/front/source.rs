//! Source files: their names and text, and the byte-offset → line/column mapping used only when
//! rendering. Loading from disk is the one I/O edge of the front end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::NamedSource;

/// Index of a source in a [`Sources`] collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(pub usize);

/// One file's text as read, with the name used in diagnostics.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub path: Option<PathBuf>,
    pub text: Arc<String>,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(name: impl Into<String>, path: Option<PathBuf>, text: impl Into<String>) -> Self {
        let text: String = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
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

/// Every source a command has read, addressed by [`SourceId`].
#[derive(Debug, Default)]
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

/// Why a file could not be read; reported as a diagnostic on the file's name.
#[derive(Debug)]
pub enum ReadFailure {
    Io(std::io::Error),
    NotUtf8 { valid_up_to: usize },
}

/// Reads a file as UTF-8 text.
pub fn read(path: &Path) -> Result<String, ReadFailure> {
    let bytes = std::fs::read(path).map_err(ReadFailure::Io)?;
    String::from_utf8(bytes).map_err(|e| ReadFailure::NotUtf8 {
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}
