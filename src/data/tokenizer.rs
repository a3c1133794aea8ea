//! The tokenizer of an HF model directory: `tokenizer.json` through the `tokenizers` crate,
//! the special tokens of `tokenizer_config.json` (or `special_tokens_map.json`), and the chat
//! template (`chat_template.jinja`, else tokenizer_config.json's `chat_template`), so data is
//! tokenized as transformers tokenizes it for the same model.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use miette::NamedSource;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::chat::ChatTemplate;
use super::{DataError, text};
use crate::front::source::{MODEL_FILE_BYTES, read_text_limited};

/// A model's tokenizer, with its special tokens and chat template.
#[derive(Debug)]
pub struct HfTokenizer {
    pub tokenizer: Tokenizer,
    /// Where tokenizer.json is, for messages.
    pub path: String,
    /// The model's vocabulary size (config.json's, which may exceed the tokenizer's).
    pub vocab: usize,
    pub eos: Option<u32>,
    pub pad: u32,
    pub chat: Option<ChatTemplate>,
}

impl HfTokenizer {
    /// The tokenizer of a model directory, `None` when it has no tokenizer.json.
    pub fn open(dir: &Path, vocab: usize) -> Result<Option<HfTokenizer>, DataError> {
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Ok(None);
        }
        let tokenizer = text::parse_tokenizer(&file)?;
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let special = special_tokens(dir)?;
        let id = |key: &str| special.get(key).and_then(|t| tokenizer.token_to_id(t));
        let eos = end_of_text(dir, &tokenizer, &special)?;
        let pad = id("pad_token").or(eos).unwrap_or(0);
        let jinja = dir.join("chat_template.jinja");
        let (source, origin) = if jinja.is_file() {
            let text = read_text_limited(&jinja, MODEL_FILE_BYTES).map_err(|reason| {
                DataError::Unreadable {
                    path: jinja.display().to_string(),
                    reason,
                }
            })?;
            (Some(text), jinja.display().to_string())
        } else {
            let source = config
                .as_ref()
                .and_then(|c| c.get("chat_template"))
                .and_then(|t| match t {
                    Value::String(s) => Some(s.clone()),
                    // Several named templates: the default one.
                    Value::Array(list) => list
                        .iter()
                        .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                        .and_then(|t| t.get("template"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    _ => None,
                });
            let origin = format!(
                "{} (chat_template)",
                dir.join("tokenizer_config.json").display()
            );
            (source, origin)
        };
        let chat =
            match source {
                Some(source) => Some(ChatTemplate::new(&source, special).map_err(|e| {
                    DataError::ChatTemplate {
                        path: origin.clone(),
                        message: e.message,
                        source_code: e.span.as_ref().map(|_| {
                            Arc::new(NamedSource::new(origin.clone(), Arc::new(source.clone())))
                        }),
                        span: e.span.map(Into::into),
                    }
                })?),
                None => None,
            };
        Ok(Some(HfTokenizer {
            tokenizer,
            path: file.display().to_string(),
            vocab,
            eos,
            pad,
            chat,
        }))
    }

    /// The tokens of `text`, and for each whether it overlaps one of the byte ranges `learn`.
    /// `special`: add the tokenizer's own special tokens (a BOS), as `tokenizer(text)` does;
    /// rendered chats already hold theirs (`apply_chat_template` encodes without).
    pub fn encode(
        &self,
        text: &str,
        learn: &[Range<usize>],
        special: bool,
    ) -> Result<(Vec<u32>, Vec<bool>), String> {
        let encoding = self
            .tokenizer
            .encode(text, special)
            .map_err(|e| format!("the tokenizer fails: {e}"))?;
        let ids = encoding.get_ids().to_vec();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(format!(
                "the tokenizer gives the token {id}, outside the model's vocabulary of {}",
                self.vocab
            ));
        }
        let learned = encoding
            .get_offsets()
            .iter()
            .map(|&(a, b)| b > a && learn.iter().any(|r| a < r.end && b > r.start))
            .collect();
        Ok((ids, learned))
    }
}

/// The special tokens a model directory names (`bos_token`, `eos_token`, …), from
/// tokenizer_config.json, else special_tokens_map.json.
pub(crate) fn special_tokens(dir: &Path) -> Result<BTreeMap<String, String>, DataError> {
    let config = read_json(&dir.join("tokenizer_config.json"))?;
    let map = read_json(&dir.join("special_tokens_map.json"))?;
    let mut special = BTreeMap::new();
    for key in [
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    ] {
        let value = config
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(token_text)
            .or_else(|| map.as_ref().and_then(|m| m.get(key)).and_then(token_text));
        if let Some(v) = value {
            special.insert(key.to_owned(), v);
        }
    }
    Ok(special)
}

/// The token that ends a text, as the model directory declares it: the `eos_token` of its
/// tokenizer config, else the `eos_token_id` of config.json or generation_config.json (the
/// first, where it lists several), else the one special token of tokenizer.json whose name
/// says it ends something (`</s>`, `<|endoftext|>`, `<EOT>`, `<|im_end|>`, …).
pub(crate) fn end_of_text(
    dir: &Path,
    tokenizer: &Tokenizer,
    special: &BTreeMap<String, String>,
) -> Result<Option<u32>, DataError> {
    if let Some(id) = special
        .get("eos_token")
        .and_then(|t| tokenizer.token_to_id(t))
    {
        return Ok(Some(id));
    }
    for name in ["config.json", "generation_config.json"] {
        let id = read_json(&dir.join(name))?
            .and_then(|c| c.get("eos_token_id").cloned())
            .and_then(|v| match v {
                Value::Array(ids) => ids.first().and_then(Value::as_u64),
                other => other.as_u64(),
            })
            .and_then(|id| u32::try_from(id).ok());
        if id.is_some() {
            return Ok(id);
        }
    }
    Ok(ending_special_token(tokenizer))
}

/// Among the special tokens of a tokenizer.json, the one that most plainly ends a text: a name
/// with `endoftext`/`end_of_text`, then `eos`, then `eot`, then `</s>`, then any other `end`
/// (not a header's); the lowest id among equals.
fn ending_special_token(tokenizer: &Tokenizer) -> Option<u32> {
    let rank = |content: &str| {
        let name: String = content
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '/')
            .collect();
        if name.contains("endoftext") {
            Some(0)
        } else if name.contains("eos") {
            Some(1)
        } else if name.contains("eot") {
            Some(2)
        } else if name == "/s" {
            Some(3)
        } else if name.contains("end") && !name.contains("header") && !name.contains("start") {
            Some(4)
        } else {
            None
        }
    };
    tokenizer
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .filter_map(|(id, t)| rank(&t.content).map(|r| (r, id)))
        .min()
        .map(|(_, id)| id)
}

fn read_json(path: &Path) -> Result<Option<Value>, DataError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text =
        read_text_limited(path, MODEL_FILE_BYTES).map_err(|reason| DataError::Unreadable {
            path: path.display().to_string(),
            reason,
        })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| DataError::Unreadable {
            path: path.display().to_string(),
            reason: format!("not JSON: {e}"),
        })
}

/// A special token as tokenizer_config.json writes it: a string, or an AddedToken object.
fn token_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}
