//! Templates inside values: the minijinja environment (strict undefined, no loader, no
//! environment access) and the static checks `xp validate` runs before any expansion —
//! syntax, and variables that are neither sweep axes, `vars` nor `seed`.

use std::collections::BTreeSet;

use miette::{Diagnostic, SourceSpan};
use minijinja::{Environment, UndefinedBehavior};
use thiserror::Error;

use crate::diagnostic::suggest::{list, suggest};

#[derive(Debug, Error, Diagnostic)]
pub enum TemplateError {
    #[error("template error: {message}")]
    #[diagnostic(code("xp::template::syntax"))]
    Syntax {
        message: String,
        #[label("here")]
        span: SourceSpan,
    },
    #[error("unknown template variable `{name}`")]
    #[diagnostic(code("xp::template::unknown-variable"))]
    UnknownVariable {
        name: String,
        #[label("not a sweep axis, a var or `seed`")]
        span: SourceSpan,
        #[help]
        help: String,
    },
    #[error("`{name}` reads as `{parts}` in a template: variable names are identifiers")]
    #[diagnostic(
        code("xp::template::dashed-name"),
        help("name it `{fixed}` where it is defined, and write `{{{{ {fixed} }}}}`")
    )]
    Dashed {
        name: String,
        parts: String,
        fixed: String,
        #[label("not one variable")]
        span: SourceSpan,
    },
    #[error("`{keyword}` is not available in an experiment's templates")]
    #[diagnostic(
        code("xp::template::statement"),
        help(
            "a template computes one value from the axes and vars; derive values in `vars` (`vars {{ warm \"{{{{ steps // 10 }}}}\" }}`) and use `{{% if %}}` or `{{% for %}}` to choose text"
        )
    )]
    Statement {
        keyword: &'static str,
        #[label("not available here")]
        span: SourceSpan,
    },
    #[error("templates are not allowed here")]
    #[diagnostic(
        code("xp::template::not-allowed"),
        help(
            "this value is read before templates are expanded; write it literally (derived values belong in `vars`)"
        )
    )]
    NotAllowed {
        #[label("a template")]
        span: SourceSpan,
    },
}

/// Whether a string is a template at all.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// The expression of a value that is exactly one `{{ expr }}` (it keeps its type), with its
/// byte offset inside the string.
pub fn sole_expression(s: &str) -> Option<(usize, &str)> {
    let trimmed_start = s.len() - s.trim_start().len();
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some((trimmed_start + 2, inner))
}

/// The statements a template of an experiment may not use, where it uses one: those that bind
/// values (`set`, `macro`, `call`) and recursive loops. With them a few lines can double a
/// string at every step and exhaust memory before any budget is checked; without them a
/// template's values grow only with its text. Derived values belong in `vars`.
pub fn binding_statement(text: &str) -> Option<(&'static str, std::ops::Range<usize>)> {
    const BINDING: [&str; 3] = ["set", "macro", "call"];
    let mut from = 0;
    while let Some(open) = text[from..].find("{%").map(|i| from + i) {
        let close = text[open..].find("%}").map_or(text.len(), |i| open + i + 2);
        let tag = &text[open + 2..close.saturating_sub(2).max(open + 2)];
        let body = tag.trim_start_matches(['-', '+', '~']).trim_start();
        let start = open + 2 + (tag.len() - body.len());
        let first = body
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .next()
            .unwrap_or_default();
        if let Some(keyword) = BINDING.iter().find(|k| **k == first) {
            return Some((keyword, start..start + first.len()));
        }
        if first == "for" {
            let words = body.split(|c: char| !c.is_ascii_alphanumeric() && c != '_');
            if let Some(at) = words
                .clone()
                .position(|w| w == "recursive")
                .and_then(|_| body.find("recursive"))
            {
                return Some(("recursive", start + at..start + at + "recursive".len()));
            }
        }
        from = close;
    }
    None
}

/// The shared environment expressions are compiled in (compiled expressions borrow it).
pub fn shared() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(environment)
}

/// The work one evaluation of a template may do, in minijinja's instructions: a few hundred
/// for any real template, so this only stops runaway loops (two nested `range(100000)`).
pub const FUEL: u64 = 1_000_000;

/// The largest text a template may produce, in bytes: values are numbers, names and paths.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// A fresh environment configured like every other: strict undefined, no loader, no access to
/// files or the process environment, and [`FUEL`] per evaluation.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_debug(true);
    env.set_fuel(Some(FUEL));
    env
}

/// The first line of a template, shortened, to name it in a message.
pub fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None if line.len() < text.len() => format!("{line}…"),
        None => line.to_owned(),
    }
}

/// A sink for rendered text that refuses to grow past [`MAX_OUTPUT_BYTES`], so a template that
/// prints without end fails instead of filling memory.
#[derive(Default)]
pub struct BoundedOutput {
    pub text: String,
    pub overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("template output is too large"));
        }
        self.text.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The variables a template may use.
