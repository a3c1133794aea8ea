//! The points of a sweep: the `sweep` block's grid, zip and random blocks combined by
//! product, `exclude` and `include` applied, and every point repeated over seeds. Pure: no I/O.

use std::collections::HashMap;

use kdl::KdlValue;
use minijinja::Environment;

use crate::diagnostic::Diag;
use crate::front::expand::{ExpandError, context, diag, evaluate, int, number, truthy};
use crate::front::search::Search;
use crate::front::template;
use crate::front::tree::{Entry, Literal, Node, Plain};
use crate::rng::{Rng, fnv1a};

/// One combination of axis values, in declaration order.
type Combo = Vec<(String, KdlValue)>;

/// One point of a sweep: a value for every axis, and the run's seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub axes: Vec<(String, KdlValue)>,
    pub seed: i64,
    /// The replicate: 0 … repeat-1.
    pub replicate: i64,
}

impl Point {
    /// `lr=0.01, rank=16` (with `seed=2` when the sweep repeats).
    pub fn label(&self, with_seed: bool) -> String {
        let mut parts: Vec<String> = self
            .axes
            .iter()
            .map(|(k, v)| format!("{k}={}", Literal(v)))
            .collect();
        if with_seed || parts.is_empty() {
            parts.push(format!("seed={}", self.seed));
        }
        parts.join(", ")
    }
}

/// The points of an experiment's sweep, in the documented order: blocks as written combine by
/// product (first block slowest), within a grid the last axis is fastest, excluded points
/// dropped, included points appended, and every point repeated over consecutive seeds.
pub fn points(experiment: &Node, diags: &mut Vec<Diag>) -> Vec<Point> {
    let base_seed = experiment
        .child("seed")
        .and_then(|s| s.arg(0))
        .and_then(|a| int(&a.value))
        .unwrap_or(0);
    let Some(sweep) = experiment.child("sweep") else {
        return vec![Point {
            axes: Vec::new(),
            seed: base_seed,
            replicate: 0,
        }];
    };
    if let Some(block) = sweep.child("search") {
        return search_points(sweep, block, experiment, base_seed, diags);
    }
    let count = size(sweep);
    if count > MAX_RUNS as u128 {
        diags.push(diag(
            sweep.source,
            ExpandError::TooManyRuns {
                count: count.to_string(),
                limit: MAX_RUNS,
                span: sweep.name_span,
            },
        ));
        return Vec::new();
    }
    let combos = combine(sweep, base_seed, diags);
    let axis_names: Vec<String> = combos
        .first()
        .map(|c| c.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let excludes: Vec<&Node> = sweep
        .nodes()
        .iter()
        .filter(|n| n.name == "exclude")
        .collect();
    let mut kept = match drop_excluded(combos, &excludes, base_seed) {
        Ok(kept) => kept,
        Err(e) => {
            diags.push(e);
            return Vec::new();
        }
    };
    add_included(&mut kept, sweep, &axis_names, diags);
    if kept.is_empty() {
        let at = excludes
            .first()
            .map_or((sweep.source, sweep.name_span), |e| (e.source, e.name_span));
        diags.push(diag(at.0, ExpandError::Empty { span: at.1 }));
    }
    repeat(kept, sweep, base_seed)
}

/// The most runs one experiment may expand to. Every run is expanded, checked and planned in
/// memory before anything trains, so a sweep past this is refused before it is expanded.
pub const MAX_RUNS: usize = 100_000;

/// How many runs the sweep gives at most (before `exclude` drops any), from the sizes of its
/// blocks alone: grid axes multiply, a zip counts its first axis, a random block its `count`;
/// `include` points add, `repeat` multiplies.
fn size(sweep: &Node) -> u128 {
    let count_of = |block: &Node| -> u128 {
        match block.name.as_str() {
            "grid" => block.nodes().iter().fold(1u128, |n, axis| {
                n.saturating_mul(axis.args().count() as u128)
            }),
            "zip" => block
                .nodes()
                .first()
                .map_or(1, |a| a.args().count() as u128),
            "random" => block
                .prop("count")
                .and_then(|c| int(&c.value))
                .unwrap_or(1)
                .max(0) as u128,
            _ => 1,
        }
    };
    let product = sweep
        .nodes()
        .iter()
        .fold(1u128, |n, block| n.saturating_mul(count_of(block)));
    let includes = sweep.nodes().iter().filter(|n| n.name == "include").count() as u128;
    let repeat = sweep
        .child("repeat")
        .and_then(|r| r.arg(0))
        .and_then(|a| int(&a.value))
        .unwrap_or(1)
        .max(1) as u128;
    product.saturating_add(includes).saturating_mul(repeat)
}

/// The product of the sweep's grid, zip and random blocks, first block slowest.
fn combine(sweep: &Node, base_seed: i64, diags: &mut Vec<Diag>) -> Vec<Combo> {
    let mut combos: Vec<Combo> = vec![Vec::new()];
    for block in sweep.nodes() {
        let rows = match block.name.as_str() {
            "grid" => grid(block),
            "zip" => zip(block, diags),
            "random" => random(block, base_seed, diags),
            _ => continue,
        };
        combos = combos
            .iter()
            .flat_map(|left| {
                rows.iter()
                    .map(move |right| left.iter().chain(right).cloned().collect::<Vec<_>>())
            })
            .collect();
    }
    combos
}

/// The combinations no `exclude` rule drops; a `when` that fails to evaluate is an error.
fn drop_excluded(combos: Vec<Combo>, excludes: &[&Node], seed: i64) -> Result<Vec<Combo>, Diag> {
    let env = template::shared();
    let mut kept = Vec::new();
    'points: for combo in combos {
        for rule in excludes {
            if excluded(rule, &combo, seed, env)? {
                continue 'points;
            }
        }
        kept.push(combo);
    }
    Ok(kept)
}

