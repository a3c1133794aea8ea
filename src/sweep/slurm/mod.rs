//! The Slurm launcher: a sweep's runs as one job array. `submit` writes
//! `slurm/submit.sbatch` in the sweep directory (an array over the runs to train, the
//! experiment's `resources`, one output file per task), submits it with `sbatch`, and records
//! the job in `slurm/jobs.json`. Each task runs `xp exec` for its run on the shared sweep
//! directory. Slurm is the scheduler: xp only reads its queue (`squeue`).

pub(crate) mod launch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::spec::Resources;
use crate::sweep::record::{Status, Summary, SweepDir, atomic, summary};

/// One submitted array job, as `slurm/jobs.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    /// The plan indices of its tasks (the array's task ids).
    pub runs: Vec<usize>,
    pub submitted_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(
        "`{program}` was not found: --launcher slurm needs the Slurm client tools on PATH (sbatch, squeue)"
    )]
    Missing { program: String },
    #[error("sbatch rejected the job ({script}): {message}")]
    Rejected { script: String, message: String },
    #[error(
        "{path} cannot be read as the sweep's record of Slurm jobs ({message}); restore it, or remove it to forget the jobs"
    )]
    BadRecord { path: String, message: String },
    #[error("Slurm's queue could not be read: `squeue` failed: {message}")]
    Queue { message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// How the array is throttled and what each task runs.
pub struct Submission<'a> {
    pub experiment: &'a str,
    /// Plan indices of the runs to train.
    pub runs: &'a [usize],
    /// At most this many tasks at once (`%M`); `None`: as Slurm allows.
    pub throttle: Option<usize>,
    pub resources: &'a Resources,
    /// The `xp` binary the tasks run; must be reachable from the compute nodes.
    pub exe: &'a Path,
    pub device: Option<&'a str>,
}

