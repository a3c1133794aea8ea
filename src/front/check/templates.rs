//! Checking templates before expansion: where they are allowed, the names they use (collected
//! for the unused-axis check), and `when` conditions.

use kdl::KdlValue;

use super::messages::describe;
use super::{CheckError, Checker, TemplateUse};
use crate::front::template::{self, Location, TemplateError};
use crate::front::tree::{Entry, Origin};

impl<'a> Checker<'a> {
    /// Whether a value is a template still to be expanded (expanded values never are).
    pub(super) fn is_template(&self, entry: &Entry) -> bool {
        entry.origin == Origin::Written && entry.as_str().is_some_and(template::is_template)
    }

    pub(super) fn check_when(&mut self, entry: &mut Entry) {
        match entry.value.clone() {
            KdlValue::Bool(_) => {}
            KdlValue::String(s) if self.is_template(entry) => self.check_template(entry, &s, true),
            other => {
                let error = CheckError::WrongType {
                    expected: "a template expression such as \"{{ rank > 4 }}\"".into(),
                    found: describe(&other),
                    span: entry.span,
                    help: Some("`when` drops its node when the expression is false".into()),
                };
                self.push(entry.source, error);
            }
        }
    }

    pub(super) fn check_template(&mut self, entry: &Entry, text: &str, allowed: bool) {
        let at = Location {
            value: entry.span,
            content: entry.content,
        };
        if !allowed {
            self.push(entry.source, TemplateError::NotAllowed { span: at.value });
            return;
        }
        let mut errors = Vec::new();
        let vars = template::check(self.env, text, at, &self.scope, &mut errors);
        for e in errors {
            self.push(entry.source, e);
        }
        self.report.templates.push(TemplateUse {
            top: self.top,
            path: self.path.clone(),
            vars,
        });
    }
}
