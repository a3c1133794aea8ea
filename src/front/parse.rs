//! Parsing: source text → KDL document. KDL v2 first; a file that only parses as KDL v1 is
//! accepted with a warning. Syntax errors are re-wrapped with narrowed spans, and the span
//! helpers every later stage uses to point at one value live here.

use kdl::{KdlDocument, KdlEntry, KdlNode};
use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use crate::diagnostic::Diagnostics;
use crate::front::source::SourceId;
use crate::front::structure::{self, Problem};

#[derive(Debug, Error, Diagnostic)]
pub enum ParseError {
    #[error("{message}")]
    #[diagnostic(code("xp::parse::syntax"))]
    Syntax {
        message: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },
    #[error("blocks are nested more than {limit} deep")]
    #[diagnostic(
        code("xp::parse::too-deep"),
        help(
            "an experiment needs only a few levels of `{{ }}`; look for a runaway or generated block"
        )
    )]
    TooDeep {
        limit: usize,
        #[label("one level too deep")]
        span: SourceSpan,
    },
    #[error("this block is never closed")]
    #[diagnostic(code("xp::parse::unclosed"))]
    Unclosed {
        #[label("opened here")]
        span: SourceSpan,
        #[help]
        help: String,
    },
    #[error("this `}}` closes no block")]
    #[diagnostic(
        code("xp::parse::unopened"),
        help("remove it, or look above it for a block that lost its `{{`")
    )]
    Unopened {
        #[label("nothing to close")]
        span: SourceSpan,
    },
    #[error("{what} is out of range")]
    #[diagnostic(code("xp::parse::out-of-range"))]
    OutOfRange {
        what: &'static str,
        #[label("{what}")]
        span: SourceSpan,
        #[help]
        help: &'static str,
    },
    #[error("this file is KDL v1; xp reads it, but KDL v2 is the experiment language")]
    #[diagnostic(
        code("xp::parse::kdl-v1"),
        severity(Warning),
        help(
            "in KDL v2, write #true, #false and #null, and quote strings that are not identifiers"
        )
    )]
    KdlV1 {
        #[label("not KDL v2")]
        span: SourceSpan,
    },
}

/// The deepest nesting of `{ }` blocks a file may have. Every stage after parsing (and the
/// KDL parser itself) walks the tree recursively, so this bounds their stack use; real
/// experiments use four or five levels.
pub const MAX_NESTING: usize = 64;

/// Parses one file; syntax errors go to `diags` and yield `None`.
pub fn parse(text: &str, source: SourceId, diags: &mut Diagnostics) -> Option<KdlDocument> {
    if let Some(offset) = structure::too_deep(text, MAX_NESTING) {
        diags.push(
            Some(source),
            ParseError::TooDeep {
                limit: MAX_NESTING,
                span: (offset, 1).into(),
            },
        );
        return None;
    }
    let v2_error = match KdlDocument::parse(text) {
        Ok(doc) => return Some(doc),
        Err(e) => e,
    };
    if let Ok(doc) = KdlDocument::parse_v1(text) {
        let first = v2_error.diagnostics.first();
        let span = first.map_or((0, 0).into(), |d| {
            narrow(text, d.span, d.message.as_deref())
        });
        diags.push(Some(source), ParseError::KdlV1 { span });
        return Some(doc);
    }
    let problems = structure::problems(text);
    if !problems.is_empty() {
        for problem in problems {
            diags.push(Some(source), structural(text, problem));
        }
        return None;
    }
    for d in v2_error.diagnostics {
        let span = narrow(text, d.span, d.message.as_deref());
        let bare_keyword =
            word_at(text, span.offset()).filter(|w| matches!(*w, "true" | "false" | "null"));
        let dangling_dot = d
            .message
            .as_deref()
            .is_some_and(|m| m.contains("after the '.' of a float"));
        let help = match bare_keyword {
            Some(word) => Some(format!("KDL v2 writes `{word}` as `#{word}`")),
            None if dangling_dot => Some("write a digit after the dot, e.g. `1.0`".to_owned()),
            None => d.help,
        };
        diags.push(
            Some(source),
            ParseError::Syntax {
                message: d.message.unwrap_or_else(|| "invalid KDL".into()),
                label: d.label.unwrap_or_else(|| "here".into()),
                span,
                help,
            },
        );
    }
    None
}

