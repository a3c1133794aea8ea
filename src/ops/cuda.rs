//! What the CUDA launches of xp's fused ops share (their kernels are in `kernels/`, compiled to
//! PTX by build.rs): views of candle's CUDA storage, one block per row. Each launch sits in its
//! op family's file as the `cuda_fwd` of a custom op whose `cpu_fwd` is the CPU reference it is
//! tested against (the tests below need a GPU).

use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::{CudaDevice, Layout, Result};

// What the launches in the op files use, imported there in one line.
pub(super) use candle_core::CudaStorage;
pub(super) use candle_core::backend::BackendStorage;
pub(super) use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
pub(super) use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};

/// The float32 elements of a contiguous tensor.
pub(super) fn f32s<'a>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, f32>> {
    match (&s.slice, l.contiguous_offsets()) {
        (CudaStorageSlice::F32(data), Some((start, end))) => Ok(data.slice(start..end)),
        (CudaStorageSlice::F32(_), None) => {
            candle_core::bail!("{op}: the input must be contiguous")
        }
        _ => candle_core::bail!("{op}: float32 only"),
    }
}

/// The int64 elements of a contiguous tensor.
pub(super) fn i64s<'a>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, i64>> {
    match (&s.slice, l.contiguous_offsets()) {
        (CudaStorageSlice::I64(data), Some((start, end))) => Ok(data.slice(start..end)),
        (CudaStorageSlice::I64(_), None) => {
            candle_core::bail!("{op}: the targets must be contiguous")
        }
        _ => candle_core::bail!("{op}: the targets must be int64"),
    }
}

/// (rows, last dimension) of a layout whose rows each get one block.
pub(super) fn rows_of(l: &Layout, op: &str) -> Result<(u32, i32)> {
    let d = match l.dims().last() {
        Some(&d) if d > 0 => d,
        _ => candle_core::bail!("{op}: needs a non-empty last dimension"),
    };
    let rows = l.shape().elem_count() / d;
    if rows == 0 {
        candle_core::bail!("{op}: needs at least one row")
    }
    match (u32::try_from(rows), i32::try_from(d)) {
        (Ok(rows), Ok(d)) if rows < i32::MAX as u32 => Ok((rows, d)),
        _ => candle_core::bail!("{op}: {rows} rows of {d} are too many for one launch"),
    }
}

