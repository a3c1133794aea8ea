//! The compositions of candle ops (each with its own backward) that the fused kernels replace:
//! what other dtypes and devices run, and the reference the fused kernels are tested against.

use candle_core::{D, Result, Tensor};

/// Softmax over the last dimension: exp(x - max) / sum. The max is a constant for the
/// gradient (it cancels), so it is detached.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// log(softmax(x)) over the last dimension, computed stably as x - max - log(sum(exp(x - max))).
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// RMSNorm as HF Llama computes it: x / sqrt(mean(x²) + eps) · weight, over the last dimension.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (mean_sq + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}

/// Rotary embedding of x (B, H, T, D) with tables (T, D): x·cos + rotate_half(x)·sin, where
/// rotate_half(x) = [-x₂, x₁] over the two halves of the last dimension (HF Llama).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)?
        .broadcast_add(&rotated.broadcast_mul(sin)?)
}
