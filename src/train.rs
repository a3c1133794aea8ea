//! The training loop, in nanoGPT's order: lr → forward → backward → clip → step → log →
//! eval → stop. It knows no paths and prints nothing: everything it has to say is an
//! [`Event`] for a [`Sink`] (metrics.jsonl, train.log and progress are sinks).

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor};

use crate::data::{Batch, Dataset, Examples, Task};
use crate::model::{Built, Mode};
use crate::ops;
use crate::optim;
use crate::rng::Rng;
use crate::schedule::LrSchedule;
use crate::spec::{Direction, RunSpec};

/// Metric values by key (`train/loss`, `val/accuracy`, …), ordered.
pub type Metrics = BTreeMap<String, f64>;

/// What the loop reports.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Start {
        total_steps: usize,
        steps_per_epoch: usize,
        params: usize,
        trainable: usize,
    },
    /// Metrics of one optimizer step: train/ metrics when logged, val/ metrics when evaluated.
    Metrics {
        step: usize,
        epoch: f64,
        time_s: f64,
        metrics: &'a Metrics,
    },
    EarlyStop {
        step: usize,
        reason: &'a str,
    },
}

/// Where events go.
pub trait Sink {
    fn event(&mut self, event: &Event) -> std::io::Result<()>;
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Completed,
    EarlyStopped { reason: String },
    Diverged { step: usize, reason: String },
}

