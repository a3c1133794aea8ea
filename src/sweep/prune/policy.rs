//! Pruning decisions, pure: given what the sweep's runs reported so far, whether a run that
//! reports its objective at an evaluation step stops there. The rules are Optuna's:
//!
//! - `asha` (`SuccessiveHalvingPruner`): at a rung (`min_steps × reduction^k`) the run's value
//!   joins the values every other run reported at that step; it continues when it is at least
//!   as good as the `⌊n / reduction⌋`-th best of those `n` values (the best, while fewer than
//!   `reduction` runs reached the rung), so ties continue.
//! - `median` (`MedianPruner`): after `warmup_steps` and once `startup_runs` runs completed, the
//!   run stops when its best value so far is worse than the median of the completed runs'
//!   values at this step (none reported there: it continues).
//! - `hyperband` (`HyperbandPruner`): `⌊log_η(max / min)⌋ + 1` brackets; a run's bracket comes
//!   from a hash of its id, weighted by each bracket's budget `⌈n·η^s / (s + 1)⌉`; bracket `b`
//!   is ASHA with its first rung at `min × η^b`, among the runs of that bracket alone.
//!
//! A value that is not a number (NaN, infinite, or missing from the evaluation) stops the run,
//! as Optuna prunes on NaN. Runs that diverged or failed are not counted at the steps they did
//! not reach, and their non-finite values are never counted (Optuna records no NaN at a rung).

use std::collections::{BTreeMap, BTreeSet};

use crate::rng::fnv1a;
use crate::spec::{Direction, Pruning};
use crate::sweep::record::short;

/// What the sweep's runs reported so far: each run's objective by evaluation step (NaN when it
/// was not a number), by run id, and which runs completed.
#[derive(Debug, Clone, Default)]
pub struct History {
    values: BTreeMap<String, BTreeMap<usize, f64>>,
    completed: BTreeSet<String>,
}

impl History {
    /// Run `id` reported `value` at `step` (a later report of the same step replaces it: a run
    /// resumed from a checkpoint evaluates the step again).
    pub fn report(&mut self, id: &str, step: usize, value: f64) {
        self.values
            .entry(id.to_owned())
            .or_default()
            .insert(step, value);
    }

    /// Run `id` trained to its end.
    pub fn complete(&mut self, id: &str) {
        self.completed.insert(id.to_owned());
    }

    /// The finite values other runs accepted by `peer` reported at `step`.
    fn at(&self, step: usize, id: &str, peer: impl Fn(&str) -> bool) -> Vec<f64> {
        self.values
            .iter()
            .filter(|(other, _)| other.as_str() != id && peer(other))
            .filter_map(|(_, values)| values.get(&step).copied())
            .filter(|v| v.is_finite())
            .collect()
    }
}

/// Why a run stops.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    pub step: usize,
    pub value: f64,
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// The objective was not a number.
    NotANumber,
    /// Not in the best `1/reduction` of the `compared` values at a rung (this run's included);
    /// `cutoff` is the worst value that continues.
    Rung {
        cutoff: f64,
        compared: usize,
        reduction: usize,
        bracket: Option<usize>,
    },
    /// The best value so far is worse than the median of `compared` completed runs.
    Median {
        best: f64,
        median: f64,
        compared: usize,
    },
}

impl Cut {
    /// The reason a summary gives: the step, the value, the cut-off and how many runs it was
    /// compared with.
    pub fn describe(&self, metric: &str) -> String {
        let (step, value) = (self.step, short(self.value));
        match &self.rule {
            Rule::NotANumber => format!("stopped at step {step}: {metric} is not a number"),
            Rule::Rung {
                cutoff,
                compared,
                reduction,
                bracket,
            } => {
                let bracket = bracket.map_or(String::new(), |b| format!(" of bracket {b}"));
                // Fewer runs than the reduction: only the best continues.
                let best = match compared < reduction {
                    true => "the best".to_owned(),
                    false => format!("in the best 1/{reduction}"),
                };
                format!(
                    "stopped at step {step}: {metric} {value} is not {best} of the {compared} runs at this rung{bracket} (cut-off {})",
                    short(*cutoff)
                )
            }
            Rule::Median {
                best,
                median,
                compared,
            } => format!(
                "stopped at step {step}: its best {metric} so far, {}, is worse than {}, the median of {compared} completed runs at this step",
                short(*best),
                short(*median)
            ),
        }
    }
}