/// The batch script of an array job over `runs`.
pub fn script(sweep: &SweepDir, s: &Submission) -> String {
    let mut lines = vec!["#!/bin/bash".to_owned()];
    let mut option = |o: String| lines.push(format!("#SBATCH {o}"));
    option(format!("--job-name=xp-{}", s.experiment));
    let array: Vec<String> = s.runs.iter().map(|i| i.to_string()).collect();
    let throttle = s.throttle.map_or(String::new(), |m| format!("%{m}"));
    option(format!("--array={}{throttle}", array.join(",")));
    option(format!("--output={}", sweep.slurm_output().display()));
    option("--open-mode=append".into());
    // Preemption and node failures requeue the task; it continues from its checkpoint.
    option("--requeue".into());
    if let Some(time) = &s.resources.time {
        option(format!("--time={time}"));
        // Two minutes before the limit the run checkpoints and requeues itself.
        option("--signal=B:USR1@120".into());
    }
    if let Some(cpus) = s.resources.cpus {
        option(format!("--cpus-per-task={cpus}"));
    }
    if let Some(gpus) = s.resources.gpus.filter(|&g| g > 0) {
        option(format!("--gres=gpu:{gpus}"));
    }
    if let Some(memory) = &s.resources.memory {
        option(format!("--mem={memory}"));
    }
    if let Some(partition) = &s.resources.partition {
        option(format!("--partition={partition}"));
    }
    for extra in &s.resources.slurm {
        option(extra.clone());
    }
    lines.push(String::new());
    lines.push(
        "# One run of the sweep per array task; the task id is the run's index in plan.json."
            .into(),
    );
    lines.push("export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"".into());
    let device = s
        .device
        .map_or(String::new(), |d| format!(" --device {}", quote(d)));
    lines.push(format!(
        "exec {} exec {} --index \"$SLURM_ARRAY_TASK_ID\" --update-results{device}",
        quote(&s.exe.display().to_string()),
        quote(&sweep.path.display().to_string()),
    ));
    lines.join("\n") + "\n"
}

/// Single-quotes a word for bash.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Writes the script and submits it; returns the recorded job.
pub fn submit(sweep: &SweepDir, s: &Submission) -> Result<Job, SlurmError> {
    std::fs::create_dir_all(sweep.slurm()).map_err(atomic::at(&sweep.slurm()))?;
    let path = sweep.slurm_script();
    atomic::write(&path, script(sweep, s).as_bytes())?;
    let output = Command::new(program("sbatch"))
        .arg("--parsable")
        .arg(&path)
        .current_dir(&sweep.path)
        .output()
        .map_err(|e| missing("sbatch", e))?;
    let text = String::from_utf8_lossy(&output.stdout);
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let job_id = text.trim().split(';').next().unwrap_or("").to_owned();
    if !output.status.success() || job_id.is_empty() || !job_id.bytes().all(|b| b.is_ascii_digit())
    {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(SlurmError::Rejected {
            script: path.display().to_string(),
            message: if stderr.trim().is_empty() {
                format!("{} (output: {})", output.status, text.trim())
            } else {
                stderr.trim().to_owned()
            },
        });
    }
    let job = Job {
        job_id,
        runs: s.runs.to_vec(),
        submitted_at: summary::now(),
    };
    let mut jobs = jobs(sweep)?;
    jobs.push(job.clone());
    atomic::write(
        &sweep.slurm_jobs(),
        &serde_json::to_vec_pretty(&jobs).map_err(std::io::Error::other)?,
    )?;
    Ok(job)
}

/// The jobs submitted for a sweep, oldest first: none without `slurm/jobs.json`, an error when
/// that file cannot be read.
pub fn jobs(sweep: &SweepDir) -> Result<Vec<Job>, SlurmError> {
    let path = sweep.slurm_jobs();
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e.into()),
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SlurmError::BadRecord {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

/// The Slurm state of each run of the sweep still in the queue (`PENDING`, `RUNNING`, …),
/// by plan index; `Ok(empty)` when the sweep has no jobs. Only the tasks of the sweep's own
/// jobs count; a `squeue` that fails (other than for jobs Slurm has forgotten) is an error,
/// never an empty queue.
pub fn queued(sweep: &SweepDir) -> Result<BTreeMap<usize, String>, SlurmError> {
    let mut states = BTreeMap::new();
    let jobs = jobs(sweep)?;
    if jobs.is_empty() {
        return Ok(states);
    }
    let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    let output = Command::new(program("squeue"))
        .args(["-h", "-r", "-o", "%F %K %T", "-j", &ids.join(",")])
        .output()
        .map_err(|e| missing("squeue", e))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // squeue exits non-zero with "Invalid job id specified" when every listed job has left
        // the queue and Slurm has forgotten it.
        if !stderr.contains("Invalid job id") {
            return Err(SlurmError::Queue {
                message: match stderr.trim() {
                    "" => output.status.to_string(),
                    message => message.to_owned(),
                },
            });
        }
    }
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(job), Some(task), Some(state)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(index) = task.parse::<usize>() else {
            continue;
        };
        if jobs
            .iter()
            .any(|j| j.job_id == job && j.runs.contains(&index))
        {
            states.insert(index, state.to_owned());
        }
    }
    Ok(states)
}

/// Asks Slurm to requeue the task this process runs in (after it checkpointed at the time
/// limit's warning); outside Slurm, nothing.
pub fn requeue_self() {
    let Ok(job) = std::env::var("SLURM_JOB_ID") else {
        return;
    };
    match Command::new(program("scontrol"))
        .args(["requeue", &job])
        .status()
    {
        Ok(s) if s.success() => {
            eprintln!("requeued Slurm job {job}; it continues from its checkpoint")
        }
        Ok(s) => eprintln!(
            "`scontrol requeue {job}` failed ({s}); `xp run --resume --launcher slurm` continues the run"
        ),
        Err(e) => eprintln!("`scontrol requeue {job}` could not run: {e}"),
    }
}

/// A Slurm program, from `XP_SLURM_BIN` when set (tests), else PATH.
fn program(name: &str) -> PathBuf {
    match std::env::var_os("XP_SLURM_BIN") {
        Some(dir) => Path::new(&dir).join(name),
        None => PathBuf::from(name),
    }
}

fn missing(program: &str, e: std::io::Error) -> SlurmError {
    if e.kind() == std::io::ErrorKind::NotFound {
        SlurmError::Missing {
            program: program.to_owned(),
        }
    } else {
        SlurmError::Io(e)
    }
}

/// Whether a summary is final (no task will write it again).
pub fn settled(summary: &Summary) -> bool {
    !matches!(summary.status, Status::Pending | Status::Running)
}
