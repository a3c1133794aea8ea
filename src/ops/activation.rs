//! Activations: SiLU, SwiGLU and exact GELU, as candle's ops (which have a backward).

use candle_core::{Result, Tensor};

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
