//! The fused kernels' self-check. The first time a kernel is asked for on a device it runs on
//! small random inputs beside its composition of candle ops, forward and backward; a kernel that
//! disagrees is turned off on that device for the rest of the process (the composition runs in
//! its place), so a wrong kernel can slow a run down but never corrupt it. The training loop
//! checks every kernel of its device before its first step ([`verify`]) and reports the ones
//! turned off. A kernel that lives outside this module (the optimizer's AdamW step) brings its own
//! check ([`enabled_by`]). [`sabotage`] makes a kernel wrong on purpose, for the tests of this
//! mechanism.

use std::sync::Mutex;

use candle_core::{D, DType, Device, DeviceLocation, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::composed;
use super::loss::{CrossEntropy, IGNORE_INDEX};
use super::norm::RmsNorm;
use super::rope::{Rope, rope_tables};
use super::softmax::{CausalSoftmax, LogSoftmax, Softmax};
use crate::rng::Rng;

/// xp's fused kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Softmax,
    LogSoftmax,
    /// Attention's scaled, masked softmax.
    CausalSoftmax,
    RmsNorm,
    Rope,
    CrossEntropy,
    /// The optimizer's AdamW step over a parameter (crate::train::optim::AdamwStep).
    Adamw,
}

impl Kernel {
    pub const ALL: [Kernel; 7] = [
        Kernel::Softmax,
        Kernel::LogSoftmax,
        Kernel::CausalSoftmax,
        Kernel::RmsNorm,
        Kernel::Rope,
        Kernel::CrossEntropy,
        Kernel::Adamw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Softmax => "softmax",
            Kernel::LogSoftmax => "log_softmax",
            Kernel::CausalSoftmax => "causal_softmax",
            Kernel::RmsNorm => "rms_norm",
            Kernel::Rope => "rope",
            Kernel::CrossEntropy => "cross_entropy",
            Kernel::Adamw => "adamw",
        }
    }

    /// Whether this module holds its check (the others bring theirs to [`Registry::enabled_by`]).
    fn checked_here(self) -> bool {
        self != Kernel::Adamw
    }

    pub fn parse(name: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it runs on `device`: every kernel on the CPU; on CUDA those with a launch and a
    /// backward that runs there too (kernels/*.cu).
    pub fn runs_on(self, device: &Device) -> bool {
        match device.location() {
            DeviceLocation::Cpu => true,
            DeviceLocation::Cuda { .. } => {
                cfg!(feature = "cuda")
                    && matches!(self, Kernel::RmsNorm | Kernel::CrossEntropy | Kernel::Adamw)
            }
            DeviceLocation::Metal { .. } => false,
        }
    }
}

/// A kernel the self-check turned off on a device, and by how much it missed: the largest
/// difference from the composition over its outputs and gradients, relative to their largest
/// magnitude.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disabled {
    pub kernel: String,
    pub device: String,
    pub max_error: f64,
}

impl Disabled {
    /// train.log's line.
    pub fn describe(&self) -> String {
        format!(
            "warning: kernel {} disabled on {}: its self-check differs from the composed ops by {:.3e} (relative); the composed ops run instead",
            self.kernel, self.device, self.max_error
        )
    }
}

/// The largest relative difference a kernel may show against its composition: float32 rounding
/// of a different order of operations stays far below it.
pub const TOLERANCE: f64 = 1e-4;

/// The verdicts of one process (or of a test's own registry).
pub struct Registry {
    /// (kernel, device, largest relative difference found); NaN when the check failed to run.
    checked: Mutex<Vec<(Kernel, DeviceLocation, f64)>>,
    wrong: Mutex<Vec<Kernel>>,
}

