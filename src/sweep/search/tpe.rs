//! The tree-structured Parzen estimator (Bergstra et al. 2011) with Optuna's `TPESampler`
//! defaults: the first 10 trials are random; after that the trials are split into the best
//! `gamma(n) = min(ceil(n / 10), 25)` ("good") and the rest ("bad"), each axis gets a Parzen
//! estimator over the good values, l(x), and one over the bad, g(x) ([`super::parzen`]), and of
//! 24 candidates drawn from l the one with the largest l(x)/g(x) is suggested, axis by axis
//! (Optuna's default, univariate). Trials still training count among the bad with the worst
//! possible loss (Optuna's constant liar), so parallel trials spread out.

use super::parzen::Parzen;
use super::random;
use super::{Domain, Observed, Param, Sampler};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct Tpe {
    pub startup_trials: usize,
    pub ei_candidates: usize,
}

impl Default for Tpe {
    fn default() -> Self {
        Tpe {
            startup_trials: 10,
            ei_candidates: 24,
        }
    }
}

/// Optuna's default `gamma`: how many of `n` trials are "good".
pub fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

impl Sampler for Tpe {
    fn suggest(&self, domains: &[Domain], trials: &[Observed], rng: &mut Rng) -> Vec<Param> {
        let n = trials.len();
        if n < self.startup_trials {
            return random::draw(domains, rng);
        }
        // Best first; a trial still training is worse than every finished one; ties keep trial
        // order. Each group then goes back to trial order (the weights favour recent trials).
        let mut order: Vec<usize> = (0..n).collect();
        let loss = |i: usize| trials[i].loss.unwrap_or(f64::INFINITY);
        order.sort_by(|&a, &b| loss(a).total_cmp(&loss(b)));
        let split = gamma(n);
        let mut good = order[..split].to_vec();
        let mut bad = order[split..].to_vec();
        good.sort_unstable();
        bad.sort_unstable();
        domains
            .iter()
            .enumerate()
            .map(|(axis, domain)| {
                let values = |group: &[usize]| -> Vec<Param> {
                    group.iter().map(|&i| trials[i].params[axis]).collect()
                };
                let l = Parzen::new(domain, &values(&good));
                let g = Parzen::new(domain, &values(&bad));
                let candidates = l.sample(rng, self.ei_candidates);
                let mut best = candidates[0];
                let mut best_score = f64::NEG_INFINITY;
                for c in candidates {
                    let score = l.log_pdf(c) - g.log_pdf(c);
                    if score > best_score {
                        best = c;
                        best_score = score;
                    }
                }
                best
            })
            .collect()
    }

    fn startup_trials(&self) -> usize {
        self.startup_trials
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::search::random::Random;
    use crate::sweep::search::trial_rng;

    #[test]
    fn gamma_is_optunas() {
        assert_eq!(gamma(1), 1);
        assert_eq!(gamma(10), 1);
        assert_eq!(gamma(11), 2);
        assert_eq!(gamma(100), 10);
        assert_eq!(gamma(1000), 25);
    }

    /// A 2-d quadratic in log-lr and a choice axis (the best choice is index 2), the shape of a
    /// learning-rate sweep: the optimum at lr = 1e-3, choice 2.
    fn objective(p: &[Param]) -> f64 {
        let lr = p[0].as_f64().log10();
        let choice = match p[1] {
            Param::Choice(i) => [1.0, 0.5, 0.0, 0.7][i],
            Param::Number(_) => f64::INFINITY,
        };
        (lr + 3.0).powi(2) + choice
    }

    fn domains() -> Vec<Domain> {
        vec![
            Domain::Float {
                low: 1e-6,
                high: 1.0,
                log: true,
            },
            Domain::Choice(4),
        ]
    }

    /// The best loss after `budget` trials of `sampler` with seed `seed`, one trial at a time.
    fn best(sampler: &dyn Sampler, seed: u64, budget: usize) -> (f64, Vec<Observed>) {
        let mut trials: Vec<Observed> = Vec::new();
        for t in 0..budget {
            let mut rng = trial_rng(seed, t, 0);
            let params = sampler.suggest(&domains(), &trials, &mut rng);
            let loss = objective(&params);
            trials.push(Observed {
                params,
                loss: Some(loss),
            });
        }
        let best = trials
            .iter()
            .filter_map(|t| t.loss)
            .fold(f64::INFINITY, f64::min);
        (best, trials)
    }

    #[test]
    fn suggestions_are_reproducible_from_the_seed() {
        let tpe = Tpe::default();
        let (_, a) = best(&tpe, 7, 30);
        let (_, b) = best(&tpe, 7, 30);
        assert_eq!(a, b);
        let (_, c) = best(&tpe, 8, 30);
        assert_ne!(a, c);
    }

    #[test]
    fn tpe_moves_towards_the_optimum() {
        let tpe = Tpe::default();
        let (_, trials) = best(&tpe, 1, 60);
        // The modelled trials land nearer the optimum than the random start-up ones.
        let mean = |t: &[Observed]| t.iter().filter_map(|o| o.loss).sum::<f64>() / t.len() as f64;
        let startup = mean(&trials[..10]);
        let late = mean(&trials[40..]);
        assert!(late < startup / 4.0, "start-up {startup}, last 20 {late}");
        let choices = trials[40..]
            .iter()
            .filter(|t| t.params[1] == Param::Choice(2))
            .count();
        assert!(choices >= 10, "the best choice in {choices} of the last 20");
    }

    #[test]
    fn tpe_beats_random_at_a_fixed_budget() {
        let median = |sampler: &dyn Sampler| {
            let mut bests: Vec<f64> = (0..9).map(|seed| best(sampler, seed, 40).0).collect();
            bests.sort_by(f64::total_cmp);
            bests[bests.len() / 2]
        };
        let (tpe, random) = (median(&Tpe::default()), median(&Random));
        assert!(tpe < random, "TPE's median best {tpe}, random's {random}");
    }
}
