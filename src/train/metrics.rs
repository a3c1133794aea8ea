//! Metric keys and values: what a logged step reports, and how a step's metrics are judged
//! (last and best values, the objective's improvement, early stopping).

use std::collections::BTreeMap;

use crate::data::Task;
use crate::spec::{Direction, RunSpec, direction_of, ranked};

use super::loss_scale::LossScale;
use super::schedule::LrSchedule;
use super::state::TrainerState;

/// Metric values by key (`train/loss`, `val/accuracy`, …), ordered.
pub type Metrics = BTreeMap<String, f64>;

/// `train/tokens_per_s` for sequence data, `train/samples_per_s` for tables.
pub fn throughput_key(task: Task) -> &'static str {
    match task {
        Task::Language { .. } => "train/tokens_per_s",
        _ => "train/samples_per_s",
    }
}

/// A logged step's train/ metrics: its loss and lr, its gradient norm (none for a skipped
/// step), f16's loss scale and skipped steps, and the throughput so far.
pub(super) fn logged(
    task: Task,
    loss: f64,
    lr: f64,
    grad_norm: Option<f64>,
    loss_scale: Option<&LossScale>,
    throughput: f64,
) -> Metrics {
    let mut metrics = Metrics::new();
    metrics.insert("train/loss".into(), loss);
    metrics.insert("train/lr".into(), lr);
    if let Some(norm) = grad_norm {
        metrics.insert("train/grad_norm".into(), norm);
    }
    if let Some(l) = loss_scale {
        metrics.insert("train/loss_scale".into(), l.scale);
        metrics.insert("train/skipped_steps".into(), l.skipped as f64);
    }
    metrics.insert(throughput_key(task).into(), throughput);
    metrics
}

/// Records the step's metrics as last and best values, feeds the objective to the schedule and
/// early stopping; returns whether the objective improved, and why to stop if it is time.
pub(super) fn judge(
    spec: &RunSpec,
    schedule: &mut LrSchedule,
    s: &mut TrainerState,
    metrics: &Metrics,
) -> (bool, Option<String>) {
    let objective = &spec.objective;
    let mut improved = false;
    let mut stop = None;
    if let Some(&value) = metrics.get(&objective.metric) {
        schedule.observe(s.step, value);
        let delta = spec.train.early_stop.map_or(0.0, |e| e.min_delta);
        let margin = |b: f64| {
            if objective.direction == Direction::Minimize {
                b - delta
            } else {
                b + delta
            }
        };
        let beats_best = s
            .best
            .get(&objective.metric)
            .is_none_or(|(b, _)| objective.direction.better(value, *b));
        let significant = s
            .best
            .get(&objective.metric)
            .is_none_or(|(b, _)| objective.direction.better(value, margin(*b)));
        improved = beats_best;
        s.stale_evals = if significant { 0 } else { s.stale_evals + 1 };
        if let Some(es) = spec.train.early_stop {
            if let Some(t) = es
                .threshold
                .filter(|t| !objective.direction.better(*t, value))
            {
                stop = Some(format!(
                    "{} reached the threshold {t} at step {}",
                    objective.metric, s.step
                ));
            } else if s.stale_evals >= es.patience {
                stop = Some(format!(
                    "{} did not improve for {} evaluations",
                    objective.metric, es.patience
                ));
            }
        }
    }
    for (k, v) in metrics {
        s.last.insert(k.clone(), *v);
        if !ranked(k) {
            continue;
        }
        let better = |a: f64, b: f64| {
            if *k == objective.metric {
                objective.direction.better(a, b)
            } else {
                direction_of(k).better(a, b)
            }
        };
        if s.best.get(k).is_none_or(|(b, _)| better(*v, *b)) {
            s.best.insert(k.clone(), (*v, s.step));
        }
    }
    (improved, stop)
}
