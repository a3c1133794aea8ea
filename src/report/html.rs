//! The report as one HTML file that needs nothing else: inline style and script, the table,
//! statuses and settings as markup, and the curves as JSON the script draws into SVG. Every
//! string from runs is escaped here; the script inserts them as text only.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::ReportPage;
use crate::compare::format::{headline, sort_note};
use crate::compare::grid::grid;
use crate::compare::runs::show;
use crate::compare::table::Comparison;

const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// The page.
pub fn render(report: &ReportPage) -> String {
    let c = &report.comparison;
    let title = if c.experiments.is_empty() {
        "runs".to_owned()
    } else {
        c.experiments.join(", ")
    };
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>xp report: {}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n\
         <header>\n<h1>{}</h1>\n<p class=\"meta\">{} · generated {}</p>\n</header>\n\
         <pre id=\"errors\"></pre>\n",
        escape(&title),
        escape(&title),
        escape(&headline(c)),
        escape(&report.generated),
    );
    out.push_str(
        "<nav><a href=\"#status\">Status</a> <a href=\"#runs\">Runs</a> \
         <a href=\"#curves\">Curves</a> <a href=\"#each\">Each run</a> \
         <a href=\"#config\">Config</a></nav>\n",
    );
    statuses(&mut out, report);
    table(&mut out, c);
    charts(&mut out, report);
    config(&mut out, c);
    out.push_str("<script type=\"application/json\" id=\"report-data\">");
    out.push_str(&embedded_json(&report.data));
    out.push_str("</script>\n<script>\n");
    out.push_str(SCRIPT);
    out.push_str("</script>\n</body>\n</html>\n");
    out
}

