//! xp's own differentiable ops. candle-nn's fused `softmax_last_dim`, `rms_norm`, `layer_norm`,
//! `rope*` and flash attention record no backward pass (gradients silently stop), so training
//! never goes through them: every op here is built from candle ops that have one or is a custom op
//! with its own exact backward, and each is checked against PyTorch's outputs and gradients
//! (tests/reference/ops.py). On the CPU in float32, softmax, log_softmax, rms_norm, rope and
//! attention's scaled, masked softmax run as fused kernels ([`fused`]); the compositions in
//! [`composed`] are the reference they are tested against and what other dtypes and devices run.

pub mod composed;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
mod fused;

use candle_core::{D, DType, Result, Tensor};

/// Softmax over the last dimension: exp(x - max) / sum.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if fused::applies(&[x]) {
        return x.contiguous()?.apply_op1(fused::Softmax);
    }
    composed::softmax(x)
}

/// log(softmax(x)) over the last dimension, computed stably as x - max - log(sum(exp(x - max))).
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    if fused::applies(&[x]) {
        return x.contiguous()?.apply_op1(fused::LogSoftmax);
    }
    composed::log_softmax(x)
}

/// RMSNorm as HF Llama computes it: x / sqrt(mean(x²) + eps) · weight, over the last dimension.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if fused::applies(&[x, weight]) && weight.dims() == [x.dim(D::Minus1)?] {
        return x
            .contiguous()?
            .apply_op2(&weight.contiguous()?, fused::RmsNorm { eps });
    }
    composed::rms_norm(x, weight, eps)
}

/// LayerNorm over the last dimension with the biased variance, as torch.nn.LayerNorm.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// The cos and sin tables of rotary embeddings, HF Llama's layout: (T, head_dim) with the
/// frequencies repeated over both halves.
pub fn rope_tables(
    seq_len: usize,
    head_dim: usize,
    theta: f64,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<(Tensor, Tensor)> {
    rope_tables_of(&rope_frequencies(head_dim, theta), seq_len, dtype, device)
}

/// RoPE's inverse frequencies 1 / theta^(2i / head_dim), i < head_dim / 2.
pub fn rope_frequencies(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
        .collect()
}

/// The cos and sin tables (T, 2 · frequencies) of given inverse frequencies (scaled ones too).
pub fn rope_tables_of(
    inv_freq: &[f32],
    seq_len: usize,
    dtype: DType,
    device: &candle_core::Device,
) -> Result<(Tensor, Tensor)> {
    let head_dim = 2 * inv_freq.len();
    let mut cos = Vec::with_capacity(seq_len * head_dim);
    let mut sin = Vec::with_capacity(seq_len * head_dim);
    for t in 0..seq_len {
        for _half in 0..2 {
            for f in inv_freq {
                // HF computes position × inv_freq in f32.
                let angle = t as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    let cos = Tensor::from_vec(cos, (seq_len, head_dim), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (seq_len, head_dim), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// Rotary embedding of x (B, H, T, D) with tables (T, D): x·cos + rotate_half(x)·sin, where
/// rotate_half(x) = [-x₂, x₁] over the two halves of the last dimension (HF Llama).
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    // The fused backward treats the tables as constants, so tables that train take the
    // composition.
    if fused::applies(&[x, cos, sin]) && x.rank() == 4 && !cos.track_op() && !sin.track_op() {
        let (_, _, t, d) = x.dims4()?;
        if d % 2 == 0 && cos.dims() == [t, d] && sin.dims() == [t, d] {
            // The kernel reads strided heads as long as each row is contiguous.
            let x = if x.stride()[3] == 1 {
                x.clone()
            } else {
                x.contiguous()?
            };
            return x.apply_op3(
                &cos.contiguous()?,
                &sin.contiguous()?,
                fused::Rope { transpose: false },
            );
        }
    }
    composed::rope(x, cos, sin)
}

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
    let probs = if window != Some(0) && fused::applies(&[q, &k]) && k.dim(2)? == t {
        let window = window.unwrap_or(usize::MAX);
        let scale = scale as f32;
        // gemm reads kᵀ's strides directly.
        q.contiguous()?
            .matmul(&k.contiguous()?.t()?)?
            .apply_op1(fused::CausalSoftmax { scale, window })?
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

/// SiLU: x · sigmoid(x).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.silu()
}

/// SwiGLU as in Llama's MLP: silu(gate) · up.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.silu()?.mul(up)
}

/// GELU with the exact erf form (torch.nn.GELU's default).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// The label that marks a position without loss (PyTorch's and HF's -100).
pub const IGNORE_INDEX: i64 = -100;

/// Summed cross-entropy of logits (N, C) against targets (N,) i64, skipping targets equal to
/// [`IGNORE_INDEX`]; returns (sum, number of counted targets). Dividing by the count gives
/// torch.nn.functional.cross_entropy's mean; dividing by a larger count gives a micro-batch's
/// share of a larger batch.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Result<(Tensor, usize)> {
    let keep = targets.ne(IGNORE_INDEX)?;
    let count = keep.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize;
    let safe = keep
        .where_cond(targets, &targets.zeros_like()?)?
        .to_dtype(DType::U32)?;
    let logp = log_softmax(logits)?;
    let picked = logp.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?;
    let picked = picked.mul(&keep.to_dtype(logits.dtype())?)?;
    Ok((picked.sum_all()?.neg()?, count))
}

/// Cross-entropy of each row of float32 logits (N, C) against int64 targets (N,), as one fused
/// op (CPU, and CUDA with the `cuda` feature) with its own one-pass backward: 0 for targets equal
/// to [`IGNORE_INDEX`], NaN for targets that are not a class.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, fused::CrossEntropy)
}

/// RMSNorm as [`rms_norm`], always as the fused op (float32, CPU or CUDA with the `cuda`
/// feature); an error for other dtypes.
pub fn rms_norm_fused(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, fused::RmsNorm { eps })
}

/// Mean cross-entropy with ignore-index, as torch.nn.functional.cross_entropy.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (sum, count) = cross_entropy_sum(logits, targets)?;
    sum / count.max(1) as f64
}

/// Summed squared error; divide by the element count for torch's MSELoss.
pub fn squared_error_sum(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    pred.sub(target)?.sqr()?.sum_all()
}
