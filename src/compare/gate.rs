//! The regression gate: compared rows against their baseline rows, metric by metric, each
//! within a tolerance in the metric's direction. For a metric to minimize a regression is
//! `new > base + tol`, for one to maximize `new < base - tol`; a relative tolerance is a
//! percentage of `|base|`. A failed or unfinished run, a baseline run that is missing, and a
//! gated value that is missing are problems too. Gates come from `--fail-on` rules or from the
//! `regression` block each run was configured with.

use std::collections::BTreeMap;

use super::CompareError;
use super::baseline::{Baseline, Joined};
use super::runs::{Column, metric_direction};
use super::table::{Comparison, Row};
use crate::spec::{Direction, GatedMetric, Objective, Regression, Tolerance};
use crate::sweep::record::short;

/// One gated metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub column: Column,
    /// How far the value may move in the worse direction (negative: it must improve).
    pub tolerance: Tolerance,
    /// `None`: the objective's direction for the objective, else by the metric's name.
    pub direction: Option<Direction>,
}

impl Gate {
    pub fn from_metric(m: &GatedMetric) -> Gate {
        Gate {
            column: Column::parse(&m.name),
            tolerance: m.tolerance,
            direction: m.direction,
        }
    }

    /// A `--fail-on` rule: `METRIC` (no worse than the baseline, in the metric's direction),
    /// `METRIC>TOL` (fails when the value rises more than TOL above the baseline) or
    /// `METRIC<TOL` (fails when it falls more than TOL below). TOL is a number (absolute) or a
    /// percentage of the baseline value; unsigned it counts in the failing direction, signed it
    /// is taken as written (`val/loss>-1%` demands a 1% improvement).
    pub fn parse(rule: &str) -> Result<Gate, CompareError> {
        let error = |message: String| CompareError::FailOn {
            rule: rule.to_owned(),
            message,
        };
        let (metric, op, tol) = match rule.find(['>', '<']) {
            Some(i) => (
                rule[..i].trim(),
                rule[i..].chars().next(),
                rule[i + 1..].trim(),
            ),
            None => (rule.trim(), None, ""),
        };
        let bare = metric
            .strip_prefix("best:")
            .or_else(|| metric.strip_prefix("final:"))
            .unwrap_or(metric);
        if bare.is_empty() || bare.contains(char::is_whitespace) {
            return Err(error("no metric before the comparison".into()));
        }
        let column = Column::parse(metric);
        let Some(op) = op else {
            return Ok(Gate {
                column,
                tolerance: Tolerance::Absolute(0.0),
                direction: None,
            });
        };
        let signed = tol.starts_with(['+', '-']);
        let percent = tol.ends_with('%');
        let number: f64 = tol
            .trim_end_matches('%')
            .trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .ok_or_else(|| {
                error(format!(
                    "`{tol}` is not a tolerance: a number (absolute) or a percentage such as 2%"
                ))
            })?;
        let (direction, t) = match (op, signed) {
            ('>', true) => (Direction::Minimize, number),
            ('>', false) => (Direction::Minimize, number.abs()),
            (_, true) => (Direction::Maximize, -number),
            (_, false) => (Direction::Maximize, number.abs()),
        };
        Ok(Gate {
            column,
            tolerance: if percent {
                Tolerance::Relative(t)
            } else {
                Tolerance::Absolute(t)
            },
            direction: Some(direction),
        })
    }

    /// The default gate: the final objective no more than 1% worse than the baseline's.
    pub fn objective(o: &Objective) -> Gate {
        Gate {
            column: Column::parse(&o.metric),
            tolerance: Tolerance::Relative(1.0),
            direction: Some(o.direction),
        }
    }

    /// The metric as the gate names it (`val/loss` for its final value).
    pub fn name(&self) -> String {
        self.column.gate_name()
    }

    pub fn direction_for(&self, objective: Option<&Objective>) -> Direction {
        self.direction
            .unwrap_or_else(|| metric_direction(self.column.metric(), objective))
    }

