//! The schema stage: checks a parsed document against a [`Schema`] and collects every
//! mistake — unknown names (with the typo checked as its suggestion), missing and mistyped
//! values, ranges, enums, exclusive options, duplicates — plus static template checks.
//! Pure: no I/O.

mod error;
pub mod experiment;

use std::collections::{BTreeMap, BTreeSet};

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

pub use error::CheckError;

use crate::diagnostic::Diagnostics;
use crate::parse::{args, props, string_content_offset, value_span};
use crate::schema::{Body, Format, NodeSpec, Schema, ValueSpec, ValueType, Variant};
use crate::source::SourceId;
use crate::suggest::{list, suggest};
use crate::template::{self, Location, Scope, TemplateError};

/// A template found while checking, for analyses that need every use (unused axes).
#[derive(Debug, Clone)]
pub struct TemplateUse {
    /// Index of the top-level node it is under.
    pub top: usize,
    /// Node names from the top-level node down to the value's node.
    pub path: Vec<String>,
    pub vars: BTreeSet<String>,
}

/// Options of one check.
pub struct Options {
    /// Every node may carry `when="{{ expr }}"` (experiments; not schemas).
    pub allow_when: bool,
    /// The template variables of a top-level node.
    pub scope_of: fn(&KdlNode) -> Scope,
}

/// What a check found besides diagnostics.
#[derive(Debug, Default)]
pub struct Findings {
    pub templates: Vec<TemplateUse>,
}

/// Checks a document, pushing diagnostics for `source`.
pub fn check(
    doc: &KdlDocument,
    schema: &Schema,
    options: &Options,
    source: SourceId,
    diags: &mut Diagnostics,
) -> Findings {
    let mut checker = Checker {
        schema,
        options,
        env: template::environment(),
        errors: Vec::new(),
        template_errors: Vec::new(),
        findings: Findings::default(),
        scope: Scope::default(),
        path: Vec::new(),
        top: 0,
    };
    let view = View {
        base: &schema.document,
        variant: None,
        union: false,
    };
    checker.check_children(doc.nodes(), &view, None);
    for e in checker.errors {
        diags.push(Some(source), e);
    }
    for e in checker.template_errors {
        diags.push(Some(source), e);
    }
    checker.findings
}

struct Checker<'a> {
    schema: &'a Schema,
    options: &'a Options,
    env: minijinja::Environment<'static>,
    errors: Vec<CheckError>,
    template_errors: Vec<TemplateError>,
    findings: Findings,
    scope: Scope,
    path: Vec<String>,
    top: usize,
}

/// A node's allowed contents: its body plus the options of its selected variant. When the
/// variant is a template (unknown until expansion) the union of all variants is allowed.
struct View<'a> {
    base: &'a Body,
    variant: Option<&'a Variant>,
    union: bool,
}

impl<'a> View<'a> {
    fn bodies(&self) -> Vec<&'a Body> {
        let mut bodies = vec![self.base];
        if let Some(v) = self.variant {
            bodies.push(&v.body);
        } else if self.union {
            bodies.extend(self.base.variants.iter().map(|v| &v.body));
        }
        bodies
    }

    fn prop(&self, name: &str) -> Option<&'a ValueSpec> {
        let bodies = self.bodies();
        bodies
            .iter()
            .find_map(|b| b.prop(name))
            .or_else(|| bodies.iter().find_map(|b| b.wildcard_prop()))
    }

    fn node(&self, name: &str) -> Option<&'a NodeSpec> {
        self.bodies().iter().find_map(|b| b.node(name))
    }

    fn wildcard_node(&self) -> Option<&'a NodeSpec> {
        self.bodies().iter().find_map(|b| b.wildcard_node())
    }

    fn args(&self) -> Vec<&'a ValueSpec> {
        let own = self.base.args.iter().filter(|a| !a.tag);
        own.chain(self.variant.iter().flat_map(|v| v.body.args.iter()))
            .collect()
    }

    fn prop_names(&self) -> Vec<&'a str> {
        self.bodies()
            .iter()
            .flat_map(|b| b.props.iter().filter_map(|p| p.name.as_deref()))
            .filter(|n| *n != "*")
            .collect()
    }

    fn node_names(&self) -> Vec<&'a str> {
        self.bodies()
            .iter()
            .flat_map(|b| b.nodes.iter().map(|n| n.name.as_str()))
            .filter(|n| *n != "*")
            .collect()
    }

    fn has_children(&self) -> bool {
        self.bodies().iter().any(|b| !b.nodes.is_empty())
    }

    fn exclusive(&self) -> Vec<&'a Vec<String>> {
        let mut groups: Vec<_> = self.base.exclusive.iter().collect();
        if let Some(v) = self.variant {
            groups.extend(v.body.exclusive.iter());
        }
        groups
    }
}

