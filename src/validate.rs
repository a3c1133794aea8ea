//! The front end as one call: load → parse → check every file, collecting all diagnostics of
//! all files. `xp validate` prints what this returns; later commands stop on its errors.

use std::path::PathBuf;

use crate::check;
use crate::diagnostic::Diagnostics;
use crate::load;
use crate::parse;
use crate::schema;
use crate::source::{Source, SourceId, Sources};
use crate::tree::{self, Node};

/// Everything the front end read and found.
#[derive(Debug, Default)]
pub struct Checked {
    pub sources: Sources,
    pub diags: Diagnostics,
    /// The parsed documents (also those with schema errors), normalized by the check.
    pub documents: Vec<(SourceId, Vec<Node>)>,
}

/// Loads and checks experiment files.
pub fn validate_files(paths: &[PathBuf]) -> Checked {
    let mut out = Checked::default();
    for path in paths {
        if let Some(id) = load::load(path, &mut out.sources, &mut out.diags) {
            check_source(id, &mut out);
        }
    }
    out.diags.sort();
    out
}

/// Checks experiment text that did not come from a file (tests, the library API).
pub fn validate_text(name: &str, text: &str) -> Checked {
    let mut out = Checked::default();
    let id = out.sources.add(Source::new(name, None, text));
    check_source(id, &mut out);
    out.diags.sort();
    out
}

/// Checks a schema written in the dialect against the meta-schema.
pub fn validate_schema_text(name: &str, text: &str) -> Checked {
    let mut out = Checked::default();
    let id = out.sources.add(Source::new(name, None, text));
    if let Some(doc) = parse::parse(text, id, &mut out.diags) {
        let meta = match schema::load(schema::META_SOURCE) {
            Ok(meta) => meta,
            Err(e) => unreachable!("the embedded meta-schema is invalid: {e}"),
        };
        let options = check::Options {
            allow_when: false,
            scope_of: |_| crate::template::Scope::default(),
            root: id,
        };
        let mut nodes = tree::from_kdl(&doc, id);
        out.diags
            .extend_from(check::check(&mut nodes, &meta, &options).diags);
        out.documents.push((id, nodes));
    }
    out.diags.sort();
    out
}

fn check_source(id: SourceId, out: &mut Checked) {
    let text = out.sources.get(id).text.clone();
    let Some(doc) = parse::parse(&text, id, &mut out.diags) else {
        return;
    };
    let mut nodes = tree::from_kdl(&doc, id);
    let report = check::check(
        &mut nodes,
        schema::experiment(),
        &check::experiment::options(id),
    );
    let extra = check::experiment::check(&nodes, &report);
    out.diags.extend_from(report.diags);
    out.diags.extend_from(extra);
    out.documents.push((id, nodes));
}