/// Whether run `id`, reporting `value` at evaluation step `step`, stops there; `history` holds
/// what the runs reported before (this run's earlier steps included).
pub fn decide(
    pruning: Pruning,
    direction: Direction,
    history: &History,
    id: &str,
    step: usize,
    value: f64,
) -> Option<Cut> {
    match pruning {
        Pruning::Asha {
            min_steps,
            reduction,
        } => {
            if !is_rung(step, min_steps, reduction, 0) {
                return None;
            }
            halving(direction, history, id, step, value, reduction, None)
        }
        Pruning::Median {
            warmup_steps,
            startup_runs,
        } => median(
            direction,
            history,
            id,
            step,
            value,
            warmup_steps,
            startup_runs,
        ),
        Pruning::Hyperband {
            min_steps,
            max_steps,
            reduction,
        } => {
            let budgets = budgets(min_steps, max_steps, reduction);
            let bracket = bracket_of(id, &budgets);
            if !is_rung(step, min_steps, reduction, bracket as u32) {
                return None;
            }
            let peers = |other: &str| bracket_of(other, &budgets) == bracket;
            let mut history = history.clone();
            history.values.retain(|other, _| peers(other));
            halving(
                direction,
                &history,
                id,
                step,
                value,
                reduction,
                Some(bracket),
            )
        }
    }
}

/// Whether `step` is `min × reduction^(rate + k)` for some `k ≥ 0`.
fn is_rung(step: usize, min: usize, reduction: usize, rate: u32) -> bool {
    let mut rung = reduction.checked_pow(rate).and_then(|f| min.checked_mul(f));
    while let Some(r) = rung {
        if r >= step {
            return r == step;
        }
        rung = r.checked_mul(reduction);
    }
    false
}

/// Successive halving at the rung `step`, among the runs of `history`.
fn halving(
    direction: Direction,
    history: &History,
    id: &str,
    step: usize,
    value: f64,
    reduction: usize,
    bracket: Option<usize>,
) -> Option<Cut> {
    if !value.is_finite() {
        return Some(not_a_number(step, value));
    }
    let mut competing = history.at(step, id, |_| true);
    competing.push(value);
    // Best first.
    competing.sort_by(|a, b| match direction {
        Direction::Minimize => a.total_cmp(b),
        Direction::Maximize => b.total_cmp(a),
    });
    let compared = competing.len();
    let cutoff = competing[(compared / reduction.max(1)).saturating_sub(1)];
    let continues = value == cutoff || direction.better(value, cutoff);
    (!continues).then_some(Cut {
        step,
        value,
        rule: Rule::Rung {
            cutoff,
            compared,
            reduction,
            bracket,
        },
    })
}

fn median(
    direction: Direction,
    history: &History,
    id: &str,
    step: usize,
    value: f64,
    warmup_steps: usize,
    startup_runs: usize,
) -> Option<Cut> {
    let completed = history.completed.iter().filter(|c| *c != id).count();
    if step <= warmup_steps || completed == 0 || completed < startup_runs {
        return None;
    }
    let own = history.values.get(id);
    let best = own
        .into_iter()
        .flat_map(|v| v.range(..step).map(|(_, v)| *v))
        .chain([value])
        .filter(|v| v.is_finite())
        .reduce(|a, b| if direction.better(b, a) { b } else { a });
    let Some(best) = best else {
        return Some(not_a_number(step, value));
    };
    let mut values = history.at(step, id, |other| history.completed.contains(other));
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    direction.better(median, best).then_some(Cut {
        step,
        value,
        rule: Rule::Median {
            best,
            median,
            compared: n,
        },
    })
}

fn not_a_number(step: usize, value: f64) -> Cut {
    Cut {
        step,
        value,
        rule: Rule::NotANumber,
    }
}