impl<'a> Checker<'a> {
    fn context(&self) -> String {
        match self.path.last() {
            Some(parent) => format!("in `{parent}`"),
            None => "at the top of the file".into(),
        }
    }

    fn check_children(&mut self, nodes: &[KdlNode], view: &View<'a>, parent: Option<&KdlNode>) {
        let mut present: BTreeSet<&str> = BTreeSet::new();
        let mut seen: BTreeMap<String, SourceSpan> = BTreeMap::new();
        for (index, node) in nodes.iter().enumerate() {
            if parent.is_none() {
                self.top = index;
                self.scope = (self.options.scope_of)(node);
            }
            let name = node.name().value();
            let name_span = node.name().span();
            let (spec, key) = if let Some(spec) = view.node(name) {
                (Some(spec), name.to_owned())
            } else if let Some(spec) = view.wildcard_node() {
                if let Some(format) = spec.format.filter(|f| !f.accepts_str(name)) {
                    self.errors.push(bad_format(name, format, name_span));
                }
                (Some(spec), name.to_owned())
            } else {
                let candidates = view.node_names();
                let guess = suggest(name, candidates.iter().copied());
                let help = match guess {
                    Some(g) => Some(format!("did you mean `{g}`?")),
                    None if candidates.is_empty() => None,
                    None => Some(format!(
                        "the settings here are: {}",
                        list(candidates.iter().copied())
                    )),
                };
                self.errors.push(CheckError::UnknownNode {
                    name: name.to_owned(),
                    context: self.context(),
                    span: name_span,
                    help,
                });
                match guess {
                    Some(g) => (view.node(g), g.to_owned()),
                    None => (None, name.to_owned()),
                }
            };
            let Some(spec) = spec else { continue };
            if spec.name != "*" {
                present.insert(spec.name.as_str());
            }
            match seen.get(&key) {
                Some(first) if !spec.multiple => self.errors.push(CheckError::DuplicateNode {
                    name: key.clone(),
                    context: self.context(),
                    first: *first,
                    second: name_span,
                }),
                Some(_) => {}
                None => {
                    seen.insert(key.clone(), name_span);
                }
            }
            self.path.push(key);
            self.check_node(node, spec);
            self.path.pop();
        }
        let skip_required = parent.is_some_and(|p| self.relaxed(p));
        for spec in view.bodies().iter().flat_map(|b| b.nodes.iter()) {
            if spec.required && !present.contains(spec.name.as_str()) && !skip_required {
                let (parent_name, span) = match parent {
                    Some(p) => (p.name().value().to_owned(), p.name().span()),
                    None => ("the file".to_owned(), SourceSpan::from((0, 0))),
                };
                self.errors.push(CheckError::MissingRequired {
                    parent: parent_name,
                    what: format!("a `{}` node", spec.name),
                    span,
                    help: self
                        .schema
                        .body(spec)
                        .tag()
                        .map(|_| kinds_help(self.schema.body(spec))),
                });
            }
        }
    }

    /// An experiment that `extends` another gets its required settings from the base.
    fn relaxed(&self, node: &KdlNode) -> bool {
        self.options.allow_when && node.children().is_some_and(|c| c.get("extends").is_some())
    }

