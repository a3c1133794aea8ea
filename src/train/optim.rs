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

use std::collections::BTreeMap;

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};

use crate::spec::{self, OptimizerKind};

pub trait Optimizer: Send {
    /// Updates parameter `index` in place from its gradient with learning rate `lr`.
    /// `decay` says whether weight decay applies to it (weight matrices yes; biases and norm weights no, unless decay-all).
    fn update(&mut self, index: usize, param: &mut [f32], grad: &[f32], lr: f64, decay: bool);
    /// Every state buffer, named `{index}.{buffer}` (e.g. `3.exp_avg`, `3.exp_avg_sq`, `3.step`, `0.momentum_buffer`), for checkpoints.
    fn state(&self) -> Vec<(String, Vec<f32>)>;
    /// Restores what `state` returned; an unknown or mis-sized buffer is an error naming it.
    fn load_state(&mut self, state: &[(String, Vec<f32>)]) -> Result<(), String>;
}

pub fn build(spec: &spec::Optimizer) -> Box<dyn Optimizer> {
    match spec.kind {
        OptimizerKind::Sgd {
            momentum,
            dampening,
            nesterov,
            weight_decay,
        } => stateful(Sgd {
            momentum,
            dampening,
            nesterov,
            weight_decay,
        }),
        OptimizerKind::Adam {
            beta1,
            beta2,
            eps,
            amsgrad,
            weight_decay,
        } => stateful(Adam {
            beta1,
            beta2,
            eps,
            amsgrad,
            weight_decay,
            decoupled: false,
        }),
        OptimizerKind::Adamw {
            beta1,
            beta2,
            eps,
            amsgrad,
            weight_decay,
        } => stateful(Adam {
            beta1,
            beta2,
            eps,
            amsgrad,
            weight_decay,
            decoupled: true,
        }),
        OptimizerKind::Rmsprop {
            alpha,
            eps,
            momentum,
            centered,
            weight_decay,
        } => stateful(Rmsprop {
            alpha,
            eps,
            momentum,
            centered,
            weight_decay,
        }),
        OptimizerKind::Adagrad {
            lr_decay,
            eps,
            initial_accumulator,
            weight_decay,
        } => stateful(Adagrad {
            lr_decay,
            eps,
            initial_accumulator,
            weight_decay,
        }),
        OptimizerKind::Lion {
            beta1,
            beta2,
            weight_decay,
        } => stateful(Lion {
            beta1,
            beta2,
            weight_decay,
        }),
    }
}

fn stateful<R: Rule + 'static>(rule: R) -> Box<dyn Optimizer> {
    Box::new(Stateful {
        rule,
        slots: BTreeMap::new(),
    })
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
}

/// A parameter's state: its step count and its buffers, in [`Rule::buffers`] order.
#[derive(Debug, Clone)]
struct Slot {
    step: u64,
    buffers: Vec<Vec<f32>>,
}

struct Stateful<R> {
    rule: R,
    slots: BTreeMap<usize, Slot>,
}

impl<R: Rule> Optimizer for Stateful<R> {
    fn update(&mut self, index: usize, param: &mut [f32], grad: &[f32], lr: f64, decay: bool) {
        assert_eq!(
            param.len(),
            grad.len(),
            "parameter {index} has {} values but its gradient {}",
            param.len(),
            grad.len()
        );
        let fresh = !self.slots.contains_key(&index);
        let slot = self.slots.entry(index).or_insert_with(|| Slot {
            step: 0,
            buffers: (self.rule.buffers().iter())
                .map(|_| vec![self.rule.initial(); param.len()])
                .collect(),
        });
        if let Some(b) = slot.buffers.iter().find(|b| b.len() != param.len()) {
            panic!(
                "parameter {index} has {} values but its optimizer state {}",
                param.len(),
                b.len()
            );
        }
        slot.step += 1;
        self.rule
            .update(slot.step, fresh, &mut slot.buffers, param, grad, lr, decay);
    }

