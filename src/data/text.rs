//! Plain text for language modelling: the file's tokens (its bytes, or the tokens of a
//! `tokenizer.json`) and an end-of-text token, cut into non-overlapping windows whose targets
//! are the tokens shifted by one. The last window may be shorter; batches pad it.

use std::path::Path;

use tokenizers::Tokenizer;

use super::{DataError, Dataset, Examples, SourceFile, Task, read_text, split_checked};
use crate::spec::Validation;

/// The window length when the model has no context length of its own.
pub const DEFAULT_WINDOW: usize = 128;

/// Byte-level tokens: 0..=255 are the bytes, [`END_OF_TEXT`] ends a text.
pub const END_OF_TEXT: u32 = 256;
pub const BYTE_VOCAB: usize = 257;

/// Texts are encoded in pieces of about this many bytes, cut after a newline, so a large file
/// does not hold a tokenizer's per-token bookkeeping for all of it at once.
const PIECE: usize = 1 << 20;

/// Loads a text file cut into windows of `window` tokens (the model's context); the validation
/// split is a file of its own or the last windows (not random ones, which would leave
/// neighbours of the training windows in validation).
pub fn load(
    path: &Path,
    tokenizer: Option<&Path>,
    validation: &Validation,
    window: usize,
) -> Result<Dataset, DataError> {
    let tokens = match tokenizer {
        Some(tokenizer) => Tokens::hf(tokenizer)?,
        None => Tokens::Bytes,
    };
    let window = window.max(1);
    let all = windows(&tokens.encode(&SourceFile::read(path)?)?, window);
    let (train, validation) = match validation {
        Validation::Fraction(fraction) => split_checked(path, all, *fraction, None, "windows")?,
        Validation::File(other) => (
            all,
            windows(&tokens.encode(&SourceFile::read(other)?)?, window),
        ),
    };
    Ok(Dataset {
        task: Task::Language {
            vocab: tokens.vocab(),
        },
        train,
        validation,
        pad: tokens.pad(),
        truncated: 0,
        skipped: 0,
    })
}

/// Non-overlapping windows: inputs `tokens[s..s+w]`, targets `tokens[s+1..s+w+1]`.
pub(crate) fn windows(tokens: &[u32], window: usize) -> Examples {
    let predicted = tokens.len().saturating_sub(1);
    let mut inputs = Vec::with_capacity(predicted.div_ceil(window.max(1)));
    let mut targets = Vec::with_capacity(inputs.capacity());
    let mut start = 0;
    while start < predicted {
        let end = (start + window.max(1)).min(predicted);
        inputs.push(tokens[start..end].to_vec());
        targets.push(
            tokens[start + 1..end + 1]
                .iter()
                .map(|&t| i64::from(t))
                .collect(),
        );
        start = end;
    }
    Examples::Tokens { inputs, targets }
}

/// How text becomes tokens.
enum Tokens {
    Bytes,
    Hf {
        tokenizer: Box<Tokenizer>,
        path: String,
        end: Option<u32>,
        vocab: usize,
    },
}

impl Tokens {
    fn hf(path: &Path) -> Result<Tokens, DataError> {
        let tokenizer = parse_tokenizer(path)?;
        // Pretrained models were trained with their own end-of-text token, which the files
        // beside tokenizer.json declare.
        let dir = path.parent().unwrap_or(Path::new("."));
        let special = super::tokenizer::special_tokens(dir)?;
        let end = super::tokenizer::end_of_text(dir, &tokenizer, &special)?;
        let vocab = tokenizer.get_vocab_size(true);
        Ok(Tokens::Hf {
            tokenizer: Box::new(tokenizer),
            path: path.display().to_string(),
            end,
            vocab,
        })
    }

    fn vocab(&self) -> usize {
        match self {
            Tokens::Bytes => BYTE_VOCAB,
            Tokens::Hf { vocab, .. } => *vocab,
        }
    }

