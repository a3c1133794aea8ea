//! How a sweep is executed and why it may not be: the options `xp run` passes to the executor
//! and to the run processes, the errors that stop a sweep before its runs, and when to start no
//! more runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sweep::record::{Status, Summary};
use crate::sweep::slurm::SlurmError;

/// How to execute.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
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

/// How runs are started as processes.
#[derive(Debug, Clone)]
pub struct Processes {
    /// The `xp` binary to run (`xp exec`).
    pub exe: PathBuf,
    /// At most this many runs at once.
    pub jobs: usize,
    /// CPU threads each run uses.
    pub threads: usize,
    /// GPUs to assign (`cuda:0`, …), one run each at a time; empty: the runs' own device.
    pub gpus: Vec<String>,
}

impl Processes {
    /// `jobs` runs at once on this machine: the cores ([`crate::train::threads::available`]: those
    /// `RAYON_NUM_THREADS` says, when set) are split between them (or each run
    /// gets `cpus` threads when the experiment's `resources` says so), and with GPUs the
    /// concurrency is at most one run per GPU.
    pub fn local(exe: PathBuf, jobs: usize, cpus: Option<usize>, gpus: Vec<String>) -> Self {
        let cores = crate::train::threads::available();
        let jobs = if gpus.is_empty() {
            jobs.max(1)
        } else {
            jobs.clamp(1, gpus.len())
        };
        let threads = cpus.unwrap_or(cores / jobs).max(1);
        Processes {
            exe,
            jobs,
            threads,
            gpus,
        }
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
    /// `--resume` with other overrides (`--set`, `--axis`, `--only`) than the sweep's.
    #[error(
        "the sweep in {dir} was planned with other overrides: {}",
        override_changes(recorded, given)
    )]
    OverridesChanged {
        dir: String,
        /// As plan.json records them (`--set K=V`, `--axis A=V,V`, `--only GLOB`).
        recorded: Vec<String>,
        given: Vec<String>,
    },
    #[error(
        "{dir} is in use by another xp process{}; wait for it, or stop it",
        pid.map_or(String::new(), |pid| format!(" (pid {pid})"))
    )]
    Locked { dir: String, pid: Option<u32> },
    /// A search could not suggest its next trial.
    #[error("{0}")]
    Search(String),
    /// Slurm could not take or report the sweep's jobs (`--launcher slurm`).
    #[error("{0}")]
    Slurm(SlurmError),
}

impl From<SlurmError> for SweepError {
    fn from(e: SlurmError) -> Self {
        match e {
            SlurmError::Io(e) => SweepError::Io(e),
            e => SweepError::Slurm(e),
        }
    }
}

/// Whether the sweep should start no more runs: stopped by a signal, or `--fail-fast` after a
/// failure.
pub fn should_stop(options: &SweepOptions, summaries: &[Summary]) -> bool {
    stopped(options)
        || (options.fail_fast
            && summaries
                .iter()
                .any(|s| matches!(s.status, Status::Failed | Status::Diverged)))
}

pub fn stopped(options: &SweepOptions) -> bool {
    options
        .stop
        .as_ref()
        .is_some_and(|s| s.load(Ordering::SeqCst))
}

/// `now --set lr=1, the sweep's --set lr=2`: the overrides of one side the other lacks.
fn override_changes(recorded: &[String], given: &[String]) -> String {
    let only = |a: &[String], b: &[String]| {
        let mut v: Vec<String> = a
            .iter()
            .filter(|o| !b.contains(o))
            .map(|o| format!("`{o}`"))
            .collect();
        if v.is_empty() {
            v.push("none".into());
        }
        v.join(", ")
    };
    if only(given, recorded) == "none" && only(recorded, given) == "none" {
        return format!(
            "the same ones in another order (the sweep's: {})",
            recorded.join(" ")
        );
    }
    format!(
        "given {}, the sweep's {}",
        only(given, recorded),
        only(recorded, given)
    )
}
