//! Execution: runs a plan into its sweep directory, in this process one run after another, or
//! each run in its own process, several at once ([`crate::sweep::processes`]). A run that fails (an
//! error, a panic, a diverged loss, a crashed process) is recorded with its reason and the
//! others go on; a sweep can be continued (`--resume`), reusing completed runs and resuming
//! interrupted ones from their newest checkpoint. This is the library API `xp run` uses.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::data::Dataset;
use crate::front::plan::{Plan, PlannedRun};
use crate::model::{self, Built};
use crate::sweep::preflight::{Datasets, device_of};
use crate::sweep::processes::Processes;
use crate::sweep::progress::Update;
pub use crate::sweep::progress::{Progress, Silent};
use crate::sweep::record::{
    self, Best, Lock, ParamCounts, RunDir, Status, Summary, SweepDir, checkpoint, read_summary,
    results,
};
use crate::train::precision;
use crate::train::{self, Control, Ending, Event, Sink};

/// How to execute.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where sweep directories go (`runs` by default).
    pub runs_dir: PathBuf,
    /// `--device`, overriding the experiments'.
    pub device: Option<String>,
    /// Continue the experiment's `current` sweep instead of starting a new one.
    pub resume: bool,
    /// With `resume`: train failed and diverged runs again.
    pub retry_failed: bool,
    /// Take completed runs with the same id from earlier sweeps of the experiment.
    pub reuse: bool,
    /// Stop at the first failed run (the rest stay pending).
    pub fail_fast: bool,
    /// Set by a signal handler: the active run checkpoints and the sweep stops.
    pub stop: Option<Arc<AtomicBool>>,
    /// Run each run in its own process (`xp exec`), so a crash cannot take the sweep down;
    /// `None`: in this process, one after another.
    pub processes: Option<Processes>,
}

/// What a sweep left behind.
#[derive(Debug)]
pub struct SweepReport {
    pub dir: PathBuf,
    pub summaries: Vec<Summary>,
    /// The sweep stopped on request before every run was done.
    pub interrupted: bool,
}

impl SweepReport {
    pub fn failures(&self) -> usize {
        self.summaries
            .iter()
            .filter(|s| matches!(s.status, Status::Failed | Status::Diverged))
            .count()
    }
}

/// Why a sweep could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("there is no sweep of `{experiment}` to resume in {dir}")]
    NothingToResume { experiment: String, dir: String },
    #[error("the experiment changed since the sweep in {dir} was planned: {changes}")]
    PlanChanged { dir: String, changes: String },
    #[error("{dir} is in use by another xp process (pid {pid}); wait for it, or stop it")]
    Locked { dir: String, pid: u32 },
}

/// What to do with one run of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Already done (completed, or failed without `retry_failed`).
    Keep,
    /// Train, from its newest checkpoint when it has one.
    Train,
}

/// A sweep directory, locked, with each run's summary as it stands and the runs to train.
pub struct Prepared {
    pub sweep: SweepDir,
    pub lock: Lock,
    /// The axis names, in plan order (the results tables' columns).
    pub axes: Vec<String>,
    pub summaries: Vec<Summary>,
    /// Indices of the runs to train (from their newest checkpoint when they have one).
    pub todo: Vec<usize>,
}

/// Runs every run of a plan, in a new sweep directory or continuing the current one.
pub fn run_plan(
    plan: &Plan,
    source: &str,
    datasets: &Datasets,
    options: &Options,
    progress: &mut dyn Progress,
) -> Result<SweepReport, SweepError> {
    let Prepared {
        sweep,
        lock,
        axes,
        mut summaries,
        todo,
    } = prepare(plan, source, options)?;
    progress.planned(todo.len(), plan.runs.len());
    let interrupted = match &options.processes {
        Some(processes) => crate::sweep::processes::run(
            &sweep,
            plan,
            &todo,
            &axes,
            &mut summaries,
            options,
            processes,
            progress,
        )?,
        None => in_process(
            &sweep,
            plan,
            &todo,
            &axes,
            &mut summaries,
            datasets,
            options,
            progress,
        )?,
    };
    drop(lock);
    Ok(SweepReport {
        dir: sweep.path,
        summaries,
        interrupted,
    })
}

/// Whether the sweep should start no more runs: stopped by a signal, or `--fail-fast` after a
/// failure.
pub fn should_stop(options: &Options, summaries: &[Summary]) -> bool {
    stopped(options)
        || (options.fail_fast
            && summaries
                .iter()
                .any(|s| matches!(s.status, Status::Failed | Status::Diverged)))
}

pub fn stopped(options: &Options) -> bool {
    options
        .stop
        .as_ref()
        .is_some_and(|s| s.load(Ordering::SeqCst))
}

