//! The training loop, in nanoGPT's order: lr → forward → backward → clip → step → log →
//! eval → stop. It knows no paths and prints nothing: everything it has to say is an
//! [`Event`] for a [`Sink`] (metrics.jsonl, train.log and progress are sinks).

pub mod device;
pub mod memory;
pub mod optim;
pub mod precision;
pub mod schedule;
pub mod threads;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use candle_core::{D, DType, Device, Tensor};

use crate::data::{Batch, Dataset, Examples, Task};
use crate::model::{Built, Mode, Param};
use crate::ops;
use crate::rng::Rng;
use crate::spec::{Direction, RunSpec, direction_of, ranked};
use optim::Optimizer;
use schedule::LrSchedule;

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
        resumed_from: Option<usize>,
    },
    /// Metrics of one optimizer step: train/ metrics when logged, val/ metrics when evaluated.
    Metrics {
        step: usize,
        epoch: f64,
        time_s: f64,
        metrics: &'a Metrics,
    },
    /// The loop is about to evaluate at `step` (its metrics follow in the step's `Metrics`).
    Evaluating {
        step: usize,
    },
    EarlyStop {
        step: usize,
        reason: &'a str,
    },
    /// Everything needed to continue exactly from after `state.step`: persist it.
    Checkpoint(Checkpoint<'a>),
}

/// A checkpoint as the loop hands it to its sink.
#[derive(Debug, Clone)]
pub struct Checkpoint<'a> {
    pub state: &'a TrainerState,
    pub params: &'a [Param],
    pub optimizer: &'a [(String, Vec<f32>)],
    pub why: Why,
}

/// Why a checkpoint is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// `checkpoint every=N`.
    Interval,
    /// The objective improved: this is the new best.
    Best,
    /// The run was asked to stop (Ctrl-C, SIGTERM).
    Interrupt,
}

/// Where events go.
pub trait Sink {
    fn event(&mut self, event: &Event) -> std::io::Result<()>;
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Completed,
    EarlyStopped {
        reason: String,
    },
    Diverged {
        step: usize,
        reason: String,
    },
    /// Stopped on request after `step` steps; a checkpoint of that step was written.
    Interrupted {
        step: usize,
    },
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
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("{0} is not supported by this version of xp")]
    Unsupported(&'static str),
}

/// Everything mutable in the loop besides the parameters and the optimizer's buffers: with
/// them, a run continues bit-identically from any checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    pub epoch: f64,
    pub order: OrderState,
    pub dropout_rng: [u64; 4],
    pub schedule: serde_json::Value,
    /// Evaluations since the objective last improved (early stopping).
    pub stale_evals: usize,
    pub best: BTreeMap<String, (f64, usize)>,
    pub last: Metrics,
    pub tokens: usize,
    /// Training time before this process (a resumed run keeps counting).
    pub elapsed_s: f64,
    /// Lines of metrics.jsonl up to this step, filled in by the sink that keeps the file.
    pub metrics_lines: usize,
    /// f16's dynamic loss scale (absent for other precisions).
    #[serde(default)]
    pub loss_scale: Option<LossScale>,
}

/// Dynamic loss scaling for f16 compute, as torch.amp.GradScaler with its defaults: the loss is
/// multiplied by `scale` before the backward pass and the gradients divided by it after; a step
/// whose gradients are not finite is skipped and halves the scale; 2000 finite steps in a row
/// double it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Finite steps since the scale last changed.
    pub good_steps: usize,
    /// Steps skipped so far.
    pub skipped: usize,
}

impl LossScale {
    const INITIAL: f64 = 65536.0;
    const GROWTH_INTERVAL: usize = 2000;

    pub fn new() -> Self {
        LossScale {
            scale: Self::INITIAL,
            good_steps: 0,
            skipped: 0,
        }
    }

    /// Divides the gradients by the scale; returns whether they are all finite, and updates the
    /// scale accordingly.
    pub fn unscale(&mut self, grads: &mut [Option<Vec<f32>>]) -> bool {
        let inverse = (1.0 / self.scale) as f32;
        let mut finite = true;
        for g in grads.iter_mut().flatten() {
            for v in g.iter_mut() {
                *v *= inverse;
                finite &= v.is_finite();
            }
        }
        if finite {
            self.good_steps += 1;
            if self.good_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale *= 0.5;
            self.good_steps = 0;
            self.skipped += 1;
        }
        finite
    }
}