    /// The worst value that passes.
    pub fn limit(&self, base: f64, direction: Direction) -> f64 {
        let tol = match self.tolerance {
            Tolerance::Absolute(a) => a,
            Tolerance::Relative(p) => p / 100.0 * base.abs(),
        };
        match direction {
            Direction::Minimize => base + tol,
            Direction::Maximize => base - tol,
        }
    }

    /// `baseline + 2%`, `baseline - 0.01`: the limit in words.
    pub fn allowance(&self, direction: Direction) -> String {
        let (t, unit) = match self.tolerance {
            Tolerance::Absolute(a) => (a, ""),
            Tolerance::Relative(p) => (p, "%"),
        };
        let up = (direction == Direction::Minimize) == (t >= 0.0);
        if t == 0.0 {
            "the baseline".into()
        } else {
            format!("baseline {} {}{unit}", if up { '+' } else { '-' }, t.abs())
        }
    }
}

/// Where gates come from.
#[derive(Debug, Clone, Default)]
pub enum Gates {
    /// Each run's own `regression` block (none: only failures and missing runs are judged).
    #[default]
    FromRuns,
    /// `--fail-on` rules, for every row.
    Rules(Vec<Gate>),
}

/// What can be wrong, in the order problems are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Regression,
    Failed,
    Unfinished,
    Missing,
    NoValue,
}

impl Kind {
    pub fn word(self) -> &'static str {
        match self {
            Kind::Regression => "regression",
            Kind::Failed => "failed",
            Kind::Unfinished => "unfinished",
            Kind::Missing => "missing",
            Kind::NoValue => "no value",
        }
    }
}

/// A reason the gate fails.
#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: Kind,
    pub run: String,
    pub experiment: String,
    pub message: String,
}

/// One test of the gate: a row and a gated metric (or the row alone, where no metric is gated).
#[derive(Debug, Clone)]
pub struct Check {
    pub run: String,
    pub experiment: String,
    pub gate: Option<Gate>,
    pub direction: Direction,
    pub value: Option<f64>,
    pub base: Option<f64>,
    pub limit: Option<f64>,
    pub problem: Option<(Kind, String)>,
    /// Not judged, and why: the run was pruned (its metrics are of an early step).
    pub skipped: Option<String>,
}

/// The gate's verdict on a comparison.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The baseline file, as shown.
    pub baseline: String,
    pub checks: Vec<Check>,
    /// Every problem, regressions first; none: the gate passes.
    pub problems: Vec<Problem>,
    /// Compared rows the baseline does not have (not a problem).
    pub new_runs: Vec<String>,
    /// The rules applied, in words (`val/loss ≤ baseline + 1%`), and where they came from.
    pub rules: Vec<String>,
    pub rules_from: &'static str,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// Gated metrics checked against a baseline value.
    pub fn compared(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.gate.is_some() && c.base.is_some() && c.value.is_some())
            .count()
    }
}

