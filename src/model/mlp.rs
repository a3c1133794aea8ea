//! The `mlp` model: Linear layers as a PyTorch `nn.ModuleList` of `nn.Linear` names them
//! (`layers.{i}.weight` [out, in], `layers.{i}.bias`), an activation and dropout after every
//! hidden layer.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::{Mode, Model, dropout, linear_in};
use crate::ops;
use crate::spec::{self, Activation};

pub struct Mlp {
    layers: Vec<(Tensor, Tensor)>,
    activation: Activation,
    dropout: f64,
}

impl Mlp {
    pub fn new(
        vb: VarBuilder,
        spec: &spec::MlpDims,
        inputs: usize,
        outputs: usize,
    ) -> Result<Self> {
        let sizes: Vec<usize> = std::iter::once(inputs)
            .chain(spec.hidden.iter().copied())
            .chain([outputs])
            .collect();
        let vb = vb.pp("layers");
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let (fan_in, fan_out) = (w[0], w[1]);
                // nn.Linear's default: kaiming_uniform(a=√5) and a bias of the same bound.
                let bound = 1.0 / (fan_in as f64).sqrt();
                let init = Init::Uniform {
                    lo: -bound,
                    up: bound,
                };
                let vb = vb.pp(i);
                Ok((
                    vb.get_with_hints((fan_out, fan_in), "weight", init)?,
                    vb.get_with_hints(fan_out, "bias", init)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Mlp {
            layers,
            activation: spec.activation,
            dropout: spec.dropout,
        })
    }
}

impl Model for Mlp {
    fn forward(&self, inputs: &Tensor, mode: &mut Mode) -> Result<Tensor> {
        let mut x = inputs.clone(); // (B, F)
        for (i, (w, b)) in self.layers.iter().enumerate() {
            x = linear_in(&x, w, Some(b), mode.compute)?;
            if i + 1 < self.layers.len() {
                x = match self.activation {
                    Activation::Relu => x.relu()?,
                    Activation::Gelu => ops::gelu(&x)?,
                    Activation::Tanh => x.tanh()?,
                    Activation::Silu => ops::silu(&x)?,
                };
                x = dropout(&x, self.dropout, mode)?;
            }
        }
        Ok(x) // (B, O)
    }
}
