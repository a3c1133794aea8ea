//! The CUDA launch of the multi-tensor AdamW step (kernels/adamw.cu), the `cuda_fwd` of
//! crate::train::optim's `AdamwStep`, whose CPU rule it matches bit for bit.

use candle_core::{Layout, Result};

use super::cuda::{
    BackendStorage, CudaStorage, CudaStorageSlice, LaunchConfig, PushKernelArg, WrapErr, f32s,
};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/adamw.ptx"));

/// AdamW's scalars for one step, as the CPU rule computes them in f32.
#[derive(Debug, Clone, Copy)]
pub struct AdamwScalars {
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub eps: f32,
    pub bias_correction2_sqrt: f32,
    pub neg_step_size: f32,
    /// 1 - lr · weight decay, or 1 where no decay applies.
    pub shrink: f32,
}

/// One AdamW step in place on state (3, n) = [params; exp_avg; exp_avg_sq] from grad (n).
pub fn adamw(
    state: &mut CudaStorage,
    ls: &Layout,
    grad: &CudaStorage,
    lg: &Layout,
    s: &AdamwScalars,
) -> Result<()> {
    const OP: &str = "xp-adamw";
    let g = f32s(grad, lg, OP)?;
    let n = g.len();
    let dev = state.device().clone();
    let (start, end) = match ls.contiguous_offsets() {
        Some(offsets) => offsets,
        None => candle_core::bail!("{OP}: the state must be contiguous"),
    };
    if end - start != 3 * n {
        candle_core::bail!("{OP}: state of {} values for {n} parameters", end - start)
    }
    let CudaStorageSlice::F32(data) = &mut state.slice else {
        candle_core::bail!("{OP}: float32 only")
    };
    let mut view = data.slice_mut(start..end);
    let func = dev.get_or_load_custom_func("xp_adamw_f32", "xp_adamw", PTX)?;
    let n64 = n as u64;
    let mut b = func.builder();
    b.arg(&mut view)
        .arg(&g)
        .arg(&n64)
        .arg(&s.one_minus_beta1)
        .arg(&s.beta2)
        .arg(&s.one_minus_beta2)
        .arg(&s.eps)
        .arg(&s.bias_correction2_sqrt)
        .arg(&s.neg_step_size)
        .arg(&s.shrink);
    let blocks = n.div_ceil(256).clamp(1, 1 << 16) as u32;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature; a grid-stride loop covers n.
    unsafe { b.launch(cfg) }.w()?;
    Ok(())
}
