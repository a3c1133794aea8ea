//! Training data: every source becomes an in-memory [`Dataset`] of a train and a validation
//! split, batched into tensors. Synthetic tasks are generated from the seed; files are read
//! by their loaders, which report bad input as diagnostics naming file and line.

pub mod budget;
pub mod chat;
pub(crate) mod csv;
pub(crate) mod jsonl;
pub(crate) mod synthetic;
pub(crate) mod text;
pub mod tokenizer;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Result as CandleResult, Tensor};
use miette::{Diagnostic, NamedSource, SourceSpan};
use thiserror::Error;

use crate::ops::IGNORE_INDEX;
use crate::rng::Rng;
use crate::spec::{Data, DataSource};

/// What the model predicts, which decides the loss and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Real-valued targets; mean squared error.
    Regression { outputs: usize },
    /// One class per example; cross-entropy, accuracy.
    Classification { classes: usize },
    /// Next-token prediction; cross-entropy over the positions with a target, accuracy,
    /// perplexity.
    Language { vocab: usize },
}

/// The examples of one split.
#[derive(Debug, Clone, PartialEq)]
pub enum Examples {
    /// Rows of `width` features, and `outputs` targets (regression) or one class (classification).
    Tabular {
        features: Vec<f32>,
        width: usize,
        targets: Vec<f32>,
        classes: Vec<u32>,
    },
    /// Token sequences with per-position targets ([`IGNORE_INDEX`] where there is no loss).
    Tokens {
        inputs: Vec<Vec<u32>>,
        targets: Vec<Vec<i64>>,
    },
}

impl Examples {
    pub fn len(&self) -> usize {
        match self {
            Examples::Tabular {
                features, width, ..
            } => features.len() / (*width).max(1),
            Examples::Tokens { inputs, .. } => inputs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The longest sequence (0 for tabular data).
    pub fn max_len(&self) -> usize {
        match self {
            Examples::Tabular { .. } => 0,
            Examples::Tokens { inputs, .. } => inputs.iter().map(Vec::len).max().unwrap_or(0),
        }
    }

    /// Each example's tokens (1 for a row of a table).
    pub fn lengths(&self) -> Vec<usize> {
        match self {
            Examples::Tabular { .. } => vec![1; self.len()],
            Examples::Tokens { inputs, .. } => inputs.iter().map(Vec::len).collect(),
        }
    }

    /// The examples at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Examples {
        match self {
            Examples::Tabular {
                features,
                width,
                targets,
                classes,
            } => {
                let outputs = if classes.is_empty() {
                    targets.len() / self.len().max(1)
                } else {
                    0
                };
                Examples::Tabular {
                    features: indices
                        .iter()
                        .flat_map(|&i| features[i * width..(i + 1) * width].iter().copied())
                        .collect(),
                    width: *width,
                    targets: indices
                        .iter()
                        .flat_map(|&i| targets[i * outputs..(i + 1) * outputs].iter().copied())
                        .collect(),
                    classes: if classes.is_empty() {
                        Vec::new()
                    } else {
                        indices.iter().map(|&i| classes[i]).collect()
                    },
                }
            }
            Examples::Tokens { inputs, targets } => Examples::Tokens {
                inputs: indices.iter().map(|&i| inputs[i].clone()).collect(),
                targets: indices.iter().map(|&i| targets[i].clone()).collect(),
            },
        }
    }
}

/// A dataset ready for training.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub task: Task,
    pub train: Examples,
    pub validation: Examples,
    /// Token used to pad sequences in a batch (its targets are ignored).
    pub pad: u32,
    /// Examples cut to fit the model's context (jsonl); those cut so far that no target is
    /// left are dropped, and counted here too. The training loop should report a nonzero count.
    pub truncated: usize,
    /// Conversations left out because the model's chat template does not render them turn by
    /// turn (jsonl), so their assistant turns cannot be found. To be reported when nonzero.
    pub skipped: usize,
}

/// One batch as tensors: inputs (B, F) f32 or (B, T) u32, targets (B, O) f32, (B,) i64 or
/// (B, T) i64, and the number of targets that count towards the loss.
#[derive(Debug, Clone)]
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
    pub counted: usize,
    /// Tokens in the batch (inputs, padding excluded), for throughput.
    pub tokens: usize,
}

