//! Model-based search: samplers that suggest a trial's axis values from the trials so far
//! ([`Sampler`]: [`tpe::Tpe`], Optuna's TPE; [`random::Random`], the baseline), and
//! [`trials::Trials`], which drives a search inside a sweep (suggest, plan the trial's runs,
//! record them, learn their objective). The samplers are pure: no I/O, every random draw from
//! the [`Rng`] they are given, so a suggestion is a function of the seed, the trial number and
//! the results it saw.

pub mod parzen;
pub mod random;
pub mod tpe;
pub(crate) mod trials;

use kdl::KdlValue;

use crate::front::expand::number;
use crate::front::points::same;
use crate::front::search::{Distribution, SamplerKind, Search};
use crate::rng::{Rng, fnv1a, splitmix64};

/// An axis as a sampler sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// A real range; `log`: modelled and drawn in log space.
    Float { low: f64, high: f64, log: bool },
    /// Integers `low..=high`.
    Int { low: i64, high: i64 },
    /// One of `n` values, by index.
    Choice(usize),
}

impl Domain {
    pub fn of(d: &Distribution) -> Domain {
        match d {
            Distribution::Uniform { low, high } => Domain::Float {
                low: *low,
                high: *high,
                log: false,
            },
            Distribution::LogUniform { low, high } => Domain::Float {
                low: *low,
                high: *high,
                log: true,
            },
            Distribution::IntUniform { low, high } => Domain::Int {
                low: *low,
                high: *high,
            },
            Distribution::Choice { values } => Domain::Choice(values.len()),
        }
    }
}

/// One axis value of a trial as a sampler holds it: a number (integral for `Int`) or the index
/// of a choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param {
    Number(f64),
    Choice(usize),
}

impl Param {
    /// The value a template sees.
    pub fn value(self, d: &Distribution) -> KdlValue {
        match (self, d) {
            (Param::Choice(i), Distribution::Choice { values }) => {
                values.get(i).cloned().unwrap_or(KdlValue::Null)
            }
            (Param::Number(x), Distribution::IntUniform { .. }) => {
                KdlValue::Integer(x.round() as i128)
            }
            (Param::Number(x), _) => KdlValue::Float(x),
            (Param::Choice(i), _) => KdlValue::Integer(i as i128),
        }
    }

    /// A recorded value read back (`search.jsonl`); `None` when it is not of the axis.
    pub fn of_value(v: &KdlValue, d: &Distribution) -> Option<Param> {
        match d {
            Distribution::Choice { values } => {
                values.iter().position(|c| same(c, v)).map(Param::Choice)
            }
            _ => number(v).map(Param::Number),
        }
    }

    /// The number, or the choice's index as one (the Parzen estimators' internal form).
    pub fn as_f64(self) -> f64 {
        match self {
            Param::Number(x) => x,
            Param::Choice(i) => i as f64,
        }
    }
}

/// A trial as the samplers see it: its values and, once it finished, its loss (the objective,
/// negated when maximised, so lower is better). `None`: still training.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub params: Vec<Param>,
    pub loss: Option<f64>,
}

/// Suggests the next trial's values from the trials so far (in trial order, failed ones left
/// out). Pure: every draw comes from `rng`. Another sampler (GP-based BO, …) implements this.
pub trait Sampler: Send {
    fn suggest(&self, domains: &[Domain], trials: &[Observed], rng: &mut Rng) -> Vec<Param>;

    /// How many trials it draws at random before it models the results (shown by `xp plan`).
    fn startup_trials(&self) -> usize;
}

/// The sampler a search names.
pub fn sampler(kind: SamplerKind) -> Box<dyn Sampler> {
    match kind {
        SamplerKind::Tpe => Box::new(tpe::Tpe::default()),
        SamplerKind::Random => Box::new(random::Random),
    }
}

/// The random stream of one suggestion: the `attempt`-th draw for trial `trial` of a search
/// seeded `seed`. A suggestion depends on nothing else, so a resumed search draws as the
/// uninterrupted one would.
pub fn trial_rng(seed: u64, trial: usize, attempt: usize) -> Rng {
    let mut state = seed ^ fnv1a(b"search");
    let a = splitmix64(&mut state);
    let mut state = a ^ (trial as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = splitmix64(&mut state);
    Rng::new(b ^ (attempt as u64).rotate_left(32))
}

/// The domains of a search's axes, in order.
pub fn domains(search: &Search) -> Vec<Domain> {
    search
        .axes
        .iter()
        .map(|a| Domain::of(&a.distribution))
        .collect()
}

/// Trial `i`'s values as the templates see them, by axis name.
pub fn point(search: &Search, params: &[Param]) -> Vec<(String, KdlValue)> {
    search
        .axes
        .iter()
        .zip(params)
        .map(|(a, p)| (a.name.clone(), p.value(&a.distribution)))
        .collect()
}

/// The start-up trials a search runs first, before any result can steer it (as `xp plan`
/// shows them): their values do not depend on results. With `exclude`, a point it drops is
/// drawn again, as the sweep does.
pub fn startup(search: &Search, mut keep: impl FnMut(&[Param]) -> bool) -> Vec<Vec<Param>> {
    let sampler = sampler(search.sampler);
    let domains = domains(search);
    let count = sampler.startup_trials().min(search.trials);
    let mut out = Vec::new();
    for trial in 0..count {
        for attempt in 0..trials::MAX_ATTEMPTS {
            let mut rng = trial_rng(search.seed, trial, attempt);
            let params = random::draw(&domains, &mut rng);
            if keep(&params) {
                out.push(params);
                break;
            }
        }
    }
    out
}
