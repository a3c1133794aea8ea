//! Execution: runs a plan into its sweep directory, one run after another. A run that fails
//! (an error, a panic, a diverged loss) is recorded with its reason and the others go on.
//! This is the library API `xp run` uses; examples/ use it too.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use crate::data::Dataset;
use crate::model::{self, Built};
use crate::plan::{Plan, PlannedRun};
use crate::preflight::{Datasets, device_of, precision_of};
use crate::record::{self, Best, ParamCounts, RunDir, Status, Summary, SweepDir, atomic, results};
use crate::train::{self, Ending, Event, Sink};

/// How to execute.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where sweep directories go (`runs` by default).
    pub runs_dir: PathBuf,
    /// `--device`, overriding the experiments'.
    pub device: Option<String>,
}

/// What a sweep left behind.
#[derive(Debug)]
pub struct SweepReport {
    pub dir: PathBuf,
    pub summaries: Vec<Summary>,
}

impl SweepReport {
    pub fn failures(&self) -> usize {
        self.summaries
            .iter()
            .filter(|s| matches!(s.status, Status::Failed | Status::Diverged))
            .count()
    }
}

/// Follows a sweep as it runs (progress lines, bars).
pub trait Progress {
    fn run_started(&mut self, index: usize, total: usize, run: &PlannedRun);
    fn event(&mut self, run: &PlannedRun, event: &Event);
    fn run_finished(&mut self, index: usize, total: usize, summary: &Summary);
}

/// A progress that shows nothing.
pub struct Silent;

impl Progress for Silent {
    fn run_started(&mut self, _: usize, _: usize, _: &PlannedRun) {}
    fn event(&mut self, _: &PlannedRun, _: &Event) {}
    fn run_finished(&mut self, _: usize, _: usize, _: &Summary) {}
}

/// Runs every run of a plan in a new sweep directory.
pub fn run_plan(
    plan: &Plan,
    source: &str,
    datasets: &Datasets,
    options: &Options,
    progress: &mut dyn Progress,
) -> std::io::Result<SweepReport> {
    let sweep = SweepDir::create(&options.runs_dir, plan, source)?;
    let axes: Vec<String> = plan
        .runs
        .first()
        .map(|r| r.axes.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let mut summaries: Vec<Summary> = plan
        .runs
        .iter()
        .map(|r| {
            let device = device_of(&r.config, options.device.as_deref());
            Summary::new(
                &plan.experiment,
                r,
                &device,
                precision_of(&r.config, &device).0,
            )
        })
        .collect();
    results::write(&sweep.path, &axes, &summaries)?;
    let total = plan.runs.len();
    for (index, run) in plan.runs.iter().enumerate() {
        progress.run_started(index, total, run);
        let summary = &mut summaries[index];
        let data = datasets.get(&run.config);
        let outcome = execute_run(&sweep, run, data, summary, progress);
        if let Err(e) = outcome {
            summary.status = Status::Failed;
            summary.reason = Some(format!("writing the run directory failed: {e}"));
        }
        progress.run_finished(index, total, summary);
        results::write(&sweep.path, &axes, &summaries)?;
    }
    Ok(SweepReport {
        dir: sweep.path,
        summaries,
    })
}

fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Trains one run; the summary records how it ended. Errors are only those of writing the
/// run directory itself.
fn execute_run(
    sweep: &SweepDir,
    run: &PlannedRun,
    data: Option<Arc<Dataset>>,
    summary: &mut Summary,
    progress: &mut dyn Progress,
) -> std::io::Result<()> {
    let mut dir = RunDir::create(sweep, run)?;
    summary.status = Status::Running;
    summary.started_at = Some(now());
    dir.write_summary(summary)?;
    dir.log(&format!(
        "run {} (id {}) of experiment {}",
        run.name, run.id, summary.experiment
    ))?;
    dir.log(&format!(
        "device {}, precision {}",
        summary.device, summary.precision
    ))?;
    if let (_, Some(warning)) = precision_of(&run.config, &summary.device) {
        dir.log(&format!("warning: {warning}"))?;
    }
    let result = match data {
        Some(data) => catch_unwind(AssertUnwindSafe(|| {
            train_run(run, &data, &mut dir, summary, progress)
        }))
        .unwrap_or_else(|panic| Err(format!("xp panicked: {}", panic_text(&panic)))),
        None => Err("its data was not loaded".into()),
    };
    summary.finished_at = Some(now());
    summary.peak_memory_bytes = record::peak_memory_bytes();
    match result {
        Ok(()) => {}
        Err(reason) => {
            summary.status = Status::Failed;
            summary.reason = Some(reason);
        }
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
    run: &'a PlannedRun,
}

impl Sink for Tee<'_> {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        self.progress.event(self.run, event);
        self.dir.event(event)
    }
}

fn train_run(
    run: &PlannedRun,
    data: &Dataset,
    dir: &mut RunDir,
    summary: &mut Summary,
    progress: &mut dyn Progress,
) -> Result<(), String> {
    let device = Device::Cpu;
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
    let outcome = train::train(
        &run.config,
        data,
        &built,
        &device,
        &mut Tee { dir, progress, run },
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
    };
    save_model(&dir.path.join("model.safetensors"), &built)
        .map_err(|e| format!("saving the model failed: {e}"))
}

/// Writes the model's parameters by name, atomically.
pub fn save_model(path: &Path, built: &Built) -> std::io::Result<()> {
    let tensors = built.tensors();
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(".model.safetensors.tmp-{}", std::process::id()));
    candle_core::safetensors::save(&tensors, &temp).map_err(std::io::Error::other)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::File::open(&temp)?.sync_all()?;
    std::fs::rename(&temp, path)?;
    atomic::sync_dir(dir)
}
