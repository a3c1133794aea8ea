//! Out of memory inside a step (DESIGN.md §9): the step is redone on the same rows in smaller
//! micro-batches, so that the examples (or tokens) per optimizer step and the data order stay
//! as they were and the step's result changes only by the order of its sums.
//!
//! A step overruns when the device refuses an allocation (CUDA's out-of-memory error), or, where
//! the run has a memory budget (`resources { memory }`, or the budget `batch-size "auto"` chose
//! in), when the micro-batch's estimate — calibrated by the peak measured over the first steps —
//! or the step's measured peak passes it. Fixed micro-batches then halve and the accumulation
//! doubles; token-budget micro-batches are each cut in two, then four, …. Each change is a
//! [`BatchChange`] in train.log and summary.json (`batch_changes`) and in checkpoints, so a
//! resumed run goes on as the change left it.

use serde::{Deserialize, Serialize};

use super::batch::{BatchRecord, CALIBRATION_STEPS};
use super::memory::{self, human_bytes};

/// How a run's micro-batches changed at a step that ran out of memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchChange {
    /// The optimizer step that was redone in smaller micro-batches.
    pub step: usize,
    /// Fixed micro-batches: examples a micro-batch before and after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_before: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_after: Option<usize>,
    /// Fixed micro-batches: micro-batches an optimizer step after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accumulation: Option<usize>,
    /// Token budgets: into how many parts each micro-batch of the budget is cut from this step
    /// on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<usize>,
    pub reason: String,
}

impl BatchChange {
    /// train.log's line.
    pub fn describe(&self) -> String {
        match (self.micro_before, self.micro_after, self.accumulation) {
            (Some(before), Some(after), Some(accumulation)) => format!(
                "step {} ran out of memory ({}): micro-batch {before} → {after}, {accumulation} accumulated; the step is redone on the same examples",
                self.step, self.reason
            ),
            _ => format!(
                "step {} ran out of memory ({}): each token-budget micro-batch is cut into {} parts; the step is redone on the same examples",
                self.step,
                self.reason,
                self.parts.unwrap_or(1)
            ),
        }
    }
}

/// Why a step cannot run in the memory it has.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Overrun {
    /// The device refused an allocation.
    Allocation(String),
    /// The step's measured peak passed the budget.
    Measured { peak: u64, budget: u64 },
    /// The micro-batch's (calibrated) estimate passes the budget: the step was not tried.
    Estimated { estimate: u64, budget: u64 },
    /// A test asked for the step to fail as if out of memory.
    Injected,
}

impl Overrun {
    pub fn describe(&self) -> String {
        match self {
            Overrun::Allocation(error) => format!("the device refused an allocation: {error}"),
            Overrun::Measured { peak, budget } => format!(
                "its measured peak {} passed the budget of {}",
                human_bytes(*peak),
                human_bytes(*budget)
            ),
            Overrun::Estimated { estimate, budget } => format!(
                "the estimated peak {} of its micro-batch passes the budget of {}",
                human_bytes(*estimate),
                human_bytes(*budget)
            ),
            Overrun::Injected => "injected for a test".to_owned(),
        }
    }
}

/// Whether a candle error is a refused device allocation (CUDA reports
/// `CUDA_ERROR_OUT_OF_MEMORY`, "out of memory").
pub(super) fn is_allocation_failure(error: &candle_core::Error) -> bool {
    let text = error.to_string().to_ascii_lowercase();
    text.contains("out_of_memory") || text.contains("out of memory")
}

/// The next, smaller cut of fixed micro-batches: the accumulation doubled and the step's rows
/// spread evenly over it. `None` when a micro-batch already holds one example.
pub(super) fn halve(record: &BatchRecord, step_rows: usize) -> Option<(usize, usize)> {
    if record.micro <= 1 {
        return None;
    }
    let accumulation = record.accumulation.max(1) * 2;
    let micro = step_rows.div_ceil(accumulation).max(1);
    (micro < record.micro).then_some((micro, step_rows.div_ceil(micro)))
}

