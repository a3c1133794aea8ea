//! Reports in a real browser (headless Chromium): the script draws a curve per run, sorts
//! nothing wrong and raises no error; a run named as markup stays text; a screenshot has
//! content; and a 500-run report loads, with the time it takes printed. Ignored by default:
//! they need Chromium (`chromium`, `chromium-browser`, or the binary `XP_CHROMIUM` names).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::json;

use super::report::{EVIL, EVIL_ESCAPED, fixture_runs, table_rows};
use super::support::{stderr, succeeded, xp};

/// The Chromium binary to drive.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("XP_CHROMIUM") {
        return PathBuf::from(path);
    }
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return PathBuf::from(name);
        }
    }
    panic!("no Chromium: install chromium or set XP_CHROMIUM");
}

/// Headless Chromium on `page` with `args`; its stdout. `--virtual-time-budget` lets the
/// page's script finish before the DOM is dumped or the screenshot taken.
fn headless(page: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .output()
        .expect("Chromium runs");
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The SVG of the chart of `metric`, as the browser has it.
fn chart<'a>(dom: &'a str, metric: &str) -> &'a str {
    let start = dom
        .find(&format!("data-metric=\"{metric}\""))
        .unwrap_or_else(|| panic!("no {metric} chart"));
    let svg = &dom[start..];
    &svg[..svg.find("</svg>").unwrap()]
}

/// What the page's error handler caught.
fn errors(dom: &str) -> &str {
    let start = dom.find("<pre id=\"errors\">").unwrap() + "<pre id=\"errors\">".len();
    &dom[start..start + dom[start..].find("</pre>").unwrap()]
}

fn write_report(dir: &Path, args: &[&str]) -> PathBuf {
    let mut all = vec!["report"];
    all.extend(args);
    let out = xp(dir, &all);
    succeeded(&out);
    dir.join("report.html")
}

#[test]
#[ignore = "needs chromium; .ci/run runs it with --include-ignored"]
fn the_page_draws_its_charts_in_a_browser_and_keeps_names_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let names = fixture_runs(dir.path());
    let page = write_report(dir.path(), &["runs"]);
    let dom = headless(&page, &["--dump-dom"]);
    assert_eq!(errors(&dom), "", "the page's script failed");
    assert_eq!(table_rows(&dom), names.len());
    // A path per run that logged train/loss: drawn by the script, so it ran to the end.
    let loss = chart(&dom, "train/loss");
    assert_eq!(
        loss.matches("<path class=\"curve\"").count(),
        names.len(),
        "{loss}"
    );
    assert!(!loss.contains(" d=\"\""), "every run's curve has points");
    // The small charts are drawn last: the script ran to its end. (Its paint timestamp waits
    // for an animation frame, which a loaded headless browser may not draw before the dump.)
    assert_eq!(dom.matches("<figure class=\"mini ").count(), names.len());
    // The markup name is text everywhere: in the table, the legend and the small charts.
    assert!(!dom.contains(EVIL));
    assert!(!dom.contains("<b>NaN</b>"));
    assert!(
        dom.matches(EVIL_ESCAPED).count() >= 4,
        "table, config, legend, chart"
    );
    assert_eq!(dom.matches("<script").count(), 2);

    let shot = dir.path().join("shot.png");
    headless(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000",
        ],
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.len() > 30_000, "a screenshot of {} bytes", png.len());
}

/// Drives the page as a person would, from a script added to a copy of it: sorts by `steps`,
/// hovers over the middle of the train/loss chart, hides the first run from the legend, turns
/// on the log scale and smoothing; records what it saw on the body for the DOM dump.
const INTERACT: &str = r#"<script>
window.addEventListener('load', function () {
  var body = document.body;
  var steps = Array.prototype.slice.call(document.querySelectorAll('#runs-table th'))
    .filter(function (th) { return th.textContent === 'steps'; })[0];
  steps.click();
  var col = Array.prototype.indexOf.call(steps.parentNode.cells, steps);
  body.setAttribute('data-sorted', Array.prototype.map.call(
    document.querySelectorAll('#runs-table tbody tr'),
    function (tr) { return tr.cells[col].textContent; }).join(','));
  var plot = document.querySelector('svg[data-metric="train/loss"]');
  var box = plot.getBoundingClientRect();
  plot.dispatchEvent(new MouseEvent('mousemove', {
    clientX: box.left + box.width * 0.6, clientY: box.top + box.height * 0.5, bubbles: true }));
  body.setAttribute('data-tip', plot.parentNode.querySelector('.tip').textContent);
  document.querySelector('#legend .entry').click();
  body.setAttribute('data-hidden', Array.prototype.filter.call(
    plot.querySelectorAll('path.curve'),
    function (p) { return !p.getAttribute('d'); }).length);
  var log = document.getElementById('log-y');
  log.checked = true;
  log.dispatchEvent(new Event('change'));
  var smoothing = document.getElementById('smoothing');
  smoothing.value = '0.9';
  smoothing.dispatchEvent(new Event('input'));
  // Both are updated by the handlers themselves (the smoothed redraw waits for a frame, which
  // a loaded headless browser may not draw before the dump).
  body.setAttribute('data-smoothing', document.getElementById('smoothing-value').textContent);
  body.setAttribute('data-log-ticks', plot.querySelectorAll('text.tick').length);
});
</script>
"#;