static PROCESS: Registry = Registry::new();

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub const fn new() -> Self {
        Registry {
            checked: Mutex::new(Vec::new()),
            wrong: Mutex::new(Vec::new()),
        }
    }

    /// Whether `kernel` may run on `device`: it runs there and passed its check (run now on
    /// first use).
    pub fn enabled(&self, kernel: Kernel, device: &Device) -> bool {
        kernel.runs_on(device) && self.error(kernel, device) <= TOLERANCE
    }

    /// Whether `kernel`, whose check is `check` (its largest relative difference from the
    /// composition), may run on `device`: checked now on first use.
    pub fn enabled_by(
        &self,
        kernel: Kernel,
        device: &Device,
        check: &dyn Fn() -> Result<f64>,
    ) -> bool {
        kernel.runs_on(device) && self.error_with(kernel, device, check) <= TOLERANCE
    }

    /// The kernel's checked difference on `device`, checking it first if it never was.
    fn error(&self, kernel: Kernel, device: &Device) -> f64 {
        self.error_with(kernel, device, &|| self.check(kernel, device))
    }

    fn error_with(&self, kernel: Kernel, device: &Device, check: &dyn Fn() -> Result<f64>) -> f64 {
        let at = device.location();
        let known = |c: &Vec<(Kernel, DeviceLocation, f64)>| {
            c.iter()
                .find(|(k, d, _)| *k == kernel && *d == at)
                .map(|e| e.2)
        };
        if let Some(e) = self.checked.lock().ok().and_then(|c| known(&c)) {
            return e;
        }
        // Checked without the lock held: two threads may both check, with the same result.
        let error = check().unwrap_or(f64::NAN);
        if let Ok(mut c) = self.checked.lock() {
            if let Some(e) = known(&c) {
                return e;
            }
            c.push((kernel, at, error));
        }
        error
    }

    /// Checks every kernel of this module that runs on `device` (those never checked there),
    /// and returns the ones turned off there, the others' too where they were checked.
    pub fn verify(&self, device: &Device) -> Vec<Disabled> {
        let mut off = Vec::new();
        for k in Kernel::ALL.into_iter().filter(|k| k.runs_on(device)) {
            let error = match k.checked_here() {
                true => self.error(k, device),
                false => self
                    .checked
                    .lock()
                    .ok()
                    .and_then(|c| {
                        let at = device.location();
                        c.iter().find(|(c, d, _)| *c == k && *d == at).map(|e| e.2)
                    })
                    .unwrap_or(0.0),
            };
            if error.is_nan() || error > TOLERANCE {
                off.push(Disabled {
                    kernel: k.name().to_owned(),
                    device: device_name(device),
                    max_error: error,
                });
            }
        }
        off
    }

    /// Makes `kernel` wrong from now on (its outputs off by a quarter), for tests of the check.
    pub fn sabotage(&self, kernel: Kernel) {
        if let Ok(mut w) = self.wrong.lock()
            && !w.contains(&kernel)
        {
            w.push(kernel);
        }
    }

    /// A fused kernel's output as the run gets it: wrong when sabotaged.
    pub fn output(&self, kernel: Kernel, y: Tensor) -> Result<Tensor> {
        let wrong = self.wrong.lock().is_ok_and(|w| w.contains(&kernel));
        if wrong { y.affine(1.25, 0.0) } else { Ok(y) }
    }

    /// The largest difference of the kernel from its composition over the output and the
    /// gradients of a fixed random weighting of it, relative to their largest magnitude.
    fn check(&self, kernel: Kernel, device: &Device) -> Result<f64> {
        let random = |shape: &[usize], seed: u64, scale: f64| -> Result<Tensor> {
            let mut rng = Rng::new(seed);
            let n = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
            Tensor::from_vec(data, shape, device)
        };
        type Op<'a> = Box<dyn Fn(&[&Tensor]) -> Result<Tensor> + 'a>;
        let (inputs, fused, reference): (Vec<Tensor>, Op, Op) = match kernel {
            Kernel::Softmax => (
                vec![random(&[4, 37], 1, 3.0)?],
                Box::new(|x| x[0].apply_op1(Softmax)),
                Box::new(|x| composed::softmax(x[0])),
            ),
            Kernel::LogSoftmax => (
                vec![random(&[4, 37], 2, 3.0)?],
                Box::new(|x| x[0].apply_op1(LogSoftmax)),
                Box::new(|x| composed::log_softmax(x[0])),
            ),
            Kernel::CausalSoftmax => {
                let (t, scale) = (9, 0.5f32);
                let mask: Vec<f32> = (0..t * t)
                    .map(|i| {
                        if i % t > i / t {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (t, t), device)?;
                (
                    vec![random(&[2, 3, t, t], 3, 2.0)?],
                    Box::new(move |x| {
                        x[0].apply_op1(CausalSoftmax {
                            scale,
                            window: usize::MAX,
                        })
                    }),
                    Box::new(move |x| {
                        composed::softmax(&(x[0] * f64::from(scale))?.broadcast_add(&mask)?)
                    }),
                )
            }
            Kernel::RmsNorm => (
                vec![random(&[5, 48], 4, 2.0)?, random(&[48], 5, 1.0)?],
                Box::new(|x| x[0].apply_op2(x[1], RmsNorm { eps: 1e-5 })),
                Box::new(|x| composed::rms_norm(x[0], x[1], 1e-5)),
            ),
            Kernel::Rope => {
                let (t, d) = (7, 8);
                let (cos, sin) = rope_tables(t, d, 10_000.0, DType::F32, device)?;
                let (c2, s2) = (cos.clone(), sin.clone());
                (
                    vec![random(&[2, 3, t, d], 6, 1.0)?],
                    Box::new(move |x| x[0].apply_op3(&cos, &sin, Rope { transpose: false })),
                    Box::new(move |x| composed::rope(x[0], &c2, &s2)),
                )
            }
            Kernel::CrossEntropy => {
                let (rows, classes) = (6, 11);
                let targets: Vec<i64> = (0..rows as i64)
                    .map(|r| {
                        if r == 2 {
                            IGNORE_INDEX
                        } else {
                            (r * 5) % classes
                        }
                    })
                    .collect();
                let keep: Vec<f32> = targets
                    .iter()
                    .map(|&t| f32::from(u8::from(t != IGNORE_INDEX)))
                    .collect();
                let safe: Vec<u32> = targets.iter().map(|&t| t.max(0) as u32).collect();
                let targets = Tensor::new(targets.as_slice(), device)?;
                let keep = Tensor::new(keep.as_slice(), device)?;
                let safe = Tensor::new(safe.as_slice(), device)?.unsqueeze(1)?;
                (
                    vec![random(&[rows, classes as usize], 7, 3.0)?],
                    Box::new(move |x| x[0].apply_op2(&targets, CrossEntropy)),
                    Box::new(move |x| {
                        let logp = composed::log_softmax(x[0])?;
                        logp.gather(&safe, D::Minus1)?.squeeze(1)?.mul(&keep)?.neg()
                    }),
                )
            }
            Kernel::Adamw => candle_core::bail!("adamw brings its own check"),
        };
        let fused = |x: &[&Tensor]| self.output(kernel, fused(x)?);
        let (got, got_grads) = forward_backward(&inputs, &fused)?;
        let (want, want_grads) = forward_backward(&inputs, &reference)?;
        let mut worst = relative(&got, &want)?;
        for (g, w) in got_grads.iter().zip(&want_grads) {
            worst = worst.max(relative(g, w)?);
        }
        Ok(worst)
    }
}

/// The output of `op` on `inputs` and its inputs' gradients of a fixed random weighting of it.
fn forward_backward(
    inputs: &[Tensor],
    op: &dyn Fn(&[&Tensor]) -> Result<Tensor>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let xs: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
    let out = op(&xs)?;
    let n = out.elem_count();
    let weights: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 6.0).collect();
    let weights = Tensor::from_vec(weights, out.shape(), out.device())?;
    let grads = out.mul(&weights)?.sum_all()?.backward()?;
    let grads = xs
        .iter()
        .map(|x| match grads.get(x) {
            Some(g) => Ok(g.clone()),
            None => x.zeros_like(),
        })
        .collect::<Result<_>>()?;
    Ok((out.detach(), grads))
}

