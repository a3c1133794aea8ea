//! HF model directories: `config.json` of a Llama, Mistral or Qwen2 model (grouped-query
//! attention, RoPE scaling, attention biases, tied embeddings, sliding windows) read into a
//! [`llama::Config`], and the weights of its `*.safetensors` shards (listed by
//! `model.safetensors.index.json` or found by name) checked against it by their headers alone
//! and loaded as f32. What xp cannot read is a diagnostic pointing into config.json.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use miette::{Diagnostic, SourceSpan};
use serde_json::{Map, Value};
use thiserror::Error;

use super::llama;
use crate::data::Source;
use crate::front::source::{MODEL_FILE_BYTES, open_regular, read_text_limited};
use config::Config;

mod config;

/// The model types xp reads, with their `architectures` names.
const FAMILIES: [(&str, &str); 3] = [
    ("llama", "LlamaForCausalLM"),
    ("mistral", "MistralForCausalLM"),
    ("qwen2", "Qwen2ForCausalLM"),
];

/// Why an HF model directory cannot be used.
#[derive(Debug, Error, Diagnostic)]
pub enum HfError {
    #[error("cannot read the model directory `{path}`: {reason}")]
    #[diagnostic(code("xp::model::unreadable"))]
    Unreadable {
        path: String,
        reason: String,
        #[help]
        help: Option<String>,
    },

    #[error("{path}: {message}")]
    #[diagnostic(code("xp::model::bad-config"))]
    BadConfig {
        path: String,
        message: String,
        #[source_code]
        source_code: Option<Source>,
        #[label("here")]
        span: Option<SourceSpan>,
        #[help]
        help: Option<String>,
    },

    #[error("the weights of `{path}` do not match its config.json: {summary}\n{details}")]
    #[diagnostic(
        code("xp::model::tensors"),
        help(
            "the shards must hold every tensor of the config's architecture under HF's names, as save_pretrained writes them"
        )
    )]
    Tensors {
        path: String,
        summary: String,
        details: String,
    },
}

/// An HF model directory whose config xp can build.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub path: PathBuf,
    pub config: llama::Config,
    /// config.json as written, for the config of fine-tuned copies.
    pub config_json: Map<String, Value>,
    pub shards: Vec<PathBuf>,
}

/// A tensor as a shard's header describes it.
#[derive(Debug, Clone)]
pub struct Header {
    pub dtype: String,
    pub shape: Vec<usize>,
}

impl ModelDir {
    /// Reads config.json and finds the shards (their contents are not read).
    pub fn open(path: &Path) -> Result<ModelDir, HfError> {
        let unreadable = |reason: String, help: Option<&str>| HfError::Unreadable {
            path: path.display().to_string(),
            reason,
            help: help.map(str::to_owned),
        };
        if !path.is_dir() {
            return Err(unreadable(
                if path.exists() {
                    "it is not a directory".into()
                } else {
                    "no such directory".into()
                },
                Some(
                    "`model \"llama\" path=…` takes a directory as save_pretrained writes it: config.json and *.safetensors",
                ),
            ));
        }
        let file = path.join("config.json");
        let text = read_text_limited(&file, MODEL_FILE_BYTES).map_err(|reason| {
            unreadable(
                format!("config.json: {reason}"),
                Some("an HF model directory has a config.json beside its weights"),
            )
        })?;
        let config = Config::new(&file, text);
        let (config, config_json) = config.parse()?;
        let shards = weight_files(path)?;
        Ok(ModelDir {
            path: path.to_path_buf(),
            config,
            config_json,
            shards,
        })
    }

    /// Every tensor's header, from all shards.
    pub fn headers(&self) -> Result<BTreeMap<String, Header>, HfError> {
        let mut out = BTreeMap::new();
        for shard in &self.shards {
            out.extend(read_header(shard)?);
        }
        Ok(out)
    }

