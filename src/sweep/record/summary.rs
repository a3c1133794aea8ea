//! `summary.json`: a run's status and final/best metrics (DESIGN.md §5), and the moments of its
//! life a summary records: pending, started, failed with a reason, finished. Every timestamp is
//! RFC 3339 in local time to the second with a numeric offset (`2025-01-01T12:00:10+01:00`),
//! from [`now`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::front::plan::{PlannedRun, value_json};

/// The state of a run, as `summary.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pending,
    Running,
    Completed,
    Failed,
    Diverged,
    Interrupted,
    /// Stopped by the sweep's `prune` at an evaluation step: finished, not failed.
    Pruned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Diverged => "diverged",
            Status::Interrupted => "interrupted",
            Status::Pruned => "pruned",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Best {
    #[serde(deserialize_with = "number_or_nan")]
    pub value: f64,
    pub step: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParamCounts {
    pub total: usize,
    pub trainable: usize,
}

/// `summary.json`: a run's status and final/best metrics (DESIGN.md §5).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub id: String,
    pub experiment: String,
    pub status: Status,
    pub reason: Option<String>,
    pub axes: serde_json::Map<String, serde_json::Value>,
    pub seed: u64,
    pub steps: usize,
    #[serde(rename = "final", deserialize_with = "metrics_or_nan")]
    pub last: BTreeMap<String, f64>,
    pub best: BTreeMap<String, Best>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub wall_s: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub peak_memory_bytes: Option<u64>,
    pub device: String,
    pub precision: String,
    pub params: Option<ParamCounts>,
    /// Fixed micro-batches: the micro-batch and accumulation, how an automatic one was chosen,
    /// and the estimated against the measured peak of the first steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<crate::train::BatchRecord>,
    /// How the micro-batches changed at steps that ran out of memory (absent when none did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch_changes: Vec<crate::train::BatchChange>,
    /// The fused kernels the self-check turned off on the run's device (absent when none was).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_kernels: Vec<crate::ops::kernels::Disabled>,
    pub xp_version: String,
}

/// The time now as summaries and the sweep's records write it: RFC 3339, local time, to the
/// second, with a numeric offset.
pub fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

impl Summary {
    /// A run not yet started.
    pub fn pending(experiment: &str, run: &PlannedRun, device: &str, precision: &str) -> Self {
        Summary {
            name: run.name.clone(),
            id: run.id.clone(),
            experiment: experiment.to_owned(),
            status: Status::Pending,
            reason: None,
            axes: run
                .axes
                .iter()
                .map(|(k, v)| (k.clone(), value_json(v)))
                .collect(),
            seed: run.seed,
            steps: 0,
            last: BTreeMap::new(),
            best: BTreeMap::new(),
            started_at: None,
            finished_at: None,
            wall_s: None,
            tokens_per_s: None,
            peak_memory_bytes: None,
            device: device.to_owned(),
            precision: precision.to_owned(),
            params: None,
            batch: None,
            batch_changes: Vec::new(),
            disabled_kernels: Vec::new(),
            xp_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Training starts (or starts again: the first start's time is kept).
    pub fn start(&mut self) {
        self.status = Status::Running;
        self.reason = None;
        self.started_at.get_or_insert_with(now);
    }

    /// Training ended as `status`, for `reason` when there is one to tell: its first line
    /// (the whole text, a backtrace or an error's chain of causes, belongs in train.log).
    pub fn finish(&mut self, status: Status, reason: Option<String>) {
        self.status = status;
        self.reason = reason.map(|r| one_line(&r));
        self.finished_at = Some(now());
    }

    /// The run failed, for `reason`.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.finish(Status::Failed, Some(reason.into()));
    }
}

/// The longest reason a summary keeps; the whole text is in train.log.
const REASON_CHARS: usize = 300;

/// A reason as one line, for tables and `xp status`: its first non-empty line (a backtrace or
/// an error's `Caused by:` list follows the message on lines of their own), cut to
/// [`REASON_CHARS`].
pub fn one_line(reason: &str) -> String {
    let first = reason
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    match first.char_indices().nth(REASON_CHARS) {
        Some((end, _)) => format!("{}…", &first[..end]),
        None => first.to_owned(),
    }
}

/// JSON has no NaN or infinity: serde_json writes them as `null` (a diverged run's metrics),
/// which reads back as NaN, so that such a summary still reads.
fn number_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A map of metrics whose values may be `null` ([`number_or_nan`]).
pub fn metrics_or_nan<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, f64>, D::Error> {
    let map = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        serde_json::from_value(serde_json::json!({
            "name": "r", "id": "0", "experiment": "e", "status": "running", "reason": null,
            "axes": {}, "seed": 0, "steps": 0, "final": {}, "best": {}, "started_at": null,
            "finished_at": null, "wall_s": null, "tokens_per_s": null,
            "peak_memory_bytes": null, "device": "cpu", "precision": "f32", "params": null,
            "xp_version": "0"
        }))
        .unwrap()
    }

    /// Every f64 a summary holds reads back with the same bits (serde_json's default parser
    /// may be one ulp off; resume must be bit-identical).
    #[test]
    fn metrics_round_trip_bit_exactly() {
        let mut s = summary();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Losses and the like: positive, of every magnitude near 1.
            let v = f64::from_bits((x >> 12) | 0x3f00_0000_0000_0000);
            s.last.insert(format!("m{i}"), v);
            s.best.insert(format!("m{i}"), Best { value: v, step: i });
        }
        let back: Summary =
            serde_json::from_slice(&serde_json::to_vec_pretty(&s).unwrap()).unwrap();
        for (k, v) in &s.last {
            assert_eq!(back.last[k].to_bits(), v.to_bits(), "{k}: {v}");
            assert_eq!(back.best[k].value.to_bits(), v.to_bits(), "{k}: {v}");
        }
    }

    /// A diverged run's metrics (NaN, infinite) are written as null and the summary reads.
    #[test]
    fn a_summary_with_non_finite_metrics_reads_back() {
        let mut s = summary();
        s.last.insert("val/loss".into(), f64::INFINITY);
        s.last.insert("train/loss".into(), 1.5);
        s.best.insert(
            "val/loss".into(),
            Best {
                value: f64::NAN,
                step: 3,
            },
        );
        s.finish(
            Status::Diverged,
            Some("the training loss became NaN".into()),
        );
        let back: Summary = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back.status, Status::Diverged);
        assert!(back.last["val/loss"].is_nan());
        assert_eq!(back.last["train/loss"], 1.5);
        assert_eq!(back.best["val/loss"].step, 3);
    }

    /// A reason is one line: a panic's or an error's backtrace and causes stay out.
    #[test]
    fn a_reason_is_its_first_line() {
        let mut s = summary();
        let text = "\nDriverError(CUDA_ERROR_OUT_OF_MEMORY)\n   0: candle_core::error::Error::bt\n   1: xp::train\n\nCaused by:\n    0: out of memory";
        s.fail(text);
        assert_eq!(
            s.reason.as_deref(),
            Some("DriverError(CUDA_ERROR_OUT_OF_MEMORY)")
        );
        s.fail("x".repeat(1000));
        let reason = s.reason.unwrap();
        assert!(!reason.contains('\n') && reason.chars().count() <= REASON_CHARS + 1);
    }
}
