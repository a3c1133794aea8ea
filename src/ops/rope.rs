//! Rotary position embeddings: the cos/sin tables (HF Llama's layout), and rope itself as a
//! fused CPU kernel whose backward is the transposed rotation, or as a composition.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::kernels::{Kernel, output};
use super::rows::{applies, slice};

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
    if applies(Kernel::Rope, &[x, cos, sin]) && x.rank() == 4 && !cos.track_op() && !sin.track_op()
    {
        let (_, _, t, d) = x.dims4()?;
        if d % 2 == 0 && cos.dims() == [t, d] && sin.dims() == [t, d] {
            // The kernel reads strided heads as long as each row is contiguous.
            let x = if x.stride()[3] == 1 {
                x.clone()
            } else {
                x.contiguous()?
            };
            let y = x.apply_op3(
                &cos.contiguous()?,
                &sin.contiguous()?,
                Rope { transpose: false },
            )?;
            return output(Kernel::Rope, y);
        }
    }
    composed::rope(x, cos, sin)
}

/// The composition of candle ops (each with its own backward) the fused kernel replaces.
pub mod composed {
    use candle_core::{D, Result, Tensor};

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
}

/// Rotary embedding of x (B, H, T, D) with constant tables (T, D): x·cos + rotate_half(x)·sin;
/// `transpose` applies the transposed map instead, which is the backward.
pub struct Rope {
    pub transpose: bool,
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "xp-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = s1 else {
            candle_core::bail!("{}: float32 only", self.name())
        };
        let (cos, sin) = (slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        // x may be strided (the heads are a transpose of the projection) as long as its rows
        // are contiguous.
        let (dims, stride) = (l1.dims(), l1.stride());
        let (b, heads, t, d) = match (dims, stride) {
            ([b, heads, t, d], [_, _, _, 1])
                if d % 2 == 0 && l2.dims() == [*t, *d] && l3.dims() == [*t, *d] =>
            {
                (*b, *heads, *t, *d)
            }
            _ => candle_core::bail!(
                "{}: x {:?} (stride {:?}) with tables {:?}, {:?}",
                self.name(),
                dims,
                stride,
                l2.dims(),
                l3.dims()
            ),
        };
        let h = d / 2;
        let mut y = vec![0.0f32; b * heads * t * d];
        let mut rows = y.chunks_exact_mut(d);
        for bi in 0..b {
            for hi in 0..heads {
                for ti in 0..t {
                    let start =
                        l1.start_offset() + bi * stride[0] + hi * stride[1] + ti * stride[2];
                    let Some(y) = rows.next() else {
                        candle_core::bail!("{}: output too short", self.name())
                    };
                    let (x1, x2) = x[start..start + d].split_at(h);
                    let (y1, y2) = y.split_at_mut(h);
                    let pos = ti * d;
                    let (cos, sin) = (&cos[pos..pos + d], &sin[pos..pos + d]);
                    if self.transpose {
                        for j in 0..h {
                            y1[j] = x1[j] * cos[j] + x2[j] * sin[h + j];
                            y2[j] = x2[j] * cos[h + j] - x1[j] * sin[j];
                        }
                    } else {
                        for j in 0..h {
                            y1[j] = x1[j] * cos[j] + -x2[j] * sin[j];
                            y2[j] = x2[j] * cos[h + j] + x1[j] * sin[h + j];
                        }
                    }
                }
            }
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The tables are constants: the fused op only runs when neither tracks a gradient.
        let transposed = Rope {
            transpose: !self.transpose,
        };
        let dx = dy.contiguous()?.apply_op3_no_bwd(cos, sin, &transposed)?;
        Ok((Some(dx), None, None))
    }
}
