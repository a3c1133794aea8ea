//! Failures over the points of a sweep: each kind of failure (code and place) reported once,
//! with the first point that fails it and how many points do.

use std::collections::BTreeMap;
use std::fmt;

use miette::{Diagnostic, LabeledSpan};

use crate::diagnostic::Diag;
use crate::front::source::SourceId;

/// A diagnostic raised for some points of a sweep, reported once with the first failing point.
#[derive(Debug)]
struct AtPoints {
    inner: Box<dyn Diagnostic + Send + Sync>,
    point: String,
    failing: usize,
    total: usize,
}

impl fmt::Display for AtPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = matches!(self.inner.severity(), None | Some(miette::Severity::Error));
        let verb = if error { "fails for" } else { "holds for" };
        match (self.failing, self.total) {
            // A single run needs no point to tell it apart.
            (_, 1) => write!(f, "{}", self.inner),
            (2, 2) => write!(f, "{} (at {}; {verb} both runs)", self.inner, self.point),
            (n, t) if n == t => {
                write!(f, "{} (at {}; {verb} all {t} runs)", self.inner, self.point)
            }
            (n, t) => write!(
                f,
                "{} (at {}; {verb} {n} of {t} runs)",
                self.inner, self.point
            ),
        }
    }
}

impl std::error::Error for AtPoints {}

impl Diagnostic for AtPoints {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.help()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.inner.labels()
    }
}

/// Failures collected over all points, keyed by code and place.
#[derive(Default)]
pub(super) struct Failures {
    /// By (code, source, first label offset and length): the first diagnostic, its point, and
    /// how many points failed the same way.
    by_key: BTreeMap<FailureKey, (Diag, String, usize)>,
}

type FailureKey = (String, Option<SourceId>, usize, usize);

impl Failures {
    pub(super) fn add(&mut self, diag: Diag, point: &str) {
        let first = diag
            .inner
            .labels()
            .and_then(|mut l| l.next())
            .map_or((0, 0), |l| (l.offset(), l.len()));
        let key = (diag.code(), diag.source, first.0, first.1);
        self.by_key
            .entry(key)
            .and_modify(|e| e.2 += 1)
            .or_insert((diag, point.to_owned(), 1));
    }

    pub(super) fn into_diags(self, total: usize) -> Vec<Diag> {
        self.by_key
            .into_values()
            .map(|(diag, point, failing)| Diag {
                source: diag.source,
                inner: Box::new(AtPoints {
                    inner: diag.inner,
                    point,
                    failing,
                    total,
                }),
            })
            .collect()
    }
}
