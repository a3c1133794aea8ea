//! xp's own differentiable ops. candle-nn's fused `softmax_last_dim`, `rms_norm`, `layer_norm`,
//! `rope*` and flash attention record no backward pass (gradients silently stop), so training
//! never goes through them: every op here is built from candle ops that have one or is a custom op
//! with its own exact backward, and each is checked against PyTorch's outputs and gradients
//! (tests/reference/ops.py). On the CPU in float32, softmax, log_softmax, rms_norm, rope and
//! attention's scaled, masked softmax run as fused kernels (over rows, [`rows`]); on CUDA in
//! float32, rms_norm and cross-entropy (kernels/*.cu). The compositions in [`composed`] are the
//! reference they are tested against and what other dtypes and devices run, and what runs in
//! place of a kernel whose self-check on its device failed ([`kernels`]). One file per op family holds its fused kernel, CUDA launch, backward and
//! composition.

mod activation;
#[cfg(feature = "cuda")]
pub(crate) mod adamw;
mod attention;
#[cfg(feature = "cuda")]
mod cuda;
mod frozen;
pub mod kernels;
mod loss;
mod norm;
mod rope;
mod rows;
mod softmax;

pub use activation::{gelu, silu, swiglu};
pub use attention::{causal_attention, causal_attention_windowed};
pub use frozen::frozen_linear;
pub use loss::{
    IGNORE_INDEX, cross_entropy, cross_entropy_rows, cross_entropy_sum, cross_entropy_total,
    squared_error_sum,
};
pub use norm::{layer_norm, rms_norm, rms_norm_fused};
pub use rope::{rope, rope_frequencies, rope_tables, rope_tables_of};
pub use softmax::{log_softmax, softmax};

/// The compositions of candle ops (each with its own backward) that the fused kernels replace:
/// what other dtypes and devices run, and the reference the fused kernels are tested against.
pub mod composed {
    pub use super::norm::composed::*;
    pub use super::rope::composed::*;
    pub use super::softmax::composed::*;
}
