//! f16's dynamic loss scale.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::transfer::{self, Transfers};

/// Dynamic loss scaling for f16 compute, as torch.amp.GradScaler with its defaults: the loss is
/// multiplied by `scale` before the backward pass and the gradients divided by it after; a step
/// whose gradients are not finite is skipped and halves the scale; 2000 finite steps in a row
/// double it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScale {
    pub scale: f64,
    /// Finite steps since the scale last changed.
    pub good_steps: usize,
    /// Steps skipped so far.
    pub skipped: usize,
}

impl LossScale {
    const INITIAL: f64 = 65536.0;
    const GROWTH_INTERVAL: usize = 2000;

    pub fn new() -> Self {
        LossScale {
            scale: Self::INITIAL,
            good_steps: 0,
            skipped: 0,
        }
    }

    /// Divides the gradients by the scale; returns whether they are all finite, and updates the
    /// scale accordingly.
    pub fn unscale(&mut self, grads: &mut [Option<Vec<f32>>]) -> bool {
        let inverse = (1.0 / self.scale) as f32;
        let mut finite = true;
        for g in grads.iter_mut().flatten() {
            for v in g.iter_mut() {
                *v *= inverse;
                finite &= v.is_finite();
            }
        }
        self.advance(finite);
        finite
    }

    /// [`LossScale::unscale`] on device tensors: the division and the check are tensor ops, and
    /// one value (whether all are finite) is read on the host.
    pub(super) fn unscale_tensors(
        &mut self,
        grads: &mut [Option<Tensor>],
        run: Option<&Transfers>,
    ) -> candle_core::Result<bool> {
        let inverse = f64::from((1.0 / self.scale) as f32);
        let mut flags = Vec::new();
        for g in grads.iter_mut().flatten() {
            *g = g.affine(inverse, 0.0)?;
            // 0 · v is 0 for finite v and NaN for ±inf and NaN.
            flags.push(g.affine(0.0, 0.0)?.sum_all()?);
        }
        let finite = match flags.is_empty() {
            true => true,
            false => transfer::scalar(&Tensor::stack(&flags, 0)?.sum_all()?, run)? == 0.0,
        };
        self.advance(finite);
        Ok(finite)
    }

    /// Counts a step whose gradients were `finite` (or not) and adjusts the scale.
    fn advance(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale *= 0.5;
            self.good_steps = 0;
            self.skipped += 1;
        }
    }
}

impl Default for LossScale {
    fn default() -> Self {
        Self::new()
    }
}
