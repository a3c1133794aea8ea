//! Search sweeps end to end: a TPE search trains its trials, records them in search.jsonl and
//! the results tables, `xp compare` reads it; a search killed between trials resumes with the
//! same suggestions; `repeat` and `exclude` shape its trials; `xp plan` shows its space and
//! start-up trials; Slurm refuses it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::{current_sweep, experiment_dir, stderr, stdout, succeeded, xp};

/// A small regression MLP: a run takes a fraction of a second.
fn experiment(search: &str, extra: &str) -> String {
    format!(
        r#"experiment "s" {{
    seed 1
    objective "val/loss" "minimize"
    model "mlp" {{ hidden "{{{{ width }}}}" }}
    data "regression" features=4 samples=256 noise=0.1
    train {{
        steps 30
        batch-size 32
        optimizer "adamw" lr="{{{{ lr }}}}"
        eval every=15
    }}
    sweep {{
        {search} {{
            lr "log-uniform" 1e-4 1e-1
            width "choice" 4 16
        }}
        {extra}
    }}
}}
"#
    )
}

fn journal(sweep: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(sweep.join("search.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn csv_rows(sweep: &Path) -> Vec<csv::StringRecord> {
    csv::Reader::from_path(sweep.join("results.csv"))
        .unwrap()
        .records()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_tpe_search_trains_its_trials_records_them_and_compares() {
    let dir = experiment_dir(&experiment(r#"search "tpe" trials=12 seed=3"#, ""));
    let out = xp(dir.path(), &["run", "e.kdl", "-q"]);
    succeeded(&out);
    let sweep = current_sweep(dir.path(), "runs", "s");
    let trials = journal(&sweep);
    assert_eq!(trials.len(), 12);
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t["trial"], i);
        let lr = t["axes"]["lr"].as_f64().unwrap();
        assert!((1e-4..=1e-1).contains(&lr), "{lr}");
        assert!([4, 16].contains(&t["axes"]["width"].as_i64().unwrap()));
        let run = &t["runs"][0];
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                sweep
                    .join(run["name"].as_str().unwrap())
                    .join("summary.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(summary["id"], run["id"]);
        assert_eq!(summary["status"], "completed");
    }
    // plan.json holds every trial's run, as `xp exec` read them.
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("plan.json")).unwrap()).unwrap();
    assert_eq!(plan["runs"].as_array().unwrap().len(), 12);
    assert_eq!(plan["search"]["sampler"], "tpe");
    let rows = csv_rows(&sweep);
    assert_eq!(rows.len(), 12);
    let header = csv::Reader::from_path(sweep.join("results.csv"))
        .unwrap()
        .headers()
        .unwrap()
        .clone();
    assert_eq!(&header[3], "lr");
    assert_eq!(&header[4], "width");
    let compare = xp(dir.path(), &["compare", "runs/s", "--format", "csv"]);
    succeeded(&compare);
    assert_eq!(stdout(&compare).lines().count(), 13, "{}", stdout(&compare));
}

#[test]
fn a_search_killed_between_trials_resumes_with_the_same_suggestions() {
    let dir = experiment_dir(&experiment(
        r#"search "tpe" trials=13 seed=5 parallel=1"#,
        "",
    ));
    let fault = dir.path().join("fault");
    std::fs::create_dir(&fault).unwrap();
    succeeded(&xp(
        dir.path(),
        &["run", "e.kdl", "-q", "--runs-dir", "reference"],
    ));

    // Killed right after the 12th trial (the second TPE suggests) was recorded.
    let mut child = Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(["run", "e.kdl", "-q", "--runs-dir", "killed"])
        .current_dir(dir.path())
        .env("XP_FAULT_DIR", &fault)
        .env("XP_FAULT_PAUSE", "trial#12")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = fault.join("trial.reached");
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "xp ended before trial 12"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never reached trial 12"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = current_sweep(dir.path(), "killed", "s");
    assert_eq!(journal(&killed).len(), 12);

    let resumed = xp(
        dir.path(),
        &["run", "e.kdl", "-q", "--runs-dir", "killed", "--resume"],
    );
    succeeded(&resumed);
    let reference = current_sweep(dir.path(), "reference", "s");
    assert_eq!(journal(&killed), journal(&reference));
    let timeless = |sweep: &Path| -> Vec<Vec<String>> {
        let mut r = csv::Reader::from_path(sweep.join("results.csv")).unwrap();
        let header = r.headers().unwrap().clone();
        r.records()
            .map(|row| {
                row.unwrap()
                    .iter()
                    .zip(header.iter())
                    .filter(|(_, h)| {
                        // Measures of the clock and the process differ between any two trainings.
                        let key = h.rsplit([':', '/']).next().unwrap_or(h);
                        !(key == "wall_s"
                            || key.ends_with("_per_s")
                            || key.ends_with("_memory_bytes"))
                    })
                    .map(|(c, _)| c.to_owned())
                    .collect()
            })
            .collect()
    };
    assert_eq!(timeless(&killed), timeless(&reference));
}

#[test]
fn repeat_averages_seeds_and_exclude_redraws() {
    let dir = experiment_dir(&experiment(
        r#"search "random" trials=3 seed=2"#,
        r#"repeat 2
        exclude when="{{ width == 16 and lr > 1e-2 }}""#,
    ));
    succeeded(&xp(dir.path(), &["run", "e.kdl", "-q"]));
    let sweep = current_sweep(dir.path(), "runs", "s");
    let trials = journal(&sweep);
    assert_eq!(trials.len(), 3);
    for t in &trials {
        let runs = t["runs"].as_array().unwrap();
        let seeds: Vec<u64> = runs.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
        assert_eq!(seeds, vec![1, 2]);
        let (width, lr) = (
            t["axes"]["width"].as_i64().unwrap(),
            t["axes"]["lr"].as_f64().unwrap(),
        );
        assert!(!(width == 16 && lr > 1e-2), "an excluded point ran: {t}");
    }
    assert_eq!(csv_rows(&sweep).len(), 6);
}

#[test]
fn an_impossible_exclude_gives_up_with_a_clear_error() {
    let dir = experiment_dir(&experiment(
        r#"search "random" trials=3"#,
        r#"exclude when="{{ lr > 0 }}""#,
    ));
    let out = xp(dir.path(), &["run", "e.kdl", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1000 suggestions in a row were rejected (excluded)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plan_shows_the_space_the_budget_and_the_startup_trials() {
    let dir = experiment_dir(&experiment(
        r#"search "tpe" trials=24 seed=9 parallel=2"#,
        "repeat 2",
    ));
    let out = xp(dir.path(), &["plan", "e.kdl"]);
    succeeded(&out);
    let text = stdout(&out);
    assert!(
        text.contains(
            "a tpe search of 24 trials × 2 seeds = at most 48 runs (seed 9, 2 trials at once)"
        ),
        "{text}"
    );
    assert!(text.contains("log-uniform 1e-4 1e-1"), "{text}");
    assert!(text.contains("choice 4 16"), "{text}");
    assert!(
        text.contains("the first 10 trials are drawn at random"),
        "{text}"
    );
    assert!(
        text.contains("the later 14 trials depend on the results"),
        "{text}"
    );
    let json = xp(dir.path(), &["plan", "e.kdl", "--format", "json"]);
    succeeded(&json);
    let plans: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let startup = plans[0]["startup_trials"].as_array().unwrap();
    assert_eq!(startup.len(), 10);

    // The search trains exactly those first.
    let small = experiment_dir(&experiment(r#"search "tpe" trials=10 seed=9"#, ""));
    let planned = xp(small.path(), &["plan", "e.kdl", "--format", "json"]);
    let planned: serde_json::Value = serde_json::from_slice(&planned.stdout).unwrap();
    succeeded(&xp(small.path(), &["run", "e.kdl", "-q"]));
    let ran: Vec<serde_json::Value> = journal(&current_sweep(small.path(), "runs", "s"))
        .into_iter()
        .map(|t| t["axes"].clone())
        .collect();
    assert_eq!(planned[0]["startup_trials"].as_array().unwrap(), &ran);
}

#[test]
fn slurm_and_only_refuse_a_search_in_run_and_plan() {
    let dir = experiment_dir(&experiment(r#"search "tpe" trials=4"#, ""));
    let out = xp(dir.path(), &["run", "e.kdl", "--launcher", "slurm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is a search"), "{}", stderr(&out));
    assert!(stderr(&out).contains("local launcher"), "{}", stderr(&out));
    for command in ["run", "plan"] {
        let out = xp(dir.path(), &[command, "e.kdl", "--only", "lr*"]);
        assert_eq!(out.status.code(), Some(2), "{command}");
        assert!(
            stderr(&out).contains("--only cannot choose"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!dir.path().join("runs").exists());
}

#[test]
fn a_search_checks_every_value_it_can_suggest() {
    // The high end of `warm` makes warmup as long as training: found before anything runs.
    let dir = experiment_dir(
        r#"experiment "s" {
    objective "val/loss"
    model "mlp"
    data "regression" features=4 samples=64
    train {
        steps 20
        optimizer "adamw" lr=1e-3
        schedule "cosine" warmup-steps="{{ warm }}"
    }
    sweep {
        search "tpe" trials=8 {
            warm "int-uniform" 0 40
        }
    }
}
"#,
    );
    let out = xp(dir.path(), &["validate", "e.kdl"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("warm=40") || stdout(&out).contains("warm=40"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// A search's `regression` block gates it like a grid's: the first run points at the missing
/// baseline (exit 2), the baseline saved from it passes, and the gate reads the trials the search
/// planned as it ran.
#[test]
fn a_searchs_regression_block_gates_its_trials() {
    let gate = r#"}
    regression baseline="base.csv" {
        metric "val/loss" tolerance="5%"
    "#;
    let dir = experiment_dir(&experiment(r#"search "random" trials=3 seed=2"#, gate));
    let out = xp(dir.path(), &["run", "e.kdl", "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("gate: no baseline at base.csv"),
        "{}",
        stdout(&out)
    );
    let sweep = current_sweep(dir.path(), "runs", "s");
    let sweep = sweep.to_str().unwrap();
    succeeded(&xp(
        dir.path(),
        &["compare", sweep, "--save-baseline", "base.csv"],
    ));
    let out = xp(dir.path(), &["run", "e.kdl", "-q"]);
    succeeded(&out);
    let text = stdout(&out);
    assert_eq!(text.matches(" pass ").count(), 3, "{text}");
}
