//! The schema dialect: a small KDL language (close to the KDL Schema Language) that describes
//! which nodes, arguments and properties a document may hold. `schemas/experiment.kdl` is
//! written in it and embedded here; `schemas/meta.kdl` describes the dialect itself.

mod load;
pub(crate) mod markdown;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kdl::KdlValue;

pub use load::load;

/// The experiment schema, as shipped in the binary.
pub const EXPERIMENT_SOURCE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/experiment.kdl"
));
/// The schema of the schema dialect.
pub const META_SOURCE: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/meta.kdl"));

/// The embedded experiment schema, loaded once.
pub fn experiment() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| match load(EXPERIMENT_SOURCE) {
        Ok(schema) => schema,
        // The embedded schema is checked against the meta-schema by the test suite; reaching
        // this means the binary was built from a broken tree.
        Err(e) => unreachable!("the embedded experiment schema is invalid: {e}"),
    })
}

/// A whole schema: what a document holds, and named bodies other nodes refer to.
#[derive(Debug, Clone)]
pub struct Schema {
    pub name: String,
    pub version: i64,
    pub document: Body,
    pub defines: BTreeMap<String, Body>,
}

impl Schema {
    /// The body of a node: its own, or the definition it refers to.
    pub fn body<'a>(&'a self, node: &'a NodeSpec) -> &'a Body {
        match &node.body {
            BodyRef::Inline(body) => body,
            BodyRef::Ref(name) => self.defines.get(name).unwrap_or(&EMPTY_BODY),
        }
    }
}

static EMPTY_BODY: Body = Body {
    description: None,
    args: Vec::new(),
    props: Vec::new(),
    nodes: Vec::new(),
    variants: Vec::new(),
    exclusive: Vec::new(),
};

/// What a node (or a document, or a variant) may contain.
#[derive(Debug, Clone, Default)]
pub struct Body {
    pub description: Option<String>,
    /// Positional arguments in order; a `tag` argument comes first and selects a variant.
    pub args: Vec<ValueSpec>,
    /// Properties by name; a spec named `*` accepts any name of its format.
    pub props: Vec<ValueSpec>,
    /// Child nodes; a spec named `*` accepts any name of its format.
    pub nodes: Vec<NodeSpec>,
    pub variants: Vec<Variant>,
    /// Groups of props/children of which at most one may be given.
    pub exclusive: Vec<Vec<String>>,
}

impl Body {
    pub fn tag(&self) -> Option<&ValueSpec> {
        self.args.first().filter(|a| a.tag)
    }

    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The variant a written kind names, directly or through an alias.
    pub fn variant_for(&self, written: &str) -> Option<(&Variant, bool)> {
        if let Some(v) = self.variant(written) {
            return Some((v, false));
        }
        self.variants
            .iter()
            .find(|v| v.aliases.iter().any(|a| a == written))
            .map(|v| (v, true))
    }

    pub fn prop(&self, name: &str) -> Option<&ValueSpec> {
        self.props.iter().find(|p| p.name.as_deref() == Some(name))
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn wildcard_prop(&self) -> Option<&ValueSpec> {
        self.prop("*")
    }

    pub fn wildcard_node(&self) -> Option<&NodeSpec> {
        self.node("*")
    }
}

/// A child node a body allows.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The node's name, or `*` for any name of `format`.
    pub name: String,
    pub format: Option<Format>,
    pub required: bool,
    pub multiple: bool,
    /// Absent means off: not created from defaults when a run is resolved.
    pub feature: bool,
    pub body: BodyRef,
}

#[derive(Debug, Clone)]
pub enum BodyRef {
    Inline(Body),
    Ref(String),
}

/// One kind of a tagged node (`optimizer "sgd"`) with the options only that kind has.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub aliases: Vec<String>,
    /// Properties an alias brings with it where the node sets none of their exclusive group:
    /// a peer's name keeps the peer's meaning (`ExponentialLR` does not warm up, as in PyTorch).
    pub implies: Vec<Implied>,
    pub body: Body,
}

/// A property that writing one alias implies.
#[derive(Debug, Clone)]
pub struct Implied {
    pub alias: String,
    pub prop: String,
    pub value: KdlValue,
}

