//! The Parzen estimators of TPE, one axis at a time, as Optuna defines them
//! (`optuna/samplers/_tpe/parzen_estimator.py`): a mixture with one kernel per observation and
//! a prior kernel. Numbers: truncated Gaussians in the axis's (log) space, centred on the
//! observations, each as wide as the larger gap to its neighbours among the observations, the
//! prior's centre and the bounds (the outermost take their inner gap: no endpoints), clipped to
//! [range / min(100, kernels + 1), range] ("magic clip"); the prior is centred with the width
//! of the range. Integers are the same over [low - ½, high + ½], each value taking the mass of
//! its unit interval. Choices: each observation's kernel puts 1 + prior/kernels on its value and
//! prior/kernels on every value, normalised; the prior kernel is uniform. Mixture weights: 1
//! for each observation, older ones ramped down once there are more than 25, then the prior
//! weight 1, normalised.

use super::{Domain, Param};
use crate::rng::Rng;

/// The prior kernel's weight (Optuna's `prior_weight`).
const PRIOR_WEIGHT: f64 = 1.0;

/// A mixture over one axis.
#[derive(Debug, Clone)]
pub enum Parzen {
    Numeric {
        weights: Vec<f64>,
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        /// The bounds the kernels are truncated to (log space for log axes, ±½ for integers).
        low: f64,
        high: f64,
        log: bool,
        /// Integer axis: values are rounded, densities are the mass of unit intervals.
        int: Option<(i64, i64)>,
    },
    Choice {
        weights: Vec<f64>,
        /// Per kernel, the probability of each choice.
        rows: Vec<Vec<f64>>,
    },
}

