//! The comparison as text: an aligned table for the terminal, CSV and JSON for programs,
//! Markdown for a CI job summary or a pull-request comment. Missing values are blank (null in
//! JSON), never zero; with a baseline, problems come first and values carry their change.

use std::fmt::Write;

use serde_json::{Value, json};

use super::gate::Verdict;
use super::grid::{cut, grid, sections, unique_names};
use super::runs::{Column, finite_json, show};
use super::table::{Comparison, Stat};
use crate::spec::Direction;

/// An output format of `xp compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Markdown,
}

/// How a person's table is laid out; the other formats carry everything whatever it says.
#[derive(Debug, Clone, Copy, Default)]
pub struct View {
    /// The width to fit in characters (the least important columns hidden); `None`: every
    /// column, however wide.
    pub width: Option<usize>,
    /// List every constant setting instead of a line about them.
    pub verbose: bool,
}

/// The width prose lines under a table fit when the table itself is not fitted.
const PROSE: usize = 100;

pub fn render(c: &Comparison, verdict: Option<&Verdict>, format: Format, view: View) -> String {
    match format {
        Format::Table => table(c, verdict, view),
        Format::Csv => csv(c, verdict),
        Format::Json => {
            serde_json::to_string_pretty(&json_value(c, verdict)).unwrap_or_default() + "\n"
        }
        Format::Markdown => markdown(c, verdict),
    }
}

fn direction_word(d: Direction) -> &'static str {
    match d {
        Direction::Minimize => "minimize",
        Direction::Maximize => "maximize",
    }
}

/// `8 runs of 2 experiments (a, b)`.
pub(crate) fn headline(c: &Comparison) -> String {
    let runs = if c.runs == 1 {
        "1 run".to_owned()
    } else {
        format!("{} runs", c.runs)
    };
    let mut s = match c.experiments.as_slice() {
        [] => runs,
        [one] => format!("{runs} of {one}"),
        many => format!("{runs} of {} experiments ({})", many.len(), many.join(", ")),
    };
    if !c.group_by.is_empty() {
        let _ = write!(
            s,
            " in {} groups by {}",
            c.rows.iter().filter(|r| r.runs > 0).count(),
            c.group_by.join(", ")
        );
    }
    s
}

pub(crate) fn sort_note(c: &Comparison) -> String {
    let several = sections(c).len() > 1;
    match (&c.sort, several) {
        (Some((col, d)), false) => format!("sorted by {col} ({})", direction_word(*d)),
        (None, false) => "sorted by name".into(),
        (Some((col, d)), true) => {
            format!("each experiment sorted by {col} ({})", direction_word(*d))
        }
        (None, true) => "each experiment ranked by its objective".into(),
    }
}

/// How an experiment's rows are ranked, for the line above them.
fn group_line(c: &Comparison, experiment: &str, rows: &[usize]) -> String {
    let runs: usize = rows.iter().map(|i| c.rows[*i].runs).sum();
    let name = match experiment {
        "" if !c.group_by.is_empty() => "across experiments",
        "" => "no experiment",
        e => e,
    };
    let ranked = match c.group(experiment).and_then(|g| g.sort.as_ref()) {
        Some((col, d)) => format!("ranked by {col} ({})", direction_word(*d)),
        None => "sorted by name".into(),
    };
    let runs = if runs == 1 {
        "1 run".to_owned()
    } else {
        format!("{runs} runs")
    };
    format!("{name}: {runs}, {ranked}")
}

/// The gate in one line.
fn gate_line(v: &Verdict) -> String {
    let mut line = verdict_line(v);
    if !v.rules.is_empty() {
        let _ = write!(line, "\n  rules ({}): {}", v.rules_from, v.rules.join("; "));
    }
    line
}

fn verdict_line(v: &Verdict) -> String {
    if v.passed() {
        format!(
            "gate passed: {} gated {} within tolerance of {}",
            v.compared(),
            if v.compared() == 1 { "value" } else { "values" },
            v.baseline
        )
    } else {
        format!(
            "gate FAILED: {} against {}",
            if v.problems.len() == 1 {
                "1 problem".to_owned()
            } else {
                format!("{} problems", v.problems.len())
            },
            v.baseline
        )
    }
}

