//! What a node may contain while it is checked: its body plus its selected variant's.

use crate::front::schema::{Body, NodeSpec, ValueSpec, Variant};

/// A node's allowed contents: its body plus the options of its selected variant. When the
/// variant is a template (unknown until expansion) the union of all variants is allowed.
pub(super) struct View<'a> {
    pub(super) base: &'a Body,
    pub(super) variant: Option<&'a Variant>,
    pub(super) union: bool,
}

impl<'a> View<'a> {
    pub(super) fn bodies(&self) -> Vec<&'a Body> {
        let mut bodies = vec![self.base];
        if let Some(v) = self.variant {
            bodies.push(&v.body);
        } else if self.union {
            bodies.extend(self.base.variants.iter().map(|v| &v.body));
        }
        bodies
    }

    pub(super) fn prop(&self, name: &str) -> Option<&'a ValueSpec> {
        let bodies = self.bodies();
        bodies
            .iter()
            .find_map(|b| b.prop(name))
            .or_else(|| bodies.iter().find_map(|b| b.wildcard_prop()))
    }

    pub(super) fn node(&self, name: &str) -> Option<&'a NodeSpec> {
        self.bodies().iter().find_map(|b| b.node(name))
    }

    pub(super) fn wildcard_node(&self) -> Option<&'a NodeSpec> {
        self.bodies().iter().find_map(|b| b.wildcard_node())
    }

    pub(super) fn args(&self) -> Vec<&'a ValueSpec> {
        let own = self.base.args.iter().filter(|a| !a.tag);
        own.chain(self.variant.iter().flat_map(|v| v.body.args.iter()))
            .collect()
    }

    pub(super) fn prop_names(&self) -> Vec<&'a str> {
        self.bodies()
            .iter()
            .flat_map(|b| b.props.iter().filter_map(|p| p.name.as_deref()))
            .filter(|n| *n != "*")
            .collect()
    }

    pub(super) fn node_names(&self) -> Vec<&'a str> {
        self.bodies()
            .iter()
            .flat_map(|b| b.nodes.iter().map(|n| n.name.as_str()))
            .filter(|n| *n != "*")
            .collect()
    }

    pub(super) fn has_children(&self) -> bool {
        self.bodies().iter().any(|b| !b.nodes.is_empty())
    }

    pub(super) fn exclusive(&self) -> Vec<&'a Vec<String>> {
        let mut groups: Vec<_> = self.base.exclusive.iter().collect();
        if let Some(v) = self.variant {
            groups.extend(v.body.exclusive.iter());
        }
        groups
    }
}