/// Trains the runs to do in this process, one after another.
#[allow(clippy::too_many_arguments)]
fn in_process(
    sweep: &SweepDir,
    plan: &Plan,
    todo: &[usize],
    axes: &[String],
    summaries: &mut [Summary],
    datasets: &Datasets,
    options: &Options,
    progress: &mut dyn Progress,
) -> Result<bool, SweepError> {
    let total = plan.runs.len();
    let mut interrupted = false;
    for &index in todo {
        let run = &plan.runs[index];
        if should_stop(options, summaries) {
            interrupted |= stopped(options);
            break;
        }
        progress.run_started(index, total, run);
        let summary = &mut summaries[index];
        if let Err(e) = execute_run(
            sweep,
            run,
            index,
            datasets.get(&run.config),
            summary,
            options,
            progress,
        ) {
            summary.status = Status::Failed;
            summary.reason = Some(format!("writing the run directory failed: {e}"));
        }
        interrupted |= summary.status == Status::Interrupted;
        progress.run_finished(index, total, summary);
        results::write(&sweep.path, axes, summaries)?;
    }
    Ok(interrupted)
}

/// Creates or reopens the sweep directory, takes its lock, and decides what each run needs.
pub fn prepare(plan: &Plan, source: &str, options: &Options) -> Result<Prepared, SweepError> {
    let sweep = if options.resume {
        resume_sweep(plan, options)?
    } else {
        SweepDir::create(&options.runs_dir, plan, source)?
    };
    let lock = sweep.lock().map_err(|e| match e {
        record::LockError::Held(pid) => SweepError::Locked {
            dir: sweep.path.display().to_string(),
            pid,
        },
        record::LockError::Io(e) => SweepError::Io(e),
    })?;
    let axes: Vec<String> = plan
        .runs
        .first()
        .map(|r| r.axes.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let mut summaries: Vec<Summary> = Vec::with_capacity(plan.runs.len());
    let mut actions = Vec::with_capacity(plan.runs.len());
    for run in &plan.runs {
        let device = device_of(&run.config, options.device.as_deref());
        let fresh = Summary::new(
            &plan.experiment,
            run,
            &device,
            precision::of_device(run.config.precision, &device).0,
        );
        let existing = if options.resume {
            read_summary(&sweep.path.join(&run.name))
        } else {
            None
        };
        let reused = if options.reuse && existing.is_none() {
            reuse(&sweep, run)?
        } else {
            None
        };
        let (summary, action) = match existing.or(reused) {
            Some(s) if s.status == Status::Completed => (s, Action::Keep),
            Some(s)
                if matches!(s.status, Status::Failed | Status::Diverged)
                    && !options.retry_failed =>
            {
                (s, Action::Keep)
            }
            // A run to train again starts over as pending: whatever its old summary said
            // (interrupted, failed) is not how this attempt ended.
            _ => (fresh, Action::Train),
        };
        summaries.push(summary);
        actions.push(action);
    }
    results::write(&sweep.path, &axes, &summaries)?;
    let todo = (0..plan.runs.len())
        .filter(|&i| actions[i] == Action::Train)
        .collect();
    Ok(Prepared {
        sweep,
        lock,
        axes,
        summaries,
        todo,
    })
}

/// The `current` sweep of the experiment, when its plan is the one given.
fn resume_sweep(plan: &Plan, options: &Options) -> Result<SweepDir, SweepError> {
    let base = options.runs_dir.join(&plan.experiment);
    let current = base.join("current");
    let Ok(target) = std::fs::read_link(&current) else {
        return Err(SweepError::NothingToResume {
            experiment: plan.experiment.clone(),
            dir: base.display().to_string(),
        });
    };
    let path = base.join(target);
    let old: serde_json::Value = std::fs::read(path.join("plan.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| SweepError::NothingToResume {
            experiment: plan.experiment.clone(),
            dir: path.display().to_string(),
        })?;
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
            dir: path.display().to_string(),
            changes: format!(
                "{} runs; run without --resume to start a new sweep (with --reuse to keep the completed runs)",
                parts.join(", ")
            ),
        });
    }
    Ok(SweepDir { path })
}

/// Links a completed run with the same id from an earlier sweep of the experiment.
fn reuse(sweep: &SweepDir, run: &PlannedRun) -> std::io::Result<Option<Summary>> {
    let Some(base) = sweep.path.parent() else {
        return Ok(None);
    };
    let mut earlier: Vec<PathBuf> = std::fs::read_dir(base)?
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
            let Some(summary) = read_summary(&entry.path()) else {
                continue;
            };
            if summary.id == run.id && summary.status == Status::Completed {
                let link = sweep.path.join(&run.name);
                let target = std::fs::canonicalize(entry.path())?;
                #[cfg(unix)]
                std::os::unix::fs::symlink(&target, &link)?;
                #[cfg(not(unix))]
                return Ok(None);
                return Ok(Some(Summary {
                    name: run.name.clone(),
                    ..summary
                }));
            }
        }
    }
    Ok(None)
}

fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Trains one run (from its newest checkpoint when there is one); the summary records how it
/// ended. Errors are only those of writing the run directory itself.
pub fn execute_run(
    sweep: &SweepDir,
    run: &PlannedRun,
    index: usize,
    data: Option<Arc<Dataset>>,
    summary: &mut Summary,
    options: &Options,
    progress: &mut dyn Progress,
) -> std::io::Result<()> {
    let run_dir = sweep.path.join(&run.name);
    let newest = checkpoint::steps(&run_dir).pop();
    let resume_lines = newest.as_ref().and_then(|(_, dir)| {
        let state: train::TrainerState =
            serde_json::from_slice(&std::fs::read(dir.join("trainer.json")).ok()?).ok()?;
        Some(state.metrics_lines)
    });
    let mut dir = RunDir::open(sweep, run, resume_lines.unwrap_or(0))?;
    summary.status = Status::Running;
    summary.reason = None;
    summary.started_at.get_or_insert_with(now);
    dir.write_summary(summary)?;
    dir.log(&format!(
        "run {} (id {}) of experiment {}",
        run.name, run.id, summary.experiment
    ))?;
    dir.log(&format!(
        "device {}, precision {}, {} threads",
        summary.device,
        summary.precision,
        rayon::current_num_threads()
    ))?;
    if let (_, Some(warning)) = precision::of_device(run.config.precision, &summary.device) {
        dir.log(&format!("warning: {warning}"))?;
    }
    let checkpoint_dir = newest.filter(|_| resume_lines.is_some()).map(|(_, d)| d);
    let result = match data {
        Some(data) => catch_unwind(AssertUnwindSafe(|| {
            train_run(
                run,
                index,
                &data,
                checkpoint_dir.as_deref(),
                &mut dir,
                summary,
                options,
                progress,
            )
        }))
        .unwrap_or_else(|panic| Err(format!("xp panicked: {}", panic_text(&panic)))),
        None => Err("its data was not loaded".into()),
    };
    summary.finished_at = Some(now());
    summary.peak_memory_bytes = record::peak_memory_bytes();
    if let Err(reason) = result {
        summary.status = Status::Failed;
        summary.reason = Some(reason);
    }
    let end = match &summary.reason {
        Some(reason) => format!("{}: {reason}", summary.status.as_str()),
        None => summary.status.as_str().to_owned(),
    };
    dir.log(&format!("end: {end}"))?;
    dir.write_summary(summary)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Sends loop events to the run directory and to the progress display.
struct Tee<'a> {
    dir: &'a mut RunDir,
    progress: &'a mut dyn Progress,
    index: usize,
}

impl Sink for Tee<'_> {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        if let Event::Evaluating { .. } = event {
            crate::sweep::fault::point("eval");
        }
        // The directory first: a checkpoint is on disk before the display hears of it.
        self.dir.event(event)?;
        if let Some(update) = Update::of(event) {
            self.progress.update(self.index, &update);
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn train_run(
    run: &PlannedRun,
    index: usize,
    data: &Dataset,
    checkpoint_dir: Option<&Path>,
    dir: &mut RunDir,
    summary: &mut Summary,
    options: &Options,
    progress: &mut dyn Progress,
) -> Result<(), String> {
    crate::sweep::fault::panic_for(&run.name);
    let (device, name, note) =
        crate::train::device::open_device(&run.config, options.device.as_deref())?;
    if let Some(note) = &note {
        dir.log(&format!("note: {note}"))
            .map_err(|e| e.to_string())?;
    }
    if name != summary.device {
        summary.precision = precision::of_device(run.config.precision, &name)
            .0
            .to_owned();
        summary.device = name;
    }
    let (init, strict, source) = match &run.config.init_from {
        Some(i) => (
            model::load_weights(&i.path, &device).map_err(|e| e.to_string())?,
            i.strict,
            i.path.display().to_string(),
        ),
        None => (Default::default(), true, String::new()),
    };
    let built: Built = model::build(&run.config, data, init, strict, &source, &device)
        .map_err(|e| e.to_string())?;
    summary.params = Some(ParamCounts {
        total: built.total_params(),
        trainable: built.trainable_params(),
    });
    let resume = checkpoint_dir
        .map(|d| checkpoint::read(d, &built.params))
        .transpose()?;
    let control = Control {
        resume,
        stop: options.stop.as_deref(),
    };
    let outcome = train::train_with(
        &run.config,
        data,
        &built,
        &device,
        &mut Tee {
            dir,
            progress,
            index,
        },
        control,
    )
    .map_err(|e| e.to_string())?;
    summary.steps = outcome.steps;
    summary.wall_s = Some(outcome.wall_s);
    summary.tokens_per_s = Some(outcome.throughput);
    summary.last = outcome.last.clone();
    summary.best = outcome
        .best
        .iter()
        .map(|(k, (value, step))| {
            (
                k.clone(),
                Best {
                    value: *value,
                    step: *step,
                },
            )
        })
        .collect();
    (summary.status, summary.reason) = match outcome.ending {
        Ending::Completed => (Status::Completed, None),
        Ending::EarlyStopped { reason } => {
            (Status::Completed, Some(format!("stopped early: {reason}")))
        }
        Ending::Diverged { reason, .. } => (Status::Diverged, Some(reason)),
        Ending::Interrupted { step } => (
            Status::Interrupted,
            Some(format!(
                "interrupted after step {step}; `xp run --resume` continues it"
            )),
        ),
    };
    if summary.status == Status::Interrupted {
        return Ok(());
    }
    crate::sweep::export::save(&dir.path, &run.config, &built)
        .map_err(|e| format!("saving the model failed: {e}"))
}
