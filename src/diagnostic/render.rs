//! Human rendering of diagnostics with miette's graphical handler: colour only on a terminal
//! and never with NO_COLOR, a fixed width when not on a terminal so output is reproducible.

use std::fmt;
use std::io::IsTerminal;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, SourceCode};

use crate::diagnostic::{Diag, Diagnostics};
use crate::front::source::{Source, Sources};

/// Width used when the output is not a terminal (snapshots, CI logs).
pub const PLAIN_WIDTH: usize = 100;

pub struct Renderer {
    handler: GraphicalReportHandler,
}

impl Renderer {
    /// A renderer for a stream; `terminal` says whether it is one.
    pub fn new(terminal: bool) -> Self {
        let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let theme = if colour {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let width = if terminal {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(PLAIN_WIDTH)
        } else {
            PLAIN_WIDTH
        };
        Renderer {
            handler: GraphicalReportHandler::new_themed(theme).with_width(width),
        }
    }

    pub fn for_stdout() -> Self {
        Self::new(std::io::stdout().is_terminal())
    }

    pub fn for_stderr() -> Self {
        Self::new(std::io::stderr().is_terminal())
    }

    /// All diagnostics, each followed by a blank line.
    pub fn render(&self, diags: &Diagnostics, sources: &Sources) -> String {
        let mut out = String::new();
        for diag in diags.iter() {
            let source = diag.source.map(|id| sources.get(id));
            let wrapped = WithSource { diag, source };
            if self.handler.render_report(&mut out, &wrapped).is_err() {
                out.push_str(&format!("{}: {}\n", diag.code(), diag.inner));
            }
            out.push('\n');
        }
        out
    }
}

/// A diagnostic together with the text its spans point into.
struct WithSource<'a> {
    diag: &'a Diag,
    source: Option<&'a Source>,
}

impl fmt::Debug for WithSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diag, f)
    }
}

impl fmt::Display for WithSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.diag.inner, f)
    }
}

impl std::error::Error for WithSource<'_> {}

impl Diagnostic for WithSource<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.diag.inner.severity()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.inner.help()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.diag.inner.labels()
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        // Diagnostics about data files carry their own source.
        self.source
            .map(|s| s as &dyn SourceCode)
            .or_else(|| self.diag.inner.source_code())
    }
    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn Diagnostic> + 'b>> {
        self.diag.inner.related()
    }
}
