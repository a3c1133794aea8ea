//! Runs as processes (`xp exec`): `--jobs` gives the same bits as one at a time, a crashed run
//! process fails only its run, killing `xp run` with SIGKILL leaves no run process behind, and
//! `xp status` reads a sweep.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{
    current_sweep, experiment_dir, stderr, stdout, succeeded, timeless_metrics, xp,
};

const SWEEP: &str = r#"experiment "par" {
    model "llama" { layers 1; heads 2; dim 32; context 8 }
    data "modular-addition" modulus=13
    train {
        steps 30
        batch-size 16
        optimizer "adamw" lr="{{ lr }}"
        eval every=10
        checkpoint every=10
    }
    sweep {
        grid {
            lr 1e-3 3e-3 1e-2 3e-2
        }
    }
}
"#;

fn case() -> tempfile::TempDir {
    experiment_dir(SWEEP)
}

fn sweep(dir: &Path, runs: &str) -> PathBuf {
    current_sweep(dir, runs, "par")
}

#[test]
fn jobs_2_gives_the_same_bits_as_jobs_1() {
    let dir = case();
    let one = xp(dir.path(), &["run", "e.kdl", "--runs-dir", "one", "-q"]);
    succeeded(&one);
    let two = xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "two", "-q", "--jobs", "2"],
    );
    succeeded(&two);
    let (a, b) = (sweep(dir.path(), "one"), sweep(dir.path(), "two"));
    for name in ["lr=0.001", "lr=0.003", "lr=0.01", "lr=0.03"] {
        assert_eq!(
            timeless_metrics(&a.join(name)),
            timeless_metrics(&b.join(name)),
            "{name}"
        );
        assert_eq!(
            std::fs::read(a.join(name).join("model.safetensors")).unwrap(),
            std::fs::read(b.join(name).join("model.safetensors")).unwrap(),
            "{name}"
        );
    }
    let results = std::fs::read_to_string(b.join("results.csv")).unwrap();
    assert_eq!(results.lines().count(), 5, "{results}");
    // Each of the 2 runs at once gets its share of the cores.
    let cores = std::thread::available_parallelism().unwrap().get();
    let log = std::fs::read_to_string(b.join("lr=0.01/train.log")).unwrap();
    let threads = match (cores / 2).max(1) {
        1 => "1 thread\n".to_owned(),
        n => format!("{n} threads\n"),
    };
    assert!(log.contains(&threads), "{log}");
}

/// A batch of 24 × 64 tokens trains as 3 shards: on 1 thread one after the other, on 2 two at
/// once. The run's metrics and weights are the same bits either way.
#[test]
fn the_thread_count_does_not_change_a_sharded_run() {
    let experiment = |cpus: usize| {
        format!(
            r#"experiment "shards" {{
    resources {{ cpus {cpus}; }}
    model "llama" {{ layers 2; heads 4; dim 32; hidden 64; context 64 }}
    data "copy" length=32 vocab=16 samples=96
    train {{
        steps 6
        batch-size 24
        optimizer "adamw" lr=1e-2
        eval every=3
    }}
}}
"#
        )
    };
    let dir = experiment_dir(&experiment(1));
    let out = xp(dir.path(), &["run", "e.kdl", "--runs-dir", "one", "-q"]);
    succeeded(&out);
    std::fs::write(dir.path().join("e.kdl"), experiment(2)).unwrap();
    let out = xp(dir.path(), &["run", "e.kdl", "--runs-dir", "two", "-q"]);
    succeeded(&out);
    let run = |runs| {
        let sweep = current_sweep(dir.path(), runs, "shards");
        let names: Vec<_> = std::fs::read_dir(&sweep)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("metrics.jsonl").exists())
            .map(|e| e.path())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        names[0].clone()
    };
    let (one, two) = (run("one"), run("two"));
    for (dir, threads) in [(&one, ", 1 thread\n"), (&two, ", 2 threads\n")] {
        let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
        assert!(log.contains(threads), "{log}");
    }
    let metrics = timeless_metrics(&one);
    assert!(
        metrics.iter().any(|m| m.get("val/loss").is_some()),
        "{metrics:?}"
    );
    assert_eq!(metrics, timeless_metrics(&two));
    assert_eq!(
        std::fs::read(one.join("model.safetensors")).unwrap(),
        std::fs::read(two.join("model.safetensors")).unwrap()
    );
}

#[test]
fn a_crashed_run_process_fails_only_its_run() {
    let dir = case();
    let out = Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(["run", "e.kdl", "--runs-dir", "runs", "-q", "--jobs", "2"])
        .current_dir(dir.path())
        .env("XP_FAULT_ABORT", "lr=0.003")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = sweep(dir.path(), "runs");
    let summary = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(s.join(name).join("summary.json")).unwrap()).unwrap()
    };
    assert_eq!(summary("lr=0.003")["status"], "failed");
    let reason = summary("lr=0.003")["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("SIGABRT"), "{reason}");
    for name in ["lr=0.001", "lr=0.01", "lr=0.03"] {
        assert_eq!(summary(name)["status"], "completed", "{name}");
    }
    // The run process's own words reach the orchestrator's stderr, named.
    let stderr = stderr(&out);
    assert!(stderr.contains("lr=0.003: injected abort"), "{stderr}");
    assert!(stdout(&out).contains("1 failed: lr=0.003"));
}

