//! An optimizer as a [`Rule`] with per-parameter state, created on a parameter's first update,
//! and that state as checkpoint buffers: `{index}.{buffer}`, step counts as three float32 limbs.

use std::collections::BTreeMap;

use super::{Optimizer, Rule};

/// A parameter's state: its step count and its buffers (host vectors, or device tensors for
/// [`super::resident`]), in [`Rule::buffers`] order.
#[derive(Debug, Clone)]
pub(super) struct Slot<B> {
    pub step: u64,
    pub buffers: Vec<B>,
}

/// The optimizer that applies `rule`, keeping each parameter's state.
pub(super) fn stateful<R: Rule + 'static>(rule: R) -> Box<dyn Optimizer> {
    Box::new(Stateful {
        rule,
        slots: BTreeMap::new(),
    })
}

struct Stateful<R> {
    rule: R,
    slots: BTreeMap<usize, Slot<Vec<f32>>>,
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
        save(&self.rule, &self.slots)
    }

    fn load_state(&mut self, state: &[(String, Vec<f32>)]) -> Result<(), String> {
        self.slots = load(&self.rule, state)?;
        Ok(())
    }
}

/// Every buffer of `slots` as a checkpoint names it: `{index}.{buffer}`, and `{index}.step` for
/// rules that count steps.
pub(super) fn save(
    rule: &dyn Rule,
    slots: &BTreeMap<usize, Slot<Vec<f32>>>,
) -> Vec<(String, Vec<f32>)> {
    let names = rule.buffers();
    let mut out = Vec::new();
    for (index, slot) in slots {
        if rule.counts_steps() {
            out.push((format!("{index}.step"), encode_step(slot.step)));
        }
        for (name, buffer) in names.iter().zip(&slot.buffers) {
            out.push((format!("{index}.{name}"), buffer.clone()));
        }
    }
    out
}

/// The slots [`save`] wrote; an unknown, repeated, missing or mis-sized buffer is an error naming
/// it.
pub(super) fn load(
    rule: &dyn Rule,
    state: &[(String, Vec<f32>)],
) -> Result<BTreeMap<usize, Slot<Vec<f32>>>, String> {
    let names = rule.buffers();
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
        if buffer == "step" && rule.counts_steps() {
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
        if rule.counts_steps() && found.step.is_none() {
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
    Ok(slots)
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
