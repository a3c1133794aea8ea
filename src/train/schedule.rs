//! The learning-rate schedule: the lr of every optimizer step of a run, as HF transformers'
//! `get_scheduler` and PyTorch's `torch.optim.lr_scheduler` give it (values pinned by
//! `tests/reference/schedules.py`).
//!
//! A schedule advances once per optimizer step, or once per epoch with `interval "epoch"`; it
//! counts its length and warmup in those advances ("intervals"). The lr of optimizer step k is
//! the schedule's value before its k-th advance, so an HF warmup gives 0 at the first step.
//! Every kind but reduce-on-plateau is a pure function of the step; reduce-on-plateau keeps the
//! lr changes its observations caused, so [`LrSchedule::lr`] stays a lookup.

use std::f64::consts::PI;

use serde_json::{Value, json};

use crate::spec::{
    Anneal, Direction, Interval, Length, ScheduleKind, ThresholdMode, Train, Warmup,
};

/// HF's `inverse_sqrt` timescale when neither it nor a warmup is given.
const INVERSE_SQRT_TIMESCALE: usize = 10_000;
/// The warmup ratio of the kinds that warm up unless told otherwise.
const DEFAULT_WARMUP_RATIO: f64 = 0.1;

#[derive(Debug, Clone)]
pub struct LrSchedule {
    base_lr: f64,
    kind: ScheduleKind,
    total_steps: usize,
    /// Optimizer steps per advance: 1, or the steps of an epoch.
    per_advance: usize,
    /// The run's length in advances.
    total: usize,
    /// The warmup's length in advances.
    warmup: usize,
    plateau: Option<Plateau>,
}

impl LrSchedule {
    /// `base_lr` is the optimizer's lr; `steps_per_epoch` optimizer steps make one epoch.
    pub fn new(train: &Train, base_lr: f64, steps_per_epoch: usize, objective: Direction) -> Self {
        let schedule = &train.schedule;
        let total_steps = match train.length {
            Length::Steps(n) => n,
            Length::Epochs(e) => e.saturating_mul(steps_per_epoch),
        };
        let (per_advance, total) = match schedule.interval {
            Interval::Step => (1, total_steps),
            Interval::Epoch => {
                let per_epoch = steps_per_epoch.max(1);
                let epochs = match train.length {
                    Length::Steps(n) => n.div_ceil(per_epoch),
                    Length::Epochs(e) => e,
                };
                (per_epoch, epochs)
            }
        };
        // Ratios round up, as HF's `math.ceil(num_training_steps * warmup_ratio)`.
        let warmup = match schedule.warmup {
            Some(Warmup::Steps(w)) => w.div_ceil(per_advance),
            Some(Warmup::Ratio(r)) => ceil_count(total as f64 * r),
            Some(Warmup::Epochs(x)) => match schedule.interval {
                Interval::Step => ceil_count(x * steps_per_epoch as f64),
                Interval::Epoch => ceil_count(x),
            },
            None if schedule.kind.warms_up_by_default() => {
                ceil_count(total as f64 * DEFAULT_WARMUP_RATIO)
            }
            None => 0,
        };
        let plateau = match schedule.kind {
            ScheduleKind::ReduceOnPlateau {
                mode,
                factor,
                patience,
                threshold,
                threshold_mode,
                cooldown,
                min_lr,
                eps,
            } => Some(Plateau {
                mode: mode.unwrap_or(objective),
                factor,
                patience,
                threshold,
                threshold_mode,
                cooldown,
                min_lr,
                eps,
                state: PlateauState::new(base_lr),
            }),
            _ => None,
        };
        LrSchedule {
            base_lr,
            kind: schedule.kind.clone(),
            total_steps,
            per_advance,
            total,
            warmup,
            plateau,
        }
    }

