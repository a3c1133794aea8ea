//! Building the comparison: the settings that vary between the runs (and those that do not),
//! the metric columns, one row per run or per group (mean ± std), and the order: rows together
//! by experiment, each experiment's ranked by its own objective, with its best row.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

use super::columns::{candidates, chosen_columns, default_columns, objectives, sort_column};
use super::runs::{Column, Run, canonical, show};
use super::{CompareError, some_of};
use crate::diagnostic::suggest::suggest;
use crate::spec::{Direction, Objective, Regression};

/// How to tabulate.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// `--metrics`: column patterns (globs); empty: the defaults.
    pub metrics: Vec<String>,
    /// `--sort`: a column or metric; `None`: the objective.
    pub sort: Option<String>,
    /// `--group-by`: axes or settings whose values make a group.
    pub group_by: Vec<String>,
    /// Columns shown whatever the runs have (the gated ones).
    pub require: Vec<Column>,
    /// Only the `experiment` setting, where it varies (the gate's compact table).
    pub hide_settings: bool,
}

/// A metric cell: one run's value, or a group's mean with its spread (sample standard
/// deviation, from two values on) and how many runs had a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub mean: f64,
    pub std: Option<f64>,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        Some(Stat { mean, std, n })
    }
}

/// One line of the table: a run, a group of runs, or (with a baseline) a run the baseline has
/// and the comparison does not.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    /// The experiment; for a group spanning several, empty.
    pub experiment: String,
    /// The sweep directory's name (a run's row only).
    pub sweep: String,
    /// A run's status; a group's, or its counts (`2 completed, 1 failed`).
    pub status: String,
    /// Runs in the row that failed or diverged.
    pub failed: usize,
    /// Runs in the row still pending or running, or interrupted.
    pub unfinished: usize,
    /// Runs in the row the sweep's `prune` stopped early (finished, not failed).
    pub pruned: usize,
    /// Why runs ended badly (`name: reason` for a group).
    pub reason: Option<String>,
    /// The run directory (a run's row only).
    pub dir: Option<PathBuf>,
    /// How many runs the row stands for (0: missing).
    pub runs: usize,
    /// What a baseline joins on besides name and experiment: a run's axes, a group's keys.
    pub keys: BTreeMap<String, Value>,
    /// The values of [`Comparison::settings`] this row has.
    pub settings: BTreeMap<String, Value>,
    pub values: BTreeMap<Column, Stat>,
    pub objective: Option<Objective>,
    pub regression: Option<Regression>,
    pub best: bool,
    /// With a baseline: the joined baseline row's values.
    pub base: Option<BTreeMap<Column, f64>>,
    /// With a baseline: `pass`, `new` (not in the baseline) or the row's first problem.
    pub gate: Option<&'static str>,
}

/// The table `xp compare` prints, in every format.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Runs compared (after the filter).
    pub runs: usize,
    pub experiments: Vec<String>,
    /// The objective most runs share.
    pub objective: Option<Objective>,
    /// The column every experiment's rows are sorted by, when they all are by the same one;
    /// `None`: by name, or each by its own (see [`Comparison::groups`]).
    pub sort: Option<(Column, Direction)>,
    /// The experiments in the order their rows come, each with its ranking.
    pub groups: Vec<Group>,
    /// Settings every run has with one value (runs without a config.json aside).
    pub constant: BTreeMap<String, Value>,
    /// The setting columns: varying settings by full key, or the group-by names.
    pub settings: Vec<String>,
    /// The settings of [`Comparison::settings`] that vary only from one experiment to another:
    /// within each experiment they have one value.
    pub between: BTreeSet<String>,
    /// Their headings: the shortest unambiguous dotted suffix of each key.
    pub labels: Vec<String>,
    pub group_by: Vec<String>,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
}

/// The rows of one experiment (empty: of groups spanning experiments), ranked together.
#[derive(Debug, Clone)]
pub struct Group {
    pub experiment: String,
    /// Its runs' objective (the most common one).
    pub objective: Option<Objective>,
    /// The column its rows are sorted by, best first; `None`: by name.
    pub sort: Option<(Column, Direction)>,
}

impl Comparison {
    /// The ranking of an experiment's rows (the first group's for one the table lacks).
    pub fn group(&self, experiment: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.experiment == experiment)
            .or(self.groups.first())
    }
}

/// The built-in fields a name may refer to before axes and settings.
const FIELDS: [&str; 5] = ["name", "experiment", "status", "id", "seed"];

