//! Micro-batches of a fixed number of examples: how many rows an optimizer step draws and how
//! they are cut, and for `batch-size "auto"` the choice of the largest micro-batch that fits
//! the memory budget, searched with [`memory::estimate_micro`] and confirmed by a probe step
//! that measures the real peak.

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::model::Built;
use crate::rng::Rng;
use crate::spec::{BatchSize, Batching, RunSpec};

use super::TrainError;
use super::memory;
use super::shards::{Pass, forward_backward};

/// Share of the available memory an automatic batch size leaves free when no `resources {
/// memory }` is given (the estimate counts tensors, not allocator slack).
const MARGIN: f64 = 0.1;

/// Steps whose measured peak is compared with the estimate in the run's record.
pub(super) const CALIBRATION_STEPS: usize = 3;

/// How a step of fixed micro-batches is cut: `step_rows` rows of one permutation, in
/// micro-batches of `micro` rows (the last one shorter when `micro` does not divide them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Split {
    pub micro: usize,
    pub step_rows: usize,
}

impl Split {
    /// Micro-batches per optimizer step.
    pub fn accumulation(&self) -> usize {
        self.step_rows.div_ceil(self.micro.max(1)).max(1)
    }

    /// `micro` examples a micro-batch, the step's rows as the spec says: `effective-batch`, or
    /// `micro` × `gradient-accumulation`.
    fn of(spec: &RunSpec, micro: usize) -> Split {
        let train = &spec.train;
        let micro = micro.max(1);
        match train.effective_batch {
            Some(rows) => {
                // As even as the accumulation allows: 100 rows with room for 30 are 4 × 25.
                let accumulation = rows.div_ceil(micro.min(rows).max(1));
                Split {
                    micro: rows.div_ceil(accumulation),
                    step_rows: rows,
                }
            }
            None => Split {
                micro,
                step_rows: micro * train.gradient_accumulation.max(1),
            },
        }
    }
}

/// The batch of a run of fixed micro-batches as summary.json and checkpoints keep it: the
/// micro-batch and accumulation, and for `batch-size "auto"` how they were chosen. A resumed run
/// takes its micro-batch from here, so it continues as it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub micro: usize,
    pub accumulation: usize,
    /// Examples an optimizer step (kept when out of memory cuts the step into smaller
    /// micro-batches; 0 in checkpoints of older versions, where the spec gives it).
    #[serde(default)]
    pub step_examples: usize,
    /// Whether `batch-size "auto"` chose the micro-batch.
    pub auto: bool,
    /// What the process may hold at its peak (`resources { memory }`, else the available
    /// memory less a margin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bytes: Option<u64>,
    /// The process's resident memory before training (the binary, the data, the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_memory_bytes: Option<u64>,
    /// With `batch-size "auto"`: the largest micro-batch whose predicted peak keeps within the
    /// budget, before the probe (which halves it while its measured peak does not) and before
    /// `effective-batch` evens the micro-batches out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_micro: Option<usize>,
    /// The predicted peak: the resident memory plus [`memory::estimate`] of the micro-batch (the
    /// one after the last out-of-memory change, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_peak_memory_bytes: Option<u64>,
    /// The measured peak of the probe step that confirmed an automatic micro-batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_peak_memory_bytes: Option<u64>,
    /// The measured peak of the first [`CALIBRATION_STEPS`] steps (of those after the last
    /// out-of-memory change of the micro-batch, if any), to compare with the estimate and to
    /// calibrate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_peak_memory_bytes: Option<u64>,
}

impl BatchRecord {
    /// A record of `micro` examples a micro-batch, `accumulation` of them a step, nothing
    /// chosen or measured yet.
    pub(super) fn fixed(micro: usize, accumulation: usize) -> BatchRecord {
        BatchRecord {
            micro,
            accumulation,
            step_examples: micro * accumulation,
            auto: false,
            budget_bytes: None,
            resident_memory_bytes: None,
            estimated_micro: None,
            estimated_peak_memory_bytes: None,
            probe_peak_memory_bytes: None,
            measured_peak_memory_bytes: None,
        }
    }

    pub(super) fn split(&self, spec: &RunSpec) -> Split {
        let step_rows = match self.step_examples {
            0 => Split::of(spec, self.micro).step_rows,
            rows => rows,
        };
        Split {
            micro: self.micro,
            step_rows,
        }
    }
}

