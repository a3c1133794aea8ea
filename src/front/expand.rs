//! Expansion: for each point of the sweep (see [`points`](crate::front::points)), the
//! experiment with every template evaluated (values keep the template's span), `when` applied
//! and `none` leaving a setting unset. Pure: no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kdl::KdlValue;
use miette::{Diagnostic, SourceSpan};
use minijinja::value::{Enumerator, Object, Value, ValueKind};
use minijinja::{Environment, Expression};
use thiserror::Error;

use crate::diagnostic::Diag;
use crate::front::points::Point;
use crate::front::source::SourceId;
use crate::front::template::{self, Location};
use crate::front::tree::{Entry, Node, Origin, Plain};

#[derive(Debug, Error, Diagnostic)]
pub enum ExpandError {
    #[error(
        "zip axes have different lengths: `{first}` has {first_len}, `{second}` has {second_len}"
    )]
    #[diagnostic(
        code("xp::sweep::zip-length"),
        help(
            "zip pairs values element by element; give every axis of a zip the same number of values"
        )
    )]
    ZipLength {
        first: String,
        first_len: usize,
        second: String,
        second_len: usize,
        #[label("{first_len} values")]
        first_span: SourceSpan,
        #[label("{second_len} values")]
        second_span: SourceSpan,
    },

    #[error("`include` must give every axis; missing: {missing}")]
    #[diagnostic(
        code("xp::sweep::include-axes"),
        help("an included point is a whole run: add {missing}")
    )]
    IncludeAxes {
        missing: String,
        #[label("incomplete point")]
        span: SourceSpan,
    },

    #[error("the range of `{axis}` is backwards: {low} is above {high}")]
    #[diagnostic(code("xp::sweep::random-range"), help("write the low bound first"))]
    RandomRange {
        axis: String,
        low: String,
        high: String,
        #[label("low above high")]
        span: SourceSpan,
    },

    #[error("this sweep has {count} runs, more than the limit of {limit}")]
    #[diagnostic(
        code("xp::sweep::too-many-runs"),
        help(
            "narrow the axes, split the sweep into several experiments, or sample the space with `random count=N`"
        )
    )]
    TooManyRuns {
        count: String,
        limit: usize,
        #[label("{count} runs")]
        span: SourceSpan,
    },

    #[error("every point of the sweep is excluded")]
    #[diagnostic(
        code("xp::sweep::empty"),
        help("loosen the `exclude` rules, or add points with `include`")
    )]
    Empty {
        #[label("no point is left")]
        span: SourceSpan,
    },

    #[error("template failed: {message}")]
    #[diagnostic(
        code("xp::template::eval"),
        help("values keep the type they are written in: 1e-3 is a number, \"1e-3\" a string")
    )]
    Eval {
        message: String,
        #[label("fails here")]
        span: SourceSpan,
    },

    #[error("the template `{template}` exceeds its budget: {what}")]
    #[diagnostic(
        code("xp::template::budget"),
        help(
            "a template computes one value of a run; it may run {fuel} steps and produce {max} bytes"
        )
    )]
    Budget {
        template: String,
        what: &'static str,
        fuel: u64,
        max: usize,
        #[label("this template")]
        span: SourceSpan,
    },

    #[error("a template must give a single value, not {found}")]
    #[diagnostic(
        code("xp::template::not-scalar"),
        help("settings take numbers, strings or booleans; lists are written as several arguments")
    )]
    NotScalar {
        found: String,
        #[label("gives {found}")]
        span: SourceSpan,
    },
}

pub(super) fn truthy(v: &KdlValue) -> bool {
    match v {
        KdlValue::Bool(b) => *b,
        KdlValue::Integer(i) => *i != 0,
        KdlValue::Float(f) => *f != 0.0,
        KdlValue::String(s) => !s.is_empty(),
        KdlValue::Null => false,
    }
}

/// A run name rendered from the `name` template, with where the template is written.
#[derive(Debug, Clone)]
pub struct RunName {
    pub text: String,
    pub source: SourceId,
    pub span: SourceSpan,
}

/// Evaluates templates for one point at a time, compiling each template once.
pub struct Expander {
    expressions: HashMap<String, Expression<'static, 'static>>,
    templates: Environment<'static>,
    names: HashMap<String, String>,
}

impl Default for Expander {
    fn default() -> Self {
        Expander {
            expressions: HashMap::new(),
            templates: template::environment(),
            names: HashMap::new(),
        }
    }
}

