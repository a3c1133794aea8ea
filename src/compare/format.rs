//! The comparison as text: an aligned table for the terminal, CSV and JSON for programs,
//! Markdown for a CI job summary or a pull-request comment. Missing values are blank (null in
//! JSON), never zero; with a baseline, problems come first and values carry their change.

use std::fmt::Write;

use serde_json::{Value, json};

use super::gate::{Verdict, delta};
use super::runs::{Column, finite_json, show};
use super::table::{Comparison, Row, Stat};
use crate::spec::Direction;
use crate::sweep::record::short;

/// An output format of `xp compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Markdown,
}

pub fn render(c: &Comparison, verdict: Option<&Verdict>, format: Format) -> String {
    match format {
        Format::Table => table(c, verdict),
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
    match &c.sort {
        Some((col, d)) => format!("sorted by {col} ({})", direction_word(*d)),
        None => "sorted by name".into(),
    }
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

/// A metric cell for people: 4 significant digits, a group's spread, the change from the
/// baseline.
fn human_value(row: &Row, col: &Column) -> String {
    let Some(stat) = row.values.get(col) else {
        return String::new();
    };
    let mut s = number(col, stat.mean);
    if let Some(std) = stat.std {
        let _ = write!(s, " ± {}", short(std));
    }
    if let Some(base) = row.base.as_ref().and_then(|b| b.get(col)) {
        let _ = write!(s, " ({})", delta(stat.mean, *base));
    }
    s
}

fn number(col: &Column, v: f64) -> String {
    if matches!(col, Column::Steps | Column::PeakMemory) && v.fract() == 0.0 {
        format!("{v}")
    } else {
        short(v)
    }
}

/// Columns of a human table: headings, then for each row its cells; `right` aligns numbers.
pub(crate) struct Grid {
    pub(crate) headings: Vec<String>,
    pub(crate) right: Vec<bool>,
    pub(crate) rows: Vec<Vec<String>>,
}

pub(crate) fn grid(c: &Comparison, verdict: Option<&Verdict>, marker: &str) -> Grid {
    let mut headings = vec![String::new(), "name".to_owned(), "status".to_owned()];
    let mut right = vec![false, false, false];
    if verdict.is_some() {
        headings.push("gate".into());
        right.push(false);
    }
    if !c.group_by.is_empty() {
        headings.push("runs".into());
        right.push(true);
    }
    headings.extend(c.labels.iter().cloned());
    for key in &c.settings {
        let numeric = c
            .rows
            .iter()
            .filter_map(|r| r.settings.get(key))
            .all(|v| v.is_number() || v.is_null());
        right.push(numeric);
    }
    headings.extend(c.columns.iter().map(|c| c.to_string()));
    right.extend(c.columns.iter().map(|_| true));
    let rows = c
        .rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                if r.best {
                    marker.to_owned()
                } else {
                    String::new()
                },
                r.name.clone(),
                r.status.clone(),
            ];
            if verdict.is_some() {
                cells.push(r.gate.unwrap_or_default().to_owned());
            }
            if !c.group_by.is_empty() {
                cells.push(r.runs.to_string());
            }
            cells.extend(
                c.settings
                    .iter()
                    .map(|k| r.settings.get(k).map(show).unwrap_or_default()),
            );
            cells.extend(c.columns.iter().map(|col| human_value(r, col)));
            cells
        })
        .collect();
    Grid {
        headings,
        right,
        rows,
    }
}

fn table(c: &Comparison, verdict: Option<&Verdict>) -> String {
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
    let marked = if c.rows.iter().any(|r| r.best) {
        " · * best"
    } else {
        ""
    };
    let _ = writeln!(out, "{} · {}{marked}", headline(c), sort_note(c));
    if !c.constant.is_empty() {
        out.push_str(&wrapped_constants(c));
    }
    out.push('\n');
    let g = grid(c, verdict, "*");
    let widths: Vec<usize> = (0..g.headings.len())
        .map(|i| {
            g.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([g.headings[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
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
    for r in &g.rows {
        out.push_str(&line(r));
    }
    if verdict.is_none() {
        let notes: Vec<String> = c
            .rows
            .iter()
            .filter(|r| r.failed > 0)
            .map(|r| match &r.reason {
                Some(why) if r.runs == 1 => format!("  {} {}: {why}", r.name, r.status),
                Some(why) => format!("  {}: {why}", r.name),
                None => format!("  {} {}", r.name, r.status),
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

/// The width constant settings wrap at.
const WIDTH: usize = 100;

/// The constant settings, `key=value` wrapped at [`WIDTH`] columns.
fn wrapped_constants(c: &Comparison) -> String {
    const HEADING: &str = "constant: ";
    let mut out = String::from(HEADING);
    let mut width = HEADING.len();
    let mut first = true;
    for (k, v) in &c.constant {
        let item = format!("{k}={}", show(v));
        let len = item.chars().count();
        if !first && width + 2 + len > WIDTH {
            out.push('\n');
            out.push_str(&" ".repeat(HEADING.len()));
            width = HEADING.len();
        } else if !first {
            out.push_str("  ");
            width += 2;
        }
        out.push_str(&item);
        width += len;
        first = false;
    }
    out.push('\n');
    out
}

fn csv(c: &Comparison, verdict: Option<&Verdict>) -> String {
    let grouped = !c.group_by.is_empty();
    let mut header: Vec<String> = vec!["name".into(), "experiment".into(), "status".into()];
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
        let mut cells = vec![r.name.clone(), r.experiment.clone(), r.status.clone()];
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
    let g = grid(c, verdict, "★");
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