/// The record of a fixed batch size, or the choice of an automatic one; `None` for token
/// budgets.
pub(super) fn decide(
    spec: &RunSpec,
    data: &Dataset,
    built: &Built,
    device: &Device,
    compute: DType,
) -> Result<Option<BatchRecord>, TrainError> {
    let resident = memory::resident();
    let predicted = |micro: usize| {
        memory::estimate_micro(spec, Some(data), micro)
            .map(|e| e.total().saturating_add(resident.unwrap_or(0)))
    };
    match spec.train.batching() {
        Batching::Tokens(_) => Ok(None),
        Batching::Examples(BatchSize::Fixed(b)) => {
            let split = Split::of(spec, b);
            Ok(Some(BatchRecord {
                step_examples: split.step_rows,
                budget_bytes: spec.resources.as_ref().and_then(|r| r.memory_bytes()),
                resident_memory_bytes: resident,
                estimated_peak_memory_bytes: predicted(split.micro),
                ..BatchRecord::fixed(split.micro, split.accumulation())
            }))
        }
        Batching::Examples(BatchSize::Auto) => {
            let budget = budget(spec, device, resident).ok_or(TrainError::NoBudget)?;
            let cap = match spec.train.effective_batch {
                Some(rows) => rows,
                None => data.train.len() / spec.train.gradient_accumulation.max(1),
            }
            .max(1);
            let fits = |micro: usize| predicted(micro).is_some_and(|p| p <= budget);
            if !fits(1) {
                return Err(TrainError::NoBatchFits {
                    budget,
                    needed: predicted(1),
                });
            }
            let estimated = largest(cap, fits);
            let mut micro = estimated;
            let mut probe_peak = None;
            // The probe: one micro-batch of the longest examples, forward and backward, its
            // gradients dropped; halved while its measured peak passes the budget.
            while let Some(peak) = probe(spec, data, built, device, compute, micro)? {
                probe_peak = Some(peak);
                if peak <= budget {
                    break;
                }
                if micro == 1 {
                    return Err(TrainError::NoBatchFits {
                        budget,
                        needed: Some(peak),
                    });
                }
                micro /= 2;
            }
            let split = Split::of(spec, micro);
            Ok(Some(BatchRecord {
                micro: split.micro,
                accumulation: split.accumulation(),
                step_examples: split.step_rows,
                auto: true,
                estimated_micro: Some(estimated),
                budget_bytes: Some(budget),
                resident_memory_bytes: resident,
                estimated_peak_memory_bytes: predicted(split.micro),
                probe_peak_memory_bytes: probe_peak,
                measured_peak_memory_bytes: None,
            }))
        }
    }
}

/// The largest of 1..=cap that `fits` (the estimate grows with the micro-batch), given that 1
/// does.
fn largest(cap: usize, fits: impl Fn(usize) -> bool) -> usize {
    let (mut good, mut bad) = (1, cap + 1);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if fits(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

/// The memory an automatic batch size fits in: `resources { memory }`, else on CUDA the
/// device's free memory and on the CPU the resident memory plus what the machine has
/// available, less [`MARGIN`].
fn budget(spec: &RunSpec, device: &Device, resident: Option<u64>) -> Option<u64> {
    if let Some(bytes) = spec.resources.as_ref().and_then(|r| r.memory_bytes()) {
        return Some(bytes);
    }
    let free = match device {
        Device::Cpu => memory::available_memory()?.saturating_add(resident?),
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d.cuda_stream().context().mem_get_info().ok()?.0 as u64,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    Some((free as f64 * (1.0 - MARGIN)) as u64)
}

/// The measured peak of one forward and backward pass over the `micro` longest training
/// examples; `None` where the platform measures no peak. Nothing of the run's state changes.
fn probe(
    spec: &RunSpec,
    data: &Dataset,
    built: &Built,
    device: &Device,
    compute: DType,
    micro: usize,
) -> Result<Option<u64>, TrainError> {
    let lengths = data.train.lengths();
    let mut rows: Vec<usize> = (0..lengths.len()).collect();
    rows.sort_by_key(|&r| std::cmp::Reverse(lengths[r]));
    rows.truncate(micro);
    let batch = data.batch(&data.train, &rows, device)?;
    let pass = Pass {
        task: data.task,
        counted: batch.counted,
        compute,
        scale: None,
    };
    // Starts the high-water mark afresh, so that it measures the probe alone.
    memory::peak_since_last();
    let mut rng = Rng::stream(spec.seed, "probe");
    drop(forward_backward(built, &pass, &[batch], &mut rng)?);
    // Read and started afresh again: the first step measures itself.
    Ok(memory::peak_since_last())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_finds_the_largest_that_fits() {
        for cap in [1, 2, 7, 64, 1000] {
            for limit in [1, 3, 50, 5000] {
                assert_eq!(
                    largest(cap, |m| m <= limit),
                    cap.min(limit),
                    "{cap} {limit}"
                );
            }
        }
    }
}
