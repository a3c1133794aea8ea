//! Evaluation on the validation split: its loss, accuracy and perplexity.

use candle_core::{D, DType, Device, Tensor};

use crate::data::{Dataset, Examples, Task, budget};
use crate::model::{Built, Mode};
use crate::ops;
use crate::rng::Rng;

use super::TrainError;
use super::metrics::Metrics;
use super::order::Grouping;
use super::shards::{loss_sum, on_shards, shards_of};
use super::transfer::{self, Kind, Transfers};

/// Validation metrics over the whole split (or its first `limit` batches), in order, without
/// dropout; batches of the training's size, or with token budgets consecutive examples within
/// the budget.
pub(super) fn evaluate(
    built: &Built,
    data: &Dataset,
    grouping: &Grouping,
    limit: Option<usize>,
    compute: DType,
    (device, run): (&Device, &Transfers),
) -> Result<Metrics, TrainError> {
    let n = data.validation.len();
    let (mut loss, mut counted, mut correct) = (0.0, 0usize, 0usize);
    let indices: Vec<usize> = (0..n).collect();
    let batches: Vec<Vec<usize>> = match grouping {
        Grouping::Fixed(micro) => indices
            .chunks((*micro).max(1))
            .map(<[usize]>::to_vec)
            .collect(),
        Grouping::Tokens { budget, .. } => {
            budget::consecutive(&indices, &data.validation.lengths(), *budget)
        }
    };
    for (i, chunk) in batches.iter().enumerate() {
        if limit.is_some_and(|l| i >= l) {
            break;
        }
        let batch = data.batch(&data.validation, chunk, device)?;
        let bytes = [&batch.inputs, &batch.targets]
            .iter()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        transfer::count(Kind::Batch, bytes, Some(run));
        let ranges = shards_of(&batch, data.task)?;
        let shard = |_, inputs: &Tensor, targets: &Tensor| {
            let output = built
                .model
                .forward(
                    inputs,
                    &mut Mode {
                        train: false,
                        rng: &mut Rng::new(0),
                        compute,
                    },
                )?
                .to_dtype(DType::F32)?;
            let loss = transfer::scalar(&loss_sum(data.task, &output, targets)?, Some(run))?;
            let hit = match data.task {
                Task::Regression { .. } => 0,
                Task::Classification { .. } => hits(&output, targets, run)?,
                Task::Language { vocab } => {
                    hits(&output.reshape(((), vocab))?, &targets.flatten_all()?, run)?
                }
            };
            Ok((loss, hit))
        };
        on_shards(&batch, ranges, shard, |(l, hit)| {
            loss += l;
            correct += hit;
        })?;
        counted += batch.counted;
    }
    let mut metrics = Metrics::new();
    if counted == 0 || matches!(data.validation, Examples::Tabular { .. } if n == 0) {
        return Ok(metrics);
    }
    let mean = loss / counted as f64;
    metrics.insert("val/loss".into(), mean);
    match data.task {
        Task::Regression { .. } => {}
        Task::Classification { .. } => {
            metrics.insert("val/accuracy".into(), correct as f64 / counted as f64);
        }
        Task::Language { .. } => {
            metrics.insert("val/accuracy".into(), correct as f64 / counted as f64);
            metrics.insert("val/perplexity".into(), mean.exp());
        }
    }
    Ok(metrics)
}

/// Targets the argmax of the logits hits (ignored targets never count).
fn hits(logits: &Tensor, targets: &Tensor, run: &Transfers) -> candle_core::Result<usize> {
    let predicted = logits.argmax(D::Minus1)?.to_dtype(DType::I64)?;
    let keep = targets.ne(ops::IGNORE_INDEX)?;
    let hit = predicted
        .eq(targets)?
        .to_dtype(DType::U32)?
        .mul(&keep.to_dtype(DType::U32)?)?;
    Ok(transfer::scalar(&hit.sum_all()?, Some(run))? as usize)
}
