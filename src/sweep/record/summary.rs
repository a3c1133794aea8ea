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
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Best {
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
    #[serde(rename = "final")]
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
            xp_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// Training starts (or starts again: the first start's time is kept).
    pub fn start(&mut self) {
        self.status = Status::Running;
        self.reason = None;
        self.started_at.get_or_insert_with(now);
    }

    /// Training ended as `status`, for `reason` when there is one to tell.
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

/// A reason as one line, for tables and `xp status`: its lines joined with spaces.
fn one_line(reason: &str) -> String {
    let lines: Vec<&str> = reason
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}
