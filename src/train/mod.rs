//! The training loop, in nanoGPT's order: lr → forward → backward → clip → step → log →
//! eval → stop. It knows no paths and prints nothing: everything it has to say is an
//! [`Event`] for a [`Sink`] (metrics.jsonl, train.log and progress are sinks).

mod batch;
pub(crate) mod device;
mod eval;
mod event;
mod loss_scale;
pub mod memory;
mod metrics;
mod oom;
pub mod optim;
mod order;
pub(crate) mod precision;
pub mod schedule;
mod shards;
mod state;
pub mod threads;
pub mod transfer;
mod update;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{DType, Device};

use crate::data::{Batch, Dataset, Task, budget};
use crate::model::Built;
use crate::ops::kernels::{self, Disabled};
use crate::spec::{BatchSize, Batching, RunSpec};

pub use batch::BatchRecord;
pub use event::{Event, Sink, Snapshot, Why};
pub use loss_scale::LossScale;
pub use metrics::{Metrics, throughput_key};
pub use oom::BatchChange;
pub use order::OrderState;
pub use shards::shards;
pub use state::{Resume, TrainerState};

use eval::evaluate;
use metrics::{judge, logged};
use order::Grouping;
use shards::{Pass, forward_backward};
use state::Trainer;
use transfer::{Kind, Transfers};

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
    /// Stopped by the sweep's pruner after evaluating `step`; a checkpoint of that step was
    /// written.
    Pruned {
        step: usize,
        reason: String,
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
    /// The micro-batch and accumulation of fixed batches, and how an automatic one was chosen.
    pub batch: Option<BatchRecord>,
    /// How the micro-batches changed at steps that ran out of memory.
    pub batch_changes: Vec<BatchChange>,
    /// The fused kernels the self-check turned off on the run's device.
    pub disabled_kernels: Vec<Disabled>,
    /// What the run copied between the host and its device, by kind.
    pub transfers: transfer::Counts,
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
    #[error(
        "no training example fits in `batch-tokens {budget}`: the shortest has {shortest} tokens"
    )]
    NothingFits { budget: usize, shortest: usize },
    #[error(
        "`batch-size \"auto\"`: not even one example a micro-batch fits in the memory budget of {} ({})",
        memory::human_bytes(*budget),
        needed.map_or("its need cannot be estimated".to_owned(), |n| format!("it needs about {}", memory::human_bytes(n)))
    )]
    NoBatchFits { budget: u64, needed: Option<u64> },
    #[error(
        "`batch-size \"auto\"` needs a memory budget: give `resources {{ memory \"16G\" }}` (this platform reports no available memory)"
    )]
    NoBudget,
    #[error(
        "step {step} ran out of memory with one example a micro-batch ({reason}): give the run more memory or make its model or sequences smaller"
    )]
    OutOfMemory { step: usize, reason: String },
}

/// Options of a run beyond its spec.
#[derive(Default)]
pub struct Control<'a> {
    /// Continue from a checkpoint (its parameters are already loaded into the model).
    pub resume: Option<Resume>,
    /// Set when the run should stop: it checkpoints and ends `Interrupted`.
    pub stop: Option<&'a AtomicBool>,
    /// Steps whose first attempt fails as if out of memory (fault injection, to test the
    /// recovery).
    pub out_of_memory_at: Vec<usize>,
    /// Asked after each evaluation before the last step, with the step and the objective's
    /// value (NaN when the evaluation did not give it); a reason stops the run: it checkpoints
    /// and ends `Pruned`.
    pub pruner: Option<&'a mut Pruner<'a>>,
    /// Takes the device-resident step ([`update`]) on the CPU too, where the host's bit-exact
    /// step is the default (CUDA always takes it): for tests of that path.
    pub device_step: bool,
}