/// The value of an attribute the interaction script set on the body.
fn recorded<'a>(dom: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let start = dom
        .find(&key)
        .unwrap_or_else(|| panic!("the page recorded no {name}"))
        + key.len();
    &dom[start..start + dom[start..].find('"').unwrap()]
}

#[test]
#[ignore = "needs chromium; .ci/run runs it with --include-ignored"]
fn the_table_sorts_and_the_charts_answer_the_pointer_legend_and_controls() {
    let dir = tempfile::tempdir().unwrap();
    fixture_runs(dir.path());
    let page = write_report(dir.path(), &["runs"]);
    let driven = dir.path().join("driven.html");
    let text = std::fs::read_to_string(&page).unwrap();
    std::fs::write(
        &driven,
        text.replace("</body>", &format!("{INTERACT}</body>")),
    )
    .unwrap();
    let dom = headless(&driven, &["--dump-dom"]);
    assert_eq!(errors(&dom), "", "the page's script failed");
    let sorted = recorded(&dom, "data-sorted");
    let steps: Vec<f64> = sorted
        .split(',')
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("steps `{s}` in `{sorted}`"))
        })
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");
    let tip = recorded(&dom, "data-tip");
    assert!(
        tip.contains("\nstep ") && tip.contains("\ntrain/loss "),
        "{tip}"
    );
    assert_eq!(recorded(&dom, "data-hidden"), "1");
    assert_eq!(recorded(&dom, "data-smoothing"), "0.9");
    assert_ne!(recorded(&dom, "data-log-ticks"), "0");
}

/// Measures the page of many sweeps as it is laid out: how wide the page is against the window,
/// how wide the comparison table is against its box, the legend's names, and whether a small
/// chart's value labels sit beside its curves rather than on them.
const MEASURE: &str = r#"<script>
window.addEventListener('load', function () {
  var body = document.body, page = document.documentElement;
  var table = document.getElementById('runs-table'), box = table.parentNode;
  body.setAttribute('data-page', page.scrollWidth + ',' + window.innerWidth);
  body.setAttribute('data-box', table.scrollWidth + ',' + box.clientWidth + ',' +
    getComputedStyle(box).overflowX);
  body.setAttribute('data-legend', JSON.stringify(Array.prototype.map.call(
    document.querySelectorAll('#legend .entry .name'), function (e) { return e.textContent; })));
  var overlaps = 0, labels = 0;
  Array.prototype.forEach.call(document.querySelectorAll('svg.mini-plot'), function (plot) {
    var right = -Infinity;
    Array.prototype.forEach.call(plot.querySelectorAll('path.mini-curve'), function (p) {
      var b = p.getBBox();
      right = Math.max(right, b.x + b.width);
    });
    Array.prototype.forEach.call(plot.querySelectorAll('text.mini-value'), function (t) {
      labels += 1;
      if (t.getBBox().x < right) overlaps += 1;
    });
  });
  body.setAttribute('data-minis', labels + ',' + overlaps);
});
</script>
"#;

#[test]
#[ignore = "needs chromium; .ci/run runs it with --include-ignored"]
#[cfg(unix)]
fn a_report_of_many_sweeps_keeps_its_table_in_its_box_and_its_names_unique() {
    let dir = tempfile::tempdir().unwrap();
    super::compare_many::many_sweeps(dir.path());
    let page = write_report(dir.path(), &["runs"]);
    let measured = dir.path().join("measured.html");
    let text = std::fs::read_to_string(&page).unwrap();
    std::fs::write(
        &measured,
        text.replace("</body>", &format!("{MEASURE}</body>")),
    )
    .unwrap();
    let numbers = |dom: &str, name: &str| -> Vec<f64> {
        recorded(dom, name)
            .split(',')
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    for window in ["1400,900", "1000,900"] {
        let dom = headless(
            &measured,
            &["--dump-dom", &format!("--window-size={window}")],
        );
        assert_eq!(errors(&dom), "", "the page's script failed");
        // The page is no wider than the window; the table, wider than its box, scrolls in it.
        let page = numbers(&dom, "data-page");
        assert!(page[0] <= page[1], "{window}: page {page:?}");
        let table = numbers(&dom, "data-box");
        assert!(table[0] > table[1], "{window}: table {table:?}");
        assert!(recorded(&dom, "data-box").ends_with(",auto"));
        let legend: Vec<String> =
            serde_json::from_str(&recorded(&dom, "data-legend").replace("&quot;", "\"")).unwrap();
        assert_eq!(legend.len(), 15);
        let mut unique = legend.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), legend.len(), "{legend:?}");
        // Every small chart's labels beside the plot, none over a curve.
        let minis = numbers(&dom, "data-minis");
        assert!(minis[0] >= 15.0, "{minis:?}");
        assert_eq!(minis[1], 0.0, "labels over curves: {minis:?}");
    }
}

