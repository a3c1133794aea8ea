//! Planning: a composed, checked experiment → every run it describes, each validated against
//! the schema and the cross-field rules, named, and identified by the hash of its resolved
//! configuration. A failure names the first failing point and counts the others instead of
//! repeating itself. Pure: no I/O.

mod failures;
mod names;
mod prune;
mod trial;

use std::collections::BTreeMap;
use std::fmt;

use miette::{Diagnostic, SourceSpan};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::diagnostic::{Diag, plural};
use crate::front::check::{self, experiment::scope};
use crate::front::expand::{Expander, RunName};
use crate::front::points::{self, Point};
use crate::front::resolve;
pub use crate::front::resolve::{Settings, value_json};
use crate::front::schema::{NodeSpec, Schema};
use crate::front::search::Search;
use crate::front::source::{SourceId, Sources};
use crate::front::tree::Node;
use crate::spec::{Length, Pruning, RunSpec};
use failures::Failures;
use names::{name_collision, name_runs};
pub use trial::{Planner, Rejected};

/// Every run of one experiment (`plan.json` of a sweep, read back by the run processes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub experiment: String,
    /// The overrides applied, as given on the command line.
    pub overrides: Vec<String>,
    /// A search's runs are added trial by trial as the sweep runs (empty before it starts).
    pub runs: Vec<PlannedRun>,
    /// `sweep { prune … }`: how runs are stopped early, read back by every run process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<Pruning>,
    /// The sweep's `search`, when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Search>,
    /// Turns a search's trials into runs; absent from a plan read back from `plan.json`.
    #[serde(skip)]
    pub planner: Option<std::sync::Arc<Planner>>,
}

/// One run of a plan. In `plan.json` its configuration is its [`Settings`] (the names users
/// write); the [`RunSpec`] is read back from them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "RecordedRun")]
pub struct PlannedRun {
    pub name: String,
    pub id: String,
    /// Axis values in declaration order.
    #[serde(serialize_with = "axes_json")]
    pub axes: Vec<(String, kdl::KdlValue)>,
    pub seed: u64,
    #[serde(skip)]
    pub config: RunSpec,
    /// Every setting by its dotted KDL path (`config.json`).
    #[serde(rename = "config")]
    pub settings: Settings,
    /// The canonical KDL form (`config.kdl`); not in `plan.json` (each run directory has it),
    /// so empty in a plan read back.
    #[serde(skip)]
    pub config_kdl: String,
}

/// A planned run as `plan.json` holds it.
#[derive(Deserialize)]
struct RecordedRun {
    name: String,
    id: String,
    #[serde(deserialize_with = "axes_from_json")]
    axes: Vec<(String, kdl::KdlValue)>,
    seed: u64,
    config: Settings,
}

impl TryFrom<RecordedRun> for PlannedRun {
    type Error = String;
    fn try_from(r: RecordedRun) -> Result<PlannedRun, String> {
        let config = resolve::spec(&r.config)
            .map_err(|e| format!("run `{}` has a configuration xp cannot read: {e}", r.name))?;
        Ok(PlannedRun {
            name: r.name,
            id: r.id,
            axes: r.axes,
            seed: r.seed,
            config,
            settings: r.config,
            config_kdl: String::new(),
        })
    }
}

/// Reads the axes back in their order in the file.
fn axes_from_json<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, kdl::KdlValue)>, D::Error> {
    struct Axes;
    impl<'de> serde::de::Visitor<'de> for Axes {
        type Value = Vec<(String, kdl::KdlValue)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of axis values")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut axes = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                let value = match v {
                    serde_json::Value::String(s) => kdl::KdlValue::String(s),
                    serde_json::Value::Bool(b) => kdl::KdlValue::Bool(b),
                    serde_json::Value::Null => kdl::KdlValue::Null,
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(i) => kdl::KdlValue::Integer(i.into()),
                        None => kdl::KdlValue::Float(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    other => kdl::KdlValue::String(other.to_string()),
                };
                axes.push((k, value));
            }
            Ok(axes)
        }
    }
    d.deserialize_map(Axes)
}

