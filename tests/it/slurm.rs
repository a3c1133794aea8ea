//! The Slurm launcher against a real single-node cluster (`.ci/run` starts one with
//! `.ci/slurm-up.sh`; these tests are `#[ignore]`d elsewhere): an array job gives the same
//! results as a local run, and a task cancelled with `scancel` is continued by
//! `--resume --launcher slurm`; array tasks prune from the sweep's journal. Without Slurm, a
//! clear error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::support::{
    current_sweep, experiment_dir, stderr, stdout, succeeded, timeless_metrics, xp,
};

const SWEEP: &str = r#"experiment "arr" {
    model "llama" { layers 1; heads 2; dim 32; context 8 }
    data "modular-addition" modulus=13
    train {
        steps 30
        batch-size 16
        optimizer "adamw" lr="{{ lr }}"
        eval every=10
        checkpoint every=10
    }
    resources {
        cpus 1
        time "10:00"
    }
    sweep {
        grid {
            lr 1e-3 1e-2 3e-2
        }
    }
}
"#;

fn sweep(dir: &Path, runs: &str) -> PathBuf {
    current_sweep(dir, runs, "arr")
}

/// Submits the sweep cut to one run (lr=0.001) of `steps` steps: the experiment's directory,
/// the sweep directory and the Slurm job id, which `xp run` prints and records.
fn submit_one_run(steps: usize) -> (tempfile::TempDir, PathBuf, String) {
    let dir = experiment_dir(
        &SWEEP
            .replace("steps 30", &format!("steps {steps}"))
            .replace("lr 1e-3 1e-2 3e-2", "lr 1e-3"),
    );
    let out = xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "runs", "--launcher", "slurm"],
    );
    succeeded(&out);
    let s = sweep(dir.path(), "runs");
    let jobs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.join("slurm/jobs.json")).unwrap()).unwrap();
    let job = jobs[0]["job_id"].as_str().unwrap().to_owned();
    assert!(
        stdout(&out).contains(&format!("job {job}")),
        "{}",
        stdout(&out)
    );
    (dir, s, job)
}

fn status(run: &Path) -> String {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    s["status"].as_str().unwrap().to_owned()
}

#[test]
#[ignore = "needs a Slurm cluster; .ci/run starts one and runs it with --include-ignored"]
fn an_array_job_gives_the_same_results_as_a_local_run() {
    let dir = experiment_dir(SWEEP);
    let local = xp(dir.path(), &["run", "e.kdl", "--runs-dir", "local", "-q"]);
    assert_eq!(local.status.code(), Some(0));
    let out = xp(
        dir.path(),
        &[
            "run",
            "e.kdl",
            "--runs-dir",
            "slurm",
            "--launcher",
            "slurm",
            "--wait",
            "-q",
        ],
    );
    succeeded(&out);
    let text = stdout(&out);
    assert!(text.contains("submitted Slurm job"), "{text}");
    let (a, b) = (sweep(dir.path(), "local"), sweep(dir.path(), "slurm"));
    let script = std::fs::read_to_string(b.join("slurm/submit.sbatch")).unwrap();
    assert!(script.contains("#SBATCH --array=0,1,2\n"), "{script}");
    assert!(script.contains("#SBATCH --cpus-per-task=1\n"), "{script}");
    assert!(script.contains("#SBATCH --time=10:00\n"), "{script}");
    for name in ["lr=0.001", "lr=0.01", "lr=0.03"] {
        assert_eq!(status(&b.join(name)), "completed", "{name}");
        assert_eq!(
            timeless_metrics(&a.join(name)),
            timeless_metrics(&b.join(name)),
            "{name}"
        );
    }
    // Every task's output file is there, and the results table has every run.
    let outputs = std::fs::read_dir(b.join("slurm"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "out")
        })
        .count();
    assert_eq!(outputs, 3);
    let results = std::fs::read_to_string(b.join("results.csv")).unwrap();
    assert_eq!(results.matches(",completed,").count(), 3, "{results}");
    let st = xp(dir.path(), &["status", b.to_str().unwrap()]);
    assert!(stdout(&st).contains("3 completed"), "{}", stdout(&st));
}

#[test]
#[ignore = "needs a Slurm cluster; .ci/run starts one and runs it with --include-ignored"]
fn a_cancelled_task_is_continued_by_resume() {
    let (dir, s, job) = submit_one_run(4000);
    let run = s.join("lr=0.001");
    // Cancel once the run has checkpointed at least once.
    let start = Instant::now();
    while !run.join("checkpoints").exists() || xp::sweep::record::checkpoint::steps(&run).is_empty()
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the task never checkpointed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cancel = Command::new("scancel").arg(&job).status().unwrap();
    assert!(cancel.success());
    let start = Instant::now();
    while !matches!(status(&run).as_str(), "interrupted" | "failed") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            status(&run)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(status(&run), "interrupted");
    // Wait until Slurm has let go of the task.
    let start = Instant::now();
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-j", &job])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&q.stdout).trim().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the task stays queued"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = xp(
        dir.path(),
        &[
            "run",
            "e.kdl",
            "--runs-dir",
            "runs",
            "--launcher",
            "slurm",
            "--resume",
            "--wait",
            "-q",
        ],
    );
    succeeded(&out);
    assert_eq!(status(&run), "completed");
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("resumed from the checkpoint of step"), "{log}");
    let jobs = std::fs::read_to_string(s.join("slurm/jobs.json")).unwrap();
    assert_eq!(jobs.matches("job_id").count(), 2, "{jobs}");
}

