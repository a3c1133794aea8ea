//! The schema stage: checks a tree against a [`Schema`] and collects every mistake — unknown
//! names (with the typo checked as its suggestion), missing and mistyped values, ranges, enums,
//! exclusive options, duplicates — plus static template checks. It also normalizes what it
//! checks in place: aliases become canonical names, and text rendered by a template is read as
//! its slot's type. Pure: no I/O.

mod error;
pub mod experiment;

use std::collections::{BTreeMap, BTreeSet};

use kdl::KdlValue;
use miette::{Diagnostic, SourceSpan};

pub use error::CheckError;

use crate::diagnostic::Diag;
use crate::diagnostic::suggest::{list, suggest};
use crate::front::schema::{Body, Format, NodeSpec, Schema, ValueSpec, ValueType, Variant};
use crate::front::source::SourceId;
use crate::front::template::{self, Location, Scope, TemplateError};
use crate::front::tree::{Entry, Literal, Node, Origin};

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
    pub scope_of: fn(&Node) -> Scope,
    /// Where a missing top-level node is reported.
    pub root: SourceId,
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    pub diags: Vec<Diag>,
    pub templates: Vec<TemplateUse>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.diags
            .iter()
            .any(|d| d.severity() == miette::Severity::Error)
    }
}

/// Checks (and normalizes) a document's nodes.
pub fn check(nodes: &mut [Node], schema: &Schema, options: &Options) -> Report {
    let mut checker = Checker {
        schema,
        options,
        env: template::shared(),
        report: Report::default(),
        scope: Scope::default(),
        path: Vec::new(),
        top: 0,
    };
    let view = View {
        base: &schema.document,
        variant: None,
        union: false,
    };
    checker.check_children(nodes, &view, None);
    checker.report
}

struct Checker<'a> {
    schema: &'a Schema,
    options: &'a Options,
    env: &'static minijinja::Environment<'static>,
    report: Report,
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
    fn push(&mut self, source: SourceId, error: impl Diagnostic + Send + Sync + 'static) {
        self.report.diags.push(Diag {
            source: Some(source),
            inner: Box::new(error),
        });
    }

    fn context(&self) -> String {
        match self.path.last() {
            Some(parent) => format!("in `{parent}`"),
            None => "at the top of the file".into(),
        }
    }

    fn check_children(
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
            let name = node.name.clone();
            let name_span = node.name_span;
            let (spec, key) = if let Some(spec) = view.node(&name) {
                (Some(spec), name.clone())
            } else if let Some(spec) = view.wildcard_node() {
                if let Some(format) = spec.format.filter(|f| !f.accepts_str(&name)) {
                    self.push(node.source, bad_format(&name, format, name_span));
                }
                (Some(spec), name.clone())
            } else {
                let candidates = view.node_names();
                let guess = suggest(&name, candidates.iter().copied());
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
                        name: name.clone(),
                        context,
                        span: name_span,
                        help,
                    },
                );
                match guess {
                    Some(g) => (view.node(g), g.to_owned()),
                    None => (None, name.clone()),
                }
            };
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

    fn check_node(&mut self, node: &mut Node, spec: &'a NodeSpec) {
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
                    let (variant, union) =
                        self.check_tag(&mut node.entries[at], body, tag, &node_name);
                    view.variant = variant;
                    view.union = union;
                }
            }
        }
        self.check_args(node, first_arg, &view);
        let present = self.check_props(node, &view);
        self.check_children_block(node, &view);
        self.check_exclusive(node, &view, &present);
    }

    /// Reads the kind argument; returns the selected variant, or whether all must be allowed.
    fn check_tag(
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

    fn check_args(&mut self, node: &mut Node, skip: usize, view: &View<'a>) {
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

    /// Checks properties; returns the names present (typos counted as their suggestion).
    fn check_props(&mut self, node: &mut Node, view: &View<'a>) -> BTreeMap<String, SourceSpan> {
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

    fn check_children_block(&mut self, node: &mut Node, view: &View<'a>) {
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
    fn relaxed(&self, node: &Node) -> bool {
        self.options.allow_when && node.child("extends").is_some()
    }

    fn check_exclusive(
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

    fn check_annotation(&mut self, entry: &Entry) {
        if let Some((ty, span)) = &entry.annotation {
            self.push(
                entry.source,
                CheckError::IgnoredAnnotation {
                    annotation: ty.clone(),
                    span: *span,
                },
            );
        }
    }

    /// Whether a value is a template still to be expanded (expanded values never are).
    fn is_template(&self, entry: &Entry) -> bool {
        entry.origin == Origin::Written && entry.as_str().is_some_and(template::is_template)
    }

    fn check_when(&mut self, entry: &mut Entry) {
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

    fn check_template(&mut self, entry: &Entry, text: &str, allowed: bool) {
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

    fn check_value(&mut self, entry: &mut Entry, spec: &ValueSpec, slot: &str) {
        if let Some(text) = entry
            .as_str()
            .filter(|_| self.is_template(entry))
            .map(str::to_owned)
        {
            self.check_template(entry, &text, spec.template);
            return;
        }
        if matches!(entry.origin, Origin::Rendered(_)) {
            coerce(entry, spec);
        }
        let (span, source) = (entry.span, entry.source);
        match check_scalar(&entry.value, spec, slot, span) {
            Ok(Checked::Number(n)) => {
                let written = Literal(&entry.value).to_string();
                if let Some(e) = range_error(n, spec, &written, span) {
                    self.push(source, e);
                }
            }
            Ok(Checked::Text(s)) => {
                let s = s.to_owned();
                if !spec.enum_values.is_empty() {
                    match spec.canonical(&s) {
                        Some(c) if c != s => {
                            let c = c.to_owned();
                            self.push(source, alias(&s, &c, span));
                            entry.value = KdlValue::String(c);
                        }
                        Some(_) => {}
                        None => self.push(source, unknown_value(&s, spec, slot, span)),
                    }
                } else if let Some(format) = spec.format.filter(|f| !f.accepts_str(&s)) {
                    self.push(source, bad_format(&s, format, span));
                }
            }
            Ok(Checked::Other) => {}
            Err(e) => self.push(source, e),
        }
    }
}

/// Reads the text a template rendered as the slot's type (`"32"` in an int slot is 32).
fn coerce(entry: &mut Entry, spec: &ValueSpec) {
    let Some(text) = entry.as_str().map(str::trim) else {
        return;
    };
    let value = match spec.ty {
        ValueType::Int => text
            .parse::<i64>()
            .ok()
            .map(|i| KdlValue::Integer(i.into())),
        ValueType::Float => text.parse::<f64>().ok().map(KdlValue::Float),
        ValueType::Bool => match text {
            "true" | "True" | "#true" => Some(KdlValue::Bool(true)),
            "false" | "False" | "#false" => Some(KdlValue::Bool(false)),
            _ => None,
        },
        _ => None,
    };
    if let Some(v) = value {
        entry.value = v;
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
        (ValueType::Any, KdlValue::Null) => Ok(Checked::Other),
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
