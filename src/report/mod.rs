//! The report stage: recorded runs become one [`ReportPage`] — the comparison `xp compare` prints,
//! each run's status and its curves — which [`html`] renders as a single self-contained page.
//! [`write`] is the edge: it finds the runs, reads their metrics and writes the file.

pub(crate) mod curves;
pub(crate) mod html;
pub(crate) mod monitoring;

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::compare::discover::{Sweeps, discover};
use crate::compare::grid::unique_names;
use crate::compare::{self, CompareError, Comparison, Request, Run};
use crate::sweep::record::{RunDir, atomic};

pub use curves::Curve;

/// Why no report was written. Both are usage errors (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Compare(#[from] CompareError),
    #[error("cannot write the report `{path}`: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Everything the page shows.
#[derive(Debug)]
pub struct ReportPage {
    /// The table, as `xp compare` builds it with its defaults.
    pub comparison: Comparison,
    /// When the report was made, as people read it.
    pub generated: String,
    /// What the page's script draws; embedded in the page as JSON.
    pub data: Data,
}

/// The curves and statuses the page's script draws.
#[derive(Debug, Serialize)]
pub struct Data {
    /// The metrics drawn for all runs in one chart each, in order.
    pub charts: Vec<String>,
    /// The metrics drawn in each run's own small chart.
    pub own: Vec<String>,
    /// The runs in the table's order.
    pub runs: Vec<RunData>,
}

/// One run as the script draws it.
#[derive(Debug, Serialize)]
pub struct RunData {
    pub name: String,
    /// Its name in the legend and on its chart, unique among the runs: the name, qualified by
    /// its sweep (and experiment) where names repeat.
    pub label: String,
    pub status: String,
    pub reason: Option<String>,
    pub curves: BTreeMap<String, Curve>,
}

/// What [`write`] did: how many runs the report shows, and the runs or files it had to leave
/// out, for the caller to show.
#[derive(Debug)]
pub struct Written {
    pub runs: usize,
    pub warnings: Vec<String>,
}

const LOSSES: [&str; 2] = ["train/loss", "val/loss"];
const LR: &str = "train/lr";

/// Writes the report of the runs under `paths` (run directories, sweep directories or folders
/// above them) to `output`, atomically.
pub fn write(paths: &[PathBuf], output: &Path) -> Result<Written, ReportError> {
    let found = discover(paths, Sweeps::All)?;
    let mut warnings = found.warnings;
    let metrics = chart_metrics(&found.runs);
    let wanted: Vec<&str> = metrics.iter().map(String::as_str).collect();
    let curves: Vec<BTreeMap<String, Curve>> = found
        .runs
        .iter()
        .map(|run| match std::fs::read(RunDir::new(&run.dir).metrics()) {
            Ok(bytes) => curves::parse(&String::from_utf8_lossy(&bytes), &wanted),
            Err(e) if e.kind() == ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                warnings.push(format!(
                    "`{}`: cannot read metrics.jsonl: {e}; its curves are left out",
                    run.dir.display()
                ));
                BTreeMap::new()
            }
        })
        .collect();
    let generated = chrono::Local::now().format("%Y-%m-%d %H:%M").to_string();
    let report = build(&found.runs, curves, generated)?;
    let page = html::render(&report);
    atomic::write(output, page.as_bytes()).map_err(|source| ReportError::Write {
        path: output.display().to_string(),
        source,
    })?;
    Ok(Written {
        runs: found.runs.len(),
        warnings,
    })
}

/// The metrics worth a chart of all runs: the losses, the objective where it is another
/// metric, the learning rate, and the [`monitoring`] charts.
pub fn chart_metrics(runs: &[Run]) -> Vec<String> {
    let mut out: Vec<String> = LOSSES.iter().map(|m| (*m).to_owned()).collect();
    for run in runs {
        if let Some(o) = &run.objective
            && !out.contains(&o.metric)
        {
            out.push(o.metric.clone());
        }
    }
    out.push(LR.to_owned());
    out.extend(monitoring::METRICS.iter().map(|m| (*m).to_owned()));
    out
}

/// The report of `runs`, given each run's curves (in the same order) and the time it is made.
pub fn build(
    runs: &[Run],
    curves: Vec<BTreeMap<String, Curve>>,
    generated: String,
) -> Result<ReportPage, CompareError> {
    let comparison = compare::compare(runs, &Request::default())?.comparison;
    let position: HashMap<&Path, usize> = comparison
        .rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((r.dir.as_deref()?, i)))
        .collect();
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| position.get(runs[i].dir.as_path()).copied());
    let mut curves: Vec<Option<BTreeMap<String, Curve>>> = curves.into_iter().map(Some).collect();
    curves.resize_with(runs.len(), || None);
    let dirs: Vec<String> = order
        .iter()
        .map(|i| runs[*i].dir.display().to_string())
        .collect();
    let idents: Vec<[&str; 4]> = order
        .iter()
        .zip(&dirs)
        .map(|(i, dir)| {
            let r = &runs[*i];
            [
                r.summary.experiment.as_str(),
                r.sweep.as_str(),
                r.summary.name.as_str(),
                dir.as_str(),
            ]
        })
        .collect();
    let mut labels = unique_names(&idents).into_iter();
    let data: Vec<RunData> = order
        .into_iter()
        .map(|i| {
            let s = &runs[i].summary;
            RunData {
                label: labels.next().unwrap_or_else(|| s.name.clone()),
                name: s.name.clone(),
                status: s.status.as_str().to_owned(),
                reason: s.reason.clone(),
                curves: curves[i].take().unwrap_or_default(),
            }
        })
        .collect();
    let drawn = |m: &str| data.iter().any(|r| r.curves.contains_key(m));
    let charts = chart_metrics(runs)
        .into_iter()
        .filter(|m| drawn(m))
        .collect();
    let own = LOSSES
        .iter()
        .filter(|m| drawn(m))
        .map(|m| (*m).to_owned())
        .collect();
    Ok(ReportPage {
        comparison,
        generated,
        data: Data {
            charts,
            own,
            runs: data,
        },
    })
}