impl Expander {
    /// The experiment for one point: templates evaluated, `when` applied, and `sweep`, `vars`
    /// and `name` removed; plus the rendered run name when the experiment has a `name`.
    pub fn expand(
        &mut self,
        experiment: &Node,
        point: &Point,
    ) -> Result<(Node, Option<RunName>), Vec<Diag>> {
        let mut errors = Vec::new();
        // One scope that grows var by var: a var sees the axes, `seed` and the vars before it,
        // without a copy of the scope per var (quadratic with thousands of vars).
        let scope = Arc::new(Scope::new(&point.axes, point.seed));
        let ctx = Value::from_dyn_object(Arc::clone(&scope));
        for var in experiment
            .nodes()
            .iter()
            .filter(|n| n.name == "vars")
            .flat_map(|v| v.nodes())
        {
            let Some(entry) = var.arg(0) else { continue };
            match self.value(entry, &ctx) {
                Ok(v) => scope.insert(
                    var.name.clone(),
                    v.as_ref().map_or(Value::from(()), to_jinja),
                ),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let name = match experiment.child("name").and_then(|n| n.arg(0)) {
            Some(entry) => match self.value(entry, &ctx) {
                Ok(v) => v.map(|v| RunName {
                    text: Plain(&v).to_string(),
                    source: entry.source,
                    span: entry.span,
                }),
                Err(e) => return Err(vec![e]),
            },
            None => None,
        };
        let mut out = experiment.clone();
        if let Some(c) = out.children.as_mut() {
            c.nodes
                .retain(|n| !matches!(n.name.as_str(), "sweep" | "vars" | "name"));
        }
        // The point's seed (the experiment's, plus the replicate) is the run's seed.
        let seed = KdlValue::Integer(point.seed.into());
        match out.child_mut("seed") {
            Some(node) => match node.entries.iter_mut().find(|e| e.key.is_none()) {
                Some(entry) => entry.value = seed,
                None => node.set_arg(0, Entry::new(None, seed, node.source, node.name_span)),
            },
            None if point.replicate > 0 => {
                let mut node = Node::new("seed", experiment.source, experiment.name_span);
                node.set_arg(
                    0,
                    Entry::new(None, seed, experiment.source, experiment.name_span),
                );
                out.nodes_mut().push(node);
            }
            None => {}
        }
        let _ = self.expand_node(&mut out, &ctx, &mut errors);
        if errors.is_empty() {
            Ok((out, name))
        } else {
            Err(errors)
        }
    }

    /// Expands a node in place; returns `false` when an argument of it evaluated to `none`,
    /// which unsets the whole setting.
    fn expand_node(&mut self, node: &mut Node, ctx: &Value, errors: &mut Vec<Diag>) -> bool {
        let mut keep = true;
        let mut entries = Vec::with_capacity(node.entries.len());
        for entry in std::mem::take(&mut node.entries) {
            if entry.name() == "when".into() {
                continue;
            }
            if !(entry.origin == Origin::Written
                && entry.as_str().is_some_and(template::is_template))
            {
                entries.push(entry);
                continue;
            }
            match self.value(&entry, ctx) {
                Ok(Some(value)) => {
                    let text = entry.as_str().unwrap_or_default();
                    let origin = match template::sole_expression(text) {
                        Some(_) => Origin::Template(text.into()),
                        None => Origin::Rendered(text.into()),
                    };
                    entries.push(Entry {
                        value,
                        origin,
                        ..entry
                    });
                }
                Ok(None) => keep &= entry.key.is_some(),
                Err(e) => errors.push(e),
            }
        }
        node.entries = entries;
        let Some(children) = node.children.as_mut() else {
            return keep;
        };
        let mut kept = Vec::with_capacity(children.nodes.len());
        for mut child in std::mem::take(&mut children.nodes) {
            if let Some(when) = child.prop("when") {
                match self.value(when, ctx) {
                    Ok(Some(v)) if !truthy(&v) => continue,
                    Ok(None) => continue,
                    Ok(Some(_)) => {}
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
            }
            if self.expand_node(&mut child, ctx, errors) {
                kept.push(child);
            }
        }
        children.nodes = kept;
        keep
    }

    /// The value of one entry: a literal as written, a template's value (`None`: unset).
    fn value(&mut self, entry: &Entry, ctx: &Value) -> Result<Option<KdlValue>, Diag> {
        let Some(text) = entry
            .as_str()
            .filter(|t| entry.origin == Origin::Written && template::is_template(t))
        else {
            return Ok(Some(entry.value.clone()));
        };
        if template::sole_expression(text).is_some() {
            return evaluate(entry, ctx, template::shared(), &mut self.expressions);
        }
        if template::binding_statement(text).is_some() {
            // Said by the check; never evaluated, since it could exhaust memory.
            return Err(over_budget(entry, "it binds values"));
        }
        let key = match self.names.get(text) {
            Some(k) => k.clone(),
            None => {
                let key = format!("t{}", self.names.len());
                if let Err(e) = self
                    .templates
                    .add_template_owned(key.clone(), text.to_owned())
                {
                    return Err(eval_error(&e, entry, 0));
                }
                self.names.insert(text.to_owned(), key.clone());
                key
            }
        };
        let mut out = template::BoundedOutput::default();
        let rendered = self
            .templates
            .get_template(&key)
            .and_then(|t| t.render_captured_to(ctx, &mut out));
        match rendered {
            Ok(_) => Ok(Some(KdlValue::String(out.text))),
            Err(_) if out.overflowed => Err(over_budget(entry, "its output is too large")),
            Err(e) => Err(eval_error(&e, entry, 0)),
        }
    }
}

/// Evaluates a `{{ expr }}` entry to a typed value (`None` for none/undefined).
pub(super) fn evaluate(
    entry: &Entry,
    ctx: &Value,
    env: &'static Environment<'static>,
    cache: &mut HashMap<String, Expression<'static, 'static>>,
) -> Result<Option<KdlValue>, Diag> {
    let text = entry.as_str().unwrap_or_default();
    let Some((base, expr)) = template::sole_expression(text) else {
        return Ok(Some(entry.value.clone()));
    };
    if !cache.contains_key(text) {
        let compiled = env
            .compile_expression_owned(expr.to_owned())
            .map_err(|e| eval_error(&e, entry, base))?;
        cache.insert(text.to_owned(), compiled);
    }
    let value = cache[text]
        .eval(ctx)
        .map_err(|e| eval_error(&e, entry, base))?;
    if value
        .as_str()
        .is_some_and(|s| s.len() > template::MAX_OUTPUT_BYTES)
    {
        return Err(over_budget(entry, "its value is too large"));
    }
    from_jinja(&value).map_err(|found| {
        diag(
            entry.source,
            ExpandError::NotScalar {
                found,
                span: entry.span,
            },
        )
    })
}

/// A template that ran out of fuel or produced too much, labelled as a whole.
pub(super) fn over_budget(entry: &Entry, what: &'static str) -> Diag {
    diag(
        entry.source,
        ExpandError::Budget {
            template: template::short(entry.as_str().unwrap_or_default()),
            what,
            fuel: template::FUEL,
            max: template::MAX_OUTPUT_BYTES,
            span: entry.span,
        },
    )
}

fn eval_error(e: &minijinja::Error, entry: &Entry, base: usize) -> Diag {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return over_budget(entry, "it runs too long");
    }
    let at = Location {
        value: entry.span,
        content: entry.content,
    };
    let message = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_owned);
    diag(
        entry.source,
        ExpandError::Eval {
            message,
            span: at.span(e.range(), base),
        },
    )
}

/// The variables of one point: its axes and `seed`.
pub(super) fn context(axes: &[(String, KdlValue)], seed: i64) -> Value {
    Value::from_object(Scope::new(axes, seed))
}

/// Template variables by name, to which a point's vars are added one at a time.
#[derive(Debug)]
struct Scope(Mutex<BTreeMap<String, Value>>);

impl Scope {
    fn new(axes: &[(String, KdlValue)], seed: i64) -> Self {
        let mut map: BTreeMap<String, Value> =
            axes.iter().map(|(k, v)| (k.clone(), to_jinja(v))).collect();
        map.insert("seed".into(), Value::from(seed));
        Scope(Mutex::new(map))
    }

