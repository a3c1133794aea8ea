//! Getting a sweep ready to train: a new sweep directory, or the experiment's `current` one
//! when it is continued (`--resume`, refused when the plan or its overrides changed), locked; each run's
//! summary as it stands (completed runs of earlier sweeps linked in with `--reuse`); and the
//! runs that still need training.

use std::path::{Component, Path, PathBuf};

use crate::front::plan::{Plan, PlannedRun};
use crate::sweep::options::{SweepError, SweepOptions};
use crate::sweep::preflight::device_of;
use crate::sweep::progress::Progress;
use crate::sweep::record::{
    ExperimentDir, Lock, LockError, RunDir, Status, Summary, SweepDir, atomic, read_summary,
    results,
};
use crate::train::precision;

/// A sweep directory, locked, with each run's summary as it stands and the runs to train.
pub struct Prepared {
    pub sweep: SweepDir,
    pub lock: Lock,
    /// The axis names, in plan order (the results tables' columns).
    pub axes: Vec<String>,
    pub summaries: Vec<Summary>,
    /// Indices of the runs to train (from their newest checkpoint when they have one).
    pub todo: Vec<usize>,
    /// Runs taken from earlier sweeps (`--reuse`): the run's index and where its link points,
    /// relative to the sweep directory.
    pub reused: Vec<(usize, PathBuf)>,
}