fn axes_json<S: serde::Serializer>(
    axes: &[(String, kdl::KdlValue)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(axes.len()))?;
    for (k, v) in axes {
        map.serialize_entry(k, &value_json(v))?;
    }
    map.end()
}

#[derive(Debug, Error, Diagnostic)]
pub enum PlanError {
    #[error("run name `{name}` is not usable as a directory name: {reason}")]
    #[diagnostic(
        code("xp::sweep::bad-name"),
        help(
            "run names are directories: at most 100 bytes, no `/`, no `..`, no control, invisible or bidirectional characters, not starting with `.`, and not a file of the sweep (plan.json, results.csv, report.html, slurm, current, …)"
        )
    )]
    BadName {
        name: String,
        reason: &'static str,
        #[label("gives `{name}`")]
        span: SourceSpan,
    },

    #[error("{count} runs are named `{name}`: {points}")]
    #[diagnostic(
        code("xp::sweep::name-collision"),
        help("put the axes that differ into the `name` template")
    )]
    NameCollision {
        name: String,
        count: usize,
        points: String,
        #[label("names collide")]
        span: SourceSpan,
    },

    #[error("points {points} resolve to the same configuration")]
    #[diagnostic(
        code("xp::sweep::duplicate-config"),
        help("their runs would be identical; an axis value is probably unused or overridden")
    )]
    DuplicateConfig {
        points: String,
        #[label("in this sweep")]
        span: SourceSpan,
    },
}

/// A point that expanded and resolved cleanly.
struct Resolved {
    point: Point,
    name: Option<RunName>,
    spec: RunSpec,
    kdl: String,
    settings: Settings,
}

/// Plans a composed experiment whose static check found no errors.
pub fn plan(
    experiment: &Node,
    schema: &Schema,
    sources: &Sources,
    overrides: Vec<String>,
) -> (Option<Plan>, Vec<Diag>) {
    let mut diags = Vec::new();
    let Some((outcome, total, repeats)) =
        resolve_points(experiment, schema, sources, false, &mut diags)
    else {
        return (None, diags);
    };
    if let Some(e) = outcome.internal.first() {
        diags.push(Diag {
            source: Some(experiment.source),
            inner: Box::new(Internal(e.clone())),
        });
    }
    diags.extend(outcome.failures.into_diags(total));
    if !diags.is_empty() {
        return (None, diags);
    }
    // Likely mistakes that do not stop the runs, reported once like failures.
    diags.extend(outcome.warnings.into_diags(total));
    let name = experiment
        .arg(0)
        .and_then(|a| a.as_str())
        .unwrap_or_default()
        .to_owned();
    if let Some(search) = Search::of(experiment) {
        // The probe points checked every value the search can suggest (and `prune` against
        // their runs); its runs come later.
        let (probes, _) = name_runs(outcome.runs, repeats);
        let prune = prune::resolve(experiment, schema, &probes, &mut diags);
        if !no_errors(&diags) {
            return (None, diags);
        }
        let planner = Planner::new(experiment, sources, repeats);
        return (
            Some(Plan {
                experiment: name,
                overrides,
                runs: Vec::new(),
                prune,
                search: Some(search),
                planner: Some(std::sync::Arc::new(planner)),
            }),
            diags,
        );
    }

    let (planned, bad_name) = name_runs(outcome.runs, repeats);
    diags.extend(bad_name);
    diags.extend(duplicate_config(experiment, &planned, repeats));
    if no_errors(&diags) {
        diags.extend(name_collision(experiment, &planned, repeats));
    }
    let prune = prune::resolve(experiment, schema, &planned, &mut diags);
    if !no_errors(&diags) {
        return (None, diags);
    }
    (
        Some(Plan {
            experiment: name,
            overrides,
            runs: planned,
            prune,
            search: None,
            planner: None,
        }),
        diags,
    )
}