#[derive(Debug, Default, Clone)]
pub struct Scope {
    pub names: BTreeSet<String>,
}

/// Where a checked template's text lies in the file.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    /// The whole written value (quotes included).
    pub value: SourceSpan,
    /// Offset of the string's first character, when offsets inside it map one to one.
    pub content: Option<usize>,
}

impl Location {
    /// The file span of a byte range inside the template text (`base`: where the compiled
    /// text starts inside the string), or the whole value when offsets do not map.
    pub fn span(&self, range: Option<std::ops::Range<usize>>, base: usize) -> SourceSpan {
        match (self.content, range) {
            (Some(start), Some(r)) => (start + base + r.start, r.len().max(1)).into(),
            _ => self.value,
        }
    }
}

/// Checks one template string; returns the variables it reads (a misspelt one as its suggestion).
pub fn check(
    env: &Environment<'static>,
    text: &str,
    at: Location,
    scope: &Scope,
    errors: &mut Vec<TemplateError>,
) -> BTreeSet<String> {
    if let Some((keyword, range)) = binding_statement(text) {
        errors.push(TemplateError::Statement {
            keyword,
            span: at.span(Some(range), 0),
        });
        return BTreeSet::new();
    }
    let (base, vars) = match sole_expression(text) {
        Some((offset, expr)) => (
            offset,
            env.compile_expression(expr)
                .map(|e| e.undeclared_variables(false)),
        ),
        None => (
            0,
            env.template_from_str(text)
                .map(|t| t.undeclared_variables(false)),
        ),
    };
    let vars: BTreeSet<String> = match vars {
        Ok(v) => v
            .into_iter()
            .filter(|name| env.globals().all(|(g, _)| g != name))
            .collect(),
        Err(e) => {
            errors.push(TemplateError::Syntax {
                message: e
                    .detail()
                    .map_or_else(|| e.kind().to_string(), str::to_owned),
                span: at.span(e.range(), base),
            });
            return BTreeSet::new();
        }
    };
    let mut read = vars.clone();
    // A name with a `-` (an axis misnamed `batch-size`) reads as a subtraction of its parts.
    let dashed: Vec<&String> = scope
        .names
        .iter()
        .filter(|n| n.contains('-') && dashed_span(text, n, base).is_some())
        .collect();
    for name in vars.iter().filter(|n| !scope.names.contains(*n)) {
        if let Some(whole) = dashed.iter().find(|d| d.split('-').any(|p| p == name)) {
            if whole.split('-').next() == Some(name.as_str()) {
                read.insert((*whole).clone());
                let span = at.span(dashed_span(text, whole, base), base);
                errors.push(TemplateError::Dashed {
                    name: (*whole).clone(),
                    parts: whole.split('-').collect::<Vec<_>>().join(" - "),
                    fixed: whole.replace('-', "_"),
                    span,
                });
            }
            continue;
        }
        let known = scope
            .names
            .iter()
            .map(String::as_str)
            .filter(|n| !n.contains('-'));
        let help = match suggest(name, known.clone()) {
            Some(s) => {
                // The typo stands for its suggestion: no false "unused axis" on top.
                read.insert(s.to_owned());
                format!("did you mean `{s}`?")
            }
            None if scope.names.is_empty() => {
                "this experiment has no sweep axes or vars; add one, or write the value literally"
                    .into()
            }
            None => format!("the variables here are: {}", list(known)),
        };
        errors.push(TemplateError::UnknownVariable {
            name: name.clone(),
            span: variable_span(text, name, at, base),
            help,
        });
    }
    read
}

/// Where a dashed name is written whole inside the template (`{{ batch-size }}`).
fn dashed_span(text: &str, name: &str, base: usize) -> Option<std::ops::Range<usize>> {
    whole_word(text, name, base, |b| {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
    })
}

/// The first occurrence of a variable name as a whole word inside the template.
fn variable_span(text: &str, name: &str, at: Location, base: usize) -> SourceSpan {
    let found = whole_word(text, name, base, |b| b.is_ascii_alphanumeric() || b == b'_');
    at.span(found, base)
}

/// The first occurrence of `name` after `base` with no word byte on either side, as a range
/// relative to `base`.
fn whole_word(
    text: &str,
    name: &str,
    base: usize,
    is_word: impl Fn(u8) -> bool,
) -> Option<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    text[base..]
        .match_indices(name)
        .map(|(i, _)| i + base)
        .find(|&i| {
            let before = i.checked_sub(1).map(|j| bytes[j]);
            let after = bytes.get(i + name.len()).copied();
            !before.is_some_and(&is_word) && !after.is_some_and(&is_word)
        })
        .map(|i| i - base..i - base + name.len())
}