    /// The learning rate used by optimizer step `step` (1-based).
    pub fn lr(&self, step: usize) -> f64 {
        let t = step.saturating_sub(1) / self.per_advance;
        let (w, n, base) = (self.warmup, self.total, self.base_lr);
        if t < w {
            // HF's ramp `t / max(1, W)`; the torch kinds borrow it, then start at their own 0.
            return base * (t as f64 / w as f64);
        }
        // The position in the schedule that follows the warmup, where torch's kinds start.
        let s = t - w;
        match &self.kind {
            ScheduleKind::Constant => base,
            ScheduleKind::Linear { min_lr_ratio } => {
                let f = n.saturating_sub(t) as f64 / n.saturating_sub(w).max(1) as f64;
                base * with_floor(f.max(0.0), *min_lr_ratio)
            }
            ScheduleKind::Cosine { min_lr_ratio } => {
                let progress = s as f64 / n.saturating_sub(w).max(1) as f64;
                let f = 0.5 * (1.0 + (PI * 0.5 * 2.0 * progress).cos());
                base * with_floor(f, *min_lr_ratio)
            }
            ScheduleKind::CosineWithRestarts {
                cycles,
                min_lr_ratio,
            } => {
                let progress = s as f64 / n.saturating_sub(w).max(1) as f64;
                let f = if progress >= 1.0 {
                    0.0
                } else {
                    (0.5 * (1.0 + (PI * ((*cycles as f64 * progress) % 1.0)).cos())).max(0.0)
                };
                base * with_floor(f, *min_lr_ratio)
            }
            ScheduleKind::Polynomial { power, end_lr } => {
                let decay_steps = n.saturating_sub(w);
                if t > n || decay_steps == 0 {
                    *end_lr
                } else {
                    let remaining = 1.0 - s as f64 / decay_steps as f64;
                    (base - end_lr) * remaining.powf(*power) + end_lr
                }
            }
            ScheduleKind::InverseSqrt { timescale } => {
                let default = if w > 0 { w } else { INVERSE_SQRT_TIMESCALE };
                let timescale = timescale.unwrap_or(default).max(1);
                base / (s.saturating_add(timescale) as f64 / timescale as f64).sqrt()
            }
            ScheduleKind::Exponential { gamma } => base * gamma.powf(s as f64),
            ScheduleKind::Step { step_size, gamma } => {
                base * gamma.powf(s.checked_div(*step_size).unwrap_or(0) as f64)
            }
            ScheduleKind::MultiStep { milestones, gamma } => {
                // Repeated milestones decay repeatedly, as torch's `Counter` of them does.
                let passed = milestones.iter().filter(|&&m| m <= s).count();
                base * gamma.powf(passed as f64)
            }
            ScheduleKind::CosineAnnealing { t_max, eta_min } => {
                let t_max = t_max.unwrap_or(n.saturating_sub(w));
                if t_max == 0 {
                    *eta_min
                } else {
                    // torch's recursive form equals this closed form, past t-max too.
                    annealed(base, *eta_min, s as f64 / t_max as f64)
                }
            }
            ScheduleKind::CosineWarmRestarts {
                t_0,
                t_mult,
                eta_min,
            } => {
                let (t_cur, t_i) = warm_restart(s, (*t_0).max(1), (*t_mult).max(1));
                annealed(base, *eta_min, t_cur as f64 / t_i as f64)
            }
            ScheduleKind::OneCycle {
                max_lr,
                pct_start,
                anneal,
                div_factor,
                final_div_factor,
                three_phase,
            } => one_cycle(
                s,
                // What the warmup leaves, as cosine-annealing's t-max: the schema gives
                // one-cycle no warmup of its own, so this is the run's length.
                n.saturating_sub(w),
                max_lr.unwrap_or(base),
                *pct_start,
                *anneal,
                *div_factor,
                *final_div_factor,
                *three_phase,
            ),
            ScheduleKind::ReduceOnPlateau { .. } => self
                .plateau
                .as_ref()
                .map_or(base, |p| p.state.lr_before(step)),
        }
    }

    /// reduce-on-plateau: record the objective measured at an evaluation after optimizer step
    /// `step`. A no-op for every other kind.
    ///
    /// The plateau schedule starts when the warmup ends, as a torch scheduler following the
    /// warmup would: evaluations during the warmup (`step <= warmup_steps()`) count for nothing.
    pub fn observe(&mut self, step: usize, value: f64) {
        let warmup_steps = self.warmup_steps();
        if let Some(p) = &mut self.plateau
            && step > warmup_steps
        {
            p.observe(step, value);
        }
    }

    /// The total number of optimizer steps of the run.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// The warmup length in optimizer steps (0 when none). With `interval "epoch"` the warmup
    /// is a whole number of epochs.
    pub fn warmup_steps(&self) -> usize {
        self.warmup.saturating_mul(self.per_advance)
    }

