//! The update of one optimizer step: gradient clipping, then the optimizer applied to every
//! trainable parameter.

use candle_core::{Device, Tensor};

use crate::model::Built;

use super::optim::Optimizer;
use super::shards::Grads;

/// The global L2 norm of all gradients (as torch.nn.utils.clip_grad_norm_), scaling them down
/// to `max` when it is exceeded.
pub(super) fn clip(grads: &mut [Option<Vec<f32>>], max: Option<f64>) -> candle_core::Result<f64> {
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
    Ok(f64::from(total))
}

/// Applies the optimizer to every trainable parameter that got a gradient.
pub(super) fn update(
    built: &Built,
    grads: &Grads,
    optimizer: &mut dyn Optimizer,
    lr: f64,
    decay_all: bool,
    device: &Device,
) -> candle_core::Result<()> {
    for (index, (param, grad)) in built.params.iter().zip(grads).enumerate() {
        let (Some(grad), true) = (grad, param.trainable) else {
            continue;
        };
        let mut values = param.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        optimizer.update(index, &mut values, grad, lr, param.decay || decay_all);
        param
            .var
            .set(&Tensor::from_vec(values, param.var.shape(), device)?)?;
    }
    Ok(())
}