#[test]
fn killing_xp_run_with_sigkill_leaves_no_run_process() {
    let dir = case();
    let fault = dir.path().join("fault");
    std::fs::create_dir(&fault).unwrap();
    let mut parent = Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(["run", "e.kdl", "--runs-dir", "runs", "-q"])
        .current_dir(dir.path())
        .env("XP_FAULT_PAUSE", "eval#2@lr=0.003")
        .env("XP_FAULT_DIR", &fault)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = fault.join("eval.reached");
    let start = Instant::now();
    while !marker.exists() {
        assert!(parent.try_wait().unwrap().is_none(), "xp ended early");
        assert!(start.elapsed() < Duration::from_secs(60), "never paused");
        std::thread::sleep(Duration::from_millis(10));
    }
    let child: u32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(child, parent.id(), "the run trains in its own process");
    let state = |run: &str| {
        let out = xp(dir.path(), &["status", "runs/par"]);
        succeeded(&out);
        let text = stdout(&out);
        let line = text
            .lines()
            .find(|l| l.starts_with(run))
            .unwrap_or_else(|| panic!("{run} not in:\n{text}"))
            .to_owned();
        line.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(state("lr=0.003"), "running");
    parent.kill().unwrap();
    parent.wait().unwrap();
    // Its owner gone, the run reads as interrupted: for xp status, and for xp compare, whose
    // --watch ends instead of polling forever.
    assert_eq!(state("lr=0.003"), "interrupted");
    let mut watch = Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(["compare", "runs/par", "--watch", "--interval", "0.1"])
        .args(["--format", "json"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while watch.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            watch.kill().unwrap();
            panic!("xp compare --watch waits for a run whose xp run was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut shown = String::new();
    std::io::Read::read_to_string(&mut watch.stdout.take().unwrap(), &mut shown).unwrap();
    assert!(shown.contains("interrupted"), "{shown}");
    // The run process dies with its parent (it is no longer there, or a zombie being reaped).
    let start = Instant::now();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{child}/stat"));
        let gone = match &state {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        };
        if gone {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the run process {child} outlived `xp run`"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // And the sweep resumes: the killed run continues from its checkpoint.
    std::fs::remove_file(&marker).unwrap();
    let out = xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "runs", "-q", "--resume"],
    );
    succeeded(&out);
    let log =
        std::fs::read_to_string(sweep(dir.path(), "runs").join("lr=0.003/train.log")).unwrap();
    assert!(
        log.contains("resumed from the checkpoint of step 10"),
        "{log}"
    );
}

#[test]
fn status_shows_each_runs_state_and_exec_refuses_bad_input() {
    let dir = case();
    let out = xp(
        dir.path(),
        &[
            "run",
            "e.kdl",
            "--runs-dir",
            "runs",
            "-q",
            "--only",
            "lr=0.01",
        ],
    );
    succeeded(&out);
    let s = sweep(dir.path(), "runs");
    // An experiment's directory means its current sweep.
    let out = xp(dir.path(), &["status", "runs/par"]);
    succeeded(&out);
    let text = stdout(&out);
    assert!(text.contains("lr=0.01  completed  30/30"), "{text}");
    assert!(text.contains("1 completed"), "{text}");

    let out = xp(dir.path(), &["status", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`nowhere` does not exist"));
    let out = xp(dir.path(), &["exec", s.to_str().unwrap(), "--index", "7"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("has 1 runs; there is no run 7"));
    std::fs::write(s.join("plan.json"), "{").unwrap();
    let out = xp(dir.path(), &["exec", s.to_str().unwrap(), "--index", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = xp(dir.path(), &["run", "e.kdl", "--jobs", "0"]);
    assert_eq!(out.status.code(), Some(2));
    // Options for the other launcher are refused, not ignored.
    let out = xp(dir.path(), &["run", "e.kdl", "--wait"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--wait follows a Slurm job"),
        "{}",
        stderr(&out)
    );
    let out = xp(
        dir.path(),
        &["run", "e.kdl", "--launcher", "slurm", "--fail-fast"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--fail-fast stops a local sweep"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn checkpoints_do_not_inflate_the_recorded_training_time() {
    let dir = case();
    let started = Instant::now();
    let out = xp(
        dir.path(),
        &[
            "run",
            "e.kdl",
            "--runs-dir",
            "runs",
            "-q",
            "--only",
            "lr=0.01",
            "--set",
            "train.checkpoint.every=1",
            "--set",
            "train.log.every=1",
        ],
    );
    let wall = started.elapsed().as_secs_f64();
    succeeded(&out);
    let run = sweep(dir.path(), "runs").join("lr=0.01");
    let times: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["time_s"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(times.len(), 30);
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The training time is part of the process's: with a checkpoint every step, counting the
    // time before each checkpoint again would make it many times longer.
    assert!(times[29] <= wall, "{} s recorded in {wall} s", times[29]);
}
