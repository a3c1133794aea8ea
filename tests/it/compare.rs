//! `xp compare`: every output format on fixture run directories (two experiments, a failed run,
//! a running one, seed groups), baselines and gates, JUnit, filters, groups, and the gate of
//! `xp run` on the CI experiment.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::support::{json, root, stderr, stdout, xp};

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/compare")
}

fn compare(args: &[&str]) -> Output {
    let mut all = vec!["compare"];
    all.extend(args);
    xp(&fixtures(), &all)
}

/// The cases every format is snapshot on: a name and the arguments.
const CASES: &[(&str, &[&str])] = &[
    ("table", &["runs"]),
    ("csv", &["runs", "--format", "csv"]),
    ("json", &["runs", "--format", "json"]),
    ("markdown", &["runs", "--format", "markdown"]),
    ("group-table", &["runs/lora-rank", "--group-by", "rank"]),
    (
        "group-csv",
        &["runs/lora-rank", "--group-by", "rank", "--format", "csv"],
    ),
    (
        "group-json",
        &["runs/lora-rank", "--group-by", "rank", "--format", "json"],
    ),
    (
        "group-markdown",
        &[
            "runs/lora-rank",
            "--group-by",
            "rank",
            "--format",
            "markdown",
        ],
    ),
    (
        "filter-metrics-sort",
        &[
            "runs",
            "--filter",
            "status == \"completed\" and val_accuracy > 0.8",
            "--metrics",
            "val/*,steps",
            "--sort",
            "final:val/accuracy",
        ],
    ),
    (
        "gate-table",
        &[
            "runs/lora-rank",
            "--baseline",
            "baseline.csv",
            "--fail-on",
            "val/loss>+2%",
            "--fail-on",
            "val/accuracy<1%",
        ],
    ),
    (
        "gate-csv",
        &[
            "runs/lora-rank",
            "--baseline",
            "baseline.csv",
            "--fail-on",
            "val/loss>+2%",
            "--fail-on",
            "val/accuracy<1%",
            "--format",
            "csv",
        ],
    ),
    (
        "gate-json",
        &[
            "runs/lora-rank",
            "--baseline",
            "baseline.csv",
            "--fail-on",
            "val/loss>+2%",
            "--fail-on",
            "val/accuracy<1%",
            "--format",
            "json",
        ],
    ),
    (
        "gate-markdown",
        &[
            "runs/lora-rank",
            "--baseline",
            "baseline.csv",
            "--fail-on",
            "val/loss>+2%",
            "--fail-on",
            "val/accuracy<1%",
            "--format",
            "markdown",
        ],
    ),
    (
        "gate-passes-markdown",
        &[
            "runs/mlp-wd",
            "--baseline",
            "mlp-baseline.json",
            "--fail-on",
            "val/accuracy<0.01",
            "--fail-on",
            "val/loss",
            "--format",
            "markdown",
        ],
    ),
];

#[test]
fn every_format_matches_its_snapshot() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("tests/snapshots/compare"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for (name, args) in CASES {
            let out = compare(args);
            assert!(stderr(&out).is_empty(), "{name}: {}", stderr(&out));
            insta::assert_snapshot!(
                *name,
                format!(
                    "xp compare {}\nexit: {:?}\n{}",
                    args.join(" "),
                    out.status.code(),
                    stdout(&out)
                )
            );
        }
    });
}

#[test]
fn junit_has_a_case_per_run_and_gated_metric() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gate.xml");
    let out = compare(&[
        "runs/lora-rank",
        "--baseline",
        "baseline.csv",
        "--fail-on",
        "val/loss>+2%",
        "--fail-on",
        "val/accuracy<1%",
        "--junit",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let xml = std::fs::read_to_string(&file).unwrap();
    // 5 runs and 1 missing run, each with 2 gated metrics.
    assert_eq!(xml.matches("<testcase ").count(), 12 + 2);
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"xp compare\" tests=\"14\" failures=\"8\" errors=\"0\">"));
    assert_eq!(xml.matches("<testsuite ").count(), 1);
    assert_eq!(xml.matches("<failure type=\"regression\"").count(), 2);
    assert_eq!(xml.matches("<failure type=\"failed\"").count(), 2);
    assert_eq!(xml.matches("<failure type=\"unfinished\"").count(), 2);
    assert_eq!(xml.matches("<failure type=\"missing\"").count(), 2);
    assert!(xml.contains("<testcase classname=\"xp.lora-rank\" name=\"r4-s1 val/loss\">"));
    assert!(xml.trim_end().ends_with("</testsuites>"));
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("tests/snapshots/compare"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!("junit", xml));
}