impl Dataset {
    /// Builds the batch of `indices` from a split; sequences are padded to the longest.
    pub fn batch(
        &self,
        split: &Examples,
        indices: &[usize],
        device: &Device,
    ) -> CandleResult<Batch> {
        let n = indices.len();
        match split {
            Examples::Tabular {
                features,
                width,
                targets,
                classes,
            } => {
                let x: Vec<f32> = indices
                    .iter()
                    .flat_map(|&i| features[i * width..(i + 1) * width].iter().copied())
                    .collect();
                let inputs = Tensor::from_vec(x, (n, *width), device)?;
                let (targets, counted) = match self.task {
                    Task::Classification { .. } => {
                        let y: Vec<i64> = indices.iter().map(|&i| i64::from(classes[i])).collect();
                        (Tensor::from_vec(y, n, device)?, n)
                    }
                    _ => {
                        let outputs = targets.len() / split.len().max(1);
                        let y: Vec<f32> = indices
                            .iter()
                            .flat_map(|&i| targets[i * outputs..(i + 1) * outputs].iter().copied())
                            .collect();
                        (Tensor::from_vec(y, (n, outputs), device)?, n * outputs)
                    }
                };
                Ok(Batch {
                    inputs,
                    targets,
                    counted,
                    tokens: n * width,
                })
            }
            Examples::Tokens { inputs, targets } => {
                let t = indices.iter().map(|&i| inputs[i].len()).max().unwrap_or(0);
                let mut x = Vec::with_capacity(n * t);
                let mut y = Vec::with_capacity(n * t);
                let mut tokens = 0;
                for &i in indices {
                    let (row, target) = (&inputs[i], &targets[i]);
                    tokens += row.len();
                    x.extend(
                        row.iter()
                            .copied()
                            .chain(std::iter::repeat_n(self.pad, t - row.len())),
                    );
                    y.extend(
                        target
                            .iter()
                            .copied()
                            .chain(std::iter::repeat_n(IGNORE_INDEX, t - target.len())),
                    );
                }
                let counted = y.iter().filter(|&&v| v != IGNORE_INDEX).count();
                Ok(Batch {
                    inputs: Tensor::from_vec(x, (n, t), device)?,
                    targets: Tensor::from_vec(y, (n, t), device)?,
                    counted,
                    tokens,
                })
            }
        }
    }

    /// Input features of tabular data, or the sequence length bound of token data.
    pub fn input_width(&self) -> usize {
        match &self.train {
            Examples::Tabular { width, .. } => *width,
            Examples::Tokens { .. } => self.train.max_len().max(self.validation.max_len()),
        }
    }
}

/// Splits examples into train and validation by a fraction: shuffled by `rng` when given,
/// else the last rows are the validation split.
pub fn split(
    all: Examples,
    validation_fraction: f64,
    rng: Option<&mut Rng>,
) -> (Examples, Examples) {
    let n = all.len();
    let n_val = ((n as f64 * validation_fraction).round() as usize).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(rng) = rng {
        rng.shuffle(&mut order);
    }
    let (train, val) = order.split_at(n - n_val);
    (all.select(train), all.select(val))
}

/// Splits by a fraction as [`split`] does, and says so when either side comes out empty
/// (`unit` names the examples: "rows", "windows", "examples").
pub(crate) fn split_checked(
    path: &Path,
    all: Examples,
    validation_fraction: f64,
    rng: Option<&mut Rng>,
    unit: &str,
) -> Result<(Examples, Examples), DataError> {
    let n = all.len();
    let (train, validation) = split(all, validation_fraction, rng);
    let help =
        Some("use a larger `validation-fraction`, more data, or a `validation` file".to_owned());
    if validation.is_empty() && validation_fraction > 0.0 {
        return Err(DataError::Empty {
            path: path.display().to_string(),
            what: format!("validation {unit}: {validation_fraction} of {n} {unit} rounds to none"),
            help,
        });
    }
    if train.is_empty() {
        return Err(DataError::Empty {
            path: path.display().to_string(),
            what: format!(
                "training {unit} left after holding out {} of {n} for validation",
                validation.len()
            ),
            help,
        });
    }
    Ok((train, validation))
}

