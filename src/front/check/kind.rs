//! Checking a node's kind (its first argument, when its body has variants): the variant it
//! selects, aliases made canonical, and a guess for an unknown one.

use kdl::KdlValue;

use super::messages::{alias, describe, kinds_help};
use super::{CheckError, Checker};
use crate::diagnostic::suggest::{list, suggest};
use crate::front::schema::{Body, ValueSpec, Variant};
use crate::front::tree::Entry;

impl<'a> Checker<'a> {
    /// Reads the kind argument; returns the selected variant, or whether all must be allowed.
    pub(super) fn check_tag(
        &mut self,
        entry: &mut Entry,
        body: &'a Body,
        tag: &ValueSpec,
        node_name: &str,
    ) -> (Option<&'a Variant>, bool) {
        let source = entry.source;
        match entry.value.clone() {
            KdlValue::String(s) if self.is_template(entry) => {
                self.check_template(entry, &s, tag.template);
                (None, true)
            }
            KdlValue::String(s) => match body.variant_for(&s) {
                Some((variant, aliased)) => {
                    if aliased {
                        self.push(source, alias(&s, &variant.name, entry.span));
                        entry.value = KdlValue::String(variant.name.clone());
                    }
                    (Some(variant), false)
                }
                None => {
                    let names = body.variants.iter().map(|v| v.name.as_str());
                    let all = names.clone().chain(
                        body.variants
                            .iter()
                            .flat_map(|v| v.aliases.iter().map(String::as_str)),
                    );
                    let guess = suggest(&s, all)
                        .and_then(|g| body.variant_for(g))
                        .map(|(v, _)| v);
                    let help = match guess {
                        Some(v) => {
                            format!("did you mean `{}`? the kinds are: {}", v.name, list(names))
                        }
                        None => format!("the kinds are: {}", list(names)),
                    };
                    self.push(
                        source,
                        CheckError::UnknownValue {
                            value: s.clone(),
                            slot: node_name.to_owned(),
                            span: entry.span,
                            help,
                        },
                    );
                    (guess, guess.is_none())
                }
            },
            other => {
                let error = CheckError::WrongType {
                    expected: format!("the kind of `{node_name}` (a string)"),
                    found: describe(&other),
                    span: entry.span,
                    help: Some(kinds_help(body)),
                };
                self.push(source, error);
                (None, true)
            }
        }
    }
}
