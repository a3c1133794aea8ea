//! Checkpoints and exact resume: real `xp` processes are killed (SIGKILL) at exact points —
//! reached through the fault-injection hooks of src/fault.rs, never by sleeping — or stopped
//! with SIGINT, and `xp run --resume` must end bit-identical to an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{current_sweep, stderr, stdout, succeeded, timeless_metrics, xp};

const EXPERIMENT: &str = r#"experiment "ck" {
    model "llama" { layers 1; heads 2; dim 32; context 8 }
    data "modular-addition" modulus=13
    train {
        steps 60
        batch-size 16
        optimizer "adamw" lr=3e-3
        schedule "cosine" warmup-steps=5
        eval every=10
        log every=5
        checkpoint every=10 keep=2
        early-stop patience=100
    }
}
"#;

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("e.kdl"), text).unwrap();
        std::fs::create_dir(dir.path().join("fault")).unwrap();
        Case { dir }
    }

    fn command(&self, runs: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_xp"));
        c.args(["run", "e.kdl", "--runs-dir", runs, "-q"])
            .args(extra)
            .current_dir(self.dir.path())
            .env("XP_FAULT_DIR", self.dir.path().join("fault"));
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    }

    fn run(&self, runs: &str, extra: &[&str]) -> std::process::Output {
        self.command(runs, extra).output().unwrap()
    }

    /// Starts a run that stops at `point` and kills it there with SIGKILL.
    fn kill_at(&self, runs: &str, point: &str, env: &[(&str, &str)]) {
        let mut cmd = self.command(runs, &[]);
        cmd.env("XP_FAULT_PAUSE", point).envs(env.iter().copied());
        let mut child = cmd.spawn().unwrap();
        let marker = self
            .dir
            .path()
            .join("fault")
            .join(format!("{}.reached", point.split('#').next().unwrap()));
        wait_for(&mut child, || marker.exists());
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_file(marker).unwrap();
    }

    fn sweep(&self, runs: &str, experiment: &str) -> PathBuf {
        current_sweep(self.dir.path(), runs, experiment)
    }
}

/// Waits (up to a minute) for an observable condition while the child runs.
fn wait_for(child: &mut Child, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "xp ended before reaching the point"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "xp never reached the point"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Wall-clock fields (and measures of the process, such as its peak and resident memory), which differ
/// between any two trainings; everything else must be bit-identical after a resume.
fn timeless(key: &str) -> bool {
    !matches!(
        key,
        "started_at" | "finished_at" | "wall_s" | "tokens_per_s"
    ) && !key.ends_with("_per_s")
        && !key.ends_with("_memory_bytes")
}

/// A summary.json or a results.json row without its wall-clock fields.
fn without_clock(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| timeless(k));
        for inner in o.values_mut() {
            if let Some(inner) = inner.as_object_mut() {
                inner.retain(|k, _| timeless(k));
            }
        }
    }
    v
}

/// A summary without its wall-clock fields, as text (the shortest text that reads back as a
/// float tells any two floats apart).
fn outcome(run: &Path) -> String {
    let text = std::fs::read_to_string(run.join("summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    format!("{:#}", without_clock(v))
}

/// The results tables, row by row, without wall-clock columns.
fn results(sweep: &Path) -> (Vec<Vec<String>>, String) {
    let mut csv = csv::Reader::from_path(sweep.join("results.csv")).unwrap();
    let header: Vec<String> = csv.headers().unwrap().iter().map(str::to_owned).collect();
    let keep: Vec<bool> = header
        .iter()
        .map(|c| timeless(c.rsplit(':').next().unwrap_or(c)))
        .collect();
    let rows = std::iter::once(header.clone())
        .chain(csv.records().map(|r| {
            r.unwrap()
                .iter()
                .map(str::to_owned)
                .collect::<Vec<String>>()
        }))
        .map(|row| {
            row.into_iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c)
                .collect()
        })
        .collect();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("results.json")).unwrap())
            .unwrap();
    let json: Vec<serde_json::Value> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let mut row = row.clone();
            row.as_object_mut()
                .unwrap()
                .retain(|k, _| timeless(k.rsplit(':').next().unwrap_or(k)));
            row
        })
        .collect();
    (rows, format!("{json:?}"))
}

