//! The record stage: the sweep and run directories of DESIGN.md §5. Run output is written as it
//! happens (metrics.jsonl appended and flushed a line at a time, train.log), and every file that
//! others read (summary, results, plan, config, model) is replaced atomically.

pub mod atomic;
pub mod checkpoint;
pub mod results;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::front::plan::{Plan, PlannedRun, value_json};
use crate::train::{Event, Sink};

/// One invocation of `xp run` for one experiment: `runs/<experiment>/<YYYYMMDD-HHMMSS>/`.
pub struct SweepDir {
    pub path: PathBuf,
}

impl SweepDir {
    /// Creates a new sweep directory (a suffix keeps two sweeps in one second apart), writes the
    /// experiment source and the plan, and points `current` at it.
    pub fn create(runs_dir: &Path, plan: &Plan, source: &str) -> io::Result<SweepDir> {
        let base = runs_dir.join(&plan.experiment);
        fs::create_dir_all(&base)?;
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
        let mut path = base.join(&stamp);
        let mut n = 1;
        loop {
            match fs::create_dir(&path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    n += 1;
                    path = base.join(format!("{stamp}-{n}"));
                }
                Err(e) => return Err(e),
            }
        }
        atomic::write(&path.join("experiment.kdl"), source.as_bytes())?;
        let plan_json = serde_json::to_vec_pretty(plan).map_err(io::Error::other)?;
        atomic::write(&path.join("plan.json"), &plan_json)?;
        if let Some(name) = path.file_name() {
            atomic::symlink(Path::new(name), &base.join("current"))?;
        }
        Ok(SweepDir { path })
    }
}

/// Why a sweep directory could not be locked.
#[derive(Debug)]
pub enum LockError {
    /// Another live process holds it.
    Held(u32),
    Io(io::Error),
}

/// Holds a sweep directory's `.lock` while it lives.
pub struct Lock {
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl SweepDir {
    /// Takes the sweep's lock: one xp process writes a sweep directory at a time. A lock left
    /// by a process that no longer exists is taken over.
    pub fn lock(&self) -> Result<Lock, LockError> {
        let path = self.path.join(".lock");
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id()).map_err(LockError::Io)?;
                    f.sync_all().map_err(LockError::Io)?;
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if pid != std::process::id() && alive(pid) => {
                            return Err(LockError::Held(pid));
                        }
                        _ => {
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(LockError::Io(e)),
            }
        }
        Err(LockError::Io(io::Error::other(
            "the lock keeps changing hands",
        )))
    }
}

/// Whether a process is running (Linux: its /proc entry, not a zombie awaiting its parent).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `pid (name) S …`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_none_or(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The state of a run, as `summary.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pending,
    Running,
    Completed,
    Failed,
    Diverged,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Diverged => "diverged",
            Status::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Best {
    pub value: f64,
    pub step: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParamCounts {
    pub total: usize,
    pub trainable: usize,
}

/// `summary.json`: a run's status and final/best metrics (DESIGN.md §5).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub id: String,
    pub experiment: String,
    pub status: Status,
    pub reason: Option<String>,
    pub axes: serde_json::Map<String, serde_json::Value>,
    pub seed: u64,
    pub steps: usize,
    #[serde(rename = "final")]
    pub last: BTreeMap<String, f64>,
    pub best: BTreeMap<String, Best>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub wall_s: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub peak_memory_bytes: Option<u64>,
    pub device: String,
    pub precision: String,
    pub params: Option<ParamCounts>,
    pub xp_version: String,
}

