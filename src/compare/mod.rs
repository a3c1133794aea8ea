//! The compare stage: recorded runs become one comparable table — the settings that differ
//! between them, the metrics that matter, seed groups, a baseline's deltas and the regression
//! gate. [`discover`] is the edge that reads run directories; everything after it is a function
//! of what was read, so `xp compare` and the gate of `xp run` judge runs the same way.

pub(crate) mod baseline;
mod columns;
pub mod discover;
pub(crate) mod filter;
pub mod format;
pub(crate) mod gate;
pub(crate) mod grid;
pub(crate) mod junit;
pub(crate) mod runs;
pub(crate) mod table;

use crate::diagnostic::suggest::list;

pub use baseline::{Baseline, JoinOn};
pub use gate::{Gate, Gates, Verdict};
pub use runs::{Column, Run};
pub use table::{Comparison, Group, Row, TableOptions};

/// Why a comparison cannot be made: paths, patterns, expressions, rules or baseline files that
/// do not work. All are usage errors (exit 2); a regression is not an error but a [`Verdict`].
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{}", problems.join("\n"))]
    Paths { problems: Vec<String> },
    #[error("no runs under {paths}{}", skipped.iter().map(|s| format!("\n{s}")).collect::<String>())]
    NoRuns { paths: String, skipped: Vec<String> },
    #[error("`--filter {expr}` matches none of the {runs} runs")]
    NothingLeft { expr: String, runs: usize },
    #[error("`--metrics {pattern}` matches no metric of the compared runs")]
    UnknownMetric { pattern: String, available: String },
    #[error("`--sort {metric}`: no compared run has this metric")]
    UnknownSort { metric: String, help: String },
    #[error("`{option} {name}`: no compared run has this axis or setting")]
    UnknownField {
        option: &'static str,
        name: String,
        help: String,
    },
    #[error("`--filter {expr}` is not a valid expression: {message}")]
    FilterSyntax { expr: String, message: String },
    #[error("`--filter` uses `{name}`, which no compared run has")]
    FilterUnknown { name: String, help: String },
    #[error("`--filter` failed on run `{run}`: {message}")]
    FilterEval { run: String, message: String },
    #[error("baseline {file}: {message}")]
    Baseline {
        file: String,
        message: String,
        help: Option<String>,
    },
    #[error("`--fail-on {rule}`: {message}")]
    FailOn { rule: String, message: String },
    #[error("{message}")]
    Usage { message: String, help: String },
}

impl CompareError {
    /// How to fix it, where that can be said.
    pub fn help(&self) -> Option<String> {
        match self {
            CompareError::Paths { .. } => Some(
                "give run directories, sweep directories or folders above them (`xp compare runs/*`)"
                    .into(),
            ),
            CompareError::NoRuns { .. } => Some(
                "a run directory is one holding a summary.json, as `xp run` writes them".into(),
            ),
            CompareError::NothingLeft { .. } => {
                Some("variables are the runs' fields, axes, metrics and settings".into())
            }
            CompareError::UnknownMetric { available, .. } => Some(format!("they have: {available}")),
            CompareError::UnknownField { help, .. }
            | CompareError::UnknownSort { help, .. }
            | CompareError::FilterUnknown { help, .. }
            | CompareError::Usage { help, .. } => Some(help.clone()),
            CompareError::FilterSyntax { .. } | CompareError::FilterEval { .. } => Some(
                "a minijinja expression over the runs' fields, axes, metrics and settings, e.g. `status == \"completed\" and rank >= 8`"
                    .into(),
            ),
            CompareError::Baseline { help, .. } => help.clone(),
            CompareError::FailOn { .. } => Some(
                "a rule is METRIC, METRIC>TOL or METRIC<TOL: `val/loss>+2%`, `val/accuracy<-0.01`, `best:val/loss>1%`"
                    .into(),
            ),
        }
    }
}

/// What to compare and against what.
#[derive(Debug, Default)]
pub struct Request<'a> {
    pub options: TableOptions,
    /// `--filter`: a minijinja expression a run must make true.
    pub filter: Option<&'a str>,
    pub baseline: Option<&'a Baseline>,
    /// `--join-on`; `None`: the runs' `regression` block's, else name and experiment.
    pub join_on: Option<Vec<String>>,
    pub gates: Gates,
}

/// The comparison, and with a baseline the gate's verdict.
#[derive(Debug)]
pub struct Compared {
    pub comparison: Comparison,
    pub verdict: Option<Verdict>,
}

/// Filters, tabulates, joins the baseline and applies the gates.
pub fn compare(runs: &[Run], request: &Request) -> Result<Compared, CompareError> {
    let keep = match request.filter {
        Some(expr) => filter::select(expr, runs)?,
        None => vec![true; runs.len()],
    };
    let mut kept: Vec<&Run> = Vec::new();
    let mut left: Vec<&Run> = Vec::new();
    for (run, keep) in runs.iter().zip(keep) {
        if keep { kept.push(run) } else { left.push(run) }
    }
    if kept.is_empty() {
        return Err(CompareError::NothingLeft {
            expr: request.filter.unwrap_or_default().to_owned(),
            runs: runs.len(),
        });
    }
    let mut options = request.options.clone();
    if request.baseline.is_some() {
        options.require.extend(gated_columns(&request.gates, &kept));
    }
    let mut comparison = table::build(&kept, &options)?;
    let verdict = match request.baseline {
        Some(base) => {
            let on = match &request.join_on {
                Some(keys) => JoinOn::Keys(keys.clone()),
                None => kept
                    .iter()
                    .find_map(|r| r.regression.as_ref().and_then(|g| g.join_on.clone()))
                    .filter(|_| matches!(request.gates, Gates::FromRuns))
                    .map_or(JoinOn::NameAndExperiment, JoinOn::Keys),
            };
            let left_out = table::row_keys(&left, &request.options.group_by, &kept);
            let joined = baseline::join(base, &comparison.rows, &left_out, &on)?;
            Some(gate::evaluate(
                &mut comparison,
                base,
                &joined,
                &request.gates,
            ))
        }
        None => None,
    };
    Ok(Compared {
        comparison,
        verdict,
    })
}

/// The columns the gates read ([`gate::gates_of`] of every run).
pub fn gated_columns(gates: &Gates, runs: &[&Run]) -> Vec<Column> {
    let mut out: Vec<Column> = Vec::new();
    let all = runs
        .iter()
        .flat_map(|r| gate::gates_of(gates, r.regression.as_ref(), r.objective.as_ref()));
    for g in all {
        if !out.contains(&g.column) {
            out.push(g.column);
        }
    }
    out
}

/// `a, b, c` of at most `max` items, then how many more.
pub(crate) fn some_of<'a>(items: impl IntoIterator<Item = &'a str>, max: usize) -> String {
    let items: Vec<&str> = items.into_iter().collect();
    if items.len() <= max {
        list(items)
    } else {
        format!(
            "{} and {} more",
            list(items[..max].iter().copied()),
            items.len() - max
        )
    }
}
