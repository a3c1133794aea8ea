//! One compared run as read from its directory: the parts of `summary.json` a comparison needs
//! (for a run still going, the latest values of its `metrics.jsonl`), its configuration
//! flattened to dotted keys, and the metric [`Column`]s values are read through.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::spec::{Direction, Objective, Regression, direction_of, ranked};
use crate::sweep::record::{Best, Status};

/// What a comparison reads of `summary.json`. Every field but `name` and `status` may be
/// absent, so runs recorded by other versions of xp still compare.
#[derive(Debug, Clone, Deserialize)]
pub struct Recorded {
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub experiment: String,
    pub status: Status,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub axes: serde_json::Map<String, Value>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub steps: usize,
    #[serde(
        default,
        rename = "final",
        deserialize_with = "crate::sweep::record::summary::metrics_or_nan"
    )]
    pub last: BTreeMap<String, f64>,
    #[serde(default)]
    pub best: BTreeMap<String, Best>,
    #[serde(default)]
    pub wall_s: Option<f64>,
    #[serde(default)]
    pub tokens_per_s: Option<f64>,
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
}

/// One run directory, read.
#[derive(Debug, Clone)]
pub struct Run {
    /// The directory, as reached from the path it was found under.
    pub dir: PathBuf,
    /// The name of the sweep directory holding it (`20261202-101500`), which tells apart runs
    /// of one name from several sweeps; set by [`discover`](super::discover).
    pub sweep: String,
    pub summary: Recorded,
    /// `config.json` flattened by [`flatten`].
    pub config: BTreeMap<String, Value>,
    pub objective: Option<Objective>,
    pub regression: Option<Regression>,
}

impl Run {
    /// A run from its files: the parsed summary, the bytes of `config.json` (if any), and the
    /// text of `metrics.jsonl`, which brings a run that has not finished up to date. A
    /// `config.json` that is not JSON leaves the run without settings, and says why.
    pub fn read(
        dir: PathBuf,
        summary: Recorded,
        config: Option<&[u8]>,
        metrics: Option<&str>,
    ) -> (Run, Option<serde_json::Error>) {
        let (config, regression, problem) = match config.map(flatten_json) {
            Some(Ok(f)) => (f.settings, f.regression, None),
            Some(Err(e)) => (BTreeMap::new(), None, Some(e)),
            None => (BTreeMap::new(), None, None),
        };
        let objective = match (
            config.get("objective.metric").and_then(Value::as_str),
            config.get("objective.direction").and_then(Value::as_str),
        ) {
            (Some(metric), Some(direction)) => Some(Objective {
                metric: metric.to_owned(),
                direction: if direction == "maximize" {
                    Direction::Maximize
                } else {
                    Direction::Minimize
                },
            }),
            _ => None,
        };
        let mut run = Run {
            dir,
            sweep: String::new(),
            summary,
            config,
            objective,
            regression: regression
                .and_then(|r| serde_json::from_value::<Option<Regression>>(r).ok())
                .flatten(),
        };
        if let Some(text) = metrics {
            run.catch_up(text);
        }
        (run, problem)
    }

    /// Whether the run is still to finish: its values come from `metrics.jsonl`.
    pub fn unfinished(&self) -> bool {
        matches!(
            self.summary.status,
            Status::Pending | Status::Running | Status::Interrupted
        )
    }

    /// Whether the run ended badly.
    pub fn failed(&self) -> bool {
        matches!(self.summary.status, Status::Failed | Status::Diverged)
    }

