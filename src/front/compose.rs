//! Composition: an experiment that `extends` a base is merged over it (nodes given here replace
//! the base's by name, children merge recursively), then `--set` and `--axis` overrides apply.
//! Pure: the base files were read by the load stage.

use std::path::PathBuf;

use kdl::{KdlDocument, KdlValue};
use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use crate::diagnostic::Diag;
use crate::diagnostic::suggest::{list, suggest};
use crate::front::load::{BaseFailure, Loaded, MAX_EXTENDS, base_dir, normalize};
use crate::front::schema::{Body, NodeSpec, Schema, ValueSpec};
use crate::front::source::{SourceId, Sources};
use crate::front::tree::{Entry, Node};

#[derive(Debug, Error, Diagnostic)]
pub enum ComposeError {
    #[error("cannot read the base experiment `{path}`: {reason}")]
    #[diagnostic(
        code("xp::extends::unreadable"),
        help("the path is relative to the file that contains `extends`")
    )]
    Unreadable {
        path: String,
        reason: String,
        #[label("extended here")]
        span: SourceSpan,
    },

    #[error("`extends` forms a cycle: {chain}")]
    #[diagnostic(
        code("xp::extends::cycle"),
        help("an experiment cannot extend itself, directly or through other files")
    )]
    Cycle {
        chain: String,
        #[label("closes the cycle")]
        span: SourceSpan,
    },

    #[error("the `extends` chain is longer than {limit} files")]
    #[diagnostic(
        code("xp::extends::too-deep"),
        help("extend a base that holds the shared settings directly instead of a long chain")
    )]
    TooDeep {
        limit: usize,
        #[label("extends beyond the limit here")]
        span: SourceSpan,
    },

    #[error("`{path}` has no experiment{named}")]
    #[diagnostic(code("xp::extends::no-experiment"))]
    NoExperiment {
        path: String,
        named: String,
        #[label("extended here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{path}` holds several experiments")]
    #[diagnostic(code("xp::extends::ambiguous"))]
    Ambiguous {
        path: String,
        #[label("which one?")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("an override must be written `{form}`")]
    #[diagnostic(code("xp::override::syntax"))]
    OverrideSyntax {
        form: &'static str,
        #[label("here")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`{segment}` is not a setting {context}")]
    #[diagnostic(code("xp::override::unknown-path"))]
    UnknownPath {
        segment: String,
        context: String,
        #[label("unknown")]
        span: SourceSpan,
        #[help]
        help: String,
    },
}

/// A note added to diagnostics inside a base file.
#[derive(Debug, Error)]
#[error("{inner}")]
pub struct InBase {
    inner: Box<dyn Diagnostic + Send + Sync>,
    note: String,
}

impl Diagnostic for InBase {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.inner.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new(match self.inner.help() {
            Some(h) => format!("{h}\n{}", self.note),
            None => self.note.clone(),
        }))
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.inner.labels()
    }
}

/// Marks a diagnostic that points into a base file with the file that extends it.
pub fn in_base(diag: Diag, base: &str, by: &str) -> Diag {
    let note = format!("this is in `{base}`, which `{by}` extends");
    Diag {
        source: diag.source,
        inner: Box::new(InBase {
            inner: diag.inner,
            note,
        }),
    }
}

fn diag(source: SourceId, e: ComposeError) -> Diag {
    Diag {
        source: Some(source),
        inner: Box::new(e),
    }
}

/// The experiment with its `extends` chain merged in.
pub fn compose(experiment: &Node, loaded: &Loaded, sources: &Sources) -> Result<Node, Diag> {
    let mut stack = Vec::new();
    if let Some(path) = &sources.get(experiment.source).path {
        stack.push(normalize(path));
    }
    compose_inner(experiment, loaded, sources, &mut stack, 0)
}