/// The sweep's say on a run at an evaluation step ([`Control::pruner`]).
pub type Pruner<'a> = dyn FnMut(usize, f64) -> std::io::Result<Option<String>> + 'a;

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
    let mut pruner = control.pruner;
    let resumed_from = control.resume.as_ref().map(|r| r.state.step);
    // A resumed run keeps the micro-batch it started with (an automatic choice is not redone).
    let (record, reused) = match control.resume.as_ref().and_then(|r| r.state.batch.clone()) {
        Some(record) => (Some(record), true),
        None => (batch::decide(spec, data, built, device, compute)?, false),
    };
    let mut split = record.as_ref().map(|r| r.split(spec));
    let mut grouping = grouping(spec, data, split)?;
    let (accum, steps_per_epoch) = match split {
        Some(s) => (s.accumulation(), data.train.len() / s.step_rows.max(1)),
        None => {
            let accum = train.gradient_accumulation.max(1);
            let batches = order::batches_per_epoch(data.train.len(), &grouping);
            (accum, batches / accum)
        }
    };
    let steps_per_epoch = steps_per_epoch.max(1);
    let resident = control.device_step || !device.is_cpu();
    let mut t = Trainer::start(
        spec,
        data.train.len(),
        grouping.clone(),
        (steps_per_epoch, compute, device, resident),
        control.resume,
        record,
    )?;
    let disabled_kernels = kernels::verify(device);
    let budget = t.state.batch.as_ref().and_then(|r| r.budget_bytes);
    let budget = budget.or_else(|| spec.resources.as_ref().and_then(|r| r.memory_bytes()));
    let mut guard = oom::Guard::new(budget, control.out_of_memory_at.clone());
    let total = t.schedule.total_steps();
    let start = Instant::now();
    // Training time so far: before this process (a resumed run's checkpoint) plus since. The
    // base is read once: checkpoints store the running total in the state.
    let before = t.state.elapsed_s;
    let elapsed = || before + start.elapsed().as_secs_f64();
    sink.event(&Event::Start {
        total_steps: total,
        steps_per_epoch,
        params: built.total_params(),
        trainable: built.trainable_params(),
        resumed_from,
    })?;
    if let Some(record) = &t.state.batch {
        sink.event(&Event::Batch { record, reused })?;
    }
    for disabled in &disabled_kernels {
        sink.event(&Event::KernelDisabled(disabled))?;
    }
    let mut ending = Ending::Completed;
    while t.state.step < total {
        if control.stop.is_some_and(|f| f.load(Ordering::SeqCst)) {
            ending = Ending::Interrupted { step: t.state.step };
            break;
        }
        let step = t.state.step + 1;
        let lr = t.schedule.lr(step);
        // One draw per optimizer step: an epoch is `steps_per_epoch` whole steps. A step that
        // runs out of memory is redone on the same rows in smaller micro-batches.
        let drawn = match split {
            Some(s) => t.order.next_fixed(s.step_rows, s.micro),
            None => t.order.next(accum),
        };
        let dropout = t.dropout.clone();
        let (loss, grads, shape) = loop {
            let rows = match split {
                Some(s) => drawn
                    .concat()
                    .chunks(s.micro)
                    .map(<[usize]>::to_vec)
                    .collect(),
                None => oom::cut(&drawn, oom::parts(&t.state.batch_changes)),
            };
            let estimate =
                |micro| memory::estimate_micro(spec, Some(data), micro).map(|e| e.total());
            let attempt = match guard.before(step, t.state.batch.as_ref(), estimate) {
                Some(overrun) => Err(overrun),
                None => {
                    let scale = t.state.loss_scale.as_ref().map(|l| l.scale);
                    let pass = (compute, scale);
                    let on = (device, &t.transfers);
                    match attempt_step(built, data, pass, &rows, &mut t.dropout, on)? {
                        Ok(done) => guard.after(step).map_or(Ok(done), Err),
                        Err(overrun) => Err(overrun),
                    }
                }
            };
            match attempt {
                Ok(done) => break done,
                Err(overrun) => {
                    t.dropout = dropout.clone();
                    let largest = rows.iter().map(Vec::len).max().unwrap_or(0);
                    let cut = (&mut split, &mut grouping);
                    let change = shrink(step, &overrun, largest, &mut t.state, cut)?;
                    if let Some(record) = t.state.batch.as_mut().filter(|_| split.is_some()) {
                        guard.changed(step, record, estimate);
                    }
                    sink.event(&Event::BatchChange(&change))?;
                    t.state.batch_changes.push(change);
                }
            }
        };
        t.state.tokens += shape.tokens;
        if !loss.is_finite() {
            let reason = format!("the training loss became {loss} at step {step}");
            ending = Ending::Diverged { step, reason };
            break;
        }
        // f16: a step whose gradients overflowed is skipped (the scale backs off).
        let grad_norm = t.optimizer.step(
            built,
            grads,
            t.state.loss_scale.as_mut(),
            train.grad_clip,
            lr,
            train.optimizer.decay_all,
            &t.transfers,
        )?;
        (t.state.step, t.state.epoch) = (step, step as f64 / steps_per_epoch as f64);
        // The measured peak of the first steps (and of those after a change of micro-batch),
        // beside the estimate.
        if let Some(record) = t.state.batch.as_mut().filter(|_| guard.calibrating(step)) {
            let peak = memory::peak_now();
            record.measured_peak_memory_bytes = record.measured_peak_memory_bytes.max(peak);
        }
        let mut metrics = Metrics::new();
        let mut pruned = None;
        if step.is_multiple_of(train.log_every) || step == total {
            let throughput = t.state.tokens as f64 / elapsed().max(1e-9);
            let scale = t.state.loss_scale.as_ref();
            // The device path's norm is read here, at log steps only.
            let grad_norm = grad_norm.map(|n| n.read(&t.transfers)).transpose()?;
            metrics = logged(data.task, loss, lr, grad_norm, scale, throughput);
            metrics.extend(shape.metrics(data.task));
            if let Some(peak) = guard.take_peak() {
                metrics.insert("train/peak_memory_bytes".into(), peak as f64);
            }
        }
        if let Some(eval) = train
            .eval
            .filter(|e| step.is_multiple_of(e.every) || step == total)
        {
            sink.event(&Event::Evaluating { step })?;
            metrics.extend(evaluate(
                built,
                data,
                &grouping,
                eval.batches,
                compute,
                (device, &t.transfers),
            )?);
            if let Some(prune) = pruner.as_mut().filter(|_| step < total) {
                let objective = metrics.get(&spec.objective.metric).copied();
                pruned = prune(step, objective.unwrap_or(f64::NAN))?;
            }
        }
        let (improved, stop) = judge(spec, &mut t.schedule, &mut t.state, &metrics);
        if !metrics.is_empty() {
            let (epoch, time_s) = (t.state.epoch, elapsed());
            sink.event(&Event::Metrics {
                step,
                epoch,
                time_s,
                metrics: &metrics,
            })?;
        }
        let due = train
            .checkpoint
            .is_some_and(|c| step.is_multiple_of(c.every) && step < total);
        let best = improved && train.checkpoint.is_some_and(|c| c.best);
        for why in [due.then_some(Why::Interval), best.then_some(Why::Best)]
            .into_iter()
            .flatten()
        {
            t.checkpoint(sink, built, why, elapsed())?;
        }
        if let Some(reason) = pruned {
            ending = Ending::Pruned { step, reason };
            break;
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
    match ending {
        Ending::Interrupted { .. } => t.checkpoint(sink, built, Why::Interrupt, elapsed())?,
        Ending::Pruned { .. } => t.checkpoint(sink, built, Why::Pruned, elapsed())?,
        _ => {}
    }
    let wall_s = elapsed();
    Ok(Outcome {
        ending,
        steps: t.state.step,
        wall_s,
        throughput: t.state.tokens as f64 / wall_s.max(1e-9),
        last: t.state.last,
        best: t.state.best,
        batch: t.state.batch,
        batch_changes: t.state.batch_changes,
        disabled_kernels,
        transfers: t.transfers.counts(),
    })
}

/// One attempt at a step's forward and backward passes over the micro-batches of `rows`: the
/// loss, the gradients and what the micro-batches held, or the [`oom::Overrun`] of a refused
/// device allocation. `pass` is the compute type and f16's loss scale; the loss is the one value
/// read back from the device.
fn attempt_step(
    built: &Built,
    data: &Dataset,
    (compute, scale): (DType, Option<f64>),
    rows: &[Vec<usize>],
    dropout: &mut crate::rng::Rng,
    (device, transfers): (&Device, &Transfers),
) -> Result<Result<(f64, shards::Grads, StepShape), oom::Overrun>, TrainError> {
    let mut run = || -> Result<_, TrainError> {
        let batches: Vec<Batch> = rows
            .iter()
            .map(|r| data.batch(&data.train, r, device))
            .collect::<Result<_, _>>()?;
        for b in &batches {
            transfer::count(Kind::Batch, batch_bytes(b), Some(transfers));
        }
        let shape = StepShape::of(&batches)?;
        let pass = Pass {
            task: data.task,
            counted: batches.iter().map(|b| b.counted).sum(),
            compute,
            scale,
        };
        let (loss, grads) = forward_backward(built, &pass, &batches, dropout)?;
        let loss = transfer::scalar(&loss, Some(transfers))?;
        Ok((loss, grads, shape))
    };
    match run() {
        Ok(done) => Ok(Ok(done)),
        Err(TrainError::Candle(e)) if oom::is_allocation_failure(&e) => {
            Ok(Err(oom::Overrun::Allocation(e.to_string())))
        }
        Err(e) => Err(e),
    }
}

/// The bytes of a batch's inputs and targets, which [`Dataset::batch`] built on the device from
/// host rows.
fn batch_bytes(b: &Batch) -> usize {
    [&b.inputs, &b.targets]
        .iter()
        .map(|t| t.elem_count() * t.dtype().size_in_bytes())
        .sum()
}

/// After `overrun` at `step`, whose largest micro-batch held `largest` examples: the next
/// smaller cut of the step (fixed micro-batches halved with the accumulation doubled, or
/// token-budget micro-batches cut into twice the parts), applied to the run's record, `split`
/// and (for evaluation) `grouping`; an error when no micro-batch holds more than one example.
fn shrink(
    step: usize,
    overrun: &oom::Overrun,
    largest: usize,
    state: &mut TrainerState,
    (split, grouping): (&mut Option<batch::Split>, &mut Grouping),
) -> Result<BatchChange, TrainError> {
    let reason = overrun.describe();
    let exhausted = || TrainError::OutOfMemory {
        step,
        reason: reason.clone(),
    };
    match (state.batch.as_mut(), split.as_mut()) {
        (Some(record), Some(split)) => {
            let (micro, accumulation) =
                oom::halve(record, split.step_rows).ok_or_else(exhausted)?;
            let before = record.micro;
            if largest <= 1 {
                return Err(exhausted());
            }
            (record.micro, record.accumulation, split.micro) = (micro, accumulation, micro);
            *grouping = Grouping::Fixed(micro);
            Ok(BatchChange {
                step,
                micro_before: Some(before),
                micro_after: Some(micro),
                accumulation: Some(accumulation),
                parts: None,
                reason,
            })
        }
        _ => {
            if largest <= 1 {
                return Err(exhausted());
            }
            let parts = oom::parts(&state.batch_changes);
            Ok(BatchChange {
                step,
                micro_before: None,
                micro_after: None,
                accumulation: None,
                parts: Some(parts * 2),
                reason,
            })
        }
    }
}

/// How the run's micro-batches are cut: fixed ones as `split` says (a fixed or automatic batch
/// size, see [`batch::decide`]), or by a token budget, which is refused when no training example
/// fits in it.
fn grouping(
    spec: &RunSpec,
    data: &Dataset,
    split: Option<batch::Split>,
) -> Result<Grouping, TrainError> {
    match (spec.train.batching(), split) {
        (Batching::Examples(_), Some(split)) => Ok(Grouping::Fixed(split.micro.max(1))),
        (Batching::Examples(BatchSize::Fixed(b)), None) => Ok(Grouping::Fixed(b.max(1))),
        (Batching::Examples(BatchSize::Auto), None) => Err(TrainError::Unsupported(
            "batch-size \"auto\" without its choice",
        )),
        (Batching::Tokens(budget), _) => {
            let lengths = data.train.lengths();
            if data.train.is_empty() || budget::over_budget(&lengths, budget) == lengths.len() {
                return Err(TrainError::NothingFits {
                    budget,
                    shortest: lengths.iter().copied().min().unwrap_or(0),
                });
            }
            Ok(Grouping::Tokens { budget, lengths })
        }
    }
}

/// What one optimizer step's micro-batches held, for its metrics.
#[derive(Debug, Clone, Copy)]
struct StepShape {
    examples: usize,
    /// Tokens of the examples (rows of a table), padding excluded.
    tokens: usize,
    /// Positions of the padded batches.
    positions: usize,
}

impl StepShape {
    fn of(batches: &[Batch]) -> candle_core::Result<StepShape> {
        let mut shape = StepShape {
            examples: 0,
            tokens: 0,
            positions: 0,
        };
        for b in batches {
            shape.examples += b.inputs.dim(0)?;
            shape.tokens += b.tokens;
            shape.positions += b.inputs.elem_count();
        }
        Ok(shape)
    }

    /// `train/batch_size` (examples in the step); for sequences also `train/tokens` (their
    /// tokens, padding excluded) and `train/padding_ratio` (padding's share of the padded
    /// batches' positions).
    fn metrics(&self, task: Task) -> Metrics {
        let mut metrics = Metrics::from([("train/batch_size".to_owned(), self.examples as f64)]);
        if let Task::Language { .. } = task {
            let padding = 1.0 - self.tokens as f64 / self.positions.max(1) as f64;
            metrics.insert("train/tokens".to_owned(), self.tokens as f64);
            metrics.insert("train/padding_ratio".to_owned(), padding.max(0.0));
        }
        metrics
    }
}
