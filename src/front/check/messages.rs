//! How the schema stage words its diagnostics: values, slots, examples and the errors built
//! from them.

use kdl::KdlValue;
use miette::SourceSpan;

use super::CheckError;
use crate::diagnostic::suggest::{list, suggest};
use crate::front::schema::{Body, Format, ValueSpec, ValueType};

pub(super) fn num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

pub(super) fn expected(spec: &ValueSpec) -> String {
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

pub(super) fn show(value: &KdlValue) -> String {
    match value {
        KdlValue::String(s) => format!("\"{s}\""),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".into(),
        other => other.to_string(),
    }
}

pub(super) fn example(spec: &ValueSpec) -> String {
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

pub(super) fn kinds_help(body: &Body) -> String {
    format!(
        "the kinds are: {}",
        list(body.variants.iter().map(|v| v.name.as_str()))
    )
}

pub(super) fn unknown_value(s: &str, spec: &ValueSpec, slot: &str, span: SourceSpan) -> CheckError {
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

pub(super) fn bad_format(value: &str, format: Format, span: SourceSpan) -> CheckError {
    CheckError::BadFormat {
        value: value.to_owned(),
        format: format.name(),
        span,
        help: format!("use {}", format.describe()),
    }
}

pub(super) fn alias(written: &str, canonical: &str, span: SourceSpan) -> CheckError {
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
