//! Checks that need the meaning of an experiment rather than the schema alone: which names a
//! template may use (axes, vars, `seed`), axes declared twice or used by no template, and
//! `exclude`/`include` naming axes that do not exist.

use std::collections::{BTreeMap, BTreeSet};

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use super::{CheckOptions, CheckReport};
use crate::diagnostic::Diag;
use crate::diagnostic::suggest::{list, suggest};
use crate::front::source::SourceId;
use crate::front::template::Scope;
use crate::front::tree::Node;

#[derive(Debug, Error, Diagnostic)]
pub enum ExperimentError {
    #[error("axis `{name}` is declared twice")]
    #[diagnostic(
        code("xp::sweep::duplicate-axis"),
        help("an axis belongs to one grid, zip, random or search block")
    )]
    DuplicateAxis {
        name: String,
        #[label("first here")]
        first: SourceSpan,
        #[label("again here")]
        second: SourceSpan,
    },

    #[error("axis `{name}` is used by no template, so its runs would be identical")]
    #[diagnostic(code("xp::sweep::unused-axis"))]
    UnusedAxis {
        name: String,
        #[label("unused axis")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`{name}` is not an axis of this sweep")]
    #[diagnostic(code("xp::sweep::unknown-axis"))]
    UnknownAxis {
        name: String,
        #[label("unknown axis")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("var `{name}` is never used")]
    #[diagnostic(
        code("xp::vars::unused"),
        severity(Warning),
        help("remove it, or use it in a template: \"{{{{ {name} }}}}\"")
    )]
    UnusedVar {
        name: String,
        #[label("unused")]
        span: SourceSpan,
    },

    #[error("var `{name}` has the name of a sweep axis")]
    #[diagnostic(
        code("xp::vars::shadows-axis"),
        help("templates could not tell the two apart; rename the var")
    )]
    ShadowsAxis {
        name: String,
        #[label("the axis")]
        axis: SourceSpan,
        #[label("the var")]
        span: SourceSpan,
    },

    #[error("`search` does not combine with `{block}` blocks")]
    #[diagnostic(
        code("xp::sweep::search-combined"),
        help(
            "a search chooses every axis itself: give a fixed set of values as a `choice` axis inside it, e.g. `search \"tpe\" trials=32 {{ rank \"choice\" 4 8 16 }}`"
        )
    )]
    SearchCombined {
        block: String,
        #[label("the search")]
        search: SourceSpan,
        #[label("not with a search")]
        span: SourceSpan,
    },

    #[error("a search needs the experiment's `objective`: the metric it optimises")]
    #[diagnostic(
        code("xp::sweep::search-objective"),
        help("say what to optimise, e.g. `objective \"val/loss\" \"minimize\"`")
    )]
    SearchObjective {
        #[label("optimises what?")]
        span: SourceSpan,
    },

    #[error("experiment `{name}` is defined twice in this file")]
    #[diagnostic(
        code("xp::experiment::duplicate-name"),
        help("experiments write to runs/<name>/; give each a different name")
    )]
    DuplicateExperiment {
        name: String,
        #[label("first here")]
        first: SourceSpan,
        #[label("again here")]
        second: SourceSpan,
    },
}

/// Check options for experiment files.
pub fn options(root: SourceId) -> CheckOptions {
    CheckOptions {
        allow_when: true,
        scope_of: scope,
        root,
    }
}

/// An experiment's sweep axes, in declaration order, with where each name is written.
pub fn axes(experiment: &Node) -> Vec<(String, SourceSpan, SourceId)> {
    let mut out = Vec::new();
    for sweep in experiment.nodes().iter().filter(|n| n.name == "sweep") {
        for block in sweep.nodes() {
            if matches!(block.name.as_str(), "grid" | "zip" | "random" | "search") {
                out.extend(
                    block
                        .nodes()
                        .iter()
                        .map(|a| (a.name.clone(), a.name_span, a.source)),
                );
            }
        }
    }
    out
}

fn vars(experiment: &Node) -> Vec<(String, SourceSpan, SourceId)> {
    let blocks = experiment.nodes().iter().filter(|n| n.name == "vars");
    blocks
        .flat_map(|v| v.nodes())
        .map(|v| (v.name.clone(), v.name_span, v.source))
        .collect()
}

/// The names templates may use inside an experiment.
pub fn scope(experiment: &Node) -> Scope {
    let mut names: BTreeSet<String> = axes(experiment).into_iter().map(|(n, ..)| n).collect();
    names.extend(vars(experiment).into_iter().map(|(n, ..)| n));
    names.insert("seed".into());
    Scope { names }
}