    fn pad(&self) -> u32 {
        match self {
            Tokens::Bytes => END_OF_TEXT,
            Tokens::Hf { end, .. } => end.unwrap_or(0),
        }
    }

    /// The tokens of a file, end-of-text included.
    fn encode(&self, file: &SourceFile) -> Result<Vec<u32>, DataError> {
        let (body, _) = file.body();
        if body.is_empty() {
            return Err(file.empty("text", None));
        }
        let tokens = match self {
            Tokens::Bytes => body.bytes().map(u32::from).chain([END_OF_TEXT]).collect(),
            Tokens::Hf {
                tokenizer,
                path,
                end,
                vocab,
            } => {
                let bad = |reason: String| DataError::BadTokenizer {
                    path: path.clone(),
                    reason,
                    source_code: None,
                    span: None,
                };
                let mut tokens = Vec::with_capacity(body.len() / 3);
                for piece in pieces(body, PIECE) {
                    let encoding = tokenizer
                        .encode_fast(piece, false)
                        .map_err(|e| bad(format!("cannot encode `{}`: {e}", file.path)))?;
                    tokens.extend_from_slice(encoding.get_ids());
                }
                tokens.extend(*end);
                if let Some(&id) = tokens.iter().find(|&&id| id as usize >= *vocab) {
                    return Err(bad(format!(
                        "it gives the token {id}, outside its vocabulary of {vocab}"
                    )));
                }
                tokens
            }
        };
        if tokens.len() < 2 {
            return Err(file.empty("tokens to predict: the text is a single token", None));
        }
        Ok(tokens)
    }
}

/// Reads a `tokenizer.json`; what is wrong with it is a diagnostic pointing into it.
pub(crate) fn parse_tokenizer(path: &Path) -> Result<Tokenizer, DataError> {
    let file = SourceFile::new(path.display().to_string(), read_text(path)?);
    // Valid JSON that is not a tokenizer.json (a vocab file, a config) is said so plainly
    // rather than as the parse error deep inside it.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&file.text)
        && value.get("model").is_none()
    {
        return Err(DataError::BadTokenizer {
            path: file.path.clone(),
            reason: "it is JSON, but not a tokenizer.json (it has no `model`)".into(),
            source_code: None,
            span: None,
        });
    }
    serde_json::from_str(&file.text).map_err(|e| {
        // Errors about a value that was read whole (an untagged enum) come at the end of
        // the document, where a label would point at nothing useful.
        let at = offset(&file.text, e.line(), e.column());
        let at_end = file.text[at..].trim().len() <= 1;
        let width = file.text[at..].chars().next().map_or(0, char::len_utf8);
        let span = (e.line() > 0 && !(e.is_data() && at_end)).then(|| (at, width).into());
        let reason = e.to_string();
        let reason = reason
            .rsplit_once(" at line ")
            .map_or(reason.as_str(), |(r, _)| r)
            .to_owned();
        DataError::BadTokenizer {
            path: file.path.clone(),
            reason,
            source_code: span.is_some().then(|| file.named()),
            span,
        }
    })
}

/// `text` in pieces of at least `size` bytes, each (but the last) ending with a newline.
fn pieces(text: &str, size: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = match rest.as_bytes().iter().skip(size).position(|&b| b == b'\n') {
            Some(i) => size + i + 1,
            None => rest.len(),
        };
        let (piece, after) = rest.split_at(cut);
        rest = after;
        Some(piece)
    })
}

/// The byte offset of serde_json's 1-based line and column, kept on a character of the text:
/// a position past the end of a line (where serde_json puts errors found after reading a
/// whole value) moves back to the line's last character.
fn offset(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let mut at = (start + column.saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    if at > start
        && text[at..]
            .chars()
            .next()
            .is_none_or(|c| c == '\n' || c == '\r')
    {
        at = text[..at].char_indices().next_back().map_or(at, |(i, _)| i);
    }
    at
}
