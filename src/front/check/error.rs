//! The schema stage's diagnostics: one variant per code.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

#[derive(Debug, Error, Diagnostic)]
pub enum CheckError {
    #[error("unknown node `{name}` {context}")]
    #[diagnostic(code("xp::schema::unknown-node"))]
    UnknownNode {
        name: String,
        context: String,
        #[label("not a setting here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{message}")]
    #[diagnostic(code("xp::schema::unknown-property"))]
    UnknownProperty {
        message: String,
        #[label("unknown property")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{node}` takes {expected}")]
    #[diagnostic(code("xp::schema::unexpected-argument"))]
    UnexpectedArgument {
        node: String,
        expected: String,
        #[label("unexpected argument")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`{node}` takes no child nodes")]
    #[diagnostic(
        code("xp::schema::unexpected-children"),
        help("remove the `{{ … }}` block")
    )]
    UnexpectedChildren {
        node: String,
        #[label("unexpected children")]
        span: SourceSpan,
    },

    #[error("`{parent}` needs {what}")]
    #[diagnostic(code("xp::schema::missing-required"))]
    MissingRequired {
        parent: String,
        what: String,
        #[label("{what} missing here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("expected {expected}, found {found}")]
    #[diagnostic(code("xp::schema::wrong-type"))]
    WrongType {
        expected: String,
        found: String,
        #[label("{found}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{value} is out of range: {rule}")]
    #[diagnostic(code("xp::schema::out-of-range"))]
    OutOfRange {
        value: String,
        rule: String,
        #[label("{rule}")]
        span: SourceSpan,
    },

    #[error("unknown value `{value}` for `{slot}`")]
    #[diagnostic(code("xp::schema::unknown-value"))]
    UnknownValue {
        value: String,
        slot: String,
        #[label("not one of the allowed values")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`{value}` is not a valid {format}")]
    #[diagnostic(code("xp::schema::bad-format"))]
    BadFormat {
        value: String,
        format: &'static str,
        #[label("invalid")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`{node}` needs at least {min} values, found {found}")]
    #[diagnostic(code("xp::schema::too-few-values"))]
    TooFewValues {
        node: String,
        min: usize,
        found: usize,
        #[label("here")]
        span: SourceSpan,
    },

    #[error("`{first}` and `{second}` cannot be given together")]
    #[diagnostic(code("xp::schema::exclusive"), help("keep one of them"))]
    Exclusive {
        first: String,
        second: String,
        #[label("`{first}` given here")]
        first_span: SourceSpan,
        #[label("and `{second}` here")]
        second_span: SourceSpan,
    },

    #[error("`{name}` is given more than once {context}")]
    #[diagnostic(
        code("xp::schema::duplicate-node"),
        help("keep one; settings are not merged")
    )]
    DuplicateNode {
        name: String,
        context: String,
        #[label("first here")]
        first: SourceSpan,
        #[label("again here")]
        second: SourceSpan,
    },

    #[error("property `{name}` is given more than once; the last one counts")]
    #[diagnostic(
        code("xp::schema::duplicate-property"),
        severity(Warning),
        help("remove one of them")
    )]
    DuplicateProperty {
        name: String,
        #[label("first here")]
        first: SourceSpan,
        #[label("overridden here")]
        second: SourceSpan,
    },

    #[error("`{written}` is the {origin} name of `{canonical}`; xp writes it as `{canonical}`")]
    #[diagnostic(code("xp::schema::alias"), severity(Advice))]
    Alias {
        written: String,
        canonical: String,
        origin: &'static str,
        #[label("accepted as `{canonical}`")]
        span: SourceSpan,
    },

    #[error("type annotation `({annotation})` is ignored")]
    #[diagnostic(
        code("xp::schema::ignored-annotation"),
        severity(Warning),
        help("the schema decides each value's type; remove the annotation")
    )]
    IgnoredAnnotation {
        annotation: String,
        #[label("ignored")]
        span: SourceSpan,
    },
}
