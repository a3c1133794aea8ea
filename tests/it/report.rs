//! `xp report`: one self-contained page of the fixture runs (a failed run, a running one, two
//! experiments) and of a run whose name is markup, and of a sweep just trained; paths without
//! runs and outputs that cannot be written are usage errors.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use super::support::{copy_tree, root, stderr, stdout, xp};

/// A run name that would run a script if it reached the page as markup.
pub const EVIL: &str = "<script>alert(1)</script>";
pub const EVIL_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";
/// The fixtures' failed run, and why it failed.
const FAILED: &str = "r16-s1";
const REASON: &str = "saving the model failed: No space left on device (os error 28)";

/// The compare fixtures under `dir/runs`, and a diverged run named [`EVIL`] whose reason and
/// metrics hold markup and whose `metrics.jsonl` has a torn line, a null and a line that is not
/// an object. Returns the run names.
pub fn fixture_runs(dir: &Path) -> Vec<String> {
    copy_tree(
        &root().join("tests/fixtures/compare/runs"),
        &dir.join("runs"),
    );
    let evil = dir.join("runs/mlp-wd/20250102-090000/evil");
    copy_tree(&dir.join("runs/mlp-wd/20250102-090000/wd0.0"), &evil);
    let mut summary: Value =
        serde_json::from_str(&std::fs::read_to_string(evil.join("summary.json")).unwrap()).unwrap();
    summary["name"] = json!(EVIL);
    summary["status"] = json!("diverged");
    summary["reason"] = json!("loss is </script><b>NaN</b> at step 3");
    summary["axes"] = json!({"wd": "</td><script>"});
    std::fs::write(evil.join("summary.json"), summary.to_string()).unwrap();
    std::fs::write(
        evil.join("metrics.jsonl"),
        concat!(
            "{\"step\":1,\"epoch\":0.1,\"time_s\":0.1,\"train/loss\":2.5,\"train/lr\":0.001}\n",
            "{\"step\":2,\"epoch\":0.2,\"time_s\":0.2,\"train/loss\":null,\"val/loss\":2.0}\n",
            "[\"not\", \"an object\"]\n",
            "{\"step\":3,\"epoch\":0.3,\"time_s\":0.3,\"train/loss\":1.5,\"</script><script>x\":1}\n",
            "{\"step\":4,\"train/lo",
        ),
    )
    .unwrap();
    let mut names: Vec<String> = ["r4-s1", "r4-s2", "r8-s1", "r8-s2", "r16-s1", "r16-s2"]
        .into_iter()
        .chain(["wd0.0", "wd0.1"])
        .map(str::to_owned)
        .collect();
    names.push(EVIL.to_owned());
    names
}

/// `xp report ARGS` in `dir`; the page written to `dir/report.html`.
fn report(dir: &Path, args: &[&str]) -> (Output, String) {
    let mut all = vec!["report"];
    all.extend(args);
    let out = xp(dir, &all);
    let page = std::fs::read_to_string(dir.join("report.html")).unwrap_or_default();
    (out, page)
}

/// The JSON the page's script draws from.
pub fn embedded(page: &str) -> Value {
    let start = "<script type=\"application/json\" id=\"report-data\">";
    let from = page.find(start).expect("the page embeds its data") + start.len();
    let len = page[from..].find("</script>").unwrap();
    serde_json::from_str(&page[from..from + len]).expect("the embedded data is JSON")
}

/// The rows of the comparison table's body.
pub fn table_rows(page: &str) -> usize {
    let from = page.find("<table id=\"runs-table\"").unwrap();
    let body = &page[from..];
    let body = &body[body.find("<tbody>").unwrap()..body.find("</tbody>").unwrap()];
    body.matches("<tr").count()
}