/// Hyperband's brackets, by their share of the runs: `⌊log_η(max / min)⌋ + 1` of them (at
/// least one), bracket `b` weighing `⌈n·η^s / (s + 1)⌉` with `s = n - 1 - b`.
fn budgets(min: usize, max: usize, reduction: usize) -> Vec<u64> {
    let mut n = 1u32;
    let mut rung = min.max(1);
    while let Some(next) = rung.checked_mul(reduction).filter(|&r| r <= max) {
        rung = next;
        n += 1;
    }
    (0..n)
        .map(|b| {
            let s = n - 1 - b;
            let weight = (reduction as u64)
                .saturating_pow(s)
                .saturating_mul(n as u64);
            weight.div_ceil(s as u64 + 1)
        })
        .collect()
}

/// The bracket of run `id`: a hash of the id, over the brackets' budgets.
fn bracket_of(id: &str, budgets: &[u64]) -> usize {
    let total: u64 = budgets.iter().sum::<u64>().max(1);
    let mut n = fnv1a(id.as_bytes()) % total;
    for (b, &budget) in budgets.iter().enumerate() {
        if n < budget {
            return b;
        }
        n -= budget;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Maximize, Minimize};

    const ASHA: Pruning = Pruning::Asha {
        min_steps: 20,
        reduction: 3,
    };

    /// Runs `r0`, `r1`, … that reported `values[i]` at `step`.
    fn reported(step: usize, values: &[f64]) -> History {
        let mut h = History::default();
        for (i, v) in values.iter().enumerate() {
            h.report(&format!("r{i}"), step, *v);
        }
        h
    }

    fn rung_of(cut: &Cut) -> (f64, usize) {
        match cut.rule {
            Rule::Rung {
                cutoff, compared, ..
            } => (cutoff, compared),
            ref other => panic!("not a rung cut: {other:?}"),
        }
    }

    #[test]
    fn rungs_are_min_steps_times_powers_of_the_reduction() {
        let rungs: Vec<usize> = (1..=600).filter(|&s| is_rung(s, 20, 3, 0)).collect();
        assert_eq!(rungs, [20, 60, 180, 540]);
        let later: Vec<usize> = (1..=600).filter(|&s| is_rung(s, 20, 3, 1)).collect();
        assert_eq!(later, [60, 180, 540]);
        assert!(!is_rung(usize::MAX, usize::MAX / 2, 3, 0));
    }

    /// Only rungs decide: a run far behind the others continues between rungs.
    #[test]
    fn asha_decides_at_rungs_only() {
        let h = reported(40, &[0.1, 0.2, 0.3]);
        assert_eq!(decide(ASHA, Minimize, &h, "me", 40, 9.0), None);
        let h = reported(60, &[0.1, 0.2, 0.3]);
        assert!(decide(ASHA, Minimize, &h, "me", 60, 9.0).is_some());
    }

    /// The first `reduction - 1` runs at a rung continue only when they are the best so far.
    #[test]
    fn asha_first_runs_continue_when_best() {
        let empty = History::default();
        assert_eq!(decide(ASHA, Minimize, &empty, "me", 20, 5.0), None);
        let h = reported(20, &[1.0]);
        assert_eq!(decide(ASHA, Minimize, &h, "me", 20, 0.5), None);
        let cut = decide(ASHA, Minimize, &h, "me", 20, 2.0).unwrap();
        assert_eq!(rung_of(&cut), (1.0, 2));
        assert_eq!(cut.value, 2.0);
    }

    /// Of nine values at a rung the best three continue; the third best is the cut-off, and a
    /// value tied with it continues.
    #[test]
    fn asha_keeps_the_best_third_and_ties_continue() {
        let h = reported(20, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(decide(ASHA, Minimize, &h, "me", 20, 3.0), None);
        assert_eq!(decide(ASHA, Minimize, &h, "me", 20, 2.5), None);
        let cut = decide(ASHA, Minimize, &h, "me", 20, 3.5).unwrap();
        assert_eq!(rung_of(&cut), (3.0, 9));
        // Maximizing, the best are the largest.
        assert_eq!(decide(ASHA, Maximize, &h, "me", 20, 6.0), None);
        let cut = decide(ASHA, Maximize, &h, "me", 20, 5.5).unwrap();
        assert_eq!(rung_of(&cut), (6.0, 9));
        // All tied: everyone continues.
        let tied = reported(20, &[0.5; 8]);
        assert_eq!(decide(ASHA, Maximize, &tied, "me", 20, 0.5), None);
        assert_eq!(decide(ASHA, Minimize, &tied, "me", 20, 0.5), None);
    }

    /// Runs that did not reach the rung (pruned before, diverged, failed, still running) and
    /// values that are not numbers are not counted; a run's own value that is not a number
    /// stops it.
    #[test]
    fn asha_counts_only_numbers_reported_at_the_rung() {
        let mut h = reported(20, &[1.0, 2.0]);
        h.report("diverged", 20, f64::NAN);
        h.report("short", 20, 0.1);
        h.report("r0", 60, 1.0);
        h.report("r1", 60, 2.0);
        // At 60: r0, r1 and me; `short` and `diverged` never reached it.
        let cut = decide(ASHA, Minimize, &h, "me", 60, 1.5).unwrap();
        assert_eq!(rung_of(&cut), (1.0, 3));
        assert_eq!(decide(ASHA, Minimize, &h, "me", 60, 0.9), None);
        let cut = decide(ASHA, Minimize, &h, "me", 60, f64::NAN).unwrap();
        assert_eq!(cut.rule, Rule::NotANumber);
        assert_eq!(
            cut.describe("val/loss"),
            "stopped at step 60: val/loss is not a number"
        );
        let cut = decide(ASHA, Minimize, &h, "me", 20, f64::INFINITY).unwrap();
        assert_eq!(cut.rule, Rule::NotANumber);
    }

    /// A run's own earlier report of the same step (before a resume) is not a competitor.
    #[test]
    fn a_resumed_run_does_not_compete_with_itself() {
        let mut h = reported(20, &[1.0]);
        h.report("me", 20, 0.5);
        assert_eq!(decide(ASHA, Minimize, &h, "me", 20, 0.5), None);
    }

    #[test]
    fn the_reason_gives_step_value_cutoff_and_count() {
        let h = reported(20, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let cut = decide(ASHA, Minimize, &h, "me", 20, 3.5).unwrap();
        assert_eq!(
            cut.describe("val/loss"),
            "stopped at step 20: val/loss 3.500 is not in the best 1/3 of the 9 runs at this rung (cut-off 3.000)"
        );
        let h = reported(20, &[1.0]);
        let cut = decide(ASHA, Maximize, &h, "me", 20, 0.5).unwrap();
        assert_eq!(
            cut.describe("val/accuracy"),
            "stopped at step 20: val/accuracy 0.5000 is not the best of the 2 runs at this rung (cut-off 1.000)"
        );
    }

    const MEDIAN: Pruning = Pruning::Median {
        warmup_steps: 10,
        startup_runs: 2,
    };

    /// Completed runs `c0`, `c1`, … that reported `values[i]` at `step`.
    fn completed(step: usize, values: &[f64]) -> History {
        let mut h = History::default();
        for (i, v) in values.iter().enumerate() {
            let id = format!("c{i}");
            h.report(&id, step, *v);
            h.complete(&id);
        }
        h
    }

    #[test]
    fn median_stops_runs_worse_than_the_completed_runs_median() {
        let h = completed(20, &[1.0, 2.0, 3.0]);
        assert_eq!(decide(MEDIAN, Minimize, &h, "me", 20, 2.0), None);
        let cut = decide(MEDIAN, Minimize, &h, "me", 20, 2.5).unwrap();
        assert_eq!(
            cut.rule,
            Rule::Median {
                best: 2.5,
                median: 2.0,
                compared: 3
            }
        );
        assert_eq!(
            cut.describe("val/loss"),
            "stopped at step 20: its best val/loss so far, 2.500, is worse than 2.000, the median of 3 completed runs at this step"
        );
        // An even count: the mean of the middle two.
        let h = completed(20, &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(decide(MEDIAN, Maximize, &h, "me", 20, 2.5), None);
        assert!(decide(MEDIAN, Maximize, &h, "me", 20, 2.4).is_some());
    }

    /// Nothing stops within the warmup, before enough runs completed, or where no completed run
    /// reported; running and pruned runs are not counted.
    #[test]
    fn median_waits_for_warmup_startup_and_values() {
        let h = completed(10, &[1.0, 1.0, 1.0]);
        assert_eq!(decide(MEDIAN, Minimize, &h, "me", 10, 9.0), None);
        let h = completed(20, &[1.0]);
        assert_eq!(decide(MEDIAN, Minimize, &h, "me", 20, 9.0), None);
        let mut h = completed(20, &[1.0, 1.0]);
        assert_eq!(decide(MEDIAN, Minimize, &h, "me", 40, 9.0), None);
        h.report("running", 40, 0.1);
        h.report("running2", 40, 0.1);
        assert_eq!(decide(MEDIAN, Minimize, &h, "me", 40, 9.0), None);
    }

    /// The run's best value so far counts, not its latest; if none is a number it stops.
    #[test]
    fn median_uses_the_best_value_so_far() {
        let mut h = completed(40, &[1.0, 2.0, 3.0]);
        h.report("me", 20, 1.5);
        assert_eq!(decide(MEDIAN, Minimize, &h, "me", 40, 9.0), None);
        h.report("nan", 20, f64::NAN);
        let cut = decide(MEDIAN, Minimize, &h, "nan", 40, f64::NAN).unwrap();
        assert_eq!(cut.rule, Rule::NotANumber);
        // A missing value now, with a number before, is judged on that number.
        assert!(decide(MEDIAN, Minimize, &h, "me", 40, f64::NAN).is_none());
    }

    #[test]
    fn hyperband_brackets_and_budgets_follow_optuna() {
        // Optuna: floor(log_3(400 / 20)) + 1 = 3 brackets, budgets ceil(3·3^s / (s + 1)).
        assert_eq!(budgets(20, 400, 3), [9, 5, 3]);
        assert_eq!(budgets(20, 20, 3), [1]);
        assert_eq!(budgets(20, 10, 3), [1]);
        let counts = (0..1700).fold([0usize; 3], |mut c, i| {
            c[bracket_of(&format!("run{i}"), &[9, 5, 3])] += 1;
            c
        });
        // Roughly 9:5:3.
        assert!(counts[0] > counts[1] && counts[1] > counts[2], "{counts:?}");
    }

    /// A run competes with its own bracket only, and its first rung is its bracket's.
    #[test]
    fn hyperband_runs_compete_within_their_bracket() {
        let pruning = Pruning::Hyperband {
            min_steps: 20,
            max_steps: 400,
            reduction: 3,
        };
        let budgets = budgets(20, 400, 3);
        let of = |b: usize| {
            (0..)
                .map(|i| format!("id{i}"))
                .filter(|id| bracket_of(id, &budgets) == b)
                .take(3)
                .collect::<Vec<_>>()
        };
        let (zero, one) = (of(0), of(1));
        let mut h = History::default();
        h.report(&one[0], 60, 1.0);
        // Bracket 0's runs decide at step 20; bracket 1's do not.
        assert_eq!(decide(pruning, Minimize, &h, &zero[0], 20, 5.0), None);
        assert_eq!(decide(pruning, Minimize, &h, &one[1], 20, 5.0), None);
        // At 60, bracket 1's run is compared with bracket 1's only.
        let cut = decide(pruning, Minimize, &h, &one[1], 60, 5.0).unwrap();
        match cut.rule {
            Rule::Rung {
                cutoff,
                compared,
                bracket,
                ..
            } => assert_eq!((cutoff, compared, bracket), (1.0, 2, Some(1))),
            other => panic!("{other:?}"),
        }
        h.report(&zero[1], 60, 0.1);
        assert_eq!(
            decide(pruning, Minimize, &h, &zero[0], 60, 5.0).map(|c| rung_of(&c)),
            Some((0.1, 2))
        );
        assert_eq!(
            decide(pruning, Minimize, &h, &one[2], 60, 2.0).map(|c| rung_of(&c)),
            Some((1.0, 2))
        );
    }
}
