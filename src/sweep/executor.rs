//! Execution: runs a plan into its sweep directory, in this process one run after another, or
//! each run in its own process, several at once ([`crate::sweep::processes`]). A run that fails (an
//! error, a panic, a diverged loss, a crashed process) is recorded with its reason and the
//! others go on; a sweep can be continued (`--resume`), reusing completed runs and resuming
//! interrupted ones from their newest checkpoint. This is the library API `xp run` uses.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::Dataset;
use crate::front::plan::{Plan, PlannedRun};
use crate::model::{self, Built};
use crate::spec::Pruning;
pub use crate::sweep::options::{SweepError, SweepOptions, should_stop, stopped};
use crate::sweep::preflight::Datasets;
pub use crate::sweep::prepare::{Prepared, prepare};
use crate::sweep::progress::Update;
pub use crate::sweep::progress::{Progress, Silent};
use crate::sweep::prune::Pruner;
use crate::sweep::queue::{Fixed, Queue};
use crate::sweep::record::{
    self, Best, ParamCounts, RunWriter, Status, Summary, SweepDir, checkpoint, results,
};
use crate::sweep::search::trials::Trials;
use crate::train::precision;
use crate::train::{self, Control, Ending, Event, Sink};

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

/// Runs every run of a plan, in a new sweep directory or continuing the current one.
pub fn run_plan(
    plan: &Plan,
    source: &str,
    datasets: &Datasets,
    options: &SweepOptions,
    progress: &mut dyn Progress,
) -> Result<SweepReport, SweepError> {
    let Prepared {
        sweep,
        lock,
        axes,
        mut summaries,
        todo,
        reused,
    } = prepare(plan, source, options)?;
    crate::sweep::prepare::tell_reused(plan, &reused, progress);
    // A search adds its runs to the plan as it goes.
    let mut plan = plan.clone();
    let jobs = options.processes.as_ref().map_or(1, |p| p.jobs);
    let mut queue: Box<dyn Queue> =
        match Trials::new(&sweep, &mut plan, &mut summaries, jobs, options)? {
            Some(trials) => Box::new(trials),
            None => Box::new(Fixed(todo.iter().copied().collect())),
        };
    let total = queue.total(&plan);
    let settled = summaries
        .iter()
        .filter(|s| !matches!(s.status, Status::Pending))
        .count();
    progress.planned(total.saturating_sub(settled), total);
    let interrupted = match &options.processes {
        Some(processes) => crate::sweep::processes::run(
            &sweep,
            &mut plan,
            queue.as_mut(),
            &axes,
            &mut summaries,
            options,
            processes,
            progress,
        )?,
        None => in_process(
            &sweep,
            &mut plan,
            queue.as_mut(),
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

/// Trains the runs to do in this process, one after another.
#[allow(clippy::too_many_arguments)]
fn in_process(
    sweep: &SweepDir,
    plan: &mut Plan,
    queue: &mut dyn Queue,
    axes: &[String],
    summaries: &mut Vec<Summary>,
    datasets: &Datasets,
    options: &SweepOptions,
    progress: &mut dyn Progress,
) -> Result<bool, SweepError> {
    let total = queue.total(plan);
    let mut interrupted = false;
    loop {
        if should_stop(options, summaries) {
            interrupted |= stopped(options);
            break;
        }
        let Some(index) = queue.next(sweep, plan, summaries)? else {
            break;
        };
        let run = &plan.runs[index];
        progress.run_started(index, total, run);
        let summary = &mut summaries[index];
        if let Err(e) = execute_run(
            sweep,
            run,
            index,
            datasets.get(&run.config),
            summary,
            plan.prune,
            options,
            progress,
        ) {
            // Unless how the run ended is recorded and only train.log's last line was lost.
            if !crate::sweep::slurm::settled(summary) {
                summary.fail(format!("writing the run directory failed: {e}"));
            }
        }
        interrupted |= summary.status == Status::Interrupted;
        progress.run_finished(index, total, summary);
        queue.finished(index, summaries);
        results::write(sweep, axes, summaries)?;
    }
    Ok(interrupted)
}

/// Trains one run (from its newest checkpoint when there is one), stopped early by the sweep's
/// `prune` when it has one; the summary records how it ended. Errors are only those of writing
/// the run directory (or the sweep's pruning journal) itself.
#[allow(clippy::too_many_arguments)]
pub fn execute_run(
    sweep: &SweepDir,
    run: &PlannedRun,
    index: usize,
    data: Option<Arc<Dataset>>,
    summary: &mut Summary,
    prune: Option<Pruning>,
    options: &SweepOptions,
    progress: &mut dyn Progress,
) -> std::io::Result<()> {
    let ended = attempt(sweep, run, index, data, summary, prune, options, progress);
    match prune {
        // The median counts the runs that completed.
        Some(_) if crate::sweep::slurm::settled(summary) => {
            crate::sweep::prune::ended(sweep, run, summary.status)?;
            ended
        }
        _ => ended,
    }
}

#[allow(clippy::too_many_arguments)]
fn attempt(
    sweep: &SweepDir,
    run: &PlannedRun,
    index: usize,
    data: Option<Arc<Dataset>>,
    summary: &mut Summary,
    prune: Option<Pruning>,
    options: &SweepOptions,
    progress: &mut dyn Progress,
) -> std::io::Result<()> {
    let (newest, unusable) = checkpoint::newest_valid(&sweep.run(&run.name).path);
    // metrics.jsonl is cut back to what the checkpoint covers; with no checkpoint to resume
    // from although there are some, it is left whole and the run does not start over.
    let keep_lines = match (&newest, unusable.is_empty()) {
        (Some((_, state)), _) => Some(state.metrics_lines),
        (None, true) => Some(0),
        (None, false) => None,
    };
    let mut dir = RunWriter::open(sweep, run, keep_lines)?;
    summary.start();
    dir.write_summary(summary)?;
    dir.reserve_summary()?;
    dir.log(&format!(
        "run {} (id {}) of experiment {}",
        run.name, run.id, summary.experiment
    ))?;
    dir.log(&format!(
        "device {}, precision {}, {}",
        summary.device,
        summary.precision,
        crate::diagnostic::plural(rayon::current_num_threads(), "thread")
    ))?;
    if let (_, Some(warning)) = precision::of_device(run.config.precision, &summary.device) {
        dir.log(&format!("warning: {warning}"))?;
    }
    for problem in &unusable {
        dir.log(&format!("warning: {problem}; not resumed from"))?;
    }
    let checkpoint_dir = newest.map(|(d, _)| d);
    if checkpoint_dir.is_none() && !unusable.is_empty() {
        let checkpoints = dir.dir.checkpoints();
        return end(
            &mut dir,
            summary,
            Err(format!(
                "no usable checkpoint to resume from ({} damaged, see train.log); remove {} to train the run from the start",
                unusable.len(),
                checkpoints.display()
            )),
        );
    }
    let result = match data {
        Some(data) => catch_unwind(AssertUnwindSafe(|| {
            train_run(
                sweep,
                run,
                index,
                &data,
                checkpoint_dir.as_deref(),
                &mut dir,
                summary,
                prune,
                options,
                progress,
            )
        }))
        .unwrap_or_else(|panic| Err(format!("xp panicked: {}", panic_text(&panic)))),
        None => Err("its data was not loaded".into()),
    };
    summary.peak_memory_bytes = record::peak_memory_bytes();
    end(&mut dir, summary, result)
}

/// Records how the run ended: summary.json, then the last line of train.log.
fn end(
    dir: &mut RunWriter,
    summary: &mut Summary,
    result: Result<(Status, Option<String>), String>,
) -> std::io::Result<()> {
    let (status, reason) = result.unwrap_or_else(|reason| (Status::Failed, Some(reason)));
    // train.log has the whole text (a backtrace, an error's causes); the summary its first line.
    let end = match &reason {
        Some(reason) => format!("{}: {reason}", status.as_str()),
        None => status.as_str().to_owned(),
    };
    summary.finish(status, reason);
    // The summary first: a log that can no longer be written (a full disk) must not leave it
    // saying `running`.
    dir.write_summary(summary)?;
    dir.log(&format!("end: {end}"))
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
    dir: &'a mut RunWriter,
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
    sweep: &SweepDir,
    run: &PlannedRun,
    index: usize,
    data: &Dataset,
    checkpoint_dir: Option<&Path>,
    dir: &mut RunWriter,
    summary: &mut Summary,
    prune: Option<Pruning>,
    options: &SweepOptions,
    progress: &mut dyn Progress,
) -> Result<(Status, Option<String>), String> {
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
    let pruner = prune.map(|p| Pruner::new(sweep, p, run));
    let mut judge = pruner
        .as_ref()
        .map(|p| move |step: usize, value: f64| p.judge(step, value));
    if let Some(kernel) = crate::sweep::fault::wrong_kernel(&run.name)? {
        crate::ops::kernels::sabotage(kernel);
    }
    let control = Control {
        resume,
        stop: options.stop.as_deref(),
        out_of_memory_at: crate::sweep::fault::out_of_memory_steps(&run.name),
        pruner: judge.as_mut().map(|j| j as &mut train::Pruner),
        device_step: false,
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
    summary.batch = outcome.batch.clone();
    summary.batch_changes = outcome.batch_changes.clone();
    summary.disabled_kernels = outcome.disabled_kernels.clone();
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
    let (status, reason) = match outcome.ending {
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
        Ending::Pruned { reason, .. } => (Status::Pruned, Some(reason)),
    };
    if status != Status::Interrupted {
        crate::sweep::export::save(&dir.dir, &run.config, &built)
            .map_err(|e| format!("saving the model failed: {e}"))?;
    }
    Ok((status, reason))
}
