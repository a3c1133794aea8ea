//! The random sampler: every trial drawn independently from the axes' distributions (uniform,
//! log-uniform in log space, integers and choices uniformly), as Optuna's `RandomSampler`.

use super::{Domain, Observed, Param, Sampler};
use crate::rng::Rng;

/// Independent draws: the baseline a model-based sampler must beat.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Sampler for Random {
    fn suggest(&self, domains: &[Domain], _: &[Observed], rng: &mut Rng) -> Vec<Param> {
        draw(domains, rng)
    }

    fn startup_trials(&self) -> usize {
        usize::MAX
    }
}

/// One value per axis, independently.
pub fn draw(domains: &[Domain], rng: &mut Rng) -> Vec<Param> {
    domains.iter().map(|d| one(d, rng)).collect()
}

fn one(domain: &Domain, rng: &mut Rng) -> Param {
    match *domain {
        Domain::Float { low, high, log } if log => {
            Param::Number(rng.uniform(low.ln(), high.ln()).exp().clamp(low, high))
        }
        Domain::Float { low, high, .. } => Param::Number(rng.uniform(low, high)),
        Domain::Int { low, high } => {
            let span = usize::try_from(high.abs_diff(low).saturating_add(1)).unwrap_or(usize::MAX);
            Param::Number(low.saturating_add(rng.below(span) as i64) as f64)
        }
        Domain::Choice(n) => Param::Choice(rng.below(n)),
    }
}