/// Names users give for grouping and joining: built-in fields, axes, then settings by full key
/// or by an unambiguous dotted suffix (`lr` for `train.optimizer.lr`).
pub struct Fields {
    /// Suffix → the one key ending in it (`None`: several do).
    by_suffix: BTreeMap<String, Option<String>>,
}

impl Fields {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Fields {
        let mut by_suffix: BTreeMap<String, Option<String>> = BTreeMap::new();
        for key in keys {
            for suffix in std::iter::once(key).chain(suffixes(key)) {
                by_suffix
                    .entry(suffix.to_owned())
                    .and_modify(|k| {
                        if k.as_deref() != Some(key) {
                            *k = None
                        }
                    })
                    .or_insert_with(|| Some(key.to_owned()));
            }
        }
        Fields { by_suffix }
    }

    /// The value `name` has for a run.
    pub fn lookup(&self, run: &Run, name: &str) -> Option<Value> {
        let s = &run.summary;
        match name {
            "name" => return Some(Value::from(s.name.clone())),
            "experiment" => return Some(Value::from(s.experiment.clone())),
            "status" => return Some(Value::from(s.status.as_str())),
            "id" => return Some(Value::from(s.id.clone())),
            "seed" => {
                if let Some(seed) = s.seed {
                    return Some(Value::from(seed));
                }
            }
            _ => {}
        }
        if let Some(v) = s.axes.get(name) {
            return Some(v.clone());
        }
        if let Some(v) = run.config.get(name) {
            return Some(v.clone());
        }
        match self.by_suffix.get(name) {
            Some(Some(key)) => run.config.get(key).cloned(),
            _ => None,
        }
    }

    /// Checks that `name` means something for at least one run.
    fn check(&self, runs: &[&Run], option: &'static str, name: &str) -> Result<(), CompareError> {
        if runs.iter().any(|r| self.lookup(r, name).is_some()) {
            return Ok(());
        }
        let axes: BTreeSet<&str> = runs
            .iter()
            .flat_map(|r| r.summary.axes.keys().map(String::as_str))
            .collect();
        let candidates: Vec<&str> = FIELDS
            .iter()
            .copied()
            .chain(axes.iter().copied())
            .chain(
                self.by_suffix
                    .iter()
                    .filter(|(_, k)| k.is_some())
                    .map(|(s, _)| s.as_str()),
            )
            .collect();
        let help = match suggest(name, candidates.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if axes.is_empty() => {
                "give an axis, a setting (`train.optimizer.lr`, or `lr` for short) or a field (`experiment`, `status`)".into()
            }
            None => format!(
                "the runs' axes: {}; a setting by key (`train.optimizer.lr`, or `lr` for short) works too",
                some_of(axes.iter().copied(), 12)
            ),
        };
        Err(CompareError::UnknownField {
            option,
            name: name.to_owned(),
            help,
        })
    }
}

/// `a.b.c` → `b.c`, `c`.
fn suffixes(key: &str) -> impl Iterator<Item = &str> {
    key.char_indices()
        .filter(|(_, c)| *c == '.')
        .map(move |(i, _)| &key[i + 1..])
}

/// The identity of a run, or of the group it falls in, as a baseline join sees it.
#[derive(Debug, Clone)]
pub struct RowKey {
    pub name: String,
    pub experiment: String,
    pub keys: BTreeMap<String, Value>,
}

/// The row keys runs would have (the runs a filter left out, so a baseline row they match is
/// not reported missing). Names resolve as they do for the compared runs.
pub fn row_keys(runs: &[&Run], group_by: &[String], compared: &[&Run]) -> Vec<RowKey> {
    let fields = Fields::new(union_keys(compared.iter().chain(runs)));
    if group_by.is_empty() {
        return runs
            .iter()
            .map(|r| RowKey {
                name: r.summary.name.clone(),
                experiment: r.summary.experiment.clone(),
                keys: r.summary.axes.clone().into_iter().collect(),
            })
            .collect();
    }
    runs.iter()
        .map(|r| {
            let keys = group_values(&fields, r, group_by);
            RowKey {
                name: group_name(&keys, group_by),
                experiment: r.summary.experiment.clone(),
                keys,
            }
        })
        .collect()
}

/// Every setting key of the runs, sorted. A run whose keys are those of the run before it (the
/// common case: a sweep) costs a comparison per key.
fn union_keys<'a>(runs: impl Iterator<Item = &'a &'a Run>) -> Vec<&'a str> {
    let mut set: BTreeSet<&str> = BTreeSet::new();
    let mut previous: Option<&BTreeMap<String, Value>> = None;
    for run in runs {
        if previous.is_some_and(|p| p.len() == run.config.len() && p.keys().eq(run.config.keys())) {
            continue;
        }
        set.extend(run.config.keys().map(String::as_str));
        previous = Some(&run.config);
    }
    set.into_iter().collect()
}

