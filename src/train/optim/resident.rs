//! An optimizer as a [`Rule`] whose per-parameter state stays on the parameters' device as
//! flattened float32 tensors, updated with tensor ops ([`Rule::update_tensors`]) or, where the
//! rule has one and kernels are on, its fused op ([`Rule::kernel`]) once that op has passed its
//! self-check against the tensor ops on the device (crate::ops::kernels). Its checkpoint buffers
//! are [`super::stateful`]'s, copied to and from the host only when a checkpoint is written or
//! read.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};

use super::stateful::{Slot, load, save};
use super::{DeviceOptimizer, Rule};
use crate::ops::kernels::{self, Kernel, Registry};
use crate::train::transfer::{self, Kind, Transfers};

/// The resident optimizer of `rule`; with `kernel`, its fused op where it has one and that op
/// passes its check on `device`.
pub(super) fn resident<R: Rule + 'static>(
    rule: R,
    device: Device,
    kernel: bool,
) -> Box<dyn DeviceOptimizer> {
    let kernel = kernel
        && fused_somewhere(&rule)
        && kernels::enabled_by(Kernel::Adamw, &device, &|| {
            kernel_error(&rule, &device, kernels::process())
        });
    Box::new(Resident {
        rule,
        device,
        kernel,
        slots: BTreeMap::new(),
    })
}

/// Whether the rule has a fused op for some step.
fn fused_somewhere(rule: &dyn Rule) -> bool {
    [true, false]
        .iter()
        .any(|&d| rule.kernel(1, 1e-3, d).is_some())
}

/// The fused op against the rule's tensor ops over a few steps on small random values: their
/// largest relative difference (parameters and buffers).
fn kernel_error(rule: &dyn Rule, device: &Device, registry: &Registry) -> candle_core::Result<f64> {
    let n = 67;
    let random = |seed: u64, scale: f64| {
        let mut rng = crate::rng::Rng::new(seed);
        let v: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
        Tensor::from_vec(v, n, device)
    };
    let p = random(1, 1.0)?;
    let zeros = Tensor::zeros(n, candle_core::DType::F32, device)?;
    let mut fused = Tensor::stack(&[&p, &zeros, &zeros], 0)?;
    let (mut param, mut buffers) = (p, vec![zeros.clone(), zeros]);
    let mut worst = 0f64;
    for step in 1..=3u64 {
        let (lr, decay) = (1e-2 * step as f64, step != 2);
        let Some(op) = rule.kernel(step, lr, decay) else {
            continue;
        };
        let g = random(10 + step, 0.1)?;
        op.apply(&fused, &g)?;
        fused = registry.output(Kernel::Adamw, fused)?;
        param = rule.update_tensors(step, step == 1, &mut buffers, &param, &g, lr, decay)?;
        let want = Tensor::stack(&[&param, &buffers[0], &buffers[1]], 0)?;
        worst = worst.max(kernels::relative(&fused, &want)?);
    }
    Ok(worst)
}

struct Resident<R> {
    rule: R,
    device: Device,
    kernel: bool,
    slots: BTreeMap<usize, Slot<Tensor>>,
}