    fn check_node(&mut self, node: &KdlNode, spec: &'a NodeSpec) {
        let body = self.schema.body(spec);
        let node_name = node.name().value();
        if let Some(ty) = node.ty() {
            self.errors.push(CheckError::IgnoredAnnotation {
                annotation: ty.value().to_owned(),
                span: ty.span(),
            });
        }
        let mut positional: Vec<&KdlEntry> = args(node).collect();
        let mut view = View {
            base: body,
            variant: None,
            union: false,
        };
        if let Some(tag) = body.tag() {
            if positional.is_empty() {
                match tag.default.first().and_then(KdlValue::as_string) {
                    Some(default) => view.variant = body.variant(default),
                    None => {
                        view.union = true;
                        self.errors.push(CheckError::MissingRequired {
                            parent: node_name.to_owned(),
                            what: "its kind".into(),
                            span: node.name().span(),
                            help: Some(kinds_help(body)),
                        });
                    }
                }
            } else {
                let entry = positional.remove(0);
                self.check_annotation(entry);
                match entry.value() {
                    KdlValue::String(s) if template::is_template(s) => {
                        view.union = true;
                        self.check_template(entry, s, tag.template);
                    }
                    KdlValue::String(s) => match body.variant_for(s) {
                        Some((variant, aliased)) => {
                            view.variant = Some(variant);
                            if aliased {
                                self.errors.push(alias(s, &variant.name, value_span(entry)));
                            }
                        }
                        None => {
                            let names = body.variants.iter().map(|v| v.name.as_str());
                            let guess = suggest(
                                s,
                                names.clone().chain(
                                    body.variants
                                        .iter()
                                        .flat_map(|v| v.aliases.iter().map(String::as_str)),
                                ),
                            );
                            let guess = guess.and_then(|g| body.variant_for(g)).map(|(v, _)| v);
                            let help = match guess {
                                Some(v) => format!(
                                    "did you mean `{}`? the kinds are: {}",
                                    v.name,
                                    list(names)
                                ),
                                None => format!("the kinds are: {}", list(names)),
                            };
                            self.errors.push(CheckError::UnknownValue {
                                value: s.clone(),
                                slot: node_name.to_owned(),
                                span: value_span(entry),
                                help,
                            });
                            view.variant = guess;
                            view.union = guess.is_none();
                        }
                    },
                    other => {
                        view.union = true;
                        self.errors.push(CheckError::WrongType {
                            expected: format!("the kind of `{node_name}` (a string)"),
                            found: describe(other),
                            span: value_span(entry),
                            help: Some(kinds_help(body)),
                        });
                    }
                }
            }
        }
        self.check_args(node, &positional, &view);
        let present = self.check_props(node, &view);
        self.check_children_block(node, &view);
        self.check_exclusive(node, &view, &present);
    }

    fn check_args(&mut self, node: &KdlNode, given: &[&KdlEntry], view: &View<'a>) {
        let specs = view.args();
        let node_name = node.name().value();
        for (i, entry) in given.iter().enumerate() {
            self.check_annotation(entry);
            let spec = specs
                .get(i)
                .copied()
                .or_else(|| specs.last().copied().filter(|s| s.multiple));
            match spec {
                Some(spec) => {
                    let slot = spec.name.clone().unwrap_or_else(|| node_name.to_owned());
                    self.check_value(entry, spec, &slot);
                }
                None if view.union => {}
                None => {
                    let expected = match specs.len() {
                        0 => "no arguments".to_owned(),
                        1 => "one argument".to_owned(),
                        n => format!("{n} arguments"),
                    };
                    let help = match view.prop_names().first() {
                        Some(p) if specs.is_empty() => format!(
                            "`{node_name}` has properties: {}; e.g. `{node_name} {p}={}`",
                            list(view.prop_names()),
                            repr(entry)
                        ),
                        _ => "remove the extra value".to_owned(),
                    };
                    self.errors.push(CheckError::UnexpectedArgument {
                        node: node_name.to_owned(),
                        expected,
                        span: value_span(entry),
                        help,
                    });
                }
            }
        }
        for (i, spec) in specs.iter().enumerate() {
            let count = given.len().saturating_sub(i);
            if spec.multiple && count > 0 && count < spec.min_count {
                self.errors.push(CheckError::TooFewValues {
                    node: node_name.to_owned(),
                    min: spec.min_count,
                    found: count,
                    span: node.name().span(),
                });
            }
            if i >= given.len()
                && (spec.required
                    || (spec.multiple && spec.min_count > 0 && spec.default.is_empty()))
            {
                let what = match &spec.name {
                    Some(name) => format!("argument `{name}`"),
                    None if spec.multiple => "at least one value".to_owned(),
                    None => "a value".to_owned(),
                };
                self.errors.push(CheckError::MissingRequired {
                    parent: node_name.to_owned(),
                    what,
                    span: node.name().span(),
                    help: Some(format!(
                        "write it after the name: `{node_name} {}`",
                        example(spec)
                    )),
                });
            }
        }
    }

