//! The sweep's results tables, `results.csv` and `results.json`: one row per run (name, id,
//! status, the axes, final and best metrics, steps, wall time, throughput, peak memory),
//! rewritten atomically whenever a run finishes.

use std::collections::BTreeSet;
use std::io;

use super::{Lock, Summary, SweepDir, atomic};

/// The column names: fixed ones, the axes in plan order, then `final:<metric>` for every
/// metric any run has and `best:<metric>` for every one any run has a best value of.
pub fn columns(axes: &[String], summaries: &[Summary]) -> Vec<String> {
    let metrics: BTreeSet<&String> = summaries
        .iter()
        .flat_map(|s| s.last.keys().chain(s.best.keys()))
        .collect();
    // Only metrics with a best value (not the lr or the gradient norm) get a best column.
    let ranked: BTreeSet<&String> = summaries.iter().flat_map(|s| s.best.keys()).collect();
    let mut cols: Vec<String> = ["name", "id", "status"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    cols.extend(axes.iter().cloned());
    cols.extend(metrics.iter().map(|m| format!("final:{m}")));
    cols.extend(ranked.iter().map(|m| format!("best:{m}")));
    cols.extend(
        ["steps", "wall_s", "tokens_per_s", "peak_memory_bytes"]
            .iter()
            .map(|s| s.to_string()),
    );
    cols
}

fn cell(summary: &Summary, column: &str) -> String {
    let num = |v: Option<f64>| {
        v.filter(|v| v.is_finite())
            .map_or(String::new(), |v| format!("{v}"))
    };
    match column {
        "name" => summary.name.clone(),
        "id" => summary.id.clone(),
        "status" => summary.status.as_str().to_owned(),
        "steps" => summary.steps.to_string(),
        "wall_s" => num(summary.wall_s),
        "tokens_per_s" => num(summary.tokens_per_s),
        "peak_memory_bytes" => summary
            .peak_memory_bytes
            .map_or(String::new(), |b| b.to_string()),
        c => {
            if let Some(m) = c.strip_prefix("final:") {
                num(summary.last.get(m).copied())
            } else if let Some(m) = c.strip_prefix("best:") {
                num(summary.best.get(m).map(|b| b.value))
            } else {
                match summary.axes.get(c) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                }
            }
        }
    }
}

/// A cell of `results.json`: counts as integers, metrics as numbers, axes as planned.
fn json_cell(summary: &Summary, column: &str) -> serde_json::Value {
    use serde_json::Value;
    let number = |v: Option<f64>| v.filter(|v| v.is_finite()).map_or(Value::Null, Value::from);
    match column {
        "name" | "id" | "status" => Value::from(cell(summary, column)),
        "steps" => Value::from(summary.steps),
        "wall_s" => number(summary.wall_s),
        "tokens_per_s" => number(summary.tokens_per_s),
        "peak_memory_bytes" => summary.peak_memory_bytes.map_or(Value::Null, Value::from),
        c => {
            if let Some(m) = c.strip_prefix("final:") {
                number(summary.last.get(m).copied())
            } else if let Some(m) = c.strip_prefix("best:") {
                number(summary.best.get(m).map(|b| b.value))
            } else {
                summary.axes.get(c).cloned().unwrap_or(Value::Null)
            }
        }
    }
}

/// Rewrites both tables, under the sweep's results lock ([`lock`]).
pub fn write(sweep: &SweepDir, axes: &[String], summaries: &[Summary]) -> io::Result<()> {
    let _lock = lock(sweep)?;
    write_locked(sweep, axes, summaries)
}

/// The sweep's results lock, held while it lives: whoever rewrites the tables (`xp run`, run
/// processes that finish at the same time, Slurm array tasks) does it alone.
fn lock(sweep: &SweepDir) -> io::Result<Lock> {
    Lock::acquire(&sweep.results_lock_file())
}

fn write_locked(sweep: &SweepDir, axes: &[String], summaries: &[Summary]) -> io::Result<()> {
    let cols = columns(axes, summaries);
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record(&cols).map_err(io::Error::other)?;
    for s in summaries {
        csv.write_record(cols.iter().map(|c| cell(s, c)))
            .map_err(io::Error::other)?;
    }
    let bytes = csv
        .into_inner()
        .map_err(|e| io::Error::other(e.to_string()))?;
    atomic::write(&sweep.results_csv(), &bytes)?;
    let rows: Vec<serde_json::Value> = summaries
        .iter()
        .map(|s| {
            let mut row = serde_json::Map::new();
            for c in &cols {
                let value = json_cell(s, c);
                row.insert(c.clone(), value);
            }
            serde_json::Value::Object(row)
        })
        .collect();
    let json = serde_json::to_vec_pretty(&rows).map_err(io::Error::other)?;
    atomic::write(&sweep.results_json(), &json)
}

/// Rewrites both tables from the run directories' `summary.json` files, reading and writing
/// under the results lock: run processes that finish at the same time (Slurm array tasks)
/// each leave tables that include every finished run.
pub fn refresh(sweep: &SweepDir, plan: &crate::front::plan::Plan, device: &str) -> io::Result<()> {
    let _lock = lock(sweep)?;
    let axes: Vec<String> = plan
        .runs
        .first()
        .map(|r| r.axes.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let summaries: Vec<Summary> = plan
        .runs
        .iter()
        .map(|run| {
            super::read_summary(&sweep.run(&run.name)).unwrap_or_else(|| {
                let precision = crate::train::precision::of_device(run.config.precision, device).0;
                Summary::pending(&plan.experiment, run, device, precision)
            })
        })
        .collect();
    write_locked(sweep, &axes, &summaries)
}
