//! A run's settings by the names users write: every value of its canonical form (`config.kdl`)
//! under its dotted KDL path. A node's first argument is the node's own key
//! (`train.optimizer` = `"adamw"`, `train.steps` = 300, `model.hidden` = `[64, 64]`), a
//! property or a further named argument is `node.name` (`train.optimizer.lr`,
//! `objective.direction`), and a node that may repeat (`regression.metric`) is a list of its
//! own settings. `config.json`, `plan.json`, `xp compare` and the report use these keys, `--set`
//! accepts every one of them, and [`spec`] reads a run back from them through the same
//! `--set` path and the decoder that made it.

use std::fmt;

use kdl::KdlValue;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::path_of;
use super::shape::Shape;
use crate::front::compose;
use crate::front::schema::{self, NodeSpec, Schema, ValueSpec, ValueType};
use crate::front::source::{Source, SourceId, Sources};
use crate::front::tree::{Entry, Node};
use crate::spec::RunSpec;

/// A run's settings, in the order of its canonical form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings(pub Vec<(String, Value)>);

impl Settings {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// The settings of a filled experiment node (a resolved run).
pub fn settings(experiment: &Node, schema: &Schema, sources: &Sources) -> Settings {
    let mut out = Vec::new();
    if let Some(spec) = schema.document.node("experiment") {
        flatten(
            &mut out,
            "",
            "experiment",
            experiment,
            spec,
            schema,
            sources,
        );
    }
    Settings(out)
}

/// `own` is the key of the node's first argument, `prefix` the path its other values hang
/// under.
fn flatten(
    out: &mut Vec<(String, Value)>,
    prefix: &str,
    own: &str,
    node: &Node,
    spec: &NodeSpec,
    schema: &Schema,
    sources: &Sources,
) {
    let shape = Shape::of(node, spec, schema);
    let values: Vec<&Entry> = node.args().collect();
    let mut at = 0;
    for (i, slot) in shape.args().into_iter().enumerate() {
        if at >= values.len() {
            break;
        }
        let key = if i == 0 {
            own.to_owned()
        } else {
            join(prefix, slot.name.as_deref().unwrap_or(&i.to_string()))
        };
        if slot.multiple {
            let items = values[at..]
                .iter()
                .map(|e| json(e, Some(slot), sources))
                .collect();
            out.push((key, Value::Array(items)));
            at = values.len();
        } else {
            out.push((key, json(values[at], Some(slot), sources)));
            at += 1;
        }
    }
    let props = shape.props();
    let mut given: Vec<(&str, &Entry)> = node.props().collect();
    given.sort_by_key(|(name, _)| {
        props
            .iter()
            .position(|p| p.name.as_deref() == Some(*name))
            .unwrap_or(usize::MAX)
    });
    for (name, entry) in given {
        out.push((join(prefix, name), json(entry, shape.prop(name), sources)));
    }
    let order = shape.nodes();
    let mut children: Vec<(&Node, &NodeSpec)> = node
        .nodes()
        .iter()
        .filter_map(|c| shape.node(&c.name).map(|s| (c, s)))
        .collect();
    children.sort_by_key(|(c, _)| {
        order
            .iter()
            .position(|n| n.name == c.name)
            .unwrap_or(usize::MAX)
    });
    let mut done: Vec<&str> = Vec::new();
    for (child, child_spec) in children {
        let key = join(prefix, &child.name);
        if !child_spec.multiple {
            flatten(out, &key, &key, child, child_spec, schema, sources);
            continue;
        }
        if done.contains(&child.name.as_str()) {
            continue;
        }
        done.push(&child.name);
        // A node that may repeat: each one's settings, relative to it.
        let first_arg = Shape::of(child, child_spec, schema)
            .args()
            .first()
            .and_then(|a| a.name.clone())
            .unwrap_or_else(|| "0".to_owned());
        let items = node
            .nodes()
            .iter()
            .filter(|n| n.name == child.name)
            .map(|n| {
                let mut own = Vec::new();
                flatten(&mut own, "", &first_arg, n, child_spec, schema, sources);
                Value::Object(own.into_iter().collect())
            })
            .collect();
        out.push((key, Value::Array(items)));
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A value as JSON: paths relative to where xp runs (as `config.kdl` writes them), a float
/// setting given as an integer as a float.
fn json(entry: &Entry, slot: Option<&ValueSpec>, sources: &Sources) -> Value {
    match (slot.map(|s| s.ty), &entry.value) {
        (Some(ValueType::Path), KdlValue::String(_)) => {
            Value::from(path_of(entry, sources).display().to_string())
        }
        (Some(ValueType::Float), KdlValue::Integer(i)) => Value::from(*i as f64),
        (_, v) => value_json(v),
    }
}

/// A KDL value as JSON; an integer beyond i64 as its text.
pub fn value_json(v: &KdlValue) -> Value {
    match v {
        KdlValue::String(s) => Value::from(s.as_str()),
        KdlValue::Integer(i) => {
            i64::try_from(*i).map_or_else(|_| Value::from(i.to_string()), Value::from)
        }
        KdlValue::Float(f) => Value::from(*f),
        KdlValue::Bool(b) => Value::from(*b),
        KdlValue::Null => Value::Null,
    }
}

/// A JSON value as KDL; `None` for what no setting holds (objects, nested lists).
fn kdl_value(v: &Value) -> Option<KdlValue> {
    Some(match v {
        Value::String(s) => KdlValue::String(s.clone()),
        Value::Bool(b) => KdlValue::Bool(*b),
        Value::Null => KdlValue::Null,
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => KdlValue::Integer(i.into()),
            (_, Some(u)) => KdlValue::Integer(u.into()),
            _ => KdlValue::Float(n.as_f64()?),
        },
        Value::Array(_) | Value::Object(_) => return None,
    })
}

/// Reads a run back from its settings: each one is applied as `--set` applies it, defaults
/// fill what is missing, and the decoder that resolved the run decodes it again.
pub fn spec(settings: &Settings) -> Result<RunSpec, String> {
    let schema = schema::experiment();
    let experiment = schema
        .document
        .node("experiment")
        .ok_or("the schema has no experiment")?;
    let mut sources = Sources::default();
    let source = sources.add(Source::new("config.json", None, String::new()));
    let mut root = Node::new("experiment", source, (0, 0).into());
    for (key, value) in &settings.0 {
        place(&mut root, experiment, key, value, schema, source)?;
    }
    super::fill(&mut root, experiment, schema);
    super::decode(&root, &sources)
}

/// Applies one setting to a node.
fn place(
    node: &mut Node,
    spec: &NodeSpec,
    key: &str,
    value: &Value,
    schema: &Schema,
    source: SourceId,
) -> Result<(), String> {
    let entry = |v: &Value| {
        kdl_value(v)
            .map(|v| Entry::new(None, v, source, (0, 0).into()))
            .ok_or_else(|| format!("`{key}` holds {v}, which is not a setting's value"))
    };
    let segments: Vec<&str> = key.split('.').collect();
    if segments == ["experiment"] && spec.name == "experiment" {
        node.set_arg(0, entry(value)?);
        return Ok(());
    }
    let unknown = |e: compose::PathError| format!("`{key}` is not a setting ({})", e.help);
    if let (Value::Array(items), Some((last, parents))) = (value, segments.split_last())
        && items.iter().all(Value::is_object)
        && !items.is_empty()
    {
        // A node that may repeat: one node per item.
        let (parent, parent_spec) =
            compose::descend(node, spec, parents, schema, source).map_err(unknown)?;
        let Some(child_spec) = compose::child_spec(parent, parent_spec, last, schema) else {
            return Err(format!("`{key}` is not a setting"));
        };
        for item in items {
            let mut child = Node::new(*last, source, (0, 0).into());
            for (k, v) in item.as_object().into_iter().flatten() {
                place(&mut child, child_spec, k, v, schema, source)?;
            }
            parent.nodes_mut().push(child);
        }
        return Ok(());
    }
    let (target, slot) = compose::locate(node, spec, &segments, schema, source).map_err(unknown)?;
    let values: Vec<Entry> = match value {
        Value::Array(items) => items.iter().map(entry).collect::<Result<_, _>>()?,
        v => vec![entry(v)?],
    };
    compose::assign(target, slot, key.rsplit('.').next().unwrap_or(key), values);
    Ok(())
}

impl Serialize for Settings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Settings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Settings;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of settings by their dotted names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Settings, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Settings(out))
            }
        }
        d.deserialize_map(InOrder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front::validate_text;

    /// Every run reads back from its settings as the run it was resolved to: the names are the
    /// ones `--set` takes, and nothing is lost on the way.
    #[test]
    fn a_run_reads_back_from_its_settings() {
        let text = r#"
experiment "all" {
    tags "a" "b"
    objective "val/accuracy" "max"
    model "mlp" { hidden 16 8; activation "gelu" }
    data "csv" path="t.csv" target="y" task="classification" validation-fraction=0.25 {
        features "a" "b"
    }
    train {
        epochs 2
        batch-size "{{ batch }}"
        optimizer "SGD" lr=0.1 momentum=0.9 nesterov=#true
        schedule "multi-step" gamma=0.5 warmup-ratio=0.1 { milestones 3 5 }
        checkpoint every=10 keep=1
        eval every=5 batches=2
        early-stop patience=2
    }
    resources { cpus 2 }
    regression baseline="base.csv" {
        join-on "batch"
        metric "val/loss" tolerance="2%"
        metric "val/accuracy" tolerance=0.01 direction="maximize"
    }
    sweep { grid { batch 8 "auto" } }
}
"#;
        let checked = validate_text("all.kdl", text);
        assert!(!checked.diags.has_errors(), "{:?}", checked.diags);
        for run in &checked.plans[0].runs {
            let back = spec(&run.settings).unwrap();
            assert_eq!(back, run.config);
        }
        let s = &checked.plans[0].runs[0].settings;
        assert_eq!(s.get("train.epochs"), Some(&Value::from(2)));
        assert_eq!(s.get("train.optimizer"), Some(&Value::from("sgd")));
        assert_eq!(s.get("objective.direction"), Some(&Value::from("maximize")));
        assert_eq!(
            s.get("train.schedule.milestones"),
            Some(&serde_json::json!([3, 5]))
        );
        assert_eq!(
            s.get("regression.metric"),
            Some(&serde_json::json!([
                {"name": "val/loss", "tolerance": "2%"},
                {"name": "val/accuracy", "tolerance": 0.01, "direction": "maximize"}
            ]))
        );
    }
}