/// The mistakes an experiment with errors still shows: its sweep's, and the cross-field rules
/// of its runs once every node that holds an error is left out (`errors`: the error labels
/// already reported, by source and offset). A typo in one place then does not hide an
/// independent mistake elsewhere; nothing that follows from the errors is reported again.
pub fn salvage(
    experiment: &Node,
    errors: &[(SourceId, usize)],
    schema: &Schema,
    sources: &Sources,
) -> Vec<Diag> {
    let mut pruned = experiment.clone();
    if holds_error(&pruned, errors) {
        return Vec::new();
    }
    prune(&mut pruned, errors);
    let mut diags = Vec::new();
    if let Some((outcome, total, _)) = resolve_points(&pruned, schema, sources, true, &mut diags) {
        diags.extend(outcome.failures.into_diags(total));
    }
    diags
}

/// Whether an error label falls on a node's name or entries (not its children).
fn holds_error(node: &Node, errors: &[(SourceId, usize)]) -> bool {
    let within = |source: SourceId, span: SourceSpan| {
        errors.iter().any(|&(s, offset)| {
            s == source && offset >= span.offset() && offset < span.offset() + span.len().max(1)
        })
    };
    within(node.source, node.name_span)
        || node
            .entries
            .iter()
            .any(|e| within(e.source, e.span) || within(e.source, e.key_span()))
}

/// Removes, at every depth, the nodes that hold an error.
fn prune(node: &mut Node, errors: &[(SourceId, usize)]) {
    if let Some(children) = node.children.as_mut() {
        children.nodes.retain(|n| !holds_error(n, errors));
        for child in &mut children.nodes {
            prune(child, errors);
        }
    }
}

/// Expands and resolves every point of the sweep; `None` when the sweep itself fails (its
/// errors are in `diags`). Also returns the number of points and whether they repeat.
fn resolve_points(
    experiment: &Node,
    schema: &Schema,
    sources: &Sources,
    salvage: bool,
    diags: &mut Vec<Diag>,
) -> Option<(Expansion, usize, bool)> {
    let points = points::points(experiment, diags);
    if !diags.is_empty() {
        return None;
    }
    let repeats = points.iter().any(|p| p.replicate > 0)
        || Search::of(experiment).is_some_and(|s| s.repeat > 1);
    let total = points.len();
    let mut resolver = Resolver::new(experiment, schema, sources, salvage)?;
    let mut outcome = Expansion::default();
    for point in points {
        let label = point.label(repeats);
        resolver.resolve(point, &label, &mut outcome);
    }
    Some((outcome, total, repeats))
}

fn no_errors(diags: &[Diag]) -> bool {
    !diags
        .iter()
        .any(|d| d.severity() == miette::Severity::Error)
}

/// What resolving every point found.
#[derive(Default)]
struct Expansion {
    runs: Vec<Resolved>,
    failures: Failures,
    warnings: Failures,
    /// Invariants of the schema that did not hold (bugs); the first is reported.
    internal: Vec<String>,
}

/// Turns points into runs: expands the experiment for a point, checks the result against the
/// schema, fills defaults, decodes it and applies the cross-field rules.
struct Resolver<'a> {
    experiment: &'a Node,
    /// The schema's `experiment` node.
    spec: &'a NodeSpec,
    schema: &'a Schema,
    sources: &'a Sources,
    options: check::CheckOptions,
    expander: Expander,
    /// Checking an experiment that already has errors: only the cross-field rules report.
    salvage: bool,
}