/// Token-budget micro-batches each cut into `parts` near-equal parts (none empty), in order.
pub(super) fn cut(groups: &[Vec<usize>], parts: usize) -> Vec<Vec<usize>> {
    let parts = parts.max(1);
    groups
        .iter()
        .flat_map(|g| {
            let size = g.len().div_ceil(parts).max(1);
            g.chunks(size).map(<[usize]>::to_vec).collect::<Vec<_>>()
        })
        .collect()
}

/// The parts token-budget micro-batches are cut into after `changes`.
pub(super) fn parts(changes: &[BatchChange]) -> usize {
    changes.iter().filter_map(|c| c.parts).max().unwrap_or(1)
}

/// What a run may hold and what its first steps measured against the estimate.
pub(super) struct Guard {
    /// The run's memory budget, where it has one.
    pub budget: Option<u64>,
    /// The steps whose first attempt fails as if out of memory.
    pub injected: Vec<usize>,
    /// Steps whose first attempt has been made (an injected failure happens once).
    tried: Option<usize>,
    /// The highest peak of the stretch since the last logged step (the per-step marks are
    /// started afresh to measure each attempt).
    window: u64,
    /// The estimate of the last micro-batch size asked about.
    estimate: Option<(usize, Option<u64>)>,
    /// The last step whose measured peak calibrates the estimate: the first
    /// [`CALIBRATION_STEPS`], and as many after each change of the micro-batch.
    calibrated_after: usize,
}

impl Guard {
    pub fn new(budget: Option<u64>, injected: Vec<usize>) -> Guard {
        Guard {
            budget,
            injected,
            tried: None,
            window: 0,
            estimate: None,
            calibrated_after: CALIBRATION_STEPS,
        }
    }

    /// Whether `step`'s measured peak calibrates the estimate.
    pub fn calibrating(&self, step: usize) -> bool {
        step <= self.calibrated_after
    }

    /// After fixed micro-batches changed at `step`: `record`'s estimate is made that of its new
    /// micro-batch (`estimate` as for [`Guard::before`]) and calibrated afresh over the next
    /// steps.
    pub fn changed(
        &mut self,
        step: usize,
        record: &mut BatchRecord,
        estimate: impl FnOnce(usize) -> Option<u64>,
    ) {
        let resident = record.resident_memory_bytes.unwrap_or(0);
        record.estimated_peak_memory_bytes = estimate(record.micro).map(|e| e + resident);
        record.measured_peak_memory_bytes = None;
        self.calibrated_after = step + CALIBRATION_STEPS - 1;
    }

    /// Before an attempt at `step` with fixed micro-batches of `record`: the overrun its
    /// calibrated estimate predicts (`estimate` of a micro-batch of so many examples, without
    /// the resident memory; asked once a micro-batch size). With a budget it also starts the
    /// peak mark afresh, so that [`Guard::after`] measures the attempt alone.
    pub fn before(
        &mut self,
        step: usize,
        record: Option<&BatchRecord>,
        estimate: impl FnOnce(usize) -> Option<u64>,
    ) -> Option<Overrun> {
        // Only a budget needs the attempt's own peak: without one the mark runs from one logged
        // step to the next, and no step pays for restarting it.
        if self.budget.is_some()
            && let Some(peak) = memory::peak_since_last()
        {
            self.window = self.window.max(peak);
        }
        let (budget, record) = (self.budget?, record?);
        let estimate = match self.estimate {
            Some((micro, estimate)) if micro == record.micro => estimate,
            _ => {
                let estimate = estimate(record.micro);
                self.estimate = Some((record.micro, estimate));
                estimate
            }
        };
        let predicted = estimate?.saturating_add(record.resident_memory_bytes.unwrap_or(0));
        let calibrated = step > self.calibrated_after;
        let predicted = (predicted as f64 * calibration(calibrated, record)) as u64;
        (predicted > budget).then_some(Overrun::Estimated {
            estimate: predicted,
            budget,
        })
    }

    /// After a successful attempt at `step`: an injected failure, or the measured peak past the
    /// budget.
    pub fn after(&mut self, step: usize) -> Option<Overrun> {
        let first = self.tried != Some(step);
        self.tried = Some(step);
        if first && self.injected.contains(&step) {
            return Some(Overrun::Injected);
        }
        let (budget, peak) = (self.budget?, memory::peak_now()?);
        (peak > budget).then_some(Overrun::Measured { peak, budget })
    }

