//! `xp run --launcher slurm`: the sweep directory is prepared here, its runs to train are
//! submitted as one Slurm job array, and with `--wait` the job is followed through the run
//! directories until every run has ended.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use crate::front::plan::Plan;
use crate::sweep::executor::SweepReport;
use crate::sweep::options::{SweepError, SweepOptions, stopped};
use crate::sweep::prepare::{Prepared, prepare};
use crate::sweep::progress::{Progress, Update};
use crate::sweep::record::{self, RunDir, Status, Summary, SweepDir, read_summary, results};
use crate::sweep::slurm::{self, Submission};

/// How the job array runs and whether it is followed.
pub struct Launch<'a> {
    /// The `xp` binary the tasks run; must be reachable from the compute nodes.
    pub exe: &'a Path,
    /// At most this many tasks at once (`--jobs`).
    pub throttle: Option<usize>,
    /// Follow the job until every run has ended (`--wait`).
    pub wait: bool,
}

/// Submits the plan's runs to train; with `wait` returns the sweep once they have ended.
pub fn launch(
    plan: &Plan,
    source: &str,
    options: &SweepOptions,
    how: &Launch,
    progress: &mut dyn Progress,
) -> Result<Option<SweepReport>, SweepError> {
    let Prepared {
        sweep,
        lock,
        axes,
        mut summaries,
        mut todo,
        reused,
    } = prepare(plan, source, options)?;
    crate::sweep::prepare::tell_reused(plan, &reused, progress);
    // The tasks run elsewhere, in another directory: every path they get is absolute.
    let sweep = SweepDir {
        path: std::fs::canonicalize(&sweep.path)?,
    };
    let queued = slurm::queued(&sweep)?;
    if options.resume {
        let before = todo.len();
        todo.retain(|i| !queued.contains_key(i));
        if todo.len() < before {
            eprintln!(
                "{} of the runs to finish are still in Slurm's queue; they are not submitted again",
                before - todo.len()
            );
        }
    }
    let mut following: Vec<usize> = todo.clone();
    if todo.is_empty() {
        println!(
            "{}: nothing to submit: every run has ended or is queued",
            sweep.path.display()
        );
        following.extend(queued.keys().copied());
    } else {
        for &i in &todo {
            record::ready_run_dir(&sweep, &plan.runs[i], &summaries[i])?;
        }
        results::write(&sweep, &axes, &summaries)?;
        let resources = plan
            .runs
            .iter()
            .find_map(|r| r.config.resources.clone())
            .unwrap_or_default();
        let job = slurm::submit(
            &sweep,
            &Submission {
                experiment: &plan.experiment,
                runs: &todo,
                throttle: how.throttle,
                resources: &resources,
                exe: how.exe,
                device: options.device.as_deref(),
            },
        )?;
        println!(
            "submitted Slurm job {}: {} of {} runs, sweep {}",
            job.job_id,
            todo.len(),
            plan.runs.len(),
            sweep.path.display()
        );
    }
    drop(lock);
    if !how.wait {
        println!(
            "`xp status {}` shows the runs' states",
            sweep.path.display()
        );
        return Ok(None);
    }
    let interrupted = follow(&sweep, plan, &following, &mut summaries, options, progress)?;
    results::refresh(
        &sweep,
        plan,
        summaries.first().map_or("cpu", |s| s.device.as_str()),
    )?;
    Ok(Some(SweepReport {
        dir: sweep.path,
        summaries,
        interrupted,
    }))
}

/// Follows the runs `todo` through their directories until each has ended (or left Slurm's
/// queue without ending); returns whether following was stopped by a signal.
fn follow(
    sweep: &SweepDir,
    plan: &Plan,
    todo: &[usize],
    summaries: &mut [Summary],
    options: &SweepOptions,
    progress: &mut dyn Progress,
) -> Result<bool, SweepError> {
    let total = plan.runs.len();
    progress.planned(todo.len(), total);
    let mut started = BTreeSet::new();
    let mut done = BTreeSet::new();
    let mut seen_len: BTreeMap<usize, u64> = BTreeMap::new();
    // A task that left the queue has written its summary; a second look makes sure.
    let mut gone_once = BTreeSet::new();
    while done.len() < todo.len() {
        std::thread::sleep(Duration::from_millis(500));
        if stopped(options) {
            eprintln!("stopped following; the Slurm job goes on (`scancel` stops it)");
            return Ok(true);
        }
        let queued = slurm::queued(sweep)?;
        for &i in todo {
            if done.contains(&i) {
                continue;
            }
            let run = &plan.runs[i];
            let dir = sweep.run(&run.name);
            let summary = read_summary(&dir);
            let status = summary.as_ref().map(|s| s.status);
            if status.is_some_and(|s| s != Status::Pending) && started.insert(i) {
                progress.run_started(i, total, run);
                progress.update(
                    i,
                    &Update::Start {
                        total_steps: crate::front::plan::steps(&run.config).unwrap_or(0),
                        resumed_from: None,
                    },
                );
            }
            if let Some(update) = newest_metrics(&dir, &mut seen_len, i) {
                progress.update(i, &update);
            }
            let left = !queued.contains_key(&i);
            // An interrupted run still in the queue was requeued: it goes on.
            let settled = summary
                .as_ref()
                .is_some_and(|s| slurm::settled(s) && (left || s.status != Status::Interrupted));
            if settled || (left && !gone_once.insert(i)) {
                let mut s = summary.unwrap_or_else(|| summaries[i].clone());
                if !settled {
                    s.fail(format!(
                        "its Slurm task ended without recording how the run ended; see {}",
                        sweep.slurm().display()
                    ));
                    record::write_summary(&dir, &s)?;
                }
                if !started.contains(&i) {
                    progress.run_started(i, total, run);
                }
                summaries[i] = s;
                progress.run_finished(i, total, &summaries[i]);
                done.insert(i);
            }
        }
    }
    Ok(false)
}

/// The last line of a run's metrics.jsonl when the file grew since the last look.
fn newest_metrics(dir: &RunDir, seen: &mut BTreeMap<usize, u64>, index: usize) -> Option<Update> {
    let path = dir.metrics();
    let len = std::fs::metadata(&path).ok()?.len();
    if seen.insert(index, len) == Some(len) {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let line: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text.lines().last()?).ok()?;
    let step = line.get("step")?.as_u64()? as usize;
    let metrics = line
        .iter()
        .filter(|(k, _)| k.contains('/'))
        .map(|(k, v)| (k.clone(), v.as_f64()))
        .collect();
    Some(Update::Metrics { step, metrics })
}
