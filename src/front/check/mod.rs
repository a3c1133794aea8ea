//! The schema stage: checks a tree against a [`Schema`] and collects every mistake — unknown
//! names (with the typo checked as its suggestion), missing and mistyped values, ranges, enums,
//! exclusive options, duplicates — plus static template checks. It also normalizes what it
//! checks in place: aliases become canonical names, and text rendered by a template is read as
//! its slot's type. Pure: no I/O.

mod arguments;
mod error;
pub(crate) mod experiment;
mod kind;
mod messages;
mod nodes;
mod properties;
mod templates;
mod value;
mod view;

use std::collections::BTreeSet;

use miette::Diagnostic;

pub use error::CheckError;
pub use value::range_rule;

use crate::diagnostic::Diag;
use crate::front::schema::Schema;
use crate::front::source::SourceId;
use crate::front::template::{self, Scope};
use crate::front::tree::Node;
use view::View;

/// A template found while checking, for analyses that need every use (unused axes).
#[derive(Debug, Clone)]
pub struct TemplateUse {
    /// Index of the top-level node it is under.
    pub top: usize,
    /// Node names from the top-level node down to the value's node.
    pub path: Vec<String>,
    pub vars: BTreeSet<String>,
}

/// CheckOptions of one check.
pub struct CheckOptions {
    /// Every node may carry `when="{{ expr }}"` (experiments; not schemas).
    pub allow_when: bool,
    /// The template variables of a top-level node.
    pub scope_of: fn(&Node) -> Scope,
    /// Where a missing top-level node is reported.
    pub root: SourceId,
}

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub diags: Vec<Diag>,
    pub templates: Vec<TemplateUse>,
}

impl CheckReport {
    pub fn has_errors(&self) -> bool {
        self.diags
            .iter()
            .any(|d| d.severity() == miette::Severity::Error)
    }
}

/// Checks (and normalizes) a document's nodes.
pub fn check(nodes: &mut [Node], schema: &Schema, options: &CheckOptions) -> CheckReport {
    let mut checker = Checker {
        schema,
        options,
        env: template::shared(),
        report: CheckReport::default(),
        scope: Scope::default(),
        path: Vec::new(),
        top: 0,
    };
    let view = View {
        base: &schema.document,
        variant: None,
        union: false,
    };
    checker.check_children(nodes, &view, None);
    checker.report
}

struct Checker<'a> {
    schema: &'a Schema,
    options: &'a CheckOptions,
    env: &'static minijinja::Environment<'static>,
    report: CheckReport,
    scope: Scope,
    path: Vec<String>,
    top: usize,
}

impl<'a> Checker<'a> {
    fn push(&mut self, source: SourceId, error: impl Diagnostic + Send + Sync + 'static) {
        self.report.diags.push(Diag {
            source: Some(source),
            inner: Box::new(error),
        });
    }

    fn context(&self) -> String {
        match self.path.last() {
            Some(parent) => format!("in `{parent}`"),
            None => "at the top of the file".into(),
        }
    }
}
