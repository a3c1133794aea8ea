//! The losses: softmax cross-entropy with an ignore index (a composition, and a fused op with
//! its CPU kernel, CUDA launch of kernels/cross_entropy.cu and one-pass backward) and squared
//! error.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

#[cfg(feature = "cuda")]
use super::cuda::{
    BackendStorage, CudaStorage, CudaStorageSlice, PushKernelArg, WrapErr, f32s, i64s as cuda_i64s,
    per_row, rows_of, storage,
};
use super::kernels::{Kernel, output};
use super::rows::{self, applies, map_rows, row_len, slice};
use super::softmax::log_softmax;

#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/cross_entropy.ptx"));

/// The label that marks a position without loss (PyTorch's and HF's -100).
pub const IGNORE_INDEX: i64 = -100;

/// Summed cross-entropy of logits (N, C) against targets (N,) i64, skipping targets equal to
/// [`IGNORE_INDEX`]; returns (sum, number of counted targets). Dividing by the count gives
/// torch.nn.functional.cross_entropy's mean; dividing by a larger count gives a micro-batch's
/// share of a larger batch.
pub fn cross_entropy_sum(logits: &Tensor, targets: &Tensor) -> Result<(Tensor, usize)> {
    let keep = targets.ne(IGNORE_INDEX)?;
    let count = keep.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize;
    Ok((cross_entropy_total(logits, targets)?, count))
}

/// The sum of [`cross_entropy_sum`] alone, which reads nothing back from the device: on CUDA in
/// float32 the fused op ([`cross_entropy_rows`]); elsewhere, the CPU included (whose results
/// stay those of the composition over its fused log-softmax), log-softmax and a gather.
pub fn cross_entropy_total(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if !logits.device().is_cpu()
        && targets.dtype() == DType::I64
        && applies(Kernel::CrossEntropy, &[logits])
    {
        return output(Kernel::CrossEntropy, cross_entropy_rows(logits, targets)?)?.sum_all();
    }
    let keep = targets.ne(IGNORE_INDEX)?;
    let safe = keep
        .where_cond(targets, &targets.zeros_like()?)?
        .to_dtype(DType::U32)?;
    let logp = log_softmax(logits)?;
    let picked = logp.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?;
    let picked = picked.mul(&keep.to_dtype(logits.dtype())?)?;
    picked.sum_all()?.neg()
}

/// Cross-entropy of each row of float32 logits (N, C) against int64 targets (N,), as one fused
/// op (CPU, and CUDA with the `cuda` feature) with its own one-pass backward: 0 for targets equal
/// to [`IGNORE_INDEX`], NaN for targets that are not a class.
pub fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits
        .contiguous()?
        .apply_op2(&targets.contiguous()?, CrossEntropy)
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
/// loss = logsumexp(x) − x[t], 0 where t is [`IGNORE_INDEX`] and NaN where t is not a
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
                    ((f64::from(max) - f64::from(x[t]))
                        + rows::sum(x.iter().map(|v| (v - max).exp())).ln())
                        as f32
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
        cross_entropy_fwd(s1, l1, s2, l2)
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
        _ if t == IGNORE_INDEX => Target::Ignored,
        _ => Target::Invalid,
    }
}

/// dx = (exp(x − lse) − onehot(t)) · dloss per row, lse − x[t] = loss, from (logits, targets,
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
                // exp(x − lse) with lse − x[t] = loss: no rounding of lse itself.
                let xt = x[t];
                for (j, (dx, &x)) in dx.iter_mut().zip(x).enumerate() {
                    let p = ((x - xt) - loss[r]).exp();
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
        cross_entropy_bwd(s1, l1, s2, l2, s3, l3)
    }
}

/// Cross-entropy's forward on CUDA: logits (rows, classes), targets (rows) int64 → loss (rows).
#[cfg(feature = "cuda")]
fn cross_entropy_fwd(
    logits: &CudaStorage,
    ll: &Layout,
    targets: &CudaStorage,
    lt: &Layout,
) -> Result<(CudaStorage, Shape)> {
    const OP: &str = "xp-cross-entropy";
    let (rows, classes) = rows_of(ll, OP)?;
    let (xs, ts) = (f32s(logits, ll, OP)?, cuda_i64s(targets, lt, OP)?);
    if ts.len() != rows as usize {
        candle_core::bail!("{OP}: {} targets for {rows} rows", ts.len())
    }
    let dev = logits.device();
    let func = dev.get_or_load_custom_func("xp_cross_entropy_fwd_f32", "xp_cross_entropy", PTX)?;
    // SAFETY: one value per row, each written by its block.
    let loss = unsafe { dev.alloc::<f32>(rows as usize)? };
    let mut b = func.builder();
    b.arg(&xs).arg(&ts).arg(&loss).arg(&classes);
    // SAFETY: the arguments match the kernel's signature; sizes were checked above.
    unsafe { b.launch(per_row(rows, classes)) }.w()?;
    Ok((
        storage(CudaStorageSlice::F32(loss), dev),
        Shape::from(rows as usize),
    ))
}

/// Cross-entropy's backward on CUDA from (logits, targets, (loss; dloss) as (2, rows)) →
/// dlogits.
#[cfg(feature = "cuda")]
fn cross_entropy_bwd(
    logits: &CudaStorage,
    ll: &Layout,
    targets: &CudaStorage,
    lt: &Layout,
    both: &CudaStorage,
    lb: &Layout,
) -> Result<(CudaStorage, Shape)> {
    const OP: &str = "xp-cross-entropy-bwd";
    let (rows, classes) = rows_of(ll, OP)?;
    let (xs, ts, both) = (
        f32s(logits, ll, OP)?,
        cuda_i64s(targets, lt, OP)?,
        f32s(both, lb, OP)?,
    );
    let r = rows as usize;
    if ts.len() != r || both.len() != 2 * r {
        candle_core::bail!(
            "{OP}: {} targets and {} loss values for {rows} rows",
            ts.len(),
            both.len()
        )
    }
    let (loss, dloss) = (both.slice(0..r), both.slice(r..));
    let dev = logits.device();
    let func = dev.get_or_load_custom_func("xp_cross_entropy_bwd_f32", "xp_cross_entropy", PTX)?;
    // SAFETY: every element is written by its row's block.
    let dx = unsafe { dev.alloc::<f32>(xs.len())? };
    let mut b = func.builder();
    b.arg(&xs)
        .arg(&ts)
        .arg(&loss)
        .arg(&dloss)
        .arg(&dx)
        .arg(&classes);
    // SAFETY: the arguments match the kernel's signature; sizes were checked above.
    unsafe { b.launch(per_row(rows, classes)) }.w()?;
    Ok((storage(CudaStorageSlice::F32(dx), dev), ll.shape().clone()))
}
