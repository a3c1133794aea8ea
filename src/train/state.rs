//! The trainer's state: everything a checkpoint saves besides the parameters, how a run starts
//! fresh or from a checkpoint, and how a checkpoint is handed to the sink.

use std::collections::BTreeMap;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::model::Built;
use crate::rng::Rng;
use crate::spec::RunSpec;

use super::TrainError;
use super::batch::BatchRecord;
use super::event::{Event, Sink, Snapshot, Why};
use super::loss_scale::LossScale;
use super::metrics::Metrics;
use super::oom::BatchChange;
use super::order::{Grouping, Order, OrderState, shuffles};
use super::schedule::LrSchedule;
use super::transfer::Transfers;
use super::update::Stepper;

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
    /// The micro-batch of fixed batches (a resumed run keeps it; absent for token budgets and
    /// in checkpoints of older versions).
    #[serde(default)]
    pub batch: Option<BatchRecord>,
    /// How the micro-batches changed at steps that ran out of memory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch_changes: Vec<BatchChange>,
}

/// What a resumed run starts from.
pub struct Resume {
    pub state: TrainerState,
    pub optimizer: Vec<(String, Vec<f32>)>,
}

/// What the loop carries from step to step besides the model: the [`TrainerState`] and the
/// schedule, optimizer, data order and dropout generator it is saved from, and the count of what
/// the run copies between the host and its device.
pub(super) struct Trainer {
    pub state: TrainerState,
    pub schedule: LrSchedule,
    pub optimizer: Stepper,
    pub order: Order,
    pub dropout: Rng,
    pub transfers: Transfers,
}

impl Trainer {
    /// A run's trainer at its first step: fresh from the spec, or where `resume` left off; its
    /// optimizer on the device when `resident`.
    pub fn start(
        spec: &RunSpec,
        examples: usize,
        grouping: Grouping,
        (steps_per_epoch, compute, device, resident): (usize, DType, &Device, bool),
        resume: Option<Resume>,
        batch: Option<BatchRecord>,
    ) -> Result<Self, TrainError> {
        let train = &spec.train;
        let mut schedule = LrSchedule::new(
            train,
            train.optimizer.lr,
            steps_per_epoch,
            spec.objective.direction,
        );
        let mut optimizer = Stepper::new(&train.optimizer, device, resident);
        let transfers = Transfers::new();
        let mut order = Order::new(examples, grouping.clone(), spec.seed, shuffles(spec));
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
            batch: batch.clone(),
            batch_changes: Vec::new(),
        };
        if let Some(r) = resume {
            optimizer
                .load_state(&r.optimizer, &transfers)
                .map_err(TrainError::Resume)?;
            schedule
                .load_state(&r.state.schedule)
                .map_err(TrainError::Resume)?;
            order = Order::restore(examples, grouping, &r.state.order);
            s = r.state;
            s.batch = batch;
            // A checkpoint of another precision (the same run on another device) has no scale, or
            // one f16 no longer needs.
            if s.loss_scale.is_some() != (compute == DType::F16) {
                s.loss_scale = (compute == DType::F16).then(LossScale::new);
            }
        }
        Ok(Trainer {
            dropout: Rng::from_state(s.dropout_rng),
            state: s,
            schedule,
            optimizer,
            order,
            transfers,
        })
    }

    /// Hands the sink a checkpoint of the state after the last step, `elapsed` seconds of
    /// training in.
    pub fn checkpoint(
        &mut self,
        sink: &mut dyn Sink,
        built: &Built,
        why: Why,
        elapsed: f64,
    ) -> std::io::Result<()> {
        let s = &mut self.state;
        s.order = self.order.state();
        s.dropout_rng = self.dropout.state();
        s.schedule = self.schedule.state();
        s.elapsed_s = elapsed;
        let buffers = (self.optimizer.state(&self.transfers)).map_err(std::io::Error::other)?;
        sink.event(&Event::Checkpoint(Snapshot {
            state: s,
            params: &built.params,
            optimizer: &buffers,
            why,
        }))
    }
}
