//! The `llama` model: a Llama-architecture decoder (RMSNorm, RoPE, SwiGLU, grouped-query
//! attention) with HF `LlamaForCausalLM` parameter names and shapes, initialised as HF does
//! (normal(0, 0.02) for linear and embedding weights, ones for norms). The same struct is
//! Mistral (sliding-window attention) and Qwen2 (q, k and v biases) when an HF model directory
//! says so (super::hf). Every op has a backward pass (crate::ops); linear layers may carry LoRA
//! adapters (super::lora).

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::lora::{Linear, Targets};
use super::{Mode, Model};
use crate::ops;
use crate::spec::LlamaDims;

/// The dimensions and variants of a Llama-family model (HF LlamaConfig's fields, and Qwen2's
/// and Mistral's differences).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    pub vocab: usize,
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// HF `head_dim`; `None`: dim / heads.
    pub head_dim: Option<usize>,
    pub context: usize,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
    /// Biases on q_proj, k_proj and v_proj (Qwen2; Llama's `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on o_proj (Llama's `attention_bias`).
    pub o_bias: bool,
    /// Biases on the MLP's projections (Llama's `mlp_bias`).
    pub mlp_bias: bool,
    /// Per layer, the sliding attention window where the layer has one (Mistral, Qwen2);
    /// empty: every layer sees all earlier positions.
    pub windows: Vec<Option<usize>>,
}

/// How RoPE's frequencies are rescaled for longer contexts (HF `rope_parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RopeScaling {
    #[default]
    None,
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's smoothed frequency scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: usize,
    },
}

impl Config {
    /// The model of `d`, predicting over `d.vocab` tokens, or the data's `data_vocab` when it
    /// gives none (a smaller `vocab` than the data's is refused before this, by preflight).
    pub fn from_dims(d: &LlamaDims, data_vocab: usize) -> Self {
        Config {
            vocab: d.vocab.unwrap_or(data_vocab),
            dim: d.dim,
            hidden: d.hidden,
            layers: d.layers,
            heads: d.heads,
            kv_heads: d.kv_heads,
            context: d.context,
            rope_theta: d.rope_theta,
            rms_eps: d.rms_eps,
            tie_embeddings: d.tie_embeddings,
            ..Config::default()
        }
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.dim / self.heads.max(1))
    }

    /// RoPE's inverse frequencies, rescaled as HF's `ROPE_INIT_FUNCTIONS` do.
    pub fn rope_frequencies(&self) -> Vec<f32> {
        let base = ops::rope_frequencies(self.head_dim(), self.rope_theta);
        match self.rope_scaling {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base
                .iter()
                .map(|f| (f64::from(*f) / factor) as f32)
                .collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_context,
            } => {
                let old = original_context as f64;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                base.iter()
                    .map(|&f| {
                        let f = f64::from(f);
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                        let out = if medium {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        } else {
                            scaled
                        };
                        out as f32
                    })
                    .collect()
            }
        }
    }

    fn window(&self, layer: usize) -> Option<usize> {
        self.windows.get(layer).copied().flatten()
    }

    /// Every parameter's HF name and shape, in the order the model creates them (without
    /// adapters).
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        let (d, hd) = (self.dim, self.head_dim());
        let mut out = vec![("model.embed_tokens.weight".to_owned(), vec![self.vocab, d])];
        for i in 0..self.layers {
            let p = |n: &str| format!("model.layers.{i}.{n}");
            out.push((p("input_layernorm.weight"), vec![d]));
            for (name, rows, cols, bias) in [
                ("self_attn.q_proj", self.heads * hd, d, self.qkv_bias),
                ("self_attn.k_proj", self.kv_heads * hd, d, self.qkv_bias),
                ("self_attn.v_proj", self.kv_heads * hd, d, self.qkv_bias),
                ("self_attn.o_proj", d, self.heads * hd, self.o_bias),
            ] {
                out.push((p(&format!("{name}.weight")), vec![rows, cols]));
                if bias {
                    out.push((p(&format!("{name}.bias")), vec![rows]));
                }
            }
            out.push((p("post_attention_layernorm.weight"), vec![d]));
            for (name, rows, cols) in [
                ("mlp.gate_proj", self.hidden, d),
                ("mlp.up_proj", self.hidden, d),
                ("mlp.down_proj", d, self.hidden),
            ] {
                out.push((p(&format!("{name}.weight")), vec![rows, cols]));
                if self.mlp_bias {
                    out.push((p(&format!("{name}.bias")), vec![rows]));
                }
            }
        }
        out.push(("model.norm.weight".to_owned(), vec![d]));
        if !self.tie_embeddings {
            out.push(("lm_head.weight".to_owned(), vec![self.vocab, d]));
        }
        out
    }

    /// The full names of the linear modules LoRA can adapt (`model.layers.0.self_attn.q_proj`,
    /// …, `lm_head`).
    pub fn linear_modules(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.layers {
            for m in ["q_proj", "k_proj", "v_proj", "o_proj"] {
                out.push(format!("model.layers.{i}.self_attn.{m}"));
            }
            for m in ["gate_proj", "up_proj", "down_proj"] {
                out.push(format!("model.layers.{i}.mlp.{m}"));
            }
        }
        out.push("lm_head".to_owned());
        out
    }
}

const INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

struct Layer {
    input_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    window: Option<usize>,
}

pub struct Llama {
    config: Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    inv_freq: Vec<f32>,
    /// RoPE tables for the first positions (those longer sequences need are made as needed).
    cos: Tensor,
    sin: Tensor,
}

/// Positions whose RoPE tables a model keeps (a real model's context can be 128k).
const CACHED_POSITIONS: usize = 4096;

impl Llama {
    pub fn new(vb: VarBuilder, c: &Config) -> Result<Self> {
        Llama::with_lora(vb, c, None)
    }

    /// The model, with LoRA adapters on the linear modules `lora` targets.
    pub fn with_lora(vb: VarBuilder, c: &Config, lora: Option<&Targets>) -> Result<Self> {
        let hd = c.head_dim();
        let m = vb.pp("model");
        let embed = m.get_with_hints((c.vocab, c.dim), "embed_tokens.weight", INIT)?;
        let layers = (0..c.layers)
            .map(|i| {
                let l = m.pp("layers").pp(i);
                let at = |n: &str| format!("model.layers.{i}.{n}");
                let lin = |n: &str, shape, bias| Linear::new(&vb, &at(n), shape, bias, INIT, lora);
                Ok(Layer {
                    input_norm: l.get_with_hints(
                        c.dim,
                        "input_layernorm.weight",
                        Init::Const(1.0),
                    )?,
                    q: lin("self_attn.q_proj", (c.heads * hd, c.dim), c.qkv_bias)?,
                    k: lin("self_attn.k_proj", (c.kv_heads * hd, c.dim), c.qkv_bias)?,
                    v: lin("self_attn.v_proj", (c.kv_heads * hd, c.dim), c.qkv_bias)?,
                    o: lin("self_attn.o_proj", (c.dim, c.heads * hd), c.o_bias)?,
                    post_norm: l.get_with_hints(
                        c.dim,
                        "post_attention_layernorm.weight",
                        Init::Const(1.0),
                    )?,
                    gate: lin("mlp.gate_proj", (c.hidden, c.dim), c.mlp_bias)?,
                    up: lin("mlp.up_proj", (c.hidden, c.dim), c.mlp_bias)?,
                    down: lin("mlp.down_proj", (c.dim, c.hidden), c.mlp_bias)?,
                    window: c.window(i),
                })
            })
            .collect::<Result<_>>()?;
        let norm = m.get_with_hints(c.dim, "norm.weight", Init::Const(1.0))?;
        let lm_head = if c.tie_embeddings {
            Linear::over(&vb, "lm_head", embed.clone(), None, lora)?
        } else {
            Linear::new(&vb, "lm_head", (c.vocab, c.dim), false, INIT, lora)?
        };
        let inv_freq = c.rope_frequencies();
        let (cos, sin) = ops::rope_tables_of(
            &inv_freq,
            c.context.min(CACHED_POSITIONS),
            embed.dtype(),
            embed.device(),
        )?;
        Ok(Llama {
            config: c.clone(),
            embed,
            layers,
            norm,
            lm_head,
            inv_freq,
            cos,
            sin,
        })
    }

    fn attention(
        &self,
        l: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mode: &mut Mode,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let c = &self.config;
        let hd = c.head_dim();
        let mut heads = |w: &Linear, n: usize| {
            w.forward(x, mode)?.reshape((b, t, n, hd))?.transpose(1, 2) // (B, n, T, hd)
        };
        let q = ops::rope(&heads(&l.q, c.heads)?, cos, sin)?;
        let k = ops::rope(&heads(&l.k, c.kv_heads)?, cos, sin)?;
        let v = heads(&l.v, c.kv_heads)?;
        let y = ops::causal_attention_windowed(&q, &k, &v, l.window)?; // (B, H, T, hd)
        let y = y.transpose(1, 2)?.reshape((b, t, c.heads * hd))?;
        l.o.forward(&y, mode)
    }
}

impl Model for Llama {
    fn forward(&self, inputs: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let (b, t) = inputs.dims2()?;
        let c = &self.config;
        let (cos, sin) = if t <= self.cos.dim(0)? {
            (self.cos.narrow(0, 0, t)?, self.sin.narrow(0, 0, t)?)
        } else {
            ops::rope_tables_of(&self.inv_freq, t, self.cos.dtype(), self.cos.device())?
        };
        let mut x = self
            .embed
            .index_select(&inputs.flatten_all()?, 0)?
            .reshape((b, t, c.dim))?; // (B, T, C)
        for l in &self.layers {
            let normed = ops::rms_norm(&x, &l.input_norm, c.rms_eps)?;
            let h = (&x + self.attention(l, &normed, &cos, &sin, mode)?)?;
            let n = ops::rms_norm(&h, &l.post_norm, c.rms_eps)?;
            let gated = ops::swiglu(&l.gate.forward(&n, mode)?, &l.up.forward(&n, mode)?)?;
            x = (h + l.down.forward(&gated, mode)?)?;
        }
        let x = ops::rms_norm(&x, &self.norm, c.rms_eps)?;
        self.lm_head.forward(&x, mode) // (B, T, V)
    }
}
