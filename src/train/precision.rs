//! The one precision rule: what a run computes in on its device. `auto` is bf16 on CUDA and
//! f32 on the CPU; bf16 and f16 on the CPU fall back to f32 with a warning.

use candle_core::DType;

use crate::spec::Precision;

/// The dtype a run's linear layers compute in, and a warning when the request falls back.
pub fn resolve(precision: Precision, cuda: bool) -> (DType, Option<String>) {
    match (precision, cuda) {
        (Precision::F32, _) | (Precision::Auto, false) => (DType::F32, None),
        (Precision::Bf16 | Precision::F16, false) => (
            DType::F32,
            Some(format!("{precision:?} was requested; the CPU computes in f32").to_lowercase()),
        ),
        (Precision::Auto | Precision::Bf16, true) => (DType::BF16, None),
        (Precision::F16, true) => (DType::F16, None),
    }
}

/// The name a dtype has in `summary.json` and the results (`f32`, `bf16`, `f16`).
pub fn label(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

/// [`resolve`] for a device as the run records it (`cpu`, `cuda`, `cuda:N`): the precision's
/// label and the fallback warning.
pub fn of_device(precision: Precision, device: &str) -> (&'static str, Option<String>) {
    let (dtype, warning) = resolve(precision, device != "cpu");
    (label(dtype), warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_is_bf16_on_cuda_and_f32_on_the_cpu() {
        assert_eq!(of_device(Precision::Auto, "cpu"), ("f32", None));
        assert_eq!(of_device(Precision::Auto, "cuda:1"), ("bf16", None));
        assert_eq!(of_device(Precision::F16, "cuda"), ("f16", None));
        let (label, warning) = of_device(Precision::Bf16, "cpu");
        assert_eq!(label, "f32");
        assert_eq!(
            warning.as_deref(),
            Some("bf16 was requested; the cpu computes in f32")
        );
    }
}