    fn state(&self) -> Vec<(String, Vec<f32>)> {
        let names = self.rule.buffers();
        let mut out = Vec::new();
        for (index, slot) in &self.slots {
            if self.rule.counts_steps() {
                out.push((format!("{index}.step"), encode_step(slot.step)));
            }
            for (name, buffer) in names.iter().zip(&slot.buffers) {
                out.push((format!("{index}.{name}"), buffer.clone()));
            }
        }
        out
    }

    fn load_state(&mut self, state: &[(String, Vec<f32>)]) -> Result<(), String> {
        let names = self.rule.buffers();
        let mut errors = Vec::new();
        let mut found: BTreeMap<usize, Found> = BTreeMap::new();
        for (key, values) in state {
            let parsed = key
                .split_once('.')
                .and_then(|(i, b)| Some((i.parse::<usize>().ok()?, b)));
            let Some((index, buffer)) = parsed else {
                errors.push(format!("unknown optimizer state `{key}`"));
                continue;
            };
            let entry = found.entry(index).or_insert_with(|| Found {
                step: None,
                buffers: vec![None; names.len()],
            });
            if buffer == "step" && self.rule.counts_steps() {
                if entry.step.is_some() {
                    errors.push(format!("optimizer state `{key}` appears twice"));
                }
                let step = decode_step(values);
                if step.is_none() {
                    errors.push(format!(
                        "optimizer state `{key}` is not a step count (three integer limbs): {values:?}"
                    ));
                }
                entry.step = Some(step.unwrap_or(0));
            } else if let Some(position) = names.iter().position(|&n| n == buffer) {
                if entry.buffers[position].is_some() {
                    errors.push(format!("optimizer state `{key}` appears twice"));
                }
                entry.buffers[position] = Some(values);
            } else {
                errors.push(format!("unknown optimizer state `{key}`"));
            }
        }
        let mut slots = BTreeMap::new();
        for (index, found) in found {
            if self.rule.counts_steps() && found.step.is_none() {
                errors.push(format!("optimizer state `{index}.step` is missing"));
            }
            let mut buffers = Vec::new();
            let mut first: Option<(&str, usize)> = None;
            for (&name, buffer) in names.iter().zip(found.buffers) {
                let Some(buffer) = buffer else {
                    errors.push(format!("optimizer state `{index}.{name}` is missing"));
                    continue;
                };
                match first {
                    None => first = Some((name, buffer.len())),
                    Some((other, len)) if buffer.len() != len => errors.push(format!(
                        "optimizer state `{index}.{name}` has {} values but `{index}.{other}` has {len}",
                        buffer.len(),
                    )),
                    Some(_) => {}
                }
                buffers.push(buffer.clone());
            }
            let step = found.step.unwrap_or(0);
            slots.insert(index, Slot { step, buffers });
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        self.slots = slots;
        Ok(())
    }
}

/// One index's state as `load_state` finds it, buffers by their place in [`Rule::buffers`].
struct Found<'a> {
    step: Option<u64>,
    buffers: Vec<Option<&'a Vec<f32>>>,
}

const LIMB: u64 = 1 << 24;

fn encode_step(step: u64) -> Vec<f32> {
    // Each limb is below 2^24, so the conversion is exact.
    let limb = |shift: u32| ((step >> shift) % LIMB) as f32;
    vec![limb(0), limb(24), limb(48)]
}

fn decode_step(limbs: &[f32]) -> Option<u64> {
    let [low, mid, high] = limbs else {
        return None;
    };
    let limb = |x: f32, below: u64| {
        let exact = x >= 0.0 && x.fract() == 0.0 && (x as u64) < below;
        exact.then_some(x as u64)
    };
    Some(limb(*low, LIMB)? | limb(*mid, LIMB)? << 24 | limb(*high, 1 << 16)? << 48)
}

// ATen's float32 CPU kernels, one element at a time.

/// `a.add(b, alpha=alpha)`: ATen's vectorised add is `fmadd(b, alpha, a)`.
fn add(a: f32, b: f32, alpha: f32) -> f32 {
    b.mul_add(alpha, a)
}

