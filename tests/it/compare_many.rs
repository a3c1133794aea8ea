//! `xp compare` over several experiments and repeated sweeps, as `xp compare runs/*` meets them:
//! the table fitted to 80 and 200 columns, `--wide`, `--latest`, `-v`, rows grouped by
//! experiment and each experiment ranked by its own objective, a sweep column where names
//! repeat.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::support::{copy_tree, json, root, stderr, stdout};

/// The compare fixtures under `dir/runs` and two later sweeps: lora-rank again, every run's
/// val/loss 0.05 lower (its `current` moves there), and mlp-wd's `wd0.0` again, now the most
/// accurate run though not the one of lowest loss. (The copy leaves out the fixtures' links.) Run names repeat across sweeps, and the two
/// experiments rank by different objectives: val/loss to minimize, val/accuracy to maximize.
pub fn many_sweeps(dir: &Path) {
    let runs = dir.join("runs");
    copy_tree(&root().join("tests/fixtures/compare/runs"), &runs);
    let lora = runs.join("lora-rank");
    copy_tree(&lora.join("20250101-120000"), &lora.join("20250201-120000"));
    for entry in std::fs::read_dir(lora.join("20250201-120000")).unwrap() {
        edit_summary(&entry.unwrap().path(), |s| {
            // The running run has its values in metrics.jsonl alone.
            if let Some(loss) = s["final"]["val/loss"].as_f64() {
                s["final"]["val/loss"] = (loss - 0.05).into();
                s["best"]["val/loss"]["value"] = (loss - 0.05).into();
            }
        });
    }
    link("20250201-120000", &lora.join("current"));
    let mlp = runs.join("mlp-wd");
    let again = mlp.join("20250301-080000/wd0.0");
    copy_tree(&mlp.join("20250102-090000/wd0.0"), &again);
    edit_summary(&again, |s| {
        s["final"]["val/accuracy"] = 0.95.into();
        s["best"]["val/accuracy"]["value"] = 0.95.into();
    });
    link("20250301-080000", &mlp.join("current"));
}

fn edit_summary(run: &Path, change: impl Fn(&mut Value)) {
    let path = run.join("summary.json");
    let mut summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    change(&mut summary);
    std::fs::write(&path, summary.to_string()).unwrap();
}

fn link(target: &str, at: &Path) {
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, at).unwrap();
    #[cfg(not(unix))]
    let _ = (target, at);
}

/// `xp compare ARGS` in `dir` with `COLUMNS` set to `columns` (unset: `None`).
fn compare_in(dir: &Path, columns: Option<usize>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xp"));
    command
        .arg("compare")
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("COLUMNS");
    if let Some(n) = columns {
        command.env("COLUMNS", n.to_string());
    }
    command.output().expect("the xp binary runs")
}

/// The cases snapshot: a name, `COLUMNS` and the arguments.
const CASES: &[(&str, Option<usize>, &[&str])] = &[
    ("sweeps-80", Some(80), &["runs"]),
    ("sweeps-200", Some(200), &["runs"]),
    ("sweeps-latest-80", Some(80), &["runs", "--latest"]),
    ("sweeps-wide", Some(80), &["runs/mlp-wd", "--wide"]),
    ("sweeps-verbose-80", Some(80), &["runs/mlp-wd", "-v"]),
    (
        "sweeps-group-80",
        Some(80),
        &["runs/lora-rank", "--group-by", "rank"],
    ),
];

#[test]
#[cfg(unix)]
fn many_sweeps_match_their_snapshots_at_80_and_200_columns() {
    let dir = tempfile::tempdir().unwrap();
    many_sweeps(dir.path());
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("tests/snapshots/compare"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        for (name, columns, args) in CASES {
            let out = compare_in(dir.path(), *columns, args);
            assert!(stderr(&out).is_empty(), "{name}: {}", stderr(&out));
            insta::assert_snapshot!(
                *name,
                format!(
                    "COLUMNS={} xp compare {}\nexit: {:?}\n{}",
                    columns.map_or("".into(), |c| c.to_string()),
                    args.join(" "),
                    out.status.code(),
                    stdout(&out)
                )
            );
        }
    });
}

