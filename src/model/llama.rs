//! The `llama` model: a Llama-architecture decoder (RMSNorm, RoPE, SwiGLU, grouped-query
//! attention) with HF `LlamaForCausalLM` parameter names and shapes, initialised as HF does
//! (normal(0, 0.02) for linear and embedding weights, ones for norms). Every op has a backward
//! pass (crate::ops).

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{Mode, Model, linear};
use crate::ops;
use crate::spec::LlamaDims;

/// The dimensions of a Llama model (HF LlamaConfig's fields).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab: usize,
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub context: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
}

impl Config {
    pub fn from_dims(d: &LlamaDims, data_vocab: usize) -> Self {
        Config {
            vocab: d.vocab.unwrap_or(data_vocab).max(data_vocab),
            dim: d.dim,
            hidden: d.hidden,
            layers: d.layers,
            heads: d.heads,
            kv_heads: d.kv_heads,
            context: d.context,
            rope_theta: d.rope_theta,
            rms_eps: d.rms_eps,
            tie_embeddings: d.tie_embeddings,
        }
    }

    fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
}

const INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

struct Layer {
    input_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    post_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

pub struct Llama {
    config: Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
    cos: Tensor,
    sin: Tensor,
}

impl Llama {
    pub fn new(vb: VarBuilder, c: &Config) -> Result<Self> {
        let hd = c.head_dim();
        let m = vb.pp("model");
        let embed = m.get_with_hints((c.vocab, c.dim), "embed_tokens.weight", INIT)?;
        let layers = (0..c.layers)
            .map(|i| {
                let l = m.pp("layers").pp(i);
                let (a, f) = (l.pp("self_attn"), l.pp("mlp"));
                Ok(Layer {
                    input_norm: l.get_with_hints(
                        c.dim,
                        "input_layernorm.weight",
                        Init::Const(1.0),
                    )?,
                    q: a.get_with_hints((c.heads * hd, c.dim), "q_proj.weight", INIT)?,
                    k: a.get_with_hints((c.kv_heads * hd, c.dim), "k_proj.weight", INIT)?,
                    v: a.get_with_hints((c.kv_heads * hd, c.dim), "v_proj.weight", INIT)?,
                    o: a.get_with_hints((c.dim, c.heads * hd), "o_proj.weight", INIT)?,
                    post_norm: l.get_with_hints(
                        c.dim,
                        "post_attention_layernorm.weight",
                        Init::Const(1.0),
                    )?,
                    gate: f.get_with_hints((c.hidden, c.dim), "gate_proj.weight", INIT)?,
                    up: f.get_with_hints((c.hidden, c.dim), "up_proj.weight", INIT)?,
                    down: f.get_with_hints((c.dim, c.hidden), "down_proj.weight", INIT)?,
                })
            })
            .collect::<Result<_>>()?;
        let norm = m.get_with_hints(c.dim, "norm.weight", Init::Const(1.0))?;
        let lm_head = if c.tie_embeddings {
            embed.clone()
        } else {
            vb.get_with_hints((c.vocab, c.dim), "lm_head.weight", INIT)?
        };
        let (cos, sin) =
            ops::rope_tables(c.context, hd, c.rope_theta, embed.dtype(), embed.device())?;
        Ok(Llama {
            config: c.clone(),
            embed,
            layers,
            norm,
            lm_head,
            cos,
            sin,
        })
    }

    fn attention(&self, l: &Layer, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let c = &self.config;
        let hd = c.head_dim();
        let heads =
            |w: &Tensor, n: usize| linear(x, w, None)?.reshape((b, t, n, hd))?.transpose(1, 2); // (B, n, T, hd)
        let q = ops::rope(&heads(&l.q, c.heads)?, cos, sin)?;
        let k = ops::rope(&heads(&l.k, c.kv_heads)?, cos, sin)?;
        let v = heads(&l.v, c.kv_heads)?;
        let y = ops::causal_attention(&q, &k, &v)?; // (B, H, T, hd)
        let y = y.transpose(1, 2)?.reshape((b, t, c.heads * hd))?;
        linear(&y, &l.o, None)
    }
}

impl Model for Llama {
    fn forward(&self, inputs: &Tensor, _mode: &mut Mode) -> Result<Tensor> {
        let (b, t) = inputs.dims2()?;
        let c = &self.config;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let mut x = self
            .embed
            .index_select(&inputs.flatten_all()?, 0)?
            .reshape((b, t, c.dim))?; // (B, T, C)
        for l in &self.layers {
            let h = (&x
                + self.attention(l, &ops::rms_norm(&x, &l.input_norm, c.rms_eps)?, &cos, &sin)?)?;
            let n = ops::rms_norm(&h, &l.post_norm, c.rms_eps)?;
            let mlp = linear(
                &ops::swiglu(&linear(&n, &l.gate, None)?, &linear(&n, &l.up, None)?)?,
                &l.down,
                None,
            )?;
            x = (h + mlp)?;
        }
        let x = ops::rms_norm(&x, &self.norm, c.rms_eps)?;
        linear(&x, &self.lm_head, None) // (B, T, V)
    }
}