/// `a.addcmul(b, c, value=value)`: ATen's `a + value * b * c`, which the compiler contracts to
/// `fma(value * b, c, a)`.
fn addcmul(a: f32, b: f32, c: f32, value: f32) -> f32 {
    (value * b).mul_add(c, a)
}

/// `a.addcdiv(b, c, value=value)`: `a + value * b / c`, left to right.
fn addcdiv(a: f32, b: f32, c: f32, value: f32) -> f32 {
    a + value * b / c
}

/// `a.lerp(b, weight)`: ATen's vectorised `lerp_vec`, which for a weight of 1/2 or more works
/// from `b` for accuracy near 1.
fn lerp(a: f32, b: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        weight.mul_add(b - a, a)
    } else {
        (weight - 1.0).mul_add(b - a, b)
    }
}

/// `torch.sign`: 0 at 0 (where `f32::signum` gives ±1).
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x
    }
}

/// `torch.maximum`, which propagates NaN (where `f32::max` drops it).
fn maximum(a: f32, b: f32) -> f32 {
    if a.is_nan() || a > b { a } else { b }
}

struct Sgd {
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
}

impl Rule for Sgd {
    fn buffers(&self) -> Vec<&'static str> {
        if self.momentum != 0.0 {
            vec!["momentum_buffer"]
        } else {
            vec![]
        }
    }

    fn counts_steps(&self) -> bool {
        false
    }

    fn update(
        &self,
        _step: u64,
        fresh: bool,
        buffers: &mut [Vec<f32>],
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let (wd, momentum) = (weight_decay as f32, self.momentum as f32);
        let damped = (1.0 - self.dampening) as f32;
        let neg_lr = (-lr) as f32;
        for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
            let mut g = g;
            if weight_decay != 0.0 {
                g = add(g, *p, wd);
            }
            if let [buf] = buffers {
                let b = &mut buf[i];
                *b = if fresh {
                    g
                } else {
                    add(*b * momentum, g, damped)
                };
                g = if self.nesterov {
                    add(g, *b, momentum)
                } else {
                    *b
                };
            }
            *p = add(*p, g, neg_lr);
        }
    }
}

/// Adam, and AdamW when `decoupled`.
struct Adam {
    beta1: f64,
    beta2: f64,
    eps: f64,
    amsgrad: bool,
    weight_decay: f64,
    decoupled: bool,
}

impl Rule for Adam {
    fn buffers(&self) -> Vec<&'static str> {
        let mut names = vec!["exp_avg", "exp_avg_sq"];
        if self.amsgrad {
            names.push("max_exp_avg_sq");
        }
        names
    }

    fn counts_steps(&self) -> bool {
        true
    }

    fn update(
        &self,
        step: u64,
        _fresh: bool,
        buffers: &mut [Vec<f32>],
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let (exp_avg, rest) = buffers.split_at_mut(1);
        let (exp_avg_sq, max_exp_avg_sq) = rest.split_at_mut(1);
        self.elements(
            step,
            &mut exp_avg[0],
            &mut exp_avg_sq[0],
            max_exp_avg_sq.first_mut().map(Vec::as_mut_slice),
            param,
            grad,
            lr,
            decay,
        );
    }
}