impl<'a> Resolver<'a> {
    fn new(
        experiment: &'a Node,
        schema: &'a Schema,
        sources: &'a Sources,
        salvage: bool,
    ) -> Option<Resolver<'a>> {
        Some(Resolver {
            experiment,
            spec: schema.document.node("experiment")?,
            schema,
            sources,
            options: check::CheckOptions {
                allow_when: true,
                scope_of: scope,
                root: experiment.source,
            },
            expander: Expander::default(),
            salvage,
        })
    }

    /// Resolves one point into `out`: its run, or the errors it fails with (counted under its
    /// label), and the warnings it raises either way.
    fn resolve(&mut self, point: Point, label: &str, out: &mut Expansion) {
        let (tree, name) = match self.expander.expand(self.experiment, &point) {
            Ok(expanded) => expanded,
            Err(errors) => {
                if !self.salvage {
                    errors.into_iter().for_each(|d| out.failures.add(d, label));
                }
                return;
            }
        };
        let mut nodes = [tree];
        let report = check::check(&mut nodes, self.schema, &self.options);
        let errors: Vec<Diag> = report
            .diags
            .into_iter()
            .filter(|d| d.severity() == miette::Severity::Error)
            .collect();
        if !errors.is_empty() {
            if !self.salvage {
                errors.into_iter().for_each(|d| out.failures.add(d, label));
            }
            return;
        }
        let [mut tree] = nodes;
        resolve::fill(&mut tree, self.spec, self.schema);
        let spec = match resolve::decode(&tree, self.sources) {
            Ok(spec) => spec,
            Err(e) => {
                if !self.salvage {
                    out.internal.push(e);
                }
                return;
            }
        };
        let (broken, doubtful): (Vec<Diag>, Vec<Diag>) = resolve::rules(&tree, &spec)
            .into_iter()
            .partition(|d| d.severity() == miette::Severity::Error);
        doubtful
            .into_iter()
            .for_each(|d| out.warnings.add(d, label));
        if !broken.is_empty() {
            broken.into_iter().for_each(|d| out.failures.add(d, label));
            return;
        }
        let kdl = resolve::canonical(&tree, self.schema, self.sources);
        let settings = resolve::settings(&tree, self.schema, self.sources);
        out.runs.push(Resolved {
            point,
            name,
            spec,
            kdl,
            settings,
        });
    }
}

/// The hash of a run's resolved configuration, less where it runs (its resources).
fn run_id(spec: &RunSpec) -> String {
    let json = serde_json::to_vec(&RunSpec {
        resources: None,
        ..spec.clone()
    })
    .unwrap_or_default();
    hex(&Sha256::digest(&json))[..12].to_owned()
}

/// Where the sweep is written (the experiment's name when it has none).
fn sweep_at(experiment: &Node) -> (SourceId, SourceSpan) {
    experiment
        .child("sweep")
        .map_or((experiment.source, experiment.name_span), |s| {
            (s.source, s.name_span)
        })
}

/// A planned run's point, as failures name it.
fn point_label(run: &PlannedRun, repeats: bool) -> String {
    Point {
        axes: run.axes.clone(),
        seed: run.seed as i64,
        replicate: 0,
    }
    .label(repeats)
}

/// Runs whose configurations are identical (the first group, and how many more there are).
fn duplicate_config(experiment: &Node, planned: &[PlannedRun], repeats: bool) -> Option<Diag> {
    let mut by_id: BTreeMap<&str, Vec<&PlannedRun>> = BTreeMap::new();
    for r in planned {
        by_id.entry(&r.id).or_default().push(r);
    }
    let duplicates: Vec<&Vec<&PlannedRun>> = by_id.values().filter(|v| v.len() > 1).collect();
    let first = duplicates.first()?;
    let points = first
        .iter()
        .map(|r| format!("({})", point_label(r, repeats)))
        .collect::<Vec<_>>()
        .join(" and ");
    let more = match duplicates.len() {
        1 => String::new(),
        n => format!(", and {} more groups,", n - 1),
    };
    let (source, span) = sweep_at(experiment);
    let error = PlanError::DuplicateConfig {
        points: format!("{points}{more}"),
        span,
    };
    Some(Diag {
        source: Some(source),
        inner: Box::new(error),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An invariant of the schema did not hold: a bug, reported rather than panicking.
#[derive(Debug, Error, Diagnostic)]
#[error("internal error while resolving a run: {0}; please report this with the experiment file")]
struct Internal(String);

impl Plan {
    pub fn summary(&self) -> String {
        plural(self.runs.len(), "run")
    }
}

/// Total optimizer steps when fixed by the config.
pub fn steps(spec: &RunSpec) -> Option<usize> {
    match spec.train.length {
        Length::Steps(s) => Some(s),
        Length::Epochs(_) => None,
    }
}
