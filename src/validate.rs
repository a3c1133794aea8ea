//! The front end as one call: load → parse → check every file, collecting all diagnostics of
//! all files. `xp validate` prints what this returns; later commands stop on its errors.

use std::path::PathBuf;

use kdl::KdlDocument;

use crate::check;
use crate::diagnostic::Diagnostics;
use crate::load;
use crate::parse;
use crate::schema;
use crate::source::{SourceId, Sources};

/// Everything the front end read and found.
#[derive(Debug, Default)]
pub struct Checked {
    pub sources: Sources,
    pub diags: Diagnostics,
    /// The parsed documents (also those with schema errors).
    pub documents: Vec<(SourceId, KdlDocument)>,
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
    let id = out
        .sources
        .add(crate::source::Source::new(name, None, text));
    check_source(id, &mut out);
    out.diags.sort();
    out
}

/// Checks a schema written in the dialect against the meta-schema.
pub fn validate_schema_text(name: &str, text: &str) -> Checked {
    let mut out = Checked::default();
    let id = out
        .sources
        .add(crate::source::Source::new(name, None, text));
    if let Some(doc) = parse::parse(text, id, &mut out.diags) {
        let meta = match schema::load(schema::META_SOURCE) {
            Ok(meta) => meta,
            Err(e) => unreachable!("the embedded meta-schema is invalid: {e}"),
        };
        let options = check::Options {
            allow_when: false,
            scope_of: |_| crate::template::Scope::default(),
        };
        check::check(&doc, &meta, &options, id, &mut out.diags);
        out.documents.push((id, doc));
    }
    out.diags.sort();
    out
}

fn check_source(id: SourceId, out: &mut Checked) {
    let text = out.sources.get(id).text.clone();
    let Some(doc) = parse::parse(&text, id, &mut out.diags) else {
        return;
    };
    let options = check::experiment::options();
    let findings = check::check(&doc, schema::experiment(), &options, id, &mut out.diags);
    for e in check::experiment::check(&doc, &findings) {
        out.diags.push(Some(id), e);
    }
    out.documents.push((id, doc));
}
