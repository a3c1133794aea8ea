//! `--filter`: a minijinja expression a run must make true, in xp's sandboxed environment (no
//! loader, no file or process access). Its variables are a run's fields (`name`, `id`,
//! `experiment`, `status`, `reason`, `seed`, `steps`, `wall_s`, `tokens_per_s`), its axes (by
//! name, and all as `axes`), its final metrics with `/` as `_` (`val_loss`; `best_val_loss` for
//! the best; all as `final` and `best` keyed by metric) and its settings with `.` and `-` as `_`
//! (`train_optimizer_lr`). A run without a variable the expression uses does not match; a
//! variable no run has is an error.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::value::Value as Jinja;
use minijinja::{ErrorKind, Expression};
use serde_json::Value;

use super::CompareError;
use super::runs::Run;
use crate::diagnostic::suggest::suggest;

/// Which runs the expression keeps.
pub fn select(expr: &str, runs: &[Run]) -> Result<Vec<bool>, CompareError> {
    let env = crate::front::template::environment();
    let compiled = env
        .compile_expression(expr)
        .map_err(|e| CompareError::FilterSyntax {
            expr: expr.to_owned(),
            message: message(&e),
        })?;
    let used: BTreeSet<String> = compiled.undeclared_variables(false).into_iter().collect();
    let mut known: BTreeSet<String> = BTreeSet::new();
    for run in runs {
        known.extend(names(run));
    }
    if let Some(name) = used.iter().find(|n| !known.contains(*n)) {
        let help = match suggest(name, known.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => "variables are the runs' fields (`name`, `status`, `experiment`, `seed`, `steps`), axes, metrics (`val_loss`, `best_val_loss`) and settings (`train_optimizer_lr`)".into(),
        };
        return Err(CompareError::FilterUnknown {
            name: name.clone(),
            help,
        });
    }
    runs.iter()
        .map(|run| matches(&compiled, run, &used))
        .collect()
}

fn matches(expr: &Expression, run: &Run, used: &BTreeSet<String>) -> Result<bool, CompareError> {
    let context: BTreeMap<String, Jinja> = used
        .iter()
        .filter_map(|n| variable(run, n).map(|v| (n.clone(), v)))
        .collect();
    match expr.eval(Jinja::from(context)) {
        Ok(v) => Ok(v.is_true()),
        Err(e) if e.kind() == ErrorKind::UndefinedError => Ok(false),
        Err(e) => Err(CompareError::FilterEval {
            run: run.summary.name.clone(),
            message: message(&e),
        }),
    }
}

/// The error without minijinja's template location (an expression has no template name).
fn message(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// A metric or setting name as a variable: `val/loss` → `val_loss`.
fn ident(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

const FIELDS: [&str; 14] = [
    "name",
    "id",
    "experiment",
    "status",
    "reason",
    "seed",
    "steps",
    "wall_s",
    "tokens_per_s",
    "axes",
    "final",
    "best",
    "dir",
    "config",
];

/// Every variable the run has.
fn names(run: &Run) -> impl Iterator<Item = String> + '_ {
    let s = &run.summary;
    FIELDS
        .iter()
        .map(|f| f.to_string())
        .chain(s.axes.keys().cloned())
        .chain(s.last.keys().map(|m| ident(m)))
        .chain(s.best.keys().map(|m| format!("best_{}", ident(m))))
        .chain(run.config.keys().map(|k| ident(k)))
}

/// One variable of a run; fields first, then axes, metrics, settings.
fn variable(run: &Run, name: &str) -> Option<Jinja> {
    let s = &run.summary;
    let number = |v: Option<f64>| v.map(Jinja::from);
    let field = match name {
        "name" => Some(Jinja::from(s.name.as_str())),
        "id" => Some(Jinja::from(s.id.as_str())),
        "experiment" => Some(Jinja::from(s.experiment.as_str())),
        "status" => Some(Jinja::from(s.status.as_str())),
        "reason" => Some(s.reason.as_deref().map_or(Jinja::from(()), Jinja::from)),
        "seed" => s.seed.map(Jinja::from),
        "steps" => Some(Jinja::from(s.steps)),
        "wall_s" => number(s.wall_s),
        "tokens_per_s" => number(s.tokens_per_s),
        "dir" => Some(Jinja::from(run.dir.display().to_string())),
        "axes" => Some(map(s.axes.iter().map(|(k, v)| (k.clone(), jinja(v))))),
        "final" => Some(map(s
            .last
            .iter()
            .map(|(k, v)| (k.clone(), Jinja::from(*v))))),
        "best" => Some(map(s
            .best
            .iter()
            .map(|(k, b)| (k.clone(), Jinja::from(b.value))))),
        "config" => Some(map(run.config.iter().map(|(k, v)| (k.clone(), jinja(v))))),
        _ => None,
    };
    if field.is_some() {
        return field;
    }
    if let Some(v) = s.axes.get(name) {
        return Some(jinja(v));
    }
    if let Some((_, v)) = s.last.iter().find(|(m, _)| ident(m) == name) {
        return Some(Jinja::from(*v));
    }
    if let Some(rest) = name.strip_prefix("best_")
        && let Some((_, b)) = s.best.iter().find(|(m, _)| ident(m) == rest)
    {
        return Some(Jinja::from(b.value));
    }
    run.config
        .iter()
        .find(|(k, _)| ident(k) == name)
        .map(|(_, v)| jinja(v))
}

fn jinja(v: &Value) -> Jinja {
    match v {
        Value::Null => Jinja::from(()),
        Value::Bool(b) => Jinja::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Jinja::from(i),
            (_, Some(u)) => Jinja::from(u),
            _ => Jinja::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Jinja::from(s.as_str()),
        Value::Array(items) => Jinja::from(items.iter().map(jinja).collect::<Vec<_>>()),
        Value::Object(m) => map(m.iter().map(|(k, v)| (k.clone(), jinja(v)))),
    }
}

fn map(items: impl Iterator<Item = (String, Jinja)>) -> Jinja {
    Jinja::from(items.collect::<BTreeMap<String, Jinja>>())
}
