//! `sweep { prune … }`: a sweep with `prune "asha"` stops some runs (status `pruned`, a reason
//! with the step, value, cut-off and count, a checkpoint of the step it stopped at), which
//! `results.csv`, `xp compare`, JUnit (skipped), `xp status`, `xp report` and `--resume` all
//! treat as finished, not failed; the same under `--jobs 2`; `median` and `hyperband` too; and
//! the options are checked with spans.

use std::path::Path;

use serde_json::Value;

use super::report::embedded;
use super::support::{current_sweep, experiment_dir, json, stdout, succeeded, xp};

/// Six runs, the best learning rates first, so that later runs meet rungs already set by
/// better ones and are pruned.
pub const SWEEP: &str = r#"experiment "p" {
    seed 1
    objective "val/loss" "minimize"
    model "mlp" {
        hidden 16
    }
    data "regression" features=4 samples=256
    train {
        steps 40
        batch-size 32
        optimizer "adamw" lr="{{ lr }}"
        eval every=10
    }
    sweep {
        grid {
            lr 3e-2 1e-2 3e-3 1e-3 3e-4 1e-4
        }
        prune "asha" min-steps=10 reduction=2
    }
    name "lr{{ lr }}"
}
"#;

pub const NAMES: [&str; 6] = [
    "lr0.03", "lr0.01", "lr0.003", "lr0.001", "lr0.0003", "lr0.0001",
];

fn summary(run: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap()
}

/// The runs' summaries after a sweep, checking what every pruned run must have: a reason with
/// its step, value, cut-off and count, fewer steps than planned, and its checkpoint. Returns
/// how many were pruned.
pub fn check_pruned(sweep: &Path) -> usize {
    let mut pruned = 0;
    for name in NAMES {
        let s = summary(&sweep.join(name));
        let steps = s["steps"].as_u64().unwrap();
        match s["status"].as_str().unwrap() {
            "completed" => assert_eq!(steps, 40, "{name}: {s}"),
            "pruned" => {
                pruned += 1;
                let reason = s["reason"].as_str().unwrap();
                assert!(
                    reason.starts_with(&format!("stopped at step {steps}: val/loss ")),
                    "{reason}"
                );
                assert!(reason.contains("runs at this rung (cut-off "), "{reason}");
                assert!(steps < 40 && steps.is_multiple_of(10), "{name}: {steps}");
                assert!(
                    sweep
                        .join(name)
                        .join(format!("checkpoints/step-{steps}/trainer.json"))
                        .is_file(),
                    "{name}: no checkpoint of step {steps}"
                );
            }
            other => panic!("{name}: {other}"),
        }
    }
    // The best run goes on to the end.
    assert_eq!(summary(&sweep.join("lr0.03"))["status"], "completed");
    pruned
}

#[test]
fn asha_prunes_runs_and_every_command_knows_it() {
    let dir = experiment_dir(SWEEP);
    let out = xp(dir.path(), &["run", "e.kdl", "--runs-dir", "runs"]);
    succeeded(&out);
    let sweep = current_sweep(dir.path(), "runs", "p");
    let pruned = check_pruned(&sweep);
    assert!(pruned >= 2, "only {pruned} runs were pruned");
    assert!(
        stdout(&out).contains(&format!("{pruned} of 6 runs pruned")),
        "{}",
        stdout(&out)
    );
    // The journal every run decided from: each run's evaluations, then its end.
    let journal = std::fs::read_to_string(sweep.join("prune.jsonl")).unwrap();
    assert_eq!(journal.matches("\"end\":\"pruned\"").count(), pruned);
    assert_eq!(journal.matches("\"end\":\"completed\"").count(), 6 - pruned);
    let results = std::fs::read_to_string(sweep.join("results.csv")).unwrap();
    assert_eq!(results.matches(",pruned,").count(), pruned, "{results}");

    let compare = xp(
        dir.path(),
        &["compare", "runs/p/current", "--format", "json"],
    );
    succeeded(&compare);
    let rows = json(&compare);
    let statuses: Vec<&str> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "pruned").count(), pruned);

    // A gate never fails on a pruned run: JUnit says skipped, with why.
    let saved = xp(
        dir.path(),
        &["compare", "runs/p/current", "--save-baseline", "base.csv"],
    );
    succeeded(&saved);
    let gated = xp(
        dir.path(),
        &[
            "compare",
            "runs/p/current",
            "--baseline",
            "base.csv",
            "--junit",
            "junit.xml",
        ],
    );
    succeeded(&gated);
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    assert_eq!(
        junit
            .matches("<skipped message=\"not gated: stopped at step")
            .count(),
        pruned,
        "{junit}"
    );
    assert!(junit.contains(&format!("skipped=\"{pruned}\"")), "{junit}");
    assert!(!junit.contains("<failure"), "{junit}");

    let status = xp(dir.path(), &["status", "runs/p/current"]);
    succeeded(&status);
    assert!(
        stdout(&status).contains(&format!("{pruned} pruned")),
        "{}",
        stdout(&status)
    );

    // The report draws each pruned curve up to the step the run stopped at.
    let report = xp(dir.path(), &["report", "runs/p/current", "-o", "r.html"]);
    succeeded(&report);
    let page = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    for run in embedded(&page)["runs"].as_array().unwrap() {
        let s = summary(&sweep.join(run["name"].as_str().unwrap()));
        assert_eq!(run["status"], s["status"]);
        let xs = run["curves"]["val/loss"]["x"].as_array().unwrap();
        assert_eq!(xs.last().unwrap(), &s["steps"], "{run}");
    }

    // A pruned run is finished: resuming the sweep trains nothing again.
    let before: Vec<Value> = NAMES.iter().map(|n| summary(&sweep.join(n))).collect();
    let resumed = xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "runs", "--resume"],
    );
    succeeded(&resumed);
    let after: Vec<Value> = NAMES.iter().map(|n| summary(&sweep.join(n))).collect();
    assert_eq!(before, after);
}

