//! Instruction data, one JSON object a line, with the loss only on what the model should
//! produce: as byte-level tokens (0..=255 the bytes, 256 the end of text), or with an HF
//! model's tokenizer.
//!
//! A `prompt`/`response` line is the text prompt + response and then the end token, learning
//! the response and the end. A `messages` line renders every `{role, content}` message as
//! `{role}: {content}\n`, then the end token, learning the content and newline of `assistant`
//! messages and the end. With an HF tokenizer, the text is tokenized as `tokenizer(text)` does
//! (a BOS where the tokenizer adds one) and a token is learned when it overlaps learned text;
//! `messages` are rendered by the model's chat template where it has one (as
//! `apply_chat_template`, no end token added), learning what its `{% generation %}` blocks
//! write, or without them each assistant turn through the end of its turn (super::chat); a
//! conversation the template cannot split into turns is left out and counted
//! ([`Dataset::skipped`]). Inputs are the sequence without its last token, targets without
//! its first, with [`IGNORE_INDEX`] where the target is not learned.

use std::ops::Range;
use std::path::Path;

use serde_json::{Map, Value};

use super::chat::TurnError;
use super::text::{BYTE_VOCAB, END_OF_TEXT};
use super::tokenizer::HfTokenizer;
use super::{DataError, Dataset, Examples, Problems, SourceFile, Task, split_checked};
use crate::diagnostic::plural;
use crate::diagnostic::suggest::{list, suggest};
use crate::ops::IGNORE_INDEX;
use crate::rng::Rng;
use crate::spec::Validation;

/// The names of the fields read from each line.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub prompt: &'a str,
    pub response: &'a str,
    pub messages: &'a str,
}

/// How a jsonl file is read.
#[derive(Debug, Clone, Copy)]
pub struct JsonlOptions<'a> {
    /// Shuffle before taking a validation fraction.
    pub shuffle: bool,
    pub packing: bool,
    /// The model's context length.
    pub context: Option<usize>,
    pub seed: u64,
    /// The model's tokenizer; `None`: bytes.
    pub tokenizer: Option<&'a HfTokenizer>,
}

/// Loads a jsonl file. With a `context`, examples longer than it are truncated (and counted in
/// [`Dataset::truncated`]); with `packing`, the training examples are instead concatenated and
/// cut into windows of `context` tokens. The validation split is a file of its own or a
/// fraction of the lines (shuffled when `shuffle` is set, else the last lines).
pub fn load(
    path: &Path,
    fields: Fields<'_>,
    validation: &Validation,
    options: &JsonlOptions<'_>,
) -> Result<Dataset, DataError> {
    if options.packing && options.context.is_none() {
        return Err(DataError::PackingNeedsContext {
            path: path.display().to_string(),
        });
    }
    let context = options.context.map(|c| c.max(1));
    let tokenizer = options.tokenizer;
    let mut skipped = 0;
    let all = read(&SourceFile::read(path)?, fields, tokenizer, &mut skipped)?;
    let (train, validation) = match validation {
        Validation::Fraction(fraction) => {
            let mut rng = options
                .shuffle
                .then(|| Rng::stream(options.seed, "data/jsonl"));
            split_checked(path, all, *fraction, rng.as_mut(), "examples")?
        }
        Validation::File(other) => (
            all,
            read(&SourceFile::read(other)?, fields, tokenizer, &mut skipped)?,
        ),
    };
    let mut truncated = 0;
    let had_validation = !validation.is_empty();
    let train = match context {
        Some(context) if options.packing => pack(train, context),
        _ => truncate(train, context, &mut truncated),
    };
    let validation = truncate(validation, context, &mut truncated);
    for (split, examples, had) in [
        ("training", &train, true),
        ("validation", &validation, had_validation),
    ] {
        if let (true, true, Some(context)) = (had, examples.is_empty(), context) {
            return Err(DataError::Empty {
                path: path.display().to_string(),
                what: format!(
                    "{split} examples with a response within the context of {context} tokens"
                ),
                help: Some("shorten the prompts or use a model with a longer context".into()),
            });
        }
    }
    Ok(Dataset {
        task: Task::Language {
            vocab: tokenizer.map_or(BYTE_VOCAB, |t| t.vocab),
        },
        train,
        validation,
        pad: tokenizer.map_or(END_OF_TEXT, |t| t.pad),
        truncated,
        skipped,
    })
}