/// The longest line of a text, in characters.
fn widest(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

/// The table's heading line: the first line that starts with spaces and holds `name`.
fn heading(text: &str) -> &str {
    text.lines()
        .find(|l| l.trim_start().starts_with("name ") && l.starts_with(' '))
        .unwrap_or_else(|| panic!("no heading in {text}"))
}

#[test]
#[cfg(unix)]
fn the_table_fits_the_width_and_says_what_it_hid() {
    let dir = tempfile::tempdir().unwrap();
    many_sweeps(dir.path());
    for columns in [60, 80, 120, 200] {
        let out = compare_in(dir.path(), Some(columns), &["runs"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let text = stdout(&out);
        // The failure notes say in full why a run failed; everything else fits.
        let table = text.split("\nfailed:\n").next().unwrap();
        assert!(widest(table) <= columns, "{columns}:\n{text}");
        let hidden = text
            .lines()
            .find(|l| l.starts_with("hidden: "))
            .unwrap_or_else(|| panic!("{columns}: nothing hidden in\n{text}"));
        assert!(hidden.ends_with("--wide shows them"), "{hidden}");
    }
    // Without COLUMNS and without a terminal, a wide default; --wide shows every column.
    let piped = stdout(&compare_in(dir.path(), None, &["runs"]));
    assert!(widest(&piped) <= 200, "{piped}");
    let wide = stdout(&compare_in(dir.path(), Some(80), &["runs", "--wide"]));
    assert!(!wide.contains("hidden: "), "{wide}");
    let report = json(&compare_in(
        dir.path(),
        Some(80),
        &["runs", "--format", "json"],
    ));
    let head = heading(&wide);
    for column in report["columns"].as_array().unwrap() {
        assert!(head.contains(column.as_str().unwrap()), "{column}: {head}");
    }
    assert!(widest(&wide) > 200);
    // Metrics come before settings: the objective first, a swept setting after every metric.
    let first_metric = head.find("best:val/loss").unwrap();
    let last_metric = head.find("tokens_per_s").unwrap();
    let rank = head.find(" lora.rank ").unwrap();
    assert!(head.find("status").unwrap() < first_metric);
    assert!(last_metric < rank, "{head}");
    // CSV, JSON and Markdown carry everything at any width.
    for format in ["csv", "json", "markdown"] {
        let narrow = stdout(&compare_in(
            dir.path(),
            Some(40),
            &["runs", "--format", format],
        ));
        let wide = stdout(&compare_in(
            dir.path(),
            Some(400),
            &["runs", "--format", format],
        ));
        assert_eq!(narrow, wide, "{format}");
        assert!(!narrow.contains('…'), "{format}");
    }
}

/// The names of the rows of a JSON comparison, with their experiment and sweep.
fn rows(report: &Value) -> Vec<(String, String, String)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["experiment"].as_str().unwrap().to_owned(),
                r["sweep"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
#[cfg(unix)]
fn each_experiment_is_ranked_by_its_own_objective_with_its_own_best() {
    let dir = tempfile::tempdir().unwrap();
    many_sweeps(dir.path());
    let report = json(&compare_in(dir.path(), None, &["runs", "--format", "json"]));
    let all = report["rows"].as_array().unwrap();
    let experiments: Vec<&str> = all
        .iter()
        .map(|r| r["experiment"].as_str().unwrap())
        .collect();
    // Rows together by experiment.
    let split = experiments.iter().position(|e| *e == "mlp-wd").unwrap();
    assert!(experiments[..split].iter().all(|e| *e == "lora-rank"));
    assert!(experiments[split..].iter().all(|e| *e == "mlp-wd"));
    // lora-rank by best val/loss, lowest first; mlp-wd by best val/accuracy, highest first,
    // though its lowest val/loss is another run's.
    let values = |from: usize, to: usize, column: &str| -> Vec<f64> {
        all[from..to]
            .iter()
            .filter_map(|r| r["metrics"][column].as_f64())
            .collect()
    };
    let loss = values(0, split, "best:val/loss");
    assert_eq!(loss.len(), split);
    assert!(loss.windows(2).all(|w| w[0] <= w[1]), "{loss:?}");
    let accuracy = values(split, all.len(), "best:val/accuracy");
    assert_eq!(accuracy, [0.95, 0.93, 0.9]);
    let mlp_loss = values(split, all.len(), "best:val/loss");
    assert!(mlp_loss[0] > mlp_loss[1], "{mlp_loss:?}");
    // One best row per experiment: the first of each.
    let best: Vec<usize> = (0..all.len()).filter(|i| all[*i]["best"] == true).collect();
    assert_eq!(best, [0, split]);
    let groups = &report["groups"];
    assert_eq!(groups[0]["experiment"], "lora-rank");
    assert_eq!(groups[0]["sort"]["column"], "best:val/loss");
    assert_eq!(groups[1]["sort"]["column"], "best:val/accuracy");
    assert_eq!(groups[1]["sort"]["direction"], "maximize");
    // The table says so, a line above each experiment's rows.
    let text = stdout(&compare_in(dir.path(), Some(200), &["runs"]));
    assert!(
        text.contains("15 runs of 2 experiments (lora-rank, mlp-wd) · * best of each\n"),
        "{text}"
    );
    assert!(
        text.contains("\nmlp-wd: 3 runs, ranked by best:val/accuracy (maximize)\n*  wd0.0 "),
        "{text}"
    );
    // `--sort` sorts every experiment by the metric given.
    let sorted = json(&compare_in(
        dir.path(),
        None,
        &["runs", "--sort", "val/loss", "--format", "json"],
    ));
    assert_eq!(sorted["sort"]["column"], "best:val/loss");
    let names: Vec<String> = rows(&sorted).into_iter().map(|r| r.2).collect();
    assert_eq!(names[split], "wd0.1", "{names:?}");
}

#[test]
#[cfg(unix)]
fn repeated_names_get_a_sweep_column_and_latest_keeps_the_current_sweeps() {
    let dir = tempfile::tempdir().unwrap();
    many_sweeps(dir.path());
    let report = json(&compare_in(dir.path(), None, &["runs", "--format", "json"]));
    let all = rows(&report);
    assert_eq!(all.len(), 15);
    assert!(all.contains(&("lora-rank".into(), "20250101-120000".into(), "r8-s1".into())));
    assert!(all.contains(&("lora-rank".into(), "20250201-120000".into(), "r8-s1".into())));
    let text = stdout(&compare_in(dir.path(), Some(120), &["runs"]));
    let head = heading(&text);
    assert!(head.contains(" sweep "), "{head}");
    assert!(text.contains("20250201-120000"), "{text}");
    // --latest: the sweeps `current` points at, reached through the link.
    let latest = rows(&json(&compare_in(
        dir.path(),
        None,
        &["runs", "--latest", "--format", "json"],
    )));
    assert_eq!(latest.len(), 7, "{latest:?}");
    for (experiment, sweep, _) in &latest {
        let current = if experiment == "lora-rank" {
            "20250201-120000"
        } else {
            "20250301-080000"
        };
        assert_eq!(sweep, current, "{latest:?}");
    }
    // Names no longer repeat: no sweep column.
    let text = stdout(&compare_in(dir.path(), Some(120), &["runs", "--latest"]));
    assert!(!heading(&text).contains("sweep"), "{text}");
    // One sweep's names are unique: no sweep column either.
    let text = stdout(&compare_in(
        dir.path(),
        Some(120),
        &["runs/lora-rank/20250101-120000"],
    ));
    assert!(!heading(&text).contains("sweep"), "{text}");
}

#[test]
#[cfg(unix)]
fn constant_settings_are_one_line_and_every_one_with_v() {
    let dir = tempfile::tempdir().unwrap();
    many_sweeps(dir.path());
    let report = json(&compare_in(
        dir.path(),
        None,
        &["runs/lora-rank", "--format", "json"],
    ));
    let constant = report["constant"].as_object().unwrap();
    assert!(constant.len() > 10);
    let text = stdout(&compare_in(dir.path(), Some(80), &["runs/lora-rank"]));
    let line = text
        .lines()
        .find(|l| l.starts_with("constant: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.starts_with(&format!("constant: {} settings (", constant.len())),
        "{line}"
    );
    assert!(line.ends_with(", …); -v lists them"), "{line}");
    assert!(line.chars().count() <= 80);
    let verbose = stdout(&compare_in(dir.path(), Some(80), &["runs/lora-rank", "-v"]));
    assert!(!verbose.contains("-v lists them"));
    for (key, value) in constant {
        let shown = match value {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        if !shown.starts_with('[') {
            assert!(
                verbose.contains(&format!("{key}={shown}")),
                "{key}: {verbose}"
            );
        }
    }
}
