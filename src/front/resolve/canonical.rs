//! The canonical KDL form of a run (`config.kdl`): every setting, defaults included, in schema
//! order, aliases already canonical and paths relative to the file that wrote them.

use std::fmt::Write as _;

use kdl::KdlValue;

use super::path_of;
use super::shape::Shape;
use crate::front::schema::{NodeSpec, Schema, ValueSpec, ValueType};
use crate::front::source::Sources;
use crate::front::tree::{Entry, Literal, Node};

/// The experiment as canonical KDL: every setting, defaults included, in schema order.
pub fn canonical(experiment: &Node, schema: &Schema, sources: &Sources) -> String {
    let mut out = String::new();
    if let Some(spec) = schema.document.node("experiment") {
        write_node(&mut out, experiment, spec, schema, sources, 0);
    }
    out
}

fn write_node(
    out: &mut String,
    node: &Node,
    spec: &NodeSpec,
    schema: &Schema,
    sources: &Sources,
    depth: usize,
) {
    let shape = Shape::of(node, spec, schema);
    let indent = "    ".repeat(depth);
    let _ = write!(out, "{indent}{}", node.name);
    let arg_specs = shape.args();
    for (i, arg) in node.args().enumerate() {
        let slot = arg_specs.get(i).or(arg_specs.last()).copied();
        let _ = write!(out, " {}", value_text(arg, slot, sources));
    }
    let mut props: Vec<&Entry> = node.entries.iter().filter(|e| e.key.is_some()).collect();
    let order = |name: &str| {
        shape
            .props()
            .iter()
            .position(|p| p.name.as_deref() == Some(name))
            .unwrap_or(usize::MAX)
    };
    props.sort_by_key(|e| {
        (
            order(e.name().unwrap_or_default()),
            e.name().unwrap_or_default().to_owned(),
        )
    });
    for prop in props {
        let name = prop.name().unwrap_or_default();
        let _ = write!(
            out,
            " {name}={}",
            value_text(prop, shape.prop(name), sources)
        );
    }
    let mut children: Vec<(&Node, &NodeSpec)> = node
        .nodes()
        .iter()
        .filter_map(|c| shape.node(&c.name).map(|s| (c, s)))
        .collect();
    let order = |name: &str| {
        shape
            .nodes()
            .iter()
            .position(|n| n.name == name)
            .unwrap_or(usize::MAX)
    };
    children.sort_by_key(|(c, _)| order(&c.name));
    if children.is_empty() {
        out.push('\n');
        return;
    }
    out.push_str(" {\n");
    for (child, child_spec) in children {
        write_node(out, child, child_spec, schema, sources, depth + 1);
    }
    let _ = writeln!(out, "{indent}}}");
}

fn value_text(entry: &Entry, slot: Option<&ValueSpec>, sources: &Sources) -> String {
    match (slot.map(|s| s.ty), &entry.value) {
        (Some(ValueType::Path), KdlValue::String(_)) => Literal(&KdlValue::String(
            path_of(entry, sources).display().to_string(),
        ))
        .to_string(),
        _ => Literal(&entry.value).to_string(),
    }
}