impl Default for LossScale {
    fn default() -> Self {
        Self::new()
    }
}

/// What a resumed run starts from.
pub struct Resume {
    pub state: TrainerState,
    pub optimizer: Vec<(String, Vec<f32>)>,
}

/// Options of a run beyond its spec.
#[derive(Default)]
pub struct Control<'a> {
    /// Continue from a checkpoint (its parameters are already loaded into the model).
    pub resume: Option<Resume>,
    /// Set when the run should stop: it checkpoints and ends `Interrupted`.
    pub stop: Option<&'a AtomicBool>,
}

/// Trains a built model on its data from scratch.
pub fn train(
    spec: &RunSpec,
    data: &Dataset,
    built: &Built,
    device: &Device,
    sink: &mut dyn Sink,
) -> Result<Outcome, TrainError> {
    train_with(spec, data, built, device, sink, Control::default())
}

/// Trains a built model on its data, resuming and stopping as `control` says, in the precision
/// [`precision::resolve`] chooses for the spec and device.
pub fn train_with(
    spec: &RunSpec,
    data: &Dataset,
    built: &Built,
    device: &Device,
    sink: &mut dyn Sink,
    control: Control,
) -> Result<Outcome, TrainError> {
    let compute = precision::resolve(spec.precision, device.is_cuda()).0;
    train_in(spec, data, built, device, sink, control, compute)
}