    /// The peak since the last call (the logged steps' `train/peak_memory_bytes`).
    pub fn take_peak(&mut self) -> Option<u64> {
        let now = memory::peak_since_last();
        let peak = now.unwrap_or(0).max(std::mem::take(&mut self.window));
        (now.is_some() || peak > 0).then_some(peak)
    }
}

/// The factor the estimate is off by, once `calibrated`: the peak measured over the
/// calibration steps against the estimate (1 before, or where nothing is measured); never below
/// 1, so a generous estimate stays a bound.
fn calibration(calibrated: bool, record: &BatchRecord) -> f64 {
    match (
        record.measured_peak_memory_bytes,
        record.estimated_peak_memory_bytes,
    ) {
        (Some(measured), Some(estimated)) if calibrated && estimated > 0 => {
            (measured as f64 / estimated as f64).max(1.0)
        }
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(micro: usize, accumulation: usize) -> BatchRecord {
        BatchRecord {
            micro,
            accumulation,
            ..BatchRecord::fixed(micro, accumulation)
        }
    }

    #[test]
    fn halving_doubles_the_accumulation_and_keeps_the_rows() {
        assert_eq!(halve(&record(8, 2), 16), Some((4, 4)));
        assert_eq!(halve(&record(8, 1), 8), Some((4, 2)));
        // 100 rows in 4 × 25: 8 of 13 (the last shorter).
        assert_eq!(halve(&record(25, 4), 100), Some((13, 8)));
        assert_eq!(halve(&record(3, 1), 3), Some((2, 2)));
        assert_eq!(halve(&record(1, 16), 16), None);
    }

    #[test]
    fn cut_token_groups_keep_their_rows_in_order() {
        let groups = vec![vec![1, 2, 3, 4, 5], vec![6], vec![7, 8]];
        assert_eq!(
            cut(&groups, 2),
            vec![vec![1, 2, 3], vec![4, 5], vec![6], vec![7], vec![8]]
        );
        assert_eq!(cut(&groups, 1), groups);
        assert_eq!(cut(&groups, 8).concat(), groups.concat());
    }

    #[test]
    fn allocation_failures_are_told_from_other_errors() {
        let oom = candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        assert!(is_allocation_failure(&oom));
        let other = candle_core::Error::Msg("shape mismatch in matmul".into());
        assert!(!is_allocation_failure(&other));
    }

    #[test]
    fn an_injected_failure_happens_once_a_step() {
        let mut guard = Guard::new(None, vec![3]);
        assert_eq!(guard.after(2), None);
        assert_eq!(guard.after(3), Some(Overrun::Injected));
        assert_eq!(guard.after(3), None);
    }

    #[test]
    fn the_estimate_is_scaled_by_the_measured_peak_once_calibrated() {
        let mut r = record(8, 1);
        assert_eq!(calibration(true, &r), 1.0);
        r.resident_memory_bytes = Some(100);
        r.estimated_peak_memory_bytes = Some(1000);
        r.measured_peak_memory_bytes = Some(2000);
        let mut guard = Guard::new(Some(1500), vec![]);
        // Not calibrated yet: 900 + 100 fits.
        assert_eq!(
            guard.before(CALIBRATION_STEPS, Some(&r), |_| Some(900)),
            None
        );
        assert_eq!(
            guard.before(CALIBRATION_STEPS + 1, Some(&r), |_| Some(900)),
            Some(Overrun::Estimated {
                estimate: 2000,
                budget: 1500
            })
        );
        // A change of micro-batch calibrates afresh: until three more steps, 1000 + 100 fits.
        guard.changed(10, &mut r, |_| Some(1000));
        assert_eq!(r.measured_peak_memory_bytes, None);
        assert_eq!(r.estimated_peak_memory_bytes, Some(1100));
        assert!(guard.calibrating(12) && !guard.calibrating(13));
        r.measured_peak_memory_bytes = Some(1100 * 2);
        assert_eq!(guard.before(12, Some(&r), |_| Some(1000)), None);
        assert!(guard.before(13, Some(&r), |_| Some(1000)).is_some());
        // Without a budget nothing is predicted.
        let mut unbounded = Guard::new(None, vec![]);
        assert_eq!(unbounded.before(9, Some(&r), |_| Some(900)), None);
    }
}
