//! The load stage: experiment files, and every file they `extends`, from disk into
//! [`Sources`] and parsed trees. A file that cannot be read becomes a diagnostic like any other
//! mistake, so one bad path never hides the others.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use crate::diagnostic::Diagnostics;
use crate::front::parse;
use crate::front::source::{self, ReadFailure, Source, SourceId, Sources};
use crate::front::tree::{self, Node};

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

/// The files of a command and every file they `extends`, parsed into trees.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The files named on the command line, in order (those that could be read and parsed).
    pub roots: Vec<SourceId>,
    /// Parsed trees by source.
    pub trees: BTreeMap<SourceId, Vec<Node>>,
    /// Base files by their normalized path: the source, or why it could not be used.
    pub bases: BTreeMap<PathBuf, Result<SourceId, BaseFailure>>,
}

/// Why an `extends` target could not be used; compose reports it at the `extends` span.
#[derive(Debug, Clone)]
pub enum BaseFailure {
    Unreadable(String),
    /// It was read but has syntax errors, already reported.
    Invalid,
}

/// Loads and parses the given files and, transitively, every file they extend.
pub fn load_all(paths: &[PathBuf], sources: &mut Sources, diags: &mut Diagnostics) -> Loaded {
    let mut loaded = Loaded::default();
    let mut queue: Vec<SourceId> = Vec::new();
    for path in paths {
        if let Some(id) = load(path, sources, diags)
            && let Some(nodes) = parse_source(id, sources, diags)
        {
            loaded.roots.push(id);
            loaded.trees.insert(id, nodes);
            queue.push(id);
        }
    }
    while let Some(id) = queue.pop() {
        let base_dir = base_dir(sources.get(id));
        let targets: Vec<PathBuf> = loaded.trees[&id]
            .iter()
            .filter_map(extends_target)
            .map(|t| normalize(&base_dir.join(t)))
            .collect();
        for target in targets {
            if loaded.bases.contains_key(&target) {
                continue;
            }
            let result = match source::read(&target) {
                Ok(text) => {
                    let base = sources.add(Source::new(
                        target.display().to_string(),
                        Some(target.clone()),
                        text,
                    ));
                    match parse_source(base, sources, diags) {
                        Some(nodes) => {
                            loaded.trees.insert(base, nodes);
                            queue.push(base);
                            Ok(base)
                        }
                        None => Err(BaseFailure::Invalid),
                    }
                }
                Err(ReadFailure::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(BaseFailure::Unreadable("no such file".into()))
                }
                Err(ReadFailure::Io(e)) => Err(BaseFailure::Unreadable(e.to_string())),
                Err(ReadFailure::NotUtf8 { .. }) => {
                    Err(BaseFailure::Unreadable("not UTF-8 text".into()))
                }
            };
            loaded.bases.insert(target, result);
        }
    }
    loaded
}

/// Loads text that did not come from a file; `extends` in it are relative to the working directory.
pub fn load_text(name: &str, text: &str, sources: &mut Sources, diags: &mut Diagnostics) -> Loaded {
    let id = sources.add(Source::new(name, None, text));
    let mut loaded = Loaded::default();
    if let Some(nodes) = parse_source(id, sources, diags) {
        loaded.roots.push(id);
        loaded.trees.insert(id, nodes);
    }
    loaded
}

fn parse_source(id: SourceId, sources: &Sources, diags: &mut Diagnostics) -> Option<Vec<Node>> {
    let text = sources.get(id).text.clone();
    parse::parse(&text, id, diags).map(|doc| tree::from_kdl(&doc, id))
}

/// The directory `extends` paths in a source are relative to.
pub fn base_dir(source: &Source) -> PathBuf {
    source
        .path
        .as_ref()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn extends_target(experiment: &Node) -> Option<&str> {
    experiment
        .child("extends")
        .and_then(|e| e.arg(0))
        .and_then(|a| a.as_str())
}

/// `a/./b/../c` → `a/c`, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
