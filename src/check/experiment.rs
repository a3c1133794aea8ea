//! Checks that need the meaning of an experiment rather than the schema alone: which names a
//! template may use (axes, vars, `seed`), axes declared twice or used by no template, and
//! `exclude`/`include` naming axes that do not exist.

use std::collections::{BTreeMap, BTreeSet};

use kdl::{KdlDocument, KdlNode};
use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use super::{Findings, Options};
use crate::parse::{children, props};
use crate::suggest::{list, suggest};
use crate::template::Scope;

#[derive(Debug, Error, Diagnostic)]
pub enum ExperimentError {
    #[error("axis `{name}` is declared twice")]
    #[diagnostic(
        code("xp::sweep::duplicate-axis"),
        help("an axis belongs to one grid, zip or random block")
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
pub fn options() -> Options {
    Options {
        allow_when: true,
        scope_of: scope,
    }
}

/// An experiment's sweep axes, in declaration order, with the span of each name.
pub fn axes(experiment: &KdlNode) -> Vec<(String, SourceSpan)> {
    let mut out = Vec::new();
    for sweep in children(experiment)
        .iter()
        .filter(|n| n.name().value() == "sweep")
    {
        for block in children(sweep) {
            if matches!(block.name().value(), "grid" | "zip" | "random") {
                out.extend(
                    children(block)
                        .iter()
                        .map(|a| (a.name().value().to_owned(), a.name().span())),
                );
            }
        }
    }
    out
}

fn vars(experiment: &KdlNode) -> Vec<(String, SourceSpan)> {
    children(experiment)
        .iter()
        .filter(|n| n.name().value() == "vars")
        .flat_map(children)
        .map(|v| (v.name().value().to_owned(), v.name().span()))
        .collect()
}

/// The names templates may use inside an experiment.
pub fn scope(experiment: &KdlNode) -> Scope {
    let mut names: BTreeSet<String> = axes(experiment).into_iter().map(|(n, _)| n).collect();
    names.extend(vars(experiment).into_iter().map(|(n, _)| n));
    names.insert("seed".into());
    Scope { names }
}

/// Experiment-level checks over a document already checked against the schema.
pub fn check(doc: &KdlDocument, findings: &Findings) -> Vec<ExperimentError> {
    let mut errors = Vec::new();
    let mut names: BTreeMap<&str, SourceSpan> = BTreeMap::new();
    for (top, experiment) in doc.nodes().iter().enumerate() {
        if experiment.name().value() != "experiment" {
            continue;
        }
        if let Some(entry) = experiment.entries().first().filter(|e| e.name().is_none())
            && let Some(name) = entry.value().as_string()
        {
            match names.get(name) {
                Some(first) => errors.push(ExperimentError::DuplicateExperiment {
                    name: name.to_owned(),
                    first: *first,
                    second: entry.span(),
                }),
                None => {
                    names.insert(name, entry.span());
                }
            }
        }
        check_experiment(experiment, top, findings, &mut errors);
    }
    errors
}

fn check_experiment(
    experiment: &KdlNode,
    top: usize,
    findings: &Findings,
    errors: &mut Vec<ExperimentError>,
) {
    let axes = axes(experiment);
    let mut declared: BTreeMap<&str, SourceSpan> = BTreeMap::new();
    for (name, span) in &axes {
        match declared.get(name.as_str()) {
            Some(first) => errors.push(ExperimentError::DuplicateAxis {
                name: name.clone(),
                first: *first,
                second: *span,
            }),
            None => {
                declared.insert(name, *span);
            }
        }
    }

    // What the configuration reads: templates outside `name`, `vars` and `sweep`, plus the
    // vars those reach (a var may read axes and other vars).
    let uses: Vec<_> = findings.templates.iter().filter(|t| t.top == top).collect();
    let var_reads: BTreeMap<&str, BTreeSet<&str>> = uses
        .iter()
        .filter(|t| t.path.get(1).is_some_and(|p| p == "vars"))
        .filter_map(|t| {
            t.path
                .get(2)
                .map(|v| (v.as_str(), t.vars.iter().map(String::as_str).collect()))
        })
        .collect();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut stack: Vec<&str> = uses
        .iter()
        .filter(|t| {
            !matches!(
                t.path.get(1).map(String::as_str),
                Some("name" | "vars" | "sweep")
            )
        })
        .flat_map(|t| t.vars.iter().map(String::as_str))
        .collect();
    while let Some(name) = stack.pop() {
        if used.insert(name) {
            stack.extend(var_reads.get(name).into_iter().flatten().copied());
        }
    }
    for (name, span) in declared.iter().map(|(n, s)| (*n, *s)) {
        if !used.contains(name) && crate::schema::is_identifier(name) {
            errors.push(ExperimentError::UnusedAxis {
                name: name.to_owned(),
                span,
                help: format!("read it in a setting's template, such as \"{{{{ {name} }}}}\", or remove the axis"),
            });
        }
    }
    for (name, span) in vars(experiment) {
        if !used.contains(name.as_str())
            && !uses
                .iter()
                .any(|t| t.path.get(1).is_some_and(|p| p == "name") && t.vars.contains(&name))
        {
            errors.push(ExperimentError::UnusedVar { name, span });
        }
    }

    let known: Vec<&str> = declared.keys().copied().collect();
    for sweep in children(experiment)
        .iter()
        .filter(|n| n.name().value() == "sweep")
    {
        for block in children(sweep)
            .iter()
            .filter(|b| matches!(b.name().value(), "exclude" | "include"))
        {
            for (name, entry) in props(block) {
                if name == "when" || declared.contains_key(name) {
                    continue;
                }
                let help = match suggest(name, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if known.is_empty() => "this sweep has no axes".into(),
                    None => format!("the axes are: {}", list(known.iter().copied())),
                };
                let span = entry.name().map_or(entry.span(), |k| k.span());
                errors.push(ExperimentError::UnknownAxis {
                    name: name.to_owned(),
                    span,
                    help,
                });
            }
        }
    }
}
