//! The optimizers: torch.optim's update rules (and Lion) on plain f32 slices, and their state
//! for checkpoints.
//!
//! Each rule is torch's CPU single-tensor implementation (`_single_tensor_sgd`, `_adam`,
//! `_rmsprop`, `_adagrad`; AdamW is Adam with decoupled decay) done element by element in
//! float32, in torch's order of operations and with ATen's x86 rounding: hyperparameters become
//! f32 where torch hands them to a kernel as scalars; bias corrections and decayed learning rates
//! are f64, as Python floats are; `add(other, alpha)`, `lerp` and `addcmul` are fused
//! multiply-adds, as ATen's CPU kernels compute them (`fmadd` in the vectorised ones, contracted
//! by the compiler in the others); `addcdiv` is not. Lion is Chen et al.'s rule as lucidrains'
//! lion-pytorch writes it. With a correctly rounded `sqrt` the results are PyTorch's bit for
//! bit; PyTorch's own float32 `sqrt` on CPU is MKL's where MKL is built in, and is off by an ulp
//! now and then, so against that build the parameters differ in the last place or two
//! (tests/it/optimizers.rs checks both against tests/reference/optimizers.py).
//!
//! State follows torch's `optimizer.state[p]`, one entry per parameter index, created on its
//! first update. Step counts are `u64`s, not torch's float32 (which stops counting at 2^24);
//! `{index}.step` stores one as three float32 limbs of 24, 24 and 16 bits, low first, each an
//! integer a float32 holds exactly, so the first limb alone is torch's `step` for any run
//! shorter than 2^24 steps. `load_state` checks names and that an index's buffers agree in
//! length; it cannot know the parameters' sizes, so whoever loads a checkpoint compares buffer
//! lengths with the model's parameters first: `update` panics on a parameter whose length
//! differs from its state's.

mod adagrad;
mod adam;
mod aten;
mod lion;
mod resident;
mod rmsprop;
mod sgd;
mod stateful;

use candle_core::{Device, Tensor, Var};

use crate::spec::{self, OptimizerKind};

use super::transfer::Transfers;
use adam::Adam;
pub use adam::AdamwStep;
use resident::resident;
use stateful::stateful;

pub trait Optimizer: Send {
    /// Updates parameter `index` in place from its gradient with learning rate `lr`.
    /// `decay` says whether weight decay applies to it (weight matrices yes; biases and norm weights no, unless decay-all).
    fn update(&mut self, index: usize, param: &mut [f32], grad: &[f32], lr: f64, decay: bool);
    /// Every state buffer, named `{index}.{buffer}` (e.g. `3.exp_avg`, `3.exp_avg_sq`, `3.step`, `0.momentum_buffer`), for checkpoints.
    fn state(&self) -> Vec<(String, Vec<f32>)>;
    /// Restores what `state` returned; an unknown or mis-sized buffer is an error naming it.
    fn load_state(&mut self, state: &[(String, Vec<f32>)]) -> Result<(), String>;
}

pub fn build(spec: &spec::OptimizerConfig) -> Box<dyn Optimizer> {
    match spec.kind {
        OptimizerKind::Sgd(hp) => stateful(hp),
        OptimizerKind::Adam(hp) => stateful(Adam {
            hp,
            decoupled: false,
        }),
        OptimizerKind::Adamw(hp) => stateful(Adam {
            hp,
            decoupled: true,
        }),
        OptimizerKind::Rmsprop(hp) => stateful(hp),
        OptimizerKind::Adagrad(hp) => stateful(hp),
        OptimizerKind::Lion(hp) => stateful(hp),
    }
}

/// An optimizer whose state stays on the parameters' device, updating them there with tensor
/// ops: the same rules as [`Optimizer`], to float32 rounding, and the same checkpoint buffers, so
/// a checkpoint of either resumes on the other.
pub trait DeviceOptimizer: Send {
    /// Updates parameter `index` in place from its gradient (f32, the parameter's shape).
    fn update(
        &mut self,
        index: usize,
        param: &Var,
        grad: &Tensor,
        lr: f64,
        decay: bool,
    ) -> candle_core::Result<()>;
    /// Every state buffer as [`Optimizer::state`] names it, copied to the host.
    fn state(&self, run: Option<&Transfers>) -> candle_core::Result<Vec<(String, Vec<f32>)>>;
    /// Restores what `state` returned, copying it to the device.
    fn load_state(
        &mut self,
        state: &[(String, Vec<f32>)],
        run: Option<&Transfers>,
    ) -> Result<(), String>;
}

/// The device-resident optimizer of `spec` on `device`. With `kernel`, Adam and AdamW steps that
/// the fused [`AdamwStep`] computes (no amsgrad; decoupled or no weight decay) run as that one
/// op per parameter (one CUDA launch), the rest as candle ops.
pub fn build_resident(
    spec: &spec::OptimizerConfig,
    device: &Device,
    kernel: bool,
) -> Box<dyn DeviceOptimizer> {
    let device = device.clone();
    match spec.kind {
        OptimizerKind::Sgd(hp) => resident(hp, device, kernel),
        OptimizerKind::Adam(hp) => resident(
            Adam {
                hp,
                decoupled: false,
            },
            device,
            kernel,
        ),
        OptimizerKind::Adamw(hp) => resident(
            Adam {
                hp,
                decoupled: true,
            },
            device,
            kernel,
        ),
        OptimizerKind::Rmsprop(hp) => resident(hp, device, kernel),
        OptimizerKind::Adagrad(hp) => resident(hp, device, kernel),
        OptimizerKind::Lion(hp) => resident(hp, device, kernel),
    }
}

/// One update rule; [`Stateful`] keeps its per-parameter state.
trait Rule: Send {
    /// The per-element buffers it keeps, in the order `update` receives them.
    fn buffers(&self) -> Vec<&'static str>;
    /// Whether it counts steps (torch keeps `step` for Adam, AdamW, RMSprop and Adagrad).
    fn counts_steps(&self) -> bool;
    /// What a new buffer holds.
    fn initial(&self) -> f32 {
        0.0
    }
    /// One step. `step` counts this one (from 1); `fresh` says the state was just created,
    /// where torch's buffer would still be `None`.
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        step: u64,
        fresh: bool,
        buffers: &mut [Vec<f32>],
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    );
    /// The same step on flattened float32 tensors: the parameter's new values, `buffers`
    /// replaced by their new values.
    #[allow(clippy::too_many_arguments)]
    fn update_tensors(
        &self,
        step: u64,
        fresh: bool,
        buffers: &mut [Tensor],
        param: &Tensor,
        grad: &Tensor,
        lr: f64,
        decay: bool,
    ) -> candle_core::Result<Tensor>;
    /// The fused op that computes this step, where one does.
    fn kernel(&self, _step: u64, _lr: f64, _decay: bool) -> Option<AdamwStep> {
        None
    }
}