/// max |a − b| / max(|b|, 1e-6): NaN where either holds a NaN the other does not.
pub fn relative(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (a, b) = (
        a.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
        b.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
    );
    let scale = b.iter().map(|v| v.abs()).fold(1e-6, f64::max);
    let mut worst = 0f64;
    for (x, y) in a.iter().zip(&b) {
        let d = if x.is_finite() && y.is_finite() {
            (x - y).abs() / scale
        } else if x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) {
            0.0
        } else {
            f64::NAN
        };
        if d.is_nan() {
            return Ok(f64::NAN);
        }
        worst = worst.max(d);
    }
    Ok(worst)
}

/// How run directories name a device: `cpu`, `cuda:0`, ….
fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".to_owned(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Whether `kernel` may run on `device` in this process ([`Registry::enabled`]).
pub fn enabled(kernel: Kernel, device: &Device) -> bool {
    PROCESS.enabled(kernel, device)
}

/// Whether `kernel`, checked by `check`, may run on `device` in this process
/// ([`Registry::enabled_by`]).
pub fn enabled_by(kernel: Kernel, device: &Device, check: &dyn Fn() -> Result<f64>) -> bool {
    PROCESS.enabled_by(kernel, device, check)
}

/// This process's registry.
pub fn process() -> &'static Registry {
    &PROCESS
}