/// Text and attribute values as HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON to sit inside a `<script>` element: with `<`, `>` and `&` as JSON escapes, no string in
/// it can close the element (`</script>`) or open a comment, and it parses to the same value.
pub fn embedded_json(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A status as a class name: only letters, whatever the file said.
fn status_class(status: &str) -> String {
    let word: String = status
        .chars()
        .filter(char::is_ascii_alphabetic)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("status-{word}")
}

/// Statuses that need a look.
fn troubled(status: &str) -> bool {
    matches!(status, "failed" | "diverged" | "interrupted")
}

fn statuses(out: &mut String, report: &ReportPage) {
    let runs = &report.data.runs;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runs {
        *counts.entry(r.status.as_str()).or_default() += 1;
    }
    out.push_str("<section id=\"status\">\n<h2>Status</h2>\n<p class=\"chips\">");
    for (status, n) in &counts {
        let _ = write!(
            out,
            "<span class=\"chip {}\">{n} {}</span> ",
            status_class(status),
            escape(status)
        );
    }
    out.push_str("</p>\n");
    let bad: Vec<_> = runs.iter().filter(|r| troubled(&r.status)).collect();
    if !bad.is_empty() {
        out.push_str("<ul class=\"problems\">\n");
        for r in bad {
            let _ = write!(
                out,
                "<li class=\"{}\"><b>{}</b> {}",
                status_class(&r.status),
                escape(&r.label),
                escape(&r.status)
            );
            if let Some(why) = &r.reason {
                let _ = write!(out, ": <span class=\"reason\">{}</span>", escape(why));
            }
            out.push_str("</li>\n");
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
}

/// The comparison table, the columns of `xp compare`'s; the script sorts it by a heading.
fn table(out: &mut String, c: &Comparison) {
    let g = grid(c, false, "★", c.experiments.len() > 1);
    let _ = write!(
        out,
        "<section id=\"runs\">\n<h2>Runs</h2>\n<p class=\"note\">{} · click a heading to sort</p>\n",
        escape(&sort_note(c))
    );
    out.push_str("<div class=\"scroll\"><table id=\"runs-table\" class=\"sortable\">\n<thead><tr>");
    for (heading, right) in g.headings.iter().zip(&g.right) {
        let _ = write!(
            out,
            "<th data-type=\"{}\"{}>{}</th>",
            if *right { "num" } else { "text" },
            if *right { " class=\"num\"" } else { "" },
            escape(heading)
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for (row, cells) in c.rows.iter().zip(&g.rows) {
        let mut class = status_class(&row.status);
        if row.best {
            class.push_str(" best");
        }
        if row.failed > 0 {
            class.push_str(" bad");
        }
        let _ = write!(out, "<tr class=\"{class}\">");
        for (cell, right) in cells.iter().zip(&g.right) {
            if *right {
                let _ = write!(out, "<td class=\"num\">{}</td>", escape(cell));
            } else {
                let _ = write!(out, "<td>{}</td>", escape(cell));
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n</section>\n");
}

/// The chart frames; the script draws into them from the embedded data.
fn charts(out: &mut String, report: &ReportPage) {
    out.push_str("<section id=\"curves\">\n<h2>Curves</h2>\n");
    if report.data.charts.is_empty() {
        out.push_str("<p class=\"note\">No run has logged metrics yet.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<noscript><p class=\"note\">The charts need JavaScript.</p></noscript>\n\
         <div class=\"controls\">\
         <label><input type=\"checkbox\" id=\"log-y\"> log scale</label>\
         <label>smoothing <input type=\"range\" id=\"smoothing\" min=\"0\" max=\"0.99\" step=\"0.01\" value=\"0\"> \
         <output id=\"smoothing-value\">0</output></label>\
         <button type=\"button\" id=\"show-all\">show all</button>\
         <button type=\"button\" id=\"hide-all\">hide all</button>\
         </div>\n<div id=\"legend\" class=\"legend\"></div>\n<div class=\"charts\">\n",
    );
    for metric in &report.data.charts {
        let _ = writeln!(
            out,
            "<figure class=\"chart\"><figcaption>{m}</figcaption>\
             <svg class=\"plot\" data-metric=\"{m}\" role=\"img\" aria-label=\"{m} of every run\"></svg></figure>",
            m = escape(metric)
        );
    }
    out.push_str("</div>\n</section>\n<section id=\"each\">\n<h2>Each run</h2>\n");
    let own: Vec<String> = report.data.own.iter().map(|m| escape(m)).collect();
    let _ = writeln!(
        out,
        "<p class=\"note\">{}</p>\n<div id=\"minis\" class=\"minis\"></div>\n</section>",
        match own.as_slice() {
            [train, val] => format!("{train} solid, {val} dashed"),
            [one] => one.clone(),
            _ => String::new(),
        }
    );
}

/// The settings that differ, a row per run, and those every run shares.
fn config(out: &mut String, c: &Comparison) {
    out.push_str("<section id=\"config\">\n<h2>Config differences</h2>\n");
    if c.settings.is_empty() {
        out.push_str("<p class=\"note\">The runs share every setting.</p>\n");
    } else {
        out.push_str("<div class=\"scroll\"><table class=\"settings\">\n<thead><tr><th>name</th>");
        for key in &c.settings {
            let _ = write!(out, "<th>{}</th>", escape(key));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for row in &c.rows {
            let _ = write!(out, "<tr><td>{}</td>", escape(&row.name));
            for key in &c.settings {
                let value = row.settings.get(key).map(show).unwrap_or_default();
                let _ = write!(out, "<td>{}</td>", escape(&value));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table></div>\n");
    }
    if !c.constant.is_empty() {
        let _ = write!(
            out,
            "<details><summary>Settings every run shares ({})</summary>\n<table class=\"settings\"><tbody>\n",
            c.constant.len()
        );
        for (key, value) in &c.constant {
            let _ = writeln!(
                out,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(key),
                escape(&show(value))
            );
        }
        out.push_str("</tbody></table>\n</details>\n");
    }
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_json_cannot_close_its_script_element() {
        let value = serde_json::json!({"name": "</script><script>alert(1)</script><!--&"});
        let text = embedded_json(&value);
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn markup_characters_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(status_class("fa<il>ed \""), "status-failed");
    }
}
