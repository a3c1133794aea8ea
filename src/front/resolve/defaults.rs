//! Defaults: fills a checked node with every default the schema gives, so that decoding finds
//! every setting present.

use kdl::KdlValue;

use super::shape::Shape;
use crate::front::schema::{NodeSpec, Schema};
use crate::front::tree::{Entry, Node, Origin};

fn default_entry(key: Option<&str>, value: &KdlValue, at: &Node) -> Entry {
    Entry {
        origin: Origin::Default,
        ..Entry::new(key, value.clone(), at.source, at.name_span)
    }
}

/// Fills in every default the schema gives: missing arguments and properties of present nodes,
/// and missing settings nodes (not features such as `eval`, whose absence means off).
pub fn fill(node: &mut Node, spec: &NodeSpec, schema: &Schema) {
    let body = schema.body(spec);
    if let Some(tag) = body.tag()
        && node.arg(0).is_none()
        && let Some(d) = tag.default.first()
    {
        let entry = default_entry(None, d, node);
        node.set_arg(0, entry);
    }
    let shape = Shape::of(node, spec, schema);
    let given = node.args().count();
    let mut index = 0;
    for arg in shape.args() {
        if index >= given {
            if arg.default.is_empty() {
                break;
            }
            for d in &arg.default {
                let entry = default_entry(None, d, node);
                node.set_arg(index, entry);
                index += 1;
            }
        } else {
            index += if arg.multiple { given - index } else { 1 };
        }
    }
    let present = |node: &Node, name: &str| node.prop(name).is_some() || node.child(name).is_some();
    let excluded = |node: &Node, name: &str| {
        shape
            .exclusive()
            .iter()
            .any(|g| g.iter().any(|m| m == name) && g.iter().any(|m| m != name && present(node, m)))
    };
    for prop in shape.props() {
        let Some(name) = prop.name.as_deref() else {
            continue;
        };
        if node.prop(name).is_none()
            && !excluded(node, name)
            && let Some(d) = prop.default.first()
        {
            let entry = default_entry(Some(name), d, node);
            node.set_prop(entry);
        }
    }
    for child_spec in shape.nodes() {
        if child_spec.name == "*"
            || child_spec.multiple
            || child_spec.feature
            || node.child(&child_spec.name).is_some()
        {
            continue;
        }
        if excluded(node, &child_spec.name) || !materializable(child_spec, schema) {
            continue;
        }
        let mut child = Node::new(child_spec.name.clone(), node.source, node.name_span);
        fill(&mut child, child_spec, schema);
        if !child.entries.is_empty() || !child.nodes().is_empty() {
            node.nodes_mut().push(child);
        }
    }
    if let Some(children) = node.children.as_mut() {
        for child in children.nodes.iter_mut() {
            if let Some(child_spec) = shape.node(&child.name) {
                fill(child, child_spec, schema);
            }
        }
    }
}

/// Whether a missing node can be created from defaults alone.
fn materializable(spec: &NodeSpec, schema: &Schema) -> bool {
    let body = schema.body(spec);
    let tag_ok = body.tag().is_none_or(|t| !t.default.is_empty());
    let first_arg = body.args.iter().find(|a| !a.tag);
    let args_ok = first_arg.is_none_or(|a| !a.default.is_empty());
    let props_ok = body
        .props
        .iter()
        .all(|p| !p.required || !p.default.is_empty());
    tag_ok && args_ok && props_ok
}
