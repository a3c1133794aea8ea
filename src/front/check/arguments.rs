//! Checking a node's arguments: each against its slot, none extra, none missing, and lists
//! long enough.

use super::messages::example;
use super::{CheckError, Checker, View};
use crate::diagnostic::suggest::list;
use crate::front::tree::{Literal, Node};

impl<'a> Checker<'a> {
    pub(super) fn check_args(&mut self, node: &mut Node, skip: usize, view: &View<'a>) {
        let specs = view.args();
        let node_name = node.name.clone();
        let positions: Vec<usize> = node
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.key.is_none())
            .map(|(i, _)| i)
            .skip(skip)
            .collect();
        for (i, &at) in positions.iter().enumerate() {
            self.check_annotation(&node.entries[at]);
            let spec = specs
                .get(i)
                .copied()
                .or_else(|| specs.last().copied().filter(|s| s.multiple));
            match spec {
                Some(spec) => {
                    let slot = spec.name.clone().unwrap_or_else(|| node_name.clone());
                    self.check_value(&mut node.entries[at], spec, &slot);
                }
                None if view.union => {}
                None => {
                    let expected = match specs.len() {
                        0 => "no arguments".to_owned(),
                        1 => "one argument".to_owned(),
                        n => format!("{n} arguments"),
                    };
                    let entry = &node.entries[at];
                    let help = match view.prop_names().first() {
                        Some(p) if specs.is_empty() => format!(
                            "`{node_name}` has properties: {}; e.g. `{node_name} {p}={}`",
                            list(view.prop_names()),
                            Literal(&entry.value)
                        ),
                        _ => "remove the extra value".to_owned(),
                    };
                    let error = CheckError::UnexpectedArgument {
                        node: node_name.clone(),
                        expected,
                        span: entry.span,
                        help,
                    };
                    self.push(entry.source, error);
                }
            }
        }
        let given = positions.len();
        for (i, spec) in specs.iter().enumerate() {
            let count = given.saturating_sub(i);
            if spec.multiple && count > 0 && count < spec.min_count {
                let error = CheckError::TooFewValues {
                    node: node_name.clone(),
                    min: spec.min_count,
                    found: count,
                    span: node.name_span,
                };
                self.push(node.source, error);
            }
            if i >= given
                && (spec.required
                    || (spec.multiple && spec.min_count > 0 && spec.default.is_empty()))
            {
                let what = match &spec.name {
                    Some(name) => format!("argument `{name}`"),
                    None if spec.multiple => "at least one value".to_owned(),
                    None => "a value".to_owned(),
                };
                let error = CheckError::MissingRequired {
                    parent: node_name.clone(),
                    what,
                    span: node.name_span,
                    help: Some(format!(
                        "write it after the name: `{node_name} {}`",
                        example(spec)
                    )),
                };
                self.push(node.source, error);
            }
        }
    }
}