/// Appends every `include` point; one that leaves out an axis is an error.
fn add_included(kept: &mut Vec<Combo>, sweep: &Node, axis_names: &[String], diags: &mut Vec<Diag>) {
    for include in sweep.nodes().iter().filter(|n| n.name == "include") {
        let missing: Vec<&str> = axis_names
            .iter()
            .filter(|a| include.prop(a).is_none())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let missing = missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            diags.push(diag(
                include.source,
                ExpandError::IncludeAxes {
                    missing,
                    span: include.name_span,
                },
            ));
            continue;
        }
        kept.push(
            axis_names
                .iter()
                .filter_map(|a| include.prop(a).map(|e| (a.clone(), e.value.clone())))
                .collect(),
        );
    }
}

/// Every point `repeat` times, over consecutive seeds.
fn repeat(kept: Vec<Combo>, sweep: &Node, base_seed: i64) -> Vec<Point> {
    let repeat = sweep
        .child("repeat")
        .and_then(|r| r.arg(0))
        .and_then(|a| int(&a.value))
        .unwrap_or(1)
        .max(1);
    kept.into_iter()
        .flat_map(|axes| {
            (0..repeat).map(move |r| Point {
                axes: axes.clone(),
                seed: base_seed + r,
                replicate: r,
            })
        })
        .collect()
}

fn grid(block: &Node) -> Vec<Combo> {
    let mut rows: Vec<Combo> = vec![Vec::new()];
    for axis in block.nodes() {
        let values: Vec<KdlValue> = axis.args().map(|e| e.value.clone()).collect();
        rows = rows
            .iter()
            .flat_map(|row| {
                values.iter().map(move |v| {
                    row.iter()
                        .cloned()
                        .chain([(axis.name.clone(), v.clone())])
                        .collect()
                })
            })
            .collect();
    }
    rows
}

fn zip(block: &Node, diags: &mut Vec<Diag>) -> Vec<Combo> {
    let axes = block.nodes();
    let Some(first) = axes.first() else {
        return vec![Vec::new()];
    };
    let len = first.args().count();
    for other in &axes[1..] {
        let n = other.args().count();
        if n != len {
            diags.push(diag(
                other.source,
                ExpandError::ZipLength {
                    first: first.name.clone(),
                    first_len: len,
                    second: other.name.clone(),
                    second_len: n,
                    first_span: first.name_span,
                    second_span: other.name_span,
                },
            ));
            return vec![Vec::new()];
        }
    }
    (0..len)
        .map(|i| {
            axes.iter()
                .filter_map(|a| a.arg(i).map(|e| (a.name.clone(), e.value.clone())))
                .collect()
        })
        .collect()
}

