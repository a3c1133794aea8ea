//! One name for a setting everywhere (DESIGN.md §5): config.json, plan.json and `xp compare`
//! use the dotted KDL path of a setting, and `--set` takes every key they show.

use serde_json::Value;

use crate::it::support::{json, root, stderr, succeeded, xp};

/// A value as one types it after `--set KEY=`: strings bare, lists space-separated.
fn typed(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(typed).collect::<Vec<_>>().join(" "),
        v => v.to_string(),
    }
}

/// Trains `file` for two steps and returns what `xp compare --format json` shows of its
/// settings: the constant ones and each row's varying ones.
fn shown_settings(file: &str) -> (Vec<(String, Value)>, Vec<String>) {
    let runs = tempfile::tempdir().unwrap();
    let runs_dir = runs.path().display().to_string();
    let out = xp(
        &root(),
        &[
            "run",
            file,
            "--set",
            "train.steps=25",
            "--set",
            "train.eval.every=25",
            "--runs-dir",
            &runs_dir,
            "-q",
        ],
    );
    succeeded(&out);
    let compared = json(&xp(&root(), &["compare", &runs_dir, "--format", "json"]));
    let mut shown: Vec<(String, Value)> = Vec::new();
    let mut varying = Vec::new();
    let constant = compared["constant"].as_object().unwrap();
    shown.extend(constant.iter().map(|(k, v)| (k.clone(), v.clone())));
    for row in compared["rows"].as_array().unwrap() {
        for (k, v) in row["settings"].as_object().unwrap() {
            if !shown.iter().any(|(s, _)| s == k) {
                shown.push((k.clone(), v.clone()));
                varying.push(k.clone());
            }
        }
    }
    (shown, varying)
}

#[test]
fn every_setting_compare_shows_is_accepted_by_set() {
    for file in ["experiments/quickstart.kdl", "experiments/lora-sweep.kdl"] {
        let (shown, varying) = shown_settings(file);
        let keys: Vec<&str> = shown.iter().map(|(k, _)| k.as_str()).collect();
        for expected in [
            "train.steps",
            "train.batch-size",
            "train.optimizer",
            "train.optimizer.lr",
            "train.schedule",
            "model",
            "objective.direction",
        ] {
            assert!(
                keys.contains(&expected),
                "{file}: no `{expected}` in {keys:?}"
            );
        }
        for internal in ["length", "fixed", "dims", ".kind", "source", "warmup."] {
            assert!(
                !keys.iter().any(|k| k.contains(internal)),
                "{file}: an internal name `{internal}` in {keys:?}"
            );
        }
        for (key, value) in &shown {
            let set = format!("{key}={}", typed(value));
            let out = xp(&root(), &["plan", file, "--set", &set, "--format", "json"]);
            if varying.contains(key) {
                // Setting an axis's value for every run makes them one run: not a failure of
                // the name, which must still be accepted.
                assert!(
                    !stderr(&out).contains("xp::override"),
                    "--set {set}: {}",
                    stderr(&out)
                );
                continue;
            }
            assert_eq!(out.status.code(), Some(0), "--set {set}: {}", stderr(&out));
            let plan = json(&out);
            assert_eq!(&plan[0]["runs"][0]["config"][key], value, "--set {set}");
        }
    }
}

#[test]
fn config_json_uses_the_names_of_the_kdl() {
    let out = xp(
        &root(),
        &["plan", "experiments/quickstart.kdl", "--format", "json"],
    );
    let plan = json(&out);
    let config = serde_json::to_string_pretty(&plan[0]["runs"][0]["config"]).unwrap();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("tests/snapshots/names"));
    settings.bind(|| insta::assert_snapshot!("quickstart-config", config));
}

#[test]
fn a_schedule_option_set_by_a_wrong_name_lists_the_schedule_properties() {
    let out = xp(
        &root(),
        &[
            "plan",
            "experiments/quickstart.kdl",
            "--set",
            "train.schedule.warmup.steps=5",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("xp::override::unknown-path"), "{err}");
    assert!(
        err.contains("`warmup-steps`, `warmup-ratio` or `warmup-epochs`"),
        "{err}"
    );
}

#[test]
fn set_takes_lists_and_named_arguments() {
    let out = xp(
        &root(),
        &[
            "plan",
            "experiments/lora-sweep.kdl",
            "--set",
            "lora.targets=[q_proj v_proj]",
            "--set",
            "objective.direction=maximize",
            "--set",
            "objective=val/accuracy",
            "--format",
            "json",
        ],
    );
    succeeded(&out);
    let config = &json(&out)[0]["runs"][0]["config"];
    assert_eq!(
        config["lora.targets"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(config["objective"], "val/accuracy");
    assert_eq!(config["objective.direction"], "maximize");
}
