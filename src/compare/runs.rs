//! One compared run as read from its directory: the parts of `summary.json` a comparison needs
//! (for a run still going, the latest values of its `metrics.jsonl`), its settings by their
//! dotted names (`config.json`), and the metric [`Column`]s values are read through.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::front::resolve::{self, Settings};
use crate::spec::{Direction, Objective, Regression, RunSpec, direction_of, ranked};
use crate::sweep::record::{Best, Status};

/// What a comparison reads of `summary.json`. Every field but `name` and `status` may be
/// absent, so runs recorded by other versions of xp still compare.
#[derive(Debug, Clone, Deserialize)]
pub struct Recorded {
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub experiment: String,
    pub status: Status,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub axes: serde_json::Map<String, Value>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub steps: usize,
    #[serde(
        default,
        rename = "final",
        deserialize_with = "crate::sweep::record::summary::metrics_or_nan"
    )]
    pub last: BTreeMap<String, f64>,
    #[serde(default)]
    pub best: BTreeMap<String, Best>,
    #[serde(default)]
    pub wall_s: Option<f64>,
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
}

/// One run directory, read.
#[derive(Debug, Clone)]
pub struct Run {
    /// The directory, as reached from the path it was found under.
    pub dir: PathBuf,
    /// The name of the sweep directory holding it (`20261202-101500`), which tells apart runs
    /// of one name from several sweeps; set by [`discover`](super::discover).
    pub sweep: String,
    pub summary: Recorded,
    /// The settings of `config.json` a comparison shows, by their dotted names.
    pub config: BTreeMap<String, Value>,
    pub objective: Option<Objective>,
    pub regression: Option<Regression>,
}

impl Run {
    /// A run from its files: the parsed summary, the bytes of `config.json` (if any), and the
    /// text of `metrics.jsonl`, which brings a run that has not finished up to date. A
    /// `config.json` that cannot be read leaves the run without settings, and says why.
    pub fn read(
        dir: PathBuf,
        summary: Recorded,
        config: Option<&[u8]>,
        metrics: Option<&str>,
    ) -> (Run, Option<String>) {
        let (config, spec, problem) = match config.map(read_config) {
            Some(Ok((settings, spec))) => (settings, spec, None),
            Some(Err(e)) => (BTreeMap::new(), None, Some(e)),
            None => (BTreeMap::new(), None, None),
        };
        let objective = spec.as_ref().map(|s| s.objective.clone()).or_else(|| {
            Some(Objective {
                metric: config.get("objective")?.as_str()?.to_owned(),
                direction: match config.get("objective.direction").and_then(Value::as_str) {
                    Some("maximize") => Direction::Maximize,
                    _ => Direction::Minimize,
                },
            })
        });
        let mut run = Run {
            dir,
            sweep: String::new(),
            summary,
            config,
            objective,
            regression: spec.and_then(|s| s.regression),
        };
        if let Some(text) = metrics {
            run.catch_up(text);
        }
        (run, problem)
    }

    /// Whether the run is still to finish: its values come from `metrics.jsonl`.
    pub fn unfinished(&self) -> bool {
        matches!(
            self.summary.status,
            Status::Pending | Status::Running | Status::Interrupted
        )
    }

    /// Whether the run ended badly.
    pub fn failed(&self) -> bool {
        matches!(self.summary.status, Status::Failed | Status::Diverged)
    }

    /// Whether the sweep's `prune` stopped the run: finished, with metrics of an early step.
    pub fn pruned(&self) -> bool {
        self.summary.status == Status::Pruned
    }

    /// Takes the latest value of every metric (and the best so far) from `metrics.jsonl`. A
    /// line still being written is skipped.
    fn catch_up(&mut self, metrics: &str) {
        let s = &mut self.summary;
        for line in metrics.lines() {
            let Ok(Value::Object(row)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let step = row.get("step").and_then(Value::as_u64).unwrap_or(0) as usize;
            s.steps = s.steps.max(step);
            if let Some(t) = row.get("time_s").and_then(Value::as_f64) {
                s.wall_s = Some(t);
            }
            for (k, v) in &row {
                let Some(v) = v.as_f64().filter(|v| v.is_finite()) else {
                    continue;
                };
                if matches!(k.as_str(), "step" | "epoch" | "time_s") {
                    continue;
                }
                s.last.insert(k.clone(), v);
                if k.ends_with("_per_s") {
                    s.tokens_per_s = Some(v);
                }
                if !ranked(k) {
                    continue;
                }
                let direction = metric_direction(k, self.objective.as_ref());
                if s.best.get(k).is_none_or(|b| direction.better(v, b.value)) {
                    s.best.insert(k.clone(), Best { value: v, step });
                }
            }
        }
    }
}

/// Whether a setting says something about how a run trains: not the experiment's name and
/// description (fields of their own) nor its regression gate.
fn compared(key: &str) -> bool {
    !matches!(key, "experiment" | "description" | "regression") && !key.starts_with("regression.")
}

/// `config.json`: the settings a comparison shows, and the run they make (for its objective
/// and regression gate) where it reads back.
pub fn read_config(bytes: &[u8]) -> Result<(BTreeMap<String, Value>, Option<RunSpec>), String> {
    let settings: Settings = serde_json::from_slice(bytes).map_err(|e| {
        format!("config.json is not a run configuration ({e}); its settings are left out")
    })?;
    if settings.0.iter().any(|(_, v)| v.is_object()) {
        return Err(
            "config.json was written by an earlier version of xp, whose names for settings differ; its settings are left out (run it again to compare them)"
                .to_owned(),
        );
    }
    let spec = resolve::spec(&settings).ok();
    let shown = settings
        .0
        .into_iter()
        .filter(|(k, _)| compared(k))
        .collect();
    Ok((shown, spec))
}

/// The direction of a metric: the objective's for the objective, else by its name (accuracy
/// and throughput up, everything else down).
pub fn metric_direction(metric: &str, objective: Option<&Objective>) -> Direction {
    match objective {
        Some(o) if o.metric == metric => o.direction,
        _ => direction_of(metric),
    }
}

/// A metric column: a metric's final or best value, or a per-run figure of the summary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    Best(String),
    Final(String),
    Steps,
    WallS,
    TokensPerS,
    PeakMemory,
}

