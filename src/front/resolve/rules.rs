//! The cross-field rules of one run, each pointing at the values that break it.

use miette::SourceSpan;

use super::error::{RunError, diag};
use crate::diagnostic::Diag;
use crate::front::plan::steps;
use crate::front::source::SourceId;
use crate::front::tree::{Node, Origin};
use crate::spec::*;

/// The number of training examples of a synthetic dataset, known before any data is made.
pub fn synthetic_train_examples(data: &DataSource) -> Option<usize> {
    let split =
        |samples: usize, val: f64| samples - ((samples as f64 * val).round() as usize).min(samples);
    match data {
        DataSource::Regression {
            samples,
            validation_fraction,
            ..
        }
        | DataSource::Classification {
            samples,
            validation_fraction,
            ..
        }
        | DataSource::Copy {
            samples,
            validation_fraction,
            ..
        } => Some(split(*samples, *validation_fraction)),
        DataSource::ModularAddition {
            modulus,
            train_fraction,
        } => Some(((modulus * modulus) as f64 * train_fraction).round() as usize),
        _ => None,
    }
}

/// Tokens in one example of a synthetic sequence task.
pub fn synthetic_sequence_length(data: &DataSource) -> Option<usize> {
    match data {
        // a b = c
        DataSource::ModularAddition { .. } => Some(4),
        // x₁…xₙ SEP x₁…xₙ, less the last token (it is only a target)
        DataSource::Copy { length, .. } => Some(2 * length),
        _ => None,
    }
}

/// The cross-field rules of one run, pointing at the values that break them.
pub fn rules(experiment: &Node, spec: &RunSpec) -> Vec<Diag> {
    let run = Run { experiment, spec };
    let rules: [fn(&Run) -> Option<Diag>; 14] = [
        warmup_shorter_than_training,
        eval_within_training,
        checkpoint_within_training,
        early_stop_has_eval,
        plateau_has_eval,
        model_fits_data,
        heads_divide_dim,
        kv_heads_divide_heads,
        lora_rank_within_dim,
        context_holds_an_example,
        batch_within_data,
        batch_tokens_need_tokens,
        effective_batch_needs_auto,
        memory_is_a_size,
    ];
    rules.iter().filter_map(|rule| rule(&run)).collect()
}

/// One run as the rules see it: its spec, and the tree that wrote it, to point back at.
struct Run<'a> {
    experiment: &'a Node,
    spec: &'a RunSpec,
}

type At = (SourceId, SourceSpan);

impl Run<'_> {
    fn find(&self, path: &[&str]) -> Option<&Node> {
        path.iter()
            .try_fold(self.experiment, |n, name| n.child(name))
    }

    fn prop_at(&self, path: &[&str], name: &str) -> Option<At> {
        self.find(path)
            .and_then(|n| n.prop(name))
            .map(|e| (e.source, e.span))
    }

    fn node_at(&self, path: &[&str]) -> Option<At> {
        self.find(path).map(|n| (n.source, n.name_span))
    }

    fn arg_at(&self, path: &[&str]) -> Option<At> {
        self.find(path)
            .and_then(|n| n.arg(0))
            .map(|e| (e.source, e.span))
    }

    /// The experiment's name: where a rule points when the value has no place of its own.
    fn here(&self) -> At {
        (self.experiment.source, self.experiment.name_span)
    }

    fn steps(&self) -> Option<usize> {
        steps(self.spec)
    }

    fn sequence_data(&self) -> bool {
        matches!(
            self.spec.data.source,
            DataSource::ModularAddition { .. }
                | DataSource::Copy { .. }
                | DataSource::Text { .. }
                | DataSource::Jsonl { .. }
        )
    }

    /// The data's kind as written (`"modular-addition"`).
    fn data_kind(&self) -> String {
        self.find(&["data"])
            .and_then(|d| d.arg(0))
            .and_then(|a| a.as_str())
            .unwrap_or("")
            .to_owned()
    }

    fn model_at(&self) -> At {
        self.arg_at(&["model"])
            .or(self.node_at(&["model"]))
            .unwrap_or(self.here())
    }

    /// A setting of the model, or the model itself when the setting is not written.
    fn model_setting_at(&self, name: &str) -> At {
        self.arg_at(&["model", name]).unwrap_or(self.model_at())
    }

    /// The dimensions of a Llama model trained on sequences (the shape rules' subject; a
    /// model on the wrong data is reported by [`model_fits_data`] alone).
    fn llama_dims(&self) -> Option<&LlamaDims> {
        match &self.spec.model {
            Model::Llama(LlamaSource::Dims(l)) if self.sequence_data() => Some(l),
            _ => None,
        }
    }
}

