//! Fused CPU kernels of xp's ops for contiguous float32 tensors: one pass over each row of the
//! last dimension ([`map_rows`], [`map_row_pairs`]), with a backward that computes the exact
//! gradient. Rows run one after the other and every reduction is sequential, so results never
//! depend on thread timing (the parallelism is a batch's shards, crate::train).

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};

/// Whether the fused kernels can run on `xs`: float32 on the CPU.
pub fn applies(xs: &[&Tensor]) -> bool {
    xs.iter()
        .all(|x| x.dtype() == DType::F32 && x.device().is_cpu())
}

/// The float32 elements of a contiguous tensor, in order.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: float32 only")
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// The length of the last dimension, which must be at least 1.
fn row_len(l: &Layout, op: &'static str) -> Result<usize> {
    match l.dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => candle_core::bail!("{op}: needs a non-empty last dimension"),
    }
}

fn check_same(l1: &Layout, l2: &Layout, op: &'static str) -> Result<()> {
    if l1.dims() != l2.dims() {
        candle_core::bail!("{op}: shapes differ, {:?} and {:?}", l1.dims(), l2.dims())
    }
    Ok(())
}

/// A tensor of `x`'s shape whose rows (of the last dimension) are `f(row index, x's row,
/// output row)`, for a contiguous float32 `x`.
fn map_rows(
    s: &CpuStorage,
    l: &Layout,
    op: &'static str,
    f: impl Fn(usize, &[f32], &mut [f32]),
) -> Result<(CpuStorage, Shape)> {
    let x = slice(s, l, op)?;
    let d = row_len(l, op)?;
    let mut y = vec![0.0f32; x.len()];
    for (r, (x, y)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
        f(r, x, y);
    }
    Ok((CpuStorage::F32(y), l.shape().clone()))
}

/// A tensor of the shape `a` and `b` share whose rows are `f(a's row, b's row, output row)`,
/// for contiguous float32 `a` and `b`.
fn map_row_pairs(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    op: &'static str,
    f: impl Fn(&[f32], &[f32], &mut [f32]),
) -> Result<(CpuStorage, Shape)> {
    check_same(l1, l2, op)?;
    let (a, b) = (slice(s1, l1, op)?, slice(s2, l2, op)?);
    let d = row_len(l1, op)?;
    let mut out = vec![0.0f32; a.len()];
    for ((a, b), out) in a
        .chunks_exact(d)
        .zip(b.chunks_exact(d))
        .zip(out.chunks_exact_mut(d))
    {
        f(a, b, out);
    }
    Ok((CpuStorage::F32(out), l1.shape().clone()))
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
    let mut sum = 0.0f32;
    for y in y.iter_mut() {
        *y = (*y - max).exp();
        sum += *y;
    }
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
            let dot: f32 = y.iter().zip(dy).map(|(y, dy)| y * dy).sum();
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
            let mut sum = 0.0f32;
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x - max;
                sum += y.exp();
            }
            let lse = sum.ln();
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
            let sum: f32 = dy.iter().sum();
            for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                *dx = dy - y.exp() * sum;
            }
        })
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
        super::cuda::rms_norm_fwd(s1, l1, s2, l2, self.eps as f32)
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
        Ok((Some(dx), Some(dw)))
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
        super::cuda::rms_norm_bwd(s1, l1, s2, l2, s3, l3, self.eps as f32)
    }
}

/// The int64 elements of a contiguous tensor.
fn i64s<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [i64]> {
    let CpuStorage::I64(data) = s else {
        candle_core::bail!("{op}: the targets must be int64")
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the targets must be contiguous"),
    }
}

/// Softmax cross-entropy of each row of logits (N, C) against its target (N,) int64, fused:
/// loss = logsumexp(x) − x[t], 0 where t is [`super::IGNORE_INDEX`] and NaN where t is not a
/// class. The backward is one pass over each row, dx = (softmax(x) − onehot(t)) · dloss, with
/// logsumexp recovered from the loss.
pub struct CrossEntropy;

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "xp-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let c = row_len(l1, self.name())?;
        let t = i64s(s2, l2, self.name())?;
        if t.len() * c != x.len() {
            candle_core::bail!(
                "{}: {} targets for {} rows",
                self.name(),
                t.len(),
                x.len() / c
            )
        }
        let loss = x
            .chunks_exact(c)
            .zip(t)
            .map(|(x, &t)| match class(t, c) {
                Target::Ignored => 0.0,
                Target::Invalid => f32::NAN,
                Target::Class(t) => {
                    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = x.iter().map(|x| (x - max).exp()).sum();
                    (max + sum.ln()) - x[t]
                }
            })
            .collect();
        Ok((CpuStorage::F32(loss), Shape::from(t.len())))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        super::cuda::cross_entropy_fwd(s1, l1, s2, l2)
    }

    fn bwd(
        &self,
        x: &Tensor,
        targets: &Tensor,
        loss: &Tensor,
        dloss: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let both = Tensor::stack(&[loss, &dloss.contiguous()?], 0)?;
        let dx = x.apply_op3_no_bwd(targets, &both, &CrossEntropyBwd)?;
        Ok((Some(dx), None))
    }
}

/// What a target names.
enum Target {
    Ignored,
    Invalid,
    Class(usize),
}

fn class(t: i64, classes: usize) -> Target {
    match usize::try_from(t) {
        Ok(t) if t < classes => Target::Class(t),
        _ if t == super::IGNORE_INDEX => Target::Ignored,
        _ => Target::Invalid,
    }
}

/// dx = (exp(x − lse) − onehot(t)) · dloss per row, lse = loss + x[t], from (logits, targets,
/// (loss; dloss) stacked as (2, N)).
struct CrossEntropyBwd;

impl CustomOp3 for CrossEntropyBwd {
    fn name(&self) -> &'static str {
        "xp-cross-entropy-bwd"
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
        let x = slice(s1, l1, self.name())?;
        let c = row_len(l1, self.name())?;
        let t = i64s(s2, l2, self.name())?;
        let both = slice(s3, l3, self.name())?;
        let rows = x.len() / c;
        if t.len() != rows || both.len() != 2 * rows {
            candle_core::bail!(
                "{}: {} targets and {} loss values for {rows} rows",
                self.name(),
                t.len(),
                both.len()
            )
        }
        let (loss, dloss) = both.split_at(rows);
        map_rows(s1, l1, self.name(), |r, x, dx| match class(t[r], c) {
            Target::Ignored => {}
            Target::Invalid => dx.fill(f32::NAN),
            Target::Class(t) => {
                let lse = loss[r] + x[t];
                for (j, (dx, &x)) in dx.iter_mut().zip(x).enumerate() {
                    let p = (x - lse).exp();
                    *dx = (p - if j == t { 1.0 } else { 0.0 }) * dloss[r];
                }
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
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        super::cuda::cross_entropy_bwd(s1, l1, s2, l2, s3, l3)
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
