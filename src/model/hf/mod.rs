//! HF model directories: `config.json` of a Llama, Mistral or Qwen2 model (grouped-query
//! attention, RoPE scaling, attention biases, tied embeddings, sliding windows) read into a
//! [`llama::Config`], and the weights of its `*.safetensors` shards (listed by
//! `model.safetensors.index.json` or found by name) checked against it by their headers alone
//! and loaded as f32. What xp cannot read is a diagnostic pointing into config.json.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use miette::{Diagnostic, NamedSource, SourceSpan};
use serde_json::{Map, Value};
use thiserror::Error;

use super::llama::{self, RopeScaling};
use crate::data::Source;

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
        let text = std::fs::read_to_string(&file).map_err(|e| {
            unreadable(
                format!("config.json: {}", io_reason(&e)),
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
        let text =
            std::fs::read_to_string(&index).map_err(|e| unreadable(&index, io_reason(&e), None))?;
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
    let mut file = std::fs::File::open(path).map_err(|e| bad(io_reason(&e)))?;
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

/// config.json being read: its text for diagnostics and its fields.
struct Config {
    path: String,
    text: Arc<String>,
}

impl Config {
    fn new(path: &Path, text: String) -> Config {
        Config {
            path: path.display().to_string(),
            text: Arc::new(text),
        }
    }

    fn error(&self, at: &[&str], message: String, help: Option<String>) -> HfError {
        let span = self.span(at).map(SourceSpan::from);
        HfError::BadConfig {
            path: self.path.clone(),
            message,
            source_code: span
                .map(|_| Arc::new(NamedSource::new(self.path.clone(), Arc::clone(&self.text)))),
            span,
            help,
        }
    }

    /// Where a (nested) key is written: each key searched after the one before it.
    fn span(&self, at: &[&str]) -> Option<Range<usize>> {
        let mut from = 0;
        let mut found = None;
        for key in at {
            let quoted = format!("\"{key}\"");
            let mut search = from;
            loop {
                let i = self.text[search..].find(&quoted)? + search;
                let after = i + quoted.len();
                if self.text[after..].trim_start().starts_with(':') {
                    found = Some(i..after);
                    from = after;
                    break;
                }
                search = after;
            }
        }
        found
    }

    fn parse(&self) -> Result<(llama::Config, Map<String, Value>), HfError> {
        let value: Value = serde_json::from_str(&self.text).map_err(|e| HfError::BadConfig {
            path: self.path.clone(),
            message: format!("not valid JSON: {e}"),
            source_code: None,
            span: None,
            help: None,
        })?;
        let Value::Object(obj) = value else {
            return Err(self.error(&[], "config.json must be a JSON object".into(), None));
        };
        let fields = Fields {
            config: self,
            obj: &obj,
            at: Vec::new(),
        };
        let family = self.family(&obj)?;
        if obj.contains_key("quantization_config") {
            return Err(self.error(
                &["quantization_config"],
                "quantized weights cannot be trained by xp".into(),
                Some("use the model's unquantized (float32, bfloat16 or float16) release".into()),
            ));
        }
        let act = fields
            .string("hidden_act")?
            .unwrap_or_else(|| "silu".into());
        if act != "silu" && act != "swish" {
            return Err(self.error(
                &["hidden_act"],
                format!("hidden_act `{act}` is not supported"),
                Some("Llama-family models use silu (SwiGLU)".into()),
            ));
        }
        let dim = fields.need_usize("hidden_size")?;
        let heads = fields.need_usize("num_attention_heads")?;
        let kv_heads = fields.usize("num_key_value_heads")?.unwrap_or(heads);
        let layers = fields.need_usize("num_hidden_layers")?;
        let head_dim = fields.usize("head_dim")?;
        let hd = head_dim.unwrap_or(dim / heads.max(1));
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(self.error(
                &["num_key_value_heads"],
                format!("{kv_heads} key/value heads do not divide {heads} attention heads"),
                None,
            ));
        }
        if head_dim.is_none() && dim % heads != 0 {
            return Err(self.error(
                &["num_attention_heads"],
                format!("{heads} heads do not divide hidden_size {dim}, and there is no head_dim"),
                None,
            ));
        }
        if hd % 2 != 0 {
            return Err(self.error(
                &["num_attention_heads"],
                format!("the head size {hd} is odd; rotary embeddings rotate pairs"),
                None,
            ));
        }
        let default_context = match family {
            "mistral" => 4096 * 32,
            "qwen2" => 32768,
            _ => 2048,
        };
        let context = fields
            .usize("max_position_embeddings")?
            .unwrap_or(default_context);
        let (rope_theta, rope_scaling) = self.rope(&fields, context)?;
        let attention_bias = fields.bool("attention_bias")?.unwrap_or(false);
        let windows = self.windows(&fields, family, layers)?;
        let config = llama::Config {
            vocab: fields.need_usize("vocab_size")?,
            dim,
            hidden: fields.need_usize("intermediate_size")?,
            layers,
            heads,
            kv_heads,
            head_dim,
            context,
            rope_theta,
            rope_scaling,
            rms_eps: fields.f64("rms_norm_eps")?.unwrap_or(1e-6),
            tie_embeddings: fields.bool("tie_word_embeddings")?.unwrap_or(false),
            qkv_bias: family == "qwen2" || (family == "llama" && attention_bias),
            o_bias: family == "llama" && attention_bias,
            mlp_bias: family == "llama" && fields.bool("mlp_bias")?.unwrap_or(false),
            windows,
        };
        Ok((config, obj))
    }

    fn family(&self, obj: &Map<String, Value>) -> Result<&'static str, HfError> {
        let supported = "xp reads Llama-family models: model_type llama (also SmolLM, TinyLlama), mistral or qwen2";
        match obj.get("model_type") {
            Some(Value::String(t)) => FAMILIES
                .iter()
                .find(|(f, _)| f == t)
                .map(|(f, _)| *f)
                .ok_or_else(|| {
                    self.error(
                        &["model_type"],
                        format!("model_type `{t}` is not supported"),
                        Some(supported.into()),
                    )
                }),
            Some(_) => Err(self.error(&["model_type"], "model_type must be a string".into(), None)),
            None => {
                let arch = obj
                    .get("architectures")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(Value::as_str);
                match arch.and_then(|a| FAMILIES.iter().find(|(_, n)| *n == a)) {
                    Some((f, _)) => Ok(f),
                    None => Err(self.error(
                        &[],
                        "config.json has no `model_type`".into(),
                        Some(supported.into()),
                    )),
                }
            }
        }
    }

    /// rope_theta and the scaling, from transformers 5's `rope_parameters` or the older
    /// `rope_theta` and `rope_scaling`.
    fn rope(&self, fields: &Fields, context: usize) -> Result<(f64, RopeScaling), HfError> {
        let (params, key) = match fields.obj.get("rope_parameters") {
            Some(Value::Object(_)) => (fields.object("rope_parameters")?, "rope_parameters"),
            _ => (fields.object("rope_scaling")?, "rope_scaling"),
        };
        let theta = match &params {
            Some(p) if key == "rope_parameters" => p.f64("rope_theta")?,
            _ => None,
        };
        let theta = match theta {
            Some(t) => t,
            None => fields.f64("rope_theta")?.unwrap_or(10000.0),
        };
        let Some(p) = params else {
            return Ok((theta, RopeScaling::None));
        };
        if let Some(f) = p.f64("partial_rotary_factor")?
            && f != 1.0
        {
            return Err(p.error(
                "partial_rotary_factor",
                format!("partial rotary embeddings (factor {f}) are not supported"),
                None,
            ));
        }
        let kind = match p.string("rope_type")? {
            Some(k) => k,
            None => p.string("type")?.unwrap_or_else(|| "default".into()),
        };
        let scaling = match kind.as_str() {
            // Dynamic NTK scaling changes nothing within max_position_embeddings, the longest
            // sequence xp trains on.
            "default" | "dynamic" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: p.need_f64("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: p.need_f64("factor")?,
                low_freq_factor: p.need_f64("low_freq_factor")?,
                high_freq_factor: p.need_f64("high_freq_factor")?,
                original_context: p
                    .usize("original_max_position_embeddings")?
                    .unwrap_or(context),
            },
            other => {
                let at = if p.obj.contains_key("rope_type") {
                    "rope_type"
                } else {
                    "type"
                };
                return Err(p.error(
                    at,
                    format!("RoPE scaling `{other}` is not supported"),
                    Some("xp reads rope_type default, linear, llama3 and dynamic".into()),
                ));
            }
        };
        Ok((theta, scaling))
    }

    /// Each layer's sliding window: Mistral's on every layer, Qwen2's where `layer_types` (or
    /// use_sliding_window from max_window_layers on) says so.
    fn windows(
        &self,
        fields: &Fields,
        family: &str,
        layers: usize,
    ) -> Result<Vec<Option<usize>>, HfError> {
        let window = fields.usize("sliding_window")?;
        match family {
            "mistral" => Ok(vec![window; layers]),
            "qwen2" => {
                let Some(window) = window
                    .filter(|_| fields.bool("use_sliding_window").ok().flatten() == Some(true))
                else {
                    return Ok(Vec::new());
                };
                if let Some(types) = fields.obj.get("layer_types").and_then(Value::as_array) {
                    return Ok(types
                        .iter()
                        .map(|t| (t.as_str() == Some("sliding_attention")).then_some(window))
                        .collect());
                }
                let from = fields.usize("max_window_layers")?.unwrap_or(28);
                Ok((0..layers).map(|i| (i >= from).then_some(window)).collect())
            }
            _ => Ok(Vec::new()),
        }
    }
}

/// The fields of one JSON object of config.json, at a key path.
struct Fields<'a> {
    config: &'a Config,
    obj: &'a Map<String, Value>,
    at: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    fn error(&self, key: &str, message: String, help: Option<String>) -> HfError {
        let mut at = self.at.clone();
        at.push(key);
        self.config.error(&at, message, help)
    }

    /// The dotted path of a key (`rope_parameters.factor`).
    fn path(&self, key: &str) -> String {
        let mut at = self.at.clone();
        at.push(key);
        at.join(".")
    }

    fn wrong(&self, key: &str, wanted: &str) -> HfError {
        self.error(key, format!("`{}` must be {wanted}", self.path(key)), None)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<Option<usize>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.wrong(key, "a non-negative integer")),
        }
    }

    fn need_usize(&self, key: &str) -> Result<usize, HfError> {
        match self.usize(key)? {
            Some(0) => Err(self.wrong(key, "positive")),
            Some(n) => Ok(n),
            None => Err(self.missing(key)),
        }
    }

    fn missing(&self, key: &str) -> HfError {
        self.config.error(
            &self.at,
            format!("config.json has no `{}`", self.path(key)),
            Some(
                "Llama-family configs name it; compare with the model's original config.json"
                    .into(),
            ),
        )
    }

    fn f64(&self, key: &str) -> Result<Option<f64>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number")),
        }
    }

    fn need_f64(&self, key: &str) -> Result<f64, HfError> {
        self.f64(key)?.ok_or_else(|| self.missing(key))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "true or false")),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    fn object(&self, key: &'a str) -> Result<Option<Fields<'a>>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(obj)) => {
                let mut at = self.at.clone();
                at.push(key);
                Ok(Some(Fields {
                    config: self.config,
                    obj,
                    at,
                }))
            }
            Some(_) => Err(self.wrong(key, "an object")),
        }
    }
}
