//! RMSNorm (fused: CPU kernel, CUDA launch of kernels/rms_norm.cu, one-pass backward; and its
//! composition) and LayerNorm (a composition).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, D, Layout, Result, Shape, Tensor};

#[cfg(feature = "cuda")]
use super::cuda::{
    BackendStorage, CudaStorage, CudaStorageSlice, LaunchConfig, PushKernelArg, WrapErr, f32s,
    per_row, rows_of, storage,
};
use super::kernels::{Kernel, output};
use super::rows::{applies, check_same, map_rows, row_len, slice};

#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/rms_norm.ptx"));

/// RMSNorm as HF Llama computes it: x / sqrt(mean(x²) + eps) · weight, over the last dimension:
/// the fused op in float32 on the CPU and on CUDA, the composition otherwise.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if applies(Kernel::RmsNorm, &[x, weight]) && weight.dims() == [x.dim(D::Minus1)?] {
        return output(Kernel::RmsNorm, rms_norm_fused(x, weight, eps)?);
    }
    composed::rms_norm(x, weight, eps)
}

/// RMSNorm as [`rms_norm`], always as the fused op (float32, CPU or CUDA with the `cuda`
/// feature); an error for other dtypes.
pub fn rms_norm_fused(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, RmsNorm { eps })
}

/// LayerNorm over the last dimension with the biased variance, as torch.nn.LayerNorm.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// The composition of candle ops (each with its own backward) the fused kernel replaces.
pub mod composed {
    use candle_core::{D, Result, Tensor};

    /// RMSNorm as HF Llama computes it: x / sqrt(mean(x²) + eps) · weight, over the last
    /// dimension.
    pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
        let mean_sq = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (mean_sq + eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&inv)?.broadcast_mul(weight)
    }
}

/// 1 / sqrt(mean(x²) + eps) of one row.
fn inv_rms(x: &[f32], eps: f64) -> f32 {
    let sum_sq: f32 = x.iter().map(|x| x * x).sum();
    1.0 / (sum_sq / x.len() as f32 + eps as f32).sqrt()
}

/// RMSNorm of (x, weight (D,)): x / sqrt(mean(x²) + eps) · weight over the last dimension.
pub struct RmsNorm {
    pub eps: f64,
}

impl RmsNorm {
    fn weight<'a>(&self, s: &'a CpuStorage, l: &Layout, d: usize) -> Result<&'a [f32]> {
        let w = slice(s, l, self.name())?;
        if w.len() != d {
            candle_core::bail!("{}: weight of {} for rows of {d}", self.name(), w.len())
        }
        Ok(w)
    }
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "xp-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let w = self.weight(s2, l2, row_len(l1, self.name())?)?;
        map_rows(s1, l1, self.name(), |_, x, y| {
            let inv = inv_rms(x, self.eps);
            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                *y = x * inv * w;
            }
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        rms_norm_fwd(s1, l1, s2, l2, self.eps as f32)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let rows = x.elem_count() / w.elem_count();
        // (rows + 1, D): dx, then dweight in the last row.
        let both = x.apply_op3_no_bwd(w, &dy.contiguous()?, &RmsNormBwd { eps: self.eps })?;
        let dx = both.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = both.narrow(0, rows, 1)?.reshape(w.shape())?;
        // A frozen weight (LoRA's base) gets no gradient: nothing would read it.
        Ok((Some(dx), w.track_op().then_some(dw)))
    }
}

/// With x̂ = x · r, r = 1 / rms(x), g = dy ⊙ weight: dx = r · (g − x̂ · mean(g ⊙ x̂)) and
/// dweight = Σ over rows of dy ⊙ x̂, from (x, weight, dy), stacked as (rows + 1, D).
struct RmsNormBwd {
    eps: f64,
}

