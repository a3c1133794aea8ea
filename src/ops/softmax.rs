//! Softmax, causal (masked, scaled) softmax and log-softmax over the last dimension: the fused
//! CPU kernels with their backward, and the compositions other dtypes and devices run.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::kernels::{Kernel, output};
use super::rows::{self, applies, map_row_pairs, map_rows, row_len};

/// Softmax over the last dimension: exp(x - max) / sum.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if applies(Kernel::Softmax, &[x]) {
        return output(Kernel::Softmax, x.contiguous()?.apply_op1(Softmax)?);
    }
    composed::softmax(x)
}

/// log(softmax(x)) over the last dimension, computed stably as x - max - log(sum(exp(x - max))).
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    if applies(Kernel::LogSoftmax, &[x]) {
        return output(Kernel::LogSoftmax, x.contiguous()?.apply_op1(LogSoftmax)?);
    }
    composed::log_softmax(x)
}

/// The compositions of candle ops (each with its own backward) the fused kernels replace.
pub mod composed {
    use candle_core::{D, Result, Tensor};

    /// Softmax over the last dimension: exp(x - max) / sum. The max is a constant for the
    /// gradient (it cancels), so it is detached.
    pub fn softmax(x: &Tensor) -> Result<Tensor> {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
    }

    /// log(softmax(x)) over the last dimension, computed stably as x - max - log(sum(exp(x -
    /// max))).
    pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let shifted = x.broadcast_sub(&max)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        shifted.broadcast_sub(&lse)
    }
}

/// exp(x - max) / sum into `y`.
fn softmax_row(x: &[f32], y: &mut [f32]) {
    y.copy_from_slice(x);
    softmax_in_place(y, y.len());
}

/// Softmax of the first `keep` entries of `y` in place; the others become 0 (a -inf mask).
fn softmax_in_place(y: &mut [f32], keep: usize) {
    let (y, rest) = y.split_at_mut(keep);
    rest.fill(0.0);
    let max = y.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for y in y.iter_mut() {
        *y = (*y - max).exp();
    }
    let sum = rows::sum(y.iter().copied()) as f32;
    for y in y.iter_mut() {
        *y /= sum;
    }
}

/// Softmax over the last dimension.
pub struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "xp-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        map_rows(s, l, self.name(), |_, x, y| softmax_row(x, y))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxBwd)?))
    }
}

/// Causal softmax of scaled attention scores (.., T, T): softmax(scale · x + mask), where row i
/// sees columns j ≤ i with i − j < window and the others are 0 (the mask's -inf).
pub struct CausalSoftmax {
    pub scale: f32,
    pub window: usize,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "xp-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let t = row_len(l, self.name())?;
        map_rows(s, l, self.name(), |r, x, y| {
            let i = r % t;
            // Columns before i + 1 - window are masked too: shift them out of the row.
            let first = (i + 1).saturating_sub(self.window);
            y[..first].fill(0.0);
            let (x, y) = (&x[first..], &mut y[first..]);
            for (y, &x) in y.iter_mut().zip(x).take(i + 1 - first) {
                *y = x * self.scale;
            }
            softmax_in_place(y, i + 1 - first);
        })
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        // Masked entries have y = 0, so the softmax gradient gives them 0.
        let dx = y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxBwd)?;
        Ok(Some((dx * f64::from(self.scale))?))
    }
}

/// dx = y ⊙ (dy − Σ dy ⊙ y) from (y, dy).
struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "xp-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        map_row_pairs((s1, l1), (s2, l2), self.name(), |y, dy, dx| {
            let dot = rows::sum(y.iter().zip(dy).map(|(y, dy)| y * dy)) as f32;
            for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                *dx = y * (dy - dot);
            }
        })
    }
}

/// log(softmax(x)) over the last dimension: x − max − log Σ exp(x − max).
pub struct LogSoftmax;

impl CustomOp1 for LogSoftmax {
    fn name(&self) -> &'static str {
        "xp-log-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        map_rows(s, l, self.name(), |_, x, y| {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x - max;
            }
            let lse = rows::sum(y.iter().map(|y| y.exp())).ln() as f32;
            for y in y.iter_mut() {
                *y -= lse;
            }
        })
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &LogSoftmaxBwd)?))
    }
}

/// dx = dy − exp(y) · Σ dy from (y, dy), y = log_softmax(x).
struct LogSoftmaxBwd;

impl CustomOp2 for LogSoftmaxBwd {
    fn name(&self) -> &'static str {
        "xp-log-softmax-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        map_row_pairs((s1, l1), (s2, l2), self.name(), |y, dy, dx| {
            let sum = rows::sum(dy.iter().copied()) as f32;
            for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                *dx = dy - y.exp() * sum;
            }
        })
    }
}
