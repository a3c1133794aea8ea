//! `sweep { prune … }` resolved against the planned runs: the schema's defaults filled, the
//! defaults that depend on the runs (the first rung is the evaluation interval, hyperband's
//! longest training is the longest run) worked out, and the checks only the runs can answer:
//! pruning needs an explicit objective measured by evaluation, and every run must evaluate at
//! every rung. Pure: no I/O.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use super::PlannedRun;
use crate::diagnostic::Diag;
use crate::front::expand::int;
use crate::front::resolve;
use crate::front::schema::Schema;
use crate::front::tree::Node;
use crate::spec::{Length, Pruning};

#[derive(Debug, Error, Diagnostic)]
pub enum PruneError {
    #[error("`prune` needs the experiment's `objective`")]
    #[diagnostic(
        code("xp::prune::no-objective"),
        help(
            "say which evaluation metric ranks the runs, and which way: `objective \"val/loss\" \"minimize\"`"
        )
    )]
    NoObjective {
        #[label("decides on an objective that is not given")]
        span: SourceSpan,
    },

    #[error("`prune` decides on `{metric}` at evaluation steps, but {problem}")]
    #[diagnostic(code("xp::prune::no-eval"))]
    NoEval {
        metric: String,
        problem: String,
        #[label("prunes here")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("run `{run}` does not evaluate at step {step}, a rung of `prune \"{kind}\"`")]
    #[diagnostic(code("xp::prune::rung-not-evaluated"))]
    RungNotEvaluated {
        run: String,
        step: usize,
        kind: &'static str,
        #[label("the first rung is step {step}")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`prune \"hyperband\"` needs `max-steps`: run `{run}` trains for a number of epochs")]
    #[diagnostic(
        code("xp::prune::unknown-length"),
        help("give `max-steps=N`, the longest training of the sweep in optimizer steps")
    )]
    UnknownLength {
        run: String,
        #[label("brackets from min-steps to an unknown length")]
        span: SourceSpan,
    },
}

/// The sweep's pruning, when it has a `prune` node that fits its runs; otherwise the reasons
/// are added to `diags`.
pub(super) fn resolve(
    experiment: &Node,
    schema: &Schema,
    runs: &[PlannedRun],
    diags: &mut Vec<Diag>,
) -> Option<Pruning> {
    let written = experiment.child("sweep")?.child("prune")?;
    let mut node = written.clone();
    let spec = schema
        .document
        .node("experiment")
        .and_then(|e| schema.body(e).node("sweep"))
        .and_then(|s| schema.body(s).node("prune"))?;
    resolve::fill(&mut node, spec, schema);
    let source = node.source;
    let mut fail = |e: PruneError| {
        diags.push(Diag {
            source: Some(source),
            inner: Box::new(e),
        });
        None
    };
    let span = node.name_span;
    if experiment.child("objective").is_none() {
        return fail(PruneError::NoObjective { span });
    }
    for run in runs {
        let metric = run.config.objective.metric.clone();
        if run.config.train.eval.is_none() {
            return fail(PruneError::NoEval {
                metric,
                problem: format!("run `{}` does not evaluate", run.name),
                span,
                help: "add `eval every=N` to `train`, with N dividing the rungs".into(),
            });
        }
        if !metric.starts_with("val/") {
            return fail(PruneError::NoEval {
                problem: format!("`{metric}` is not measured by evaluation"),
                metric,
                span,
                help: "make the objective a `val/…` metric, such as `objective \"val/loss\" \"minimize\"`".into(),
            });
        }
    }
    let count = |name: &str| {
        node.prop(name)
            .and_then(|e| int(&e.value))
            .and_then(|v| usize::try_from(v).ok())
    };
    let every = runs
        .iter()
        .find_map(|r| r.config.train.eval.map(|e| e.every))?;
    let min_steps = count("min-steps").unwrap_or(every);
    let min_span = node.prop("min-steps").map_or(span, |e| e.span);
    let pruning = match node.arg(0).and_then(|a| a.as_str())? {
        "asha" => Pruning::Asha {
            min_steps,
            reduction: count("reduction")?,
        },
        "median" => Pruning::Median {
            warmup_steps: count("warmup-steps")?,
            startup_runs: count("startup-runs")?,
        },
        _ => {
            let max_steps = match count("max-steps") {
                Some(m) => m,
                None => {
                    let mut longest = 0;
                    for run in runs {
                        match run.config.train.length {
                            Length::Steps(s) => longest = longest.max(s),
                            Length::Epochs(_) => {
                                return fail(PruneError::UnknownLength {
                                    run: run.name.clone(),
                                    span,
                                });
                            }
                        }
                    }
                    longest
                }
            };
            Pruning::Hyperband {
                min_steps,
                max_steps,
                reduction: count("reduction")?,
            }
        }
    };
    if !matches!(pruning, Pruning::Median { .. }) {
        for run in runs {
            let Some(eval) = run.config.train.eval else {
                continue;
            };
            let beyond = matches!(run.config.train.length, Length::Steps(s) if min_steps >= s);
            if !beyond && !min_steps.is_multiple_of(eval.every) {
                return fail(PruneError::RungNotEvaluated {
                    run: run.name.clone(),
                    step: min_steps,
                    kind: pruning.name(),
                    span: min_span,
                    help: format!(
                        "decisions need the objective at every rung: make `min-steps` a multiple of the runs' `eval every` ({})",
                        eval.every
                    ),
                });
            }
        }
    }
    Some(pruning)
}