/// `--format json` of a comparison.
fn compared(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = compare(&all);
    (out.status.code(), json(&out))
}

fn row<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}"))
}

#[test]
fn runs_are_found_once_under_any_path() {
    // `current` is a link to the sweep: reached through it and through the sweep, runs count once.
    let (code, report) = compared(&["runs/lora-rank/current", "runs/lora-rank", "runs"]);
    assert_eq!(code, Some(0));
    assert_eq!(report["runs"], 8);
    assert_eq!(
        report["experiments"],
        serde_json::json!(["lora-rank", "mlp-wd"])
    );
    // A run linked into a sweep (as `xp run --reuse` links them) is found through the link.
    #[cfg(unix)]
    {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sweep")).unwrap();
        std::os::unix::fs::symlink(
            fixtures().join("runs/mlp-wd/20250102-090000/wd0.0"),
            dir.path().join("sweep/wd0.0"),
        )
        .unwrap();
        let linked = json(&xp(dir.path(), &["compare", "sweep", "--format", "json"]));
        assert_eq!(linked["rows"][0]["dir"], "sweep/wd0.0");
    }
    // A run directory, or its summary.json, on its own.
    let (_, one) = compared(&["runs/mlp-wd/20250102-090000/wd0.1/summary.json"]);
    assert_eq!(one["runs"], 1);
    assert_eq!(one["rows"][0]["dir"], "runs/mlp-wd/20250102-090000/wd0.1");
}

#[test]
fn settings_that_differ_are_columns_and_the_rest_is_listed_once() {
    let (_, report) = compared(&["runs/lora-rank"]);
    assert_eq!(
        report["settings"],
        serde_json::json!(["lora.alpha", "lora.rank", "seed"])
    );
    assert_eq!(report["constant"]["train.optimizer.lr"], 0.01);
    assert_eq!(report["constant"]["model"], "llama");
    // Across experiments a setting only some runs have differs; it is blank where absent.
    let (_, both) = compared(&["runs"]);
    let settings: Vec<&str> = both["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // The experiment is a field of its own, not a setting.
    assert!(!settings.contains(&"experiment") && settings.contains(&"data"));
    assert!(settings.contains(&"lora.rank") && settings.contains(&"model"));
    assert!(row(&both, "wd0.0")["settings"].get("lora.rank").is_none());
}

#[test]
fn missing_values_are_blank_never_zero_and_running_runs_show_their_latest() {
    let (_, report) = compared(&["runs/lora-rank"]);
    let running = row(&report, "r16-s2");
    assert_eq!(running["status"], "running");
    assert_eq!(running["metrics"]["steps"], 50.0);
    assert_eq!(running["metrics"]["final:val/loss"], 0.61);
    assert_eq!(running["metrics"]["wall_s"], 5.5);
    let csv = stdout(&compare(&[
        "runs/lora-rank",
        "--format",
        "csv",
        "--metrics",
        "val/loss,train/tokens_per_s",
    ]));
    // Only the running run logged tokens per second; the others' cells are empty.
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].ends_with("final:val/loss,final:train/tokens_per_s,best"),
        "{}",
        lines[0]
    );
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        let tps = cells[cells.len() - 2];
        if line.starts_with("r16-s2,") {
            assert_eq!(tps, "10100");
        } else {
            assert_eq!(tps, "", "{line}");
        }
    }
}

#[test]
fn the_best_row_follows_the_objective_and_sort() {
    let (_, report) = compared(&["runs/lora-rank"]);
    assert_eq!(
        report["sort"],
        serde_json::json!({"column": "best:val/loss", "direction": "minimize"})
    );
    let names: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["r8-s1", "r16-s1", "r8-s2", "r4-s1", "r4-s2", "r16-s2"]
    );
    assert_eq!(row(&report, "r8-s1")["best"], true);
    // A metric to maximize sorts the other way; a failed run is never the best.
    let (_, acc) = compared(&["runs/lora-rank", "--sort", "val/accuracy"]);
    assert_eq!(acc["sort"]["column"], "best:val/accuracy");
    assert_eq!(acc["rows"][0]["name"], "r8-s1");
    let (_, tl) = compared(&["runs/lora-rank", "--sort", "final:train/loss"]);
    assert_eq!(tl["rows"][0]["name"], "r16-s1");
    assert_eq!(tl["rows"][0]["best"], false);
    assert_eq!(tl["rows"][1]["best"], true);
}