impl<R: Rule> DeviceOptimizer for Resident<R> {
    fn update(
        &mut self,
        index: usize,
        param: &Var,
        grad: &Tensor,
        lr: f64,
        decay: bool,
    ) -> candle_core::Result<()> {
        // Views of the values, outside any graph: the update records no backward.
        let p = param.as_tensor().detach().flatten_all()?;
        let g = grad.detach().flatten_all()?;
        if p.elem_count() != g.elem_count() {
            candle_core::bail!(
                "parameter {index} has {} values but its gradient {}",
                p.elem_count(),
                g.elem_count()
            )
        }
        let fresh = !self.slots.contains_key(&index);
        if fresh {
            let buffers = (self.rule.buffers().iter())
                .map(|_| Tensor::full(self.rule.initial(), p.elem_count(), p.device()))
                .collect::<candle_core::Result<_>>()?;
            self.slots.insert(index, Slot { step: 0, buffers });
        }
        let Some(slot) = self.slots.get_mut(&index) else {
            candle_core::bail!("parameter {index} has no optimizer state")
        };
        if let Some(b) = slot
            .buffers
            .iter()
            .find(|b| b.elem_count() != p.elem_count())
        {
            candle_core::bail!(
                "parameter {index} has {} values but its optimizer state {}",
                p.elem_count(),
                b.elem_count()
            )
        }
        slot.step += 1;
        let updated = match self
            .rule
            .kernel(slot.step, lr, decay)
            .filter(|_| self.kernel)
        {
            Some(op) => {
                // (3, n) = [params; exp_avg; exp_avg_sq], updated in place by one launch.
                let rows = [&p, &slot.buffers[0], &slot.buffers[1]].map(|t| t.unsqueeze(0));
                let state = Tensor::cat(&rows.into_iter().collect::<Result<Vec<_>, _>>()?, 0)?;
                op.apply(&state, &g.contiguous()?)?;
                let state = kernels::output(Kernel::Adamw, state)?;
                slot.buffers[0] = state.get(1)?;
                slot.buffers[1] = state.get(2)?;
                state.get(0)?
            }
            None => {
                self.rule
                    .update_tensors(slot.step, fresh, &mut slot.buffers, &p, &g, lr, decay)?
            }
        };
        param.set(&updated.reshape(param.shape())?)
    }

    fn state(&self, run: Option<&Transfers>) -> candle_core::Result<Vec<(String, Vec<f32>)>> {
        let mut host = BTreeMap::new();
        for (&index, slot) in &self.slots {
            let buffers = (slot.buffers.iter())
                .map(|b| transfer::to_host(b, Kind::OptimizerState, run))
                .collect::<candle_core::Result<_>>()?;
            host.insert(
                index,
                Slot {
                    step: slot.step,
                    buffers,
                },
            );
        }
        Ok(save(&self.rule, &host))
    }

    fn load_state(
        &mut self,
        state: &[(String, Vec<f32>)],
        run: Option<&Transfers>,
    ) -> Result<(), String> {
        let mut slots = BTreeMap::new();
        for (index, slot) in load(&self.rule, state)? {
            let buffers = (slot.buffers.into_iter())
                .map(|b| {
                    let n = b.len();
                    transfer::to_device(b, n, &self.device, Kind::OptimizerState, run)
                })
                .collect::<candle_core::Result<_>>()
                .map_err(|e| format!("moving the optimizer state of parameter {index}: {e}"))?;
            slots.insert(
                index,
                Slot {
                    step: slot.step,
                    buffers,
                },
            );
        }
        self.slots = slots;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The device-resident rules against the host's element rules, run on the CPU.

    use candle_core::{Device, Tensor, Var};

    use crate::rng::Rng;
    use crate::spec;

    fn random(n: usize, seed: u64, scale: f64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| (rng.normal() * scale) as f32).collect()
    }