/// Run processes decide from the same journal, under its lock.
#[test]
fn pruning_works_across_run_processes() {
    let dir = experiment_dir(SWEEP);
    let out = xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "runs", "--jobs", "2", "-q"],
    );
    succeeded(&out);
    let sweep = current_sweep(dir.path(), "runs", "p");
    let pruned = check_pruned(&sweep);
    assert!(pruned >= 1, "no run was pruned");
    let journal = std::fs::read_to_string(sweep.join("prune.jsonl")).unwrap();
    for name in NAMES {
        let s = summary(&sweep.join(name));
        let reports = journal
            .lines()
            .filter(|l| l.contains(&format!("\"run\":\"{name}\"")) && l.contains("\"step\""))
            .count() as u64;
        // One report per evaluation before the last step.
        assert_eq!(reports, s["steps"].as_u64().unwrap().min(30) / 10, "{name}");
    }
}

#[test]
fn median_and_hyperband_prune_too() {
    let median = SWEEP.replace(
        "prune \"asha\" min-steps=10 reduction=2",
        "prune \"median\" warmup-steps=10 startup-runs=2",
    );
    let dir = experiment_dir(&median);
    succeeded(&xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "runs", "-q"],
    ));
    let sweep = current_sweep(dir.path(), "runs", "p");
    let statuses: Vec<Value> = NAMES
        .iter()
        .map(|n| summary(&sweep.join(n))["status"].clone())
        .collect();
    // Two runs complete before any is judged; later, worse ones stop after the warmup.
    assert_eq!(statuses[..2], ["completed", "completed"]);
    let stopped: Vec<Value> = NAMES
        .iter()
        .map(|n| summary(&sweep.join(n)))
        .filter(|s| s["status"] == "pruned")
        .collect();
    assert!(!stopped.is_empty(), "{statuses:?}");
    for s in &stopped {
        let reason = s["reason"].as_str().unwrap();
        assert!(reason.contains("completed runs at this step"), "{reason}");
        assert!(s["steps"].as_u64().unwrap() > 10, "{s}");
    }

    let hyperband = SWEEP.replace(
        "prune \"asha\" min-steps=10 reduction=2",
        "prune \"hyperband\" min-steps=10 reduction=2",
    );
    let dir = experiment_dir(&hyperband);
    succeeded(&xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "runs", "-q"],
    ));
    let sweep = current_sweep(dir.path(), "runs", "p");
    for name in NAMES {
        let s = summary(&sweep.join(name));
        if s["status"] == "pruned" {
            let reason = s["reason"].as_str().unwrap();
            assert!(reason.contains("at this rung of bracket "), "{reason}");
        } else {
            assert_eq!(s["status"], "completed", "{s}");
        }
    }
}

/// Each option is type- and range-checked against the schema, with its span.
#[test]
fn prune_options_are_checked_with_spans() {
    for (prune, code, at) in [
        (
            "prune \"asha\" reduction=1",
            "xp::schema::out-of-range",
            "1",
        ),
        (
            "prune \"asha\" min-steps=0",
            "xp::schema::out-of-range",
            "0",
        ),
        (
            "prune \"median\" warmup-steps=\"x\"",
            "xp::schema::wrong-type",
            "\"x\"",
        ),
        (
            "prune \"hyperband\" warmup-steps=3",
            "xp::schema::unknown-property",
            "warmup-steps",
        ),
        (
            "prune \"asha-nope\"",
            "xp::schema::unknown-value",
            "\"asha-nope\"",
        ),
    ] {
        let text = SWEEP.replace("prune \"asha\" min-steps=10 reduction=2", prune);
        let dir = experiment_dir(&text);
        let out = xp(dir.path(), &["validate", "--format", "json", "e.kdl"]);
        assert_eq!(out.status.code(), Some(2), "{prune}: {}", stdout(&out));
        let diags = json(&out);
        let d = diags
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["code"] == code)
            .unwrap_or_else(|| panic!("{prune}: no {code} in {diags}"));
        let label = &d["labels"][0];
        let offset = label["offset"].as_u64().unwrap() as usize;
        let length = label["length"].as_u64().unwrap() as usize;
        assert_eq!(&text[offset..offset + length], at, "{prune}");
    }
}