    /// Checks the shards' tensors against the config: every parameter present with its shape,
    /// nothing else, in a dtype xp reads.
    pub fn check(&self) -> Result<(), HfError> {
        let headers = self.headers()?;
        let expected: BTreeMap<String, Vec<usize>> = self.config.parameters().into_iter().collect();
        let mut missing = Vec::new();
        let mut misshaped = Vec::new();
        let mut dtypes = Vec::new();
        for (name, shape) in &expected {
            match headers.get(name) {
                None => missing.push(format!("`{name}`")),
                Some(h) if &h.shape != shape => misshaped.push(format!(
                    "`{name}`: file has {:?}, config needs {shape:?}",
                    h.shape
                )),
                Some(h) if !matches!(h.dtype.as_str(), "F32" | "BF16" | "F16" | "F64") => {
                    dtypes.push(format!("`{name}` is {}", h.dtype))
                }
                Some(_) => {}
            }
        }
        let unexpected: Vec<String> = headers
            .keys()
            .filter(|n| !expected.contains_key(*n) && !self.ignored(n))
            .map(|n| format!("`{n}`"))
            .collect();
        let mut parts = Vec::new();
        let mut details = Vec::new();
        for (what, list) in [
            ("missing", &missing),
            ("unexpected", &unexpected),
            ("mis-shaped", &misshaped),
            ("in an unsupported dtype (quantized?)", &dtypes),
        ] {
            if !list.is_empty() {
                parts.push(format!("{} {what}", list.len()));
                let shown: Vec<&str> = list.iter().take(6).map(String::as_str).collect();
                let more = if list.len() > 6 { ", …" } else { "" };
                details.push(format!("{what}: {}{more}", shown.join(", ")));
            }
        }
        if parts.is_empty() {
            return Ok(());
        }
        Err(HfError::Tensors {
            path: self.path.display().to_string(),
            summary: parts.join(", "),
            details: details.join("\n"),
        })
    }

    /// Tensors HF itself ignores when loading: old checkpoints' RoPE buffers, and an lm_head
    /// saved beside the embedding it is tied to.
    fn ignored(&self, name: &str) -> bool {
        name.ends_with(".rotary_emb.inv_freq")
            || (self.config.tie_embeddings && name == "lm_head.weight")
    }

    /// The weights, as f32 tensors by name (what [`ModelDir::check`] accepts).
    pub fn load(&self, device: &Device) -> Result<HashMap<String, Tensor>, HfError> {
        self.check()?;
        let mut out = HashMap::new();
        for shard in &self.shards {
            let tensors =
                candle_core::safetensors::load(shard, device).map_err(|e| HfError::Unreadable {
                    path: shard.display().to_string(),
                    reason: e.to_string(),
                    help: None,
                })?;
            for (name, t) in tensors {
                if self.ignored(&name) {
                    continue;
                }
                let t = t
                    .to_dtype(candle_core::DType::F32)
                    .map_err(|e| HfError::Unreadable {
                        path: shard.display().to_string(),
                        reason: e.to_string(),
                        help: None,
                    })?;
                out.insert(name, t);
            }
        }
        Ok(out)
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        _ => e.to_string(),
    }
}

/// The weight files: those `model.safetensors.index.json` names, else every `*.safetensors`
/// of the directory (adapters aside).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, HfError> {
    let unreadable = |path: &Path, reason: String, help: Option<&str>| HfError::Unreadable {
        path: path.display().to_string(),
        reason,
        help: help.map(str::to_owned),
    };
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = read_text_limited(&index, MODEL_FILE_BYTES)
            .map_err(|reason| unreadable(&index, reason, None))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| unreadable(&index, format!("not JSON: {e}"), None))?;
        let Some(map) = value.get("weight_map").and_then(Value::as_object) else {
            return Err(unreadable(&index, "it has no `weight_map`".into(), None));
        };
        let files: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
        let mut out = Vec::new();
        for f in files {
            let shard = dir.join(f);
            if !shard.is_file() {
                return Err(unreadable(
                    &index,
                    format!("it names the shard `{f}`, which is not there"),
                    Some("download every shard the index names"),
                ));
            }
            out.push(shard);
        }
        return Ok(out);
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| unreadable(dir, io_reason(&e), None))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("adapter_"))
        })
        .collect();
    out.sort();
    if out.is_empty() {
        let bin = dir.join("pytorch_model.bin").is_file();
        return Err(unreadable(
            dir,
            "it has no *.safetensors weights".into(),
            Some(if bin {
                "xp reads safetensors only: convert pytorch_model.bin, e.g. load the model with transformers and save_pretrained(dir, safe_serialization=True)"
            } else {
                "save the model with save_pretrained, which writes model.safetensors"
            }),
        ));
    }
    Ok(out)
}

/// The tensors a safetensors file's header describes, without reading the tensors.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, Header>, HfError> {
    let bad = |reason: String| HfError::Unreadable {
        path: path.display().to_string(),
        reason,
        help: None,
    };
    let mut file = open_regular(path).map_err(|e| bad(e.reason()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| bad("not a safetensors file (too short)".into()))?;
    let len = u64::from_le_bytes(len);
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > size.saturating_sub(8) || len > 100 << 20 {
        return Err(bad("not a safetensors file (bad header length)".into()));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(e.to_string()))?;
    let value: Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|_| bad("not a safetensors file (its header is not JSON)".into()))?;
    let mut out = BTreeMap::new();
    for (name, info) in value {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info
            .get("dtype")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let shape = info
            .get("shape")
            .and_then(Value::as_array)
            .map(|s| {
                s.iter()
                    .filter_map(Value::as_u64)
                    .map(|d| d as usize)
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name, Header { dtype, shape });
    }
    Ok(out)
}
