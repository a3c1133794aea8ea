//! The gate's verdict as JUnit XML, the report format CI systems show: one test suite per
//! experiment, one test case per run and gated metric (or per run, where no metric is gated),
//! failing with the problem's kind and message, or skipped (a pruned run) with why.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::gate::{Check, Verdict};
use crate::sweep::record::short;

pub fn render(verdict: &Verdict) -> String {
    let mut suites: BTreeMap<&str, Vec<&Check>> = BTreeMap::new();
    for c in &verdict.checks {
        suites.entry(c.experiment.as_str()).or_default().push(c);
    }
    let failures = |checks: &[&Check]| checks.iter().filter(|c| c.problem.is_some()).count();
    let skipped = |checks: &[&Check]| checks.iter().filter(|c| c.skipped.is_some()).count();
    let all: Vec<&Check> = verdict.checks.iter().collect();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"xp compare\" tests=\"{}\" failures=\"{}\" errors=\"0\">",
        all.len(),
        failures(&all)
    );
    for (experiment, checks) in &suites {
        let name = if experiment.is_empty() {
            "xp"
        } else {
            experiment
        };
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\">",
            escape(name),
            checks.len(),
            failures(checks),
            skipped(checks)
        );
        for c in checks {
            let case = match &c.gate {
                Some(g) => format!("{} {}", c.run, g.name()),
                None => c.run.clone(),
            };
            let _ = write!(
                out,
                "    <testcase classname=\"xp.{}\" name=\"{}\"",
                escape(name),
                escape(&case)
            );
            match (&c.problem, &c.skipped) {
                (None, Some(why)) => {
                    let _ = writeln!(out, ">\n      <skipped message=\"{}\"/>", escape(why));
                    out.push_str("    </testcase>\n");
                }
                (None, None) => {
                    out.push_str(">\n");
                    let detail = match (&c.gate, c.value, c.base, c.limit) {
                        (Some(g), Some(v), Some(b), Some(l)) => format!(
                            "{} = {} (baseline {}, limit {}, {})",
                            g.name(),
                            short(v),
                            short(b),
                            short(l),
                            g.allowance(c.direction)
                        ),
                        _ => "the run completed".into(),
                    };
                    let _ = writeln!(out, "      <system-out>{}</system-out>", escape(&detail));
                    out.push_str("    </testcase>\n");
                }
                (Some((kind, message)), _) => {
                    out.push_str(">\n");
                    let _ = writeln!(
                        out,
                        "      <failure type=\"{}\" message=\"{}\">{}</failure>",
                        escape(kind.word()),
                        escape(message),
                        escape(&format!("{}: {message}", c.run))
                    );
                    out.push_str("    </testcase>\n");
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Text safe in XML attributes and content; characters XML 1.0 forbids are dropped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            super::escape("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot;"
        );
    }
}