    fn optimizers() -> Vec<(&'static str, spec::OptimizerConfig)> {
        let kdl = [
            ("adamw", r#"optimizer "adamw" lr=0.01 weight-decay=0.1"#),
            (
                "adam-amsgrad",
                r#"optimizer "adam" lr=0.01 weight-decay=0.01 amsgrad=#true"#,
            ),
            (
                "sgd",
                r#"optimizer "sgd" lr=0.1 momentum=0.9 dampening=0.1 weight-decay=0.01"#,
            ),
            (
                "nesterov",
                r#"optimizer "sgd" lr=0.1 momentum=0.9 nesterov=#true"#,
            ),
            (
                "rmsprop",
                r#"optimizer "rmsprop" lr=0.01 momentum=0.5 centered=#true weight-decay=0.01"#,
            ),
            (
                "adagrad",
                r#"optimizer "adagrad" lr=0.1 lr-decay=0.01 weight-decay=0.01"#,
            ),
            ("lion", r#"optimizer "lion" lr=0.001 weight-decay=0.1"#),
        ];
        kdl.into_iter()
            .map(|(name, node)| {
                let text = format!(
                    "experiment \"t\" {{\n    data \"regression\"\n    train {{ {node}; steps 10; }}\n}}"
                );
                let checked = crate::front::validate_text("t.kdl", &text);
                assert!(!checked.diags.has_errors(), "{name}: {node}");
                (name, checked.plans[0].runs[0].config.train.optimizer.clone())
            })
            .collect()
    }

    /// Each optimizer's tensor rule follows its element rule over steps (to float32 rounding),
    /// the fused AdamW op where it applies too, and a checkpoint of the resident state resumes
    /// on the host rule exactly.
    #[test]
    fn resident_rules_follow_the_host_rules() {
        let (n, steps) = (257, 12);
        for kernel in [false, true] {
            for (name, config) in optimizers() {
                let mut host = super::super::build(&config);
                let mut device = super::super::build_resident(&config, &Device::Cpu, kernel);
                let mut values = random(n, 1, 1.0);
                let var = Var::from_tensor(&Tensor::new(values.as_slice(), &Device::Cpu).unwrap())
                    .unwrap();
                for step in 0..steps {
                    let g = random(n, 100 + step, 0.1);
                    let lr = 1.0 - step as f64 * 0.05;
                    host.update(0, &mut values, &g, lr, step % 3 != 0);
                    let gt = Tensor::new(g.as_slice(), &Device::Cpu).unwrap();
                    device.update(0, &var, &gt, lr, step % 3 != 0).unwrap();
                }
                let got = var.as_tensor().to_vec1::<f32>().unwrap();
                let scale = values.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
                for (i, (g, w)) in got.iter().zip(&values).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * scale,
                        "{name} (kernel {kernel}) [{i}]: {g} vs {w}"
                    );
                }
                let saved = device.state(None).unwrap();
                let names: Vec<&str> = saved.iter().map(|(k, _)| k.as_str()).collect();
                let host_names: Vec<String> = host.state().into_iter().map(|(k, _)| k).collect();
                assert_eq!(names, host_names, "{name}: the checkpoint names");
                let mut back = super::super::build(&config);
                back.load_state(&saved).unwrap();
                let mut again = super::super::build_resident(&config, &Device::Cpu, kernel);
                again.load_state(&saved, None).unwrap();
                assert_eq!(again.state(None).unwrap(), saved, "{name}: a round trip");
            }
        }
    }

    /// The AdamW op passes its check on the CPU; made wrong, it fails it.
    #[test]
    fn the_adamw_op_checks_itself() {
        let (_, config) = optimizers().remove(0);
        let spec::OptimizerKind::Adamw(hp) = config.kind else {
            panic!("the first case is adamw")
        };
        let rule = super::super::Adam {
            hp,
            decoupled: true,
        };
        assert!(super::fused_somewhere(&rule));
        let cpu = Device::Cpu;
        let good = super::Registry::new();
        let e = super::kernel_error(&rule, &cpu, &good).unwrap();
        assert!(e < super::kernels::TOLERANCE, "{e}");
        let bad = super::Registry::new();
        bad.sabotage(super::Kernel::Adamw);
        let check = || super::kernel_error(&rule, &cpu, &bad);
        assert!(!bad.enabled_by(super::Kernel::Adamw, &cpu, &check));
        let off = bad.verify(&cpu);
        assert_eq!(off.len(), 1, "{off:?}");
        assert_eq!(off[0].kernel, "adamw");
        assert!(good.verify(&cpu).is_empty());
    }

    /// Mismatched shapes are errors, not panics.
    #[test]
    fn a_gradient_of_another_size_is_an_error() {
        let (_, config) = optimizers().remove(0);
        let mut device = super::super::build_resident(&config, &Device::Cpu, false);
        let var =
            Var::from_tensor(&Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap())
                .unwrap();
        let g = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(device.update(0, &var, &g, 0.1, true).is_err());
    }
}