fn group_values(fields: &Fields, run: &Run, group_by: &[String]) -> BTreeMap<String, Value> {
    group_by
        .iter()
        .map(|g| (g.clone(), fields.lookup(run, g).unwrap_or(Value::Null)))
        .collect()
}

/// `lr=0.01,rank=8`: a group's name, in `--group-by` order.
fn group_name(keys: &BTreeMap<String, Value>, group_by: &[String]) -> String {
    group_by
        .iter()
        .map(|g| {
            let v = keys.get(g).map(show).unwrap_or_default();
            format!("{g}={}", if v.is_empty() { "none" } else { v.as_str() })
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Builds the table of `runs` (at least one).
pub fn build(runs: &[&Run], options: &TableOptions) -> Result<Comparison, CompareError> {
    let keys = union_keys(runs.iter());
    let fields = Fields::new(keys.iter().copied());
    for g in &options.group_by {
        fields.check(runs, "--group-by", g)?;
    }
    let (mut constant, mut varying) = split_settings(runs, &keys);
    if options.hide_settings {
        constant.clear();
        varying.retain(|k| k == "experiment");
    }
    let objectives = objectives(runs);
    let objective = objectives.first().cloned();
    let candidates = candidates(runs);
    let mut columns = if options.metrics.is_empty() && options.hide_settings {
        Vec::new()
    } else if options.metrics.is_empty() {
        default_columns(&objectives, &candidates)
    } else {
        chosen_columns(&options.metrics, &candidates)?
    };
    for c in &options.require {
        if !columns.contains(c) {
            columns.push(c.clone());
        }
    }
    // `--sort` must name something some run has; each experiment then sorts by it as its own
    // runs have it (its best value, or its final one).
    let common = sort_column(options.sort.as_deref(), objective.as_ref(), &candidates)?;
    let mut groups = experiment_groups(runs, options.sort.as_deref(), &common);
    if options.hide_settings {
        for g in &mut groups {
            g.sort = g.sort.take().filter(|(c, _)| columns.contains(c));
        }
    }
    let mut front = 0;
    for g in &groups {
        if let Some((c, _)) = &g.sort
            && !columns.contains(c)
        {
            columns.insert(front, c.clone());
            front += 1;
        }
    }
    let between = if options.group_by.is_empty() {
        between_experiments(runs, &varying)
    } else {
        BTreeSet::new()
    };
    let (settings, labels, mut rows) = if options.group_by.is_empty() {
        // A setting's column is headed by its whole key, as `--set` takes it: a suffix such as
        // `fixed` or `best` reads as something else.
        let labels = varying.clone();
        let rows = runs
            .iter()
            .map(|r| run_row(r, &varying, &columns))
            .collect();
        (varying, labels, rows)
    } else {
        let rows = group_rows(runs, &fields, &options.group_by, &columns);
        (options.group_by.clone(), options.group_by.clone(), rows)
    };
    if !rows.iter().any(|r| r.experiment.is_empty()) {
        groups.retain(|g| !g.experiment.is_empty());
    }
    rank(&mut rows, &groups);
    let sort = match groups.split_first() {
        Some((first, rest)) if rest.iter().all(|g| g.sort == first.sort) => first.sort.clone(),
        _ => None,
    };
    let experiments: BTreeSet<&str> = runs.iter().map(|r| r.summary.experiment.as_str()).collect();
    Ok(Comparison {
        runs: runs.len(),
        experiments: experiments.into_iter().map(str::to_owned).collect(),
        objective,
        sort,
        groups,
        constant,
        settings,
        between,
        labels,
        group_by: options.group_by.clone(),
        columns,
        rows,
    })
}

/// Each experiment's ranking, in name order, then one for rows spanning experiments (a
/// `--group-by` group can): by `--sort` as the experiment's runs have it, else by its own
/// objective.
fn experiment_groups(
    runs: &[&Run],
    sort: Option<&str>,
    common: &Option<(Column, Direction)>,
) -> Vec<Group> {
    let mut by_experiment: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        by_experiment
            .entry(run.summary.experiment.as_str())
            .or_default()
            .push(run);
    }
    let mut groups: Vec<Group> = by_experiment
        .into_iter()
        .map(|(experiment, members)| {
            let objective = objectives(&members).into_iter().next();
            let own = candidates(&members);
            let sort = sort_column(sort, objective.as_ref(), &own)
                .ok()
                .flatten()
                .or_else(|| sort.and(common.clone()));
            Group {
                experiment: experiment.to_owned(),
                objective,
                sort,
            }
        })
        .collect();
    if !groups.iter().any(|g| g.experiment.is_empty()) {
        let objective = objectives(runs).into_iter().next();
        groups.push(Group {
            experiment: String::new(),
            sort: common.clone(),
            objective,
        });
    }
    groups
}

/// Orders the rows: by experiment in the groups' order, each experiment's rows best first by its
/// sort column (rows without a value last, ties by name), and marks each experiment's best row.
fn rank(rows: &mut [Row], groups: &[Group]) {
    let at = |r: &Row| {
        groups
            .iter()
            .position(|g| g.experiment == r.experiment)
            .unwrap_or(groups.len())
    };
    rows.sort_by(|a, b| (&a.experiment, &a.name, &a.dir).cmp(&(&b.experiment, &b.name, &b.dir)));
    rows.sort_by(|a, b| {
        at(a)
            .cmp(&at(b))
            .then_with(|| match groups.get(at(a)).and_then(|g| g.sort.as_ref()) {
                Some((column, direction)) => {
                    order(a.values.get(column), b.values.get(column), *direction)
                }
                None => std::cmp::Ordering::Equal,
            })
    });
    for (i, group) in groups.iter().enumerate() {
        let Some((column, _)) = &group.sort else {
            continue;
        };
        let with_value = rows
            .iter()
            .filter(|r| at(r) == i && r.values.contains_key(column))
            .count();
        if with_value > 1
            && let Some(best) = rows.iter_mut().find(|r| {
                at(r) == i && r.values.contains_key(column) && r.failed == 0 && r.pruned == 0
            })
        {
            best.best = true;
        }
    }
}

/// The varying settings that have one value within each experiment (`experiment` itself among
/// them): they say which experiment a row is, not how its runs differ.
fn between_experiments(runs: &[&Run], varying: &[String]) -> BTreeSet<String> {
    let mut first: BTreeMap<(&str, &str), Option<&Value>> = BTreeMap::new();
    let mut differs: BTreeSet<&str> = BTreeSet::new();
    for run in runs {
        let experiment = run.summary.experiment.as_str();
        for key in varying {
            if differs.contains(key.as_str()) {
                continue;
            }
            let value = run.config.get(key);
            match first.get(&(experiment, key.as_str())) {
                None => {
                    first.insert((experiment, key.as_str()), value);
                }
                Some(seen) if *seen != value => {
                    differs.insert(key.as_str());
                }
                Some(_) => {}
            }
        }
    }
    varying
        .iter()
        .filter(|k| !differs.contains(k.as_str()))
        .cloned()
        .collect()
}

/// Best first; rows without a value last.
fn order(a: Option<&Stat>, b: Option<&Stat>, direction: Direction) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(a), Some(b)) => {
            let o = a.mean.partial_cmp(&b.mean).unwrap_or(Ordering::Equal);
            match direction {
                Direction::Minimize => o,
                Direction::Maximize => o.reverse(),
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Settings with one value in every run that has a config, and the rest (a setting some runs
/// lack counts as varying). `experiment` comes first among the varying ones. `keys` is the
/// sorted union of the runs' keys, walked beside each run's sorted settings.
fn split_settings(runs: &[&Run], keys: &[&str]) -> (BTreeMap<String, Value>, Vec<String>) {
    let configured = runs.iter().filter(|r| !r.config.is_empty()).count();
    // Per key: its first value, how many runs have it, whether a value differs.
    let mut seen: Vec<(Option<&Value>, usize, bool)> = vec![(None, 0, false); keys.len()];
    for run in runs {
        let mut j = 0;
        for (k, v) in &run.config {
            while j < keys.len() && keys[j] != k.as_str() {
                j += 1;
            }
            let Some((first, count, differs)) = seen.get_mut(j) else {
                break;
            };
            *count += 1;
            match first {
                None => *first = Some(v),
                Some(f) => *differs |= *f != v,
            }
            j += 1;
        }
    }
    let mut constant = BTreeMap::new();
    let mut varying = Vec::new();
    for (k, (first, count, differs)) in keys.iter().zip(seen) {
        match first {
            Some(v) if count == configured && !differs => {
                constant.insert(k.to_string(), v.clone());
            }
            _ => varying.push(k.to_string()),
        }
    }
    varying.sort_by_key(|k| k != "experiment");
    (constant, varying)
}

fn run_row(run: &Run, varying: &[String], columns: &[Column]) -> Row {
    let s = &run.summary;
    Row {
        name: s.name.clone(),
        experiment: s.experiment.clone(),
        sweep: run.sweep.clone(),
        status: s.status.as_str().to_owned(),
        failed: usize::from(run.failed()),
        unfinished: usize::from(run.unfinished()),
        pruned: usize::from(run.pruned()),
        reason: s.reason.clone(),
        dir: Some(run.dir.clone()),
        runs: 1,
        keys: s.axes.clone().into_iter().collect(),
        settings: varying
            .iter()
            .filter_map(|k| run.config.get(k).map(|v| (k.clone(), v.clone())))
            .collect(),
        values: columns
            .iter()
            .filter_map(|c| {
                c.value(s).map(|v| {
                    (
                        c.clone(),
                        Stat {
                            mean: v,
                            std: None,
                            n: 1,
                        },
                    )
                })
            })
            .collect(),
        objective: run.objective.clone(),
        regression: run.regression.clone(),
        best: false,
        base: None,
        gate: None,
    }
}

fn group_rows(runs: &[&Run], fields: &Fields, group_by: &[String], columns: &[Column]) -> Vec<Row> {
    type Members<'a> = (BTreeMap<String, Value>, Vec<&'a Run>);
    let mut groups: BTreeMap<Vec<String>, Members> = BTreeMap::new();
    for run in runs {
        let keys = group_values(fields, run, group_by);
        let id: Vec<String> = group_by
            .iter()
            .map(|g| keys.get(g).map(canonical).unwrap_or_default())
            .collect();
        groups
            .entry(id)
            .or_insert_with(|| (keys, Vec::new()))
            .1
            .push(run);
    }
    groups
        .into_values()
        .map(|(keys, members)| {
            let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
            for r in &members {
                *statuses.entry(r.summary.status.as_str()).or_default() += 1;
            }
            let status = if statuses.len() == 1 {
                statuses
                    .keys()
                    .next()
                    .copied()
                    .unwrap_or_default()
                    .to_owned()
            } else {
                statuses
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let reasons: Vec<String> = members
                .iter()
                .filter(|r| r.failed())
                .filter_map(|r| {
                    r.summary
                        .reason
                        .as_ref()
                        .map(|why| format!("{}: {why}", r.summary.name))
                })
                .collect();
            let experiments: BTreeSet<&str> = members
                .iter()
                .map(|r| r.summary.experiment.as_str())
                .collect();
            Row {
                name: group_name(&keys, group_by),
                experiment: if experiments.len() == 1 {
                    experiments
                        .into_iter()
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                } else {
                    String::new()
                },
                sweep: String::new(),
                status,
                failed: members.iter().filter(|r| r.failed()).count(),
                unfinished: members.iter().filter(|r| r.unfinished()).count(),
                pruned: members.iter().filter(|r| r.pruned()).count(),
                reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
                dir: None,
                runs: members.len(),
                settings: keys.clone(),
                keys,
                values: columns
                    .iter()
                    .filter_map(|c| {
                        let values: Vec<f64> =
                            members.iter().filter_map(|r| c.value(&r.summary)).collect();
                        Stat::of(&values).map(|s| (c.clone(), s))
                    })
                    .collect(),
                objective: members.iter().find_map(|r| r.objective.clone()),
                regression: members.iter().find_map(|r| r.regression.clone()),
                best: false,
                base: None,
                gate: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_found_by_key_or_an_unambiguous_suffix() {
        let f = Fields::new(["train.optimizer.lr", "data.seed", "model.layers"]);
        let resolves = |name: &str| f.by_suffix.get(name).cloned().flatten();
        assert_eq!(resolves("lr").as_deref(), Some("train.optimizer.lr"));
        assert_eq!(resolves("seed").as_deref(), Some("data.seed"));
        assert_eq!(resolves("model.layers").as_deref(), Some("model.layers"));
        let f = Fields::new(["train.seed", "data.seed"]);
        assert_eq!(f.by_suffix.get("seed"), Some(&None));
    }

    #[test]
    fn spread_is_the_sample_standard_deviation() {
        let s = Stat::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.mean, s.std, s.n), (2.0, Some(1.0), 3));
        assert_eq!(Stat::of(&[4.0]).unwrap().std, None);
        assert!(Stat::of(&[]).is_none());
    }
}
