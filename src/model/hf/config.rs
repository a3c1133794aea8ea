//! config.json of an HF model directory read into a [`llama::Config`]: the family's fields,
//! their types and ranges, RoPE scaling, and a diagnostic pointing at the offending key.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};
use serde_json::{Map, Value};

use super::{FAMILIES, HfError};
use crate::model::llama::{self, RopeScaling};

/// config.json being read: its text for diagnostics and its fields.
pub(super) struct Config {
    path: String,
    text: Arc<String>,
}

impl Config {
    pub(super) fn new(path: &Path, text: String) -> Config {
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

    pub(super) fn parse(&self) -> Result<(llama::Config, Map<String, Value>), HfError> {
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
