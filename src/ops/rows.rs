//! What the fused kernels share: when they apply, and one pass over each row of the last
//! dimension of contiguous float32 tensors ([`map_rows`], [`map_row_pairs`]). Rows run one after
//! the other and every reduction is sequential, so results never depend on thread timing (the
//! parallelism is a batch's shards, crate::train::shards).

use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};

use super::kernels::{self, Kernel};

/// Whether `kernel` runs on `xs`: float32 on one device where it runs (every kernel on the CPU,
/// those with a CUDA launch on CUDA) and has passed its self-check ([`kernels`]).
pub fn applies(kernel: Kernel, xs: &[&Tensor]) -> bool {
    let Some(first) = xs.first() else {
        return false;
    };
    let device = first.device();
    xs.iter()
        .all(|x| x.dtype() == DType::F32 && x.device().same_device(device))
        && kernels::enabled(kernel, device)
}

/// The float32 elements of a contiguous tensor, in order.
pub(super) fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: float32 only")
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// The length of the last dimension, which must be at least 1.
pub(super) fn row_len(l: &Layout, op: &'static str) -> Result<usize> {
    match l.dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => candle_core::bail!("{op}: needs a non-empty last dimension"),
    }
}

pub(super) fn check_same(l1: &Layout, l2: &Layout, op: &'static str) -> Result<()> {
    if l1.dims() != l2.dims() {
        candle_core::bail!("{op}: shapes differ, {:?} and {:?}", l1.dims(), l2.dims())
    }
    Ok(())
}

/// A tensor of `x`'s shape whose rows (of the last dimension) are `f(row index, x's row,
/// output row)`, for a contiguous float32 `x`.
pub(super) fn map_rows(
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
pub(super) fn map_row_pairs(
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

/// The sum of a row's values, in f64 over eight running sums: a float32 running sum over a
/// large vocabulary rounds its many tiny terms away (a cross-entropy ~1e-4 too low at 50k
/// classes), and eight independent sums keep the loop from waiting on one addition chain. The
/// order is fixed, so the result is too.
pub(super) fn sum(values: impl IntoIterator<Item = f32>) -> f64 {
    let mut lanes = [0f64; 8];
    for (i, v) in values.into_iter().enumerate() {
        lanes[i % 8] += f64::from(v);
    }
    lanes.iter().sum()
}