fn compose_inner(
    experiment: &Node,
    loaded: &Loaded,
    sources: &Sources,
    stack: &mut Vec<PathBuf>,
    depth: usize,
) -> Result<Node, Diag> {
    let Some(extends) = experiment.child("extends") else {
        return Ok(experiment.clone());
    };
    let Some(target) = extends.arg(0) else {
        return Ok(experiment.clone());
    };
    let Some(rel) = target.as_str() else {
        return Ok(experiment.clone());
    };
    let path = normalize(&base_dir(sources.get(experiment.source)).join(rel));
    let shown = rel.to_owned();
    if stack.contains(&path) {
        let chain: Vec<String> = stack
            .iter()
            .chain([&path])
            .map(|p| p.display().to_string())
            .collect();
        return Err(diag(
            target.source,
            ComposeError::Cycle {
                chain: chain.join(" → "),
                span: target.span,
            },
        ));
    }
    let too_deep = || {
        diag(
            target.source,
            ComposeError::TooDeep {
                limit: MAX_EXTENDS,
                span: target.span,
            },
        )
    };
    if depth >= MAX_EXTENDS {
        return Err(too_deep());
    }
    let base_source = match loaded.bases.get(&path) {
        Some(Ok(id)) => *id,
        Some(Err(BaseFailure::TooDeep)) => return Err(too_deep()),
        Some(Err(BaseFailure::Unreadable(reason))) => {
            return Err(diag(
                target.source,
                ComposeError::Unreadable {
                    path: shown,
                    reason: reason.clone(),
                    span: target.span,
                },
            ));
        }
        // Syntax errors in the base were reported when it was loaded; report nothing twice.
        Some(Err(BaseFailure::Invalid)) | None => {
            return Err(diag(
                target.source,
                ComposeError::Unreadable {
                    path: shown,
                    reason: "it has syntax errors".into(),
                    span: target.span,
                },
            ));
        }
    };
    let experiments: Vec<&Node> = loaded.trees[&base_source]
        .iter()
        .filter(|n| n.name == "experiment")
        .collect();
    let wanted = extends.prop("experiment").and_then(|e| e.as_str());
    let names: Vec<&str> = experiments
        .iter()
        .filter_map(|e| e.arg(0).and_then(|a| a.as_str()))
        .collect();
    let base = match wanted {
        Some(name) => experiments
            .iter()
            .find(|e| e.arg(0).and_then(|a| a.as_str()) == Some(name))
            .copied()
            .ok_or_else(|| {
                let help = match suggest(name, names.iter().copied()) {
                    Some(s) => Some(format!("did you mean `{s}`?")),
                    None if names.is_empty() => None,
                    None => Some(format!("it has: {}", list(names.iter().copied()))),
                };
                diag(
                    target.source,
                    ComposeError::NoExperiment {
                        path: shown.clone(),
                        named: format!(" named `{name}`"),
                        span: target.span,
                        help,
                    },
                )
            })?,
        None => match experiments.as_slice() {
            [one] => *one,
            [] => {
                return Err(diag(
                    target.source,
                    ComposeError::NoExperiment {
                        path: shown,
                        named: String::new(),
                        span: target.span,
                        help: None,
                    },
                ));
            }
            _ => {
                let help = format!(
                    "name one: `extends \"{rel}\" experiment=\"{}\"`; it has: {}",
                    names.first().copied().unwrap_or(""),
                    list(names.iter().copied())
                );
                return Err(diag(
                    target.source,
                    ComposeError::Ambiguous {
                        path: shown,
                        span: target.span,
                        help,
                    },
                ));
            }
        },
    };
    stack.push(path);
    let base = compose_inner(base, loaded, sources, stack, depth + 1)?;
    stack.pop();
    Ok(merge(base, experiment))
}

/// `derived` over `base`: derived's entries, children merged by name.
fn merge(base: Node, derived: &Node) -> Node {
    let mut out = derived.clone();
    let base_children = base.children.map(|c| c.nodes).unwrap_or_default();
    let derived_children: Vec<Node> = derived
        .nodes()
        .iter()
        .filter(|n| n.name != "extends")
        .cloned()
        .collect();
    let merged = merge_children(base_children, &derived_children);
    if !merged.is_empty() {
        *out.nodes_mut() = merged;
    } else if let Some(c) = out.children.as_mut() {
        c.nodes.clear();
    }
    out
}

