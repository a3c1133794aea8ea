//! The commands people expect: completions, help that shows the way, `xp plan --only`, quiet
//! notices, short names for random points.

use crate::it::support::{experiment_dir, json, root, stderr, stdout, succeeded, xp};

#[test]
fn completions_are_generated_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = xp(&root(), &["completions", shell]);
        succeeded(&out);
        let script = stdout(&out);
        assert!(
            script.contains("compare") && script.contains("runs-dir"),
            "{shell}"
        );
    }
    let out = xp(&root(), &["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_shows_examples_the_reference_and_the_exit_codes() {
    let top = stdout(&xp(&root(), &["--help"]));
    assert!(top.contains("Examples:") && top.contains("xp run experiments/quickstart.kdl"));
    assert!(top.contains("docs/reference.md"), "{top}");
    let run = stdout(&xp(&root(), &["run", "--help"]));
    for code in [
        "0  every run completed",
        "1  a run failed",
        "2  invalid input",
    ] {
        assert!(run.contains(code), "{run}");
    }
    // The README's first command writes runs/ in the clone, which git then ignores.
    let ignore = std::fs::read_to_string(root().join(".gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "/runs/"), "{ignore}");
}

const SWEEP: &str = r#"experiment "sel" {
    model "mlp" { hidden 4 }
    data "regression" features=2 samples=32
    train {
        steps 2
        batch-size 8
        optimizer "AdamW" lr="{{ lr }}"
        schedule "StepLR" step-size=1
    }
    sweep {
        grid {
            lr 0.001 0.003 0.01
        }
    }
    name "lr{{ lr }}"
}
experiment "other" {
    model "mlp" { hidden 4 }
    data "regression" features=2 samples=32
    train {
        steps 2
        batch-size 8
        optimizer "AdamW"
    }
}
"#;

#[test]
fn plan_only_previews_what_run_only_trains() {
    let dir = experiment_dir(SWEEP);
    let planned = json(&xp(
        dir.path(),
        &["plan", "e.kdl", "--only", "lr0.00*", "--format", "json"],
    ));
    let names = |runs: &serde_json::Value| -> Vec<String> {
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        planned.as_array().unwrap().len(),
        1,
        "only `sel` has such runs"
    );
    assert_eq!(names(&planned[0]["runs"]), ["lr0.001", "lr0.003"]);
    let out = xp(
        dir.path(),
        &[
            "run",
            "e.kdl",
            "--only",
            "lr0.00*",
            "-q",
            "--runs-dir",
            "runs",
        ],
    );
    succeeded(&out);
    let sweep = crate::it::support::current_sweep(dir.path(), "runs", "sel");
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("plan.json")).unwrap()).unwrap();
    assert_eq!(names(&plan["runs"]), names(&planned[0]["runs"]));
    let none = xp(dir.path(), &["plan", "e.kdl", "--only", "nothing*"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(
        stderr(&none).contains("matches no run"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn pytorch_name_notices_are_said_once_per_file_and_quiet_silences_them() {
    let dir = experiment_dir(SWEEP);
    let notices = |args: &[&str]| {
        let out = xp(dir.path(), args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        (
            text.matches("`AdamW` is the PyTorch name").count(),
            text.matches("`StepLR` is the PyTorch name").count(),
        )
    };
    // AdamW is written twice in the file, and the sweep has three runs: said once.
    assert_eq!(notices(&["validate", "e.kdl"]), (1, 1));
    assert_eq!(notices(&["plan", "e.kdl"]), (1, 1));
    assert_eq!(notices(&["validate", "-q", "e.kdl"]), (0, 0));
    assert_eq!(notices(&["plan", "--quiet", "e.kdl"]), (0, 0));
}

#[test]
fn random_points_get_short_readable_names() {
    let dir = experiment_dir(
        r#"experiment "rnd" {
    model "mlp" { hidden 4 }
    data "regression" features=2 samples=32
    train {
        steps 2
        batch-size 8
        optimizer "adamw" lr="{{ lr }}" beta2="{{ beta2 }}"
    }
    sweep {
        random count=20 seed=3 {
            lr "log-uniform" 1e-4 1e-2
            beta2 "uniform" 0.95 0.96
        }
    }
}
"#,
    );
    let plan = json(&xp(dir.path(), &["plan", "e.kdl", "--format", "json"]));
    let names: Vec<&str> = plan[0]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 20);
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 20, "{names:?}");
    for name in &names {
        // lr=0.001234,beta2=0.9512 (and the run id where rounding meets another point).
        let digits = |part: &str| {
            part.split('=')
                .nth(1)
                .unwrap_or_default()
                .split('-')
                .next()
                .unwrap_or_default()
                .trim_start_matches("0.")
                .trim_start_matches('0')
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .count()
        };
        for part in name.split(',') {
            assert!(digits(part) <= 4, "{name}");
        }
        assert!(name.len() <= 40, "{name}");
    }
}
