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
