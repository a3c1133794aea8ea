//! A node's allowed contents as the schema gives them: its body plus the body of the variant
//! its kind selects (the written kind, else the default one).

use kdl::KdlValue;

use crate::front::schema::{Body, NodeSpec, Schema, ValueSpec};
use crate::front::tree::Node;

/// A node's allowed contents with its selected variant.
pub(super) struct Shape<'a> {
    bodies: Vec<&'a Body>,
}

impl<'a> Shape<'a> {
    pub(super) fn of(node: &Node, spec: &'a NodeSpec, schema: &'a Schema) -> Self {
        let body = schema.body(spec);
        let mut bodies = vec![body];
        let kind = body
            .tag()
            .and(node.arg(0))
            .and_then(|a| a.as_str())
            .or_else(|| {
                body.tag()
                    .and_then(|t| t.default.first())
                    .and_then(KdlValue::as_string)
            });
        if let Some(v) = kind.and_then(|k| body.variant(k)) {
            bodies.push(&v.body);
        }
        Shape { bodies }
    }

    pub(super) fn args(&self) -> Vec<&'a ValueSpec> {
        self.bodies.iter().flat_map(|b| b.args.iter()).collect()
    }

    pub(super) fn props(&self) -> Vec<&'a ValueSpec> {
        self.bodies
            .iter()
            .flat_map(|b| b.props.iter())
            .filter(|p| p.name.as_deref() != Some("*"))
            .collect()
    }

    pub(super) fn prop(&self, name: &str) -> Option<&'a ValueSpec> {
        self.bodies.iter().find_map(|b| b.prop(name))
    }

    pub(super) fn nodes(&self) -> Vec<&'a NodeSpec> {
        self.bodies.iter().flat_map(|b| b.nodes.iter()).collect()
    }

    pub(super) fn node(&self, name: &str) -> Option<&'a NodeSpec> {
        let all = self.nodes();
        all.iter()
            .find(|n| n.name == name)
            .or_else(|| all.iter().find(|n| n.name == "*"))
            .copied()
    }

    pub(super) fn exclusive(&self) -> Vec<&'a Vec<String>> {
        self.bodies
            .iter()
            .flat_map(|b| b.exclusive.iter())
            .collect()
    }
}