fn table(c: &Comparison, verdict: Option<&Verdict>, view: View) -> String {
    let mut out = String::new();
    if let Some(v) = verdict {
        out.push_str(&gate_line(v));
        out.push('\n');
        let width = v
            .problems
            .iter()
            .map(|p| p.kind.word().len())
            .max()
            .unwrap_or(0);
        let name = v
            .problems
            .iter()
            .map(|p| p.run.chars().count())
            .max()
            .unwrap_or(0);
        for p in &v.problems {
            let _ = writeln!(
                out,
                "  {:width$}  {:name$}  {}",
                p.kind.word(),
                p.run,
                p.message
            );
        }
        if !v.new_runs.is_empty() {
            let _ = writeln!(
                out,
                "  not in the baseline (not gated): {}",
                v.new_runs.join(", ")
            );
        }
        out.push('\n');
    }
    let prose = view.width.unwrap_or(PROSE);
    let sections = sections(c);
    let marked = match (c.rows.iter().any(|r| r.best), sections.len() > 1) {
        (false, _) => "",
        (true, false) => "* best",
        (true, true) => "* best of each",
    };
    // Several experiments: the line above each one's rows says how they are ranked.
    let mut parts = vec![headline(c)];
    if sections.len() == 1 {
        parts.push(sort_note(c));
    }
    if !marked.is_empty() {
        parts.push(marked.to_owned());
    }
    while parts.len() > 1 && parts.join(" · ").chars().count() > prose {
        parts.pop();
    }
    let _ = writeln!(out, "{}", cut(&parts.join(" · "), prose));
    out.push('\n');
    let mut g = grid(c, verdict.is_some(), "*", false);
    if let Some(width) = view.width {
        g.fit(width);
    }
    let widths = g.widths();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if g.right[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    out.push_str(&line(&g.headings));
    for (experiment, rows) in &sections {
        if sections.len() > 1 {
            let _ = writeln!(out, "{}", cut(&group_line(c, experiment, rows), prose));
        }
        for i in rows {
            out.push_str(&line(&g.rows[*i]));
        }
    }
    let under = [
        (!g.hidden.is_empty()).then(|| {
            let count = match g.hidden.len() {
                1 => "1 column".to_owned(),
                n => format!("{n} columns"),
            };
            listing(
                &format!("hidden: {count}"),
                &g.hidden,
                &format!(" to fit {} characters; --wide shows them", prose),
                prose,
            )
        }),
        (!c.constant.is_empty() && !view.verbose).then(|| {
            let items: Vec<String> = c
                .constant
                .iter()
                .map(|(k, v)| format!("{k}={}", show(v)))
                .collect();
            let count = match items.len() {
                1 => "1 setting".to_owned(),
                n => format!("{n} settings"),
            };
            listing(
                &format!("constant: {count}"),
                &items,
                "; -v lists them",
                prose,
            )
        }),
        (!c.constant.is_empty() && view.verbose).then(|| wrapped_constants(c, prose)),
    ];
    let under: Vec<String> = under.into_iter().flatten().collect();
    if !under.is_empty() {
        out.push('\n');
        for text in under {
            out.push_str(text.trim_end());
            out.push('\n');
        }
    }
    if verdict.is_none() {
        let names = unique_row_names(c);
        let notes: Vec<String> = c
            .rows
            .iter()
            .zip(&names)
            .filter(|(r, _)| r.failed > 0)
            .map(|(r, name)| match &r.reason {
                Some(why) if r.runs == 1 => format!("  {name} {}: {why}", r.status),
                Some(why) => format!("  {name}: {why}"),
                None => format!("  {name} {}", r.status),
            })
            .collect();
        if !notes.is_empty() {
            out.push('\n');
            out.push_str("failed:\n");
            for n in notes {
                out.push_str(&n);
                out.push('\n');
            }
        }
    }
    out
}

/// Each row's name, qualified by its sweep (and experiment) where names repeat.
fn unique_row_names(c: &Comparison) -> Vec<String> {
    let dirs: Vec<String> = c
        .rows
        .iter()
        .map(|r| {
            r.dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        })
        .collect();
    let idents: Vec<[&str; 4]> = c
        .rows
        .iter()
        .zip(&dirs)
        .map(|(r, d)| {
            [
                r.experiment.as_str(),
                r.sweep.as_str(),
                r.name.as_str(),
                d.as_str(),
            ]
        })
        .collect();
    unique_names(&idents)
}

/// `head (a, b, …)tail` in at most `width` characters: as many items as fit, `…` for the rest.
fn listing(head: &str, items: &[String], tail: &str, width: usize) -> String {
    let line = |shown: &[&str], all: bool| {
        let more = if all { "" } else { ", …" };
        format!("{head} ({}{more}){tail}", shown.join(", "))
    };
    let mut shown: Vec<&str> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        shown.push(item);
        if line(&shown, i + 1 == items.len()).chars().count() > width {
            shown.pop();
            break;
        }
    }
    if shown.is_empty() {
        format!("{head}{tail}")
    } else {
        line(&shown, shown.len() == items.len())
    }
}