    fn insert(&self, name: String, value: Value) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(name, value);
        }
    }
}

impl Object for Scope {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.lock().ok()?.get(key.as_str()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let keys: Vec<Value> = self
            .0
            .lock()
            .map(|map| map.keys().map(|k| Value::from(k.as_str())).collect())
            .unwrap_or_default();
        Enumerator::Values(keys)
    }
}

fn to_jinja(v: &KdlValue) -> Value {
    match v {
        KdlValue::Integer(i) => i64::try_from(*i).map_or_else(|_| Value::from(*i), Value::from),
        KdlValue::Float(f) => Value::from(*f),
        KdlValue::String(s) => Value::from(s.as_str()),
        KdlValue::Bool(b) => Value::from(*b),
        KdlValue::Null => Value::from(()),
    }
}

fn from_jinja(v: &Value) -> Result<Option<KdlValue>, String> {
    Ok(Some(match v.kind() {
        ValueKind::None | ValueKind::Undefined => return Ok(None),
        ValueKind::Bool => KdlValue::Bool(v.is_true()),
        ValueKind::Number if v.is_integer() => KdlValue::Integer(
            i128::try_from(v.clone()).map_err(|_| "a number too large".to_owned())?,
        ),
        ValueKind::Number => {
            KdlValue::Float(f64::try_from(v.clone()).map_err(|_| "a number".to_owned())?)
        }
        ValueKind::String => KdlValue::String(v.as_str().unwrap_or_default().to_owned()),
        ValueKind::Seq | ValueKind::Iterable => return Err("a list".into()),
        ValueKind::Map => return Err("a map".into()),
        other => return Err(format!("a {other}")),
    }))
}

pub(super) fn diag(source: SourceId, e: ExpandError) -> Diag {
    Diag {
        source: Some(source),
        inner: Box::new(e),
    }
}

pub fn int(v: &KdlValue) -> Option<i64> {
    match v {
        KdlValue::Integer(i) => i64::try_from(*i).ok(),
        _ => None,
    }
}

pub fn number(v: &KdlValue) -> Option<f64> {
    match v {
        KdlValue::Integer(i) => Some(*i as f64),
        KdlValue::Float(f) => Some(*f),
        _ => None,
    }
}