impl Adam {
    /// The scalars of step `step` as the element loop (and the CUDA kernel) uses them.
    fn scalars(&self, step: u64, lr: f64, decay: bool) -> AdamScalars {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        // Python floats: `beta ** step` with the step as a float.
        let bias_correction1 = 1.0 - self.beta1.powf(step as f64);
        let bias_correction2 = 1.0 - self.beta2.powf(step as f64);
        let step_size = lr / bias_correction1;
        AdamScalars {
            weight_decay,
            wd: weight_decay as f32,
            shrink: (1.0 - lr * weight_decay) as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            eps: self.eps as f32,
            bias_correction2_sqrt: bias_correction2.powf(0.5) as f32,
            neg_step_size: (-step_size) as f32,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn elements(
        &self,
        step: u64,
        exp_avg: &mut [f32],
        exp_avg_sq: &mut [f32],
        mut max_exp_avg_sq: Option<&mut [f32]>,
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let s = self.scalars(step, lr, decay);
        for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
            let mut g = g;
            if s.weight_decay != 0.0 {
                if self.decoupled {
                    *p *= s.shrink;
                } else {
                    g = add(g, *p, s.wd);
                }
            }
            let m = lerp(exp_avg[i], g, s.one_minus_beta1);
            let v = addcmul(exp_avg_sq[i] * s.beta2, g, g, s.one_minus_beta2);
            exp_avg[i] = m;
            exp_avg_sq[i] = v;
            let v = match max_exp_avg_sq.as_deref_mut() {
                Some(max) => {
                    max[i] = maximum(max[i], v);
                    max[i]
                }
                None => v,
            };
            let denom = v.sqrt() / s.bias_correction2_sqrt + s.eps;
            *p = addcdiv(*p, m, denom, s.neg_step_size);
        }
    }
}

/// One Adam step's hyperparameters in the precision each enters the update.
struct AdamScalars {
    weight_decay: f64,
    wd: f32,
    shrink: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    eps: f32,
    bias_correction2_sqrt: f32,
    neg_step_size: f32,
}

/// One AdamW step (without amsgrad) over a flattened group of parameters as one tensor op, in
/// place on `state` (3, n) = [params; exp_avg; exp_avg_sq] from `grad` (n): on the CPU the
/// update rule above, on CUDA one kernel launch (kernels/adamw.cu) with the same roundings.
/// `step` counts this step from 1; `decay` says whether weight decay applies to the group.
#[derive(Debug, Clone, Copy)]
pub struct AdamwStep {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    pub lr: f64,
    pub decay: bool,
}

impl AdamwStep {
    fn rule(&self) -> Adam {
        Adam {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            amsgrad: false,
            weight_decay: self.weight_decay,
            decoupled: true,
        }
    }

    /// Applies the step to `state` in place.
    pub fn apply(&self, state: &Tensor, grad: &Tensor) -> candle_core::Result<()> {
        if self.step == 0 {
            candle_core::bail!("xp-adamw: steps count from 1")
        }
        state.inplace_op2(grad, self)
    }
}

impl InplaceOp2 for AdamwStep {
    fn name(&self) -> &'static str {
        "xp-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(state), CpuStorage::F32(grad)) = (s1, s2) else {
            candle_core::bail!("{}: float32 only", self.name())
        };
        let (Some((s0, s1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("{}: the state and gradient must be contiguous", self.name())
        };
        let (state, grad) = (&mut state[s0..s1], &grad[g0..g1]);
        let n = grad.len();
        if state.len() != 3 * n {
            candle_core::bail!(
                "{}: state of {} values for {n} parameters",
                self.name(),
                state.len()
            )
        }
        let (param, rest) = state.split_at_mut(n);
        let (exp_avg, exp_avg_sq) = rest.split_at_mut(n);
        self.rule().elements(
            self.step, exp_avg, exp_avg_sq, None, param, grad, self.lr, self.decay,
        );
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let s = self.rule().scalars(self.step, self.lr, self.decay);
        let scalars = crate::ops::adamw::AdamwScalars {
            one_minus_beta1: s.one_minus_beta1,
            beta2: s.beta2,
            one_minus_beta2: s.one_minus_beta2,
            eps: s.eps,
            bias_correction2_sqrt: s.bias_correction2_sqrt,
            neg_step_size: s.neg_step_size,
            shrink: if s.weight_decay != 0.0 { s.shrink } else { 1.0 },
        };
        crate::ops::adamw::adamw(s1, l1, s2, l2, &scalars)
    }
}

struct Rmsprop {
    alpha: f64,
    eps: f64,
    momentum: f64,
    centered: bool,
    weight_decay: f64,
}

impl Rule for Rmsprop {
    fn buffers(&self) -> Vec<&'static str> {
        let mut names = vec!["square_avg"];
        if self.momentum > 0.0 {
            names.push("momentum_buffer");
        }
        if self.centered {
            names.push("grad_avg");
        }
        names
    }

