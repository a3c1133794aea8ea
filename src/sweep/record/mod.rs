//! The record stage: the sweep and run directories of DESIGN.md §5, every path of which
//! [`layout`] spells. Run output is written as it happens (metrics.jsonl appended and flushed a
//! line at a time, train.log), and every file that others read (summary, results, plan, config,
//! model) is replaced atomically.

pub(crate) mod atomic;
pub mod checkpoint;
pub(crate) mod journal;
pub(crate) mod layout;
pub(crate) mod lock;
pub(crate) mod results;
pub(crate) mod search_journal;
pub(crate) mod summary;
pub(crate) mod writer;

use std::fs;
use std::io;
use std::path::Path;

pub use layout::{ExperimentDir, RunDir, SweepDir};
pub use lock::{Lock, LockError};
pub use summary::{Best, ParamCounts, Status, Summary};
pub use writer::RunWriter;

use crate::front::plan::{Plan, PlannedRun};

impl SweepDir {
    /// Creates a new sweep directory (a suffix keeps two sweeps in one second apart), writes the
    /// experiment source and the plan, and points `current` at it.
    pub fn create(runs_dir: &Path, plan: &Plan, source: &str) -> io::Result<SweepDir> {
        let experiment = ExperimentDir::new(runs_dir, &plan.experiment);
        fs::create_dir_all(&experiment.path).map_err(atomic::at(&experiment.path))?;
        let stamp = layout::sweep_stamp();
        let mut n = 1;
        let sweep = loop {
            let sweep = experiment.stamped(&stamp, n);
            match fs::create_dir(&sweep.path) {
                Ok(()) => break sweep,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(atomic::at(&sweep.path)(e)),
            }
        };
        atomic::write(&sweep.source(), source.as_bytes())?;
        sweep.write_plan(plan)?;
        if let Some(name) = sweep.path.file_name() {
            atomic::symlink(Path::new(name), &experiment.current())?;
        }
        Ok(sweep)
    }

    /// Writes `plan.json` (atomically): at creation, and again as a search adds trials.
    pub fn write_plan(&self, plan: &Plan) -> io::Result<()> {
        let plan_json = serde_json::to_vec_pretty(plan).map_err(io::Error::other)?;
        atomic::write(&self.plan(), &plan_json)
    }

    /// Takes the sweep's lock: one xp process writes a sweep directory at a time.
    pub fn lock(&self) -> Result<Lock, LockError> {
        Lock::try_acquire(&self.lock_file())
    }
}

/// Creates `<sweep>/<run-name>/` with the run's resolved config (`config.kdl`, `config.json`).
/// A run read back from `plan.json` has no canonical KDL: its `config.kdl` is left as written
/// when the sweep was planned.
pub fn write_config(sweep: &SweepDir, run: &PlannedRun) -> io::Result<RunDir> {
    let dir = sweep.run(&run.name);
    fs::create_dir_all(&dir.path).map_err(atomic::at(&dir.path))?;
    if !run.config_kdl.is_empty() {
        atomic::write(&dir.config_kdl(), run.config_kdl.as_bytes())?;
    }
    let config = serde_json::to_vec_pretty(&run.settings).map_err(io::Error::other)?;
    atomic::write(&dir.config_json(), &config)?;
    Ok(dir)
}

/// Gets a run's directory ready for a process that trains it: its config and its summary as
/// the sweep sees it before the run starts.
pub fn ready_run_dir(sweep: &SweepDir, run: &PlannedRun, summary: &Summary) -> io::Result<()> {
    write_summary(&write_config(sweep, run)?, summary)
}

/// Writes a run directory's `summary.json` (atomically).
pub fn write_summary(run: &RunDir, summary: &Summary) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(summary).map_err(io::Error::other)?;
    atomic::write(&run.summary(), &bytes)
}

/// A run directory's `summary.json`, when it has a readable one.
pub fn read_summary(run: &RunDir) -> Option<Summary> {
    serde_json::from_slice(&fs::read(run.summary()).ok()?).ok()
}

/// A metric as people read it: 4 significant digits.
pub fn short(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    if (-3..6).contains(&magnitude) {
        let decimals = (3 - magnitude).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

/// The process's peak resident memory, where the platform reports it (see
/// [`crate::train::memory::process_peak`]).
pub fn peak_memory_bytes() -> Option<u64> {
    crate::train::memory::process_peak()
}
