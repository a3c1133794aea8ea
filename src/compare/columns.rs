//! Which metric columns a comparison shows and which it sorts by: the runs' objectives, the
//! columns their summaries offer, the defaults, and `--metrics` / `--sort` checked against them.

use std::collections::{BTreeMap, BTreeSet};

use globset::Glob;

use super::runs::{Column, Run};
use super::{CompareError, some_of};
use crate::diagnostic::suggest::suggest;
use crate::spec::{Direction, Objective};

/// The runs' objectives, the most common first.
pub(super) fn objectives(runs: &[&Run]) -> Vec<Objective> {
    let mut counts: BTreeMap<(String, String), (usize, Objective)> = BTreeMap::new();
    for o in runs.iter().filter_map(|r| r.objective.as_ref()) {
        counts
            .entry((o.metric.clone(), format!("{:?}", o.direction)))
            .or_insert((0, o.clone()))
            .0 += 1;
    }
    let mut list: Vec<(usize, Objective)> = counts.into_values().collect();
    list.sort_by_key(|(count, _)| std::cmp::Reverse(*count));
    list.into_iter().map(|(_, o)| o).collect()
}

/// Every column some run has a value for (steps always).
pub(super) fn candidates(runs: &[&Run]) -> BTreeSet<Column> {
    let mut last: BTreeSet<&str> = BTreeSet::new();
    let mut best: BTreeSet<&str> = BTreeSet::new();
    for r in runs {
        for m in r.summary.last.keys() {
            if !last.contains(m.as_str()) {
                last.insert(m);
            }
        }
        for m in r.summary.best.keys() {
            if !best.contains(m.as_str()) {
                best.insert(m);
            }
        }
    }
    let mut out: BTreeSet<Column> = last.iter().map(|m| Column::Final(m.to_string())).collect();
    out.extend(best.iter().map(|m| Column::Best(m.to_string())));
    out.insert(Column::Steps);
    for (_, c) in Column::RUN.iter().skip(1) {
        if runs.iter().any(|r| c.value(&r.summary).is_some()) {
            out.insert(c.clone());
        }
    }
    out
}

/// The objective's best and final value, final `train/loss`, the validation metrics, steps,
/// wall time and throughput.
pub(super) fn default_columns(
    objectives: &[Objective],
    candidates: &BTreeSet<Column>,
) -> Vec<Column> {
    let mut wanted = Vec::new();
    for o in objectives {
        wanted.push(Column::Best(o.metric.clone()));
        wanted.push(Column::Final(o.metric.clone()));
    }
    wanted.push(Column::Final("train/loss".into()));
    wanted.extend(
        candidates
            .iter()
            .filter(|c| matches!(c, Column::Final(m) if m.starts_with("val/")))
            .cloned(),
    );
    wanted.extend([Column::Steps, Column::WallS, Column::TokensPerS]);
    let mut out: Vec<Column> = Vec::new();
    for c in wanted {
        if candidates.contains(&c) && !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The columns `--metrics` patterns choose, in pattern order. `best:` or `final:` in front
/// picks that kind; a bare pattern matches final values and the per-run columns.
pub(super) fn chosen_columns(
    patterns: &[String],
    candidates: &BTreeSet<Column>,
) -> Result<Vec<Column>, CompareError> {
    let mut out: Vec<Column> = Vec::new();
    for pattern in patterns {
        let (kind, glob) = if let Some(g) = pattern.strip_prefix("best:") {
            (Some(true), g)
        } else if let Some(g) = pattern.strip_prefix("final:") {
            (Some(false), g)
        } else {
            (None, pattern.as_str())
        };
        let matcher = Glob::new(glob)
            .map_err(|e| CompareError::UnknownMetric {
                pattern: pattern.clone(),
                available: format!("(`{glob}` is not a valid glob: {e})"),
            })?
            .compile_matcher();
        let mut found = false;
        for c in candidates {
            let hit = match (c, kind) {
                (Column::Best(m), Some(true)) | (Column::Final(m), None | Some(false)) => {
                    matcher.is_match(m.as_str())
                }
                (Column::Best(_) | Column::Final(_), _) => false,
                (run_level, None) => matcher.is_match(run_level.metric()),
                _ => false,
            };
            if hit {
                found = true;
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        if !found {
            return Err(CompareError::UnknownMetric {
                pattern: pattern.clone(),
                available: available(candidates),
            });
        }
    }
    Ok(out)
}

fn available(candidates: &BTreeSet<Column>) -> String {
    let keys: Vec<String> = candidates.iter().map(|c| c.to_string()).collect();
    some_of(keys.iter().map(String::as_str), 16)
}

/// `--sort`: a column (`best:val/loss`, `steps`) or a metric (its best value where runs record
/// one, else its final value), or `name`; by default the objective.
pub(super) fn sort_column(
    written: Option<&str>,
    objective: Option<&Objective>,
    candidates: &BTreeSet<Column>,
) -> Result<Option<(Column, Direction)>, CompareError> {
    let pick = |m: &str| -> Option<Column> {
        let exact = Column::parse(m);
        if (m.contains(':') || Column::RUN.iter().any(|(n, _)| *n == m))
            && candidates.contains(&exact)
        {
            return Some(exact);
        }
        [Column::Best(m.to_owned()), Column::Final(m.to_owned())]
            .into_iter()
            .find(|c| candidates.contains(c))
    };
    let column = match written {
        Some("name") => None,
        Some(m) => match pick(m) {
            Some(c) => Some(c),
            None => {
                let mut keys: Vec<String> = candidates.iter().map(|c| c.to_string()).collect();
                keys.extend(candidates.iter().map(|c| c.metric().to_owned()));
                let help = match suggest(m, keys.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("they have: {}", available(candidates)),
                };
                return Err(CompareError::UnknownSort {
                    metric: m.to_owned(),
                    help,
                });
            }
        },
        None => objective.and_then(|o| pick(&o.metric)),
    };
    Ok(column.map(|c| {
        let d = c.direction(objective);
        (c, d)
    }))
}
