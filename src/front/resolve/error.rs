//! The resolution stage's diagnostics: one variant per cross-field rule's code.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use crate::diagnostic::Diag;
use crate::front::source::SourceId;

#[derive(Debug, Error, Diagnostic)]
pub enum RunError {
    #[error("warmup of {warmup} steps is not shorter than the {steps} training steps")]
    #[diagnostic(
        code("xp::run::warmup-too-long"),
        help("shorten the warmup or train longer")
    )]
    WarmupTooLong {
        warmup: usize,
        steps: usize,
        #[label("{warmup} warmup steps")]
        span: SourceSpan,
    },

    #[error("`{what}` every {every} steps{default} is longer than the {steps} training steps")]
    #[diagnostic(code("xp::run::interval-too-long"), severity(Warning))]
    IntervalTooLong {
        what: &'static str,
        every: usize,
        steps: usize,
        default: &'static str,
        #[label("every {every}")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("LoRA rank {rank} is larger than the model dimension {dim}")]
    #[diagnostic(
        code("xp::run::lora-rank"),
        help(
            "a rank above the layer width adds parameters without adding capacity; use at most {dim}"
        )
    )]
    LoraRank {
        rank: usize,
        dim: usize,
        #[label("rank {rank}")]
        span: SourceSpan,
    },

    #[error("{message}")]
    #[diagnostic(code("xp::run::model-shape"))]
    ModelShape {
        message: String,
        #[label("does not fit")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("the `{model}` model cannot train on `{data}` data")]
    #[diagnostic(code("xp::run::model-data"))]
    ModelData {
        model: String,
        data: String,
        #[label("this model")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("context {context} is shorter than the {needed} tokens of one `{data}` example")]
    #[diagnostic(
        code("xp::run::context-too-short"),
        help("set the model's context to at least {needed}")
    )]
    ContextTooShort {
        context: usize,
        needed: usize,
        data: String,
        #[label("context {context}")]
        span: SourceSpan,
    },

    #[error(
        "an optimizer step of {batch} examples is larger than the {examples} training examples"
    )]
    #[diagnostic(
        code("xp::run::batch-too-large"),
        help("lower batch-size × gradient-accumulation, or use more data")
    )]
    BatchTooLarge {
        batch: usize,
        examples: usize,
        #[label("{batch} examples per step")]
        span: SourceSpan,
    },

    #[error("`effective-batch` needs `batch-size \"auto\"`")]
    #[diagnostic(
        code("xp::run::effective-batch-auto"),
        help(
            "with a fixed batch size the step's examples are batch-size × gradient-accumulation; write `batch-size \"auto\"`, or remove `effective-batch`"
        )
    )]
    EffectiveBatchAuto {
        #[label("examples per step")]
        span: SourceSpan,
    },

    #[error("`memory \"{value}\"` is not a memory size")]
    #[diagnostic(
        code("xp::run::memory-size"),
        help(
            "a whole number with a unit: \"16G\", \"500M\", \"64K\" (B, K, M, G, T; a bare number is megabytes, as for Slurm)"
        )
    )]
    MemorySize {
        value: String,
        #[label("not a size")]
        span: SourceSpan,
    },

    #[error("`batch-tokens` needs token data, and `{data}` data is a table")]
    #[diagnostic(
        code("xp::run::batch-tokens-data"),
        help("token budgets are for jsonl and text data; give `batch-size` instead")
    )]
    BatchTokensData {
        data: String,
        #[label("a token budget")]
        span: SourceSpan,
    },

    #[error("`{what}` needs evaluations, and this run has no `eval`")]
    #[diagnostic(
        code("xp::run::needs-eval"),
        help("add `eval every=N` to `train`; {what} reads the objective at each evaluation")
    )]
    NeedsEval {
        what: &'static str,
        #[label("needs eval")]
        span: SourceSpan,
    },
}

pub(super) fn diag(source: SourceId, e: RunError) -> Diag {
    Diag {
        source: Some(source),
        inner: Box::new(e),
    }
}