/// Checks every kernel of `device` in this process and returns the ones turned off.
pub fn verify(device: &Device) -> Vec<Disabled> {
    PROCESS.verify(device)
}

/// Makes `kernel` wrong in this process from now on: a test hook (the `fault-injection` build's
/// `XP_FAULT_KERNEL`). Call it before the kernel's first use, or its check has already passed.
pub fn sabotage(kernel: Kernel) {
    PROCESS.sabotage(kernel)
}

/// A fused kernel's output as this process's runs get it.
pub fn output(kernel: Kernel, y: Tensor) -> Result<Tensor> {
    PROCESS.output(kernel, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every CPU kernel passes its check; a sabotaged one is turned off and reported, and only
    /// on its own registry.
    #[test]
    fn a_wrong_kernel_is_turned_off() {
        let cpu = Device::Cpu;
        let good = Registry::new();
        assert_eq!(good.verify(&cpu), []);
        for k in Kernel::ALL.into_iter().filter(|k| k.checked_here()) {
            let e = good.error(k, &cpu);
            assert!(e <= TOLERANCE && e.is_finite(), "{}: {e}", k.name());
            assert!(good.enabled(k, &cpu));
            assert_eq!(Kernel::parse(k.name()), Some(k));
        }
        let bad = Registry::new();
        bad.sabotage(Kernel::RmsNorm);
        let off = bad.verify(&cpu);
        assert_eq!(off.len(), 1, "{off:?}");
        assert_eq!(
            (off[0].kernel.as_str(), off[0].device.as_str()),
            ("rms_norm", "cpu")
        );
        assert!(off[0].max_error > 0.1, "{off:?}");
        assert!(!bad.enabled(Kernel::RmsNorm, &cpu));
        assert!(bad.enabled(Kernel::Softmax, &cpu));
        assert!(
            good.enabled(Kernel::RmsNorm, &cpu),
            "another registry is untouched"
        );
        assert!(
            off[0]
                .describe()
                .contains("kernel rms_norm disabled on cpu")
        );
    }

    #[test]
    fn only_kernels_with_a_cuda_launch_run_on_cuda() {
        assert!(Kernel::ALL.iter().all(|k| k.runs_on(&Device::Cpu)));
        assert_eq!(Kernel::parse("flash"), None);
    }
}
