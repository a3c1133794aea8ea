//! Checking a node's properties: each known (or guessed) and checked against its slot, none
//! given twice, required ones present.

use std::collections::BTreeMap;

use miette::SourceSpan;

use super::messages::{bad_format, example};
use super::{CheckError, Checker, View};
use crate::diagnostic::suggest::{list, suggest};
use crate::front::tree::{Entry, Node};

impl<'a> Checker<'a> {
    /// Checks properties; returns the names present (typos counted as their suggestion).
    pub(super) fn check_props(
        &mut self,
        node: &mut Node,
        view: &View<'a>,
    ) -> BTreeMap<String, SourceSpan> {
        let node_name = node.name.clone();
        let mut present: BTreeMap<String, SourceSpan> = BTreeMap::new();
        for entry in node.entries.iter_mut().filter(|e| e.key.is_some()) {
            self.check_annotation(entry);
            let name = entry.name().unwrap_or_default().to_owned();
            let key = entry.key_span();
            if let Some(first) = present.get(&name) {
                self.push(
                    entry.source,
                    CheckError::DuplicateProperty {
                        name: name.clone(),
                        first: *first,
                        second: key,
                    },
                );
            }
            if name == "when" && self.options.allow_when {
                present.insert(name.clone(), key);
                self.check_when(entry);
                continue;
            }
            if let Some(spec) = view.prop(&name) {
                if spec.name.as_deref() == Some("*")
                    && let Some(format) = spec.format.filter(|f| !f.accepts_str(&name))
                {
                    self.push(entry.source, bad_format(&name, format, key));
                }
                present.insert(name.clone(), key);
                self.check_value(entry, spec, &name);
                continue;
            }
            self.check_unknown_property(entry, view, &node_name, &mut present);
        }
        for body in view.bodies() {
            for spec in &body.props {
                let Some(name) = spec.name.as_deref() else {
                    continue;
                };
                if spec.required && !present.contains_key(name) && !view.union {
                    let error = CheckError::MissingRequired {
                        parent: node_name.clone(),
                        what: format!("property `{name}`"),
                        span: node.name_span,
                        help: Some(format!("add `{name}={}`", example(spec))),
                    };
                    self.push(node.source, error);
                }
            }
        }
        present
    }

    /// Reports a property the node does not have, and checks it as its suggestion if any.
    fn check_unknown_property(
        &mut self,
        entry: &mut Entry,
        view: &View<'a>,
        node_name: &str,
        present: &mut BTreeMap<String, SourceSpan>,
    ) {
        let name = entry.name().unwrap_or_default().to_owned();
        let key = entry.key_span();
        let names = view.prop_names();
        let guess = suggest(&name, names.iter().copied());
        let elsewhere: Vec<&str> = view
            .base
            .variants
            .iter()
            .filter(|v| v.body.prop(&name).is_some())
            .map(|v| v.name.as_str())
            .collect();
        let (message, help) = match view.variant {
            Some(variant) => (
                format!("`{name}` is not an option of `{}`", variant.name),
                match (guess, elsewhere.is_empty()) {
                    (Some(g), _) => format!("did you mean `{g}`?"),
                    (None, false) => format!(
                        "`{}` has: {}; `{name}` belongs to {}",
                        variant.name,
                        list(variant.body.props.iter().filter_map(|p| p.name.as_deref())),
                        list(elsewhere.iter().copied())
                    ),
                    (None, true) => {
                        format!("`{}` has: {}", variant.name, list(names.iter().copied()))
                    }
                },
            ),
            None => (
                format!("unknown property `{name}` of `{node_name}`"),
                match guess {
                    Some(g) => format!("did you mean `{g}`?"),
                    None if names.is_empty() => format!("`{node_name}` has no properties"),
                    None => format!("`{node_name}` has: {}", list(names.iter().copied())),
                },
            ),
        };
        self.push(
            entry.source,
            CheckError::UnknownProperty {
                message,
                span: key,
                help: Some(help),
            },
        );
        if let Some(g) = guess
            && let Some(spec) = view.prop(g)
        {
            present.insert(g.to_owned(), key);
            self.check_value(entry, spec, &name);
        }
    }
}