fn warmup_shorter_than_training(run: &Run) -> Option<Diag> {
    let steps = run.steps()?;
    let Some(Warmup::Steps(warmup)) = run.spec.train.schedule.warmup else {
        return None;
    };
    if warmup < steps {
        return None;
    }
    let (source, span) = run
        .prop_at(&["train", "schedule"], "warmup-steps")
        .unwrap_or(run.here());
    Some(diag(
        source,
        RunError::WarmupTooLong {
            warmup,
            steps,
            span,
        },
    ))
}

// (log has no interval rule: it also logs at the last step, and its default of 10 must not
// fail a short run.)
fn eval_within_training(run: &Run) -> Option<Diag> {
    let every = run.spec.train.eval.map(|e| e.every);
    interval_within_training(
        run,
        "eval",
        every,
        "evaluation would run only once, at the end",
    )
}

fn checkpoint_within_training(run: &Run) -> Option<Diag> {
    let every = run.spec.train.checkpoint.map(|c| c.every);
    interval_within_training(
        run,
        "checkpoint",
        every,
        "no checkpoint would ever be written",
    )
}

fn interval_within_training(
    run: &Run,
    what: &'static str,
    every: Option<usize>,
    consequence: &str,
) -> Option<Diag> {
    let steps = run.steps()?;
    let every = every.filter(|&every| every > steps)?;
    let entry = run.find(&["train", what]).and_then(|n| n.prop("every"));
    let default = if entry.is_some_and(|e| e.origin == Origin::Default) {
        " (the default)"
    } else {
        ""
    };
    let (source, span) = entry
        .map(|e| (e.source, e.span))
        .or(run.node_at(&["train", what]))
        .unwrap_or(run.here());
    let help = format!("{consequence}; use an interval of at most {steps}");
    Some(diag(
        source,
        RunError::IntervalTooLong {
            what,
            every,
            steps,
            default,
            span,
            help,
        },
    ))
}

fn early_stop_has_eval(run: &Run) -> Option<Diag> {
    let train = &run.spec.train;
    if train.eval.is_some() || train.early_stop.is_none() {
        return None;
    }
    let (source, span) = run.node_at(&["train", "early-stop"]).unwrap_or(run.here());
    Some(diag(
        source,
        RunError::NeedsEval {
            what: "early-stop",
            span,
        },
    ))
}

fn plateau_has_eval(run: &Run) -> Option<Diag> {
    let train = &run.spec.train;
    if train.eval.is_some() || !matches!(train.schedule.kind, ScheduleKind::ReduceOnPlateau { .. })
    {
        return None;
    }
    let (source, span) = run.arg_at(&["train", "schedule"]).unwrap_or(run.here());
    Some(diag(
        source,
        RunError::NeedsEval {
            what: "reduce-on-plateau",
            span,
        },
    ))
}

fn model_fits_data(run: &Run) -> Option<Diag> {
    let (model, help) = match &run.spec.model {
        Model::Mlp(_) if run.sequence_data() => (
            "mlp",
            "token sequences need a sequence model: use `model \"llama\"`",
        ),
        Model::Llama(_) if !run.sequence_data() => ("llama", "tabular data needs `model \"mlp\"`"),
        _ => return None,
    };
    let (source, span) = run.model_at();
    Some(diag(
        source,
        RunError::ModelData {
            model: model.into(),
            data: run.data_kind(),
            span,
            help: help.into(),
        },
    ))
}

/// Heads split the model dimension evenly, into head sizes rotary embeddings can rotate.
fn heads_divide_dim(run: &Run) -> Option<Diag> {
    let l = run.llama_dims()?;
    let (message, help) = if l.dim % l.heads != 0 {
        (
            format!("{} heads do not divide dim {}", l.heads, l.dim),
            format!("use a head count that divides {}", l.dim),
        )
    } else if (l.dim / l.heads) % 2 != 0 {
        (
            format!(
                "head size {} (dim {} / {} heads) is odd",
                l.dim / l.heads,
                l.dim,
                l.heads
            ),
            "rotary embeddings rotate pairs of dimensions; choose dim / heads even".to_owned(),
        )
    } else {
        return None;
    };
    Some(model_shape(run, "heads", message, help))
}