/// Every line's example, or every problem of the file. Conversations whose assistant turns
/// the chat template cannot tell apart are left out and counted in `skipped`.
fn read(
    file: &SourceFile,
    fields: Fields<'_>,
    tokenizer: Option<&HfTokenizer>,
    skipped: &mut usize,
) -> Result<Examples, DataError> {
    let mut unsplit = 0;
    let (body, bom) = file.body();
    let mut problems = Problems::new(&file.path);
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    let mut start = bom;
    for (i, raw) in body.split('\n').enumerate() {
        let line = Line {
            text: raw.strip_suffix('\r').unwrap_or(raw),
            start,
            number: i + 1,
        };
        start += raw.len() + 1;
        if line.text.trim().is_empty() {
            continue;
        }
        let example = match line.sequence(file, fields, tokenizer) {
            Ok(Some(text)) => line.tokens(file, &text, tokenizer),
            Ok(None) => {
                unsplit += 1;
                continue;
            }
            Err(e) => Err(e),
        };
        match example {
            Ok((tokens, learn)) => {
                inputs.push(tokens[..tokens.len() - 1].to_vec());
                targets.push(
                    tokens
                        .iter()
                        .zip(&learn)
                        .skip(1)
                        .map(|(&t, &l)| if l { i64::from(t) } else { IGNORE_INDEX })
                        .collect(),
                );
            }
            Err(e) => problems.push(e),
        }
    }
    problems.finish()?;
    *skipped += unsplit;
    if inputs.is_empty() && unsplit > 0 {
        return Err(file.empty(
            &format!(
                "examples its chat template can split into turns ({} left out)",
                plural(unsplit, "conversation")
            ),
            Some(SPLIT_HELP.into()),
        ));
    }
    if inputs.is_empty() {
        let help = format!(
            "one JSON object a line, e.g. {{\"{}\": \"2+2=\", \"{}\": \"4\"}}",
            fields.prompt, fields.response
        );
        return Err(file.empty("examples", Some(help)));
    }
    Ok(Examples::Tokens { inputs, targets })
}

/// How to give xp conversations whose turns a template hides.
pub const SPLIT_HELP: &str = "a chat template with `{% generation %}` blocks marks the assistant turns itself (as TRL's training templates do); or write the conversations as prompt/response lines";

/// The text of one example and the byte ranges of it that are learned.
struct Text {
    text: String,
    learn: Vec<Range<usize>>,
    /// Rendered by a chat template, which writes its own special tokens: encoded without the
    /// tokenizer's, and without an end token added.
    templated: bool,
}

/// One line of the file: its text without the line ending, where it starts, its number.
struct Line<'a> {
    text: &'a str,
    start: usize,
    number: usize,
}