/// The constant settings, `key=value` wrapped at `width` columns.
fn wrapped_constants(c: &Comparison, width: usize) -> String {
    const HEADING: &str = "constant: ";
    let mut out = String::from(HEADING);
    let mut used = HEADING.len();
    let mut first = true;
    for (k, v) in &c.constant {
        let item = format!("{k}={}", show(v));
        let len = item.chars().count();
        if !first && used + 2 + len > width {
            out.push('\n');
            out.push_str(&" ".repeat(HEADING.len()));
            used = HEADING.len();
        } else if !first {
            out.push_str("  ");
            used += 2;
        }
        out.push_str(&item);
        used += len;
        first = false;
    }
    out.push('\n');
    out
}

fn csv(c: &Comparison, verdict: Option<&Verdict>) -> String {
    let grouped = !c.group_by.is_empty();
    let mut header: Vec<String> = ["name", "experiment", "sweep", "status"]
        .map(String::from)
        .to_vec();
    if grouped {
        header.push("runs".into());
    }
    header.extend(c.settings.iter().cloned());
    // Baseline values and changes for the columns the baseline has.
    let based: Vec<bool> = c
        .columns
        .iter()
        .map(|col| {
            verdict.is_some()
                && c.rows
                    .iter()
                    .any(|r| r.base.as_ref().is_some_and(|b| b.contains_key(col)))
        })
        .collect();
    for (col, based) in c.columns.iter().zip(&based) {
        header.push(col.to_string());
        if grouped {
            header.push(format!("{col}:std"));
        }
        if *based {
            header.push(format!("base:{col}"));
            header.push(format!("delta:{col}"));
        }
    }
    header.push("best".into());
    if verdict.is_some() {
        header.push("gate".into());
    }
    let full = |v: f64| format!("{v}");
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(&header);
    for r in &c.rows {
        let mut cells = vec![
            r.name.clone(),
            r.experiment.clone(),
            r.sweep.clone(),
            r.status.clone(),
        ];
        if grouped {
            cells.push(r.runs.to_string());
        }
        cells.extend(
            c.settings
                .iter()
                .map(|k| r.settings.get(k).map(show).unwrap_or_default()),
        );
        for (col, based) in c.columns.iter().zip(&based) {
            let stat = r.values.get(col);
            cells.push(stat.map_or(String::new(), |s| full(s.mean)));
            if grouped {
                cells.push(stat.and_then(|s| s.std).map_or(String::new(), full));
            }
            if *based {
                let base = r.base.as_ref().and_then(|b| b.get(col)).copied();
                cells.push(base.map_or(String::new(), full));
                cells.push(match (stat, base) {
                    (Some(s), Some(b)) => full(s.mean - b),
                    _ => String::new(),
                });
            }
        }
        cells.push(r.best.to_string());
        if verdict.is_some() {
            cells.push(r.gate.unwrap_or_default().to_owned());
        }
        let _ = w.write_record(&cells);
    }
    String::from_utf8_lossy(&w.into_inner().unwrap_or_default()).into_owned()
}

fn stat_json(col: &Column, s: Option<&Stat>, grouped: bool) -> Value {
    match s {
        None => Value::Null,
        Some(s) if grouped => {
            json!({"mean": finite_json(s.mean), "std": s.std.map_or(Value::Null, finite_json), "n": s.n})
        }
        Some(s) => col.json(s.mean),
    }
}

fn json_value(c: &Comparison, verdict: Option<&Verdict>) -> Value {
    let grouped = !c.group_by.is_empty();
    let rows: Vec<Value> = c
        .rows
        .iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            o.insert("name".into(), Value::from(r.name.clone()));
            o.insert("experiment".into(), Value::from(r.experiment.clone()));
            o.insert("sweep".into(), Value::from(r.sweep.clone()));
            o.insert("status".into(), Value::from(r.status.clone()));
            o.insert("best".into(), Value::from(r.best));
            o.insert(
                "reason".into(),
                r.reason.clone().map_or(Value::Null, Value::from),
            );
            o.insert(
                "dir".into(),
                r.dir
                    .as_ref()
                    .map_or(Value::Null, |d| Value::from(d.display().to_string())),
            );
            if grouped {
                o.insert("runs".into(), Value::from(r.runs));
            }
            o.insert(
                "axes".into(),
                Value::Object(r.keys.clone().into_iter().collect()),
            );
            o.insert(
                "settings".into(),
                Value::Object(r.settings.clone().into_iter().collect()),
            );
            o.insert(
                "metrics".into(),
                Value::Object(
                    c.columns
                        .iter()
                        .map(|col| (col.to_string(), stat_json(col, r.values.get(col), grouped)))
                        .collect(),
                ),
            );
            if verdict.is_some() {
                o.insert(
                    "baseline".into(),
                    r.base.as_ref().map_or(Value::Null, |b| {
                        Value::Object(b.iter().map(|(k, v)| (k.to_string(), k.json(*v))).collect())
                    }),
                );
                o.insert("gate".into(), r.gate.map_or(Value::Null, Value::from));
            }
            Value::Object(o)
        })
        .collect();
    let mut out = json!({
        "runs": c.runs,
        "experiments": c.experiments,
        "objective": c.objective.as_ref().map(|o| json!({"metric": o.metric, "direction": direction_word(o.direction)})),
        "sort": c.sort.as_ref().map(|(col, d)| json!({"column": col.to_string(), "direction": direction_word(*d)})),
        "groups": c.groups.iter().map(|g| json!({
            "experiment": g.experiment,
            "objective": g.objective.as_ref().map(|o| json!({"metric": o.metric, "direction": direction_word(o.direction)})),
            "sort": g.sort.as_ref().map(|(col, d)| json!({"column": col.to_string(), "direction": direction_word(*d)})),
        })).collect::<Vec<_>>(),
        "group_by": c.group_by,
        "constant": c.constant,
        "settings": c.settings,
        "columns": c.columns.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "rows": rows,
    });
    if let (Some(v), Value::Object(o)) = (verdict, &mut out) {
        o.insert("gate".into(), gate_json(v));
    }
    out
}

