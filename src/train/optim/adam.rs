//! Adam and AdamW (torch's `_single_tensor_adam`, with amsgrad), and AdamW's step over a
//! flattened group of parameters as one in-place tensor op (one kernel launch on CUDA).

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};

use super::Rule;
use super::aten::{add, addcdiv, addcmul, lerp, maximum, tensor};
use crate::spec;

/// Adam, and AdamW when `decoupled`.
pub(super) struct Adam {
    pub(super) hp: spec::Adam,
    /// AdamW: weight decay applied to the parameters, not added to the gradient.
    pub(super) decoupled: bool,
}

impl Rule for Adam {
    fn buffers(&self) -> Vec<&'static str> {
        let mut names = vec!["exp_avg", "exp_avg_sq"];
        if self.hp.amsgrad {
            names.push("max_exp_avg_sq");
        }
        names
    }

    fn counts_steps(&self) -> bool {
        true
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
        let (exp_avg, rest) = buffers.split_at_mut(1);
        let (exp_avg_sq, max_exp_avg_sq) = rest.split_at_mut(1);
        self.elements(
            step,
            &mut exp_avg[0],
            &mut exp_avg_sq[0],
            max_exp_avg_sq.first_mut().map(Vec::as_mut_slice),
            param,
            grad,
            lr,
            decay,
        );
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
        let s = self.scalars(step, lr, decay);
        let (mut p, mut g) = (param.clone(), grad.clone());
        if s.weight_decay != 0.0 {
            if self.decoupled {
                p = tensor::scale(&p, s.shrink)?;
            } else {
                g = tensor::add(&g, &p, s.wd)?;
            }
        }
        buffers[0] = tensor::lerp(&buffers[0], &g, s.one_minus_beta1)?;
        buffers[1] = tensor::addcmul(
            &tensor::scale(&buffers[1], s.beta2)?,
            &g,
            &g,
            s.one_minus_beta2,
        )?;
        if let [_, v, max] = buffers {
            *max = max.maximum(&*v)?;
        }
        // amsgrad divides by the running maximum, the last buffer.
        let v = &buffers[buffers.len() - 1];
        let denom = v
            .sqrt()?
            .affine(1.0 / f64::from(s.bias_correction2_sqrt), f64::from(s.eps))?;
        tensor::addcdiv(&p, &buffers[0], &denom, s.neg_step_size)
    }

    fn kernel(&self, step: u64, lr: f64, decay: bool) -> Option<AdamwStep> {
        let weight_decay = if decay { self.hp.weight_decay } else { 0.0 };
        (!self.hp.amsgrad && (self.decoupled || weight_decay == 0.0)).then_some(AdamwStep {
            beta1: self.hp.beta1,
            beta2: self.hp.beta2,
            eps: self.hp.eps,
            weight_decay: self.hp.weight_decay,
            step,
            lr,
            decay,
        })
    }
}

impl Adam {
    /// The scalars of step `step` as the element loop (and the CUDA kernel) uses them.
    fn scalars(&self, step: u64, lr: f64, decay: bool) -> AdamScalars {
        let weight_decay = if decay { self.hp.weight_decay } else { 0.0 };
        // Python floats: `beta ** step` with the step as a float.
        let bias_correction1 = 1.0 - self.hp.beta1.powf(step as f64);
        let bias_correction2 = 1.0 - self.hp.beta2.powf(step as f64);
        let step_size = lr / bias_correction1;
        AdamScalars {
            weight_decay,
            wd: weight_decay as f32,
            shrink: (1.0 - lr * weight_decay) as f32,
            one_minus_beta1: (1.0 - self.hp.beta1) as f32,
            beta2: self.hp.beta2 as f32,
            one_minus_beta2: (1.0 - self.hp.beta2) as f32,
            eps: self.hp.eps as f32,
            bias_correction2_sqrt: bias_correction2.powf(0.5) as f32,
            neg_step_size: (-step_size) as f32,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn elements(
        &self,
        step: u64,
        exp_avg: &mut [f32],
        exp_avg_sq: &mut [f32],
        mut max_exp_avg_sq: Option<&mut [f32]>,
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let s = self.scalars(step, lr, decay);
        for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
            let mut g = g;
            if s.weight_decay != 0.0 {
                if self.decoupled {
                    *p *= s.shrink;
                } else {
                    g = add(g, *p, s.wd);
                }
            }
            let m = lerp(exp_avg[i], g, s.one_minus_beta1);
            let v = addcmul(exp_avg_sq[i] * s.beta2, g, g, s.one_minus_beta2);
            exp_avg[i] = m;
            exp_avg_sq[i] = v;
            let v = match max_exp_avg_sq.as_deref_mut() {
                Some(max) => {
                    max[i] = maximum(max[i], v);
                    max[i]
                }
                None => v,
            };
            let denom = v.sqrt() / s.bias_correction2_sqrt + s.eps;
            *p = addcdiv(*p, m, denom, s.neg_step_size);
        }
    }
}

/// One Adam step's hyperparameters in the precision each enters the update.
struct AdamScalars {
    weight_decay: f64,
    wd: f32,
    shrink: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    bias_correction2_sqrt: f32,
    neg_step_size: f32,
}

/// One AdamW step (without amsgrad) over a flattened group of parameters as one tensor op, in
/// place on `state` (3, n) = [params; exp_avg; exp_avg_sq] from `grad` (n): on the CPU the
/// update rule above, on CUDA one kernel launch (kernels/adamw.cu) with the same roundings.
/// `step` counts this step from 1; `decay` says whether weight decay applies to the group.
#[derive(Debug, Clone, Copy)]
pub struct AdamwStep {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    pub lr: f64,
    pub decay: bool,
}

impl AdamwStep {
    fn rule(&self) -> Adam {
        Adam {
            hp: spec::Adam {
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                amsgrad: false,
                weight_decay: self.weight_decay,
            },
            decoupled: true,
        }
    }

    /// Applies the step to `state` in place.
    pub fn apply(&self, state: &Tensor, grad: &Tensor) -> candle_core::Result<()> {
        if self.step == 0 {
            candle_core::bail!("xp-adamw: steps count from 1")
        }
        state.inplace_op2(grad, self)
    }
}

impl InplaceOp2 for AdamwStep {
    fn name(&self) -> &'static str {
        "xp-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(state), CpuStorage::F32(grad)) = (s1, s2) else {
            candle_core::bail!("{}: float32 only", self.name())
        };
        let (Some((s0, s1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("{}: the state and gradient must be contiguous", self.name())
        };
        let (state, grad) = (&mut state[s0..s1], &grad[g0..g1]);
        let n = grad.len();
        if state.len() != 3 * n {
            candle_core::bail!(
                "{}: state of {} values for {n} parameters",
                self.name(),
                state.len()
            )
        }
        let (param, rest) = state.split_at_mut(n);
        let (exp_avg, exp_avg_sq) = rest.split_at_mut(n);
        self.rule().elements(
            self.step, exp_avg, exp_avg_sq, None, param, grad, self.lr, self.decay,
        );
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let s = self.rule().scalars(self.step, self.lr, self.decay);
        let scalars = crate::ops::adamw::AdamwScalars {
            one_minus_beta1: s.one_minus_beta1,
            beta2: s.beta2,
            one_minus_beta2: s.one_minus_beta2,
            eps: s.eps,
            bias_correction2_sqrt: s.bias_correction2_sqrt,
            neg_step_size: s.neg_step_size,
            shrink: if s.weight_decay != 0.0 { s.shrink } else { 1.0 },
        };
        crate::ops::adamw::adamw(s1, l1, s2, l2, &scalars)
    }
}
