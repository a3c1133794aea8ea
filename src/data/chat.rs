//! Chat templates as transformers' `apply_chat_template` renders them: the model's Jinja
//! template in minijinja with HF's settings (trim_blocks, lstrip_blocks, loop controls,
//! `raise_exception`, `strftime_now`, a Python-style `tojson`, Python string methods), given
//! `messages`, `add_generation_prompt` and the tokenizer's special tokens (`bos_token`, …).
//! The assistant turns are what the template's `{% generation %}` blocks write, where it has
//! them (as transformers' `return_assistant_tokens_mask`, which TRL's assistant-only loss
//! uses); otherwise they are found by prefix renderings: turn i spans from the end of the
//! conversation before it (with the generation prompt) to the end of the conversation
//! through it.

use std::collections::BTreeMap;
use std::ops::Range;

use minijinja::value::{Kwargs, Value as Jinja, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use serde_json::Value;

const NAME: &str = "chat_template";

/// A compiled chat template with the special tokens it is rendered with.
pub struct ChatTemplate {
    env: Environment<'static>,
    special: BTreeMap<String, String>,
    /// The template marks assistant text with `{% generation %}` blocks.
    marks: bool,
}

/// What a `{% generation %}` block's output is wrapped in while rendering (private-use
/// characters), and taken out of the text again.
const OPEN: char = '\u{10fffd}';
const CLOSE: char = '\u{10fffc}';

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("special", &self.special)
            .finish_non_exhaustive()
    }
}

/// Why a conversation has no assistant turns to learn.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnError {
    /// The template fails on the messages (`raise_exception`, an undefined field).
    Render(String),
    /// The template renders the conversation up to message `message` (1-based) differently from
    /// the start of the whole one (it drops earlier reasoning, or ends every rendering with an
    /// end token), so prefix renderings cannot find where the turns are.
    Unsplit { message: usize },
}

/// A template that does not compile: the message and where in the template.
#[derive(Debug, Clone)]
pub struct TemplateSyntax {
    pub message: String,
    pub span: Option<Range<usize>>,
}

impl ChatTemplate {
    /// Compiles `source` (as written in tokenizer_config.json or chat_template.jinja).
    pub fn new(
        source: &str,
        special: BTreeMap<String, String>,
    ) -> Result<ChatTemplate, TemplateSyntax> {
        let mut env = Environment::new();
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_filter(GENERATION, |body: String| format!("{OPEN}{body}{CLOSE}"));
        let (rewritten, marks) = generation_as_filter(source);
        env.add_template_owned(NAME, rewritten)
            .map_err(|e| TemplateSyntax {
                message: describe(&e),
                span: e.range(),
            })?;
        Ok(ChatTemplate {
            env,
            special,
            marks,
        })
    }

    /// The text of a conversation (each message a JSON object with at least role and content).
    pub fn render(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let marked = self.render_marked(messages, add_generation_prompt)?;
        Ok(marked.replace([OPEN, CLOSE], ""))
    }

    /// The text of a conversation with the output of `{% generation %}` blocks between
    /// [`OPEN`] and [`CLOSE`].
    fn render_marked(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
    ) -> Result<String, String> {
        let mut context: Vec<(String, Jinja)> = self
            .special
            .iter()
            .map(|(k, v)| (k.clone(), Jinja::from(v.as_str())))
            .collect();
        context.push(("messages".into(), messages.iter().map(to_jinja).collect()));
        context.push(("tools".into(), Jinja::from(())));
        context.push(("documents".into(), Jinja::from(())));
        context.push((
            "add_generation_prompt".into(),
            Jinja::from(add_generation_prompt),
        ));
        let template = self.env.get_template(NAME).map_err(|e| describe(&e))?;
        template
            .render(Jinja::from_pairs(context))
            .map_err(|e| describe(&e))
    }

    /// The rendered conversation and the byte ranges of its assistant turns (their content
    /// and what the template writes after it up to the next turn, such as `<|im_end|>`).
    pub fn render_turns(
        &self,
        messages: &[Value],
    ) -> Result<(String, Vec<Range<usize>>), TurnError> {
        if self.marks {
            let marked = self
                .render_marked(messages, false)
                .map_err(TurnError::Render)?;
            return Ok(marked_ranges(&marked));
        }
        let full = self.render(messages, false).map_err(TurnError::Render)?;
        let mut turns = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            if message.get("role").and_then(Value::as_str) != Some("assistant") {
                continue;
            }
            // A conversation that opens with the assistant may have no rendering of its own
            // start (templates read messages[0]): the turn starts at the beginning.
            let before = match i {
                0 => self.render(&[], true).unwrap_or_default(),
                _ => self
                    .render(&messages[..i], true)
                    .map_err(TurnError::Render)?,
            };
            let through = self
                .render(&messages[..=i], false)
                .map_err(TurnError::Render)?;
            if !full.starts_with(&before)
                || !full.starts_with(&through)
                || through.len() < before.len()
            {
                return Err(TurnError::Unsplit { message: i + 1 });
            }
            turns.push(before.len()..through.len());
        }
        Ok((full, turns))
    }
}

/// The filter that `{% generation %}` blocks become.
const GENERATION: &str = "xp_generation";