fn gate_json(v: &Verdict) -> Value {
    json!({
        "baseline": v.baseline,
        "passed": v.passed(),
        "problems": v.problems.iter().map(|p| json!({
            "kind": p.kind.word(), "run": p.run, "experiment": p.experiment, "message": p.message,
        })).collect::<Vec<_>>(),
        "checks": v.checks.iter().map(|c| json!({
            "run": c.run,
            "experiment": c.experiment,
            "metric": c.gate.as_ref().map(|g| g.name()),
            "direction": c.gate.as_ref().map(|_| direction_word(c.direction)),
            "tolerance": c.gate.as_ref().map(|g| match g.tolerance {
                crate::spec::Tolerance::Absolute(a) => Value::from(a),
                crate::spec::Tolerance::Relative(p) => Value::from(format!("{p}%")),
            }),
            "value": c.value.map_or(Value::Null, finite_json),
            "baseline": c.base.map_or(Value::Null, finite_json),
            "limit": c.limit.map_or(Value::Null, finite_json),
            "passed": c.problem.is_none(),
            "problem": c.problem.as_ref().map(|(k, _)| k.word()),
            "message": c.problem.as_ref().map(|(_, m)| m.clone()),
        })).collect::<Vec<_>>(),
        "new_runs": v.new_runs,
        "rules": v.rules,
        "rules_from": v.rules_from,
    })
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn markdown(c: &Comparison, verdict: Option<&Verdict>) -> String {
    let mut out = String::new();
    match verdict {
        Some(v) if v.passed() => {
            let _ = writeln!(
                out,
                "### xp compare: ✅ gate passed\n\n{} gated {} within tolerance of `{}`; {}.",
                v.compared(),
                if v.compared() == 1 { "value" } else { "values" },
                v.baseline,
                headline(c)
            );
        }
        Some(v) => {
            let _ = writeln!(
                out,
                "### xp compare: ❌ gate failed\n\n{} against `{}`; {}.\n",
                if v.problems.len() == 1 {
                    "1 problem".to_owned()
                } else {
                    format!("{} problems", v.problems.len())
                },
                v.baseline,
                headline(c)
            );
            for p in &v.problems {
                let _ = writeln!(
                    out,
                    "- **{}** `{}`: {}",
                    p.kind.word(),
                    p.run,
                    md_cell(&p.message)
                );
            }
        }
        None => {
            let _ = writeln!(out, "### xp compare\n\n{}.", headline(c));
        }
    }
    if let Some(v) = verdict
        && !v.new_runs.is_empty()
    {
        let _ = writeln!(
            out,
            "\nNot in the baseline (not gated): {}.",
            v.new_runs
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out.push('\n');
    let g = grid(c, verdict.is_some(), "★", c.experiments.len() > 1);
    let _ = writeln!(
        out,
        "| {} |",
        g.headings
            .iter()
            .map(|h| md_cell(h))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(
        out,
        "|{}|",
        g.right
            .iter()
            .map(|r| if *r { "---:" } else { "---" })
            .collect::<Vec<_>>()
            .join("|")
    );
    for row in &g.rows {
        let _ = writeln!(
            out,
            "| {} |",
            row.iter()
                .map(|c| md_cell(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    let marked = if c.rows.iter().any(|r| r.best) {
        "; ★ best"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "\n{}{marked}.",
        sort_note(c).replace("sorted", "Sorted")
    );
    if !c.constant.is_empty() {
        let _ = writeln!(
            out,
            "\n<details><summary>{} constant settings</summary>\n\n| setting | value |\n|---|---|",
            c.constant.len()
        );
        for (k, v) in &c.constant {
            let _ = writeln!(out, "| `{k}` | {} |", md_cell(&show(v)));
        }
        out.push_str("\n</details>\n");
    }
    out
}
