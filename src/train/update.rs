//! The update of one optimizer step: f16's unscaling, gradient clipping, then the optimizer
//! applied to every trainable parameter. Two paths with the same rules: on the host
//! (parameters and gradients copied to `Vec`s, torch's rules bit for bit; the CPU's) and on the
//! device (gradients, clipping, optimizer state and update stay there as tensor ops; CUDA's, and
//! the CPU's when asked for). Only scalars cross to the host on the device path: whether f16's
//! gradients are finite (f16 only, each step), and the gradient norm when it is logged.

use candle_core::{D, Device, Tensor};

use crate::model::Built;
use crate::spec::OptimizerConfig;

use super::loss_scale::LossScale;
use super::optim::{self, DeviceOptimizer, Optimizer};
use super::shards::Grads;
use super::transfer::{self, Kind, Transfers};

/// A run's optimizer on the path its step takes.
pub(super) enum Stepper {
    Host(Box<dyn Optimizer>),
    Device(Box<dyn DeviceOptimizer>),
}

/// The global gradient norm of a step: a value on the host, or a tensor on the device read only
/// when it is wanted.
pub(super) enum Norm {
    Host(f64),
    Device(Tensor),
}

impl Norm {
    pub fn read(&self, run: &Transfers) -> candle_core::Result<f64> {
        match self {
            Norm::Host(n) => Ok(*n),
            Norm::Device(t) => transfer::scalar(t, Some(run)),
        }
    }
}

impl Stepper {
    /// The optimizer of `config`: on the device when `resident`, where the fused AdamW kernel
    /// runs on CUDA.
    pub fn new(config: &OptimizerConfig, device: &Device, resident: bool) -> Self {
        match resident {
            true => Stepper::Device(optim::build_resident(config, device, device.is_cuda())),
            false => Stepper::Host(optim::build(config)),
        }
    }

    /// Every state buffer as checkpoints name it.
    pub fn state(&self, run: &Transfers) -> candle_core::Result<Vec<(String, Vec<f32>)>> {
        match self {
            Stepper::Host(o) => Ok(o.state()),
            Stepper::Device(o) => o.state(Some(run)),
        }
    }

    pub fn load_state(
        &mut self,
        state: &[(String, Vec<f32>)],
        run: &Transfers,
    ) -> Result<(), String> {
        match self {
            Stepper::Host(o) => o.load_state(state),
            Stepper::Device(o) => o.load_state(state, Some(run)),
        }
    }

    /// One step from the summed gradients: unscaled by f16's `scale` (a step whose gradients
    /// overflowed is skipped: `None`), clipped to `max_norm`, then applied. Returns the gradient
    /// norm before clipping.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        built: &Built,
        grads: Grads,
        scale: Option<&mut LossScale>,
        max_norm: Option<f64>,
        lr: f64,
        decay_all: bool,
        run: &Transfers,
    ) -> candle_core::Result<Option<Norm>> {
        match self {
            Stepper::Host(optimizer) => {
                let mut host: Vec<Option<Vec<f32>>> = (grads.iter())
                    .map(|g| {
                        g.as_ref()
                            .map(|g| transfer::to_host(g, Kind::Gradients, Some(run)))
                            .transpose()
                    })
                    .collect::<candle_core::Result<_>>()?;
                if !scale.is_none_or(|s| s.unscale(&mut host)) {
                    return Ok(None);
                }
                let norm = clip(&mut host, max_norm);
                update(built, &host, optimizer.as_mut(), lr, decay_all, run)?;
                Ok(Some(Norm::Host(norm)))
            }
            Stepper::Device(optimizer) => {
                let mut grads = grads;
                if let Some(scale) = scale
                    && !scale.unscale_tensors(&mut grads, Some(run))?
                {
                    return Ok(None);
                }
                let norm = clip_tensors(&mut grads, max_norm)?;
                for (index, (param, grad)) in built.params.iter().zip(&grads).enumerate() {
                    let (Some(grad), true) = (grad, param.trainable) else {
                        continue;
                    };
                    let decay = param.decay || decay_all;
                    optimizer.update(index, &param.var, grad, lr, decay)?;
                }
                Ok(norm.map(Norm::Device))
            }
        }
    }
}

/// The global L2 norm of all gradients (as torch.nn.utils.clip_grad_norm_), scaling them down
/// to `max` when it is exceeded.
fn clip(grads: &mut [Option<Vec<f32>>], max: Option<f64>) -> f64 {
    let norms: Vec<f32> = grads
        .iter()
        .flatten()
        .map(|g| g.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect();
    let total = norms.iter().map(|n| n * n).sum::<f32>().sqrt();
    if let Some(max) = max {
        let coef = (max as f32 / (total + 1e-6)).min(1.0);
        if coef < 1.0 {
            grads
                .iter_mut()
                .flatten()
                .for_each(|g| g.iter_mut().for_each(|v| *v *= coef));
        }
    }
    f64::from(total)
}

/// [`clip`] as tensor ops on the device: the norm (of the per-tensor norms, as torch) stays a
/// tensor, and so does the clipping coefficient, min(max / (norm + 1e-6), 1), which multiplies
/// every gradient. `None` when no parameter got a gradient.
fn clip_tensors(
    grads: &mut [Option<Tensor>],
    max: Option<f64>,
) -> candle_core::Result<Option<Tensor>> {
    let norms: Vec<Tensor> = grads
        .iter()
        .flatten()
        .map(|g| g.sqr()?.sum_all()?.sqrt())
        .collect::<candle_core::Result<_>>()?;
    if norms.is_empty() {
        return Ok(None);
    }
    let total = Tensor::stack(&norms, 0)?
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?;
    if let Some(max) = max {
        let coef = total
            .affine(1.0, 1e-6)?
            .recip()?
            .affine(f64::from(max as f32), 0.0)?
            .minimum(1.0)?
            .reshape(())?;
        for g in grads.iter_mut().flatten() {
            *g = g.broadcast_mul(&coef)?;
        }
    }
    Ok(Some(total.reshape(())?))
}

/// Applies the host optimizer to every trainable parameter that got a gradient, copying each
/// such parameter to the host and back.
fn update(
    built: &Built,
    grads: &[Option<Vec<f32>>],
    optimizer: &mut dyn Optimizer,
    lr: f64,
    decay_all: bool,
    run: &Transfers,
) -> candle_core::Result<()> {
    for (index, (param, grad)) in built.params.iter().zip(grads).enumerate() {
        let (Some(grad), true) = (grad, param.trainable) else {
            continue;
        };
        let tensor = param.var.as_tensor();
        let mut values = transfer::to_host(tensor, Kind::Parameters, Some(run))?;
        optimizer.update(index, &mut values, grad, lr, param.decay || decay_all);
        let (shape, device) = (param.var.shape().clone(), tensor.device().clone());
        let updated = transfer::to_device(values, shape, &device, Kind::Parameters, Some(run))?;
        param.var.set(&updated)?;
    }
    Ok(())
}