#[test]
fn filters_see_fields_axes_metrics_and_settings() {
    let names = |expr: &str| -> Vec<String> {
        let (code, report) = compared(&["runs", "--filter", expr, "--sort", "name"]);
        assert_eq!(code, Some(0), "{expr}");
        let mut names: Vec<String> = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names("status == \"completed\" and rank >= 8"),
        ["r8-s1", "r8-s2"]
    );
    // A run without the variable (the MLP runs have no `rank`) does not match.
    assert_eq!(names("rank < 8"), ["r4-s1", "r4-s2"]);
    assert_eq!(names("model == \"mlp\""), ["wd0.0", "wd0.1"]);
    assert_eq!(names("best_val_loss < 0.42"), ["r8-s1", "wd0.0", "wd0.1"]);
    assert_eq!(names("final[\"val/accuracy\"] >= 0.93"), ["wd0.1"]);
    assert_eq!(
        names("experiment == \"lora-rank\" and seed == 2 and train_optimizer_lr == 0.01"),
        ["r16-s2", "r4-s2", "r8-s2"]
    );
}

#[test]
fn groups_aggregate_the_other_varying_values() {
    let (_, report) = compared(&["runs/lora-rank", "--group-by", "rank"]);
    assert_eq!(report["group_by"], serde_json::json!(["rank"]));
    let r8 = row(&report, "rank=8");
    assert_eq!(r8["runs"], 2);
    assert_eq!(r8["status"], "completed");
    let loss = &r8["metrics"]["final:val/loss"];
    assert!((loss["mean"].as_f64().unwrap() - 0.43).abs() < 1e-12);
    // Sample standard deviation of 0.41 and 0.45.
    assert!((loss["std"].as_f64().unwrap() - 0.028284271247461905).abs() < 1e-12);
    assert_eq!(loss["n"], 2);
    let r16 = row(&report, "rank=16");
    assert_eq!(r16["status"], "1 failed, 1 running");
    assert_eq!(report["rows"][0]["name"], "rank=8");
    assert_eq!(report["rows"][0]["best"], true);
    // Settings group too, by key or by a short name; several keys at once.
    let (_, by_alpha) = compared(&["runs/lora-rank", "--group-by", "lora.alpha,seed"]);
    assert_eq!(by_alpha["rows"].as_array().unwrap().len(), 6);
    let (_, by_kind) = compared(&["runs", "--group-by", "model"]);
    let names: Vec<&str> = by_kind["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    // Each group holds one experiment's runs: the groups come in experiment order.
    assert_eq!(names, ["model=llama", "model=mlp"]);
    // A short name several settings end in is ambiguous.
    let out = compare(&["runs", "--group-by", "dropout"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_saved_baseline_reads_back_identically_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["csv", "json"] {
        let file = dir.path().join(format!("base.{ext}"));
        let file = file.to_str().unwrap();
        let filter = "status == \"completed\"";
        let out = compare(&["runs", "--filter", filter, "--save-baseline", file]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("saved the baseline"),
            "{}",
            stderr(&out)
        );
        let (code, report) = compared(&[
            "runs",
            "--filter",
            filter,
            "--baseline",
            file,
            "--fail-on",
            "val/loss",
            "--fail-on",
            "best:val/accuracy",
        ]);
        assert_eq!(code, Some(0), "{ext}");
        assert_eq!(report["gate"]["passed"], true);
        assert!(report["gate"]["problems"].as_array().unwrap().is_empty());
        for r in report["rows"].as_array().unwrap() {
            assert_eq!(r["gate"], "pass");
            for (k, v) in r["metrics"].as_object().unwrap() {
                assert_eq!(&r["baseline"][k], v, "{ext} {} {k}", r["name"]);
            }
        }
        // Same name in another experiment's baseline row does not join.
        assert_eq!(report["gate"]["checks"].as_array().unwrap().len(), 12);
    }
    let csv = std::fs::read_to_string(dir.path().join("base.csv")).unwrap();
    assert!(csv.starts_with("name,experiment,status,rank,wd,"), "{csv}");
    // Groups are saved by their names and gated on their means.
    let groups = dir.path().join("groups.json");
    let groups = groups.to_str().unwrap();
    let filter = "status == \"completed\"";
    let args = ["runs/lora-rank", "--filter", filter, "--group-by", "rank"];
    let out = compare(&[&args[..], &["--save-baseline", groups]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, report) =
        compared(&[&args[..], &["--baseline", groups, "--fail-on", "val/loss"]].concat());
    assert_eq!(code, Some(0));
    assert_eq!(row(&report, "rank=4")["gate"], "pass");
    assert_eq!(report["gate"]["checks"].as_array().unwrap().len(), 2);
}

#[test]
fn gates_judge_each_direction_with_relative_and_absolute_tolerances() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.csv");
    // r4-s1 now has val/loss 0.52 (minimize) and val/accuracy 0.81 (maximize).
    std::fs::write(
        &base,
        "name,experiment,final:val/loss,final:val/accuracy\nr4-s1,lora-rank,0.51,0.82\n",
    )
    .unwrap();
    let gate = |rule: &str| -> (Option<i32>, serde_json::Value) {
        compared(&[
            "runs/lora-rank",
            "--filter",
            "name == \"r4-s1\"",
            "--baseline",
            base.to_str().unwrap(),
            "--fail-on",
            rule,
        ])
    };
    // +1.96% on a metric to minimize.
    assert_eq!(gate("val/loss>+2%").0, Some(0));
    assert_eq!(gate("val/loss>1%").0, Some(1));
    assert_eq!(gate("val/loss>0.02").0, Some(0));
    assert_eq!(gate("val/loss>0.005").0, Some(1));
    assert_eq!(gate("val/loss").0, Some(1));
    // -0.01 (-1.22%) on a metric to maximize.
    assert_eq!(gate("val/accuracy<2%").0, Some(0));
    assert_eq!(gate("val/accuracy<-1%").0, Some(1));
    assert_eq!(gate("val/accuracy<0.02").0, Some(0));
    assert_eq!(gate("val/accuracy<0.005").0, Some(1));
    // Without a comparison sign the direction is the metric's: accuracy up, loss down.
    let (code, report) = gate("val/accuracy");
    assert_eq!(code, Some(1));
    let check = &report["gate"]["checks"][0];
    assert_eq!(check["direction"], "maximize");
    assert_eq!(check["value"], 0.81);
    assert_eq!(check["baseline"], 0.82);
    assert_eq!(check["limit"], 0.82);
    assert_eq!(check["problem"], "regression");
    assert_eq!(
        check["message"],
        "val/accuracy fell to 0.8100 from 0.8200 (-1.22%); the gate allows down to 0.8200 (the baseline)"
    );
    // A signed tolerance is taken as written: `>-1%` demands an improvement of 1%.
    assert_eq!(gate("val/loss>-1%").0, Some(1));
    // A metric the baseline lacks is a problem, not a pass.
    let (code, report) = gate("train/loss>10%");
    assert_eq!(code, Some(1));
    assert_eq!(report["gate"]["problems"][0]["kind"], "no value");
}

#[test]
fn the_regression_block_of_the_runs_is_the_default_gate() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r4-s1");
    std::fs::create_dir(&run).unwrap();
    let src = fixtures().join("runs/lora-rank/20250101-120000/r4-s1");
    for f in ["summary.json", "metrics.jsonl"] {
        std::fs::copy(src.join(f), run.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["regression.baseline"] = "unused.csv".into();
    config["regression.metric"] = serde_json::json!([
        {"name": "val/loss", "tolerance": "5%"},
        {"name": "val/accuracy", "tolerance": 0.005}
    ]);
    std::fs::write(run.join("config.json"), config.to_string()).unwrap();
    let base = dir.path().join("base.csv");
    std::fs::write(
        &base,
        "name,final:val/loss,final:val/accuracy\nr4-s1,0.51,0.82\n",
    )
    .unwrap();
    let out = xp(
        dir.path(),
        &[
            "compare",
            "r4-s1",
            "--baseline",
            "base.csv",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out);
    let checks = report["gate"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["metric"], "val/loss");
    assert_eq!(checks[0]["direction"], "minimize");
    assert_eq!(checks[0]["tolerance"], "5%");
    assert_eq!(checks[0]["passed"], true);
    assert_eq!(checks[1]["metric"], "val/accuracy");
    assert_eq!(checks[1]["direction"], "maximize");
    assert_eq!(checks[1]["passed"], false);
    // `--fail-on` replaces the block's gates.
    let out = xp(
        dir.path(),
        &[
            "compare",
            "r4-s1",
            "--baseline",
            "base.csv",
            "--fail-on",
            "val/loss>5%",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// A baseline with neither `--fail-on` nor a `regression` block still gates the objective: no
/// more than 1% worse (`val/loss` here, to minimize), and the output says which rule it applied.
#[test]
fn without_rules_the_objective_is_gated_within_one_percent() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.csv");
    let gate = |baseline_loss: f64| -> Output {
        std::fs::write(
            &base,
            format!("name,experiment,final:val/loss\nr4-s1,lora-rank,{baseline_loss}\n"),
        )
        .unwrap();
        compare(&[
            "runs/lora-rank",
            "--filter",
            "name == \"r4-s1\"",
            "--baseline",
            base.to_str().unwrap(),
        ])
    };
    // r4-s1's final val/loss is 0.52: twice a baseline of 0.26 fails, 0.9% worse passes.
    let doubled = gate(0.26);
    assert_eq!(doubled.status.code(), Some(1), "{}", stdout(&doubled));
    let text = stdout(&doubled);
    assert!(
        text.contains("val/loss rose to 0.5200 from 0.2600"),
        "{text}"
    );
    assert!(
        text.contains("rules (the default: the objective within 1%): val/loss ≤ baseline + 1%"),
        "{text}"
    );
    assert_eq!(gate(0.5154).status.code(), Some(0));
    assert_eq!(gate(0.514).status.code(), Some(1));
}

#[test]
fn joins_by_axes_and_rejects_ambiguous_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.csv");
    std::fs::write(
        &base,
        "name,wd,final:val/loss\nold-a,0.0,0.3\nold-b,0.1,0.27\n",
    )
    .unwrap();
    let base = base.to_str().unwrap();
    let (code, report) = compared(&[
        "runs/mlp-wd",
        "--baseline",
        base,
        "--join-on",
        "wd",
        "--fail-on",
        "val/loss",
    ]);
    assert_eq!(code, Some(0));
    assert_eq!(row(&report, "wd0.1")["baseline"]["final:val/loss"], 0.27);
    // By name these rows match nothing: both compared runs are new, both baseline rows missing.
    let (code, report) = compared(&["runs/mlp-wd", "--baseline", base]);
    assert_eq!(code, Some(1));
    assert_eq!(
        report["gate"]["new_runs"],
        serde_json::json!(["wd0.1", "wd0.0"])
    );
    let kinds: Vec<&str> = report["gate"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["missing", "missing"]);
    assert_eq!(report["rows"][0]["status"], "missing");
    // Two rows for one run cannot judge it.
    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, "name,final:val/loss\nwd0.0,0.3\nwd0.0,0.31\n").unwrap();
    let out = compare(&["runs/mlp-wd", "--baseline", dup.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("two rows for run `wd0.0` (line 2 and line 3)"),
        "{}",
        stderr(&out)
    );
    let out = compare(&["runs/mlp-wd", "--baseline", base, "--join-on", "lr"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("it has no column `lr` to join on"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_filter_leaves_baseline_runs_it_excludes_alone() {
    let (code, report) = compared(&[
        "runs/lora-rank",
        "--filter",
        "rank == 8",
        "--baseline",
        "baseline.csv",
        "--fail-on",
        "val/loss>2%",
    ]);
    // r4-* and r16-s1 are filtered out, not missing; r32-s1 is missing from disk.
    assert_eq!(code, Some(1));
    let problems = report["gate"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["run"], "r32-s1");
}

#[test]
fn usage_errors_say_what_to_do_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["nowhere"], "error: `nowhere` does not exist"),
        (&["baseline.csv"], "is a file, not a run or sweep directory"),
        (
            &["runs", "--filter", "rnak >= 8"],
            "help: did you mean `rank`?",
        ),
        (
            &["runs", "--filter", "rank >="],
            "is not a valid expression",
        ),
        (
            &["runs", "--filter", "rank > 100"],
            "matches none of the 8 runs",
        ),
        (
            &["runs", "--metrics", "val/acc"],
            "`--metrics val/acc` matches no metric",
        ),
        (&["runs", "--sort", "val/los"], "did you mean `val/loss`?"),
        (&["runs", "--group-by", "rnak"], "did you mean `rank`?"),
        (
            &["runs", "--baseline", "nope.csv"],
            "baseline nope.csv: no such file",
        ),
        (
            &["runs", "--baseline", "baseline.txt"],
            "a baseline is a .csv or a .json file",
        ),
        (
            &[
                "runs",
                "--baseline",
                "baseline.csv",
                "--fail-on",
                "val/loss>lots",
            ],
            "is not a tolerance",
        ),
        (&["runs", "--junit", "x.xml"], "--baseline"),
        (
            &["runs", "--save-baseline", "b.txt"],
            "a baseline is a .csv or a .json file",
        ),
    ];
    for (args, expected) in cases {
        let out = compare(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    let empty = tempfile::tempdir().unwrap();
    let out = xp(empty.path(), &["compare", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no runs under `.`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_runs_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("sweep/good");
    let bad = dir.path().join("sweep/bad");
    std::fs::create_dir_all(&bad).unwrap();
    copy_dir(&fixtures().join("runs/mlp-wd/20250102-090000/wd0.0"), &good);
    std::fs::write(bad.join("summary.json"), "{ not json").unwrap();
    let out = xp(dir.path(), &["compare", "sweep", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["runs"], 1);
    assert!(
        stderr(&out).contains("warning: skipped `sweep/bad`: summary.json is not a run summary"),
        "{}",
        stderr(&out)
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The CI experiment's gate, made to fail: 30 steps cannot reach the baseline's accuracy. (The
/// committed baseline passing is checked by `.ci/run`, which trains the whole sweep.)
#[test]
fn xp_run_fails_the_ci_gate_readably_when_training_gets_worse() {
    let runs = tempfile::tempdir().unwrap();
    let out = xp(
        &root(),
        &[
            "run",
            "experiments/ci.kdl",
            "--runs-dir",
            runs.path().to_str().unwrap(),
            "--set",
            "train.steps=30",
            "-q",
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(text.contains("gate FAILED: "), "{text}");
    assert!(
        text.contains("against experiments/ci.baseline.csv"),
        "{text}"
    );
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  regression  "))
        .collect();
    assert!(!problems.is_empty(), "{text}");
    assert!(
        text.lines().any(
            |l| l.starts_with("  regression  dim64  val/accuracy fell to ")
                && l.contains("; the gate allows down to ")
                && l.ends_with("(baseline - 0.02)")
        ),
        "{text}"
    );
    assert!(text.contains("val/loss rose to "), "{text}");
}

#[test]
fn xp_run_explains_how_to_create_a_missing_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let kdl = std::fs::read_to_string(root().join("experiments/ci.kdl"))
        .unwrap()
        .replace("ci.baseline.csv", "new.csv");
    std::fs::write(dir.path().join("ci.kdl"), kdl).unwrap();
    let out = xp(
        dir.path(),
        &[
            "run",
            "ci.kdl",
            "--runs-dir",
            "runs",
            "--set",
            "train.steps=30",
            "--only",
            "s*",
            "-q",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("the regression baseline new.csv does not exist yet"));
    let text = stdout(&out);
    assert!(text.contains("gate: no baseline at new.csv yet. To accept these results as the baseline:\n  xp compare runs/ci-mlp/"), "{text}");
    // Following the advice makes the gate pass.
    let advice = text.lines().last().unwrap().trim().to_owned();
    let args: Vec<&str> = advice.split_whitespace().skip(1).collect();
    let saved = xp(dir.path(), &args);
    assert_eq!(saved.status.code(), Some(0), "{}", stderr(&saved));
    let again = xp(
        dir.path(),
        &[
            "run",
            "ci.kdl",
            "--runs-dir",
            "runs",
            "--set",
            "train.steps=30",
            "--only",
            "s*",
            "-q",
        ],
    );
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
    assert!(stdout(&again).contains("gate passed: 4 gated values within tolerance of new.csv"));
}

#[test]
fn watch_shows_the_table_again_until_every_run_has_ended() {
    let dir = tempfile::tempdir().unwrap();
    super::support::copy_tree(
        &fixtures().join("runs/lora-rank/20250101-120000"),
        &dir.path().join("sweep"),
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(["compare", "sweep", "--watch", "--interval", "0.2"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert!(
        child.try_wait().unwrap().is_none(),
        "a run is still running"
    );
    let path = dir.path().join("sweep/r16-s2/summary.json");
    let mut summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    summary["status"] = "completed".into();
    std::fs::write(&path, summary.to_string()).unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed().as_secs() < 20, "--watch did not end");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("1 of 6 runs unfinished"), "{text}");
    // The last table shows the run as completed, and nothing is said after it.
    let last = text.rsplit("runs unfinished").next().unwrap();
    assert!(
        last.contains("r16-s2") && !last.contains("running"),
        "{last}"
    );

    let out = compare(&["sweep", "--watch", "--interval", "0"]);
    assert_eq!(out.status.code(), Some(2));
}