    /// Checks properties; returns the names present (typos counted as their suggestion).
    fn check_props(&mut self, node: &KdlNode, view: &View<'a>) -> BTreeMap<String, SourceSpan> {
        let node_name = node.name().value();
        let mut present: BTreeMap<String, SourceSpan> = BTreeMap::new();
        for (name, entry) in props(node) {
            self.check_annotation(entry);
            let key = entry.name().map_or(entry.span(), |k| k.span());
            if let Some(first) = present.get(name) {
                self.errors.push(CheckError::DuplicateProperty {
                    name: name.to_owned(),
                    first: *first,
                    second: key,
                });
            }
            if name == "when" && self.options.allow_when {
                present.insert(name.to_owned(), key);
                self.check_when(entry);
                continue;
            }
            if let Some(spec) = view.prop(name) {
                if spec.name.as_deref() == Some("*")
                    && let Some(format) = spec.format.filter(|f| !f.accepts_str(name))
                {
                    self.errors.push(bad_format(name, format, key));
                }
                present.insert(name.to_owned(), key);
                self.check_value(entry, spec, name);
                continue;
            }
            let names = view.prop_names();
            let guess = suggest(name, names.iter().copied());
            let elsewhere: Vec<&str> = view
                .base
                .variants
                .iter()
                .filter(|v| v.body.prop(name).is_some())
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
            self.errors.push(CheckError::UnknownProperty {
                message,
                span: key,
                help: Some(help),
            });
            if let Some(spec) = guess.and_then(|g| view.prop(g)) {
                if let Some(g) = guess {
                    present.insert(g.to_owned(), key);
                }
                self.check_value(entry, spec, name);
            }
        }
        for body in view.bodies() {
            for spec in &body.props {
                let Some(name) = spec.name.as_deref() else {
                    continue;
                };
                if spec.required && !present.contains_key(name) && !view.union {
                    self.errors.push(CheckError::MissingRequired {
                        parent: node_name.to_owned(),
                        what: format!("property `{name}`"),
                        span: node.name().span(),
                        help: Some(format!("add `{name}={}`", example(spec))),
                    });
                }
            }
        }
        present
    }

    fn check_children_block(&mut self, node: &KdlNode, view: &View<'a>) {
        let Some(children) = node.children() else {
            return;
        };
        if !view.has_children() {
            if !view.union {
                self.errors.push(CheckError::UnexpectedChildren {
                    node: node.name().value().to_owned(),
                    span: children.span(),
                });
            }
            return;
        }
        if view.union {
            // Children of an unknown variant: accept those any variant allows.
            let known: Vec<&KdlNode> = children
                .nodes()
                .iter()
                .filter(|c| view.node(c.name().value()).is_some())
                .collect();
            for child in known {
                if let Some(spec) = view.node(child.name().value()) {
                    self.path.push(child.name().value().to_owned());
                    self.check_node(child, spec);
                    self.path.pop();
                }
            }
            return;
        }
        self.check_children(children.nodes(), view, Some(node));
    }

    fn check_exclusive(
        &mut self,
        node: &KdlNode,
        view: &View<'a>,
        props: &BTreeMap<String, SourceSpan>,
    ) {
        let child_span = |name: &str| {
            node.children()
                .and_then(|c| c.nodes().iter().find(|n| n.name().value() == name))
                .map(|n| n.name().span())
        };
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
                self.errors.push(CheckError::Exclusive {
                    first: (*first).to_owned(),
                    second: (*second).to_owned(),
                    first_span: *first_span,
                    second_span: *second_span,
                });
            }
        }
    }

    fn check_annotation(&mut self, entry: &KdlEntry) {
        if let Some(ty) = entry.ty() {
            self.errors.push(CheckError::IgnoredAnnotation {
                annotation: ty.value().to_owned(),
                span: ty.span(),
            });
        }
    }

    fn check_when(&mut self, entry: &KdlEntry) {
        match entry.value() {
            KdlValue::Bool(_) => {}
            KdlValue::String(s) if template::is_template(s) => self.check_template(entry, s, true),
            other => self.errors.push(CheckError::WrongType {
                expected: "a template expression such as \"{{ rank > 4 }}\"".into(),
                found: describe(other),
                span: value_span(entry),
                help: Some("`when` drops its node when the expression is false".into()),
            }),
        }
    }

    fn check_template(&mut self, entry: &KdlEntry, text: &str, allowed: bool) {
        let at = Location {
            value: value_span(entry),
            content: string_content_offset(entry),
        };
        if !allowed {
            self.template_errors
                .push(TemplateError::NotAllowed { span: at.value });
            return;
        }
        let vars = template::check(&self.env, text, at, &self.scope, &mut self.template_errors);
        self.findings.templates.push(TemplateUse {
            top: self.top,
            path: self.path.clone(),
            vars,
        });
    }

    fn check_value(&mut self, entry: &KdlEntry, spec: &ValueSpec, slot: &str) {
        let span = value_span(entry);
        let value = entry.value();
        if let KdlValue::String(s) = value
            && template::is_template(s)
        {
            self.check_template(entry, s, spec.template);
            return;
        }
        match check_scalar(value, spec, slot, span) {
            Ok(Checked::Number(n)) => {
                if let Some(e) = range_error(n, spec, &repr(entry), span) {
                    self.errors.push(e);
                }
            }
            Ok(Checked::Text(s)) => {
                if !spec.enum_values.is_empty() {
                    match spec.canonical(s) {
                        Some(c) if c != s => self.errors.push(alias(s, c, span)),
                        Some(_) => {}
                        None => self.errors.push(unknown_value(s, spec, slot, span)),
                    }
                } else if let Some(format) = spec.format.filter(|f| !f.accepts_str(s)) {
                    self.errors.push(bad_format(s, format, span));
                }
            }
            Ok(Checked::Other) => {}
            Err(e) => self.errors.push(e),
        }
    }
}