/// HF's `{% generation %}` blocks (which mark assistant text for its masks) as filter blocks
/// that wrap their output in marks, whitespace control included (a block tag stays a block
/// tag, so trim_blocks and lstrip_blocks treat it alike); and whether there were any.
fn generation_as_filter(source: &str) -> (String, bool) {
    let mut out = String::with_capacity(source.len());
    let mut found = false;
    let mut rest = source;
    while let Some(i) = rest.find("{%") {
        out.push_str(&rest[..i]);
        let tag = &rest[i..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return (out, found);
        };
        let inner = tag[2..end].trim_matches('-').trim();
        let (open, close) = (tag[2..].starts_with('-'), tag[..end].ends_with('-'));
        let replaced = match inner {
            "generation" => Some(format!("filter {GENERATION}")),
            "endgeneration" => Some("endfilter".to_owned()),
            _ => None,
        };
        match replaced {
            Some(r) => {
                found = true;
                out.push_str(if open { "{%- " } else { "{% " });
                out.push_str(&r);
                out.push_str(if close { " -%}" } else { " %}" });
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    (out, found)
}

/// The text without its marks, and the byte ranges that were marked (empty ones left out).
fn marked_ranges(marked: &str) -> (String, Vec<Range<usize>>) {
    let mut text = String::with_capacity(marked.len());
    let mut ranges = Vec::new();
    let mut start = None;
    for c in marked.chars() {
        match c {
            OPEN => start = Some(text.len()),
            CLOSE => {
                if let Some(s) = start.take()
                    && s < text.len()
                {
                    ranges.push(s..text.len());
                }
            }
            c => text.push(c),
        }
    }
    (text, ranges)
}

fn describe(e: &Error) -> String {
    match e.detail() {
        Some(detail) if e.kind() == ErrorKind::InvalidOperation => detail.to_owned(),
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

fn raise_exception(message: String) -> Result<Jinja, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> Result<Jinja, Error> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(&format).any(|i| matches!(i, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: bad format `{format}`"),
        ));
    }
    Ok(Jinja::from(
        chrono::Local::now().format(&format).to_string(),
    ))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=…, sort_keys=…)`, not
/// Jinja's HTML-escaping one.
fn tojson(value: &Jinja, kwargs: Kwargs) -> Result<Jinja, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    python_json(
        &to_json(value)?,
        indent,
        sort_keys.unwrap_or(false),
        ensure_ascii.unwrap_or(false),
        0,
        &mut out,
    );
    Ok(Jinja::from_safe_string(out))
}

fn python_json(
    v: &Value,
    indent: Option<usize>,
    sort: bool,
    ascii: bool,
    level: usize,
    out: &mut String,
) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let comma = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(comma);
                }
                newline(out, level + 1);
                python_json(item, indent, sort, ascii, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if sort {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(comma);
                }
                newline(out, level + 1);
                python_string(k, ascii, out);
                out.push_str(": ");
                python_json(item, indent, sort, ascii, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        Value::String(s) => python_string(s, ascii, out),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e16 => {
                out.push_str(&format!("{f:.1}"))
            }
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

fn python_string(s: &str, ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A JSON value as the template sees it (maps keep the order they were written in).
fn to_jinja(v: &Value) -> Jinja {
    match v {
        Value::Null => Jinja::from(()),
        Value::Bool(b) => Jinja::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Jinja::from(i),
            (None, Some(f)) => Jinja::from(f),
            _ => Jinja::from(n.to_string()),
        },
        Value::String(s) => Jinja::from(s.as_str()),
        Value::Array(items) => items.iter().map(to_jinja).collect(),
        Value::Object(map) => Jinja::from_pairs(map.iter().map(|(k, v)| (k.as_str(), to_jinja(v)))),
    }
}

/// A template value as JSON, for `tojson`.
fn to_json(v: &Jinja) -> Result<Value, Error> {
    Ok(match v.kind() {
        ValueKind::Undefined | ValueKind::None => Value::Null,
        ValueKind::Bool => Value::Bool(v.is_true()),
        ValueKind::Number => match i64::try_from(v.clone()) {
            Ok(i) => Value::from(i),
            Err(_) => f64::try_from(v.clone())
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
        },
        ValueKind::String => Value::String(v.as_str().unwrap_or_default().to_owned()),
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            for key in v.try_iter()? {
                let item = v.get_item(&key)?;
                map.insert(key.to_string(), to_json(&item)?);
            }
            Value::Object(map)
        }
        ValueKind::Seq | ValueKind::Iterable => Value::Array(
            v.try_iter()?
                .map(|i| to_json(&i))
                .collect::<Result<_, _>>()?,
        ),
        _ => Value::String(v.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_filter_blocks() {
        assert_eq!(
            generation_as_filter("a{% generation %}b{%- endgeneration -%}c{{ x }}"),
            (
                "a{% filter xp_generation %}b{%- endfilter -%}c{{ x }}".to_owned(),
                true
            )
        );
        assert!(!generation_as_filter("{{ x }}").1);
    }

    #[test]
    fn marked_ranges_are_byte_ranges_of_the_text() {
        let marked = format!("é{OPEN}ab{CLOSE}c{OPEN}{CLOSE}{OPEN}d{CLOSE}");
        assert_eq!(
            marked_ranges(&marked),
            ("éabcd".to_owned(), vec![2..4, 5..6])
        );
    }

    #[test]
    fn tojson_writes_what_python_json_dumps_writes() {
        let v: Value =
            serde_json::json!({"b": [1, 2.5, "é\n"], "a": {"x": null, "y": true}, "c": 3.0});
        let mut out = String::new();
        python_json(&v, None, false, false, 0, &mut out);
        assert_eq!(
            out,
            r#"{"a": {"x": null, "y": true}, "b": [1, 2.5, "é\n"], "c": 3.0}"#
        );
        let mut out = String::new();
        python_json(
            &serde_json::json!({"k": [1]}),
            Some(2),
            false,
            false,
            0,
            &mut out,
        );
        assert_eq!(out, "{\n  \"k\": [\n    1\n  ]\n}");
    }
}
