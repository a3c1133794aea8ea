//! `xp run`: the sweep directory it writes, determinism, and failures that do not stop a sweep.

use std::path::{Path, PathBuf};

use super::support::{experiment_dir, root, stderr, succeeded, timeless_metrics, xp};

fn sweep_dir(runs: &Path, experiment: &str) -> PathBuf {
    let current = runs.join(experiment).join("current");
    let target = std::fs::read_link(&current).expect("`current` is a symlink");
    runs.join(experiment).join(target)
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_quickstart_writes_the_documented_sweep_directory() {
    let runs = tempfile::tempdir().unwrap();
    let out = xp(
        &root(),
        &[
            "run",
            "experiments/quickstart.kdl",
            "--runs-dir",
            runs.path().to_str().unwrap(),
            "--set",
            "train.steps=30",
            "--set",
            "train.eval.every=15",
            "-q",
        ],
    );
    succeeded(&out);
    let sweep = sweep_dir(runs.path(), "quickstart");
    for file in ["experiment.kdl", "plan.json", "results.csv", "results.json"] {
        assert!(sweep.join(file).is_file(), "{file}");
    }
    assert_eq!(
        std::fs::read_to_string(sweep.join("experiment.kdl")).unwrap(),
        std::fs::read_to_string(root().join("experiments/quickstart.kdl")).unwrap()
    );
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("plan.json")).unwrap()).unwrap();
    assert_eq!(
        plan["overrides"],
        serde_json::json!(["--set train.steps=30", "--set train.eval.every=15"])
    );
    let csv = std::fs::read_to_string(sweep.join("results.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.starts_with("name,id,status,lr,final:"), "{header}");
    assert!(
        header.ends_with(",steps,wall_s,tokens_per_s,peak_memory_bytes"),
        "{header}"
    );
    assert_eq!(csv.lines().count(), 4);
    // A metric without a best value (the lr, the gradient norm) has no always-empty column.
    assert!(!header.contains("best:train/lr") && !header.contains("best:train/grad_norm"));
    assert!(header.contains("final:train/lr") && header.contains("best:val/loss"));
    // Counts are integers in results.json, metrics and axes numbers.
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(rows[0]["steps"], serde_json::json!(30));
    assert!(rows[0]["steps"].is_u64() && rows[0]["peak_memory_bytes"].is_u64());
    assert!(rows[0]["final:val/loss"].is_f64() && rows[0]["lr"].is_f64());
    for name in ["lr0.001", "lr0.003", "lr0.01"] {
        let run = sweep.join(name);
        for file in [
            "config.kdl",
            "config.json",
            "metrics.jsonl",
            "train.log",
            "summary.json",
            "model.safetensors",
        ] {
            assert!(run.join(file).is_file(), "{name}/{file}");
        }
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["status"], "completed");
        assert_eq!(summary["steps"], 30);
        assert_eq!(summary["name"], name);
        assert_eq!(summary["device"], "cpu");
        assert_eq!(summary["precision"], "f32");
        assert!(summary["final"]["val/accuracy"].is_f64());
        assert_eq!(
            summary["best"]["val/loss"]["step"].as_u64().map(|s| s % 15),
            Some(0)
        );
        let rows = metrics(&run);
        assert_eq!(
            rows.iter()
                .map(|r| r["step"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [10, 15, 20, 30]
        );
        assert!(rows[1].get("val/loss").is_some() && rows[1].get("train/loss").is_none());
        assert!(rows[0]["epoch"].is_f64() && rows[0]["time_s"].is_f64());
        // The model is saved under HF names, readable by any safetensors reader.
        let tensors = candle_core::safetensors::load(
            run.join("model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(tensors.contains_key("model.layers.0.self_attn.q_proj.weight"));
        assert!(tensors.contains_key("lm_head.weight"));
        let log = std::fs::read_to_string(run.join("train.log")).unwrap();
        assert!(
            log.contains("device cpu, precision f32, ")
                && (log.contains(" 1 thread\n") || log.contains(" threads\n"))
                && !log.contains(" 1 threads")
                && log.contains("end: completed"),
            "{log}"
        );
    }
}

#[test]
fn the_same_run_twice_gives_bit_identical_metrics_and_weights() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&a, &b] {
        let out = xp(
            &root(),
            &[
                "run",
                "experiments/quickstart.kdl",
                "--runs-dir",
                dir.path().to_str().unwrap(),
                "--only",
                "lr0.01",
                "--set",
                "train.steps=24",
                "--set",
                "train.eval.every=12",
                "-q",
            ],
        );
        assert_eq!(out.status.code(), Some(0));
    }
    let (ra, rb) = (
        sweep_dir(a.path(), "quickstart").join("lr0.01"),
        sweep_dir(b.path(), "quickstart").join("lr0.01"),
    );
    assert_eq!(timeless_metrics(&ra), timeless_metrics(&rb));
    assert_eq!(
        std::fs::read(ra.join("model.safetensors")).unwrap(),
        std::fs::read(rb.join("model.safetensors")).unwrap()
    );
}

#[test]
fn a_diverging_run_is_recorded_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.kdl");
    std::fs::write(
        &file,
        r#"experiment "diverge" {
    model "mlp" { hidden 16 }
    data "regression" features=4 samples=256
    train {
        steps 40
        batch-size 16
        optimizer "sgd" lr="{{ lr }}"
        eval every=20
    }
    sweep {
        grid {
            lr 1e6 0.01
        }
    }
}
"#,
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let out = xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", runs.to_str().unwrap(), "-q"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 failed: lr=1000000.0"), "{stdout}");
    let sweep = sweep_dir(&runs, "diverge");
    let bad: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sweep.join("lr=1000000.0/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(bad["status"], "diverged");
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .contains("the training loss became"),
        "{bad}"
    );
    let good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("lr=0.01/summary.json")).unwrap())
            .unwrap();
    assert_eq!(good["status"], "completed");
    assert!(good["final"]["val/loss"].as_f64().unwrap() < 1.0);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(
        results
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["diverged", "completed"]
    );
}

