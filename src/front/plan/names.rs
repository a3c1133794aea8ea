//! Run names: rendered from the `name` template or made from the point, usable as directory
//! names, and unique within the sweep.

use std::collections::BTreeMap;

use super::{PlanError, PlannedRun, Resolved, point_label, run_id, sweep_at};
use crate::diagnostic::Diag;
use crate::front::expand::RunName;
use crate::front::points::Point;
use crate::front::tree::{Node, Plain};
use kdl::KdlValue;

/// Names and identifies every run; the first rendered name that cannot be a directory name
/// is an error.
pub(super) fn name_runs(runs: Vec<Resolved>, repeats: bool) -> (Vec<PlannedRun>, Option<Diag>) {
    let mut planned = Vec::new();
    let mut made = Vec::new();
    let mut bad_name = None;
    for Resolved {
        point,
        name,
        spec,
        kdl,
        settings,
    } in runs
    {
        let run_name = match &name {
            Some(RunName { text, source, span }) => {
                if let Some(reason) = unusable(text) {
                    bad_name.get_or_insert_with(|| Diag {
                        source: Some(*source),
                        inner: Box::new(PlanError::BadName {
                            name: text.clone(),
                            reason,
                            span: *span,
                        }),
                    });
                }
                text.clone()
            }
            None => {
                made.push(planned.len());
                default_name(&point, repeats)
            }
        };
        planned.push(PlannedRun {
            name: run_name,
            id: run_id(&spec),
            axes: point.axes.clone(),
            seed: spec.seed,
            config: spec,
            settings,
            config_kdl: kdl,
        });
    }
    // Rounded values may meet: the run id tells those runs apart.
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for &i in &made {
        *counts.entry(planned[i].name.clone()).or_default() += 1;
    }
    for &i in &made {
        if counts[&planned[i].name] > 1 {
            let run = &mut planned[i];
            run.name = format!("{}-{}", run.name, &run.id[..run.id.len().min(8)]);
        }
    }
    (planned, bad_name)
}

/// Runs that share a name (the first name, up to four of its points, and how many other
/// names collide).
pub(super) fn name_collision(
    experiment: &Node,
    planned: &[PlannedRun],
    repeats: bool,
) -> Option<Diag> {
    let mut by_name: BTreeMap<&str, Vec<&PlannedRun>> = BTreeMap::new();
    for r in planned {
        by_name.entry(&r.name).or_default().push(r);
    }
    let collisions: Vec<(&&str, &Vec<&PlannedRun>)> =
        by_name.iter().filter(|(_, v)| v.len() > 1).collect();
    let (name, same) = collisions.first()?;
    let points = same
        .iter()
        .take(4)
        .map(|r| format!("({})", point_label(r, repeats)))
        .collect::<Vec<_>>()
        .join(", ");
    let more = if same.len() > 4 {
        format!(" and {} more", same.len() - 4)
    } else {
        String::new()
    };
    let others = match collisions.len() {
        1 => String::new(),
        2 => "; another name collides too".to_owned(),
        n => format!("; {} other names collide too", n - 1),
    };
    let (source, span) = experiment
        .child("name")
        .and_then(|n| n.arg(0))
        .map_or(sweep_at(experiment), |e| (e.source, e.span));
    let error = PlanError::NameCollision {
        name: (**name).to_owned(),
        count: same.len(),
        points: format!("{points}{more}{others}"),
        span,
    };
    Some(Diag {
        source: Some(source),
        inner: Box::new(error),
    })
}

/// What a sweep directory holds besides its runs (src/sweep, src/report, src/cli/run.rs),
/// and the link next to the sweeps: a run may not take their names.
const RESERVED: &[&str] = &[
    "plan.json",
    "results.csv",
    "results.json",
    "report.html",
    "experiment.kdl",
    "jobs.json",
    "summary.json",
    "slurm",
    "current",
];

/// Characters that change how a name reads without showing: bidirectional overrides and
/// isolates (the "Trojan Source" characters), zero-width characters and line separators.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
    )
}

/// Why a rendered run name cannot be a directory name.
fn unusable(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 100 {
        Some("it is longer than 100 bytes")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else if name == "." || name.contains("..") {
        Some("it contains `..`")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name.chars().any(invisible) {
        Some("it contains an invisible or bidirectional-override character")
    } else if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        Some("the sweep directory holds a file of that name")
    } else if name.starts_with('.') {
        Some("it starts with `.`")
    } else {
        None
    }
}

/// `lr=0.001,rank=8` (and `seed=2` when the sweep repeats), floats to 4 significant digits
/// (a `random` axis's 0.9595479780974888 reads 0.9595), made file-system safe.
fn default_name(point: &Point, repeats: bool) -> String {
    let mut parts: Vec<String> = point
        .axes
        .iter()
        .map(|(k, v)| match v {
            KdlValue::Float(x) => format!("{k}={}", rounded(*x)),
            v => format!("{k}={}", Plain(v)),
        })
        .collect();
    if repeats || parts.is_empty() && point.seed != 0 {
        parts.push(format!("seed={}", point.seed));
    }
    let name = if parts.is_empty() {
        "run".to_owned()
    } else {
        parts.join(",")
    };
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '=' | ',' | '+' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.').replace("..", "_");
    safe.chars().take(100).collect()
}

/// A float to 4 significant digits, in its shortest form.
fn rounded(x: f64) -> String {
    let r = format!("{x:.3e}").parse::<f64>().unwrap_or(x);
    crate::front::tree::float(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_in_default_names_are_rounded() {
        assert_eq!(rounded(0.9595479780974888), "0.9595");
        assert_eq!(rounded(0.001), "0.001");
        assert_eq!(rounded(3e-3), "0.003");
        assert_eq!(rounded(1.23456e-5), "1.235e-5");
        assert_eq!(rounded(32.0), "32.0");
    }
}
