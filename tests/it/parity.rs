//! An mlp that `xp run` trains from given safetensors weights on a CSV file with
//! `shuffle=#false` has, step by step, the training loss (and lr and gradient norm) of the same
//! model trained in PyTorch.

use std::path::Path;

use serde::Deserialize;

use super::support::{root, succeeded, xp};

/// Written by tests/reference/mlp_csv.py (PyTorch, float32 on CPU), which also wrote the
/// experiments, CSV files and initial weights in tests/fixtures/parity/.
const REFERENCE: &str = include_str!("../reference/mlp_csv.json");

/// Relative tolerance on losses and gradient norms: float32 sums in another order (candle's
/// matmul and reductions against ATen's) differ by a few ulps, and training carries that on.
/// The largest error seen is about 3e-7.
const TOLERANCE: f64 = 1e-5;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    /// The experiment, in tests/fixtures/parity/.
    experiment: String,
    /// Per optimizer step, from step 1.
    loss: Vec<f64>,
    lr: Vec<f64>,
    grad_norm: Vec<f64>,
}

fn reference() -> Reference {
    serde_json::from_str(REFERENCE).expect("tests/reference/mlp_csv.json parses")
}

/// The `train/` metrics of every logged step of the single run of `experiment`.
fn train_metrics(runs: &Path, experiment: &str) -> Vec<serde_json::Value> {
    let run = runs.join(experiment).join("current").join("run");
    let text = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_else(|e| panic!("{}: {e}", run.display()));
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r.get("train/loss").is_some())
        .collect()
}

fn relative(got: f64, want: f64) -> f64 {
    if got == want {
        0.0
    } else {
        (got - want).abs() / want.abs().max(f64::MIN_POSITIVE)
    }
}

/// Runs one case and compares every step with PyTorch.
fn check(name: &str) {
    let reference = reference();
    let case = reference
        .cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case `{name}` in tests/reference/mlp_csv.json"));
    let runs = tempfile::tempdir().unwrap();
    let experiment = root().join("tests/fixtures/parity").join(&case.experiment);
    let out = xp(
        &root(),
        &[
            "run",
            experiment.to_str().unwrap(),
            "--runs-dir",
            runs.path().to_str().unwrap(),
            "-q",
        ],
    );
    succeeded(&out);
    let rows = train_metrics(runs.path(), name);
    let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=case.loss.len() as u64).collect();
    assert_eq!(steps, expected, "{name}: every step logs train/loss");

    let mut failures = Vec::new();
    let mut worst = [
        ("train/loss", 0.0f64),
        ("train/grad_norm", 0.0),
        ("train/lr", 0.0),
    ];
    for (i, row) in rows.iter().enumerate() {
        let wanted = [
            ("train/loss", case.loss[i], TOLERANCE),
            ("train/grad_norm", case.grad_norm[i], TOLERANCE),
            // Both sides compute the schedule in float64.
            ("train/lr", case.lr[i], 1e-12),
        ];
        for ((key, want, tolerance), (_, max)) in wanted.into_iter().zip(worst.iter_mut()) {
            let got = row[key].as_f64().unwrap_or(f64::NAN);
            let error = if want == 0.0 {
                got.abs()
            } else {
                relative(got, want)
            };
            *max = max.max(error);
            if error.is_nan() || error > tolerance {
                failures.push(format!(
                    "step {}: {key} {got} (PyTorch: {want}, relative error {error:.2e})",
                    i + 1
                ));
            }
        }
    }
    eprintln!("{name}: largest relative errors {worst:?}");
    assert!(
        failures.is_empty(),
        "{name} differs from PyTorch (tests/reference/mlp_csv.py):\n{}",
        failures.join("\n")
    );
}

#[test]
fn sgd_with_momentum_and_grad_clip_matches_pytorch() {
    check("sgd-momentum-clip");
}

#[test]
fn adamw_with_weight_decay_and_cosine_warmup_matches_pytorch() {
    check("adamw-cosine");
}

/// 48 training rows and 10 a step: every fourth step ends an epoch and 8 rows are skipped.
#[test]
fn adam_with_gradient_accumulation_matches_pytorch_across_epochs() {
    check("adam-accumulation");
}

#[test]
fn sgd_nesterov_with_gradient_accumulation_on_classes_matches_pytorch() {
    check("sgd-nesterov-accumulation");
}

#[test]
fn every_reference_case_has_a_test() {
    let names: Vec<String> = reference().cases.into_iter().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "sgd-momentum-clip",
            "adamw-cosine",
            "adam-accumulation",
            "sgd-nesterov-accumulation"
        ]
    );
}