fn assert_identical(case: &Case, interrupted: &str) {
    let (sa, sb) = (case.sweep("reference", "ck"), case.sweep(interrupted, "ck"));
    let (a, b) = (sa.join("run"), sb.join("run"));
    assert_eq!(timeless_metrics(&a), timeless_metrics(&b));
    assert_eq!(outcome(&a), outcome(&b), "summary.json");
    assert_eq!(results(&sa), results(&sb), "results.csv and results.json");
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
}

#[test]
fn killed_at_any_point_a_run_resumes_bit_identically() {
    let case = Case::new(EXPERIMENT);
    assert_eq!(case.run("reference", &[]).status.code(), Some(0));
    // During training (after the checkpoint of step 30, at the evaluation of step 40), during
    // the write of the third checkpoint, and during the second evaluation.
    for (runs, point) in [
        ("training", "eval#4"),
        ("checkpoint", "checkpoint-write#3"),
        ("eval", "eval#2"),
    ] {
        case.kill_at(runs, point, &[]);
        let run = case.sweep(runs, "ck").join("run");
        assert_eq!(summary(&run)["status"], "running", "{point}");
        // No checkpoint looks complete unless it is.
        for (step, dir) in xp::sweep::record::checkpoint::steps(&run) {
            for file in ["model.safetensors", "optimizer.safetensors", "trainer.json"] {
                assert!(
                    dir.join(file).is_file(),
                    "{point}: step-{step} lacks {file}"
                );
            }
        }
        let out = case.run(runs, &["--resume"]);
        assert_eq!(out.status.code(), Some(0), "{point}: {}", stderr(&out));
        assert_identical(&case, runs);
        let log = std::fs::read_to_string(run.join("train.log")).unwrap();
        assert!(
            log.contains("resumed from the checkpoint of step"),
            "{point}: {log}"
        );
    }
}

/// Token-budget batches of variable-length instruction data, accumulated over two
/// micro-batches and logged every step.
const TOKENS_EXPERIMENT: &str = r#"experiment "ck" {
    model "llama" { layers 1; heads 2; dim 32; context 64 }
    data "jsonl" path="data.jsonl"
    train {
        steps 40
        batch-tokens 256
        gradient-accumulation 2
        optimizer "adamw" lr=3e-3
        eval every=10
        log every=1
        checkpoint every=10 keep=2
    }
}
"#;