/// Experiment-level checks over nodes already checked against the schema.
pub fn check(nodes: &[Node], report: &CheckReport) -> Vec<Diag> {
    let mut errors = Vec::new();
    let mut names: BTreeMap<&str, SourceSpan> = BTreeMap::new();
    for (top, experiment) in nodes.iter().enumerate() {
        if experiment.name != "experiment" {
            continue;
        }
        if let Some(entry) = experiment.arg(0)
            && let Some(name) = entry.as_str()
        {
            match names.get(name) {
                Some(first) => {
                    let error = ExperimentError::DuplicateExperiment {
                        name: name.to_owned(),
                        first: *first,
                        second: entry.span,
                    };
                    errors.push(diag(entry.source, error));
                }
                None => {
                    names.insert(name, entry.span);
                }
            }
        }
        check_experiment(experiment, top, report, &mut errors);
    }
    errors
}

fn diag(source: SourceId, e: ExperimentError) -> Diag {
    Diag {
        source: Some(source),
        inner: Box::new(e),
    }
}

fn check_experiment(experiment: &Node, top: usize, report: &CheckReport, errors: &mut Vec<Diag>) {
    let mut declared: BTreeMap<String, (SourceSpan, SourceId)> = BTreeMap::new();
    for (name, span, source) in axes(experiment) {
        match declared.get(&name) {
            Some((first, _)) => {
                let error = ExperimentError::DuplicateAxis {
                    name: name.clone(),
                    first: *first,
                    second: span,
                };
                errors.push(diag(source, error));
            }
            None => {
                declared.insert(name, (span, source));
            }
        }
    }

    // What the configuration reads: templates outside `name`, `vars` and `sweep`, plus the
    // vars those reach (a var may read axes and other vars).
    let uses: Vec<_> = report.templates.iter().filter(|t| t.top == top).collect();
    let section = |t: &super::TemplateUse| t.path.get(1).cloned().unwrap_or_default();
    let var_reads: BTreeMap<String, BTreeSet<String>> = uses
        .iter()
        .filter(|t| section(t) == "vars")
        .filter_map(|t| t.path.get(2).map(|v| (v.clone(), t.vars.clone())))
        .collect();
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = uses
        .iter()
        .filter(|t| !matches!(section(t).as_str(), "name" | "vars" | "sweep"))
        .flat_map(|t| t.vars.iter().cloned())
        .collect();
    while let Some(name) = stack.pop() {
        if let Some(reads) = var_reads.get(&name) {
            stack.extend(reads.iter().filter(|r| !used.contains(*r)).cloned());
        }
        used.insert(name);
    }
    for (name, (span, source)) in &declared {
        if !used.contains(name) && crate::front::schema::is_identifier(name) {
            let help = format!(
                "read it in a setting's template, such as \"{{{{ {name} }}}}\", or remove the axis"
            );
            errors.push(diag(
                *source,
                ExperimentError::UnusedAxis {
                    name: name.clone(),
                    span: *span,
                    help,
                },
            ));
        }
    }
    let in_name: BTreeSet<&String> = uses
        .iter()
        .filter(|t| section(t) == "name")
        .flat_map(|t| &t.vars)
        .collect();
    for (name, span, source) in vars(experiment) {
        if let Some((axis, _)) = declared.get(&name) {
            errors.push(diag(
                source,
                ExperimentError::ShadowsAxis {
                    name: name.clone(),
                    axis: *axis,
                    span,
                },
            ));
            continue;
        }
        if !used.contains(&name) && !in_name.contains(&name) {
            errors.push(diag(source, ExperimentError::UnusedVar { name, span }));
        }
    }

    check_search(experiment, errors);

    let known: Vec<&str> = declared.keys().map(String::as_str).collect();
    for sweep in experiment.nodes().iter().filter(|n| n.name == "sweep") {
        for block in sweep
            .nodes()
            .iter()
            .filter(|b| matches!(b.name.as_str(), "exclude" | "include"))
        {
            for (name, entry) in block.props() {
                if name == "when" || declared.contains_key(name) {
                    continue;
                }
                let help = match suggest(name, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if known.is_empty() => "this sweep has no axes".into(),
                    None => format!("the axes are: {}", list(known.iter().copied())),
                };
                let error = ExperimentError::UnknownAxis {
                    name: name.to_owned(),
                    span: entry.key_span(),
                    help,
                };
                errors.push(diag(entry.source, error));
            }
        }
    }
}

/// A `search` stands alone (no grid, zip, random or include beside it) and optimises the
/// experiment's `objective`, which must be written.
fn check_search(experiment: &Node, errors: &mut Vec<Diag>) {
    for sweep in experiment.nodes().iter().filter(|n| n.name == "sweep") {
        let Some(search) = sweep.child("search") else {
            continue;
        };
        for block in sweep
            .nodes()
            .iter()
            .filter(|b| matches!(b.name.as_str(), "grid" | "zip" | "random" | "include"))
        {
            let error = ExperimentError::SearchCombined {
                block: block.name.clone(),
                search: search.name_span,
                span: block.name_span,
            };
            errors.push(diag(block.source, error));
        }
        if experiment.child("objective").is_none() {
            let error = ExperimentError::SearchObjective {
                span: search.name_span,
            };
            errors.push(diag(search.source, error));
        }
    }
}
