//! What the user wrote, as a spanned tree: every node and value knows the source it came from
//! (a file, a base file it extends, or a `--set` on the command line) and its byte span there.
//! Expansion produces the same tree with templates replaced by values that keep the template's
//! span, so one checker serves both the written file and every expanded run.

use std::fmt;
use std::sync::Arc;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use crate::front::parse;
use crate::front::source::SourceId;

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub name_span: SourceSpan,
    pub source: SourceId,
    /// A type annotation `(ty)name`, which xp ignores (and warns about).
    pub annotation: Option<(String, SourceSpan)>,
    pub entries: Vec<Entry>,
    pub children: Option<Children>,
}

#[derive(Debug, Clone)]
pub struct Children {
    pub nodes: Vec<Node>,
    pub span: SourceSpan,
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// The property name and its span; `None` for an argument.
    pub key: Option<(String, SourceSpan)>,
    pub value: KdlValue,
    /// The span of the value alone.
    pub span: SourceSpan,
    pub source: SourceId,
    pub annotation: Option<(String, SourceSpan)>,
    /// Offset of a string's first character when offsets inside it map one to one.
    pub content: Option<usize>,
    pub origin: Origin,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// Written as it is.
    Written,
    /// The value of a template expression `{{ expr }}` (keeps its type).
    Template(Arc<str>),
    /// The text a template rendered to, still to be read as the slot's type.
    Rendered(Arc<str>),
    /// Filled in from the schema's default.
    Default,
}

impl Node {
    pub fn new(name: impl Into<String>, source: SourceId, span: SourceSpan) -> Self {
        Node {
            name: name.into(),
            name_span: span,
            source,
            annotation: None,
            entries: Vec::new(),
            children: None,
        }
    }

    pub fn args(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.key.is_none())
    }

    pub fn props(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .filter_map(|e| e.key.as_ref().map(|(k, _)| (k.as_str(), e)))
    }

    /// The last property of that name (KDL's rule when a key repeats).
    pub fn prop(&self, name: &str) -> Option<&Entry> {
        self.props()
            .filter(|(k, _)| *k == name)
            .map(|(_, e)| e)
            .last()
    }

    pub fn arg(&self, index: usize) -> Option<&Entry> {
        self.args().nth(index)
    }

    pub fn nodes(&self) -> &[Node] {
        self.children.as_ref().map_or(&[], |c| &c.nodes)
    }

    pub fn nodes_mut(&mut self) -> &mut Vec<Node> {
        let span = self.name_span;
        &mut self
            .children
            .get_or_insert_with(|| Children {
                nodes: Vec::new(),
                span,
            })
            .nodes
    }

    pub fn child(&self, name: &str) -> Option<&Node> {
        self.nodes().iter().find(|n| n.name == name)
    }

    pub fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.children
            .as_mut()?
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
    }

    /// Sets a property, replacing every earlier one of that name.
    pub fn set_prop(&mut self, entry: Entry) {
        let name = entry.key.as_ref().map(|(k, _)| k.clone());
        self.entries
            .retain(|e| e.key.as_ref().map(|(k, _)| k) != name.as_ref());
        self.entries.push(entry);
    }

    /// Sets the argument at `index`, appending when there are fewer.
    pub fn set_arg(&mut self, index: usize, entry: Entry) {
        let positions: Vec<usize> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.key.is_none())
            .map(|(i, _)| i)
            .collect();
        match positions.get(index) {
            Some(&i) => self.entries[i] = entry,
            None => {
                let at = positions.last().map_or(0, |&i| i + 1);
                self.entries.insert(at, entry);
            }
        }
    }
}

impl Entry {
    pub fn new(key: Option<&str>, value: KdlValue, source: SourceId, span: SourceSpan) -> Self {
        Entry {
            key: key.map(|k| (k.to_owned(), span)),
            value,
            span,
            source,
            annotation: None,
            content: None,
            origin: Origin::Written,
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.key.as_ref().map(|(k, _)| k.as_str())
    }

    pub fn key_span(&self) -> SourceSpan {
        self.key.as_ref().map_or(self.span, |(_, s)| *s)
    }

    pub fn as_str(&self) -> Option<&str> {
        self.value.as_string()
    }

    pub fn is_templated(&self) -> bool {
        matches!(self.origin, Origin::Template(_) | Origin::Rendered(_))
    }
}

/// A value as KDL writes it: `"text"`, `3`, `0.001`, `#true`.
pub struct Literal<'a>(pub &'a KdlValue);

impl fmt::Display for Literal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            KdlValue::String(s) => write!(f, "{s:?}"),
            KdlValue::Integer(i) => write!(f, "{i}"),
            KdlValue::Float(x) => write!(f, "{}", float(*x)),
            KdlValue::Bool(b) => write!(f, "#{b}"),
            KdlValue::Null => write!(f, "#null"),
        }
    }
}

/// A value as it reads in names and labels: strings bare, floats in their shortest form.
pub struct Plain<'a>(pub &'a KdlValue);

impl fmt::Display for Plain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            KdlValue::String(s) => write!(f, "{s}"),
            other => write!(f, "{}", Literal(other)),
        }
    }
}

/// The shortest text that reads back as the same float, always with a `.` or exponent.
pub fn float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "#nan".into()
        } else if x > 0.0 {
            "#inf".into()
        } else {
            "#-inf".into()
        };
    }
    let s = format!("{x:?}");
    if s.contains(['.', 'e', 'E']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// Converts a parsed document.
pub fn from_kdl(doc: &KdlDocument, source: SourceId) -> Vec<Node> {
    doc.nodes().iter().map(|n| node(n, source)).collect()
}

fn node(n: &KdlNode, source: SourceId) -> Node {
    Node {
        name: n.name().value().to_owned(),
        name_span: n.name().span(),
        source,
        annotation: n.ty().map(|t| (t.value().to_owned(), t.span())),
        entries: n.entries().iter().map(|e| entry(e, source)).collect(),
        children: n.children().map(|c| Children {
            nodes: from_kdl(c, source),
            span: c.span(),
        }),
    }
}

fn entry(e: &KdlEntry, source: SourceId) -> Entry {
    Entry {
        key: e.name().map(|k| (k.value().to_owned(), k.span())),
        value: e.value().clone(),
        span: parse::value_span(e),
        source,
        annotation: e.ty().map(|t| (t.value().to_owned(), t.span())),
        content: parse::string_content_offset(e),
        origin: Origin::Written,
    }
}