    /// Takes the latest value of every metric (and the best so far) from `metrics.jsonl`. A
    /// line still being written is skipped.
    fn catch_up(&mut self, metrics: &str) {
        let s = &mut self.summary;
        for line in metrics.lines() {
            let Ok(Value::Object(row)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let step = row.get("step").and_then(Value::as_u64).unwrap_or(0) as usize;
            s.steps = s.steps.max(step);
            if let Some(t) = row.get("time_s").and_then(Value::as_f64) {
                s.wall_s = Some(t);
            }
            for (k, v) in &row {
                let Some(v) = v.as_f64().filter(|v| v.is_finite()) else {
                    continue;
                };
                if matches!(k.as_str(), "step" | "epoch" | "time_s") {
                    continue;
                }
                s.last.insert(k.clone(), v);
                if k.ends_with("_per_s") {
                    s.tokens_per_s = Some(v);
                }
                if !ranked(k) {
                    continue;
                }
                let direction = metric_direction(k, self.objective.as_ref());
                if s.best.get(k).is_none_or(|b| direction.better(v, b.value)) {
                    s.best.insert(k.clone(), Best { value: v, step });
                }
            }
        }
    }
}

/// Settings that say nothing about how a run trains.
const UNCOMPARED: [&str; 2] = ["description", "regression"];

/// `config.json`, flattened.
#[derive(Debug, Default)]
pub struct Flat {
    pub settings: BTreeMap<String, Value>,
    /// The `regression` block, as written.
    pub regression: Option<Value>,
}

/// `config.json` as dotted keys (`train.optimizer.lr`), leaves only, read straight from its
/// bytes. Unset (null) values and empty lists are left out, as are `description` and
/// `regression` (kept aside); the payload serde nests under a tagged enum's `kind` sits beside
/// its tag (`train.optimizer.kind` = `adamw`, `train.optimizer.beta1` = 0.9).
pub fn flatten_json(bytes: &[u8]) -> Result<Flat, serde_json::Error> {
    let mut leaves = Vec::with_capacity(64);
    let mut regression = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Node {
        leaves: &mut leaves,
        regression: &mut regression,
        key: String::new(),
        object: None,
        top: true,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(Flat {
        settings: leaves.into_iter().collect(),
        regression,
    })
}

/// A value of `config.json` being flattened: a leaf is stored under `key`, children of an
/// object under `object` (a tagged enum's `kind` keeps its parent's), else under `key`.
struct Node<'a, 'p> {
    leaves: &'a mut Vec<(String, Value)>,
    regression: &'a mut Option<Value>,
    key: String,
    object: Option<&'p str>,
    top: bool,
}

impl Node<'_, '_> {
    fn leaf<E>(self, v: Value) -> Result<(), E> {
        if !self.key.is_empty() {
            self.leaves.push((self.key, v));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a resolved run configuration")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.leaf(Value::from(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.leaf(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.leaf(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.leaf(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.leaf(Value::from(v))
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        if items.is_empty() {
            Ok(())
        } else {
            self.leaf(Value::Array(items))
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let prefix = self.object.unwrap_or(&self.key);
        while let Some(Key(key)) = map.next_key::<Key>()? {
            let key: &str = &key;
            if self.top && UNCOMPARED.contains(&key) {
                let v = map.next_value::<Value>()?;
                if key == "regression" {
                    *self.regression = Some(v);
                }
                continue;
            }
            let mut full = String::with_capacity(prefix.len() + 1 + key.len());
            if !prefix.is_empty() {
                full.push_str(prefix);
                full.push('.');
            }
            full.push_str(key);
            map.next_value_seed(Node {
                leaves: &mut *self.leaves,
                regression: &mut *self.regression,
                key: full,
                object: (key == "kind").then_some(prefix),
                top: false,
            })?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the file unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The direction of a metric: the objective's for the objective, else by its name (accuracy
/// and throughput up, everything else down).
pub fn metric_direction(metric: &str, objective: Option<&Objective>) -> Direction {
    match objective {
        Some(o) if o.metric == metric => o.direction,
        _ => direction_of(metric),
    }
}

/// A metric column: a metric's final or best value, or a per-run figure of the summary.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Column {
    Best(String),
    Final(String),
    Steps,
    WallS,
    TokensPerS,
    PeakMemory,
}

impl Column {
    /// A value of this column in JSON: counts (steps, bytes) as integers.
    pub fn json(&self, v: f64) -> Value {
        if matches!(self, Column::Steps | Column::PeakMemory) && v.fract() == 0.0 && v.abs() < 9e15
        {
            Value::from(v as i64)
        } else {
            finite_json(v)
        }
    }
}

/// A number in JSON; null for NaN and infinities, which JSON cannot hold.
pub fn finite_json(v: f64) -> Value {
    if v.is_finite() {
        Value::from(v)
    } else {
        Value::Null
    }
}

impl Column {
    /// The per-run columns, by name.
    pub const RUN: [(&'static str, Column); 4] = [
        ("steps", Column::Steps),
        ("wall_s", Column::WallS),
        ("tokens_per_s", Column::TokensPerS),
        ("peak_memory_bytes", Column::PeakMemory),
    ];

    /// `best:M`, `final:M`, a per-run column, or a bare metric name (its final value).
    pub fn parse(s: &str) -> Column {
        if let Some(m) = s.strip_prefix("best:") {
            Column::Best(m.to_owned())
        } else if let Some(m) = s.strip_prefix("final:") {
            Column::Final(m.to_owned())
        } else if let Some((_, c)) = Self::RUN.iter().find(|(n, _)| *n == s) {
            c.clone()
        } else {
            Column::Final(s.to_owned())
        }
    }

    /// Whether a table heading names a metric column (rather than a name, status or axis).
    pub fn is_heading(s: &str) -> bool {
        s.starts_with("best:") || s.starts_with("final:") || Self::RUN.iter().any(|(n, _)| *n == s)
    }

    /// The metric whose direction applies.
    pub fn metric(&self) -> &str {
        match self {
            Column::Best(m) | Column::Final(m) => m,
            Column::Steps => "steps",
            Column::WallS => "wall_s",
            Column::TokensPerS => "tokens_per_s",
            Column::PeakMemory => "peak_memory_bytes",
        }
    }

    /// Which way is better for this column.
    pub fn direction(&self, objective: Option<&Objective>) -> Direction {
        match self {
            Column::Steps => Direction::Maximize,
            _ => metric_direction(self.metric(), objective),
        }
    }

    /// The run's value; missing and non-finite values are `None`, never zero.
    pub fn value(&self, s: &Recorded) -> Option<f64> {
        let v = match self {
            Column::Best(m) => s.best.get(m).map(|b| b.value),
            Column::Final(m) => s.last.get(m).copied(),
            Column::Steps => Some(s.steps as f64),
            Column::WallS => s.wall_s,
            Column::TokensPerS => s.tokens_per_s,
            Column::PeakMemory => s.peak_memory_bytes.map(|b| b as f64),
        };
        v.filter(|v| v.is_finite())
    }

    /// How a gate names it: a final value by its metric alone.
    pub fn gate_name(&self) -> String {
        match self {
            Column::Final(m) => m.clone(),
            c => c.to_string(),
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Column::Best(m) => write!(f, "best:{m}"),
            Column::Final(m) => write!(f, "final:{m}"),
            c => f.write_str(c.metric()),
        }
    }
}

/// A setting or axis value as a cell: strings bare, lists space-separated in brackets.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            format!("[{}]", items.iter().map(show).collect::<Vec<_>>().join(" "))
        }
        v => v.to_string(),
    }
}

/// A value as a join key: numbers (or strings that are numbers) in one canonical form, so
/// `0.001` from a CSV file meets `1e-3` from JSON.
pub fn canonical(v: &Value) -> String {
    let number = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match number {
        Some(n) => format!("{n}"),
        None => show(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_enums_flatten_beside_their_tag() {
        let config = serde_json::json!({
            "description": "left out",
            "seed": 1,
            "tags": [],
            "lora": null,
            "train": {"optimizer": {"lr": 0.01, "kind": {"kind": "adamw", "beta1": 0.9}}},
            "model": {"kind": "mlp", "hidden": [64, 64]}
        });
        let flat = flatten_json(config.to_string().as_bytes())
            .unwrap()
            .settings;
        let keys: Vec<&str> = flat.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "model.hidden",
                "model.kind",
                "seed",
                "train.optimizer.beta1",
                "train.optimizer.kind",
                "train.optimizer.lr"
            ]
        );
        assert_eq!(show(&flat["model.hidden"]), "[64 64]");
        assert_eq!(flat["train.optimizer.kind"], "adamw");
    }

    #[test]
    fn columns_parse_and_print_alike() {
        for key in [
            "best:val/loss",
            "final:val/loss",
            "steps",
            "wall_s",
            "tokens_per_s",
        ] {
            assert_eq!(Column::parse(key).to_string(), key);
        }
        assert_eq!(Column::parse("val/loss"), Column::Final("val/loss".into()));
        assert_eq!(
            canonical(&Value::from("0.001")),
            canonical(&serde_json::json!(1e-3))
        );
        assert_eq!(
            canonical(&serde_json::json!(8)),
            canonical(&Value::from("8.0"))
        );
    }
}