/// Judges the rows, adds the missing baseline runs as rows, and puts rows with problems first.
pub fn evaluate(c: &mut Comparison, base: &Baseline, joined: &Joined, gates: &Gates) -> Verdict {
    let mut checks = Vec::new();
    let mut problems: Vec<(usize, Problem)> = Vec::new();
    let mut new_runs = Vec::new();
    let mut all_gates: Vec<Gate> = Vec::new();
    for (i, row) in c.rows.iter_mut().enumerate() {
        let matched = joined
            .matches
            .get(i)
            .copied()
            .flatten()
            .map(|j| &base.rows[j]);
        row.base = matched.map(|b| b.values.clone());
        let row_gates = gates_of(gates, row.regression.as_ref(), row.objective.as_ref());
        for g in &row_gates {
            if !all_gates.contains(g) {
                all_gates.push(g.clone());
            }
        }
        let status = status_problem(row);
        let mut kinds: Vec<Kind> = Vec::new();
        let mut add = |kind: Kind, message: String, row: &Row| {
            kinds.push(kind);
            problems.push((
                i,
                Problem {
                    kind,
                    run: row.name.clone(),
                    experiment: row.experiment.clone(),
                    message,
                },
            ));
        };
        if let Some((kind, message)) = &status {
            add(*kind, message.clone(), row);
        }
        if matched.is_none() {
            new_runs.push(row.name.clone());
        }
        // A pruned run finished early on purpose: neither a failure nor a regression.
        if status.is_none() && row.pruned > 0 {
            let note = pruned_note(row);
            let gated: Vec<Option<Gate>> = match row_gates.is_empty() {
                true => vec![None],
                false => row_gates.iter().cloned().map(Some).collect(),
            };
            for gate in gated {
                checks.push(Check {
                    run: row.name.clone(),
                    experiment: row.experiment.clone(),
                    direction: gate.as_ref().map_or(Direction::Minimize, |g| {
                        g.direction_for(row.objective.as_ref())
                    }),
                    gate,
                    value: None,
                    base: None,
                    limit: None,
                    problem: None,
                    skipped: Some(note.clone()),
                });
            }
            row.gate = Some("pruned");
            continue;
        }
        if row_gates.is_empty() {
            if matched.is_some() || status.is_some() {
                checks.push(Check {
                    run: row.name.clone(),
                    experiment: row.experiment.clone(),
                    gate: None,
                    direction: Direction::Minimize,
                    value: None,
                    base: None,
                    limit: None,
                    problem: status.clone(),
                    skipped: None,
                });
            }
        } else {
            for g in &row_gates {
                let direction = g.direction_for(row.objective.as_ref());
                let value = row.values.get(&g.column).map(|s| s.mean);
                let base_value = matched.and_then(|b| b.values.get(&g.column).copied());
                let mut check = Check {
                    run: row.name.clone(),
                    experiment: row.experiment.clone(),
                    gate: Some(g.clone()),
                    direction,
                    value,
                    base: base_value,
                    limit: base_value.map(|b| g.limit(b, direction)),
                    problem: None,
                    skipped: None,
                };
                if let Some(s) = &status {
                    check.problem = Some(s.clone());
                } else if let Some(b) = matched {
                    let name = g.name();
                    check.problem = match (value, base_value) {
                        (None, _) => {
                            Some((Kind::NoValue, format!("{name} has no value in the run")))
                        }
                        (_, None) => Some((
                            Kind::NoValue,
                            format!("{name} has no value in the baseline ({})", b.at),
                        )),
                        (Some(v), Some(bv)) => regression(g, direction, v, bv),
                    };
                    if let Some((kind, message)) = &check.problem {
                        add(*kind, message.clone(), row);
                    }
                } else {
                    continue;
                }
                checks.push(check);
            }
        }
        kinds.sort();
        row.gate = Some(match kinds.first() {
            Some(k) => k.word(),
            None if matched.is_some() => "pass",
            None => "new",
        });
    }
    let first_missing = c.rows.len();
    for (n, j) in joined.missing.iter().enumerate() {
        let b = &base.rows[*j];
        let message = format!("in the baseline ({}) but not among the compared runs", b.at);
        problems.push((
            first_missing + n,
            Problem {
                kind: Kind::Missing,
                run: b.name.clone(),
                experiment: b.experiment.clone(),
                message: message.clone(),
            },
        ));
        let gates_here: Vec<Option<Gate>> = match gates {
            Gates::Rules(g) => g.iter().cloned().map(Some).collect(),
            Gates::FromRuns if !all_gates.is_empty() => {
                all_gates.iter().cloned().map(Some).collect()
            }
            Gates::FromRuns => vec![None],
        };
        for g in gates_here {
            let direction = g.as_ref().map_or(Direction::Minimize, |g| {
                g.direction_for(c.objective.as_ref())
            });
            let base_value = g.as_ref().and_then(|g| b.values.get(&g.column).copied());
            checks.push(Check {
                run: b.name.clone(),
                experiment: b.experiment.clone(),
                limit: match (&g, base_value) {
                    (Some(g), Some(v)) => Some(g.limit(v, direction)),
                    _ => None,
                },
                gate: g,
                direction,
                value: None,
                base: base_value,
                problem: Some((Kind::Missing, message.clone())),
                skipped: None,
            });
        }
        c.rows.push(Row {
            name: b.name.clone(),
            experiment: b.experiment.clone(),
            sweep: String::new(),
            status: "missing".into(),
            failed: 0,
            unfinished: 0,
            pruned: 0,
            reason: None,
            dir: None,
            runs: 0,
            keys: b.keys.clone(),
            settings: BTreeMap::new(),
            values: BTreeMap::new(),
            objective: None,
            regression: None,
            best: false,
            base: Some(b.values.clone()),
            gate: Some(Kind::Missing.word()),
        });
    }
    // Rows with problems first, the worst kind first; otherwise the table's order.
    let mut rank: Vec<Option<Kind>> = vec![None; c.rows.len()];
    for (i, p) in &problems {
        rank[*i] = Some(rank[*i].map_or(p.kind, |k| k.min(p.kind)));
    }
    let mut order: Vec<usize> = (0..c.rows.len()).collect();
    order.sort_by_key(|i| (rank[*i].is_none(), rank[*i]));
    let mut rows: Vec<Option<Row>> = std::mem::take(&mut c.rows).into_iter().map(Some).collect();
    c.rows = order.iter().filter_map(|i| rows[*i].take()).collect();
    let mut position = vec![0; order.len()];
    for (at, i) in order.iter().enumerate() {
        position[*i] = at;
    }
    problems.sort_by_key(|(i, p)| (p.kind, position[*i]));
    let rules = all_gates
        .iter()
        .map(|g| {
            let direction = g.direction_for(c.objective.as_ref());
            let at_most = if direction == Direction::Minimize {
                '≤'
            } else {
                '≥'
            };
            format!("{} {at_most} {}", g.name(), g.allowance(direction))
        })
        .collect();
    let rules_from = match gates {
        Gates::Rules(_) => "--fail-on",
        Gates::FromRuns if c.rows.iter().any(|r| r.regression.is_some()) => {
            "the runs' regression blocks"
        }
        Gates::FromRuns => "the default: the objective within 1%",
    };
    Verdict {
        baseline: base.file.clone(),
        checks,
        problems: problems.into_iter().map(|(_, p)| p).collect(),
        new_runs,
        rules,
        rules_from,
    }
}