impl Column {
    /// A value of this column in JSON: counts (steps, bytes) as integers.
    pub fn json(&self, v: f64) -> Value {
        if matches!(self, Column::Steps | Column::PeakMemory) && v.fract() == 0.0 && v.abs() < 9e15
        {
            Value::from(v as i64)
        } else {
            finite_json(v)
        }
    }
}

/// A number in JSON; null for NaN and infinities, which JSON cannot hold.
pub fn finite_json(v: f64) -> Value {
    if v.is_finite() {
        Value::from(v)
    } else {
        Value::Null
    }
}

impl Column {
    /// The per-run columns, by name.
    pub const RUN: [(&'static str, Column); 4] = [
        ("steps", Column::Steps),
        ("wall_s", Column::WallS),
        ("tokens_per_s", Column::TokensPerS),
        ("peak_memory_bytes", Column::PeakMemory),
    ];

    /// `best:M`, `final:M`, a per-run column, or a bare metric name (its final value).
    pub fn parse(s: &str) -> Column {
        if let Some(m) = s.strip_prefix("best:") {
            Column::Best(m.to_owned())
        } else if let Some(m) = s.strip_prefix("final:") {
            Column::Final(m.to_owned())
        } else if let Some((_, c)) = Self::RUN.iter().find(|(n, _)| *n == s) {
            c.clone()
        } else {
            Column::Final(s.to_owned())
        }
    }

    /// Whether a table heading names a metric column (rather than a name, status or axis).
    pub fn is_heading(s: &str) -> bool {
        s.starts_with("best:") || s.starts_with("final:") || Self::RUN.iter().any(|(n, _)| *n == s)
    }

    /// The metric whose direction applies.
    pub fn metric(&self) -> &str {
        match self {
            Column::Best(m) | Column::Final(m) => m,
            Column::Steps => "steps",
            Column::WallS => "wall_s",
            Column::TokensPerS => "tokens_per_s",
            Column::PeakMemory => "peak_memory_bytes",
        }
    }

    /// Which way is better for this column.
    pub fn direction(&self, objective: Option<&Objective>) -> Direction {
        match self {
            Column::Steps => Direction::Maximize,
            _ => metric_direction(self.metric(), objective),
        }
    }

    /// The run's value; missing and non-finite values are `None`, never zero.
    pub fn value(&self, s: &Recorded) -> Option<f64> {
        let v = match self {
            Column::Best(m) => s.best.get(m).map(|b| b.value),
            Column::Final(m) => s.last.get(m).copied(),
            Column::Steps => Some(s.steps as f64),
            Column::WallS => s.wall_s,
            Column::TokensPerS => s.tokens_per_s,
            Column::PeakMemory => s.peak_memory_bytes.map(|b| b as f64),
        };
        v.filter(|v| v.is_finite())
    }

    /// How a gate names it: a final value by its metric alone.
    pub fn gate_name(&self) -> String {
        match self {
            Column::Final(m) => m.clone(),
            c => c.to_string(),
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Column::Best(m) => write!(f, "best:{m}"),
            Column::Final(m) => write!(f, "final:{m}"),
            c => f.write_str(c.metric()),
        }
    }
}

/// A setting or axis value as a cell: strings bare, lists space-separated in brackets.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(" "))
        }
        v => v.to_string(),
    }
}

/// A value as a join key: numbers (or strings that are numbers) in one canonical form, so
/// `0.001` from a CSV file meets `1e-3` from JSON.
pub fn canonical(v: &Value) -> String {
    let number = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match number {
        Some(n) => format!("{n}"),
        None => show(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_parse_and_print_alike() {
        for key in [
            "best:val/loss",
            "final:val/loss",
            "steps",
            "wall_s",
            "tokens_per_s",
        ] {
            assert_eq!(Column::parse(key).to_string(), key);
        }
        assert_eq!(Column::parse("val/loss"), Column::Final("val/loss".into()));
        assert_eq!(
            canonical(&Value::from("0.001")),
            canonical(&serde_json::json!(1e-3))
        );
        assert_eq!(
            canonical(&serde_json::json!(8)),
            canonical(&Value::from("8.0"))
        );
    }
}
