//! SGD with momentum, dampening, Nesterov and weight decay (torch's `_single_tensor_sgd`).

use super::Rule;
use candle_core::Tensor;

use super::aten::{add, tensor};
use crate::spec;

impl Rule for spec::Sgd {
    fn buffers(&self) -> Vec<&'static str> {
        if self.momentum != 0.0 {
            vec!["momentum_buffer"]
        } else {
            vec![]
        }
    }

    fn counts_steps(&self) -> bool {
        false
    }

    fn update(
        &self,
        _step: u64,
        fresh: bool,
        buffers: &mut [Vec<f32>],
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let (wd, momentum) = (weight_decay as f32, self.momentum as f32);
        let damped = (1.0 - self.dampening) as f32;
        let neg_lr = (-lr) as f32;
        for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
            let mut g = g;
            if weight_decay != 0.0 {
                g = add(g, *p, wd);
            }
            if let [buf] = buffers {
                let b = &mut buf[i];
                *b = if fresh {
                    g
                } else {
                    add(*b * momentum, g, damped)
                };
                g = if self.nesterov {
                    add(g, *b, momentum)
                } else {
                    *b
                };
            }
            *p = add(*p, g, neg_lr);
        }
    }

    fn update_tensors(
        &self,
        _step: u64,
        fresh: bool,
        buffers: &mut [Tensor],
        param: &Tensor,
        grad: &Tensor,
        lr: f64,
        decay: bool,
    ) -> candle_core::Result<Tensor> {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let mut g = grad.clone();
        if weight_decay != 0.0 {
            g = tensor::add(&g, param, weight_decay as f32)?;
        }
        if let [buf] = buffers {
            *buf = if fresh {
                g.clone()
            } else {
                let damped = (1.0 - self.dampening) as f32;
                tensor::add(&tensor::scale(buf, self.momentum as f32)?, &g, damped)?
            };
            g = if self.nesterov {
                tensor::add(&g, buf, self.momentum as f32)?
            } else {
                buf.clone()
            };
        }
        tensor::add(param, &g, (-lr) as f32)
    }
}