/// One block per row, with a whole number of warps (the block reductions need them), at most
/// 1024 threads.
pub(super) fn per_row(rows: u32, d: i32) -> LaunchConfig {
    let threads = (d.clamp(1, 1024) as u32).div_ceil(32) * 32;
    LaunchConfig {
        grid_dim: (rows, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(super) fn storage(slice: CudaStorageSlice, dev: &CudaDevice) -> CudaStorage {
    CudaStorage {
        slice,
        device: dev.clone(),
    }
}

#[cfg(test)]
mod tests {
    //! Each kernel against the CPU op it implements, on random inputs. Run on a GPU machine:
    //! `cargo test --release --features cuda --lib -- --include-ignored ops::cuda`.

    use candle_core::{DType, Device, Tensor, Var};

    use crate::rng::Rng;
    use crate::train::optim::AdamwStep;

    fn gpu() -> Device {
        Device::new_cuda(0).expect("a CUDA device")
    }

    fn random(shape: &[usize], seed: u64, scale: f64) -> Tensor {
        let mut rng = Rng::new(seed);
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).expect("shape matches data")
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("float32 values")
    }

    /// Asserts |got − want| ≤ abs + rel·|want| everywhere (NaN only where NaN is wanted).
    fn close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= abs + rel * w.abs();
            assert!(ok, "{what}[{i}]: got {g}, want {w}");
        }
    }

    /// The output of `op` and the gradients of a fixed weighting of it for every input, on
    /// `device`.
    fn run(
        device: &Device,
        inputs: &[&Tensor],
        op: &dyn Fn(&[&Tensor]) -> candle_core::Result<Tensor>,
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|x| Var::from_tensor(&x.to_device(device).expect("copy")).expect("var"))
            .collect();
        let xs: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let out = op(&xs).expect("forward");
        let weight = random(out.dims(), 99, 1.0).to_device(device).expect("copy");
        let grads = out
            .mul(&weight)
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        let grads = xs
            .iter()
            .map(|x| flat(grads.get(x).expect("a gradient")))
            .collect();
        (flat(&out), grads)
    }

    #[test]
    #[ignore = "needs a GPU"]
    fn rms_norm_kernels_match_the_cpu() {
        for (rows, d) in [(1, 7), (37, 576), (5, 4096), (3, 1500)] {
            let x = random(&[rows, d], 1, 2.0);
            let w = random(&[d], 2, 1.0);
            let op = |xs: &[&Tensor]| super::super::rms_norm_fused(xs[0], xs[1], 1e-5);
            let (want, want_grads) = run(&Device::Cpu, &[&x, &w], &op);
            let (got, got_grads) = run(&gpu(), &[&x, &w], &op);
            close(&format!("rms_norm {rows}x{d}"), &got, &want, 1e-5, 1e-4);
            close(
                &format!("d/dx {rows}x{d}"),
                &got_grads[0],
                &want_grads[0],
                1e-5,
                1e-4,
            );
            // dweight sums over rows: more rounding.
            close(
                &format!("d/dw {rows}x{d}"),
                &got_grads[1],
                &want_grads[1],
                1e-4,
                1e-3,
            );
        }
    }

    #[test]
    #[ignore = "needs a GPU"]
    fn cross_entropy_kernels_match_the_cpu() {
        for (rows, classes) in [(1, 3), (64, 1000), (9, 49_152)] {
            let logits = random(&[rows, classes], 3, 4.0);
            let mut rng = Rng::new(4);
            let targets: Vec<i64> = (0..rows)
                .map(|r| {
                    if r % 7 == 3 {
                        crate::ops::IGNORE_INDEX
                    } else {
                        (rng.unit() * classes as f64) as i64 % classes as i64
                    }
                })
                .collect();
            let run_on = |device: &Device| {
                let t = Tensor::new(targets.as_slice(), device).expect("targets");
                let op = |xs: &[&Tensor]| super::super::cross_entropy_rows(xs[0], &t);
                run(device, &[&logits], &op)
            };
            let (want, want_grads) = run_on(&Device::Cpu);
            let (got, got_grads) = run_on(&gpu());
            close(&format!("loss {rows}x{classes}"), &got, &want, 1e-5, 1e-5);
            close(
                &format!("dlogits {rows}x{classes}"),
                &got_grads[0],
                &want_grads[0],
                1e-6,
                1e-4,
            );
        }
        // A target outside the classes gives NaN on both.
        let logits = random(&[2, 5], 5, 1.0).to_device(&gpu()).expect("copy");
        let t = Tensor::new(&[5i64, 1], &gpu()).expect("targets");
        let loss = flat(&super::super::cross_entropy_rows(&logits, &t).expect("forward"));
        assert!(loss[0].is_nan() && loss[1].is_finite(), "{loss:?}");
    }

    #[test]
    #[ignore = "needs a GPU"]
    fn adamw_kernel_matches_the_cpu_bit_for_bit() {
        let n = 100_003;
        for decay in [true, false] {
            let p = random(&[n], 6, 0.5);
            let zeros = Tensor::zeros((2, n), DType::F32, &Device::Cpu).expect("zeros");
            let state = Tensor::cat(&[&p.unsqueeze(0).expect("row"), &zeros], 0).expect("cat");
            let cpu = state.copy().expect("copy");
            let gpu_state = state.to_device(&gpu()).expect("copy");
            for step in 1..=4u64 {
                let g = random(&[n], 10 + step, 1e-2);
                let op = AdamwStep {
                    beta1: 0.9,
                    beta2: 0.95,
                    eps: 1e-8,
                    weight_decay: 0.1,
                    step,
                    lr: 3e-4 * step as f64,
                    decay,
                };
                op.apply(&cpu, &g).expect("cpu step");
                op.apply(&gpu_state, &g.to_device(&gpu()).expect("copy"))
                    .expect("gpu step");
                let (want, got) = (flat(&cpu), flat(&gpu_state));
                let differ = want
                    .iter()
                    .zip(&got)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(
                    differ, 0,
                    "decay {decay}, step {step}: {differ} values differ"
                );
            }
        }
    }
}
