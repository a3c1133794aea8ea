//! Memory-aware batching: token-budget batches (`batch-tokens`) with packing off and on, the
//! per-step batch and memory metrics they log, and the report's charts of them; automatic batch
//! sizes under a memory budget; steps that run out of memory redone in smaller micro-batches.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::report::embedded;
use super::support::{current_sweep, experiment_dir, stderr, succeeded, timeless_metrics, xp};

/// `count` prompt/response lines of 3 to 62 bytes, from a fixed generator.
pub fn variable_length_jsonl(count: usize) -> String {
    let mut state = 7u64;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut out = String::new();
    for _ in 0..count {
        let (p, r) = (2 + next(40), 1 + next(20));
        let prompt: String = (0..p).map(|_| char::from(b'a' + next(26) as u8)).collect();
        let response: String = (0..r).map(|_| char::from(b'a' + next(26) as u8)).collect();
        out.push_str(&format!(
            "{{\"prompt\": \"{prompt}\", \"response\": \"{response}\"}}\n"
        ));
    }
    out
}

/// Two runs of token-budget batches, packing off and on, logging every step.
const EXPERIMENT: &str = r#"experiment "tb" {
    model "llama" { layers 1; heads 2; dim 32; context 64 }
    data "jsonl" path="data.jsonl" packing="{{ packing }}"
    train {
        steps 12
        batch-tokens 256
        gradient-accumulation 2
        optimizer "adamw" lr=3e-3
        log every=1
    }
    sweep {
        grid {
            packing #false #true
        }
    }
    name "{{ 'packed' if packing else 'padded' }}"
}
"#;

