//! Preflight's check of token budgets (`batch-tokens`) against the loaded data: training
//! examples longer than a run's budget are left out, and a budget none fits is refused.

use std::collections::BTreeSet;

use miette::Diagnostic;

use crate::data::budget;
use crate::diagnostic::Diag;
use crate::front::plan::Plan;

use super::preflight::{Datasets, data_key};

/// Training examples no micro-batch of the budget can hold; training goes on without them.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error(
    "{count} of the {total} training examples of `{data}` are longer than `batch-tokens {budget}` and are left out"
)]
#[diagnostic(
    code("xp::data::over-budget"),
    severity(Warning),
    help("the longest has {longest} tokens; raise batch-tokens to keep them, or shorten them")
)]
pub struct OverBudget {
    data: String,
    count: usize,
    total: usize,
    budget: usize,
    longest: usize,
}

/// A budget smaller than every training example: nothing would train.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error(
    "no training example of `{data}` fits in `batch-tokens {budget}`: the shortest has {shortest} tokens"
)]
#[diagnostic(
    code("xp::data::nothing-fits"),
    help("raise batch-tokens to at least {shortest}")
)]
pub struct NothingFits {
    data: String,
    budget: usize,
    shortest: usize,
}

/// One diagnostic per distinct dataset and budget whose budget leaves examples out.
pub fn check(plans: &[Plan], datasets: &Datasets) -> Vec<Diag> {
    let mut seen = BTreeSet::new();
    let mut diags = Vec::new();
    for spec in plans.iter().flat_map(|p| p.runs.iter().map(|r| &r.config)) {
        let (Some(budget), Some(dataset)) = (spec.train.batch_tokens, datasets.get(spec)) else {
            continue;
        };
        if !seen.insert((data_key(spec), budget)) {
            continue;
        }
        let lengths = dataset.train.lengths();
        let count = budget::over_budget(&lengths, budget);
        let data = data_name(spec);
        let inner: Box<dyn Diagnostic + Send + Sync> = if count == 0 {
            continue;
        } else if count == lengths.len() {
            Box::new(NothingFits {
                data,
                budget,
                shortest: lengths.iter().copied().min().unwrap_or(0),
            })
        } else {
            Box::new(OverBudget {
                data,
                count,
                total: lengths.len(),
                budget,
                longest: lengths.iter().copied().max().unwrap_or(0),
            })
        };
        diags.push(Diag {
            source: None,
            inner,
        });
    }
    diags
}

/// The data as a diagnostic names it: its file, or its kind.
fn data_name(spec: &crate::spec::RunSpec) -> String {
    use crate::spec::DataSource::*;
    match &spec.data.source {
        Jsonl { path, .. } | Text { path, .. } | Csv { path, .. } => path.display().to_string(),
        Copy { .. } => "copy".to_owned(),
        ModularAddition { .. } => "modular-addition".to_owned(),
        Regression { .. } => "regression".to_owned(),
        Classification { .. } => "classification".to_owned(),
    }
}