/// Array tasks prune from the sweep's journal as local runs do: every run ends completed or
/// pruned (with its reason and checkpoint), the best run completes, and every task recorded
/// its end.
#[test]
#[ignore = "needs a Slurm cluster; .ci/run starts one and runs it with --include-ignored"]
fn array_tasks_prune_from_the_sweeps_journal() {
    let text = super::prune::SWEEP.replace(
        "    sweep {",
        "    resources {\n        cpus 1\n        time \"10:00\"\n    }\n    sweep {",
    );
    let dir = experiment_dir(&text);
    let out = xp(
        dir.path(),
        &[
            "run",
            "e.kdl",
            "--runs-dir",
            "runs",
            "--launcher",
            "slurm",
            "--wait",
            "-q",
        ],
    );
    succeeded(&out);
    let s = current_sweep(dir.path(), "runs", "p");
    let pruned = super::prune::check_pruned(&s);
    let journal = std::fs::read_to_string(s.join("prune.jsonl")).unwrap();
    assert_eq!(journal.matches("\"end\":").count(), 6, "{journal}");
    assert_eq!(journal.matches("\"end\":\"pruned\"").count(), pruned);
    let results = std::fs::read_to_string(s.join("results.csv")).unwrap();
    assert_eq!(results.matches(",pruned,").count(), pruned, "{results}");
    assert_eq!(
        results.matches(",completed,").count(),
        6 - pruned,
        "{results}"
    );
}

#[test]
fn without_sbatch_the_slurm_launcher_says_so() {
    let dir = experiment_dir(SWEEP);
    let out = Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(["run", "e.kdl", "--runs-dir", "runs", "--launcher", "slurm"])
        .current_dir(dir.path())
        .env("XP_SLURM_BIN", dir.path().join("no-slurm-here"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = stderr(&out);
    assert!(stderr.contains("`sbatch` was not found"), "{stderr}");
}

/// What `xp status` makes of the sweep's Slurm record and queue when they are not what it
/// wrote: a fake `squeue` (XP_SLURM_BIN) that lists a task of another job and one out of the
/// plan, one that fails, and an edited jobs.json.
#[test]
fn a_broken_slurm_record_or_queue_is_reported_not_guessed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = experiment_dir(&SWEEP.replace("lr 1e-3 1e-2 3e-2", "lr 1e-3"));
    succeeded(&xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "runs", "-q"],
    ));
    let s = sweep(dir.path(), "runs");
    std::fs::create_dir_all(s.join("slurm")).unwrap();
    std::fs::write(
        s.join("slurm/jobs.json"),
        r#"[{"job_id": "41", "runs": [0], "submitted_at": "2026-11-21T00:00:00+00:00"}]"#,
    )
    .unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let squeue = bin.join("squeue");
    let status = |script: &str| {
        std::fs::write(&squeue, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&squeue, std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_xp"))
            .args(["status", s.to_str().unwrap()])
            .env("XP_SLURM_BIN", &bin)
            .output()
            .unwrap()
    };
    // Another job's task 0 and this job's task 99 are not this sweep's runs.
    let out = status("echo '7 0 RUNNING'; echo '41 99 RUNNING'");
    succeeded(&out);
    assert!(
        stdout(&out).contains("lr=0.001  completed"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("RUNNING"), "{}", stdout(&out));
    // A queue that cannot be read is said, not taken for an empty one.
    let out =
        status("echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1");
    succeeded(&out);
    assert!(
        stderr(&out).contains("Slurm's queue could not be read")
            && stderr(&out).contains("Unable to contact"),
        "{}",
        stderr(&out)
    );
    std::fs::write(s.join("slurm/jobs.json"), "[{").unwrap();
    let out = status("exit 0");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("jobs.json cannot be read"),
        "{}",
        stderr(&out)
    );
}

#[test]
#[ignore = "needs a Slurm cluster; .ci/run starts one and runs it with --include-ignored"]
fn a_job_sbatch_rejects_is_a_clear_error_and_nothing_is_queued() {
    let dir = experiment_dir(&SWEEP.replace(
        "time \"10:00\"",
        "time \"10:00\"\n        partition \"no-such-partition\"",
    ));
    let out = xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "runs", "--launcher", "slurm"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = stderr(&out);
    assert!(
        stderr.contains("sbatch rejected the job") && stderr.contains("nvalid partition"),
        "{stderr}"
    );
    let s = sweep(dir.path(), "runs");
    assert!(!s.join("slurm/jobs.json").exists());
}

#[test]
#[ignore = "needs a Slurm cluster; .ci/run starts one and runs it with --include-ignored"]
fn the_time_limit_warning_checkpoints_requeues_and_the_run_completes() {
    let (_dir, s, job) = submit_one_run(3000);
    let run = s.join("lr=0.001");
    let start = Instant::now();
    while xp::sweep::record::checkpoint::steps(&run).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the task never checkpointed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // What Slurm sends two minutes before the time limit (`--signal=B:USR1@120`).
    let warned = Command::new("scancel")
        .args(["--signal=USR1", "--batch", &job])
        .status()
        .unwrap();
    assert!(warned.success());
    let start = Instant::now();
    while status(&run) != "completed" {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "the requeued run did not complete: {}",
            status(&run)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("resumed from the checkpoint of step"), "{log}");
    let output: String = std::fs::read_dir(s.join("slurm"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "out"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(output.contains("requeued Slurm job"), "{output}");
}