/// Why data could not be loaded: always names the file, and the line where there is one.
#[derive(Debug, Error, Diagnostic)]
pub enum DataError {
    #[error("cannot read `{path}`: {reason}")]
    #[diagnostic(
        code("xp::data::unreadable"),
        help("paths in an experiment are relative to the file that names them")
    )]
    Unreadable { path: String, reason: String },

    /// Bytes that are not UTF-8, shown where the first one is (the text around it as it reads
    /// with the bad bytes replaced).
    #[error("{path}:{line}: not UTF-8 text: byte {byte} is 0x{value:02x}")]
    #[diagnostic(
        code("xp::data::not-utf8"),
        help(
            "data files are read as UTF-8; convert this one, e.g. `iconv -f latin1 -t utf-8 FILE > NEW`"
        )
    )]
    NotUtf8 {
        path: String,
        line: usize,
        byte: usize,
        value: u8,
        #[source_code]
        source_code: Source,
        #[label("this byte")]
        span: SourceSpan,
    },

    #[error("{path}:{line}: {message}")]
    #[diagnostic(code("xp::data::bad-row"))]
    BadRow {
        path: String,
        line: usize,
        message: String,
        #[source_code]
        source_code: Source,
        #[label("here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{path}` has no column `{column}`{context}")]
    #[diagnostic(code("xp::data::unknown-column"))]
    UnknownColumn {
        path: String,
        column: String,
        /// Why the column is looked for there, when it is not plain (", which … has").
        context: String,
        #[source_code]
        source_code: Source,
        #[label("the header")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`{path}` has no {what}")]
    #[diagnostic(code("xp::data::empty"))]
    Empty {
        path: String,
        what: String,
        #[help]
        help: Option<String>,
    },

    /// A column of the header that cannot be used as asked: named twice, or both target and feature.
    #[error("{path}:{line}: {message}")]
    #[diagnostic(code("xp::data::bad-column"))]
    BadColumn {
        path: String,
        line: usize,
        message: String,
        #[source_code]
        source_code: Source,
        #[label("this column")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{path}` has a single class in column `{column}`: `{class}`")]
    #[diagnostic(
        code("xp::data::one-class"),
        help(
            "classification needs at least two classes; for real-valued targets use task=\"regression\""
        )
    )]
    OneClass {
        path: String,
        column: String,
        class: String,
        #[source_code]
        source_code: Source,
        #[label("the target column")]
        span: SourceSpan,
    },

    #[error("cannot use the tokenizer `{path}`: {reason}")]
    #[diagnostic(
        code("xp::data::bad-tokenizer"),
        help(
            "the tokenizer must be a Hugging Face `tokenizer.json`; without one, text is read as bytes"
        )
    )]
    BadTokenizer {
        path: String,
        reason: String,
        #[source_code]
        source_code: Option<Source>,
        #[label("here")]
        span: Option<SourceSpan>,
    },

    #[error("packing `{path}` needs the model's context length")]
    #[diagnostic(
        code("xp::data::packing-needs-context"),
        help(
            "packing cuts the examples into windows of the context length; use a model with a `context`, or packing=#false"
        )
    )]
    PackingNeedsContext { path: String },

    #[error("the chat template of `{path}` does not compile: {message}")]
    #[diagnostic(
        code("xp::data::chat-template"),
        help(
            "xp renders chat templates with minijinja as transformers does with Jinja2; fix the template, or write prompt/response data"
        )
    )]
    ChatTemplate {
        path: String,
        message: String,
        #[source_code]
        source_code: Option<Source>,
        #[label("here")]
        span: Option<SourceSpan>,
    },

    /// Several problems in one file, reported together.
    #[error("`{path}` has {count} problems")]
    #[diagnostic(code("xp::data::many"))]
    Many {
        path: String,
        count: usize,
        #[related]
        errors: Vec<DataError>,
        #[help]
        help: Option<String>,
    },
}

/// Loads (or generates) the data of a run; `run_seed` is used unless the data has its own.
/// `context` is the model's context length where it has one: text is cut into windows of it
/// (128 tokens without one), jsonl examples are truncated to it and packed into it.
pub fn load(data: &Data, run_seed: u64, context: Option<usize>) -> Result<Dataset, DataError> {
    load_for(
        data,
        run_seed,
        &ModelText {
            context,
            tokenizer: None,
        },
    )
}

/// What a model brings to the data it reads: its context length, and for an HF model
/// directory its tokenizer (with special tokens, chat template and the model's vocabulary).
#[derive(Debug, Clone, Default)]
pub struct ModelText {
    pub context: Option<usize>,
    pub tokenizer: Option<Arc<tokenizer::HfTokenizer>>,
}

/// Loads the data of a run for its model, as [`load`]; with the model's tokenizer, text and
/// instruction data are tokenized as transformers tokenizes them for that model (a `text`
/// source's own `tokenizer` wins).
pub fn load_for(data: &Data, run_seed: u64, model: &ModelText) -> Result<Dataset, DataError> {
    let context = model.context;
    let seed = data.seed.unwrap_or(run_seed);
    Ok(match &data.source {
        DataSource::Regression {
            features,
            samples,
            noise,
            validation_fraction,
        } => synthetic::regression(*features, *samples, *noise, *validation_fraction, seed),
        DataSource::Classification {
            features,
            classes,
            samples,
            validation_fraction,
        } => synthetic::classification(*features, *classes, *samples, *validation_fraction, seed),
        DataSource::ModularAddition {
            modulus,
            train_fraction,
        } => synthetic::modular_addition(*modulus, *train_fraction, seed),
        DataSource::Copy {
            length,
            vocab,
            samples,
            validation_fraction,
        } => synthetic::copy(*length, *vocab, *samples, *validation_fraction, seed),
        DataSource::Csv {
            path,
            target,
            task,
            validation,
            shuffle,
            features,
        } => csv::load(
            path,
            target,
            *task,
            validation,
            *shuffle,
            features.as_deref(),
            seed,
        )?,
        DataSource::Text {
            path,
            tokenizer,
            validation,
        } => {
            let model_tokenizer = model
                .tokenizer
                .as_ref()
                .map(|t| std::path::PathBuf::from(&t.path));
            text::load(
                path,
                tokenizer.as_deref().or(model_tokenizer.as_deref()),
                validation,
                context.unwrap_or(text::DEFAULT_WINDOW),
            )?
        }
        DataSource::Jsonl {
            path,
            prompt_field,
            response_field,
            messages_field,
            validation,
            shuffle,
            packing,
        } => {
            let fields = jsonl::Fields {
                prompt: prompt_field,
                response: response_field,
                messages: messages_field,
            };
            let options = jsonl::JsonlOptions {
                shuffle: *shuffle,
                packing: *packing,
                context,
                seed,
                tokenizer: model.tokenizer.as_deref(),
            };
            jsonl::load(path, fields, validation, &options)?
        }
    })
}

