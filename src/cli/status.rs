//! `xp status PATH...`: each run's state, from its directory and, for a sweep submitted to
//! Slurm, from Slurm's queue; a run recorded as running whose process is gone reads as
//! interrupted ([`Owners`]). A path is what `xp compare` takes: a run directory (that run), a
//! sweep directory, an experiment's directory (its `current` sweep) or any folder above them
//! (the current sweep of every experiment under it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::exec::read_plan;
use crate::cli::table::Table;
use crate::cli::{CliError, Exit};
use crate::sweep::owner::Owners;
use crate::sweep::record::{RunDir, SweepDir, read_summary, short};
use crate::sweep::slurm;

/// How deep below a given folder sweeps are looked for.
const MAX_DEPTH: usize = 8;

pub fn run(paths: &[PathBuf]) -> Result<Exit, CliError> {
    let mut found: Vec<(SweepDir, Option<Vec<String>>)> = Vec::new();
    for path in paths {
        if std::fs::metadata(path).is_err() {
            return Err(CliError::Usage(format!(
                "`{}` does not exist; give run directories, sweep directories or folders above them",
                path.display()
            )));
        }
        let mut here = Vec::new();
        sweeps_under(path, MAX_DEPTH, &mut here);
        if here.is_empty() {
            return Err(CliError::Usage(format!(
                "no sweep under `{}`: a sweep directory is one holding a plan.json, as `xp run` writes them",
                path.display()
            )));
        }
        for (sweep, run) in here {
            let real = std::fs::canonicalize(&sweep.path).unwrap_or_else(|_| sweep.path.clone());
            let same = found.iter_mut().find(|(s, _)| {
                std::fs::canonicalize(&s.path).unwrap_or_else(|_| s.path.clone()) == real
            });
            match (same, run) {
                (Some((_, Some(names))), Some(name)) => names.push(name),
                (Some((_, only)), None) => *only = None,
                (Some((_, None)), Some(_)) => {}
                (None, run) => found.push((sweep, run.map(|n| vec![n]))),
            }
        }
    }
    for (i, (sweep, only)) in found.iter().enumerate() {
        if i > 0 {
            println!();
        }
        sweep_status(sweep, only.as_deref())?;
    }
    Ok(Exit::Success)
}

/// The sweeps a path names, each with the one run it names (a run directory) or `None` (all).
fn sweeps_under(path: &Path, depth: usize, out: &mut Vec<(SweepDir, Option<String>)>) {
    let as_sweep = SweepDir {
        path: path.to_owned(),
    };
    if as_sweep.plan().exists() {
        out.push((as_sweep, None));
        return;
    }
    if RunDir::new(path).summary().exists() {
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let sweep = SweepDir {
                path: parent.to_owned(),
            };
            if sweep.plan().exists() {
                out.push((sweep, Some(name.to_string_lossy().into_owned())));
            }
        }
        return;
    }
    let named = SweepDir::named(path);
    if named.plan().exists() {
        out.push((named, None));
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        sweeps_under(&dir, depth - 1, out);
    }
}

/// One sweep's table (of the runs named in `only`, or all).
fn sweep_status(sweep: &SweepDir, only: Option<&[String]>) -> Result<(), CliError> {
    let plan = read_plan(sweep)?;
    let submitted = !slurm::jobs(sweep)
        .map_err(|e| CliError::Usage(e.to_string()))?
        .is_empty();
    let owners = Owners::of(sweep);
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
        if only.is_some_and(|names| !names.contains(&run.name)) {
            continue;
        }
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
    Ok(())
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