/// The gates of a row: the rules given, else its run's `regression` block, else its objective
/// no more than 1% worse than the baseline's (a baseline without rules still gates something).
pub fn gates_of(
    gates: &Gates,
    regression: Option<&Regression>,
    objective: Option<&Objective>,
) -> Vec<Gate> {
    match gates {
        Gates::Rules(g) => g.clone(),
        Gates::FromRuns => match (regression, objective) {
            (Some(r), _) => r.metrics.iter().map(Gate::from_metric).collect(),
            (None, Some(o)) => vec![Gate::objective(o)],
            (None, None) => Vec::new(),
        },
    }
}

/// Why a row with pruned runs is not gated.
fn pruned_note(row: &Row) -> String {
    match (&row.reason, row.runs) {
        (Some(why), 1) => format!("not gated: {why}"),
        (None, 1) => "not gated: the run was pruned".into(),
        (_, n) => format!("not gated: {} of its {n} runs were pruned", row.pruned),
    }
}

/// A failed or unfinished run (for a group: any of its runs).
fn status_problem(row: &Row) -> Option<(Kind, String)> {
    let why = row
        .reason
        .as_deref()
        .map_or(String::new(), |r| format!(": {r}"));
    if row.failed > 0 {
        Some((
            Kind::Failed,
            if row.runs == 1 {
                format!("the run {}{why}", row.status)
            } else {
                format!("{} of its {} runs failed{why}", row.failed, row.runs)
            },
        ))
    } else if row.unfinished > 0 {
        Some((
            Kind::Unfinished,
            if row.runs == 1 {
                format!("the run has not finished (status {})", row.status)
            } else {
                format!(
                    "{} of its {} runs have not finished",
                    row.unfinished, row.runs
                )
            },
        ))
    } else {
        None
    }
}