/// [`train_with`] with the linear layers computing in `compute` whatever the device (e.g. bf16
/// on the CPU): F32, or BF16/F16 over f32 parameters and optimizer state; F16 scales the loss
/// dynamically ([`LossScale`]).
pub fn train_in(
    spec: &RunSpec,
    data: &Dataset,
    built: &Built,
    device: &Device,
    sink: &mut dyn Sink,
    control: Control,
    compute: DType,
) -> Result<Outcome, TrainError> {
    let train = &spec.train;
    // "auto" needs the device's memory to choose; until that exists it is refused here (and by
    // `xp run`'s preflight) rather than silently replaced by some size.
    let micro = match train.batch_size {
        crate::spec::BatchSize::Fixed(b) => b.max(1),
        crate::spec::BatchSize::Auto => return Err(TrainError::Unsupported("batch-size \"auto\"")),
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
    let mut s = TrainerState {
        step: 0,
        epoch: 0.0,
        order: order.state(),
        dropout_rng: Rng::stream(spec.seed, "dropout").state(),
        schedule: schedule.state(),
        stale_evals: 0,
        best: BTreeMap::new(),
        last: Metrics::new(),
        tokens: 0,
        elapsed_s: 0.0,
        metrics_lines: 0,
        loss_scale: (compute == DType::F16).then(LossScale::new),
    };
    let resumed_from = control.resume.as_ref().map(|r| r.state.step);
    if let Some(r) = control.resume {
        optimizer
            .load_state(&r.optimizer)
            .map_err(TrainError::Resume)?;
        schedule
            .load_state(&r.state.schedule)
            .map_err(TrainError::Resume)?;
        order = Order::restore(data.train.len(), &r.state.order);
        s = r.state;
        // A checkpoint of another precision (the same run on another device) has no scale, or
        // one f16 no longer needs.
        if s.loss_scale.is_some() != (compute == DType::F16) {
            s.loss_scale = (compute == DType::F16).then(LossScale::new);
        }
    }
    let mut dropout_rng = Rng::from_state(s.dropout_rng);
    let start = Instant::now();
    // Training time so far: before this process (a resumed run's checkpoint) plus since. The
    // base is read once: checkpoints store the running total in the state.
    let before = s.elapsed_s;
    let elapsed = || before + start.elapsed().as_secs_f64();
    sink.event(&Event::Start {
        total_steps: total,
        steps_per_epoch,
        params: built.total_params(),
        trainable: built.trainable_params(),
        resumed_from,
    })?;
    let mut ending = Ending::Completed;
    while s.step < total {
        if control.stop.is_some_and(|f| f.load(Ordering::SeqCst)) {
            ending = Ending::Interrupted { step: s.step };
            break;
        }
        let step = s.step + 1;
        let lr = schedule.lr(step);
        // One draw per optimizer step: an epoch is `steps_per_epoch` whole steps.
        let rows = order.next(micro * accum);
        let batches: Vec<Batch> = rows
            .chunks(micro)
            .map(|r| data.batch(&data.train, r, device))
            .collect::<Result<_, _>>()?;
        let counted: usize = batches.iter().map(|b| b.counted).sum();
        let scale = s.loss_scale.as_ref().map(|l| l.scale);
        let pass = Pass {
            task: data.task,
            counted,
            compute,
            scale,
        };
        let (loss, mut grads) = forward_backward(built, &pass, &batches, &mut dropout_rng)?;
        s.tokens += batches.iter().map(|b| b.tokens).sum::<usize>();
        if !loss.is_finite() {
            ending = Ending::Diverged {
                step,
                reason: format!("the training loss became {loss} at step {step}"),
            };
            break;
        }
        // f16: a step whose gradients overflowed is skipped (the scale backs off).
        let finite = s.loss_scale.as_mut().is_none_or(|l| l.unscale(&mut grads));
        let grad_norm = if finite {
            let norm = clip(&mut grads, train.grad_clip)?;
            update(
                built,
                &grads,
                optimizer.as_mut(),
                lr,
                train.optimizer.decay_all,
                device,
            )?;
            Some(norm)
        } else {
            None
        };
        (s.step, s.epoch) = (step, step as f64 / steps_per_epoch as f64);
        let mut metrics = Metrics::new();
        if step.is_multiple_of(train.log_every) || step == total {
            metrics.insert("train/loss".into(), loss);
            metrics.insert("train/lr".into(), lr);
            if let Some(norm) = grad_norm {
                metrics.insert("train/grad_norm".into(), norm);
            }
            if let Some(l) = &s.loss_scale {
                metrics.insert("train/loss_scale".into(), l.scale);
                metrics.insert("train/skipped_steps".into(), l.skipped as f64);
            }
            metrics.insert(
                throughput_key(data.task).into(),
                s.tokens as f64 / elapsed().max(1e-9),
            );
        }
        if let Some(eval) = train
            .eval
            .filter(|e| step.is_multiple_of(e.every) || step == total)
        {
            sink.event(&Event::Evaluating { step })?;
            metrics.extend(evaluate(built, data, micro, eval.batches, compute, device)?);
        }
        let (improved, stop) = judge(spec, &mut schedule, &mut s, &metrics);
        if !metrics.is_empty() {
            sink.event(&Event::Metrics {
                step,
                epoch: s.epoch,
                time_s: elapsed(),
                metrics: &metrics,
            })?;
        }
        s.dropout_rng = dropout_rng.state();
        let due = train
            .checkpoint
            .is_some_and(|c| step.is_multiple_of(c.every) && step < total);
        let best = improved && train.checkpoint.is_some_and(|c| c.best);
        for why in [due.then_some(Why::Interval), best.then_some(Why::Best)]
            .into_iter()
            .flatten()
        {
            let at = elapsed();
            checkpoint(
                sink,
                &mut s,
                &order,
                &schedule,
                optimizer.as_ref(),
                built,
                why,
                at,
            )?;
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
    if let Ending::Interrupted { .. } = ending {
        s.dropout_rng = dropout_rng.state();
        let at = elapsed();
        checkpoint(
            sink,
            &mut s,
            &order,
            &schedule,
            optimizer.as_ref(),
            built,
            Why::Interrupt,
            at,
        )?;
    }
    let wall_s = elapsed();
    Ok(Outcome {
        ending,
        steps: s.step,
        wall_s,
        throughput: s.tokens as f64 / wall_s.max(1e-9),
        last: s.last,
        best: s.best,
    })
}

/// Applies the optimizer to every trainable parameter that got a gradient.
fn update(
    built: &Built,
    grads: &Grads,
    optimizer: &mut dyn Optimizer,
    lr: f64,
    decay_all: bool,
    device: &Device,
) -> candle_core::Result<()> {
    for (index, (param, grad)) in built.params.iter().zip(grads).enumerate() {
        let (Some(grad), true) = (grad, param.trainable) else {
            continue;
        };
        let mut values = param.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        optimizer.update(index, &mut values, grad, lr, param.decay || decay_all);
        param
            .var
            .set(&Tensor::from_vec(values, param.var.shape(), device)?)?;
    }
    Ok(())
}

/// Records the step's metrics as last and best values, feeds the objective to the schedule and
/// early stopping; returns whether the objective improved, and why to stop if it is time.
fn judge(
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

#[allow(clippy::too_many_arguments)]
fn checkpoint(
    sink: &mut dyn Sink,
    s: &mut TrainerState,
    order: &Order,
    schedule: &LrSchedule,
    optimizer: &dyn Optimizer,
    built: &Built,
    why: Why,
    elapsed: f64,
) -> std::io::Result<()> {
    s.order = order.state();
    s.schedule = schedule.state();
    s.elapsed_s = elapsed;
    let buffers = optimizer.state();
    sink.event(&Event::Checkpoint(Checkpoint {
        state: s,
        params: &built.params,
        optimizer: &buffers,
        why,
    }))
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

/// How one optimizer step's forward and backward passes run.
struct Pass {
    task: Task,
    /// The step's counted targets, over all its micro-batches.
    counted: usize,
    compute: DType,
    /// f16's loss scale: the gradients come back multiplied by it.
    scale: Option<f64>,
}

/// Positions (tokens, or rows of tabular data) a shard has at least. On the CPU each
/// micro-batch is split by rows into shards of about this many positions, whose forward and
/// backward passes run in parallel (rayon) and whose gradients are then summed in shard order.
/// The split depends on the batch alone, never on the number of threads, so a run's results
/// are the same whatever the thread count and timing.
const SHARD_POSITIONS: usize = 512;

/// The row ranges a micro-batch of `rows` rows, `per_row` positions each, is split into: as
/// many shards of at least [`SHARD_POSITIONS`] as fit (at least one), sizes differing by at
/// most one row.
pub fn shards(rows: usize, per_row: usize) -> Vec<std::ops::Range<usize>> {
    let n = (rows * per_row / SHARD_POSITIONS).clamp(1, rows.max(1));
    (0..n).map(|i| rows * i / n..rows * (i + 1) / n).collect()
}

/// The shards of `batch`: [`shards`] on the CPU, the whole batch elsewhere.
fn shards_of(batch: &Batch, task: Task) -> candle_core::Result<Vec<std::ops::Range<usize>>> {
    let rows = batch.inputs.dim(0)?;
    if !batch.inputs.device().is_cpu() {
        return Ok(std::iter::once(0..rows).collect());
    }
    let per_row = match task {
        Task::Language { .. } => batch.inputs.elem_count() / rows.max(1),
        _ => 1,
    };
    Ok(shards(rows, per_row))
}

/// Runs `run` on each shard's index, inputs and targets and hands the results to `take` in
/// shard order. Shards run in waves of as many as the pool has threads, so at most that many
/// shards' activations and results are alive at once.
fn on_shards<T: Send>(
    batch: &Batch,
    ranges: Vec<std::ops::Range<usize>>,
    run: impl Fn(usize, &Tensor, &Tensor) -> Result<T, TrainError> + Sync,
    mut take: impl FnMut(T),
) -> Result<(), TrainError> {
    use rayon::prelude::*;
    if let [r] = ranges.as_slice()
        && r.len() == batch.inputs.dim(0)?
    {
        take(run(0, &batch.inputs, &batch.targets)?);
        return Ok(());
    }
    let shards: Vec<_> = ranges.into_iter().enumerate().collect();
    for wave in shards.chunks(rayon::current_num_threads().max(1)) {
        let results: Vec<Result<T, TrainError>> = wave
            .par_iter()
            .map(|(i, r)| {
                let inputs = batch.inputs.narrow(0, r.start, r.len())?;
                let targets = batch.targets.narrow(0, r.start, r.len())?;
                run(*i, &inputs, &targets)
            })
            .collect();
        for result in results {
            take(result?);
        }
    }
    Ok(())
}

/// The loss of one optimizer step, and the gradient of every parameter (flattened). Each
/// micro-batch's loss is its summed loss over the step's counted targets, so the gradient is
/// exactly a full batch's. Each shard of a micro-batch draws its dropout from a generator
/// seeded from `rng`, one seed per shard in order, so the draws do not depend on which thread
/// runs which shard; gradients are summed in shard order.
fn forward_backward(
    built: &Built,
    pass: &Pass,
    batches: &[Batch],
    rng: &mut Rng,
) -> Result<(f64, Grads), TrainError> {
    let mut total = 0.0;
    let mut grads: Grads = vec![None; built.params.len()];
    for batch in batches {
        let ranges = shards_of(batch, pass.task)?;
        let seeds: Vec<u64> = ranges.iter().map(|_| rng.next_u64()).collect();
        on_shards(
            batch,
            ranges,
            |i, inputs, targets| {
                shard_backward(built, pass, inputs, targets, &mut Rng::new(seeds[i]))
            },
            |(loss, part)| {
                total += loss;
                for (slot, g) in grads.iter_mut().zip(part) {
                    match (slot, g) {
                        (_, None) => {}
                        (Some(acc), Some(g)) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
                        (slot, g) => *slot = g,
                    }
                }
            },
        )?;
    }
    Ok((total, grads))
}

/// One shard's forward and backward pass: its loss (summed over its targets, divided by the
/// step's count) and its parameters' gradients.
fn shard_backward(
    built: &Built,
    pass: &Pass,
    inputs: &Tensor,
    targets: &Tensor,
    rng: &mut Rng,
) -> Result<(f64, Grads), TrainError> {
    let output = built.model.forward(
        inputs,
        &mut Mode {
            train: true,
            rng,
            compute: pass.compute,
        },
    )?;
    let output = output.to_dtype(DType::F32)?;
    let loss = (loss_sum(pass.task, &output, targets)? / pass.counted.max(1) as f64)?;
    let value = f64::from(loss.to_scalar::<f32>()?);
    let store = match pass.scale {
        Some(scale) => (loss * scale)?.backward()?,
        None => loss.backward()?,
    };
    let grads = built
        .params
        .iter()
        .map(|param| {
            store
                .get(param.var.as_tensor())
                .map(|g| g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>())
                .transpose()
        })
        .collect::<candle_core::Result<_>>()?;
    Ok((value, grads))
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
    compute: DType,
    device: &Device,
) -> Result<Metrics, TrainError> {
    let n = data.validation.len();
    let (mut loss, mut counted, mut correct) = (0.0, 0usize, 0usize);
    let indices: Vec<usize> = (0..n).collect();
    for (i, chunk) in indices.chunks(micro.max(1)).enumerate() {
        if limit.is_some_and(|l| i >= l) {
            break;
        }
        let batch = data.batch(&data.validation, chunk, device)?;
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
            let loss = f64::from(loss_sum(data.task, &output, targets)?.to_scalar::<f32>()?);
            let hit = match data.task {
                Task::Regression { .. } => 0,
                Task::Classification { .. } => hits(&output, targets)?,
                Task::Language { vocab } => {
                    hits(&output.reshape(((), vocab))?, &targets.flatten_all()?)?
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
/// seed), or file order; the rows left over at the end of an epoch are dropped.
struct Order {
    n: usize,
    rng: Option<Rng>,
    /// The generator's state before it drew the current permutation (for checkpoints).
    drawn_from: Option<[u64; 4]>,
    current: Vec<usize>,
    position: Option<usize>,
}

/// Where the data order stands; the permutation itself is drawn again from `drawn_from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderState {
    /// Generator state before the current permutation (`None`: file order or not started).
    pub drawn_from: Option<[u64; 4]>,
    /// Generator state now (`None`: file order).
    pub rng: Option<[u64; 4]>,
    /// Rows of the current permutation used (`None`: no epoch started yet).
    pub position: Option<usize>,
}

impl Order {
    fn new(n: usize, seed: u64, shuffle: bool) -> Self {
        let rng = shuffle.then(|| Rng::stream(seed, "data/order"));
        Order {
            n,
            rng,
            drawn_from: None,
            current: Vec::new(),
            position: None,
        }
    }

    fn state(&self) -> OrderState {
        OrderState {
            drawn_from: self.drawn_from,
            rng: self.rng.as_ref().map(Rng::state),
            position: self.position,
        }
    }

    fn restore(n: usize, state: &OrderState) -> Self {
        let mut order = Order {
            n,
            rng: state.rng.map(Rng::from_state),
            drawn_from: state.drawn_from,
            current: Vec::new(),
            position: state.position,
        };
        if state.position.is_some() {
            order.current = (0..n).collect();
            if let Some(from) = state.drawn_from {
                Rng::from_state(from).shuffle(&mut order.current);
            }
        }
        order
    }

    fn next(&mut self, count: usize) -> Vec<usize> {
        let position = self
            .position
            .filter(|p| p.saturating_add(count) <= self.current.len());
        let position = match position {
            Some(p) => p,
            None => {
                self.current = (0..self.n).collect();
                if let Some(rng) = self.rng.as_mut() {
                    self.drawn_from = Some(rng.state());
                    rng.shuffle(&mut self.current);
                }
                0
            }
        };
        let out = self.current[position..(position + count).min(self.current.len())].to_vec();
        self.position = Some(position + count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_rows_in_order_with_sizes_a_row_apart() {
        assert_eq!(shards(16, 128), [0..4, 4..8, 8..12, 12..16]);
        let one = |r: std::ops::Range<usize>| vec![r];
        assert_eq!(shards(64, 4), one(0..64), "256 tokens: one shard");
        assert_eq!(shards(3, 1), one(0..3));
        assert_eq!(shards(0, 128), one(0..0));
        assert_eq!(shards(2, 10_000), [0..1, 1..2], "at most a row each");
        for (rows, per_row) in [(7, 200), (33, 64), (1000, 1), (5, 512)] {
            let s = shards(rows, per_row);
            assert_eq!(s.len(), (rows * per_row / SHARD_POSITIONS).clamp(1, rows));
            assert_eq!((s[0].start, s[s.len() - 1].end), (0, rows));
            assert!(s.windows(2).all(|w| w[0].end == w[1].start));
            let sizes: Vec<usize> = s.iter().map(|r| r.len()).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{rows}×{per_row}: {sizes:?}");
        }
    }

    /// A batch split into shards gives the loss and gradients of the whole batch in one pass
    /// (to float32 rounding), and the same bits on one thread as on two.
    #[test]
    fn sharded_gradients_are_the_whole_batchs() {
        let text = r#"experiment "t" {
    device "cpu"
    model "llama" { layers 2; heads 4; dim 32; hidden 64; context 64 }
    data "copy" length=32 vocab=16 samples=64
    train { batch-size 24; optimizer "sgd" lr=0.1; }
}"#;
        let checked = crate::front::validate_text("t.kdl", text);
        let spec = &checked.plans[0].runs[0].config;
        let data = crate::data::load(&spec.data, spec.seed, Some(64)).unwrap();
        let device = Device::Cpu;
        let built =
            crate::model::build(spec, &data, Default::default(), true, "", &device).unwrap();
        let rows: Vec<usize> = (0..24).collect();
        let batch = data.batch(&data.train, &rows, &device).unwrap();
        let ranges = shards_of(&batch, data.task).unwrap();
        assert_eq!(ranges.len(), 3, "24 rows of 64 tokens: 3 shards of 512");
        let pass = Pass {
            task: data.task,
            counted: batch.counted,
            compute: DType::F32,
            scale: None,
        };
        let (whole_loss, whole) = shard_backward(
            &built,
            &pass,
            &batch.inputs,
            &batch.targets,
            &mut Rng::new(0),
        )
        .unwrap();
        let on = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                forward_backward(
                    &built,
                    &pass,
                    std::slice::from_ref(&batch),
                    &mut Rng::new(0),
                )
                .unwrap()
            })
        };
        let (loss, grads) = on(1);
        assert!(
            (loss - whole_loss).abs() < 1e-6 * whole_loss,
            "{loss} vs {whole_loss}"
        );
        for (i, (g, w)) in grads.iter().zip(&whole).enumerate() {
            let (g, w) = (g.as_ref().unwrap(), w.as_ref().unwrap());
            let scale = w.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1e-12);
            let worst = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst <= 1e-5 * scale, "parameter {i}: {worst} of {scale}");
        }
        let (loss2, grads2) = on(2);
        assert_eq!(loss.to_bits(), loss2.to_bits());
        assert_eq!(grads, grads2, "one thread and two give the same bits");
    }
}
