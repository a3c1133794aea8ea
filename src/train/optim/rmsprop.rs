//! RMSprop, centered or not, with momentum and weight decay (torch's `_single_tensor_rmsprop`).

use super::Rule;
use candle_core::Tensor;

use super::aten::{add, addcdiv, addcmul, lerp, tensor};
use crate::spec;

impl Rule for spec::Rmsprop {
    fn buffers(&self) -> Vec<&'static str> {
        let mut names = vec!["square_avg"];
        if self.momentum > 0.0 {
            names.push("momentum_buffer");
        }
        if self.centered {
            names.push("grad_avg");
        }
        names
    }

    fn counts_steps(&self) -> bool {
        true
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
        let wd = weight_decay as f32;
        let (alpha, one_minus_alpha) = (self.alpha as f32, (1.0 - self.alpha) as f32);
        let (eps, momentum, neg_lr) = (self.eps as f32, self.momentum as f32, (-lr) as f32);
        let (square_avg, rest) = buffers.split_at_mut(1);
        let square_avg = &mut square_avg[0];
        let (momentum_buffer, grad_avg) = rest.split_at_mut(usize::from(self.momentum > 0.0));
        for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
            let mut g = g;
            if weight_decay != 0.0 {
                g = add(g, *p, wd);
            }
            let sq = addcmul(square_avg[i] * alpha, g, g, one_minus_alpha);
            square_avg[i] = sq;
            let avg = match grad_avg.first_mut() {
                Some(grad_avg) => {
                    let ga = lerp(grad_avg[i], g, one_minus_alpha);
                    grad_avg[i] = ga;
                    addcmul(sq, ga, ga, -1.0).sqrt()
                }
                None => sq.sqrt(),
            };
            let avg = avg + eps;
            match momentum_buffer.first_mut() {
                Some(buf) => {
                    buf[i] = addcdiv(buf[i] * momentum, g, avg, 1.0);
                    *p = add(*p, buf[i], neg_lr);
                }
                None => *p = addcdiv(*p, g, avg, neg_lr),
            }
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
        let (alpha, one_minus_alpha) = (self.alpha as f32, (1.0 - self.alpha) as f32);
        let mut g = grad.clone();
        if weight_decay != 0.0 {
            g = tensor::add(&g, param, weight_decay as f32)?;
        }
        let (square_avg, rest) = buffers.split_at_mut(1);
        let square_avg = &mut square_avg[0];
        let (momentum_buffer, grad_avg) = rest.split_at_mut(usize::from(self.momentum > 0.0));
        *square_avg = tensor::addcmul(&tensor::scale(square_avg, alpha)?, &g, &g, one_minus_alpha)?;
        let avg = match grad_avg.first_mut() {
            Some(grad_avg) => {
                *grad_avg = tensor::lerp(grad_avg, &g, one_minus_alpha)?;
                tensor::addcmul(square_avg, grad_avg, grad_avg, -1.0)?.sqrt()?
            }
            None => square_avg.sqrt()?,
        };
        let avg = avg.affine(1.0, f64::from(self.eps as f32))?;
        match momentum_buffer.first_mut() {
            Some(buf) => {
                *buf = tensor::addcdiv(&tensor::scale(buf, self.momentum as f32)?, &g, &avg, 1.0)?;
                tensor::add(param, buf, (-lr) as f32)
            }
            None => tensor::addcdiv(param, &g, &avg, (-lr) as f32),
        }
    }
}