/// Reads a data file as text, or says why not. Only regular files are read (a FIFO would
/// block, a device never end), and none larger than this machine's memory.
pub fn read_text(path: &Path) -> Result<Arc<String>, DataError> {
    let unreadable = |reason: String| DataError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let limit = crate::train::memory::physical_memory().unwrap_or(u64::MAX);
    let bytes =
        crate::front::source::read_bytes(path, limit).map_err(|e| unreadable(e.reason()))?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Arc::new(text)),
        Err(e) => {
            let bytes = e.as_bytes();
            let at = e.utf8_error().valid_up_to();
            let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
            // Up to the first bad byte the lossy text has the file's offsets; the bad bytes
            // become one U+FFFD there.
            let text = String::from_utf8_lossy(bytes).into_owned();
            let path = path.display().to_string();
            Err(DataError::NotUtf8 {
                source_code: Arc::new(NamedSource::new(&path, Arc::new(text))),
                path,
                line,
                byte: at,
                value: bytes.get(at).copied().unwrap_or(0),
                span: (at, '\u{fffd}'.len_utf8()).into(),
            })
        }
    }
}

/// A file's text as diagnostics show it; shared, so that an error stays small.
pub type Source = Arc<NamedSource<Arc<String>>>;

/// A data file's text, kept for diagnostics that point into it.
pub(crate) struct SourceFile {
    pub path: String,
    pub text: Arc<String>,
    named: Source,
}

impl SourceFile {
    pub fn new(path: String, text: Arc<String>) -> SourceFile {
        let named = Arc::new(NamedSource::new(&path, Arc::clone(&text)));
        SourceFile { path, text, named }
    }

    pub fn read(path: &Path) -> Result<SourceFile, DataError> {
        Ok(SourceFile::new(
            path.display().to_string(),
            read_text(path)?,
        ))
    }

    pub fn named(&self) -> Source {
        Arc::clone(&self.named)
    }

    /// The text after a UTF-8 byte order mark, and the mark's length.
    pub fn body(&self) -> (&str, usize) {
        match self.text.strip_prefix('\u{feff}') {
            Some(rest) => (rest, '\u{feff}'.len_utf8()),
            None => (&self.text, 0),
        }
    }

    pub fn bad_row(
        &self,
        line: usize,
        span: Range<usize>,
        message: String,
        help: Option<String>,
    ) -> DataError {
        DataError::BadRow {
            path: self.path.clone(),
            line,
            message,
            source_code: self.named(),
            span: span.into(),
            help,
        }
    }

    pub fn empty(&self, what: &str, help: Option<String>) -> DataError {
        DataError::Empty {
            path: self.path.clone(),
            what: what.to_owned(),
            help,
        }
    }
}

/// How many problems of one file are shown; the rest are only counted.
const SHOWN: usize = 20;

/// Collects the problems of one file so all of them are reported at once.
pub(crate) struct Problems {
    path: String,
    shown: Vec<DataError>,
    count: usize,
}

impl Problems {
    pub fn new(path: &str) -> Problems {
        Problems {
            path: path.to_owned(),
            shown: Vec::new(),
            count: 0,
        }
    }

    pub fn push(&mut self, error: DataError) {
        self.count += 1;
        if self.shown.len() < SHOWN {
            self.shown.push(error);
        }
    }

    /// Ok when there were none; the problem itself when there was one.
    pub fn finish(mut self) -> Result<(), DataError> {
        if self.count == 0 {
            return Ok(());
        }
        if self.count == 1
            && let Some(only) = self.shown.pop()
        {
            return Err(only);
        }
        Err(DataError::Many {
            help: (self.count > SHOWN).then(|| format!("the first {SHOWN} are shown")),
            path: self.path,
            count: self.count,
            errors: self.shown,
        })
    }
}