/// Trains [`EXPERIMENT`] in a new directory, both runs at once; the directory and the sweep.
pub fn token_budget_sweep() -> (tempfile::TempDir, PathBuf) {
    let dir = experiment_dir(EXPERIMENT);
    std::fs::write(dir.path().join("data.jsonl"), variable_length_jsonl(200)).unwrap();
    let args = ["run", "e.kdl", "--runs-dir", "runs", "-q", "--jobs", "2"];
    let out = xp(dir.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sweep = current_sweep(dir.path(), "runs", "tb");
    (dir, sweep)
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn series(metrics: &[Value], key: &str) -> Vec<f64> {
    metrics.iter().filter_map(|m| m[key].as_f64()).collect()
}

/// Token-budget runs give the same bits one at a time as two at once; every step logs what
/// its batch held: within two micro-batches of 256 positions, with
/// padding between length-grouped examples and almost none once packed into windows of the
/// context, and the process's measured peak memory.
#[test]
fn token_budget_runs_log_their_batches_with_packing_off_and_on() {
    let (dir, sweep) = token_budget_sweep();
    let out = xp(dir.path(), &["run", "e.kdl", "--runs-dir", "one", "-q"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let one = current_sweep(dir.path(), "one", "tb");
    for (run, packed) in [("padded", false), ("packed", true)] {
        assert_eq!(
            timeless_metrics(&sweep.join(run)),
            timeless_metrics(&one.join(run)),
            "{run}: --jobs 2 gives the bits of --jobs 1"
        );
        let m = metrics(&sweep.join(run));
        let (sizes, tokens, padding, peaks) = (
            series(&m, "train/batch_size"),
            series(&m, "train/tokens"),
            series(&m, "train/padding_ratio"),
            series(&m, "train/peak_memory_bytes"),
        );
        for s in [&sizes, &tokens, &padding, &peaks] {
            assert_eq!(s.len(), 12, "{run}: a value every step");
        }
        for ((t, p), s) in tokens.iter().zip(&padding).zip(&sizes) {
            assert!(
                t / (1.0 - p) <= 512.0 + 1e-6,
                "{run}: {t} tokens, padding {p}"
            );
            assert!(*s >= 2.0 && (0.0..1.0).contains(p), "{run}: {s} examples");
        }
        if packed {
            // Windows of 64 tokens: four to a micro-batch, the last of an epoch shorter.
            assert!(sizes.iter().all(|&s| s <= 8.0), "{run}: {sizes:?}");
            assert!(padding.iter().all(|&p| p < 0.1), "{run}: {padding:?}");
        } else {
            assert!(sizes.iter().any(|&s| s > 8.0), "{run}: {sizes:?}");
            assert!(sizes.iter().any(|&s| s != sizes[0]), "{run}: {sizes:?}");
        }
        // The process's resident memory: the binary, the data and the model at least.
        assert!(peaks.iter().all(|&p| p > 1e6), "{run}: {peaks:?}");
        let summary: Value = serde_json::from_str(
            &std::fs::read_to_string(sweep.join(run).join("summary.json")).unwrap(),
        )
        .unwrap();
        let peak = summary["peak_memory_bytes"].as_f64().unwrap();
        assert!(
            peaks.iter().all(|&p| p <= peak),
            "{run}: the run's peak {peak} is the highest"
        );
    }
}

/// The report embeds the monitoring charts, batch size and memory over steps, for every run
/// that logged them (a browser draws them: tests/it/browser.rs).
#[test]
fn the_report_charts_batch_size_and_memory_over_steps() {
    let (dir, _) = token_budget_sweep();
    succeeded(&xp(dir.path(), &["report", "runs"]));
    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    let data = embedded(&page);
    let charts: Vec<&str> = data["charts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for metric in [
        "train/batch_size",
        "train/padding_ratio",
        "train/peak_memory_bytes",
    ] {
        assert!(charts.contains(&metric), "{charts:?}");
        for run in data["runs"].as_array().unwrap() {
            assert_eq!(
                run["curves"][metric]["x"].as_array().map(Vec::len),
                Some(12),
                "{metric} of {}",
                run["name"]
            );
        }
    }
}

/// A small llama on modular addition, logging every step; `{batch}` is its batch lines.
fn modular(batch: &str) -> String {
    format!(
        r#"experiment "oom" {{
    seed 4
    model "llama" {{ layers 1; heads 2; dim 32; context 8 }}
    data "modular-addition" modulus=13
    train {{
        steps 10
        {batch}
        optimizer "adamw" lr=3e-3
        log every=1
    }}
}}
"#
    )
}

/// Runs `text` in a new directory with `env`; the run's directory (and the directory holding
/// it).
fn run_with(text: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = experiment_dir(text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(["run", "e.kdl", "--runs-dir", "runs", "-q"])
        .current_dir(dir.path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let experiment = if text.contains("\"oom\"") {
        "oom"
    } else {
        "tb"
    };
    let run = std::fs::read_dir(current_sweep(dir.path(), "runs", experiment))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("summary.json").is_file())
        .unwrap();
    (dir, run)
}

fn summary_of(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Whether two loss curves agree within `tolerance` relative at every step.
fn assert_close(a: &[f64], b: &[f64], tolerance: f64) {
    assert_eq!(a.len(), b.len(), "{a:?} {b:?}");
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        let diff = (x - y).abs() / x.abs().max(y.abs()).max(1e-12);
        assert!(
            diff <= tolerance,
            "step {}: {x} vs {y} ({diff:e})",
            step + 1
        );
    }
}

/// A step that runs out of memory (injected at step 3) is redone in halved micro-batches with
/// the accumulation doubled: the run goes on with 16 examples a step, records the change, and
/// its loss curve is that of a run that started with the halved micro-batch (up to the order of
/// sums in steps 1 and 2).
#[test]
fn out_of_memory_halves_the_micro_batch_and_keeps_the_curve() {
    let (_a, oom) = run_with(
        &modular("batch-size 8; gradient-accumulation 2"),
        &[("XP_FAULT_OOM", "3")],
    );
    let (_b, halved) = run_with(&modular("batch-size 4; gradient-accumulation 4"), &[]);
    let (m, h) = (metrics(&oom), metrics(&halved));
    assert_close(&series(&m, "train/loss"), &series(&h, "train/loss"), 1e-5);
    assert_eq!(series(&m, "train/batch_size"), vec![16.0; 10]);
    let summary = summary_of(&oom);
    let change = &summary["batch_changes"][0];
    assert_eq!(
        (
            &change["step"],
            &change["micro_before"],
            &change["micro_after"],
            &change["accumulation"]
        ),
        (&3.into(), &8.into(), &4.into(), &4.into()),
        "{summary}"
    );
    assert!(change["reason"].as_str().unwrap().contains("injected"));
    assert_eq!(summary["batch_changes"].as_array().unwrap().len(), 1);
    assert_eq!(
        (
            &summary["batch"]["micro"],
            &summary["batch"]["accumulation"]
        ),
        (&4.into(), &4.into())
    );
    let log = std::fs::read_to_string(oom.join("train.log")).unwrap();
    assert!(log.contains("step 3 ran out of memory"), "{log}");
    // A run that never ran out of memory records no change.
    assert!(summary_of(&halved).get("batch_changes").is_none());
}

/// Token-budget micro-batches that run out of memory are each cut in two: the step holds the
/// same examples and tokens, and the loss (the mean over the step's target tokens) is the same.
#[test]
fn out_of_memory_cuts_token_budget_micro_batches_in_two() {
    let text = EXPERIMENT.replace(
        "    sweep {\n        grid {\n            packing #false #true\n        }\n    }\n    name \"{{ 'packed' if packing else 'padded' }}\"\n",
        "",
    )
    .replace("packing=\"{{ packing }}\"", "");
    let write = |dir: &tempfile::TempDir| {
        std::fs::write(dir.path().join("data.jsonl"), variable_length_jsonl(200)).unwrap()
    };
    let runs: Vec<(tempfile::TempDir, PathBuf)> = [Some("2,5"), None]
        .into_iter()
        .map(|fault| {
            let dir = experiment_dir(&text);
            write(&dir);
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_xp"));
            cmd.args(["run", "e.kdl", "--runs-dir", "runs", "-q"])
                .current_dir(dir.path());
            if let Some(steps) = fault {
                cmd.env("XP_FAULT_OOM", steps);
            }
            let out = cmd.output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            let run = current_sweep(dir.path(), "runs", "tb").join("run");
            (dir, run)
        })
        .collect();
    let (cut, whole) = (metrics(&runs[0].1), metrics(&runs[1].1));
    assert_close(
        &series(&cut, "train/loss"),
        &series(&whole, "train/loss"),
        1e-5,
    );
    for key in ["train/batch_size", "train/tokens"] {
        assert_eq!(series(&cut, key), series(&whole, key), "{key}");
    }
    let parts: Vec<u64> = summary_of(&runs[0].1)["batch_changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["parts"].as_u64().unwrap())
        .collect();
    assert_eq!(parts, [2, 4]);
}

/// `batch-size "auto"` under a small budget picks the largest micro-batch whose estimate (plus
/// what the process held before training) keeps within it, and accumulates to keep 64 examples
/// a step; a fixed batch of 64 under the same budget halves before its first step (its
/// estimate passes the budget) and keeps 64 examples a step too. One thread, short rows and a
/// large vocabulary make the estimate grow by about 2 MiB an example.
#[test]
fn auto_batches_pick_the_largest_micro_batch_that_fits_a_small_budget() {
    let shape = |batch: &str, budget: u64| {
        format!(
            r#"experiment "oom" {{
    seed 4
    resources {{ memory "{budget}B"; cpus 1; }}
    model "llama" {{ layers 1; heads 4; dim 128; context 8 }}
    data "copy" length=3 vocab=8192 samples=256
    train {{
        steps 2
        {batch}
        optimizer "adamw" lr=3e-3
        log every=1
    }}
}}
"#
        )
    };
    let checked = xp::front::validate_text("e.kdl", &shape("batch-size 1", 1 << 40));
    let spec = checked.plans[0].runs[0].config.clone();
    let estimate = |micro| {
        xp::train::memory::estimate_micro(&spec, None, micro)
            .unwrap()
            .total()
    };
    // Room for about 24 examples above a resident process of up to 40 MiB.
    let budget = 40 * (1 << 20) + estimate(24);
    for batch in ["batch-size \"auto\"; effective-batch 64", "batch-size 64"] {
        let (_dir, run) = run_with(&shape(batch, budget), &[]);
        let summary = summary_of(&run);
        let record = &summary["batch"];
        let resident = record["resident_memory_bytes"].as_u64().unwrap();
        let micro = record["micro"].as_u64().unwrap() as usize;
        assert!(
            micro * record["accumulation"].as_u64().unwrap() as usize >= 64,
            "{record}"
        );
        assert_eq!(series(&metrics(&run), "train/batch_size"), [64.0, 64.0]);
        let fits = |m: usize| estimate(m) + resident <= budget;
        if batch.contains("auto") {
            let chosen = record["estimated_micro"].as_u64().unwrap() as usize;
            assert!(fits(chosen) && !fits(chosen + 1), "{record}");
            assert!(chosen > 1 && chosen < 64 && micro <= chosen, "{record}");
        } else {
            let changes = summary["batch_changes"].as_array().unwrap();
            assert!(!changes.is_empty() && fits(micro), "{summary}");
            assert!(changes.iter().all(|c| c["step"] == 1), "{summary}");
            assert!(
                changes[0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("estimated peak")
            );
        }
    }
}