/// 500 runs of 300 logged steps each, written as `xp run` writes them.
fn many_runs(sweep: &Path, runs: usize, steps: u64) {
    for i in 0..runs {
        let name = format!("lr{i:03}");
        let run = sweep.join(&name);
        std::fs::create_dir_all(&run).unwrap();
        let lr = 1e-4 * (1.0 + i as f64);
        let summary = json!({
            "name": name, "id": format!("{i:012x}"), "experiment": "scale",
            "status": if i % 50 == 7 { "failed" } else { "completed" },
            "reason": if i % 50 == 7 { Some("loss became NaN") } else { None },
            "axes": {"lr": lr}, "seed": 1, "steps": steps,
            "final": {"train/loss": 1.0, "val/loss": 1.1}, "best": {},
            "wall_s": 10.0,
        });
        std::fs::write(run.join("summary.json"), summary.to_string()).unwrap();
        let config = json!({
            "seed": 1,
            "objective": "val/loss",
            "objective.direction": "minimize",
            "train.steps": steps,
            "train.optimizer": "adamw",
            "train.optimizer.lr": lr,
        });
        std::fs::write(run.join("config.json"), config.to_string()).unwrap();
        let mut lines = String::new();
        for step in 1..=steps {
            let t = step as f64;
            let mut row = json!({
                "step": step, "epoch": t / 100.0, "time_s": t * 0.03,
                "train/loss": 3.0 / (1.0 + t * lr * 10.0) + 0.05 * ((t + i as f64) * 0.7).sin().abs(),
                "train/lr": lr * (1.0 - t / steps as f64),
                "train/grad_norm": 1.0, "train/tokens_per_s": 20000.0,
            });
            if step % 10 == 0 {
                row["val/loss"] = json!(3.2 / (1.0 + t * lr * 8.0));
                row["val/accuracy"] = json!(1.0 - 1.0 / (1.0 + t * lr * 8.0));
            }
            lines.push_str(&row.to_string());
            lines.push('\n');
        }
        std::fs::write(run.join("metrics.jsonl"), lines).unwrap();
    }
}

/// The load time of a large report: BENCHMARKS.md's "Reports" figures come from this test's
/// output (`cargo test --release --test main browser -- --ignored --nocapture`).
#[test]
#[ignore = "needs chromium; .ci/run runs it with --include-ignored"]
fn a_report_of_500_runs_loads_in_a_browser() {
    const RUNS: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    many_runs(&dir.path().join("sweep"), RUNS, 300);
    let started = Instant::now();
    let page = write_report(dir.path(), &["sweep"]);
    let written = started.elapsed();
    let size = std::fs::metadata(&page).unwrap().len();

    let blank = dir.path().join("blank.html");
    std::fs::write(&blank, "<!doctype html><title>blank</title><p>blank</p>").unwrap();
    let started = Instant::now();
    headless(&blank, &["--dump-dom"]);
    let browser_alone = started.elapsed();
    let started = Instant::now();
    let dom = headless(&page, &["--dump-dom"]);
    let loaded = started.elapsed();

    assert_eq!(errors(&dom), "", "the page's script failed");
    assert_eq!(table_rows(&dom), RUNS);
    assert_eq!(
        chart(&dom, "val/loss")
            .matches("<path class=\"curve\"")
            .count(),
        RUNS
    );
    let drawn = dom
        .split("data-drawn-ms=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("?");
    println!(
        "{RUNS} runs × 300 steps: xp report {:.2} s, page {:.1} MB; headless Chromium load to \
         DOM dump {:.2} s (a blank page {:.2} s); drawn and painted {drawn} ms after navigation \
         start",
        written.as_secs_f64(),
        size as f64 / 1e6,
        loaded.as_secs_f64(),
        browser_alone.as_secs_f64(),
    );
}

/// The monitoring charts of a token-budget sweep (batch size, padding and peak memory over
/// steps) are drawn in a browser, a curve with points per run.
#[test]
#[ignore = "needs chromium; .ci/run runs it with --include-ignored"]
fn the_monitoring_charts_draw_a_curve_per_run() {
    let (dir, _) = super::batching::token_budget_sweep();
    let page = write_report(dir.path(), &["runs"]);
    let dom = headless(&page, &["--dump-dom"]);
    assert_eq!(errors(&dom), "", "the page's script failed");
    for metric in [
        "train/batch_size",
        "train/padding_ratio",
        "train/peak_memory_bytes",
    ] {
        let svg = chart(&dom, metric);
        assert_eq!(
            svg.matches("<path class=\"curve\"").count(),
            2,
            "{metric}: {svg}"
        );
        assert!(
            !svg.contains(" d=\"\""),
            "{metric}: every run's curve has points"
        );
    }
}