    /// State that must survive a checkpoint (only reduce-on-plateau has any), and its restore.
    pub fn state(&self) -> Value {
        self.plateau
            .as_ref()
            .map_or(Value::Null, |p| p.state.to_json())
    }

    /// A state of another kind of schedule is an error.
    pub fn load_state(&mut self, state: &Value) -> Result<(), String> {
        match (&mut self.plateau, state) {
            (None, Value::Null) => Ok(()),
            (None, _) => Err("this schedule keeps no state, but the checkpoint has some".into()),
            (Some(p), state) => {
                p.state = PlateauState::from_json(state, p.state.base_lr)?;
                Ok(())
            }
        }
    }
}

/// The warmup as `xp plan` shows it before any data is read: optimizer steps where the settings
/// alone fix them, else how they follow from the data's size.
pub fn planned_warmup(train: &Train) -> Result<usize, String> {
    let schedule = &train.schedule;
    let fixed = matches!(
        (train.length, schedule.interval, schedule.warmup),
        (_, Interval::Step, Some(Warmup::Steps(_)))
            | (
                Length::Steps(_),
                Interval::Step,
                Some(Warmup::Ratio(_)) | None
            )
    );
    if fixed {
        return Ok(LrSchedule::new(train, 1.0, 1, Direction::Minimize).warmup_steps());
    }
    let ratio = |r: f64| format!("{}% of the steps", (r * 1e4).round() / 1e2);
    Err(match schedule.warmup {
        Some(Warmup::Steps(w)) => format!("{w} steps in whole epochs"),
        Some(Warmup::Ratio(r)) => ratio(r),
        Some(Warmup::Epochs(x)) => format!("{x} epochs"),
        None if schedule.kind.warms_up_by_default() => ratio(DEFAULT_WARMUP_RATIO),
        None => return Ok(0),
    })
}

/// A count from a real number of intervals, rounded up; negative and NaN give 0.
fn ceil_count(x: f64) -> usize {
    x.ceil() as usize
}

/// xp's `min-lr-ratio`: the decay ends at `ratio` × lr instead of 0 (HF's `cosine_with_min_lr`
/// with `min_lr_rate`).
fn with_floor(factor: f64, ratio: f64) -> f64 {
    (factor * (1.0 - ratio) + ratio).max(0.0)
}

/// Half a cosine from `base` (at 0) to `eta_min` (at 1), as torch's cosine schedulers.
fn annealed(base: f64, eta_min: f64, fraction: f64) -> f64 {
    eta_min + (base - eta_min) * (1.0 + (PI * fraction).cos()) / 2.0
}

/// The position within the current cycle and that cycle's length, at `s` intervals into
/// `CosineAnnealingWarmRestarts`.
fn warm_restart(s: usize, t_0: usize, t_mult: usize) -> (usize, usize) {
    if t_mult == 1 {
        return (s % t_0, t_0);
    }
    let (mut t_cur, mut t_i) = (s, t_0);
    // The cycles grow geometrically, so this loops at most about 64 times.
    while t_cur >= t_i {
        t_cur -= t_i;
        t_i = t_i.saturating_mul(t_mult);
    }
    (t_cur, t_i)
}

/// torch's `OneCycleLR` over `total` intervals, with `cycle_momentum=False`: xp does not cycle
/// the optimizer's momentum or beta1, only the lr.
#[allow(clippy::too_many_arguments)]
fn one_cycle(
    s: usize,
    total: usize,
    max_lr: f64,
    pct_start: f64,
    anneal: Anneal,
    div_factor: f64,
    final_div_factor: f64,
    three_phase: bool,
) -> f64 {
    let initial = max_lr / div_factor;
    let min = initial / final_div_factor;
    let n = total as f64;
    let up = pct_start * n - 1.0;
    let last = n - 1.0;
    let two = [(up, initial, max_lr), (last, max_lr, min)];
    let three = [
        (up, initial, max_lr),
        (2.0 * pct_start * n - 2.0, max_lr, initial),
        (last, initial, min),
    ];
    let phases: &[(f64, f64, f64)] = if three_phase { &three } else { &two };
    let s = s as f64;
    let mut start = 0.0;
    for (i, &(end, from, to)) in phases.iter().enumerate() {
        if s <= end || i + 1 == phases.len() {
            // torch divides by zero on a phase of no length; its end value is the natural one.
            let pct = if end == start {
                1.0
            } else {
                (s - start) / (end - start)
            };
            return match anneal {
                Anneal::Cos => to + (from - to) / 2.0 * ((PI * pct).cos() + 1.0),
                Anneal::Linear => (to - from) * pct + from,
            };
        }
        start = end;
    }
    min
}

