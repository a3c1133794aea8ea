//! ATen's float32 CPU kernels, one element at a time, in the rounding the update rules need to
//! match torch bit for bit.

/// `a.add(b, alpha=alpha)`: ATen's vectorised add is `fmadd(b, alpha, a)`.
pub(super) fn add(a: f32, b: f32, alpha: f32) -> f32 {
    b.mul_add(alpha, a)
}

/// `a.addcmul(b, c, value=value)`: ATen's `a + value * b * c`, which the compiler contracts to
/// `fma(value * b, c, a)`.
pub(super) fn addcmul(a: f32, b: f32, c: f32, value: f32) -> f32 {
    (value * b).mul_add(c, a)
}

/// `a.addcdiv(b, c, value=value)`: `a + value * b / c`, left to right.
pub(super) fn addcdiv(a: f32, b: f32, c: f32, value: f32) -> f32 {
    a + value * b / c
}

/// `a.lerp(b, weight)`: ATen's vectorised `lerp_vec`, which for a weight of 1/2 or more works
/// from `b` for accuracy near 1.
pub(super) fn lerp(a: f32, b: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        weight.mul_add(b - a, a)
    } else {
        (weight - 1.0).mul_add(b - a, b)
    }
}

/// `torch.sign`: 0 at 0 (where `f32::signum` gives ±1).
pub(super) fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// `torch.maximum`, which propagates NaN (where `f32::max` drops it).
pub(super) fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || a > b { a } else { b }
}

/// The same ops on float32 tensors, as candle composes them for the device-resident step
/// ([`super::resident`]): no fused multiply-adds, so they agree with the element versions to
/// float32 rounding, not bit for bit. Scalars enter as f32, as torch hands them to its kernels.
pub(super) mod tensor {
    use candle_core::{Result, Tensor};

    /// `a * s`.
    pub(in super::super) fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
        a.affine(f64::from(s), 0.0)
    }

    /// `a.add(b, alpha=alpha)`.
    pub(in super::super) fn add(a: &Tensor, b: &Tensor, alpha: f32) -> Result<Tensor> {
        a.add(&scale(b, alpha)?)
    }

    /// `a.addcmul(b, c, value=value)`.
    pub(in super::super) fn addcmul(
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        value: f32,
    ) -> Result<Tensor> {
        a.add(&scale(&b.mul(c)?, value)?)
    }

    /// `a.addcdiv(b, c, value=value)`.
    pub(in super::super) fn addcdiv(
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        value: f32,
    ) -> Result<Tensor> {
        a.add(&scale(b, value)?.div(c)?)
    }

    /// `a.lerp(b, weight)`.
    pub(in super::super) fn lerp(a: &Tensor, b: &Tensor, weight: f32) -> Result<Tensor> {
        a.add(&scale(&b.sub(a)?, weight)?)
    }
}
