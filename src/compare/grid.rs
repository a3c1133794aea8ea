//! The comparison as people read it: which columns, in which order — what a row is (its name,
//! its sweep where names repeat, its status), then the metrics, then the settings that vary —
//! and how a table fits a width: long text cut with an ellipsis, the least important columns
//! hidden. The terminal table, Markdown and the report's table are all made from a [`Grid`].

use std::collections::BTreeMap;
use std::fmt::Write;

use super::gate::delta;
use super::runs::{Column, show};
use super::table::{Comparison, Row};
use crate::sweep::record::short;

/// The longest text a cell of a column that may be hidden keeps on a narrowed table.
const MAX_TEXT: usize = 24;
/// The narrowest a run's name is cut to.
const MIN_NAME: usize = 12;
/// The column of the names.
const NAME: usize = 1;

/// How much a column matters when a table must be narrowed: the columns saying what a row is
/// stay; the others are hidden from the least important up, the rightmost of a kind first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Weight {
    /// Name, sweep, experiment, status, gate, runs.
    Identity,
    /// A column an experiment's rows are ranked by.
    Sort,
    /// An objective or a gated metric.
    Ranking,
    /// A setting that varies within an experiment (or a `--group-by` key).
    Varying,
    /// Any other metric.
    Metric,
    /// A setting that varies only from one experiment to another.
    Between,
}

/// Columns of a human table: headings, then for each row of the comparison (in its order) its
/// cells; `right` aligns numbers.
pub(crate) struct Grid {
    pub(crate) headings: Vec<String>,
    pub(crate) right: Vec<bool>,
    pub(crate) rows: Vec<Vec<String>>,
    weights: Vec<Weight>,
    /// The headings of the columns [`Grid::fit`] hid, in the table's order.
    pub(crate) hidden: Vec<String>,
}

/// The grid of a comparison. `gated`: a gate column; `marker` marks each experiment's best row;
/// `experiment`: a column naming each row's experiment (where rows are not shown under a line
/// per experiment).
pub(crate) fn grid(c: &Comparison, gated: bool, marker: &str, experiment: bool) -> Grid {
    let mut g = Grid {
        headings: Vec::new(),
        right: Vec::new(),
        rows: vec![Vec::new(); c.rows.len()],
        weights: Vec::new(),
        hidden: Vec::new(),
    };
    let best = |r: &Row| {
        if r.best {
            marker.to_owned()
        } else {
            String::new()
        }
    };
    g.push("", false, Weight::Identity, c.rows.iter().map(best));
    g.push(
        "name",
        false,
        Weight::Identity,
        c.rows.iter().map(|r| r.name.clone()),
    );
    if names_repeat(&c.rows) {
        g.push(
            "sweep",
            false,
            Weight::Identity,
            c.rows.iter().map(|r| r.sweep.clone()),
        );
    }
    if experiment {
        let cells = c.rows.iter().map(|r| r.experiment.clone());
        g.push("experiment", false, Weight::Identity, cells);
    }
    g.push(
        "status",
        false,
        Weight::Identity,
        c.rows.iter().map(|r| r.status.clone()),
    );
    if gated {
        let cells = c.rows.iter().map(|r| r.gate.unwrap_or_default().to_owned());
        g.push("gate", false, Weight::Identity, cells);
    }
    if !c.group_by.is_empty() {
        g.push(
            "runs",
            true,
            Weight::Identity,
            c.rows.iter().map(|r| r.runs.to_string()),
        );
    }
    for col in &c.columns {
        let sorts = c
            .groups
            .iter()
            .any(|g| g.sort.as_ref().is_some_and(|(s, _)| s == col));
        let weight = if sorts {
            Weight::Sort
        } else if ranks(c, col) {
            Weight::Ranking
        } else {
            Weight::Metric
        };
        let cells = c.rows.iter().map(|r| human_value(r, col));
        g.push(&col.to_string(), true, weight, cells);
    }
    for (key, label) in c.settings.iter().zip(&c.labels) {
        if key == "experiment" && c.group_by.is_empty() {
            continue;
        }
        let numeric = c
            .rows
            .iter()
            .filter_map(|r| r.settings.get(key))
            .all(|v| v.is_number() || v.is_null());
        let weight = if c.between.contains(key) {
            Weight::Between
        } else {
            Weight::Varying
        };
        let cells = c
            .rows
            .iter()
            .map(|r| r.settings.get(key).map(show).unwrap_or_default());
        g.push(label, numeric, weight, cells);
    }
    g
}

/// Whether two rows share a name: then a sweep column tells them apart.
fn names_repeat(rows: &[Row]) -> bool {
    let mut seen = std::collections::HashSet::new();
    rows.iter()
        .filter(|r| r.runs > 0)
        .any(|r| !seen.insert(r.name.as_str()))
}

/// Whether a metric column ranks rows: a group's sort column, an objective, or gated.
fn ranks(c: &Comparison, col: &Column) -> bool {
    c.groups.iter().any(|g| {
        g.sort.as_ref().is_some_and(|(s, _)| s == col)
            || g.objective
                .as_ref()
                .is_some_and(|o| col.metric() == o.metric)
    }) || c
        .rows
        .iter()
        .any(|r| r.base.as_ref().is_some_and(|b| b.contains_key(col)))
}

