//! The record stage: the sweep and run directories of DESIGN.md §5. Run output is written as it
//! happens (metrics.jsonl appended and flushed a line at a time, train.log), and every file that
//! others read (summary, results, plan, config, model) is replaced atomically.

pub mod atomic;
pub mod results;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::{Plan, PlannedRun, value_json};
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

/// One run's directory; also the sink that writes its metrics.jsonl and train.log.
pub struct RunDir {
    pub path: PathBuf,
    metrics: BufWriter<File>,
    log: BufWriter<File>,
}

impl RunDir {
    /// Creates `<sweep>/<run-name>/` with its resolved config.
    pub fn create(sweep: &SweepDir, run: &PlannedRun) -> io::Result<RunDir> {
        let path = sweep.path.join(&run.name);
        fs::create_dir_all(&path)?;
        atomic::write(&path.join("config.kdl"), run.config_kdl.as_bytes())?;
        let config = serde_json::to_vec_pretty(&run.config).map_err(io::Error::other)?;
        atomic::write(&path.join("config.json"), &config)?;
        let append = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path.join(name))
        };
        Ok(RunDir {
            metrics: BufWriter::new(append("metrics.jsonl")?),
            log: BufWriter::new(append("train.log")?),
            path,
        })
    }

    pub fn write_summary(&self, summary: &Summary) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(summary).map_err(io::Error::other)?;
        atomic::write(&self.path.join("summary.json"), &bytes)
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
            Event::Start { total_steps, steps_per_epoch, params, trainable } => self.log(&format!(
                "training: {total_steps} steps ({steps_per_epoch} per epoch), {params} parameters ({trainable} trainable)"
            )),
            Event::Metrics { step, epoch, time_s, metrics } => {
                let mut line = serde_json::Map::new();
                line.insert("step".into(), (*step).into());
                line.insert("epoch".into(), serde_json::Value::from(*epoch));
                line.insert("time_s".into(), serde_json::Value::from(*time_s));
                for (k, v) in metrics.iter() {
                    line.insert(k.clone(), if v.is_finite() { serde_json::Value::from(*v) } else { serde_json::Value::Null });
                }
                serde_json::to_writer(&mut self.metrics, &line).map_err(io::Error::other)?;
                self.metrics.write_all(b"\n")?;
                self.metrics.flush()?;
                let text: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={}", short(*v))).collect();
                self.log(&format!("step {step} epoch {epoch:.2} {}", text.join(" ")))
            }
            Event::EarlyStop { step, reason } => self.log(&format!("early stop at step {step}: {reason}")),
        }
    }
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
