//! Adagrad with learning-rate decay (torch's `_single_tensor_adagrad`).

use super::Rule;
use candle_core::Tensor;

use super::aten::{add, addcdiv, addcmul, tensor};
use crate::spec;

impl Rule for spec::Adagrad {
    fn buffers(&self) -> Vec<&'static str> {
        vec!["sum"]
    }

    fn counts_steps(&self) -> bool {
        true
    }

    fn initial(&self) -> f32 {
        self.initial_accumulator as f32
    }

    fn update(
        &self,
        step: u64,
        _fresh: bool,
        buffers: &mut [Vec<f32>],
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let wd = weight_decay as f32;
        let clr = lr / (1.0 + (step as f64 - 1.0) * self.lr_decay);
        let (neg_clr, eps) = ((-clr) as f32, self.eps as f32);
        let sum = &mut buffers[0];
        for ((p, &g), s) in param.iter_mut().zip(grad).zip(sum.iter_mut()) {
            let mut g = g;
            if weight_decay != 0.0 {
                g = add(g, *p, wd);
            }
            *s = addcmul(*s, g, g, 1.0);
            let std = s.sqrt() + eps;
            *p = addcdiv(*p, g, std, neg_clr);
        }
    }

    fn update_tensors(
        &self,
        step: u64,
        _fresh: bool,
        buffers: &mut [Tensor],
        param: &Tensor,
        grad: &Tensor,
        lr: f64,
        decay: bool,
    ) -> candle_core::Result<Tensor> {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let clr = lr / (1.0 + (step as f64 - 1.0) * self.lr_decay);
        let mut g = grad.clone();
        if weight_decay != 0.0 {
            g = tensor::add(&g, param, weight_decay as f32)?;
        }
        let sum = &mut buffers[0];
        *sum = tensor::addcmul(sum, &g, &g, 1.0)?;
        let std = sum.sqrt()?.affine(1.0, f64::from(self.eps as f32))?;
        tensor::addcdiv(param, &g, &std, (-clr) as f32)
    }
}