fn merge_children(mut out: Vec<Node>, derived: &[Node]) -> Vec<Node> {
    let mut names: Vec<&str> = Vec::new();
    for d in derived {
        if !names.contains(&d.name.as_str()) {
            names.push(&d.name);
        }
    }
    for name in names {
        let ds: Vec<&Node> = derived.iter().filter(|n| n.name == name).collect();
        let positions: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, n)| n.name == name)
            .map(|(i, _)| i)
            .collect();
        let same_kind = |b: &Node, d: &Node| match (b.arg(0), d.arg(0)) {
            (Some(x), Some(y)) => x.value == y.value,
            _ => true,
        };
        if let ([d], [at]) = (ds.as_slice(), positions.as_slice())
            && same_kind(&out[*at], d)
        {
            out[*at] = merge(out[*at].clone(), d);
            continue;
        }
        let at = positions.first().copied().unwrap_or(out.len());
        out.retain(|n| n.name != name);
        let at = at.min(out.len());
        for (i, d) in ds.into_iter().enumerate() {
            out.insert(at + i, d.clone());
        }
    }
    out
}

/// One `--set` or `--axis` from the command line, kept as its own source for diagnostics.
#[derive(Debug, Clone)]
pub struct Override {
    pub kind: OverrideKind,
    pub text: String,
    pub source: SourceId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideKind {
    Set,
    Axis,
}

impl Override {
    /// How the override is recorded: `--set train.steps=50`.
    pub fn display(&self) -> String {
        match self.kind {
            OverrideKind::Set => format!("--set {}", self.text),
            OverrideKind::Axis => format!("--axis {}", self.text),
        }
    }
}

/// Applies overrides to a composed experiment, in order.
pub fn apply(experiment: &mut Node, overrides: &[Override], schema: &Schema) -> Vec<Diag> {
    let mut diags = Vec::new();
    for o in overrides {
        let result = match o.kind {
            OverrideKind::Set => apply_set(experiment, o, schema),
            OverrideKind::Axis => apply_axis(experiment, o),
        };
        if let Err(e) = result {
            diags.push(diag(o.source, e));
        }
    }
    diags
}

/// Reads a value as KDL would (`50`, `1e-3`, `#true`, `"x"`), `true` and `false` as JSON
/// writes them; anything else is a string.
fn value_of(text: &str) -> KdlValue {
    let trimmed = text.trim();
    match trimmed {
        "true" => return KdlValue::Bool(true),
        "false" => return KdlValue::Bool(false),
        _ => {}
    }
    match KdlDocument::parse(&format!("v {trimmed}")) {
        Ok(doc) => {
            let node = doc.nodes().first();
            match node.map(|n| n.entries()) {
                Some([only]) if only.name().is_none() => only.value().clone(),
                _ => KdlValue::String(trimmed.to_owned()),
            }
        }
        Err(_) => KdlValue::String(trimmed.to_owned()),
    }
}

/// Reads a list of values (`64 64`, `[q_proj v_proj]`, `["a", "b"]` as JSON writes it) as
/// KDL arguments; text that is neither is one value.
fn values_of(text: &str) -> Vec<KdlValue> {
    let trimmed = text.trim();
    if let Ok(serde_json::Value::Array(items)) = serde_json::from_str(trimmed) {
        let values: Vec<KdlValue> = items
            .iter()
            .filter_map(|v| match v {
                serde_json::Value::String(s) => Some(KdlValue::String(s.clone())),
                serde_json::Value::Bool(b) => Some(KdlValue::Bool(*b)),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Some(KdlValue::Integer(i.into())),
                    None => n.as_f64().map(KdlValue::Float),
                },
                _ => None,
            })
            .collect();
        if values.len() == items.len() && !values.is_empty() {
            return values;
        }
    }
    let inner = trimmed
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(trimmed);
    match KdlDocument::parse(&format!("v {inner}")) {
        Ok(doc) => match doc.nodes().first().map(|n| n.entries()) {
            Some(entries) if !entries.is_empty() && entries.iter().all(|e| e.name().is_none()) => {
                entries.iter().map(|e| e.value().clone()).collect()
            }
            _ => vec![value_of(inner)],
        },
        Err(_) => vec![value_of(inner)],
    }
}