/// torch's `ReduceLROnPlateau`, its settings and its state.
#[derive(Debug, Clone)]
struct Plateau {
    mode: Direction,
    factor: f64,
    patience: usize,
    threshold: f64,
    threshold_mode: ThresholdMode,
    cooldown: usize,
    min_lr: f64,
    eps: f64,
    state: PlateauState,
}

#[derive(Debug, Clone, PartialEq)]
struct PlateauState {
    /// The lr before any reduction.
    base_lr: f64,
    /// The best objective so far; `None` before the first evaluation (torch's ±inf).
    best: Option<f64>,
    bad_evals: usize,
    cooldown_left: usize,
    /// (step, lr): from the step after `step` on, the lr is `lr`. In the order observed.
    changes: Vec<(usize, f64)>,
}

impl Plateau {
    fn observe(&mut self, step: usize, value: f64) {
        let better = self.is_better(value, self.state.best);
        let state = &mut self.state;
        if better {
            state.best = Some(value);
            state.bad_evals = 0;
        } else {
            state.bad_evals += 1;
        }
        if state.cooldown_left > 0 {
            state.cooldown_left -= 1;
            state.bad_evals = 0;
        }
        if state.bad_evals > self.patience {
            let old = state.lr_before(usize::MAX);
            let new = (old * self.factor).max(self.min_lr);
            if old - new > self.eps {
                state.changes.push((step, new));
            }
            state.cooldown_left = self.cooldown;
            state.bad_evals = 0;
        }
    }

    fn is_better(&self, a: f64, best: Option<f64>) -> bool {
        let (t, minimize) = (self.threshold, self.mode == Direction::Minimize);
        let best = best.unwrap_or(if minimize {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        });
        match (minimize, self.threshold_mode) {
            (true, ThresholdMode::Rel) => a < best * (1.0 - t),
            (true, ThresholdMode::Abs) => a < best - t,
            (false, ThresholdMode::Rel) => a > best * (t + 1.0),
            (false, ThresholdMode::Abs) => a > best + t,
        }
    }
}

impl PlateauState {
    fn new(base_lr: f64) -> Self {
        PlateauState {
            base_lr,
            best: None,
            bad_evals: 0,
            cooldown_left: 0,
            changes: Vec::new(),
        }
    }

    /// The lr of optimizer step `step`: the last change made before it.
    fn lr_before(&self, step: usize) -> f64 {
        self.changes
            .iter()
            .rev()
            .find(|&&(at, _)| at < step)
            .map_or(self.base_lr, |&(_, lr)| lr)
    }

    fn to_json(&self) -> Value {
        json!({
            "best": self.best.map_or(Value::Null, number),
            "bad-evals": self.bad_evals,
            "cooldown-left": self.cooldown_left,
            "changes": self
                .changes
                .iter()
                .map(|&(step, lr)| json!([step, number(lr)]))
                .collect::<Vec<_>>(),
        })
    }

    fn from_json(v: &Value, base_lr: f64) -> Result<Self, String> {
        let field = |name: &str| {
            v.get(name)
                .ok_or_else(|| format!("reduce-on-plateau state has no `{name}`"))
        };
        let count = |name: &str| {
            field(name)?
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("reduce-on-plateau `{name}` is not a count"))
        };
        let best = match field("best")? {
            Value::Null => None,
            b => Some(real(b).ok_or("reduce-on-plateau `best` is not a number")?),
        };
        let changes = field("changes")?
            .as_array()
            .ok_or("reduce-on-plateau `changes` is not a list")?
            .iter()
            .map(|c| match c.as_array().map(Vec::as_slice) {
                Some([step, lr]) => step
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .zip(real(lr)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or("reduce-on-plateau `changes` are not [step, lr] pairs")?;
        Ok(PlateauState {
            base_lr,
            best,
            bad_evals: count("bad-evals")?,
            cooldown_left: count("cooldown-left")?,
            changes,
        })
    }
}

/// A JSON number, or for the infinities and NaN (which JSON lacks) their Rust spelling.
fn number(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or_else(|| Value::String(x.to_string()), Value::Number)
}

fn real(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}