/// Killed mid-epoch (the epoch is about 11 steps; the last checkpoint is step 20's), a run of
/// token-budget batches resumes bit-identically: the epoch's length-grouped batches are drawn
/// again from the checkpointed generator state.
#[test]
fn token_budget_batches_resume_bit_identically_mid_epoch() {
    let case = Case::new(TOKENS_EXPERIMENT);
    let data = super::batching::variable_length_jsonl(200);
    std::fs::write(case.dir.path().join("data.jsonl"), data).unwrap();
    assert_eq!(case.run("reference", &[]).status.code(), Some(0));
    case.kill_at("training", "eval#3", &[]);
    let out = case.run("training", &["--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_identical(&case, "training");
    let metrics = timeless_metrics(&case.sweep("reference", "ck").join("run"));
    let sizes: Vec<f64> = metrics
        .iter()
        .filter_map(|m| m["train/batch_size"].as_f64())
        .collect();
    assert_eq!(sizes.len(), 40, "every step logs its batch");
    assert!(
        sizes.iter().any(|&s| s != sizes[0]),
        "token budgets vary the examples per step: {sizes:?}"
    );
    for m in &metrics {
        let (Some(tokens), Some(size), Some(padding)) = (
            m["train/tokens"].as_f64(),
            m["train/batch_size"].as_f64(),
            m["train/padding_ratio"].as_f64(),
        ) else {
            continue;
        };
        // Two micro-batches of at most 256 positions each.
        assert!(tokens / (1.0 - padding) <= 512.0 + 1e-6, "{m}");
        assert!(size >= 2.0 && (0.0..1.0).contains(&padding), "{m}");
    }
}

/// A damaged newest checkpoint (truncated, one bit flipped in the weights, a garbage
/// trainer.json) is passed over with a warning in train.log, and the run resumes from the one
/// before it, bit-identically; with every checkpoint damaged the run fails saying so, and
/// metrics.jsonl keeps every line.
#[test]
fn a_damaged_checkpoint_is_passed_over_for_the_newest_valid_one() {
    let case = Case::new(EXPERIMENT);
    assert_eq!(case.run("reference", &[]).status.code(), Some(0));
    type Damage = fn(&Path);
    let truncate: Damage = |step| {
        let model = step.join("model.safetensors");
        let bytes = std::fs::read(&model).unwrap();
        std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    };
    let flip: Damage = |step| {
        let model = step.join("model.safetensors");
        let mut bytes = std::fs::read(&model).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x10;
        std::fs::write(&model, bytes).unwrap();
    };
    let garbage: Damage = |step| std::fs::write(step.join("trainer.json"), "{ garbage").unwrap();
    for (runs, damage) in [
        ("truncated", truncate),
        ("flipped", flip),
        ("garbage", garbage),
    ] {
        // Paused at the evaluation of step 50: the checkpoints of steps 30 and 40 are there.
        case.kill_at(runs, "eval#5", &[]);
        let run = case.sweep(runs, "ck").join("run");
        damage(&run.join("checkpoints/step-40"));
        let out = case.run(runs, &["--resume"]);
        assert_eq!(out.status.code(), Some(0), "{runs}: {}", stderr(&out));
        assert_identical(&case, runs);
        let log = std::fs::read_to_string(run.join("train.log")).unwrap();
        assert!(
            log.contains("warning: checkpoint") && log.contains("step-40"),
            "{runs}: {log}"
        );
        assert!(
            log.contains("resumed from the checkpoint of step 30"),
            "{runs}: {log}"
        );
    }
    case.kill_at("none", "eval#5", &[]);
    let run = case.sweep("none", "ck").join("run");
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    truncate(&run.join("checkpoints/step-40"));
    garbage(&run.join("checkpoints/step-30"));
    let out = case.run("none", &["--resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = summary(&run);
    assert_eq!(s["status"], "failed");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("no usable checkpoint to resume from"),
        "{s}"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("metrics.jsonl")).unwrap(),
        lines
    );
}

#[test]
fn checkpoints_keep_the_newest_and_the_best() {
    let case = Case::new(EXPERIMENT);
    let out = case.run("reference", &[]);
    succeeded(&out);
    let run = case.sweep("reference", "ck").join("run");
    let steps: Vec<usize> = xp::sweep::record::checkpoint::steps(&run)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [40, 50]);
    let best: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints/best/trainer.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(best["step"], summary(&run)["best"]["val/loss"]["step"]);
    let tensors = candle_core::safetensors::load(
        run.join("checkpoints/step-50/model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(tensors.contains_key("model.layers.0.mlp.gate_proj.weight"));
    let optimizer = candle_core::safetensors::load(
        run.join("checkpoints/step-50/optimizer.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(optimizer.keys().any(|k| k.ends_with(".exp_avg_sq")));
}

#[test]
fn ctrl_c_checkpoints_marks_interrupted_and_resume_finishes() {
    let slow = EXPERIMENT
        .replace("steps 60", "steps 3000")
        .replace("checkpoint every=10 keep=2", "checkpoint every=1000 keep=1");
    let case = Case::new(&slow);
    let flags = ["--only", "r*", "--jobs", "1"];
    assert_eq!(case.run("reference", &flags).status.code(), Some(0));
    let mut child = case.command("stopped", &flags).spawn().unwrap();
    let runs = case.dir.path().join("stopped");
    wait_for(&mut child, || {
        std::fs::read_to_string(runs.join("ck/current/run/metrics.jsonl"))
            .is_ok_and(|t| t.lines().count() >= 3)
    });
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    let run = case.sweep("stopped", "ck").join("run");
    let s = summary(&run);
    assert_eq!(s["status"], "interrupted");
    let stopped_at = s["steps"].as_u64().unwrap();
    assert!(stopped_at < 3000);
    assert_eq!(
        xp::sweep::record::checkpoint::steps(&run)
            .last()
            .map(|(s, _)| *s as u64),
        Some(stopped_at)
    );
    // The hint is the exact command: following it literally resumes this sweep, with every
    // flag that chose its runs and where they are.
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let hint = stderr
        .lines()
        .find_map(|l| l.strip_prefix("interrupted: `"))
        .and_then(|l| l.split_once('`'))
        .map(|(command, _)| command.to_owned())
        .unwrap_or_else(|| panic!("no resume hint in:\n{stderr}"));
    assert_eq!(
        hint,
        "xp run e.kdl --only 'r*' --runs-dir stopped --jobs 1 --resume"
    );
    let words: Vec<String> = hint
        .split_whitespace()
        .skip(1)
        .map(|w| w.trim_matches('\'').to_owned())
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(&words)
        .current_dir(case.dir.path())
        .output()
        .unwrap();
    succeeded(&out);
    assert_identical(&case, "stopped");
}

#[test]
fn a_sweep_survives_a_panic_a_divergence_and_a_kill() {
    let case = Case::new(
        r#"experiment "mixed" {
    model "mlp" { hidden 8 }
    data "regression" features=4 samples=256
    train {
        steps 40
        batch-size 16
        optimizer "sgd" lr="{{ lr }}"
        eval every=10
        checkpoint every=10
    }
    sweep {
        grid {
            lr 0.01 0.02 1e6 0.03
        }
    }
}
"#,
    );
    // lr=0.02 panics; lr=1e6 diverges; the sweep is killed during lr=0.03's third eval.
    case.kill_at("runs", "eval#3@lr=0.03", &[("XP_FAULT_PANIC", "lr=0.02")]);
    let sweep = case.sweep("runs", "mixed");
    let status = |name: &str| {
        summary(&sweep.join(name))["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        [
            status("lr=0.01"),
            status("lr=0.02"),
            status("lr=1000000.0"),
            status("lr=0.03")
        ],
        ["completed", "failed", "diverged", "running"]
    );
    assert!(
        summary(&sweep.join("lr=0.02"))["reason"]
            .as_str()
            .unwrap()
            .contains("injected panic")
    );
    let first = std::fs::read(sweep.join("lr=0.01/summary.json")).unwrap();
    let out = case.run("runs", &["--resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        [
            status("lr=0.01"),
            status("lr=0.02"),
            status("lr=1000000.0"),
            status("lr=0.03")
        ],
        ["completed", "failed", "diverged", "completed"]
    );
    // The completed run was not touched; the failed ones are retried only when asked.
    assert_eq!(
        std::fs::read(sweep.join("lr=0.01/summary.json")).unwrap(),
        first
    );
    let out = case.run("runs", &["--resume", "--retry-failed"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(status("lr=0.02"), "completed");
    assert_eq!(status("lr=1000000.0"), "diverged");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("results.json")).unwrap())
            .unwrap();
    let statuses: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["completed", "completed", "diverged", "completed"]
    );
}

#[test]
fn resume_refuses_a_changed_plan_and_a_locked_sweep() {
    let case = Case::new(EXPERIMENT);
    assert_eq!(case.run("runs", &[]).status.code(), Some(0));
    std::fs::write(
        case.dir.path().join("e.kdl"),
        EXPERIMENT.replace("lr=3e-3", "lr=1e-2"),
    )
    .unwrap();
    let out = case.run("runs", &["--resume"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("changed since the sweep") && err.contains("without --resume"),
        "{err}"
    );
    std::fs::write(case.dir.path().join("e.kdl"), EXPERIMENT).unwrap();
    // Other overrides than the sweep's: refused, naming them, with the command that resumes
    // the sweep as it was.
    let out = case.run("runs", &["--resume", "--set", "train.optimizer.lr=1e-2"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("other overrides: given `--set train.optimizer.lr=1e-2`, the sweep's none")
            && err.contains("`xp run e.kdl --runs-dir runs --resume` resumes the sweep as it was"),
        "{err}"
    );
    let only = ["--only", "r*", "--set", "train.steps=20"];
    assert_eq!(case.run("only", &only).status.code(), Some(0));
    let out = case.run("only", &["--resume", "--set", "train.steps=20"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("the sweep's `--only r*`")
            && err.contains(
                "`xp run e.kdl --set train.steps=20 --only 'r*' --runs-dir only --resume`"
            ),
        "{err}"
    );
    // A live process holds the lock: this test, with its own pid in the file.
    let sweep = case.sweep("runs", "ck");
    let held = std::fs::File::create(sweep.join(".lock")).unwrap();
    held.try_lock().unwrap();
    std::fs::write(sweep.join(".lock"), std::process::id().to_string()).unwrap();
    let out = case.run("runs", &["--resume"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    // A stale lock (a file no process holds, naming no process) is taken over.
    std::fs::write(sweep.join(".lock"), "999999999").unwrap();
    assert_eq!(case.run("runs", &["--resume"]).status.code(), Some(0));
    assert!(!sweep.join(".lock").exists());
}

#[test]
fn of_two_resumes_started_together_exactly_one_proceeds() {
    let case = Case::new(EXPERIMENT);
    assert_eq!(case.run("runs", &[]).status.code(), Some(0));
    let marker = case.dir.path().join("fault").join("sweep-locked.reached");
    for _ in 0..10 {
        // Whoever takes the lock stops right after it, holding it.
        let mut both: Vec<Child> = (0..2)
            .map(|_| {
                let mut cmd = case.command("runs", &["--resume"]);
                cmd.env("XP_FAULT_PAUSE", "sweep-locked");
                cmd.spawn().unwrap()
            })
            .collect();
        let start = Instant::now();
        let loser = loop {
            if let Some(i) = (0..2).find(|&i| both[i].try_wait().unwrap().is_some()) {
                break i;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "neither ended");
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut winner = both.remove(1 - loser);
        let out = both.remove(0).wait_with_output().unwrap();
        wait_for(&mut winner, || marker.exists());
        let pid = std::fs::read_to_string(&marker).unwrap();
        assert_eq!(pid, winner.id().to_string());
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains("in use by another xp process") && err.contains(&format!("pid {pid}")),
            "{err}"
        );
        // Killed while holding it: the lock is free again for the next round.
        winner.kill().unwrap();
        winner.wait().unwrap();
        std::fs::remove_file(&marker).unwrap();
    }
}

#[test]
fn reuse_links_completed_runs_from_earlier_sweeps() {
    let case = Case::new(EXPERIMENT);
    assert_eq!(case.run("runs", &[]).status.code(), Some(0));
    let first = case.sweep("runs", "ck");
    std::thread::sleep(Duration::from_millis(1100));
    let out = case.run("runs", &["--reuse"]);
    assert_eq!(out.status.code(), Some(0));
    let second = case.sweep("runs", "ck");
    assert_ne!(first, second);
    // The link is relative, so the runs directory can move, and xp says what it reused.
    let link = std::fs::read_link(second.join("run")).unwrap();
    let first_name = first.file_name().unwrap().to_str().unwrap();
    assert_eq!(link, Path::new("..").join(first_name).join("run"));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("run: reused ../{first_name}/run")),
        "{err}"
    );
    std::fs::rename(case.dir.path().join("runs"), case.dir.path().join("moved")).unwrap();
    let moved = case.sweep("moved", "ck");
    assert!(moved.join("run/summary.json").is_file());
}

#[test]
fn status_takes_every_path_compare_takes() {
    let case = Case::new(EXPERIMENT);
    assert_eq!(case.run("runs", &[]).status.code(), Some(0));
    let sweep = case.sweep("runs", "ck");
    let status = |paths: &[&str]| {
        let mut args = vec!["status"];
        args.extend(paths);
        xp(case.dir.path(), &args)
    };
    let sweep_arg = sweep.display().to_string();
    let run_arg = sweep.join("run").display().to_string();
    for paths in [
        vec!["runs"],
        vec!["runs/ck"],
        vec![sweep_arg.as_str()],
        vec![run_arg.as_str()],
        // The same sweep through two paths is shown once.
        vec!["runs/ck", sweep_arg.as_str(), run_arg.as_str()],
    ] {
        let out = status(&paths);
        assert_eq!(out.status.code(), Some(0), "{paths:?}: {}", stderr(&out));
        let text = stdout(&out);
        assert_eq!(text.matches("1 completed").count(), 1, "{paths:?}:\n{text}");
        assert!(text.lines().any(|l| l.starts_with("run ")), "{text}");
    }
    let out = status(&["runs", "missing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`missing` does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unwritable_runs_dir_is_a_clear_error() {
    let case = Case::new(EXPERIMENT);
    std::fs::write(case.dir.path().join("file"), "not a directory").unwrap();
    let out = case.run("file", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("error:") && err.to_lowercase().contains("not a directory"),
        "{err}"
    );
}

#[test]
fn fail_fast_stops_at_the_first_failure_and_leaves_the_rest_pending() {
    let case = Case::new(
        r#"experiment "ff" {
    model "mlp" { hidden 8 }
    data "regression" features=4 samples=256
    train {
        steps 20
        batch-size 16
        optimizer "sgd" lr="{{ lr }}"
    }
    sweep {
        grid {
            lr 1e6 0.01
        }
    }
}
"#,
    );
    let out = case.run("runs", &["--fail-fast"]);
    assert_eq!(out.status.code(), Some(1));
    let sweep = case.sweep("runs", "ff");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("results.json")).unwrap())
            .unwrap();
    let statuses: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["diverged", "pending"]);
    assert!(!sweep.join("lr=0.01").exists());
}

/// [`EXPERIMENT`] with `batch-size "auto"` keeping 16 examples a step, under a budget.
const AUTO_EXPERIMENT: &str = r#"experiment "ck" {
    model "llama" { layers 1; heads 2; dim 32; context 8 }
    data "modular-addition" modulus=13
    resources {
        memory "8G"
    }
    train {
        steps 60
        batch-size "auto"
        effective-batch 16
        optimizer "adamw" lr=3e-3
        schedule "cosine" warmup-steps=5
        eval every=10
        log every=5
        checkpoint every=10 keep=2
    }
}
"#;

/// A run of `batch-size "auto"` killed mid-training resumes bit-identically: the checkpoint
/// holds the micro-batch chosen, and the resumed process takes it from there instead of
/// choosing again.
#[test]
fn an_auto_batch_run_resumes_bit_identically() {
    let case = Case::new(AUTO_EXPERIMENT);
    assert_eq!(case.run("reference", &[]).status.code(), Some(0));
    case.kill_at("training", "eval#4", &[]);
    let run = case.sweep("training", "ck").join("run");
    let (_, newest) = xp::sweep::record::checkpoint::steps(&run)
        .into_iter()
        .max_by_key(|(step, _)| *step)
        .unwrap();
    let trainer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(newest.join("trainer.json")).unwrap())
            .unwrap();
    let micro = trainer["batch"]["micro"].as_u64().unwrap();
    assert!(trainer["batch"]["auto"] == true && (1..=16).contains(&micro));
    let out = case.run("training", &["--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_identical(&case, "training");
    assert_eq!(summary(&run)["batch"]["micro"], micro);
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(
        log.contains("as the checkpoint resumed from started it"),
        "{log}"
    );
}

/// A run whose step 3 ran out of memory (injected) and went on in halved micro-batches,
/// killed mid-training, resumes bit-identically in those micro-batches: the change is in the
/// checkpoint.
#[test]
fn a_run_that_halved_its_micro_batch_resumes_bit_identically() {
    let case = Case::new(EXPERIMENT);
    let reference = case
        .command("reference", &[])
        .env("XP_FAULT_OOM", "3")
        .output()
        .unwrap();
    assert_eq!(reference.status.code(), Some(0), "{}", stderr(&reference));
    case.kill_at("training", "eval#4", &[("XP_FAULT_OOM", "3")]);
    let out = case.run("training", &["--resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_identical(&case, "training");
    let run = case.sweep("training", "ck").join("run");
    let changes = &summary(&run)["batch_changes"];
    assert_eq!(changes[0]["step"], 3, "{changes}");
    assert_eq!(summary(&run)["batch"]["micro"], 8);
}
