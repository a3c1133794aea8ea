//! Causal scaled dot-product attention, with grouped-query heads and an optional sliding
//! window: on the CPU in float32 the scores go through the fused causal softmax, elsewhere
//! through an explicit mask and the composed softmax.

use candle_core::{DType, Result, Tensor};

use super::kernels::{Kernel, output};
use super::rows::applies;
use super::softmax::{CausalSoftmax, composed};

/// Causal scaled dot-product attention: q, k, v (B, H, T, D) → (B, H, T, D). Keys and values
/// with fewer heads (grouped-query attention) are repeated to match.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    causal_attention_windowed(q, k, v, None)
}

/// Causal attention where, with a `window`, each position sees only itself and the
/// `window - 1` before it (Mistral's and Qwen2's sliding window, as HF masks it).
pub fn causal_attention_windowed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window: Option<usize>,
) -> Result<Tensor> {
    let (_, heads, t, d) = q.dims4()?;
    let k = repeat_kv(k, heads)?;
    let v = repeat_kv(v, heads)?;
    let scale = 1.0 / (d as f64).sqrt();
    // A window of 0 masks whole rows: the composition gives its NaNs.
    let probs = if window != Some(0) && applies(Kernel::CausalSoftmax, &[q, &k]) && k.dim(2)? == t {
        let window = window.unwrap_or(usize::MAX);
        let scale = scale as f32;
        // gemm reads kᵀ's strides directly.
        let probs = q
            .contiguous()?
            .matmul(&k.contiguous()?.t()?)?
            .apply_op1(CausalSoftmax { scale, window })?;
        output(Kernel::CausalSoftmax, probs)?
    } else {
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        let mask = causal_mask(t, window, q.dtype(), q.device())?;
        composed::softmax(&scores.broadcast_add(&mask)?)?
    };
    probs.matmul(&v.contiguous()?)
}

fn repeat_kv(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, kv, t, d) = x.dims4()?;
    if kv == heads {
        return Ok(x.clone());
    }
    let n = heads / kv;
    x.unsqueeze(2)?
        .broadcast_as((b, kv, n, t, d))?
        .reshape((b, heads, t, d))
}

/// 0 on and below the diagonal (within `window` of it, when given), -inf elsewhere.
fn causal_mask(
    t: usize,
    window: Option<usize>,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let window = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..t).map(move |j| {
                if j > i || i - j >= window {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (t, t), device)?.to_dtype(dtype)
}