/// A run whose metrics turn NaN or infinite before its loss does: JSON has no such numbers,
/// and the summary must still read back as the diverged run it is.
#[test]
fn a_run_diverging_through_non_finite_metrics_is_recorded_as_diverged() {
    let dir = experiment_dir(
        r#"experiment "nan" {
    model "mlp" { hidden 8 }
    data "regression" features=4 samples=256
    train {
        steps 40
        batch-size 16
        optimizer "sgd" lr=1e12
        eval every=1
        log every=1
    }
}
"#,
    );
    let out = xp(dir.path(), &["run", "e.kdl", "--runs-dir", "runs"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("diverged"), "{stdout}");
    let sweep = sweep_dir(&dir.path().join("runs"), "nan");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("run/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["status"], "diverged", "{summary}");
    assert_eq!(summary["steps"], 1, "{summary}");
    assert!(
        summary["final"]["train/loss"].as_f64().is_some(),
        "{summary}"
    );
    assert!(summary["final"]["val/loss"].is_null(), "{summary}");
    assert_eq!(summary["best"]["train/loss"]["step"], 1, "{summary}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results[0]["status"], "diverged");
    assert_eq!(results[0]["steps"].as_f64(), Some(1.0));
    let out = xp(dir.path(), &["status", "runs/nan"]);
    assert!(super::support::stdout(&out).contains("diverged"));
}

/// A disk that fills up while a run trains: the run is failed in its summary too (written
/// into the space it reserved), and the error names the file.
#[test]
fn a_full_disk_fails_the_run_in_its_summary_and_names_the_file() {
    let dir = experiment_dir(
        r#"experiment "full" {
    model "mlp" { hidden 8 }
    data "regression" features=4 samples=256
    train { steps 20; batch-size 16; optimizer "sgd" lr=0.01; log every=5 }
}
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(["run", "e.kdl", "--runs-dir", "runs"])
        .current_dir(dir.path())
        .env("XP_FAULT_ENOSPC", "metrics.jsonl,train.log,summary.json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let sweep = sweep_dir(&dir.path().join("runs"), "full");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("run/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["status"], "failed", "{summary}");
    let reason = summary["reason"].as_str().unwrap();
    // The first write training does is train.log's.
    let log = Path::new("runs")
        .join(
            sweep
                .strip_prefix(dir.path())
                .unwrap()
                .strip_prefix("runs")
                .unwrap(),
        )
        .join("run/train.log");
    assert!(
        reason.contains(&format!("{}: No space left on device", log.display())),
        "{reason}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("failed"), "{stdout}");
}

#[test]
fn invalid_input_exits_two_before_anything_is_written() {
    let runs = tempfile::tempdir().unwrap();
    let out = xp(
        &root(),
        &[
            "run",
            "experiments/quickstart.kdl",
            "--runs-dir",
            runs.path().to_str().unwrap(),
            "--only",
            "nothing*",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("matches no run"));
    let out = xp(
        &root(),
        &[
            "run",
            "experiments/quickstart.kdl",
            "--runs-dir",
            runs.path().to_str().unwrap(),
            "--device",
            "cuda",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("xp::run::unsupported"));
    assert_eq!(std::fs::read_dir(runs.path()).unwrap().count(), 0);
}

#[test]
fn user_defaults_come_from_the_config_file_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.kdl");
    std::fs::write(&config, "runs-dir \"from-config\"\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "experiments/quickstart.kdl",
            "--only",
            "lr0.01",
            "--set",
            "train.steps=24",
            "--set",
            "train.eval.every=12",
            "-q",
        ];
        args.extend(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_xp"))
            .args(&args)
            .current_dir(root())
            .env("XP_CONFIG", &config)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    succeeded(&out);
    assert!(
        dir.path()
            .join("from-config/quickstart/current/lr0.01/summary.json")
            .is_file()
    );
    let flag = dir.path().join("from-flag");
    let out = run(&["--runs-dir", flag.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        flag.join("quickstart/current/lr0.01/summary.json")
            .is_file()
    );
    // A mistake in the config file is a diagnostic like any other.
    std::fs::write(&config, "runs-dri \"x\"\n").unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("did you mean `runs-dir`?") && err.contains("config.kdl"),
        "{err}"
    );
}

#[test]
fn early_stopping_ends_a_run_as_completed_with_its_reason() {
    let dir = experiment_dir(
        r#"experiment "early" {
    model "mlp" { hidden 8 }
    data "regression" features=4 samples=256
    train {
        steps 100
        batch-size 16
        optimizer "sgd" lr=0.05
        eval every=5
        early-stop threshold=1000.0
    }
}
"#,
    );
    let runs = dir.path().join("runs");
    let out = xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", runs.to_str().unwrap(), "-q"],
    );
    succeeded(&out);
    let run = sweep_dir(&runs, "early").join("run");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["steps"], 5);
    assert!(
        summary["reason"]
            .as_str()
            .unwrap()
            .starts_with("stopped early: val/loss reached the threshold"),
        "{summary}"
    );
    assert!(
        std::fs::read_to_string(run.join("train.log"))
            .unwrap()
            .contains("early stop at step 5")
    );
}

/// The library's in-process executor (`run_plan` without processes, as examples/ use it)
/// trains exactly what `xp run` trains in a process per run: the same statuses, metrics and
/// weights.
#[test]
fn the_in_process_executor_matches_xp_run() {
    let text = r#"experiment "inproc" {
    model "mlp" { hidden 8 }
    data "regression" features=4 samples=128
    train {
        steps 20
        batch-size 16
        optimizer "adam" lr="{{ lr }}"
        eval every=10
    }
    sweep {
        grid {
            lr 0.01 0.03
        }
    }
}
"#;
    let dir = experiment_dir(text);
    succeeded(&xp(
        dir.path(),
        &["run", "e.kdl", "--runs-dir", "cli", "-q"],
    ));

    let checked = xp::front::validate_text("e.kdl", text);
    assert!(!checked.diags.has_errors());
    let (datasets, problems) =
        xp::sweep::preflight::load_data(&checked.plans, miette::Severity::Error);
    assert!(problems.is_empty());
    let options = xp::sweep::executor::SweepOptions {
        runs_dir: dir.path().join("lib"),
        ..Default::default()
    };
    let report = xp::sweep::executor::run_plan(
        &checked.plans[0],
        text,
        &datasets,
        &options,
        &mut xp::sweep::progress::Silent,
    )
    .expect("the sweep runs in process");
    assert_eq!(report.summaries.len(), 2);
    let cli = sweep_dir(&dir.path().join("cli"), "inproc");
    for s in &report.summaries {
        assert_eq!(s.status.as_str(), "completed", "{}", s.name);
        let (a, b) = (cli.join(&s.name), report.dir.join(&s.name));
        assert_eq!(timeless_metrics(&a), timeless_metrics(&b));
        assert_eq!(
            std::fs::read(a.join("model.safetensors")).unwrap(),
            std::fs::read(b.join("model.safetensors")).unwrap(),
            "{}",
            s.name
        );
    }
}