/// Creates or reopens the sweep directory, takes its lock, and decides what each run needs.
pub fn prepare(plan: &Plan, source: &str, options: &SweepOptions) -> Result<Prepared, SweepError> {
    let sweep = if options.resume {
        resume_sweep(plan, options)?
    } else {
        SweepDir::create(&options.runs_dir, plan, source)?
    };
    let lock = sweep.lock().map_err(|e| match e {
        LockError::Held(pid) => SweepError::Locked {
            dir: sweep.path.display().to_string(),
            pid,
        },
        LockError::Io(e) => SweepError::Io(e),
    })?;
    crate::sweep::fault::point("sweep-locked");
    let axes: Vec<String> = match &plan.search {
        Some(search) => search.axes.iter().map(|a| a.name.clone()).collect(),
        None => plan
            .runs
            .first()
            .map(|r| r.axes.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default(),
    };
    let mut summaries: Vec<Summary> = Vec::with_capacity(plan.runs.len());
    let mut todo = Vec::new();
    let mut reused_from = Vec::new();
    for (index, run) in plan.runs.iter().enumerate() {
        let (summary, train, reused) = state_of(&sweep, &plan.experiment, run, options)?;
        if let Some(target) = reused {
            reused_from.push((index, target));
        }
        if train {
            todo.push(index);
        }
        summaries.push(summary);
    }
    results::write(&sweep, &axes, &summaries)?;
    Ok(Prepared {
        sweep,
        lock,
        axes,
        summaries,
        todo,
        reused: reused_from,
    })
}

/// A run's summary as it stands and whether it needs training: a completed run (of this
/// sweep when resumed, of an earlier one with `--reuse`: then also where its link points) is
/// kept, as is a failed one unless `retry_failed`; any other starts over as pending.
pub(crate) fn state_of(
    sweep: &SweepDir,
    experiment: &str,
    run: &PlannedRun,
    options: &SweepOptions,
) -> Result<(Summary, bool, Option<PathBuf>), SweepError> {
    let device = device_of(&run.config, options.device.as_deref());
    let fresh = Summary::pending(
        experiment,
        run,
        &device,
        precision::of_device(run.config.precision, &device).0,
    );
    let existing = if options.resume {
        read_summary(&sweep.run(&run.name))
    } else {
        None
    };
    let mut target = None;
    let reused = if options.reuse && existing.is_none() {
        reuse(sweep, run)?.map(|(summary, to)| {
            target = Some(to);
            summary
        })
    } else {
        None
    };
    Ok(match existing.or(reused) {
        // A pruned run is finished too: the sweep stopped it.
        Some(s) if matches!(s.status, Status::Completed | Status::Pruned) => (s, false, target),
        Some(s)
            if matches!(s.status, Status::Failed | Status::Diverged) && !options.retry_failed =>
        {
            (s, false, target)
        }
        // A run to train again starts over as pending: whatever its old summary said
        // (interrupted, failed) is not how this attempt ended.
        _ => (fresh, true, None),
    })
}

/// Says which runs `--reuse` took from earlier sweeps, and from where.
pub fn tell_reused(plan: &Plan, reused: &[(usize, PathBuf)], progress: &mut dyn Progress) {
    for (index, target) in reused {
        if let Some(run) = plan.runs.get(*index) {
            progress.note(&format!(
                "{}: reused {}, completed in an earlier sweep",
                run.name,
                target.display()
            ));
        }
    }
}

/// The `current` sweep of the experiment, when its plan is the one given.
fn resume_sweep(plan: &Plan, options: &SweepOptions) -> Result<SweepDir, SweepError> {
    let experiment = ExperimentDir::new(&options.runs_dir, &plan.experiment);
    let Ok(target) = std::fs::read_link(experiment.current()) else {
        return Err(SweepError::NothingToResume {
            experiment: plan.experiment.clone(),
            dir: experiment.path.display().to_string(),
        });
    };
    let sweep = experiment.sweep(target);
    let old: serde_json::Value = std::fs::read(sweep.plan())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| SweepError::NothingToResume {
            experiment: plan.experiment.clone(),
            dir: sweep.path.display().to_string(),
        })?;
    let recorded: Vec<String> = old["overrides"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.as_str().map(str::to_owned))
        .collect();
    if recorded != plan.overrides {
        return Err(SweepError::OverridesChanged {
            dir: sweep.path.display().to_string(),
            recorded,
            given: plan.overrides.clone(),
        });
    }
    if let Some(search) = &plan.search {
        // A search's runs come trial by trial: the search itself must be the same, and replaying
        // its journal checks each recorded run's id.
        let same = serde_json::to_value(search).ok().as_ref() == Some(&old["search"]);
        if !same {
            return Err(SweepError::PlanChanged {
                dir: sweep.path.display().to_string(),
                changes: "its search (sampler, budget, seed or axes) is not the sweep's; run without --resume to start a new search".into(),
            });
        }
        return Ok(sweep);
    }
    let runs = |v: &serde_json::Value| -> Vec<(String, String)> {
        v["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["name"].as_str().unwrap_or("").to_owned(),
                    r["id"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let before = runs(&old);
    let now: Vec<(String, String)> = plan
        .runs
        .iter()
        .map(|r| (r.name.clone(), r.id.clone()))
        .collect();
    if before != now {
        let added: Vec<&str> = now
            .iter()
            .filter(|r| !before.contains(r))
            .map(|r| r.0.as_str())
            .collect();
        let removed: Vec<&str> = before
            .iter()
            .filter(|r| !now.contains(r))
            .map(|r| r.0.as_str())
            .collect();
        let list = |v: &[&str]| {
            v.iter()
                .take(5)
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
                + if v.len() > 5 { ", …" } else { "" }
        };
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("{} new or changed ({})", added.len(), list(&added)));
        }
        if !removed.is_empty() {
            parts.push(format!(
                "{} gone or changed ({})",
                removed.len(),
                list(&removed)
            ));
        }
        if parts.is_empty() {
            parts.push("the runs are in another order".into());
        }
        return Err(SweepError::PlanChanged {
            dir: sweep.path.display().to_string(),
            changes: format!(
                "{} runs; run without --resume to start a new sweep (with --reuse to keep the completed runs)",
                parts.join(", ")
            ),
        });
    }
    Ok(sweep)
}

/// Links a completed run with the same id from an earlier sweep of the experiment; the link is
/// relative (`../<sweep>/<run>`), so the runs directory can move. Returns the run's summary and
/// the link's target.
fn reuse(sweep: &SweepDir, run: &PlannedRun) -> std::io::Result<Option<(Summary, PathBuf)>> {
    let Some(experiment) = sweep.experiment() else {
        return Ok(None);
    };
    let mut earlier: Vec<PathBuf> = std::fs::read_dir(&experiment.path)
        .map_err(atomic::at(&experiment.path))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p != &sweep.path && p.is_dir())
        .collect();
    earlier.sort();
    for dir in earlier.iter().rev() {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(summary) = read_summary(&RunDir::new(&entry.path())) else {
                continue;
            };
            if summary.id == run.id && summary.status == Status::Completed {
                let link = sweep.run(&run.name).path;
                let found = entry.path();
                let target = relative(
                    &std::fs::canonicalize(&sweep.path).map_err(atomic::at(&sweep.path))?,
                    &std::fs::canonicalize(&found).map_err(atomic::at(&found))?,
                );
                #[cfg(unix)]
                std::os::unix::fs::symlink(&target, &link).map_err(atomic::at(&link))?;
                #[cfg(not(unix))]
                return Ok(None);
                return Ok(Some((
                    Summary {
                        name: run.name.clone(),
                        ..summary
                    },
                    target,
                )));
            }
        }
    }
    Ok(None)
}

/// `to` as seen from the directory `from` (both absolute): `../<sweep>/<run>`.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_to_the_sweep() {
        assert_eq!(
            relative(Path::new("/r/exp/2"), Path::new("/r/exp/1/lr0.1")),
            Path::new("../1/lr0.1")
        );
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/c/d")),
            Path::new("../../c/d")
        );
    }
}