/// What a finished run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    pub steps: usize,
    pub wall_s: f64,
    pub throughput: f64,
    /// Last value of every metric, and the best with its step.
    pub last: Metrics,
    pub best: BTreeMap<String, (f64, usize)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Candle(#[from] candle_core::Error),
    #[error("writing run output failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether higher is better for a metric that is not the objective.
pub fn direction_of(metric: &str) -> Direction {
    let m = metric.rsplit('/').next().unwrap_or(metric);
    if m.contains("accuracy") || m.contains("f1") || m.ends_with("_per_s") {
        Direction::Maximize
    } else {
        Direction::Minimize
    }
}

/// Trains a built model on its data.
pub fn train(
    spec: &RunSpec,
    data: &Dataset,
    built: &Built,
    device: &Device,
    sink: &mut dyn Sink,
) -> Result<Outcome, TrainError> {
    let train = &spec.train;
    let micro = match train.batch_size {
        crate::spec::BatchSize::Fixed(b) => b,
        crate::spec::BatchSize::Auto => 32,
    };
    let accum = train.gradient_accumulation.max(1);
    let steps_per_epoch = (data.train.len() / (micro * accum)).max(1);
    let mut schedule = LrSchedule::new(
        train,
        train.optimizer.lr,
        steps_per_epoch,
        spec.objective.direction,
    );
    let total = schedule.total_steps();
    let mut optimizer = optim::build(&train.optimizer);
    let mut order = Order::new(data.train.len(), spec.seed, shuffles(spec));
    let mut dropout_rng = Rng::stream(spec.seed, "dropout");
    let objective = &spec.objective;
    let mut best: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut last = Metrics::new();
    let mut stale_evals = 0;
    let (mut tokens, start) = (0usize, Instant::now());
    sink.event(&Event::Start {
        total_steps: total,
        steps_per_epoch,
        params: built.total_params(),
        trainable: built.trainable_params(),
    })?;
    let mut ending = Ending::Completed;
    let mut step = 0;
    while step < total {
        step += 1;
        let lr = schedule.lr(step);
        // One draw per optimizer step, so an epoch is `steps_per_epoch` whole steps and the
        // rows left over at its end (fewer than micro × accum) are what is dropped.
        let batches: Vec<Batch> = order
            .next(micro * accum)
            .chunks(micro)
            .map(|rows| data.batch(&data.train, rows, device))
            .collect::<Result<_, _>>()?;
        let counted: usize = batches.iter().map(|b| b.counted).sum();
        let (loss, mut grads) =
            forward_backward(built, data.task, &batches, counted, &mut dropout_rng)?;
        tokens += batches.iter().map(|b| b.tokens).sum::<usize>();
        if !loss.is_finite() {
            ending = Ending::Diverged {
                step,
                reason: format!("the training loss became {loss} at step {step}"),
            };
            break;
        }
        let grad_norm = clip(&mut grads, train.grad_clip)?;
        for (index, (param, grad)) in built.params.iter().zip(&grads).enumerate() {
            let (Some(grad), true) = (grad, param.trainable) else {
                continue;
            };
            let mut values = param.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            optimizer.update(
                index,
                &mut values,
                grad,
                lr,
                param.decay || train.optimizer.decay_all,
            );
            param
                .var
                .set(&Tensor::from_vec(values, param.var.shape(), device)?)?;
        }
        let mut metrics = Metrics::new();
        if step % train.log_every == 0 || step == total {
            let elapsed = start.elapsed().as_secs_f64().max(1e-9);
            metrics.insert("train/loss".into(), loss);
            metrics.insert("train/lr".into(), lr);
            metrics.insert("train/grad_norm".into(), grad_norm);
            metrics.insert(throughput_key(data.task).into(), tokens as f64 / elapsed);
        }
        if let Some(eval) = train.eval.filter(|e| step % e.every == 0 || step == total) {
            metrics.extend(evaluate(built, data, micro, eval.batches, device)?);
        }
        let mut stop = None;
        if let Some(&value) = metrics.get(&objective.metric) {
            schedule.observe(step, value);
            let improved = best.get(&objective.metric).is_none_or(|(b, _)| {
                let delta = train.early_stop.map_or(0.0, |e| e.min_delta);
                objective.direction.better(
                    value,
                    if objective.direction == Direction::Minimize {
                        b - delta
                    } else {
                        b + delta
                    },
                )
            });
            stale_evals = if improved { 0 } else { stale_evals + 1 };
            if let Some(es) = train.early_stop {
                if es
                    .threshold
                    .is_some_and(|t| !objective.direction.better(t, value))
                {
                    stop = Some(format!(
                        "{} reached the threshold {} at step {step}",
                        objective.metric,
                        es.threshold.unwrap_or(0.0)
                    ));
                } else if stale_evals >= es.patience {
                    stop = Some(format!(
                        "{} did not improve for {} evaluations",
                        objective.metric, es.patience
                    ));
                }
            }
        }
        for (k, v) in &metrics {
            last.insert(k.clone(), *v);
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
            if best.get(k).is_none_or(|(b, _)| better(*v, *b)) {
                best.insert(k.clone(), (*v, step));
            }
        }
        if !metrics.is_empty() {
            let epoch = step as f64 / steps_per_epoch as f64;
            sink.event(&Event::Metrics {
                step,
                epoch,
                time_s: start.elapsed().as_secs_f64(),
                metrics: &metrics,
            })?;
        }
        if let Some(reason) = stop {
            sink.event(&Event::EarlyStop {
                step,
                reason: &reason,
            })?;
            ending = Ending::EarlyStopped { reason };
            break;
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    Ok(Outcome {
        ending,
        steps: step,
        wall_s,
        throughput: tokens as f64 / wall_s.max(1e-9),
        last,
        best,
    })
}

/// Whether a metric has a best value worth keeping (not the lr, gradient norm or throughput).
pub fn ranked(metric: &str) -> bool {
    !(metric.ends_with("/lr") || metric.ends_with("grad_norm") || metric.ends_with("_per_s"))
}

/// `train/tokens_per_s` for sequence data, `train/samples_per_s` for tables.
pub fn throughput_key(task: Task) -> &'static str {
    match task {
        Task::Language { .. } => "train/tokens_per_s",
        _ => "train/samples_per_s",
    }
}

/// Each parameter's flattened gradient (`None` when it got none).
type Grads = Vec<Option<Vec<f32>>>;

/// The loss of one optimizer step, and the gradient of every parameter (flattened). Each
/// micro-batch's loss is its summed loss over the step's counted targets, so the gradient is
/// exactly a full batch's.
fn forward_backward(
    built: &Built,
    task: Task,
    batches: &[Batch],
    counted: usize,
    rng: &mut Rng,
) -> Result<(f64, Grads), TrainError> {
    let mut total = 0.0;
    let mut grads: Grads = vec![None; built.params.len()];
    for batch in batches {
        let output = built
            .model
            .forward(&batch.inputs, &mut Mode { train: true, rng })?;
        let loss = (loss_sum(task, &output, &batch.targets)? / counted.max(1) as f64)?;
        total += f64::from(loss.to_scalar::<f32>()?);
        let store = loss.backward()?;
        for (slot, param) in grads.iter_mut().zip(&built.params) {
            let Some(g) = store.get(param.var.as_tensor()) else {
                continue;
            };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            match slot {
                Some(acc) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
                None => *slot = Some(g),
            }
        }
    }
    Ok((total, grads))
}

/// The summed loss of a batch: squared error for regression, cross-entropy otherwise.
fn loss_sum(task: Task, output: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    match task {
        Task::Regression { .. } => ops::squared_error_sum(output, targets),
        Task::Classification { .. } => Ok(ops::cross_entropy_sum(output, targets)?.0),
        Task::Language { vocab } => {
            let logits = output.reshape(((), vocab))?;
            Ok(ops::cross_entropy_sum(&logits, &targets.flatten_all()?)?.0)
        }
    }
}

/// The global L2 norm of all gradients (as torch.nn.utils.clip_grad_norm_), scaling them down
/// to `max` when it is exceeded.
fn clip(grads: &mut [Option<Vec<f32>>], max: Option<f64>) -> candle_core::Result<f64> {
    let norms: Vec<f32> = grads
        .iter()
        .flatten()
        .map(|g| g.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    let total = norms.iter().map(|n| n * n).sum::<f32>().sqrt();
    if let Some(max) = max {
        let coef = (max as f32 / (total + 1e-6)).min(1.0);
        if coef < 1.0 {
            grads
                .iter_mut()
                .flatten()
                .for_each(|g| g.iter_mut().for_each(|v| *v *= coef));
        }
    }
    Ok(f64::from(total))
}

/// Validation metrics over the whole split (or its first `limit` batches), in order, without
/// dropout.
fn evaluate(
    built: &Built,
    data: &Dataset,
    micro: usize,
    limit: Option<usize>,
    device: &Device,
) -> Result<Metrics, TrainError> {
    let n = data.validation.len();
    let mut rng = Rng::new(0);
    let (mut loss, mut counted, mut correct) = (0.0, 0usize, 0usize);
    let indices: Vec<usize> = (0..n).collect();
    for (i, chunk) in indices.chunks(micro.max(1)).enumerate() {
        if limit.is_some_and(|l| i >= l) {
            break;
        }
        let batch = data.batch(&data.validation, chunk, device)?;
        let output = built.model.forward(
            &batch.inputs,
            &mut Mode {
                train: false,
                rng: &mut rng,
            },
        )?;
        loss += f64::from(loss_sum(data.task, &output, &batch.targets)?.to_scalar::<f32>()?);
        counted += batch.counted;
        correct += match data.task {
            Task::Regression { .. } => 0,
            Task::Classification { .. } => hits(&output, &batch.targets)?,
            Task::Language { vocab } => {
                hits(&output.reshape(((), vocab))?, &batch.targets.flatten_all()?)?
            }
        };
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
fn hits(logits: &Tensor, targets: &Tensor) -> candle_core::Result<usize> {
    let predicted = logits.argmax(D::Minus1)?.to_dtype(DType::I64)?;
    let keep = targets.ne(ops::IGNORE_INDEX)?;
    let hit = predicted
        .eq(targets)?
        .to_dtype(DType::U32)?
        .mul(&keep.to_dtype(DType::U32)?)?;
    Ok(hit.sum_all()?.to_scalar::<u32>()? as usize)
}

/// Whether the training order is shuffled: always for synthetic data, as told for files.
fn shuffles(spec: &RunSpec) -> bool {
    use crate::spec::DataSource;
    match &spec.data.source {
        DataSource::Csv { shuffle, .. } | DataSource::Jsonl { shuffle, .. } => *shuffle,
        _ => true,
    }
}

/// The order examples are drawn in: a fresh permutation every epoch (seeded by the run's
/// seed), or file order; the last partial batch of an epoch (of an optimizer step's
/// examples, all micro-batches together) is dropped.
struct Order {
    n: usize,
    rng: Option<Rng>,
    current: Vec<usize>,
    position: usize,
}

impl Order {
    fn new(n: usize, seed: u64, shuffle: bool) -> Self {
        let rng = shuffle.then(|| Rng::stream(seed, "data/order"));
        Order {
            n,
            rng,
            current: Vec::new(),
            position: usize::MAX,
        }
    }

    fn next(&mut self, count: usize) -> Vec<usize> {
        if self.position.saturating_add(count) > self.current.len() {
            self.current = (0..self.n).collect();
            if let Some(rng) = self.rng.as_mut() {
                rng.shuffle(&mut self.current);
            }
            self.position = 0;
        }
        let out =
            self.current[self.position..(self.position + count).min(self.current.len())].to_vec();
        self.position += count;
        out
    }
}
