//! The load stage: experiment files, and every file they `extends`, from disk into
//! [`Sources`] and parsed trees. A file that cannot be read becomes a diagnostic like any other
//! mistake, so one bad path never hides the others.

use std::collections::{BTreeMap, VecDeque};
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
        Err(ReadFailure::NotUtf8 { valid_up_to, lossy }) => {
            // The valid prefix decodes unchanged, so its offset holds in the lossy text.
            let offset = valid_up_to;
            let id = sources.add(Source::new(name.clone(), Some(path.to_path_buf()), lossy));
            diags.push(
                Some(id),
                LoadError::NotUtf8 {
                    path: name,
                    span: (offset, 1).into(),
                },
            );
            None
        }
        Err(failure) => {
            diags.push(
                None,
                LoadError::Unreadable {
                    path: name,
                    reason: failure.reason(),
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
    /// Further than [`MAX_EXTENDS`] files from every experiment that extends it; not read.
    TooDeep,
    /// It was read but has syntax errors, already reported.
    Invalid,
}

/// The longest `extends` chain: an experiment, its base, that base's base, … up to this many
/// bases. Composition recurses along the chain, and each link may read a file.
pub const MAX_EXTENDS: usize = 32;

/// Loads and parses the given files and, transitively, every file they extend, breadth first:
/// each base is reached at its shortest distance from a root, and bases more than
/// [`MAX_EXTENDS`] away are not read.
pub fn load_all(paths: &[PathBuf], sources: &mut Sources, diags: &mut Diagnostics) -> Loaded {
    let mut loaded = Loaded::default();
    let mut queue: VecDeque<(SourceId, usize)> = VecDeque::new();
    for path in paths {
        if let Some(id) = load(path, sources, diags)
            && let Some(nodes) = parse_source(id, sources, diags)
        {
            loaded.roots.push(id);
            loaded.trees.insert(id, nodes);
            queue.push_back((id, 0));
        }
    }
    while let Some((id, depth)) = queue.pop_front() {
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
            if depth >= MAX_EXTENDS {
                loaded.bases.insert(target, Err(BaseFailure::TooDeep));
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
                            queue.push_back((base, depth + 1));
                            Ok(base)
                        }
                        None => Err(BaseFailure::Invalid),
                    }
                }
                Err(failure) => Err(BaseFailure::Unreadable(failure.reason())),
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