#[test]
fn a_report_is_one_page_that_shows_every_run_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let names = fixture_runs(dir.path());
    let (out, page) = report(dir.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "wrote report.html (9 runs)\n");
    assert!(page.starts_with("<!doctype html>"));
    assert_eq!(page.matches("<html").count(), 1);
    assert_eq!(page.matches("</html>").count(), 1);
    // Self-contained: nothing fetched from anywhere.
    for outside in ["http://", "https://", "<link", " src=", "@import", "url("] {
        assert!(!page.contains(outside), "the page refers to {outside}");
    }
    // The two scripts of the page, and none from a run's strings.
    assert_eq!(page.matches("<script").count(), 2);
    assert!(!page.contains(EVIL));
    assert!(!page.contains("<b>NaN</b>"));
    assert!(!page.contains("</td><script>"));
    for name in &names {
        let escaped = name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(page.contains(&format!("<td>{escaped}</td>")), "{name}");
    }
    assert!(page.contains(EVIL_ESCAPED));
    assert!(page.contains("loss is &lt;/script&gt;&lt;b&gt;NaN&lt;/b&gt; at step 3"));
    assert_eq!(table_rows(&page), names.len());
    assert!(page.contains("<table id=\"runs-table\" class=\"sortable\">"));
    assert!(page.contains("<th data-type=\"num\" class=\"num\">best:val/loss</th>"));
}

#[test]
fn failed_runs_are_listed_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    fixture_runs(dir.path());
    let (out, page) = report(dir.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let problems = &page[page.find("<ul class=\"problems\">").unwrap()..];
    let problems = &problems[..problems.find("</ul>").unwrap()];
    assert!(problems.contains(&format!(
        "<li class=\"status-failed\"><b>{FAILED}</b> failed: <span class=\"reason\">{REASON}</span></li>"
    )));
    assert!(problems.contains(&format!("<b>{EVIL_ESCAPED}</b> diverged")));
    assert!(!problems.contains("r16-s2"), "a running run is no problem");
    assert!(page.contains("<span class=\"chip status-failed\">1 failed</span>"));
    assert!(page.contains("<span class=\"chip status-running\">1 running</span>"));
    assert!(page.contains("<tr class=\"status-failed bad\">"));
}

#[test]
fn the_embedded_data_holds_each_runs_curves_in_table_order() {
    let dir = tempfile::tempdir().unwrap();
    let names = fixture_runs(dir.path());
    let (out, page) = report(dir.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let data = embedded(&page);
    // The losses, the objective of the lora-rank runs, the learning rate.
    assert_eq!(
        data["charts"],
        json!(["train/loss", "val/loss", "val/accuracy", "train/lr"])
    );
    assert_eq!(data["own"], json!(["train/loss", "val/loss"]));
    let runs = data["runs"].as_array().unwrap();
    let mut shown: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    // The table's order is the script's: the first row is the first run drawn.
    let first = &page[page.find("<tbody>").unwrap()..];
    assert!(first.contains(&format!("<td>{}</td>", shown[0])));
    shown.sort_unstable();
    let mut expected: Vec<&str> = names.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(shown, expected);
    let evil = runs.iter().find(|r| r["name"] == EVIL).unwrap();
    // The torn line, the null and the line that is not an object are left out.
    assert_eq!(
        evil["curves"]["train/loss"],
        json!({"x": [1, 3], "y": [2.5, 1.5]})
    );
    assert_eq!(evil["curves"]["val/loss"], json!({"x": [2], "y": [2.0]}));
    let failed = runs.iter().find(|r| r["name"] == FAILED).unwrap();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], REASON);
    assert_eq!(failed["curves"]["val/loss"]["y"], json!([0.516, 0.43]));
}

