//! Checking nodes: names known, not duplicated, required ones present, each node's kind,
//! arguments, properties and children, and exclusive options not given together.

use std::collections::{BTreeMap, BTreeSet};

use kdl::KdlValue;
use miette::SourceSpan;

use super::messages::{bad_format, kinds_help};
use super::{CheckError, Checker, View};
use crate::diagnostic::suggest::{list, suggest};
use crate::front::schema::{NodeSpec, Variant};
use crate::front::source::SourceId;
use crate::front::tree::{Entry, Node};

impl<'a> Checker<'a> {
    pub(super) fn check_children(
        &mut self,
        nodes: &mut [Node],
        view: &View<'a>,
        parent: Option<(&str, SourceSpan, SourceId, bool)>,
    ) {
        let mut present: BTreeSet<&str> = BTreeSet::new();
        let mut seen: BTreeMap<String, SourceSpan> = BTreeMap::new();
        for (index, node) in nodes.iter_mut().enumerate() {
            if parent.is_none() {
                self.top = index;
                self.scope = (self.options.scope_of)(node);
            }
            let name_span = node.name_span;
            let (spec, key) = self.node_spec(node, view);
            let Some(spec) = spec else { continue };
            if spec.name != "*" {
                present.insert(spec.name.as_str());
            }
            match seen.get(&key) {
                Some(first) if !spec.multiple => {
                    let error = CheckError::DuplicateNode {
                        name: key.clone(),
                        context: self.context(),
                        first: *first,
                        second: name_span,
                    };
                    self.push(node.source, error);
                }
                Some(_) => {}
                None => {
                    seen.insert(key.clone(), name_span);
                }
            }
            self.path.push(key);
            self.check_node(node, spec);
            self.path.pop();
        }
        self.check_required_children(view, &present, parent);
    }

    /// The spec of a node by its name (a wildcard's, or a typo's suggestion after reporting
    /// it), and the name it counts as.
    fn node_spec(&mut self, node: &Node, view: &View<'a>) -> (Option<&'a NodeSpec>, String) {
        if let Some(spec) = view.node(&node.name) {
            (Some(spec), node.name.clone())
        } else if let Some(spec) = view.wildcard_node() {
            if let Some(format) = spec.format.filter(|f| !f.accepts_str(&node.name)) {
                self.push(node.source, bad_format(&node.name, format, node.name_span));
            }
            (Some(spec), node.name.clone())
        } else {
            let candidates = view.node_names();
            let guess = suggest(&node.name, candidates.iter().copied());
            let help = match guess {
                Some(g) => Some(format!("did you mean `{g}`?")),
                None if candidates.is_empty() => None,
                None => Some(format!(
                    "the settings here are: {}",
                    list(candidates.iter().copied())
                )),
            };
            let context = self.context();
            self.push(
                node.source,
                CheckError::UnknownNode {
                    name: node.name.clone(),
                    context,
                    span: node.name_span,
                    help,
                },
            );
            match guess {
                Some(g) => (view.node(g), g.to_owned()),
                None => (None, node.name.clone()),
            }
        }
    }

    /// Reports required children that are missing (an experiment that extends another gets
    /// them from its base).
    fn check_required_children(
        &mut self,
        view: &View<'a>,
        present: &BTreeSet<&str>,
        parent: Option<(&str, SourceSpan, SourceId, bool)>,
    ) {
        let relaxed = parent.is_some_and(|p| p.3);
        for spec in view.bodies().iter().flat_map(|b| b.nodes.iter()) {
            if spec.required && !present.contains(spec.name.as_str()) && !relaxed {
                let (parent_name, span, source) = match parent {
                    Some((name, span, source, _)) => (name.to_owned(), span, source),
                    None => (
                        "the file".to_owned(),
                        SourceSpan::from((0, 0)),
                        self.options.root,
                    ),
                };
                let help = self
                    .schema
                    .body(spec)
                    .tag()
                    .map(|_| kinds_help(self.schema.body(spec)));
                let error = CheckError::MissingRequired {
                    parent: parent_name,
                    what: format!("a `{}` node", spec.name),
                    span,
                    help,
                };
                self.push(source, error);
            }
        }
    }