enum Checked<'v> {
    Number(f64),
    Text(&'v str),
    Other,
}

/// Type check of a literal against its slot.
fn check_scalar<'v>(
    value: &'v KdlValue,
    spec: &ValueSpec,
    slot: &str,
    span: SourceSpan,
) -> Result<Checked<'v>, CheckError> {
    let wrong = |help: Option<String>| CheckError::WrongType {
        expected: expected(spec),
        found: describe(value),
        span,
        help,
    };
    match (spec.ty, value) {
        (_, KdlValue::Null) => {
            Err(wrong(spec.default.first().map(|d| {
                format!("leave `{slot}` out to get its default, {}", show(d))
            })))
        }
        (ValueType::Any, KdlValue::String(s)) => Ok(if spec.format.is_some() {
            Checked::Text(s)
        } else {
            Checked::Other
        }),
        (ValueType::Any, _) => Ok(Checked::Other),
        (ValueType::Int, KdlValue::Integer(i)) => match i64::try_from(*i) {
            Ok(i) => Ok(Checked::Number(i as f64)),
            Err(_) => Err(CheckError::OutOfRange {
                value: i.to_string(),
                rule: "too large for a 64-bit integer".into(),
                span,
            }),
        },
        (ValueType::Int, KdlValue::Float(f)) => {
            Err(wrong(Some(if f.fract() == 0.0 && f.is_finite() {
                format!("write it without the fraction: `{}`", *f as i64)
            } else {
                format!("`{slot}` counts whole units")
            })))
        }
        (ValueType::Float, KdlValue::Integer(i)) => Ok(Checked::Number(*i as f64)),
        (ValueType::Float, KdlValue::Float(f)) if f.is_finite() => Ok(Checked::Number(*f)),
        (ValueType::Float, KdlValue::Float(_)) => Err(CheckError::OutOfRange {
            value: "this number".into(),
            rule: "must be finite (too large for a 64-bit float, or inf/nan)".into(),
            span,
        }),
        (ValueType::Int | ValueType::Float, KdlValue::String(s)) => {
            if spec.canonical(s).is_some()
                || (!spec.enum_values.is_empty()
                    && suggest(s, spec.enum_values.iter().map(String::as_str)).is_some())
            {
                return Ok(Checked::Text(s));
            }
            let numeric = if spec.ty == ValueType::Int {
                s.trim().parse::<i64>().is_ok()
            } else {
                s.trim().parse::<f64>().is_ok()
            };
            Err(wrong(Some(if numeric {
                format!("remove the quotes: `{}`", s.trim())
            } else {
                format!("write a value such as `{}`", example(spec))
            })))
        }
        (ValueType::String | ValueType::Path, KdlValue::String(s)) if s.is_empty() => {
            Err(wrong(None))
        }
        (ValueType::String | ValueType::Path, KdlValue::String(s)) => Ok(Checked::Text(s)),
        (ValueType::String | ValueType::Path, other) => Err(wrong(Some(format!(
            "add quotes: `\"{}\"`",
            show(other).trim_start_matches('#')
        )))),
        (ValueType::Bool, KdlValue::Bool(_)) => Ok(Checked::Other),
        (ValueType::Bool, KdlValue::String(s))
            if matches!(s.to_ascii_lowercase().as_str(), "true" | "false") =>
        {
            Err(wrong(Some(format!(
                "write `#{}` without quotes",
                s.to_ascii_lowercase()
            ))))
        }
        (ValueType::Bool, _) => Err(wrong(Some("write `#true` or `#false`".into()))),
        (_, _) => Err(wrong(Some(format!(
            "write a value such as `{}`",
            example(spec)
        )))),
    }
}