fn kv_heads_divide_heads(run: &Run) -> Option<Diag> {
    let l = run.llama_dims()?;
    if l.heads % l.kv_heads == 0 {
        return None;
    }
    let help = format!(
        "grouped-query attention shares each key/value head among heads / kv-heads; use a divisor of {}",
        l.heads
    );
    let message = format!("{} kv-heads do not divide {} heads", l.kv_heads, l.heads);
    Some(model_shape(run, "kv-heads", message, help))
}

/// A model shape that does not fit, pointing at the model setting that breaks it.
fn model_shape(run: &Run, setting: &str, message: String, help: String) -> Diag {
    let (source, span) = run.model_setting_at(setting);
    diag(
        source,
        RunError::ModelShape {
            message,
            span,
            help,
        },
    )
}

fn lora_rank_within_dim(run: &Run) -> Option<Diag> {
    let l = run.llama_dims()?;
    let lora = run.spec.lora.as_ref().filter(|lora| lora.rank > l.dim)?;
    let (source, span) = run.prop_at(&["lora"], "rank").unwrap_or(run.here());
    Some(diag(
        source,
        RunError::LoraRank {
            rank: lora.rank,
            dim: l.dim,
            span,
        },
    ))
}

fn context_holds_an_example(run: &Run) -> Option<Diag> {
    let l = run.llama_dims()?;
    let needed = synthetic_sequence_length(&run.spec.data.source)?;
    if l.context >= needed {
        return None;
    }
    let (source, span) = run.model_setting_at("context");
    Some(diag(
        source,
        RunError::ContextTooShort {
            context: l.context,
            needed,
            data: run.data_kind(),
            span,
        },
    ))
}

fn batch_within_data(run: &Run) -> Option<Diag> {
    let batch = run.spec.train.examples_per_step()?;
    let examples = synthetic_train_examples(&run.spec.data.source)?;
    if batch <= examples {
        return None;
    }
    let setting = match run.spec.train.effective_batch {
        Some(_) => "effective-batch",
        None => "batch-size",
    };
    let (source, span) = run.arg_at(&["train", setting]).unwrap_or(run.here());
    Some(diag(
        source,
        RunError::BatchTooLarge {
            batch,
            examples,
            span,
        },
    ))
}

/// Token budgets cut sequences; tables have no tokens to count.
fn batch_tokens_need_tokens(run: &Run) -> Option<Diag> {
    run.spec.train.batch_tokens?;
    let tabular = matches!(
        run.spec.data.source,
        DataSource::Regression { .. } | DataSource::Classification { .. } | DataSource::Csv { .. }
    );
    if !tabular {
        return None;
    }
    let (source, span) = run.arg_at(&["train", "batch-tokens"]).unwrap_or(run.here());
    Some(diag(
        source,
        RunError::BatchTokensData {
            data: run.data_kind(),
            span,
        },
    ))
}

/// `effective-batch` sets the accumulation of an automatic batch size; a fixed batch size or a
/// token budget already decides the step's examples.
fn effective_batch_needs_auto(run: &Run) -> Option<Diag> {
    run.spec.train.effective_batch?;
    if run.spec.train.batching() == Batching::Examples(BatchSize::Auto) {
        return None;
    }
    let (source, span) = run
        .arg_at(&["train", "effective-batch"])
        .unwrap_or(run.here());
    Some(diag(source, RunError::EffectiveBatchAuto { span }))
}

/// `resources { memory }` is a size: Slurm is asked for it, and `batch-size "auto"` fits in it.
fn memory_is_a_size(run: &Run) -> Option<Diag> {
    let value = run.spec.resources.as_ref()?.memory.as_ref()?;
    if memory_bytes(value).is_some() {
        return None;
    }
    let (source, span) = run.arg_at(&["resources", "memory"]).unwrap_or(run.here());
    Some(diag(
        source,
        RunError::MemorySize {
            value: value.clone(),
            span,
        },
    ))
}