    pub(super) fn check_node(&mut self, node: &mut Node, spec: &'a NodeSpec) {
        let body = self.schema.body(spec);
        let node_name = node.name.clone();
        if let Some((ty, span)) = &node.annotation {
            self.push(
                node.source,
                CheckError::IgnoredAnnotation {
                    annotation: ty.clone(),
                    span: *span,
                },
            );
        }
        let mut view = View {
            base: body,
            variant: None,
            union: false,
        };
        let mut first_arg = 0;
        if let Some(tag) = body.tag() {
            match node.entries.iter().position(|e| e.key.is_none()) {
                None => match tag.default.first().and_then(KdlValue::as_string) {
                    Some(default) => view.variant = body.variant(default),
                    None => {
                        view.union = true;
                        let error = CheckError::MissingRequired {
                            parent: node_name.clone(),
                            what: "its kind".into(),
                            span: node.name_span,
                            help: Some(kinds_help(body)),
                        };
                        self.push(node.source, error);
                    }
                },
                Some(at) => {
                    first_arg = 1;
                    self.check_annotation(&node.entries[at]);
                    let written = node.entries[at].value.as_string().map(str::to_owned);
                    let (variant, union) =
                        self.check_tag(&mut node.entries[at], body, tag, &node_name);
                    view.variant = variant;
                    view.union = union;
                    if let (Some(variant), Some(written)) = (variant, written) {
                        imply(node, at, variant, &written, &view.exclusive());
                    }
                }
            }
        }
        self.check_args(node, first_arg, &view);
        let present = self.check_props(node, &view);
        self.check_children_block(node, &view);
        self.check_exclusive(node, &view, &present);
    }

    pub(super) fn check_children_block(&mut self, node: &mut Node, view: &View<'a>) {
        let relaxed = self.relaxed(node);
        let (name, name_span, source) = (node.name.clone(), node.name_span, node.source);
        let Some(children) = node.children.as_mut() else {
            return;
        };
        if !view.has_children() {
            if !view.union {
                self.push(
                    source,
                    CheckError::UnexpectedChildren {
                        node: name,
                        span: children.span,
                    },
                );
            }
            return;
        }
        if view.union {
            // Children of a kind chosen by a template: check those any kind allows.
            for child in children.nodes.iter_mut() {
                if let Some(spec) = view.node(&child.name) {
                    self.path.push(child.name.clone());
                    self.check_node(child, spec);
                    self.path.pop();
                }
            }
            return;
        }
        self.check_children(
            &mut children.nodes,
            view,
            Some((&name, name_span, source, relaxed)),
        );
    }

    /// An experiment that `extends` another gets its required settings from the base.
    pub(super) fn relaxed(&self, node: &Node) -> bool {
        self.options.allow_when && node.child("extends").is_some()
    }

    pub(super) fn check_exclusive(
        &mut self,
        node: &Node,
        view: &View<'a>,
        props: &BTreeMap<String, SourceSpan>,
    ) {
        let child_span = |name: &str| node.child(name).map(|n| n.name_span);
        for group in view.exclusive() {
            let given: Vec<(&str, SourceSpan)> = group
                .iter()
                .filter_map(|m| {
                    props
                        .get(m.as_str())
                        .copied()
                        .or_else(|| child_span(m))
                        .map(|s| (m.as_str(), s))
                })
                .collect();
            if let [(first, first_span), (second, second_span), ..] = given.as_slice() {
                let error = CheckError::Exclusive {
                    first: (*first).to_owned(),
                    second: (*second).to_owned(),
                    first_span: *first_span,
                    second_span: *second_span,
                };
                self.push(node.source, error);
            }
        }
    }
}

/// Adds the properties the alias written as the node's kind implies, each unless the node sets
/// it or another property of its exclusive group; they point at the alias.
fn imply(
    node: &mut Node,
    tag_at: usize,
    variant: &Variant,
    written: &str,
    groups: &[&Vec<String>],
) {
    let tag = &node.entries[tag_at];
    let (source, span) = (tag.source, tag.span);
    let implied: Vec<Entry> = variant
        .implied_by(written)
        .filter(|i| {
            let group = groups
                .iter()
                .find(|g| g.contains(&i.prop))
                .map_or_else(|| vec![i.prop.clone()], |g| g.to_vec());
            !node
                .entries
                .iter()
                .any(|e| e.name().is_some_and(|n| group.iter().any(|g| g == n)))
        })
        .map(|i| Entry::new(Some(&i.prop), i.value.clone(), source, span))
        .collect();
    node.entries.extend(implied);
}