fn override_entry(key: Option<&str>, text: &str, start: usize, source: SourceId) -> Entry {
    Entry::new(key, value_of(text), source, (start, text.len()).into())
}

/// Where a dotted setting path lands in a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The node's arguments: its first one, or all of them when it takes a list.
    Args { list: bool },
    /// A further named argument (`objective.direction`).
    Arg(usize),
    /// A property (`train.optimizer.lr`).
    Prop,
}

/// A segment of a setting path that names nothing.
#[derive(Debug)]
pub struct PathError {
    /// The index of the segment.
    pub at: usize,
    pub segment: String,
    /// `in `schedule``.
    pub context: String,
    pub help: String,
}

/// The node a path of node names leads to from `node` (whose schema is `spec`), created where
/// missing, and its schema.
pub fn descend<'n, 's>(
    mut node: &'n mut Node,
    mut spec: &'s NodeSpec,
    segments: &[&str],
    schema: &'s Schema,
    source: SourceId,
) -> Result<(&'n mut Node, &'s NodeSpec), PathError> {
    for (i, &seg) in segments.iter().enumerate() {
        let Some(child) = child_spec(node, spec, seg, schema) else {
            return Err(unknown_segment(node, spec, seg, i, schema));
        };
        let at = match node.nodes().iter().position(|n| n.name == seg) {
            Some(at) => at,
            None => {
                let mut created = Node::new(seg, source, (0, 0).into());
                created.children = None;
                node.nodes_mut().push(created);
                node.nodes().len() - 1
            }
        };
        node = &mut node.nodes_mut()[at];
        spec = child;
    }
    Ok((node, spec))
}

/// The schema of a child node `name` of `node`.
pub fn child_spec<'s>(
    node: &Node,
    spec: &'s NodeSpec,
    name: &str,
    schema: &'s Schema,
) -> Option<&'s NodeSpec> {
    node_spec(schema.body(spec), kind_of(node).as_deref(), name)
}

/// Where the setting at a dotted path lives: the node that holds it (created where missing)
/// and which of its values it is. A path names a node (its arguments), or ends in a property
/// or a named argument of the node before.
pub fn locate<'n>(
    node: &'n mut Node,
    spec: &NodeSpec,
    segments: &[&str],
    schema: &Schema,
    source: SourceId,
) -> Result<(&'n mut Node, Slot), PathError> {
    let Some((last, parents)) = segments.split_last() else {
        return Err(unknown_segment(node, spec, "", 0, schema));
    };
    let (parent, parent_spec) = descend(node, spec, parents, schema, source)?;
    let body = schema.body(parent_spec);
    let kind = kind_of(parent);
    if let Some(child) = node_spec(body, kind.as_deref(), last) {
        let list = schema.body(child).args.first().is_some_and(|a| a.multiple);
        let (target, _) = descend(parent, parent_spec, &[last], schema, source)?;
        return Ok((target, Slot::Args { list }));
    }
    if prop_spec(body, kind.as_deref(), last).is_some() {
        return Ok((parent, Slot::Prop));
    }
    if let Some(i) = arg_index(body, kind.as_deref(), last) {
        return Ok((parent, Slot::Arg(i)));
    }
    Err(unknown_segment(
        parent,
        parent_spec,
        last,
        parents.len(),
        schema,
    ))
}