impl Summary {
    pub fn new(experiment: &str, run: &PlannedRun, device: &str, precision: &str) -> Self {
        Summary {
            name: run.name.clone(),
            id: run.id.clone(),
            experiment: experiment.to_owned(),
            status: Status::Pending,
            reason: None,
            axes: run
                .axes
                .iter()
                .map(|(k, v)| (k.clone(), value_json(v)))
                .collect(),
            seed: run.seed,
            steps: 0,
            last: BTreeMap::new(),
            best: BTreeMap::new(),
            started_at: None,
            finished_at: None,
            wall_s: None,
            tokens_per_s: None,
            peak_memory_bytes: None,
            device: device.to_owned(),
            precision: precision.to_owned(),
            params: None,
            xp_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Creates `<sweep>/<run-name>/` with the run's resolved config (`config.kdl`, `config.json`).
/// A run read back from `plan.json` has no canonical KDL: its `config.kdl` is left as written
/// when the sweep was planned.
pub fn write_config(sweep: &SweepDir, run: &PlannedRun) -> io::Result<PathBuf> {
    let path = sweep.path.join(&run.name);
    fs::create_dir_all(&path)?;
    if !run.config_kdl.is_empty() {
        atomic::write(&path.join("config.kdl"), run.config_kdl.as_bytes())?;
    }
    let config = serde_json::to_vec_pretty(&run.config).map_err(io::Error::other)?;
    atomic::write(&path.join("config.json"), &config)?;
    Ok(path)
}

/// Gets a run's directory ready for a process that trains it: its config and its summary as
/// the sweep sees it before the run starts.
pub fn ready_run_dir(sweep: &SweepDir, run: &PlannedRun, summary: &Summary) -> io::Result<()> {
    write_summary(&write_config(sweep, run)?, summary)
}

/// Writes a run directory's `summary.json` (atomically).
pub fn write_summary(run_dir: &Path, summary: &Summary) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(summary).map_err(io::Error::other)?;
    atomic::write(&run_dir.join("summary.json"), &bytes)
}

/// One run's directory; also the sink that writes its metrics.jsonl, train.log and checkpoints.
pub struct RunDir {
    pub path: PathBuf,
    metrics: BufWriter<File>,
    log: BufWriter<File>,
    /// Lines in metrics.jsonl so far (checkpoints record it, so a resume can cut back to it).
    metrics_lines: usize,
    keep: usize,
}

impl RunDir {
    /// Creates `<sweep>/<run-name>/` with its resolved config, or opens it again to continue a
    /// run, with metrics.jsonl cut back to its first `keep_lines` lines.
    pub fn open(sweep: &SweepDir, run: &PlannedRun, keep_lines: usize) -> io::Result<RunDir> {
        let path = sweep.path.join(&run.name);
        if !run.config_kdl.is_empty() || !path.join("config.kdl").exists() {
            write_config(sweep, run)?;
        }
        let metrics_path = path.join("metrics.jsonl");
        let kept: Vec<String> = match fs::read_to_string(&metrics_path) {
            Ok(text) => text
                .lines()
                .take(keep_lines)
                .map(|l| format!("{l}\n"))
                .collect(),
            Err(_) => Vec::new(),
        };
        atomic::write(&metrics_path, kept.concat().as_bytes())?;
        let append = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path.join(name))
        };
        let keep = run.config.train.checkpoint.map_or(1, |c| c.keep);
        Ok(RunDir {
            metrics: BufWriter::new(append("metrics.jsonl")?),
            log: BufWriter::new(append("train.log")?),
            metrics_lines: kept.len(),
            keep,
            path,
        })
    }

    pub fn write_summary(&self, summary: &Summary) -> io::Result<()> {
        write_summary(&self.path, summary)
    }

    /// A timestamped line in train.log.
    pub fn log(&mut self, line: &str) -> io::Result<()> {
        let now = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.3f%:z");
        writeln!(self.log, "{now} {line}")?;
        self.log.flush()
    }
}

impl Sink for RunDir {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        match event {
            Event::Start {
                total_steps,
                steps_per_epoch,
                params,
                trainable,
                resumed_from,
            } => {
                if let Some(step) = resumed_from {
                    self.log(&format!("resumed from the checkpoint of step {step}"))?;
                }
                self.log(&format!("training: {total_steps} steps ({steps_per_epoch} per epoch), {params} parameters ({trainable} trainable)"))
            }
            Event::Metrics {
                step,
                epoch,
                time_s,
                metrics,
            } => {
                let mut line = serde_json::Map::new();
                line.insert("step".into(), (*step).into());
                line.insert("epoch".into(), serde_json::Value::from(*epoch));
                line.insert("time_s".into(), serde_json::Value::from(*time_s));
                for (k, v) in metrics.iter() {
                    line.insert(
                        k.clone(),
                        if v.is_finite() {
                            serde_json::Value::from(*v)
                        } else {
                            serde_json::Value::Null
                        },
                    );
                }
                serde_json::to_writer(&mut self.metrics, &line).map_err(io::Error::other)?;
                self.metrics.write_all(b"\n")?;
                self.metrics.flush()?;
                self.metrics_lines += 1;
                let text: Vec<String> = metrics
                    .iter()
                    .map(|(k, v)| format!("{k}={}", short(*v)))
                    .collect();
                self.log(&format!("step {step} epoch {epoch:.2} {}", text.join(" ")))
            }
            Event::Evaluating { .. } => Ok(()),
            Event::EarlyStop { step, reason } => {
                self.log(&format!("early stop at step {step}: {reason}"))
            }
            Event::Checkpoint(cp) => {
                let mut state = cp.state.clone();
                state.metrics_lines = self.metrics_lines;
                let written = checkpoint::write(
                    &self.path,
                    &crate::train::Checkpoint {
                        state: &state,
                        ..cp.clone()
                    },
                    self.keep,
                )?;
                let name = written
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.log(&format!("checkpoint {name} at step {}", state.step))
            }
        }
    }
}

/// A run directory's `summary.json`, when it has a readable one.
pub fn read_summary(run_dir: &Path) -> Option<Summary> {
    serde_json::from_slice(&fs::read(run_dir.join("summary.json")).ok()?).ok()
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

/// The process's peak resident memory, where the platform reports it.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