impl Grid {
    fn push(
        &mut self,
        heading: &str,
        right: bool,
        weight: Weight,
        cells: impl Iterator<Item = String>,
    ) {
        self.headings.push(heading.to_owned());
        self.right.push(right);
        self.weights.push(weight);
        for (row, cell) in self.rows.iter_mut().zip(cells) {
            row.push(cell);
        }
    }

    /// Each column's width in characters.
    pub(crate) fn widths(&self) -> Vec<usize> {
        (0..self.headings.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.headings[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The width of the table, two spaces between columns.
    fn width(&self) -> usize {
        let widths = self.widths();
        widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)
    }

    /// Narrows the table to `width` characters: long text cut with `…`, then the least important
    /// columns hidden (recorded in [`Grid::hidden`]), then names cut.
    pub(crate) fn fit(&mut self, width: usize) {
        if self.width() <= width {
            return;
        }
        for j in 0..self.headings.len() {
            if self.weights[j] != Weight::Identity && !self.right[j] {
                self.cut_column(j, MAX_TEXT);
            }
        }
        // Each column's place in the table as it was, to list the hidden ones in that order.
        let mut place: Vec<usize> = (0..self.headings.len()).collect();
        let mut hidden = Vec::new();
        let mut widths = self.widths();
        let total = |w: &[usize]| w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1);
        while total(&widths) > width {
            let Some(j) = (0..self.headings.len())
                .filter(|j| self.weights[*j] != Weight::Identity)
                .max_by_key(|j| (self.weights[*j], *j))
            else {
                break;
            };
            hidden.push((place.remove(j), self.headings.remove(j)));
            widths.remove(j);
            self.right.remove(j);
            self.weights.remove(j);
            for row in &mut self.rows {
                row.remove(j);
            }
        }
        hidden.sort();
        self.hidden = hidden.into_iter().map(|(_, h)| h).collect();
        let over = self.width().saturating_sub(width);
        if over > 0 && NAME < self.headings.len() {
            let name = self.widths()[NAME];
            self.cut_column(NAME, name.saturating_sub(over).max(MIN_NAME));
        }
    }

    fn cut_column(&mut self, j: usize, max: usize) {
        self.headings[j] = cut(&self.headings[j], max);
        for row in &mut self.rows {
            row[j] = cut(&row[j], max);
        }
    }
}

/// `text` in at most `max` characters, the last of them `…` where it was cut.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The rows of each experiment, the experiments in the order their first rows come.
pub(crate) fn sections(c: &Comparison) -> Vec<(&str, Vec<usize>)> {
    let mut at: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, r) in c.rows.iter().enumerate() {
        let k = *at.entry(r.experiment.as_str()).or_insert_with(|| {
            out.push((r.experiment.as_str(), Vec::new()));
            out.len() - 1
        });
        out[k].1.push(i);
    }
    out
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

/// Unique labels for runs in a list where names may repeat: the name, else `sweep/name`, else
/// `experiment/sweep/name`, else the directory. `runs` holds each run's experiment, sweep, name
/// and directory.
pub(crate) fn unique_names(runs: &[[&str; 4]]) -> Vec<String> {
    let count = |labels: &[String]| {
        let mut n: BTreeMap<&str, usize> = BTreeMap::new();
        for l in labels {
            *n.entry(l.as_str()).or_default() += 1;
        }
        labels.iter().map(|l| n[l.as_str()]).collect::<Vec<_>>()
    };
    let mut labels: Vec<String> = runs.iter().map(|r| r[2].to_owned()).collect();
    let qualify: [fn(&[&str; 4]) -> String; 3] = [
        |r| format!("{}/{}", r[1], r[2]),
        |r| format!("{}/{}/{}", r[0], r[1], r[2]),
        |r| r[3].to_owned(),
    ];
    for q in qualify {
        let repeats = count(&labels);
        if repeats.iter().all(|n| *n == 1) {
            break;
        }
        for (i, r) in runs.iter().enumerate() {
            if repeats[i] > 1 {
                labels[i] = q(r);
            }
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_text_ends_in_an_ellipsis() {
        assert_eq!(cut("abcdef", 6), "abcdef");
        assert_eq!(cut("abcdefg", 6), "abcde…");
        assert_eq!(cut("äöüäöüä", 3), "äö…");
    }

    #[test]
    fn repeated_names_are_qualified_until_unique() {
        let runs = [
            ["quick", "20260101-000000", "lr0.01", "a"],
            ["quick", "20260102-000000", "lr0.01", "b"],
            ["lora", "20260102-000000", "lr0.01", "c"],
            ["lora", "20260102-000000", "r8", "d"],
        ];
        assert_eq!(
            unique_names(&runs),
            [
                "20260101-000000/lr0.01",
                "quick/20260102-000000/lr0.01",
                "lora/20260102-000000/lr0.01",
                "r8"
            ]
        );
    }
}
