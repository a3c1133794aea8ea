//! What the loop has to say, as [`Event`]s for a [`Sink`] (metrics.jsonl, train.log and
//! progress are sinks), checkpoints included.

use crate::model::Param;
use crate::ops::kernels::Disabled;

use super::batch::BatchRecord;
use super::metrics::Metrics;
use super::oom::BatchChange;
use super::state::TrainerState;

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
    /// How fixed micro-batches are cut: chosen now, or `reused` from the checkpoint resumed.
    Batch {
        record: &'a BatchRecord,
        reused: bool,
    },
    /// A step ran out of memory and is redone in smaller micro-batches.
    BatchChange(&'a BatchChange),
    /// A fused kernel failed its self-check on the run's device: the composed ops run instead.
    KernelDisabled(&'a Disabled),
    /// The loop is about to evaluate at `step` (its metrics follow in the step's `Metrics`).
    Evaluating {
        step: usize,
    },
    EarlyStop {
        step: usize,
        reason: &'a str,
    },
    /// Everything needed to continue exactly from after `state.step`: persist it.
    Checkpoint(Snapshot<'a>),
}

/// A checkpoint as the loop hands it to its sink.
#[derive(Debug, Clone)]
pub struct Snapshot<'a> {
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
    /// The sweep's pruner stopped the run.
    Pruned,
}

/// Where events go.
pub trait Sink {
    fn event(&mut self, event: &Event) -> std::io::Result<()>;
}