fn range_error(n: f64, spec: &ValueSpec, written: &str, span: SourceSpan) -> Option<CheckError> {
    let rule = if spec.min.is_some_and(|m| n < m)
        || spec.max.is_some_and(|m| n > m)
        || spec.above.is_some_and(|m| n <= m)
        || spec.below.is_some_and(|m| n >= m)
    {
        range_rule(spec)
    } else {
        return None;
    };
    Some(CheckError::OutOfRange {
        value: written.to_owned(),
        rule,
        span,
    })
}

/// "must be ≥ 0 and < 1", from a slot's bounds.
pub fn range_rule(spec: &ValueSpec) -> String {
    let mut parts = Vec::new();
    if let Some(m) = spec.min {
        parts.push(format!("≥ {}", num(m)));
    }
    if let Some(m) = spec.above {
        parts.push(format!("> {}", num(m)));
    }
    if let Some(m) = spec.max {
        parts.push(format!("≤ {}", num(m)));
    }
    if let Some(m) = spec.below {
        parts.push(format!("< {}", num(m)));
    }
    format!("must be {}", parts.join(" and "))
}

fn num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn repr(entry: &KdlEntry) -> String {
    entry
        .format()
        .map_or_else(|| entry.value().to_string(), |f| f.value_repr.clone())
}

fn expected(spec: &ValueSpec) -> String {
    let base = match spec.ty {
        ValueType::Int => "an integer",
        ValueType::Float => "a number",
        ValueType::String => "a string",
        ValueType::Path => "a path (a non-empty string)",
        ValueType::Bool => "#true or #false",
        ValueType::Any => "a value",
    };
    match (spec.ty, spec.enum_values.as_slice()) {
        (ValueType::Int | ValueType::Float, [one]) => format!("{base} or \"{one}\""),
        _ => base.to_owned(),
    }
}

/// How a literal reads in a message: `a string "32"`.
pub fn describe(value: &KdlValue) -> String {
    match value {
        KdlValue::String(s) if s.is_empty() => "an empty string".into(),
        KdlValue::String(s) => format!("a string \"{s}\""),
        KdlValue::Integer(i) => format!("an integer {i}"),
        KdlValue::Float(f) => format!("a number {f}"),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".into(),
    }
}

fn show(value: &KdlValue) -> String {
    match value {
        KdlValue::String(s) => format!("\"{s}\""),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".into(),
        other => other.to_string(),
    }
}

fn example(spec: &ValueSpec) -> String {
    if let Some(d) = spec.default.first() {
        return show(d);
    }
    match (spec.ty, spec.enum_values.first()) {
        (_, Some(e)) => format!("\"{e}\""),
        (ValueType::Int, _) => "1".into(),
        (ValueType::Float, _) => "0.1".into(),
        (ValueType::Bool, _) => "#true".into(),
        (ValueType::Path, _) => "\"file\"".into(),
        _ => "\"…\"".into(),
    }
}

fn kinds_help(body: &Body) -> String {
    format!(
        "the kinds are: {}",
        list(body.variants.iter().map(|v| v.name.as_str()))
    )
}

fn unknown_value(s: &str, spec: &ValueSpec, slot: &str, span: SourceSpan) -> CheckError {
    let values = spec.enum_values.iter().map(String::as_str);
    let guess = suggest(
        s,
        values
            .clone()
            .chain(spec.aliases.iter().map(|(a, _)| a.as_str())),
    );
    let guess = guess.and_then(|g| spec.canonical(g));
    let help = match guess {
        Some(g) => format!("did you mean `{g}`? allowed: {}", list(values)),
        None => format!("allowed: {}", list(values)),
    };
    CheckError::UnknownValue {
        value: s.to_owned(),
        slot: slot.to_owned(),
        span,
        help,
    }
}

fn bad_format(value: &str, format: Format, span: SourceSpan) -> CheckError {
    CheckError::BadFormat {
        value: value.to_owned(),
        format: format.name(),
        span,
        help: format!("use {}", format.describe()),
    }
}

fn alias(written: &str, canonical: &str, span: SourceSpan) -> CheckError {
    let origin = if written
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase())
    {
        "PyTorch"
    } else if written.contains('_') {
        "HF"
    } else {
        "other"
    };
    CheckError::Alias {
        written: written.to_owned(),
        canonical: canonical.to_owned(),
        origin,
        span,
    }
}