/// Optuna's `default_weights`: 1 for each observation, except that with more than 25 the
/// older ones ramp linearly from 1/n up to 1 and only the newest 25 weigh 1.
pub fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            if ramp == 1 {
                1.0 / n as f64
            } else {
                1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

impl Parzen {
    /// The estimator of `observations` (in trial order) over `domain`.
    pub fn new(domain: &Domain, observations: &[Param]) -> Parzen {
        let mut weights = default_weights(observations.len());
        weights.push(PRIOR_WEIGHT);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        match *domain {
            Domain::Choice(n) => {
                let kernels = observations.len() + 1;
                let base = PRIOR_WEIGHT / kernels as f64;
                let mut rows: Vec<Vec<f64>> = observations
                    .iter()
                    .map(|o| {
                        let mut row = vec![base; n];
                        if let Param::Choice(i) = o
                            && let Some(cell) = row.get_mut(*i)
                        {
                            *cell += 1.0;
                        }
                        row
                    })
                    .collect();
                rows.push(vec![base; n]);
                for row in &mut rows {
                    let sum: f64 = row.iter().sum();
                    if sum > 0.0 {
                        row.iter_mut().for_each(|p| *p /= sum);
                    }
                }
                Parzen::Choice { weights, rows }
            }
            Domain::Float { low, high, log } => {
                let (low, high) = if log {
                    (low.ln(), high.ln())
                } else {
                    (low, high)
                };
                let xs: Vec<f64> = observations
                    .iter()
                    .map(|o| if log { o.as_f64().ln() } else { o.as_f64() })
                    .collect();
                let (mus, sigmas) = kernels(&xs, low, high);
                Parzen::Numeric {
                    weights,
                    mus,
                    sigmas,
                    low,
                    high,
                    log,
                    int: None,
                }
            }
            Domain::Int { low, high } => {
                let xs: Vec<f64> = observations.iter().map(|o| o.as_f64()).collect();
                let (l, h) = (low as f64 - 0.5, high as f64 + 0.5);
                let (mus, sigmas) = kernels(&xs, l, h);
                Parzen::Numeric {
                    weights,
                    mus,
                    sigmas,
                    low: l,
                    high: h,
                    log: false,
                    int: Some((low, high)),
                }
            }
        }
    }

    /// `n` draws from the mixture.
    pub fn sample(&self, rng: &mut Rng, n: usize) -> Vec<Param> {
        (0..n)
            .map(|_| match self {
                Parzen::Choice { weights, rows } => {
                    let k = pick(weights, rng);
                    Param::Choice(pick(&rows[k], rng))
                }
                Parzen::Numeric {
                    weights,
                    mus,
                    sigmas,
                    low,
                    high,
                    log,
                    int,
                } => {
                    let k = pick(weights, rng);
                    let x = truncated_normal(mus[k], sigmas[k], *low, *high, rng);
                    match int {
                        Some((l, h)) => Param::Number(x.round().clamp(*l as f64, *h as f64)),
                        None if *log => Param::Number(x.exp().clamp(low.exp(), high.exp())),
                        None => Param::Number(x),
                    }
                }
            })
            .collect()
    }

    /// The log density of a value (for integers, the log mass of its unit interval; for log
    /// axes, the density in log space: the same for both estimators, so their ratio is
    /// Optuna's).
    pub fn log_pdf(&self, x: Param) -> f64 {
        match self {
            Parzen::Choice { weights, rows } => {
                let Param::Choice(i) = x else {
                    return f64::NEG_INFINITY;
                };
                let p: f64 = weights
                    .iter()
                    .zip(rows)
                    .map(|(w, row)| w * row.get(i).copied().unwrap_or(0.0))
                    .sum();
                p.ln()
            }
            Parzen::Numeric {
                weights,
                mus,
                sigmas,
                low,
                high,
                log,
                int,
            } => {
                let v = if *log { x.as_f64().ln() } else { x.as_f64() };
                let terms: Vec<f64> = weights
                    .iter()
                    .zip(mus.iter().zip(sigmas))
                    .map(|(w, (&mu, &sigma))| {
                        let z = log_mass(mu, sigma, *low, *high);
                        let density = match int {
                            Some(_) => log_mass(mu, sigma, v - 0.5, v + 0.5),
                            None => {
                                let t = (v - mu) / sigma;
                                -0.5 * t * t - sigma.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
                            }
                        };
                        w.ln() + density - z
                    })
                    .collect();
                log_sum_exp(&terms)
            }
        }
    }
}

/// The kernels' centres and widths: the observations, then the prior at the middle of the
/// range (see the module's documentation).
fn kernels(xs: &[f64], low: f64, high: f64) -> (Vec<f64>, Vec<f64>) {
    let prior = 0.5 * (low + high);
    let mut with_prior: Vec<f64> = xs.to_vec();
    with_prior.push(prior);
    let mut order: Vec<usize> = (0..with_prior.len()).collect();
    order.sort_by(|&a, &b| with_prior[a].total_cmp(&with_prior[b]));
    let mut ends = Vec::with_capacity(with_prior.len() + 2);
    ends.push(low);
    ends.extend(order.iter().map(|&i| with_prior[i]));
    ends.push(high);
    let m = with_prior.len();
    let mut sorted: Vec<f64> = (0..m)
        .map(|i| (ends[i + 1] - ends[i]).max(ends[i + 2] - ends[i + 1]))
        .collect();
    // Without endpoints: the outermost kernels take the gap on their inner side.
    if ends.len() >= 4 {
        sorted[0] = ends[2] - ends[1];
        sorted[m - 1] = ends[m] - ends[m - 1];
    }
    let mut sigmas = vec![0.0; m];
    for (rank, &i) in order.iter().enumerate() {
        sigmas[i] = sorted[rank];
    }
    sigmas.truncate(xs.len());
    let range = high - low;
    let min_sigma = range / f64::min(100.0, 1.0 + (xs.len() + 1) as f64);
    let mut sigmas: Vec<f64> = sigmas
        .into_iter()
        .map(|s| s.clamp(min_sigma, range))
        .collect();
    let mut mus = xs.to_vec();
    mus.push(prior);
    sigmas.push(range);
    (mus, sigmas)
}

/// An index drawn with probability proportional to `weights`.
fn pick(weights: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.unit() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len().saturating_sub(1)
}

/// A normal draw truncated to [low, high], by rejection (the kernels' centres lie in the range
/// and their widths are at least 1/100 of it, so a draw lands inside often).
fn truncated_normal(mu: f64, sigma: f64, low: f64, high: f64, rng: &mut Rng) -> f64 {
    for _ in 0..1000 {
        let x = mu + sigma * rng.normal();
        if (low..=high).contains(&x) {
            return x;
        }
    }
    mu.clamp(low, high)
}

/// The log of the normal(mu, sigma) mass in [a, b], accurate in either tail.
fn log_mass(mu: f64, sigma: f64, a: f64, b: f64) -> f64 {
    let (za, zb) = ((a - mu) / sigma, (b - mu) / sigma);
    let mass = if za > 0.0 {
        // Both in the upper tail: the difference of upper tails keeps its digits.
        0.5 * (erfc(za / std::f64::consts::SQRT_2) - erfc(zb / std::f64::consts::SQRT_2))
    } else if zb < 0.0 {
        0.5 * (erfc(-zb / std::f64::consts::SQRT_2) - erfc(-za / std::f64::consts::SQRT_2))
    } else {
        1.0 - 0.5 * erfc(-za / std::f64::consts::SQRT_2) - 0.5 * erfc(zb / std::f64::consts::SQRT_2)
    };
    mass.max(f64::MIN_POSITIVE).ln()
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere, tails included).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_ramp_older_observations_past_25() {
        assert_eq!(default_weights(3), vec![1.0; 3]);
        let w = default_weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12);
        assert!((w[4] - 1.0).abs() < 1e-12);
        assert!(w[25..].iter().all(|&x| x == 1.0));
        assert!(w[1] > w[0] && w[2] > w[1]);
    }

    #[test]
    fn erfc_matches_known_values() {
        // scipy.special.erfc
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (3.0, 2.209_049_699_858_544e-5),
            (-1.0, 1.842_700_792_949_715),
        ] {
            assert!(
                (erfc(x) - want).abs() <= 2e-7 * want.max(1e-300),
                "erfc({x})"
            );
        }
    }

    #[test]
    fn kernels_are_as_wide_as_their_wider_gap_and_clipped() {
        // Observations 0.2 and 0.9 in [0, 1], prior 0.5: sorted 0.2, 0.5, 0.9 between the ends.
        let (mus, sigmas) = kernels(&[0.2, 0.9], 0.0, 1.0);
        assert_eq!(mus, vec![0.2, 0.9, 0.5]);
        // 0.2: outermost, its inner gap 0.3; 0.9: outermost, its inner gap 0.4; prior: the range.
        assert!((sigmas[0] - 0.3).abs() < 1e-12);
        assert!((sigmas[1] - 0.4).abs() < 1e-12);
        assert_eq!(sigmas[2], 1.0);
        // Two observations close together are clipped to range / (kernels + 1).
        let (_, sigmas) = kernels(&[0.5, 0.5001], 0.0, 1.0);
        assert!((sigmas[0] - 1.0 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn densities_integrate_to_one() {
        let p = Parzen::new(
            &Domain::Float {
                low: 0.0,
                high: 2.0,
                log: false,
            },
            &[Param::Number(0.3), Param::Number(1.7), Param::Number(1.1)],
        );
        let n = 20_000;
        let sum: f64 = (0..n)
            .map(|i| {
                let x = 2.0 * (i as f64 + 0.5) / n as f64;
                p.log_pdf(Param::Number(x)).exp() * 2.0 / n as f64
            })
            .sum();
        assert!((sum - 1.0).abs() < 1e-3, "{sum}");
        let q = Parzen::new(&Domain::Int { low: 1, high: 6 }, &[Param::Number(2.0)]);
        let mass: f64 = (1..=6)
            .map(|v| q.log_pdf(Param::Number(v as f64)).exp())
            .sum();
        assert!((mass - 1.0).abs() < 1e-6, "{mass}");
        let c = Parzen::new(&Domain::Choice(3), &[Param::Choice(1), Param::Choice(1)]);
        let mass: f64 = (0..3).map(|i| c.log_pdf(Param::Choice(i)).exp()).sum();
        assert!((mass - 1.0).abs() < 1e-12);
        assert!(c.log_pdf(Param::Choice(1)) > c.log_pdf(Param::Choice(0)));
    }
}
