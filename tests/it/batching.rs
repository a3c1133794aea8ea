//! Memory-aware batching: token-budget batches (`batch-tokens`) with packing off and on, the
//! per-step batch and memory metrics they log, and the report's charts of them.

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
