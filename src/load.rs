//! The load stage: experiment files from disk into [`Sources`]. A file that cannot be read
//! becomes a diagnostic like any other mistake, so one bad path never hides the others.

use std::path::Path;

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use crate::diagnostic::Diagnostics;
use crate::source::{self, ReadFailure, Source, SourceId, Sources};

#[derive(Debug, Error, Diagnostic)]
pub enum LoadError {
    #[error("cannot read `{path}`: {reason}")]
    #[diagnostic(
        code("xp::load::unreadable"),
        help("check the path; paths in an experiment are relative to the file that names them")
    )]
    Unreadable { path: String, reason: String },

    #[error("`{path}` is not UTF-8 text")]
    #[diagnostic(code("xp::load::not-utf8"), help("save the file as UTF-8"))]
    NotUtf8 {
        path: String,
        #[label("invalid UTF-8 from here")]
        span: SourceSpan,
    },
}

/// Reads one file. On failure a diagnostic is recorded and `None` returned; a file that is not
/// UTF-8 is kept (lossily decoded) so its diagnostic can show where.
pub fn load(path: &Path, sources: &mut Sources, diags: &mut Diagnostics) -> Option<SourceId> {
    let name = path.display().to_string();
    match source::read(path) {
        Ok(text) => Some(sources.add(Source::new(name, Some(path.to_path_buf()), text))),
        Err(ReadFailure::Io(e)) => {
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_owned(),
                std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                _ => e.to_string(),
            };
            diags.push(None, LoadError::Unreadable { path: name, reason });
            None
        }
        Err(ReadFailure::NotUtf8 { valid_up_to }) => {
            let bytes = std::fs::read(path).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let offset = String::from_utf8_lossy(&bytes[..valid_up_to.min(bytes.len())]).len();
            let id = sources.add(Source::new(name.clone(), Some(path.to_path_buf()), text));
            diags.push(
                Some(id),
                LoadError::NotUtf8 {
                    path: name,
                    span: (offset, 1).into(),
                },
            );
            None
        }
    }
}
