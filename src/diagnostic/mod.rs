//! The diagnostics every stage reports: collected, never thrown, each tied to its source, and
//! turned into the stable JSON form of `xp validate --format json`.

#[cfg(feature = "cli")]
pub mod render;
pub(crate) mod suggest;

use std::fmt;

use miette::{Diagnostic, Severity};
use serde::Serialize;

use crate::front::source::{SourceId, Sources};

/// One stage error or warning, with the source its spans point into.
pub struct Diag {
    pub source: Option<SourceId>,
    pub inner: Box<dyn Diagnostic + Send + Sync>,
}

impl Diag {
    pub fn severity(&self) -> Severity {
        self.inner.severity().unwrap_or(Severity::Error)
    }

    pub fn code(&self) -> String {
        self.inner.code().map(|c| c.to_string()).unwrap_or_default()
    }
}

impl fmt::Debug for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.inner)
    }
}

/// All diagnostics of one command, in the order they were found (grouped by file).
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diag>,
}

impl Diagnostics {
    pub fn push(
        &mut self,
        source: Option<SourceId>,
        diag: impl Diagnostic + Send + Sync + 'static,
    ) {
        self.items.push(Diag {
            source,
            inner: Box::new(diag),
        });
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn push_diag(&mut self, diag: Diag) {
        self.items.push(diag);
    }

    pub fn extend_from(&mut self, diags: impl IntoIterator<Item = Diag>) {
        self.items.extend(diags);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diag> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors() > 0
    }

    fn count(&self, severity: Severity) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity() == severity)
            .count()
    }

    /// Keeps one advice of each text per file (an alias used in several places is said
    /// once), or none when `quiet`.
    pub fn thin_advice(&mut self, quiet: bool) {
        let mut seen = std::collections::HashSet::new();
        self.items.retain(|d| {
            d.severity() != Severity::Advice
                || (!quiet && seen.insert((d.source, d.code(), d.inner.to_string())))
        });
    }

    /// Orders diagnostics by file, then by position, keeping the discovery order of ties.
    pub fn sort(&mut self) {
        self.items.sort_by_key(|d| {
            let offset = d
                .inner
                .labels()
                .and_then(|mut l| l.next())
                .map_or(0, |l| l.offset());
            (d.source, offset)
        });
    }

    /// The one-line summary printed after human output.
    pub fn summary(&self, files: usize) -> String {
        format!(
            "{}, {} in {}",
            plural(self.errors(), "error"),
            plural(self.warnings(), "warning"),
            plural(files, "file")
        )
    }

    pub fn to_json(&self, sources: &Sources) -> Vec<JsonDiagnostic> {
        self.items
            .iter()
            .map(|d| JsonDiagnostic::new(d, sources))
            .collect()
    }
}

pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The stable machine-readable form of a diagnostic.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic {
    pub code: String,
    pub severity: &'static str,
    pub message: String,
    pub help: Option<String>,
    pub file: Option<String>,
    pub labels: Vec<JsonLabel>,
    /// Diagnostics this one groups (e.g. every problem of one data file).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<JsonDiagnostic>,
}

#[derive(Debug, Serialize)]
pub struct JsonLabel {
    pub message: Option<String>,
    pub offset: usize,
    pub length: usize,
    pub line: usize,
    pub column: usize,
}

impl JsonDiagnostic {
    fn new(d: &Diag, sources: &Sources) -> Self {
        Self::of(d.inner.as_ref(), d.source.map(|id| sources.get(id)))
    }

    /// `source` is the file of xp's own sources the spans point into; diagnostics about data
    /// files carry their own source code and name instead.
    fn of(d: &dyn Diagnostic, source: Option<&crate::front::source::Source>) -> Self {
        let own = if source.is_none() {
            d.source_code()
        } else {
            None
        };
        let mut own_name = None;
        let labels = d
            .labels()
            .map(|labels| {
                labels
                    .map(|l| {
                        let (line, column) = match (source, own) {
                            (Some(s), _) => s.line_col(l.offset()),
                            (None, Some(code)) => match code.read_span(l.inner(), 0, 0) {
                                Ok(contents) => {
                                    own_name = contents.name().map(str::to_owned);
                                    (contents.line() + 1, contents.column() + 1)
                                }
                                Err(_) => (0, 0),
                            },
                            (None, None) => (0, 0),
                        };
                        JsonLabel {
                            message: l.label().map(str::to_owned),
                            offset: l.offset(),
                            length: l.len(),
                            line,
                            column,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let related: Vec<JsonDiagnostic> = d
            .related()
            .map(|r| r.map(|inner| Self::of(inner, source)).collect())
            .unwrap_or_default();
        // A group (every problem of one data file) is about the file its problems are in.
        let group_file = related
            .first()
            .and_then(|r| r.file.clone())
            .filter(|f| related.iter().all(|r| r.file.as_ref() == Some(f)));
        JsonDiagnostic {
            code: d.code().map(|c| c.to_string()).unwrap_or_default(),
            severity: match d.severity().unwrap_or(Severity::Error) {
                Severity::Error => "error",
                Severity::Warning => "warning",
                Severity::Advice => "advice",
            },
            message: d.to_string(),
            help: d.help().map(|h| h.to_string()),
            file: source.map(|s| s.name.clone()).or(own_name).or(group_file),
            labels,
            related,
        }
    }
}
