//! Planning: a composed, checked experiment → every run it describes, each validated against
//! the schema and the cross-field rules, named, and identified by the hash of its resolved
//! configuration. A failure names the first failing point and counts the others instead of
//! repeating itself. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;

use miette::{Diagnostic, LabeledSpan, SourceSpan};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::diagnostic::{Diag, plural};
use crate::front::check::{self, experiment::scope};
use crate::front::expand::{self, Expander, Point, RunName};
use crate::front::resolve;
use crate::front::schema::Schema;
use crate::front::source::{SourceId, Sources};
use crate::front::tree::{Node, Plain};
use crate::spec::{Length, RunSpec};

/// Every run of one experiment (`plan.json` of a sweep, read back by the run processes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub experiment: String,
    /// The overrides applied, as given on the command line.
    pub overrides: Vec<String>,
    pub runs: Vec<PlannedRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedRun {
    pub name: String,
    pub id: String,
    /// Axis values in declaration order.
    #[serde(serialize_with = "axes_json", deserialize_with = "axes_from_json")]
    pub axes: Vec<(String, kdl::KdlValue)>,
    pub seed: u64,
    pub config: RunSpec,
    /// The canonical KDL form (`config.kdl`); not in `plan.json` (each run directory has it),
    /// so empty in a plan read back.
    #[serde(skip)]
    pub config_kdl: String,
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

pub fn value_json(v: &kdl::KdlValue) -> serde_json::Value {
    match v {
        kdl::KdlValue::String(s) => serde_json::Value::from(s.as_str()),
        kdl::KdlValue::Integer(i) => i64::try_from(*i).map_or_else(
            |_| serde_json::Value::from(i.to_string()),
            serde_json::Value::from,
        ),
        kdl::KdlValue::Float(f) => serde_json::Value::from(*f),
        kdl::KdlValue::Bool(b) => serde_json::Value::from(*b),
        kdl::KdlValue::Null => serde_json::Value::Null,
    }
}

#[derive(Debug, Error, Diagnostic)]
pub enum PlanError {
    #[error("run name `{name}` is not usable as a directory name: {reason}")]
    #[diagnostic(
        code("xp::sweep::bad-name"),
        help(
            "run names are directories: at most 100 bytes, no `/`, no `..`, no control characters, not starting with `.`"
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

/// A diagnostic raised for some points of a sweep, reported once with the first failing point.
#[derive(Debug)]
struct AtPoints {
    inner: Box<dyn Diagnostic + Send + Sync>,
    point: String,
    failing: usize,
    total: usize,
}

impl fmt::Display for AtPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = matches!(self.inner.severity(), None | Some(miette::Severity::Error));
        let verb = if error { "fails for" } else { "holds for" };
        match (self.failing, self.total) {
            // A single run needs no point to tell it apart.
            (_, 1) => write!(f, "{}", self.inner),
            (2, 2) => write!(f, "{} (at {}; {verb} both runs)", self.inner, self.point),
            (n, t) if n == t => {
                write!(f, "{} (at {}; {verb} all {t} runs)", self.inner, self.point)
            }
            (n, t) => write!(
                f,
                "{} (at {}; {verb} {n} of {t} runs)",
                self.inner, self.point
            ),
        }
    }
}

impl std::error::Error for AtPoints {}

impl Diagnostic for AtPoints {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.help()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.inner.labels()
    }
}

/// Failures collected over all points, keyed by code and place.
#[derive(Default)]
struct Failures {
    /// By (code, source, first label offset and length): the first diagnostic, its point, and
    /// how many points failed the same way.
    by_key: BTreeMap<FailureKey, (Diag, String, usize)>,
}

type FailureKey = (String, Option<SourceId>, usize, usize);

/// A point that expanded and resolved cleanly.
struct Resolved {
    point: Point,
    name: Option<RunName>,
    spec: RunSpec,
    kdl: String,
}

impl Failures {
    fn add(&mut self, diag: Diag, point: &str) {
        let first = diag
            .inner
            .labels()
            .and_then(|mut l| l.next())
            .map_or((0, 0), |l| (l.offset(), l.len()));
        let key = (diag.code(), diag.source, first.0, first.1);
        self.by_key
            .entry(key)
            .and_modify(|e| e.2 += 1)
            .or_insert((diag, point.to_owned(), 1));
    }

    fn into_diags(self, total: usize) -> Vec<Diag> {
        self.by_key
            .into_values()
            .map(|(diag, point, failing)| Diag {
                source: diag.source,
                inner: Box::new(AtPoints {
                    inner: diag.inner,
                    point,
                    failing,
                    total,
                }),
            })
            .collect()
    }
}

