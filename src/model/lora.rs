//! LoRA as PEFT does it: a linear layer `W x + b` becomes `W x + b + s · B(A(dropout(x)))` with
//! A (r, in) drawn as PEFT draws it (kaiming-uniform, a=√5: uniform ±1/√in), B (out, r) zeros
//! and s = alpha / r (alpha / √r with rsLoRA). The base weights freeze; A and B carry PEFT's
//! tensor names (`base_model.model.<module>.lora_A.weight`), so the adapter is saved and loaded
//! under the names `PeftModel` uses.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{Mode, dropout, linear_in};
use crate::spec;

/// The prefix PEFT puts before a base model's module names in an adapter's tensors.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The modules LoRA can adapt: a Llama's linear layers (HF names, without `.weight`).
pub const LINEAR_MODULES: [&str; 8] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "lm_head",
];

/// Whether a parameter name is an adapter's (PEFT's `lora_A` / `lora_B`).
pub fn is_adapter(name: &str) -> bool {
    name.starts_with(PEFT_PREFIX) && (name.contains(".lora_A.") || name.contains(".lora_B."))
}

/// The module an adapter tensor belongs to: `base_model.model.X.lora_A.weight` → `X`.
pub fn adapted_module(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PEFT_PREFIX)?;
    rest.strip_suffix(".lora_A.weight")
        .or_else(|| rest.strip_suffix(".lora_B.weight"))
}

/// Which modules get adapters, and how they are scaled.
#[derive(Debug, Clone)]
pub struct Targets {
    globs: GlobSet,
    pub rank: usize,
    pub scale: f64,
    pub dropout: f64,
}

impl Targets {
    pub fn new(spec: &spec::Lora) -> std::result::Result<Targets, String> {
        let mut builder = GlobSetBuilder::new();
        for pattern in &spec.targets {
            let glob = Glob::new(pattern)
                .map_err(|e| format!("the LoRA target `{pattern}` is not a glob: {e}"))?;
            builder.add(glob);
        }
        let globs = builder
            .build()
            .map_err(|e| format!("the LoRA targets are not globs: {e}"))?;
        Ok(Targets {
            globs,
            rank: spec.rank,
            scale: scale(spec),
            dropout: spec.dropout,
        })
    }

    /// Whether a module (`model.layers.0.self_attn.q_proj`) is adapted: a pattern matches its
    /// whole name or a dotted suffix of it, so `q_proj` is every layer's q_proj (as PEFT's
    /// `target_modules` list matches) and `model.layers.0.*` is the first layer's modules.
    pub fn matches(&self, module: &str) -> bool {
        suffixes(module).any(|s| self.globs.is_match(s))
    }
}

/// The scaling of the adapter's output: alpha / r, or alpha / √r with rsLoRA.
pub fn scale(spec: &spec::Lora) -> f64 {
    if spec.rslora {
        spec.alpha / (spec.rank as f64).sqrt()
    } else {
        spec.alpha / spec.rank as f64
    }
}

/// `a.b.c`, `b.c`, `c`.
fn suffixes(name: &str) -> impl Iterator<Item = &str> {
    std::iter::once(name).chain(name.match_indices('.').map(move |(i, _)| &name[i + 1..]))
}

/// The patterns of `spec` that match none of `modules` (full module names), each with what it
/// would have to match.
pub fn unmatched<'a>(spec: &'a spec::Lora, modules: &[String]) -> Vec<&'a str> {
    spec.targets
        .iter()
        .filter(|pattern| {
            let Ok(glob) = Glob::new(pattern) else {
                return true;
            };
            let matcher = glob.compile_matcher();
            !modules
                .iter()
                .any(|m| suffixes(m).any(|s| matcher.is_match(s)))
        })
        .map(String::as_str)
        .collect()
}

/// The adapter of one linear layer.
struct Adapter {
    a: Tensor,
    b: Tensor,
    scale: f64,
    dropout: f64,
}

/// A linear layer (torch.nn.Linear's `x @ W.T + b`), with a LoRA adapter when its module is a
/// target.
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    adapter: Option<Adapter>,
}

impl Linear {
    /// The layer `module` (its full HF name) of shape (out, in), from the root `VarBuilder`.
    pub fn new(
        root: &VarBuilder,
        module: &str,
        (out, inp): (usize, usize),
        bias: bool,
        init: Init,
        targets: Option<&Targets>,
    ) -> Result<Linear> {
        let weight = root.get_with_hints((out, inp), &format!("{module}.weight"), init)?;
        let bias = match bias {
            true => Some(root.get_with_hints(out, &format!("{module}.bias"), Init::Const(0.0))?),
            false => None,
        };
        Linear::over(root, module, weight, bias, targets)
    }

    /// A layer over a weight that exists already (a tied lm_head is the embedding), with an
    /// adapter when `module` is a target.
    pub fn over(
        root: &VarBuilder,
        module: &str,
        weight: Tensor,
        bias: Option<Tensor>,
        targets: Option<&Targets>,
    ) -> Result<Linear> {
        let (out, inp) = weight.dims2()?;
        let adapter = match targets {
            Some(t) if t.matches(module) => Some(Adapter {
                a: root.get_with_hints(
                    (t.rank, inp),
                    &format!("{PEFT_PREFIX}{module}.lora_A.weight"),
                    KAIMING_UNIFORM,
                )?,
                b: root.get_with_hints(
                    (out, t.rank),
                    &format!("{PEFT_PREFIX}{module}.lora_B.weight"),
                    Init::Const(0.0),
                )?,
                scale: t.scale,
                dropout: t.dropout,
            }),
            _ => None,
        };
        Ok(Linear {
            weight,
            bias,
            adapter,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let c = mode.compute;
        let y = linear_in(x, &self.weight, self.bias.as_ref(), c)?;
        match &self.adapter {
            None => Ok(y),
            Some(ad) => {
                let h = linear_in(&dropout(x, ad.dropout, mode)?, &ad.a, None, c)?; // (…, r)
                y + (linear_in(&h, &ad.b, None, c)? * ad.scale)?
            }
        }
    }
}

/// PEFT's `kaiming_uniform_(a=√5)` of lora_A: uniform ±1/√fan_in (the parameter store draws
/// every kaiming init with that bound, as nn.Linear's default).
const KAIMING_UNIFORM: Init = Init::Kaiming {
    dist: candle_nn::init::NormalOrUniform::Uniform,
    fan: candle_nn::init::FanInOut::FanIn,
    non_linearity: candle_nn::init::NonLinearity::Linear,
};