/// `val/loss rose to 0.2431 from 0.2300 (+5.70%); the gate allows up to 0.2346 (baseline + 2%)`.
fn regression(g: &Gate, direction: Direction, value: f64, base: f64) -> Option<(Kind, String)> {
    let limit = g.limit(base, direction);
    let worse = match direction {
        Direction::Minimize => value > limit,
        Direction::Maximize => value < limit,
    };
    if !worse {
        return None;
    }
    let bound = match direction {
        Direction::Minimize => "up",
        Direction::Maximize => "down",
    };
    let (v, b) = distinct(value, base);
    let moved = if value > base {
        format!("rose to {v} from {b} ({})", delta(value, base))
    } else if value < base {
        format!("fell to {v} from {b} ({})", delta(value, base))
    } else {
        format!("stayed at {v}")
    };
    Some((
        Kind::Regression,
        format!(
            "{} {moved}; the gate allows {bound} to {} ({})",
            g.name(),
            short(limit),
            g.allowance(direction)
        ),
    ))
}

/// Two values short, unless that hides their difference.
pub fn distinct(a: f64, b: f64) -> (String, String) {
    let (sa, sb) = (short(a), short(b));
    if sa == sb && a != b {
        (format!("{a}"), format!("{b}"))
    } else {
        (sa, sb)
    }
}

/// The change from `base` to `value`: relative where the baseline is not zero; `=` where it
/// rounds to nothing (`-0.00%`).
pub fn delta(value: f64, base: f64) -> String {
    if value == base {
        "=".into()
    } else if base != 0.0 {
        let percent = (value - base) / base.abs() * 100.0;
        if format!("{:.2}", percent.abs()) == "0.00" {
            "=".into()
        } else {
            format!("{percent:+.2}%")
        }
    } else {
        let d = value - base;
        format!("{}{}", if d > 0.0 { "+" } else { "" }, short(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_that_rounds_to_nothing_reads_as_equal() {
        assert_eq!(delta(0.5, 0.5), "=");
        assert_eq!(delta(0.499_999_9, 0.5), "=");
        assert_eq!(delta(0.500_000_1, 0.5), "=");
        assert_eq!(delta(0.49, 0.5), "-2.00%");
        assert_eq!(delta(0.5, 0.0), "+0.5000");
    }

    #[test]
    fn rules_read_as_written() {
        let g = Gate::parse("val/loss>+2%").unwrap();
        assert_eq!(g.column, Column::Final("val/loss".into()));
        assert_eq!(g.tolerance, Tolerance::Relative(2.0));
        assert_eq!(g.direction, Some(Direction::Minimize));
        let g = Gate::parse("val/accuracy<0.01").unwrap();
        assert_eq!(g.tolerance, Tolerance::Absolute(0.01));
        assert_eq!(g.direction, Some(Direction::Maximize));
        assert_eq!(
            Gate::parse("val/accuracy<-1%").unwrap().tolerance,
            Tolerance::Relative(1.0)
        );
        assert_eq!(
            Gate::parse("val/loss>-1%").unwrap().tolerance,
            Tolerance::Relative(-1.0)
        );
        assert_eq!(
            Gate::parse("best:val/loss").unwrap().column,
            Column::Best("val/loss".into())
        );
        assert!(Gate::parse(">2%").is_err());
        assert!(Gate::parse("val/loss>two").is_err());
        assert!(Gate::parse("val/loss>").is_err());
    }

    #[test]
    fn limits_follow_the_direction() {
        let g = Gate::parse("m>2%").unwrap();
        assert_eq!(g.limit(10.0, Direction::Minimize), 10.2);
        let g = Gate::parse("m<0.5").unwrap();
        assert_eq!(g.limit(10.0, Direction::Maximize), 9.5);
        let g = Gate::parse("m>10%").unwrap();
        assert_eq!(g.limit(-10.0, Direction::Minimize), -9.0);
        assert!(regression(&g, Direction::Minimize, -9.0, -10.0).is_none());
        assert!(regression(&g, Direction::Minimize, -8.9, -10.0).is_some());
    }
}