/// Plans a composed experiment whose static check found no errors.
pub fn plan(
    experiment: &Node,
    schema: &Schema,
    sources: &Sources,
    overrides: Vec<String>,
) -> (Option<Plan>, Vec<Diag>) {
    let mut diags = Vec::new();
    let points = expand::points(experiment, &mut diags);
    if !diags.is_empty() {
        return (None, diags);
    }
    let repeats = points.iter().any(|p| p.replicate > 0);
    let total = points.len();
    let options = check::Options {
        allow_when: true,
        scope_of: scope,
        root: experiment.source,
    };
    let Some(experiment_spec) = schema.document.node("experiment") else {
        return (None, diags);
    };
    let mut expander = Expander::default();
    let mut failures = Failures::default();
    let mut warnings = Failures::default();
    let mut runs: Vec<Resolved> = Vec::new();
    let mut internal = Vec::new();
    for point in points {
        let label = point.label(repeats);
        let (tree, name) = match expander.expand(experiment, &point) {
            Ok(expanded) => expanded,
            Err(errors) => {
                errors.into_iter().for_each(|d| failures.add(d, &label));
                continue;
            }
        };
        let mut nodes = [tree];
        let report = check::check(&mut nodes, schema, &options);
        let errors: Vec<Diag> = report
            .diags
            .into_iter()
            .filter(|d| d.severity() == miette::Severity::Error)
            .collect();
        if !errors.is_empty() {
            errors.into_iter().for_each(|d| failures.add(d, &label));
            continue;
        }
        let [mut tree] = nodes;
        resolve::fill(&mut tree, experiment_spec, schema);
        let spec = match resolve::decode(&tree, sources) {
            Ok(spec) => spec,
            Err(e) => {
                internal.push(e);
                continue;
            }
        };
        let (broken, doubtful): (Vec<Diag>, Vec<Diag>) = resolve::rules(&tree, &spec)
            .into_iter()
            .partition(|d| d.severity() == miette::Severity::Error);
        doubtful.into_iter().for_each(|d| warnings.add(d, &label));
        if !broken.is_empty() {
            broken.into_iter().for_each(|d| failures.add(d, &label));
            continue;
        }
        let kdl = resolve::canonical(&tree, schema, sources);
        runs.push(Resolved {
            point,
            name,
            spec,
            kdl,
        });
    }
    if let Some(e) = internal.first() {
        diags.push(Diag {
            source: Some(experiment.source),
            inner: Box::new(Internal(e.clone())),
        });
    }
    diags.extend(failures.into_diags(total));
    if !diags.is_empty() {
        return (None, diags);
    }
    // Likely mistakes that do not stop the runs, reported once like failures.
    diags.extend(warnings.into_diags(total));

    let sweep_span = experiment
        .child("sweep")
        .map_or(experiment.name_span, |s| s.name_span);
    let sweep_source = experiment
        .child("sweep")
        .map_or(experiment.source, |s| s.source);
    let mut planned = Vec::new();
    let mut bad_name = None;
    for Resolved {
        point,
        name,
        spec,
        kdl,
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
            None => default_name(&point, repeats),
        };
        let json = serde_json::to_vec(&RunSpec {
            resources: None,
            ..spec.clone()
        })
        .unwrap_or_default();
        let id = hex(&Sha256::digest(&json))[..12].to_owned();
        planned.push(PlannedRun {
            name: run_name,
            id,
            axes: point.axes.clone(),
            seed: spec.seed,
            config: spec,
            config_kdl: kdl,
        });
    }
    diags.extend(bad_name);
    let name_source = experiment
        .child("name")
        .and_then(|n| n.arg(0))
        .map_or((sweep_source, sweep_span), |e| (e.source, e.span));
    let label_of = |r: &PlannedRun| {
        Point {
            axes: r.axes.clone(),
            seed: r.seed as i64,
            replicate: 0,
        }
        .label(repeats)
    };
    let mut by_name: BTreeMap<&str, Vec<&PlannedRun>> = BTreeMap::new();
    let mut by_id: BTreeMap<&str, Vec<&PlannedRun>> = BTreeMap::new();
    for r in &planned {
        by_name.entry(&r.name).or_default().push(r);
        by_id.entry(&r.id).or_default().push(r);
    }
    let duplicates: Vec<&Vec<&PlannedRun>> = by_id.values().filter(|v| v.len() > 1).collect();
    if let Some(first) = duplicates.first() {
        let points = first
            .iter()
            .map(|r| format!("({})", label_of(r)))
            .collect::<Vec<_>>()
            .join(" and ");
        let more = match duplicates.len() {
            1 => String::new(),
            n => format!(", and {} more groups,", n - 1),
        };
        let error = PlanError::DuplicateConfig {
            points: format!("{points}{more}"),
            span: sweep_span,
        };
        diags.push(Diag {
            source: Some(sweep_source),
            inner: Box::new(error),
        });
    }
    let no_errors = |d: &[Diag]| !d.iter().any(|d| d.severity() == miette::Severity::Error);
    if no_errors(&diags) {
        let collisions: Vec<(&&str, &Vec<&PlannedRun>)> =
            by_name.iter().filter(|(_, v)| v.len() > 1).collect();
        if let Some((name, same)) = collisions.first() {
            let points = same
                .iter()
                .take(4)
                .map(|r| format!("({})", label_of(r)))
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
            let error = PlanError::NameCollision {
                name: (**name).to_owned(),
                count: same.len(),
                points: format!("{points}{more}{others}"),
                span: name_source.1,
            };
            diags.push(Diag {
                source: Some(name_source.0),
                inner: Box::new(error),
            });
        }
    }
    if !no_errors(&diags) {
        return (None, diags);
    }
    let name = experiment
        .arg(0)
        .and_then(|a| a.as_str())
        .unwrap_or_default()
        .to_owned();
    (
        Some(Plan {
            experiment: name,
            overrides,
            runs: planned,
        }),
        diags,
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
    } else if name.starts_with('.') {
        Some("it starts with `.`")
    } else {
        None
    }
}

/// `lr=0.001,rank=8` (and `seed=2` when the sweep repeats), made file-system safe.
fn default_name(point: &Point, repeats: bool) -> String {
    let mut parts: Vec<String> = point
        .axes
        .iter()
        .map(|(k, v)| format!("{k}={}", Plain(v)))
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
