//! `xp status SWEEP_DIR`: each run's state, from its directory and, for a sweep submitted to
//! Slurm, from Slurm's queue; a run recorded as running whose process is gone reads as
//! interrupted ([`Owners`]). An experiment's directory (`runs/<experiment>`) means its
//! `current` sweep.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::cli::exec::read_plan;
use crate::cli::table::Table;
use crate::cli::{CliError, Exit};
use crate::sweep::owner::Owners;
use crate::sweep::record::{RunDir, SweepDir, read_summary, short};
use crate::sweep::slurm;

pub fn run(dir: &Path) -> Result<Exit, CliError> {
    let sweep = SweepDir::named(dir);
    let plan = read_plan(&sweep)?;
    let submitted = !slurm::jobs(&sweep)
        .map_err(|e| CliError::Usage(e.to_string()))?
        .is_empty();
    let owners = Owners::of(&sweep);
    if let Some(e) = owners.queue_error() {
        eprintln!("warning: {e}");
    }
    let queued = owners.queued();
    let mut header = vec!["name".to_owned(), "status".to_owned(), "step".to_owned()];
    if submitted {
        header.push("slurm".to_owned());
    }
    let objective = plan_objective(&plan);
    header.push(objective.clone());
    header.push("reason".to_owned());
    let mut table = Table::new(header);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, run) in plan.runs.iter().enumerate() {
        let run_dir = sweep.run(&run.name);
        let mut summary = read_summary(&run_dir);
        if let Some(s) = &mut summary {
            owners.settle(i, s);
        }
        let status = summary.as_ref().map_or("pending", |s| s.status.as_str());
        *counts.entry(status).or_default() += 1;
        let (step, value) = last_step(&run_dir, &objective);
        let mut row = vec![
            run.name.clone(),
            status.to_owned(),
            step.map_or(String::new(), |s| {
                crate::front::plan::steps(&run.config).map_or(s.to_string(), |t| format!("{s}/{t}"))
            }),
        ];
        if submitted {
            row.push(queued.and_then(|q| q.get(&i).cloned()).unwrap_or_default());
        }
        row.push(value.map_or(String::new(), short));
        row.push(summary.and_then(|s| s.reason).unwrap_or_default());
        table.push(row);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", sweep.path.display())?;
    out.write_all(table.render().as_bytes())?;
    let line: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    writeln!(out, "{}", line.join(", "))?;
    Ok(Exit::Success)
}

fn plan_objective(plan: &crate::front::plan::Plan) -> String {
    plan.runs
        .first()
        .map_or("val/loss".to_owned(), |r| r.config.objective.metric.clone())
}

/// The newest step in a run's metrics.jsonl and the newest value of the objective.
fn last_step(run_dir: &RunDir, objective: &str) -> (Option<u64>, Option<f64>) {
    let Ok(text) = std::fs::read_to_string(run_dir.metrics()) else {
        return (None, None);
    };
    let mut step = None;
    let mut value = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        step = v["step"].as_u64().or(step);
        value = v[objective].as_f64().or(value);
    }
    (step, value)
}