impl Line<'_> {
    /// The tokens of a line's text, and for each whether it is learned as a target.
    fn tokens(
        &self,
        file: &SourceFile,
        text: &Text,
        tokenizer: Option<&HfTokenizer>,
    ) -> Result<(Vec<u32>, Vec<bool>), DataError> {
        let learned = |i: usize| text.learn.iter().any(|r| r.contains(&i));
        let (mut tokens, mut learn) = match tokenizer {
            None => (
                text.text.bytes().map(u32::from).collect::<Vec<_>>(),
                (0..text.text.len()).map(learned).collect::<Vec<_>>(),
            ),
            Some(t) => t
                .encode(&text.text, &text.learn, !text.templated)
                .map_err(|message| self.error(file, self.whole(), message, None))?,
        };
        let end = match tokenizer {
            None => Some(END_OF_TEXT),
            Some(t) => t.eos,
        };
        if let (false, Some(end)) = (text.templated, end)
            && tokens.last() != Some(&end)
        {
            tokens.push(end);
            learn.push(true);
        }
        if !learn.iter().skip(1).any(|&l| l) {
            return Err(self.error(
                file,
                self.whole(),
                "no token of this example is learned".into(),
                Some("the loss is on the response, or on what `assistant` messages say".into()),
            ));
        }
        Ok((tokens, learn))
    }

    /// The line's text and what of it is learned: a nonempty response, or at least one
    /// assistant message; `None` for a conversation the chat template cannot split into turns.
    fn sequence(
        &self,
        file: &SourceFile,
        fields: Fields<'_>,
        tokenizer: Option<&HfTokenizer>,
    ) -> Result<Option<Text>, DataError> {
        let value: Value = serde_json::from_str(self.text).map_err(|e| {
            let mut at = e.column().saturating_sub(1).min(self.text.len());
            while !self.text.is_char_boundary(at) {
                at -= 1;
            }
            let width = self.text[at..].chars().next().map_or(0, char::len_utf8);
            let reason = e.to_string();
            let reason = reason
                .rsplit_once(" at line ")
                .map_or(reason.as_str(), |(r, _)| r);
            self.error(
                file,
                self.start + at..self.start + at + width,
                format!("not valid JSON: {reason}"),
                None,
            )
        })?;
        let Value::Object(object) = value else {
            let message = format!("expected a JSON object, found {}", kind(&value));
            return Err(self.error(file, self.whole(), message, Some(self.expected(fields))));
        };
        if object.contains_key(fields.messages) {
            if let Some(other) = [fields.prompt, fields.response]
                .into_iter()
                .find(|k| object.contains_key(*k))
            {
                let message = format!("this line has both `{}` and `{other}`", fields.messages);
                return Err(self.error(
                    file,
                    self.key(other),
                    message,
                    Some(self.expected(fields)),
                ));
            }
            return self.messages(file, fields.messages, &object[fields.messages], tokenizer);
        }
        let (prompt, response) = match (object.get(fields.prompt), object.get(fields.response)) {
            (Some(prompt), Some(response)) => (prompt, response),
            (prompt, response) => {
                let missing: Vec<&str> = [(fields.prompt, prompt), (fields.response, response)]
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(k, _)| *k)
                    .collect();
                let message = match missing.as_slice() {
                    [one] => format!("no field `{one}`"),
                    _ => format!(
                        "no fields `{}` and `{}`, nor `{}`",
                        fields.prompt, fields.response, fields.messages
                    ),
                };
                let wanted = missing
                    .iter()
                    .copied()
                    .chain((missing.len() == 2).then_some(fields.messages));
                return Err(self.missing(file, &object, wanted, message, fields));
            }
        };
        let prompt = self.string(file, fields.prompt, prompt)?;
        let response = self.string(file, fields.response, response)?;
        if response.is_empty() {
            let message = format!("the `{}` is empty: nothing to learn", fields.response);
            return Err(self.error(file, self.key(fields.response), message, None));
        }
        let response_bytes = prompt.len()..prompt.len() + response.len();
        Ok(Some(Text {
            text: format!("{prompt}{response}"),
            learn: vec![response_bytes],
            templated: false,
        }))
    }

    /// A `messages` list rendered by the chat template, or as `{role}: {content}\n` lines;
    /// `None` when the template cannot split it into turns.
    fn messages(
        &self,
        file: &SourceFile,
        name: &str,
        value: &Value,
        tokenizer: Option<&HfTokenizer>,
    ) -> Result<Option<Text>, DataError> {
        let span = self.key(name);
        let Value::Array(items) = value else {
            let message = format!(
                "`{name}` must be a list of {{role, content}} objects, found {}",
                kind(value)
            );
            return Err(self.error(file, span, message, None));
        };
        let (mut text, mut learn) = (String::new(), Vec::new());
        let mut learned = 0;
        for (i, item) in items.iter().enumerate() {
            let n = i + 1;
            let Value::Object(message) = item else {
                let text = format!(
                    "message {n} of `{name}` must be an object with `role` and `content`, found {}",
                    kind(item)
                );
                return Err(self.error(file, span, text, None));
            };
            let field = |key: &str| -> Result<&str, DataError> {
                match message.get(key) {
                    Some(Value::String(s)) => Ok(s),
                    Some(other) => {
                        let text = format!(
                            "`{key}` of message {n} must be a string, found {}",
                            kind(other)
                        );
                        Err(self.error(file, span.clone(), text, None))
                    }
                    None => {
                        let close = suggest(key, message.keys().map(String::as_str));
                        let help = close.map(|c| format!("did you mean `{key}` for `{c}`?"));
                        Err(self.error(
                            file,
                            span.clone(),
                            format!("message {n} of `{name}` has no `{key}`"),
                            help,
                        ))
                    }
                }
            };
            let (role, content) = (field("role")?, field("content")?);
            let assistant = role == "assistant";
            text.push_str(role);
            text.push_str(": ");
            let at = text.len();
            text.push_str(content);
            text.push('\n');
            if assistant {
                learn.push(at..text.len());
            }
            learned += if assistant { content.len() } else { 0 };
        }
        if learned == 0 {
            let message = "no `assistant` message with content: nothing to learn".to_owned();
            return Err(self.error(
                file,
                span,
                message,
                Some("the loss is on what `assistant` messages say".into()),
            ));
        }
        if let Some(chat) = tokenizer.and_then(|t| t.chat.as_ref()) {
            return match chat.render_turns(items) {
                Ok((text, learn)) => Ok(Some(Text {
                    text,
                    learn,
                    templated: true,
                })),
                Err(TurnError::Unsplit { .. }) => Ok(None),
                Err(TurnError::Render(message)) => Err(self.error(
                    file,
                    span,
                    format!("the chat template fails on these messages: {message}"),
                    None,
                )),
            };
        }
        Ok(Some(Text {
            text,
            learn,
            templated: false,
        }))
    }

    fn string<'v>(
        &self,
        file: &SourceFile,
        name: &str,
        value: &'v Value,
    ) -> Result<&'v str, DataError> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(self.error(
                file,
                self.key(name),
                format!("`{name}` must be a string, found {}", kind(other)),
                None,
            )),
        }
    }

    /// Missing fields, pointing at a misspelt key where there is one.
    fn missing<'a>(
        &self,
        file: &SourceFile,
        object: &Map<String, Value>,
        wanted: impl Iterator<Item = &'a str>,
        message: String,
        fields: Fields<'_>,
    ) -> DataError {
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        let known = [fields.prompt, fields.response, fields.messages];
        let unknown = keys.iter().copied().filter(|k| !known.contains(k));
        for want in wanted {
            if let Some(close) = suggest(want, unknown.clone()) {
                return self.error(
                    file,
                    self.key(close),
                    message,
                    Some(format!("did you mean `{want}` for `{close}`?")),
                );
            }
        }
        let help = format!(
            "{}; this line has {}",
            self.expected(fields),
            if keys.is_empty() {
                "no fields".into()
            } else {
                list(keys)
            }
        );
        self.error(file, self.whole(), message, Some(help))
    }

    fn expected(&self, fields: Fields<'_>) -> String {
        format!(
            "each line needs `{}` and `{}` strings, or a `{}` list of {{role, content}} (field names are set by prompt-field, response-field and messages-field)",
            fields.prompt, fields.response, fields.messages
        )
    }

    fn error(
        &self,
        file: &SourceFile,
        span: Range<usize>,
        message: String,
        help: Option<String>,
    ) -> DataError {
        file.bad_row(self.number, span, message, help)
    }

    fn whole(&self) -> Range<usize> {
        self.start..self.start + self.text.len()
    }

    /// Where the key `name` is written (`"name":`), or the whole line.
    fn key(&self, name: &str) -> Range<usize> {
        let quoted = serde_json::to_string(name).unwrap_or_else(|_| format!("\"{name}\""));
        let mut from = 0;
        while let Some(i) = self.text[from..].find(&quoted) {
            let (at, after) = (from + i, from + i + quoted.len());
            if self.text[after..].trim_start().starts_with(':') && !self.text[..at].ends_with('\\')
            {
                return self.start + at..self.start + after;
            }
            from = after;
        }
        self.whole()
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn parts(examples: Examples) -> (Vec<Vec<u32>>, Vec<Vec<i64>>) {
    match examples {
        Examples::Tokens { inputs, targets } => (inputs, targets),
        Examples::Tabular { .. } => (Vec::new(), Vec::new()),
    }
}

/// Examples cut to `context` tokens; those left with nothing to learn are dropped. Both are
/// counted in `truncated`.
fn truncate(examples: Examples, context: Option<usize>, truncated: &mut usize) -> Examples {
    let Some(context) = context else {
        return examples;
    };
    let (mut inputs, mut targets) = parts(examples);
    for (input, target) in inputs.iter_mut().zip(targets.iter_mut()) {
        if input.len() > context {
            *truncated += 1;
            input.truncate(context);
            target.truncate(context);
        }
    }
    let keep: Vec<bool> = targets
        .iter()
        .map(|t| t.iter().any(|&v| v != IGNORE_INDEX))
        .collect();
    let mut kept = keep.iter();
    inputs.retain(|_| kept.next().copied().unwrap_or(false));
    let mut kept = keep.iter();
    targets.retain(|_| kept.next().copied().unwrap_or(false));
    Examples::Tokens { inputs, targets }
}

/// The training examples concatenated and cut into windows of `context` tokens; windows with
/// nothing to learn are left out.
fn pack(examples: Examples, context: usize) -> Examples {
    let (inputs, targets) = parts(examples);
    let stream: Vec<u32> = inputs.into_iter().flatten().collect();
    let labels: Vec<i64> = targets.into_iter().flatten().collect();
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for (input, target) in stream.chunks(context).zip(labels.chunks(context)) {
        if target.iter().any(|&t| t != IGNORE_INDEX) {
            inputs.push(input.to_vec());
            targets.push(target.to_vec());
        }
    }
    Examples::Tokens { inputs, targets }
}