/// Sets a located setting to `values` (one, or several for a list).
pub fn assign(target: &mut Node, slot: Slot, name: &str, values: Vec<Entry>) {
    match slot {
        Slot::Args { list: true } => {
            target.entries.retain(|e| e.key.is_some());
            for (i, v) in values.into_iter().enumerate() {
                target.set_arg(i, v);
            }
        }
        Slot::Args { list: false } => {
            for (i, v) in values.into_iter().enumerate() {
                target.set_arg(i, v);
            }
        }
        Slot::Arg(i) => {
            if let Some(v) = values.into_iter().next() {
                target.set_arg(i, v);
            }
        }
        Slot::Prop => {
            for mut v in values {
                v.key = Some((name.to_owned(), v.span));
                target.set_prop(v);
            }
        }
    }
}

fn kind_of(node: &Node) -> Option<String> {
    node.arg(0).and_then(|a| a.as_str()).map(str::to_owned)
}

/// The error for a segment that names nothing in `node`: what it could have been.
fn unknown_segment(
    node: &Node,
    spec: &NodeSpec,
    segment: &str,
    at: usize,
    schema: &Schema,
) -> PathError {
    let body = schema.body(spec);
    let kind = kind_of(node);
    let mut names: Vec<&str> = node_names(body, kind.as_deref());
    names.extend(prop_names(body, kind.as_deref()));
    names.extend(arg_names(body, kind.as_deref()));
    let mut seen = Vec::new();
    names.retain(|n| {
        let new = !seen.contains(n);
        seen.push(*n);
        new
    });
    let starting: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !segment.is_empty() && n.starts_with(&format!("{segment}-")))
        .collect();
    let help = if !starting.is_empty() {
        format!("did you mean {}?", or_list(&starting))
    } else if let Some(s) = suggest(segment, names.iter().copied()) {
        format!("did you mean `{s}`?")
    } else if names.is_empty() {
        format!("`{}` has no settings below it", node.name)
    } else {
        format!("the settings here are: {}", list(names.iter().copied()))
    };
    let context = match &kind {
        Some(k) if body.tag().is_some() => format!("of `{} \"{k}\"`", node.name),
        _ => format!("in `{}`", node.name),
    };
    PathError {
        at,
        segment: segment.to_owned(),
        context,
        help,
    }
}

/// `` `a`, `b` or `c` ``.
fn or_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => format!("`{one}`"),
        [init @ .., last] => format!("{} or `{last}`", list(init.iter().copied())),
    }
}

fn apply_set(experiment: &mut Node, o: &Override, schema: &Schema) -> Result<(), ComposeError> {
    let Some((path, value)) = o.text.split_once('=') else {
        return Err(ComposeError::OverrideSyntax {
            form: "--set path=value",
            span: (0, o.text.len()).into(),
            help: "e.g. `--set train.steps=50` or `--set train.optimizer.lr=3e-4`".into(),
        });
    };
    let value_start = path.len() + 1;
    let segments: Vec<&str> = path.split('.').collect();
    let offset = |i: usize| segments[..i].iter().map(|s| s.len() + 1).sum::<usize>();
    let Some(experiment_spec) = schema.document.node("experiment") else {
        return Ok(());
    };
    let (target, slot) =
        locate(experiment, experiment_spec, &segments, schema, o.source).map_err(|e| {
            ComposeError::UnknownPath {
                span: (offset(e.at), e.segment.len()).into(),
                segment: e.segment,
                context: e.context,
                help: e.help,
            }
        })?;
    let span: SourceSpan = (value_start, value.len()).into();
    let values: Vec<Entry> = match slot {
        Slot::Args { list: true } => values_of(value)
            .into_iter()
            .map(|v| Entry::new(None, v, o.source, span))
            .collect(),
        _ => vec![override_entry(None, value, value_start, o.source)],
    };
    let name = segments.last().copied().unwrap_or_default();
    assign(target, slot, name, values);
    Ok(())
}

fn bodies<'a>(body: &'a Body, kind: Option<&str>) -> Vec<&'a Body> {
    let mut out = vec![body];
    match kind.and_then(|k| body.variant_for(k)) {
        Some((v, _)) => out.push(&v.body),
        None => out.extend(body.variants.iter().map(|v| &v.body)),
    }
    out
}