    fn counts_steps(&self) -> bool {
        true
    }

    fn update(
        &self,
        _step: u64,
        _fresh: bool,
        buffers: &mut [Vec<f32>],
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let wd = weight_decay as f32;
        let (alpha, one_minus_alpha) = (self.alpha as f32, (1.0 - self.alpha) as f32);
        let (eps, momentum, neg_lr) = (self.eps as f32, self.momentum as f32, (-lr) as f32);
        let (square_avg, rest) = buffers.split_at_mut(1);
        let square_avg = &mut square_avg[0];
        let (momentum_buffer, grad_avg) = rest.split_at_mut(usize::from(self.momentum > 0.0));
        for (i, (p, &g)) in param.iter_mut().zip(grad).enumerate() {
            let mut g = g;
            if weight_decay != 0.0 {
                g = add(g, *p, wd);
            }
            let sq = addcmul(square_avg[i] * alpha, g, g, one_minus_alpha);
            square_avg[i] = sq;
            let avg = match grad_avg.first_mut() {
                Some(grad_avg) => {
                    let ga = lerp(grad_avg[i], g, one_minus_alpha);
                    grad_avg[i] = ga;
                    addcmul(sq, ga, ga, -1.0).sqrt()
                }
                None => sq.sqrt(),
            };
            let avg = avg + eps;
            match momentum_buffer.first_mut() {
                Some(buf) => {
                    buf[i] = addcdiv(buf[i] * momentum, g, avg, 1.0);
                    *p = add(*p, buf[i], neg_lr);
                }
                None => *p = addcdiv(*p, g, avg, neg_lr),
            }
        }
    }
}

struct Adagrad {
    lr_decay: f64,
    eps: f64,
    initial_accumulator: f64,
    weight_decay: f64,
}

impl Rule for Adagrad {
    fn buffers(&self) -> Vec<&'static str> {
        vec!["sum"]
    }

    fn counts_steps(&self) -> bool {
        true
    }

    fn initial(&self) -> f32 {
        self.initial_accumulator as f32
    }

    fn update(
        &self,
        step: u64,
        _fresh: bool,
        buffers: &mut [Vec<f32>],
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let wd = weight_decay as f32;
        let clr = lr / (1.0 + (step as f64 - 1.0) * self.lr_decay);
        let (neg_clr, eps) = ((-clr) as f32, self.eps as f32);
        let sum = &mut buffers[0];
        for ((p, &g), s) in param.iter_mut().zip(grad).zip(sum.iter_mut()) {
            let mut g = g;
            if weight_decay != 0.0 {
                g = add(g, *p, wd);
            }
            *s = addcmul(*s, g, g, 1.0);
            let std = s.sqrt() + eps;
            *p = addcdiv(*p, g, std, neg_clr);
        }
    }
}

struct Lion {
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
}

impl Rule for Lion {
    fn buffers(&self) -> Vec<&'static str> {
        vec!["exp_avg"]
    }

    fn counts_steps(&self) -> bool {
        false
    }

    fn update(
        &self,
        _step: u64,
        _fresh: bool,
        buffers: &mut [Vec<f32>],
        param: &mut [f32],
        grad: &[f32],
        lr: f64,
        decay: bool,
    ) {
        let weight_decay = if decay { self.weight_decay } else { 0.0 };
        let shrink = (1.0 - lr * weight_decay) as f32;
        let (beta1, one_minus_beta1) = (self.beta1 as f32, (1.0 - self.beta1) as f32);
        let (beta2, one_minus_beta2) = (self.beta2 as f32, (1.0 - self.beta2) as f32);
        let neg_lr = (-lr) as f32;
        let exp_avg = &mut buffers[0];
        for ((p, &g), m) in param.iter_mut().zip(grad).zip(exp_avg.iter_mut()) {
            if weight_decay != 0.0 {
                *p *= shrink;
            }
            let update = sign(add(*m * beta1, g, one_minus_beta1));
            *p = add(*p, update, neg_lr);
            *m = add(*m * beta2, g, one_minus_beta2);
        }
    }
}