impl CustomOp3 for RmsNormBwd {
    fn name(&self) -> &'static str {
        "xp-rms-norm-bwd"
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
        check_same(l1, l3, self.name())?;
        let x = slice(s1, l1, self.name())?;
        let d = row_len(l1, self.name())?;
        let w = RmsNorm { eps: self.eps }.weight(s2, l2, d)?;
        let dy = slice(s3, l3, self.name())?;
        let rows = x.len() / d;
        let mut out = vec![0.0f32; x.len() + d];
        let (dx, dw) = out.split_at_mut(x.len());
        let mut x_hat = vec![0.0f32; d];
        for ((x, dy), dx) in x
            .chunks_exact(d)
            .zip(dy.chunks_exact(d))
            .zip(dx.chunks_exact_mut(d))
        {
            let inv = inv_rms(x, self.eps);
            let mut dot = 0.0f32;
            for ((((x_hat, &x), &dy), &w), dw) in
                x_hat.iter_mut().zip(x).zip(dy).zip(w).zip(dw.iter_mut())
            {
                *x_hat = x * inv;
                dot += dy * w * *x_hat;
                *dw += dy * *x_hat;
            }
            let mean = dot / d as f32;
            for (((dx, &x_hat), &dy), &w) in dx.iter_mut().zip(&x_hat).zip(dy).zip(w) {
                *dx = inv * (dy * w - x_hat * mean);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 1, d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        rms_norm_bwd(s1, l1, s2, l2, s3, l3, self.eps as f32)
    }
}

/// RMSNorm's forward on CUDA: x (…, d), weight (d) → y (…, d).
#[cfg(feature = "cuda")]
fn rms_norm_fwd(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    const OP: &str = "xp-rms-norm";
    let (rows, d) = rows_of(lx, OP)?;
    let (xs, ws) = (f32s(x, lx, OP)?, f32s(w, lw, OP)?);
    if ws.len() != d as usize {
        candle_core::bail!("{OP}: weight of {} for rows of {d}", ws.len())
    }
    let dev = x.device();
    let func = dev.get_or_load_custom_func("xp_rms_norm_fwd_f32", "xp_rms_norm", PTX)?;
    // SAFETY: every element is written by the kernel.
    let y = unsafe { dev.alloc::<f32>(xs.len())? };
    let mut b = func.builder();
    b.arg(&xs).arg(&ws).arg(&y).arg(&d).arg(&eps);
    // SAFETY: the arguments match the kernel's signature; sizes were checked above.
    unsafe { b.launch(per_row(rows, d)) }.w()?;
    Ok((storage(CudaStorageSlice::F32(y), dev), lx.shape().clone()))
}

/// RMSNorm's backward on CUDA from (x, weight, dy): (rows + 1, d), dx in the first rows and
/// dweight in the last, as the CPU op returns them.
#[cfg(feature = "cuda")]
fn rms_norm_bwd(
    x: &CudaStorage,
    lx: &Layout,
    w: &CudaStorage,
    lw: &Layout,
    dy: &CudaStorage,
    ldy: &Layout,
    eps: f32,
) -> Result<(CudaStorage, Shape)> {
    const OP: &str = "xp-rms-norm-bwd";
    if lx.dims() != ldy.dims() {
        candle_core::bail!("{OP}: shapes differ, {:?} and {:?}", lx.dims(), ldy.dims())
    }
    let (rows, d) = rows_of(lx, OP)?;
    let (xs, ws, dys) = (f32s(x, lx, OP)?, f32s(w, lw, OP)?, f32s(dy, ldy, OP)?);
    if ws.len() != d as usize {
        candle_core::bail!("{OP}: weight of {} for rows of {d}", ws.len())
    }
    let dev = x.device();
    let n = xs.len();
    // SAFETY: the kernels write every element of both.
    let mut out = unsafe { dev.alloc::<f32>(n + d as usize)? };
    let partial = unsafe { dev.alloc::<f32>(n)? };
    {
        let func = dev.get_or_load_custom_func("xp_rms_norm_bwd_f32", "xp_rms_norm", PTX)?;
        let mut dx = out.slice_mut(0..n);
        let mut b = func.builder();
        b.arg(&xs)
            .arg(&ws)
            .arg(&dys)
            .arg(&mut dx)
            .arg(&partial)
            .arg(&d)
            .arg(&eps);
        // SAFETY: the arguments match the kernel's signature; sizes were checked above.
        unsafe { b.launch(per_row(rows, d)) }.w()?;
    }
    {
        let func = dev.get_or_load_custom_func("xp_sum_rows_f32", "xp_rms_norm", PTX)?;
        let mut dw = out.slice_mut(n..);
        let rows = i64::from(rows);
        let mut b = func.builder();
        b.arg(&partial).arg(&mut dw).arg(&rows).arg(&d);
        let cfg = LaunchConfig {
            grid_dim: ((d as u32).div_ceil(256), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: as above; one thread per column.
        unsafe { b.launch(cfg) }.w()?;
    }
    let shape = Shape::from((rows as usize + 1, d as usize));
    Ok((storage(CudaStorageSlice::F32(out), dev), shape))
}
