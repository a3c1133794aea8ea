//! The product `x · Wᵀ` with a frozen `W` (LoRA's base, or any weight that does not train):
//! its backward forms only the input's gradient `dx = dy · W`. candle's matmul backward always
//! forms both operands' gradients, so a frozen weight would cost a `dW = dyᵀ · x` per linear
//! layer and step (a third of the backward's products) that nothing reads.
//!
//! The forward and `dx` are candle's own matmul on the device's storage (gemm on the CPU, cuBLAS
//! on CUDA) with the layouts `x.matmul(&w.t())` hands it, so the values are that product's bit
//! for bit.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};

#[cfg(feature = "cuda")]
use super::cuda::CudaStorage;

/// `x · Wᵀ` for x (rows, in) and a frozen w (out, in): (rows, out), with a backward that returns
/// only x's gradient. A weight that is tracked (a variable, or computed from one) gets candle's
/// matmul and its gradient.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if w.track_op() || !x.track_op() || x.elem_count() == 0 || w.elem_count() == 0 {
        return x.matmul(&w.t()?);
    }
    let (_, k) = x.dims2()?;
    let (_, k2) = w.dims2()?;
    if k != k2 {
        candle_core::bail!(
            "frozen linear: x {:?} and weight {:?} do not multiply",
            x.dims(),
            w.dims()
        )
    }
    x.apply_op1(FrozenLinear { w: w.clone() })
}

/// candle's matmul arguments: (batch, m, n, k), the right operand's layout, and the output's
/// shape.
type Product = ((usize, usize, usize, usize), Layout, Shape);

/// The op over x, the weight captured (never an argument, so no gradient can flow to it).
struct FrozenLinear {
    w: Tensor,
}

impl FrozenLinear {
    /// candle's matmul arguments for x (rows, in) · wᵀ.
    fn dims(&self, l: &Layout) -> Result<Product> {
        let (m, k) = l.shape().dims2()?;
        let (n, _) = self.w.dims2()?;
        let wt = self.w.layout().transpose(0, 1)?;
        Ok(((1, m, n, k), wt, Shape::from((m, n))))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "xp-frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (bmnk, wt, shape) = self.dims(l)?;
        let (storage, _) = self.w.storage_and_layout();
        let Storage::Cpu(w) = &*storage else {
            candle_core::bail!("{}: the weight is not on the CPU", self.name())
        };
        Ok((s.matmul(w, bmnk, l, &wt)?, shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let (bmnk, wt, shape) = self.dims(l)?;
        let (storage, _) = self.w.storage_and_layout();
        let Storage::Cuda(w) = &*storage else {
            candle_core::bail!("{}: the weight is not on the GPU", self.name())
        };
        Ok((s.matmul(w, bmnk, l, &wt)?, shape))
    }

    /// dx = dy · W, as candle's matmul backward forms the left operand's gradient
    /// (`dy.matmul(&wᵀ.t())`, the same layout as W's).
    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dy.matmul(&self.w)?))
    }
}
