//! The front end as one call: load → parse → compose → override → check → expand → resolve, over
//! every file, collecting all diagnostics of all files. `xp validate` prints what this finds;
//! `xp plan` and `xp run` continue with the plans.

pub(crate) mod check;
pub(crate) mod compose;
pub(crate) mod expand;
pub(crate) mod load;
pub(crate) mod parse;
pub mod plan;
pub(crate) mod points;
pub(crate) mod resolve;
pub mod schema;
pub mod search;
pub mod source;
pub(crate) mod structure;
pub(crate) mod template;
pub(crate) mod tree;
pub mod user_config;

use std::path::PathBuf;

use crate::diagnostic::{Diag, Diagnostics};
use compose::{Override, OverrideKind};
use load::Loaded;
use plan::Plan;
use source::{Source, SourceId, Sources};

/// Everything the front end read and found.
#[derive(Debug, Default)]
pub struct Checked {
    pub sources: Sources,
    pub diags: Diagnostics,
    /// The plan of every experiment that is free of errors, in file order.
    pub plans: Vec<Plan>,
}

/// `--set` and `--axis` as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub set: Vec<String>,
    pub axis: Vec<String>,
}

/// Loads, checks and plans experiment files.
pub fn validate_files(paths: &[PathBuf], overrides: &Overrides) -> Checked {
    let mut out = Checked::default();
    let loaded = load::load_all(paths, &mut out.sources, &mut out.diags);
    front(loaded, overrides, &mut out);
    out
}

/// Checks and plans experiment text that did not come from a file (tests, the library API).
pub fn validate_text(name: &str, text: &str) -> Checked {
    let mut out = Checked::default();
    let loaded = load::load_text(name, text, &mut out.sources, &mut out.diags);
    front(loaded, &Overrides::default(), &mut out);
    out
}

fn front(loaded: Loaded, overrides: &Overrides, out: &mut Checked) {
    let mut applied: Vec<Override> = Vec::new();
    for (kind, texts) in [
        (OverrideKind::Set, &overrides.set),
        (OverrideKind::Axis, &overrides.axis),
    ] {
        for text in texts {
            let name = match kind {
                OverrideKind::Set => "--set",
                OverrideKind::Axis => "--axis",
            };
            let source = out.sources.add(Source::new(name, None, text.clone()));
            applied.push(Override {
                kind,
                text: text.clone(),
                source,
            });
        }
    }
    let recorded: Vec<String> = applied.iter().map(Override::display).collect();
    let schema = schema::experiment();
    for &root in &loaded.roots {
        let mut nodes = loaded.trees[&root].clone();
        let mut diags: Vec<Diag> = Vec::new();
        let mut composed_ok = vec![true; nodes.len()];
        for (i, node) in nodes.iter_mut().enumerate() {
            if node.name != "experiment" {
                continue;
            }
            match compose::compose(node, &loaded, &out.sources) {
                Ok(mut composed) => {
                    diags.extend(compose::apply(&mut composed, &applied, schema));
                    *node = composed;
                }
                Err(e) => {
                    composed_ok[i] = false;
                    diags.push(e);
                }
            }
        }
        let report = check::check(&mut nodes, schema, &check::experiment::options(root));
        let extra = check::experiment::check(&nodes, &report);
        let doc_ok = !report.has_errors()
            && !diags
                .iter()
                .chain(&extra)
                .any(|d| d.severity() == miette::Severity::Error);
        diags.extend(report.diags);
        diags.extend(extra);
        if !doc_ok {
            let errors: Vec<(SourceId, usize)> = diags
                .iter()
                .filter(|d| d.severity() == miette::Severity::Error)
                .flat_map(|d| {
                    let source = d.source;
                    d.inner
                        .labels()
                        .into_iter()
                        .flatten()
                        .filter_map(move |l| source.map(|s| (s, l.offset())))
                })
                .collect();
            let found: Vec<Diag> = nodes
                .iter()
                .zip(&composed_ok)
                .filter(|(n, ok)| **ok && n.name == "experiment")
                .flat_map(|(n, _)| plan::salvage(n, &errors, schema, &out.sources))
                .collect();
            diags.extend(found);
        }
        if doc_ok {
            for (i, node) in nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.name == "experiment")
            {
                if !composed_ok[i] {
                    continue;
                }
                let (plan, found) = plan::plan(node, schema, &out.sources, recorded.clone());
                diags.extend(found);
                out.plans.extend(plan);
            }
        }
        let root_name = out.sources.get(root).name.clone();
        for d in diags {
            let d = match d.source {
                Some(s) if s != root && out.sources.get(s).path.is_some() => {
                    compose::in_base(d, &out.sources.get(s).name, &root_name)
                }
                _ => d,
            };
            out.diags.push_diag(d);
        }
    }
    out.diags.sort();
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
        let options = check::CheckOptions {
            allow_when: false,
            scope_of: |_| crate::front::template::Scope::default(),
            root: id,
        };
        let mut nodes = tree::from_kdl(&doc, id);
        out.diags
            .extend_from(check::check(&mut nodes, &meta, &options).diags);
    }
    out.diags.sort();
    out
}