fn random(block: &Node, base_seed: i64, diags: &mut Vec<Diag>) -> Vec<Combo> {
    let count = block
        .prop("count")
        .and_then(|c| int(&c.value))
        .unwrap_or(1)
        .max(0) as usize;
    let seed = block
        .prop("seed")
        .and_then(|s| int(&s.value))
        .unwrap_or(base_seed);
    let mut columns: Vec<(String, Vec<KdlValue>)> = Vec::new();
    for axis in block.nodes() {
        let kind = axis.arg(0).and_then(|a| a.as_str()).unwrap_or("");
        let args: Vec<&KdlValue> = axis.args().skip(1).map(|e| &e.value).collect();
        // Each axis draws from its own stream, so adding an axis leaves the others' values as they were.
        let mut rng = Rng::new((seed as u64) ^ fnv1a(axis.name.as_bytes()));
        let bounds = || {
            (
                args.first().and_then(|v| number(v)),
                args.get(1).and_then(|v| number(v)),
            )
        };
        let values: Vec<KdlValue> = match kind {
            "choice" => (0..count)
                .map(|_| {
                    args[(rng.unit() * args.len() as f64) as usize % args.len().max(1)].clone()
                })
                .collect(),
            "uniform" | "log-uniform" | "int-uniform" => {
                let (Some(low), Some(high)) = bounds() else {
                    continue;
                };
                if low > high {
                    diags.push(backwards(axis));
                    return vec![Vec::new()];
                }
                (0..count)
                    .map(|_| {
                        let u = rng.unit();
                        match kind {
                            "uniform" => KdlValue::Float(low + (high - low) * u),
                            "log-uniform" => {
                                KdlValue::Float((low.ln() + (high.ln() - low.ln()) * u).exp())
                            }
                            _ => KdlValue::Integer(
                                (low as i128)
                                    + ((u * (high - low + 1.0)) as i128).min((high - low) as i128),
                            ),
                        }
                    })
                    .collect()
            }
            _ => continue,
        };
        columns.push((axis.name.clone(), values));
    }
    (0..count)
        .map(|i| {
            columns
                .iter()
                .map(|(name, values)| (name.clone(), values[i].clone()))
                .collect()
        })
        .collect()
}

/// A range written high bound first, labelled on its two bounds.
fn backwards(axis: &Node) -> Diag {
    let bounds: Vec<&Entry> = axis.args().skip(1).take(2).collect();
    let span = match bounds.as_slice() {
        [a, b] => (
            a.span.offset(),
            b.span.offset() + b.span.len() - a.span.offset(),
        )
            .into(),
        _ => axis.name_span,
    };
    let plain = |i: usize| {
        bounds
            .get(i)
            .map_or(String::new(), |e| Plain(&e.value).to_string())
    };
    let error = ExpandError::RandomRange {
        axis: axis.name.clone(),
        low: plain(0),
        high: plain(1),
        span,
    };
    diag(axis.source, error)
}

/// The points that check a `search` before it runs ([`Search::probes`]), less those `exclude`
/// drops, each repeated over the sweep's seeds. The trials themselves are suggested while the
/// sweep runs.
fn search_points(
    sweep: &Node,
    block: &Node,
    experiment: &Node,
    base_seed: i64,
    diags: &mut Vec<Diag>,
) -> Vec<Point> {
    for axis in block.nodes() {
        let bounds: Vec<f64> = axis
            .args()
            .skip(1)
            .take(2)
            .filter_map(|e| number(&e.value))
            .collect();
        let ranged = matches!(
            axis.arg(0).and_then(|a| a.as_str()),
            Some("uniform" | "log-uniform" | "int-uniform")
        );
        if ranged && bounds.len() == 2 && bounds[0] > bounds[1] {
            diags.push(backwards(axis));
        }
    }
    let Some(search) = Search::of(experiment) else {
        return Vec::new();
    };
    let excludes: Vec<&Node> = sweep
        .nodes()
        .iter()
        .filter(|n| n.name == "exclude")
        .collect();
    match drop_excluded(search.probes(), &excludes, base_seed) {
        Ok(kept) => repeat(kept, sweep, base_seed),
        Err(e) => {
            diags.push(e);
            Vec::new()
        }
    }
}

/// Whether the sweep's `exclude` rules drop a point (a search's suggestion); a `when` that
/// fails to evaluate is an error.
pub fn is_excluded(sweep: &Node, point: &[(String, KdlValue)], seed: i64) -> Result<bool, Diag> {
    let env = template::shared();
    for rule in sweep.nodes().iter().filter(|n| n.name == "exclude") {
        if excluded(rule, point, seed, env)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether an `exclude` rule drops a point: every axis=value given matches and, if present,
/// its `when` expression is true.
fn excluded(
    rule: &Node,
    point: &[(String, KdlValue)],
    seed: i64,
    env: &'static Environment<'static>,
) -> Result<bool, Diag> {
    for (key, entry) in rule.props() {
        if key == "when" {
            continue;
        }
        let matches = point
            .iter()
            .any(|(axis, value)| axis == key && same(value, &entry.value));
        if !matches {
            return Ok(false);
        }
    }
    let Some(when) = rule.prop("when") else {
        return Ok(true);
    };
    let ctx = context(point, seed);
    match evaluate(when, &ctx, env, &mut HashMap::new())? {
        Some(KdlValue::Bool(b)) => Ok(b),
        Some(other) => Ok(truthy(&other)),
        None => Ok(false),
    }
}

/// Two sweep values are the same point when they are equal numbers (1e-2 and 0.01) or equal
/// strings or booleans.
pub fn same(a: &KdlValue, b: &KdlValue) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}