impl Variant {
    /// The properties `alias` implies.
    pub fn implied_by<'v>(&'v self, alias: &'v str) -> impl Iterator<Item = &'v Implied> {
        self.implies.iter().filter(move |i| i.alias == alias)
    }
}

/// A value slot: an argument or a property.
#[derive(Debug, Clone)]
pub struct ValueSpec {
    /// The property's name, or an argument's descriptive name.
    pub name: Option<String>,
    pub description: Option<String>,
    pub ty: ValueType,
    pub required: bool,
    pub default: Vec<KdlValue>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    /// The argument absorbs all remaining arguments.
    pub multiple: bool,
    pub min_count: usize,
    pub max_count: Option<usize>,
    pub format: Option<Format>,
    /// Allowed strings (for `int` and `float` slots: strings allowed besides numbers).
    pub enum_values: Vec<String>,
    /// Accepted other spellings, mapped to their canonical value.
    pub aliases: Vec<(String, String)>,
    /// This argument selects the node's variant.
    pub tag: bool,
    /// Whether the value may be a template string.
    pub template: bool,
}

impl ValueSpec {
    pub fn new(name: Option<String>) -> Self {
        ValueSpec {
            name,
            description: None,
            ty: ValueType::Any,
            required: false,
            default: Vec::new(),
            min: None,
            max: None,
            above: None,
            below: None,
            multiple: false,
            min_count: 0,
            max_count: None,
            format: None,
            enum_values: Vec::new(),
            aliases: Vec::new(),
            tag: false,
            template: true,
        }
    }

    /// The canonical value for a written string, following aliases.
    pub fn canonical<'a>(&'a self, written: &'a str) -> Option<&'a str> {
        if self.enum_values.iter().any(|v| v == written) {
            return Some(written);
        }
        self.aliases
            .iter()
            .find(|(from, _)| from == written)
            .map(|(_, to)| to.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Int,
    Float,
    String,
    Bool,
    /// A string naming a file, relative to the file that contains it.
    Path,
    /// Any scalar but null.
    Any,
}

impl ValueType {
    pub const ALL: [(&'static str, ValueType); 6] = [
        ("int", ValueType::Int),
        ("float", ValueType::Float),
        ("string", ValueType::String),
        ("bool", ValueType::Bool),
        ("path", ValueType::Path),
        ("any", ValueType::Any),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("any", |(n, _)| n)
    }
}

/// Named string formats, checked in code (no regex engine needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `[a-z_][a-z0-9_]*`: axis and variable names.
    Identifier,
    /// A file-system-safe name: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 100 bytes.
    Name,
    /// A metric key: snake_case segments separated by `/`, e.g. `val/loss`.
    Metric,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    Device,
    /// A tolerance: a number (absolute) or a string `N%` (relative).
    Tolerance,
}

impl Format {
    pub const ALL: [(&'static str, Format); 5] = [
        ("identifier", Format::Identifier),
        ("name", Format::Name),
        ("metric", Format::Metric),
        ("device", Format::Device),
        ("tolerance", Format::Tolerance),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("", |(n, _)| n)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Format::Identifier => "lowercase letters, digits and `_`, not starting with a digit",
            Format::Name => {
                "letters, digits, `.`, `_` and `-`, starting with a letter or digit, at most 100 bytes"
            }
            Format::Metric => "snake_case words separated by `/`, e.g. `val/loss`",
            Format::Device => "`auto`, `cpu`, `cuda` or `cuda:N`",
            Format::Tolerance => "a number (absolute) or a percentage such as \"2%\" (relative)",
        }
    }

    pub fn accepts_str(self, s: &str) -> bool {
        match self {
            Format::Identifier => is_identifier(s),
            Format::Name => {
                !s.is_empty()
                    && s.len() <= 100
                    && s.as_bytes()[0].is_ascii_alphanumeric()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            }
            Format::Metric => {
                !s.is_empty()
                    && s.split('/').all(|seg| {
                        !seg.is_empty()
                            && seg
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    })
            }
            Format::Device => crate::spec::Device::parse(s).is_some(),
            Format::Tolerance => parse_percent(s).is_some(),
        }
    }
}

pub fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `"2%"` → 2.0; `"-0.5%"` → -0.5.
pub fn parse_percent(s: &str) -> Option<f64> {
    let n: f64 = s.trim().strip_suffix('%')?.trim().parse().ok()?;
    n.is_finite().then_some(n)
}