fn node_spec<'a>(body: &'a Body, kind: Option<&str>, name: &str) -> Option<&'a NodeSpec> {
    let all = bodies(body, kind);
    all.iter()
        .find_map(|b| b.node(name))
        .or_else(|| all.iter().find_map(|b| b.wildcard_node()))
}

fn prop_spec<'a>(body: &'a Body, kind: Option<&str>, name: &str) -> Option<&'a ValueSpec> {
    bodies(body, kind).iter().find_map(|b| b.prop(name))
}

/// The position of the argument called `name` (the node's own and then its kind's).
fn arg_index(body: &Body, kind: Option<&str>, name: &str) -> Option<usize> {
    let mut all = body.args.clone();
    if let Some((v, _)) = kind.and_then(|k| body.variant_for(k)) {
        all.extend(v.body.args.iter().cloned());
    }
    all.iter().position(|a| a.name.as_deref() == Some(name))
}

fn node_names<'a>(body: &'a Body, kind: Option<&str>) -> Vec<&'a str> {
    bodies(body, kind)
        .iter()
        .flat_map(|b| b.nodes.iter().map(|n| n.name.as_str()))
        .filter(|n| *n != "*")
        .collect()
}

fn prop_names<'a>(body: &'a Body, kind: Option<&str>) -> Vec<&'a str> {
    bodies(body, kind)
        .iter()
        .flat_map(|b| b.props.iter().filter_map(|p| p.name.as_deref()))
        .filter(|n| *n != "*")
        .collect()
}

/// Arguments after the first, by name (the first is the node's own key).
fn arg_names<'a>(body: &'a Body, kind: Option<&str>) -> Vec<&'a str> {
    bodies(body, kind)
        .iter()
        .flat_map(|b| b.args.iter().skip(1).filter_map(|a| a.name.as_deref()))
        .collect()
}

fn apply_axis(experiment: &mut Node, o: &Override) -> Result<(), ComposeError> {
    let syntax = |span: SourceSpan| ComposeError::OverrideSyntax {
        form: "--axis name=v1,v2,…",
        span,
        help: "e.g. `--axis lr=1e-3,3e-3`".into(),
    };
    let Some((name, values)) = o.text.split_once('=') else {
        return Err(syntax((0, o.text.len()).into()));
    };
    if name.is_empty() || values.trim().is_empty() {
        return Err(syntax((0, o.text.len()).into()));
    }
    let mut entries = Vec::new();
    let mut at = name.len() + 1;
    for v in values.split(',') {
        entries.push(override_entry(None, v, at, o.source));
        at += v.len() + 1;
    }
    let mut axis = Node::new(name, o.source, (0, name.len()).into());
    axis.entries = entries;
    let sweep = match experiment.child_mut("sweep") {
        Some(s) => s,
        None => {
            experiment
                .nodes_mut()
                .push(Node::new("sweep", o.source, (0, name.len()).into()));
            experiment
                .child_mut("sweep")
                .ok_or_else(|| syntax((0, 0).into()))?
        }
    };
    for block in sweep.nodes_mut().iter_mut() {
        let Some(existing) = block
            .children
            .as_mut()
            .and_then(|c| c.nodes.iter_mut().find(|a| a.name == name))
        else {
            continue;
        };
        match block.name.as_str() {
            "grid" | "zip" => {
                existing.entries = axis.entries;
                existing.source = o.source;
                return Ok(());
            }
            _ => {
                if let Some(c) = block.children.as_mut() {
                    c.nodes.retain(|a| a.name != name);
                }
            }
        }
    }
    match sweep.child_mut("grid") {
        Some(grid) => grid.nodes_mut().push(axis),
        None => {
            let mut grid = Node::new("grid", o.source, (0, name.len()).into());
            grid.nodes_mut().push(axis);
            sweep.nodes_mut().insert(0, grid);
        }
    }
    Ok(())
}