#[test]
fn a_trained_sweep_gets_a_report_of_its_curves() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let trained = xp(
        &root(),
        &[
            "run",
            "experiments/quickstart.kdl",
            "--runs-dir",
            runs.to_str().unwrap(),
            "--set",
            "train.steps=30",
            "--set",
            "train.eval.every=15",
            "-q",
        ],
    );
    assert_eq!(trained.status.code(), Some(0), "{}", stderr(&trained));
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let target = out_dir.join("q.html");
    let out = xp(
        dir.path(),
        &[
            "report",
            "runs/quickstart/current",
            "-o",
            target.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("wrote {} (3 runs)\n", target.display())
    );
    let page = std::fs::read_to_string(&target).unwrap();
    assert!(page.contains("<h1>quickstart</h1>"));
    let data = embedded(&page);
    // The losses, the objective, the learning rate, and what each step's batch held and the
    // memory it took.
    assert_eq!(
        data["charts"],
        json!([
            "train/loss",
            "val/loss",
            "val/accuracy",
            "train/lr",
            "train/batch_size",
            "train/padding_ratio",
            "train/peak_memory_bytes"
        ])
    );
    for run in data["runs"].as_array().unwrap() {
        let loss = &run["curves"]["train/loss"];
        assert!(loss["x"].as_array().unwrap().len() >= 2, "{run}");
        assert_eq!(run["curves"]["val/loss"]["x"], json!([15, 30]), "{run}");
        assert_eq!(run["status"], "completed");
    }
    // The differing setting, a row per run.
    let config = &page[page.find("<section id=\"config\">").unwrap()..];
    assert!(config.contains("<th>train.optimizer.lr</th>"));
    assert!(config.contains("<tr><td>lr0.01</td><td>0.01</td></tr>"));
}

#[test]
fn paths_without_runs_and_unwritable_outputs_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("empty")).unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["missing"], "error: `missing` does not exist"),
        (&["empty"], "error: no runs under `empty`"),
        (&[], "required"),
        (
            &["runs", "-o", "no/such/dir/r.html"],
            "error: cannot write the report `no/such/dir/r.html`: ",
        ),
    ];
    fixture_runs(dir.path());
    for (args, message) in cases {
        let (out, _) = report(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
    assert!(!dir.path().join("report.html").exists());
    // A directory where the file should go.
    std::fs::create_dir(dir.path().join("taken.html")).unwrap();
    let (out, _) = report(dir.path(), &["runs", "-o", "taken.html"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot write the report `taken.html`"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

/// The headings of the page's comparison table.
pub fn table_headings(page: &str) -> Vec<String> {
    let from = page.find("<table id=\"runs-table\"").unwrap();
    let head = &page[from..];
    let head = &head[..head.find("</thead>").unwrap()];
    head.split("<th data-type=")
        .skip(1)
        .map(|th| {
            let text = &th[th.find('>').unwrap() + 1..];
            text[..text.find("</th>").unwrap()].to_owned()
        })
        .collect()
}

#[test]
#[cfg(unix)]
fn a_report_of_many_sweeps_names_every_run_once_and_shows_metrics_first() {
    let dir = tempfile::tempdir().unwrap();
    super::compare_many::many_sweeps(dir.path());
    let (out, page) = report(dir.path(), &["runs"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let data = embedded(&page);
    let runs = data["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 15);
    let mut labels: Vec<&str> = runs.iter().map(|r| r["label"].as_str().unwrap()).collect();
    // A name one sweep alone has stays as it is; a repeated one says its sweep.
    assert!(labels.contains(&"wd0.1"), "{labels:?}");
    assert!(labels.contains(&"20250301-080000/wd0.0"), "{labels:?}");
    assert!(labels.contains(&"20250101-120000/r8-s1"), "{labels:?}");
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), runs.len(), "legend names are unique");
    // The table: what a row is, then the metrics, then the settings.
    let headings = table_headings(&page);
    let at = |h: &str| {
        headings
            .iter()
            .position(|x| x == h)
            .unwrap_or_else(|| panic!("no {h} in {headings:?}"))
    };
    assert!(at("name") < at("sweep") && at("sweep") < at("experiment"));
    assert!(at("status") < at("best:val/loss"));
    assert!(at("tokens_per_s") < at("lora.rank"), "{headings:?}");
    // Rows of an experiment together: the lora-rank rows, then the mlp-wd ones.
    let body = &page[page.find("<tbody>").unwrap()..page.find("</tbody>").unwrap()];
    let first_mlp = body.find("<td>mlp-wd</td>").unwrap();
    assert!(!body[first_mlp..].contains("<td>lora-rank</td>"));
}
