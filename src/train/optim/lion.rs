//! Lion (Chen et al.), as lucidrains' lion-pytorch writes it.

use super::Rule;
use candle_core::Tensor;

use super::aten::{add, sign, tensor};
use crate::spec;

impl Rule for spec::Lion {
    fn buffers(&self) -> Vec<&'static str> {
        vec!["exp_avg"]
    }

    fn counts_steps(&self) -> bool {
        false
    }

    fn update(
        &self,
        _step: u64,
        _fresh: bool,
        buffers: &mut [Vec<f32>],
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let shrink = (1.0 - lr * weight_decay) as f32;
        let (beta1, one_minus_beta1) = (self.beta1 as f32, (1.0 - self.beta1) as f32);
        let (beta2, one_minus_beta2) = (self.beta2 as f32, (1.0 - self.beta2) as f32);
        let neg_lr = (-lr) as f32;
        let exp_avg = &mut buffers[0];
        for ((p, &g), m) in param.iter_mut().zip(grad).zip(exp_avg.iter_mut()) {
            if weight_decay != 0.0 {
                *p *= shrink;
            }
            let update = sign(add(*m * beta1, g, one_minus_beta1));
            *p = add(*p, update, neg_lr);
            *m = add(*m * beta2, g, one_minus_beta2);
        }
    }

    fn update_tensors(
        &self,
        _step: u64,
        _fresh: bool,
        buffers: &mut [Tensor],
        param: &Tensor,
        grad: &Tensor,
        lr: f64,
        decay: bool,
    ) -> candle_core::Result<Tensor> {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let mut p = param.clone();
        if weight_decay != 0.0 {
            p = tensor::scale(&p, (1.0 - lr * weight_decay) as f32)?;
        }
        let m = &mut buffers[0];
        let blended = tensor::scale(m, self.beta1 as f32)?;
        let update = tensor::add(&blended, grad, (1.0 - self.beta1) as f32)?.sign()?;
        let p = tensor::add(&p, &update, (-lr) as f32)?;
        *m = tensor::add(
            &tensor::scale(m, self.beta2 as f32)?,
            grad,
            (1.0 - self.beta2) as f32,
        )?;
        Ok(p)
    }
}
