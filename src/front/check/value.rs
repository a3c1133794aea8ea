//! Checking one value against its slot: its type (text a template rendered read as the slot's
//! type first), range, enum (aliases made canonical) and format.

use kdl::KdlValue;
use miette::SourceSpan;

use super::messages::{alias, bad_format, describe, example, expected, num, show, unknown_value};
use super::{CheckError, Checker};
use crate::diagnostic::suggest::suggest;
use crate::front::schema::{ValueSpec, ValueType};
use crate::front::tree::{Entry, Literal, Origin};

impl<'a> Checker<'a> {
    pub(super) fn check_annotation(&mut self, entry: &Entry) {
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

    pub(super) fn check_value(&mut self, entry: &mut Entry, spec: &ValueSpec, slot: &str) {
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