/// A problem of the file's structure as a diagnostic.
fn structural(text: &str, problem: Problem) -> ParseError {
    match problem {
        Problem::Unclosed { open, early } => ParseError::Unclosed {
            span: (open, 1).into(),
            help: match early {
                Some(close) => format!(
                    "add its `}}`: the `}}` on line {} lines up with an outer block",
                    line_of(text, close)
                ),
                None => "add its `}` where the block ends".to_owned(),
            },
        },
        Problem::Unopened { close } => ParseError::Unopened {
            span: (close, 1).into(),
        },
        Problem::OutOfRange { at, len, float } => ParseError::OutOfRange {
            what: if float { "this number" } else { "this integer" },
            span: (at, len).into(),
            help: if float {
                "a number must be below about 1.8e308"
            } else {
                "write a value this large as a float (`1e40`); settings take at most 64-bit integers"
            },
        },
    }
}

/// The 1-based line of an offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// kdl sometimes reports a span from the document start, or one running over several lines.
/// Point at the offending token instead: the first line of the span, and for a float with a
/// dangling dot, the number itself.
fn narrow(text: &str, span: SourceSpan, message: Option<&str>) -> SourceSpan {
    let start = span.offset().min(text.len());
    let end = (start + span.len()).min(text.len());
    let region = &text[start..end];
    if message.is_some_and(|m| m.contains("after the '.' of a float")) {
        // The span ends at the dot; search backwards so a comment earlier in the file that
        // happens to contain `1.` is not taken for the culprit.
        let bytes = region.as_bytes();
        for i in (1..bytes.len()).rev() {
            let next_is_digit = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if bytes[i] == b'.' && bytes[i - 1].is_ascii_digit() && !next_is_digit {
                let token_start = region[..i]
                    .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '_')))
                    .map_or(0, |p| p + 1);
                return (start + token_start, i + 1 - token_start).into();
            }
        }
    }
    if let Some(nl) = region.find('\n') {
        let len = if nl == 0 { 1.min(region.len()) } else { nl };
        return (start, len).into();
    }
    (start, end - start).into()
}

fn word_at(text: &str, offset: usize) -> Option<&str> {
    let rest = text.get(offset..)?;
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// The span of an entry's value alone (kdl spans cover `key=value`).
pub fn value_span(entry: &KdlEntry) -> SourceSpan {
    let span = entry.span();
    let repr_len = entry
        .format()
        .map_or(span.len(), |f| f.value_repr.len())
        .min(span.len());
    (span.offset() + span.len() - repr_len, repr_len).into()
}

/// Where the text of a string value starts in the file, when the written form is a plain
/// single-line quoted string without escapes (offsets inside it map one to one).
pub fn string_content_offset(entry: &KdlEntry) -> Option<usize> {
    let s = entry.value().as_string()?;
    let repr = &entry.format()?.value_repr;
    let quoted =
        repr.len() == s.len() + 2 && repr.starts_with('"') && &repr[1..repr.len() - 1] == s;
    quoted.then(|| value_span(entry).offset() + 1)
}

/// The node's arguments (entries without a name), in order.
pub fn args(node: &KdlNode) -> impl Iterator<Item = &KdlEntry> {
    node.entries().iter().filter(|e| e.name().is_none())
}

/// The node's properties (entries with a name), in order.
pub fn props(node: &KdlNode) -> impl Iterator<Item = (&str, &KdlEntry)> {
    node.entries()
        .iter()
        .filter_map(|e| e.name().map(|k| (k.value(), e)))
}

/// The last property of that name (KDL's rule when a key repeats).
pub fn prop<'a>(node: &'a KdlNode, name: &str) -> Option<&'a KdlEntry> {
    props(node)
        .filter(|(k, _)| *k == name)
        .map(|(_, e)| e)
        .last()
}

pub fn children(node: &KdlNode) -> &[KdlNode] {
    node.children().map_or(&[], |c| c.nodes())
}
