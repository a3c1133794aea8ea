//! A search inside a sweep: when a slot frees (fewer than `parallel` trials training), the
//! sampler suggests the next trial from the results so far; the trial's point becomes runs
//! through the front end's [`Planner`] (as a grid point would), is appended to `search.jsonl`
//! and `plan.json` and its runs are queued; when a trial's runs have all ended, its objective
//! (the mean over its seeds of each run's best value of the experiment's objective) is what the
//! sampler learns. A suggestion that `exclude` drops, that repeats a trial already made or whose
//! runs fail a check is drawn again, up to [`MAX_ATTEMPTS`] times. A trial with a failed or
//! diverged run teaches nothing (Optuna leaves failed trials out too); a pruned one counts as worse
//! than every finished one. `--resume` replays the
//! journal: the recorded trials are planned again (their ids must match), completed runs keep
//! their results, the others train, and the search continues from the next trial number.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use super::{Observed, Param, Sampler, domains, point, sampler, trial_rng};
use crate::front::plan::{Plan, PlannedRun, Planner, Rejected, value_json};
use crate::front::search::Search;
use crate::spec::{Direction, Objective};
use crate::sweep::options::{SweepError, SweepOptions};
use crate::sweep::prepare::state_of;
use crate::sweep::queue::Queue;
use crate::sweep::record::search_journal::{self as journal, TrialRecord, TrialRun};
use crate::sweep::record::{Status, Summary, SweepDir};

/// Suggestions drawn for one trial before the search gives up.
pub const MAX_ATTEMPTS: usize = 1000;

/// One trial: its values and its runs (indices into the plan).
struct Trial {
    params: Vec<Param>,
    runs: Vec<usize>,
    /// Its objective, once every run ended: `Some(Some(loss))`, or `Some(None)` when one failed.
    outcome: Option<Option<f64>>,
}

/// A search as the executor's [`Queue`].
pub(crate) struct Trials {
    search: Search,
    planner: Arc<Planner>,
    sampler: Box<dyn Sampler>,
    parallel: usize,
    objective: Option<Objective>,
    trials: Vec<Trial>,
    /// Runs of started trials still to start.
    queue: VecDeque<usize>,
    options: SweepOptions,
}

impl Trials {
    /// The search of `plan` (with `parallel` trials at once unless the search says), with the
    /// trials of its journal replayed when the sweep is resumed: their runs are added to the
    /// plan and `summaries`, and those still to train are queued.
    pub fn new(
        sweep: &SweepDir,
        plan: &mut Plan,
        summaries: &mut Vec<Summary>,
        parallel: usize,
        options: &SweepOptions,
    ) -> Result<Option<Trials>, SweepError> {
        let (Some(search), Some(planner)) = (plan.search.clone(), plan.planner.clone()) else {
            return Ok(None);
        };
        let mut trials = Trials {
            sampler: sampler(search.sampler),
            parallel: search.parallel.unwrap_or(parallel).max(1),
            search,
            planner,
            objective: None,
            trials: Vec::new(),
            queue: VecDeque::new(),
            options: options.clone(),
        };
        if options.resume {
            for record in journal::read(sweep)? {
                trials.replay(sweep, plan, summaries, &record)?;
            }
            sweep.write_plan(plan)?;
        }
        Ok(Some(trials))
    }

    fn replay(
        &mut self,
        sweep: &SweepDir,
        plan: &mut Plan,
        summaries: &mut Vec<Summary>,
        record: &TrialRecord,
    ) -> Result<(), SweepError> {
        let changed = |why: String| SweepError::PlanChanged {
            dir: sweep.path.display().to_string(),
            changes: format!(
                "trial {} of its search.jsonl {why}; run without --resume to start a new search",
                record.trial
            ),
        };
        let params = self
            .search
            .axes
            .iter()
            .map(|a| {
                record
                    .axes
                    .get(&a.name)
                    .map(crate::front::search::kdl_of_json)
                    .and_then(|v| Param::of_value(&v, &a.distribution))
            })
            .collect::<Option<Vec<Param>>>()
            .ok_or_else(|| changed("has values outside the search's axes".into()))?;
        let runs = self
            .planner
            .runs(&point(&self.search, &params))
            .map_err(|_| changed("is no longer a valid point".into()))?;
        let recorded: Vec<(&str, &str)> = record
            .runs
            .iter()
            .map(|r| (r.name.as_str(), r.id.as_str()))
            .collect();
        let now: Vec<(&str, &str)> = runs
            .iter()
            .map(|r| (r.name.as_str(), r.id.as_str()))
            .collect();
        if recorded != now {
            return Err(changed(
                "now plans other runs (the experiment changed)".into(),
            ));
        }
        let mut indices = Vec::new();
        for run in runs {
            let (summary, train, _) = state_of(sweep, &plan.experiment, &run, &self.options)?;
            let index = self.add_run(plan, summaries, run, summary);
            if train {
                self.queue.push_back(index);
            }
            indices.push(index);
        }
        self.trials.push(Trial {
            params,
            runs: indices,
            outcome: None,
        });
        let last = self.trials.len() - 1;
        self.settle(last, summaries);
        Ok(())
    }

    fn add_run(
        &mut self,
        plan: &mut Plan,
        summaries: &mut Vec<Summary>,
        run: PlannedRun,
        summary: Summary,
    ) -> usize {
        self.objective
            .get_or_insert_with(|| run.config.objective.clone());
        plan.runs.push(run);
        summaries.push(summary);
        plan.runs.len() - 1
    }

    /// The trials as the sampler sees them: finished ones with their loss, those in flight
    /// without, failed ones left out.
    fn observed(&self) -> Vec<Observed> {
        self.trials
            .iter()
            .filter_map(|t| match t.outcome {
                Some(Some(loss)) => Some(Observed {
                    params: t.params.clone(),
                    loss: Some(loss),
                }),
                Some(None) => None,
                None => Some(Observed {
                    params: t.params.clone(),
                    loss: None,
                }),
            })
            .collect()
    }

    /// Records a trial's outcome once all its runs ended.
    fn settle(&mut self, trial: usize, summaries: &[Summary]) {
        let objective = self.objective.clone();
        let t = &mut self.trials[trial];
        if t.outcome.is_some() {
            return;
        }
        let ended = t.runs.iter().all(|&i| {
            !matches!(
                summaries[i].status,
                Status::Pending | Status::Running | Status::Interrupted
            )
        });
        if !ended {
            return;
        }
        let values: Option<Vec<f64>> = t
            .runs
            .iter()
            .map(|&i| {
                let s = &summaries[i];
                let metric = &objective.as_ref()?.metric;
                (s.status == Status::Completed)
                    .then(|| {
                        s.best
                            .get(metric)
                            .map(|b| b.value)
                            .or_else(|| s.last.get(metric).copied())
                    })
                    .flatten()
                    .filter(|v| v.is_finite())
            })
            .collect();
        // A pruned trial (none failed) was stopped for being worse than the others: it counts
        // among the bad, after every finished one, as Optuna ranks pruned trials.
        let pruned = t
            .runs
            .iter()
            .any(|&i| summaries[i].status == Status::Pruned)
            && t.runs
                .iter()
                .all(|&i| matches!(summaries[i].status, Status::Completed | Status::Pruned));
        if pruned {
            t.outcome = Some(Some(f64::INFINITY));
            return;
        }
        t.outcome = Some(values.map(|v| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            match objective.map(|o| o.direction) {
                Some(Direction::Maximize) => -mean,
                _ => mean,
            }
        }));
    }

    /// Suggests the next trial, plans and records it, and queues its runs.
    fn suggest(
        &mut self,
        sweep: &SweepDir,
        plan: &mut Plan,
        summaries: &mut Vec<Summary>,
    ) -> Result<(), SweepError> {
        let number = self.trials.len();
        let observed = self.observed();
        let domains = domains(&self.search);
        let tried: BTreeSet<&str> = plan.runs.iter().map(|r| r.id.as_str()).collect();
        let mut reasons: BTreeSet<String> = BTreeSet::new();
        let mut found = None;
        for attempt in 0..MAX_ATTEMPTS {
            let mut rng = trial_rng(self.search.seed, number, attempt);
            let params = self.sampler.suggest(&domains, &observed, &mut rng);
            match self.planner.runs(&point(&self.search, &params)) {
                Ok(runs) if runs.iter().any(|r| tried.contains(r.id.as_str())) => {
                    reasons.insert("already tried".into());
                }
                Ok(runs) => {
                    found = Some((attempt, params, runs));
                    break;
                }
                Err(Rejected::Excluded) => {
                    reasons.insert("excluded".into());
                }
                Err(Rejected::Invalid(why)) => {
                    reasons.insert(format!("invalid: {why}"));
                }
            }
        }
        let Some((rejected, params, runs)) = found else {
            return Err(SweepError::Search(format!(
                "trial {number} of {}: {MAX_ATTEMPTS} suggestions in a row were rejected ({}); the space left is too small: loosen `exclude`, widen the axes or lower `trials`",
                self.search.trials,
                reasons.into_iter().collect::<Vec<_>>().join("; ")
            )));
        };
        let record = TrialRecord {
            trial: number,
            axes: point(&self.search, &params)
                .iter()
                .map(|(k, v)| (k.clone(), value_json(v)))
                .collect(),
            rejected,
            runs: runs
                .iter()
                .map(|r| TrialRun {
                    name: r.name.clone(),
                    id: r.id.clone(),
                    seed: r.seed,
                })
                .collect(),
        };
        let mut indices = Vec::new();
        for run in runs {
            let (summary, _, _) = state_of(sweep, &plan.experiment, &run, &self.options)?;
            let index = self.add_run(plan, summaries, run, summary);
            self.queue.push_back(index);
            indices.push(index);
        }
        // The journal first: a trial whose runs start is always recorded.
        journal::append(sweep, &record)?;
        sweep.write_plan(plan)?;
        crate::sweep::fault::point("trial");
        self.trials.push(Trial {
            params,
            runs: indices,
            outcome: None,
        });
        Ok(())
    }

    /// Trials started and not yet ended.
    fn in_flight(&self) -> usize {
        self.trials.iter().filter(|t| t.outcome.is_none()).count()
    }
}

impl Queue for Trials {
    fn next(
        &mut self,
        sweep: &SweepDir,
        plan: &mut Plan,
        summaries: &mut Vec<Summary>,
    ) -> Result<Option<usize>, SweepError> {
        if let Some(index) = self.queue.pop_front() {
            return Ok(Some(index));
        }
        if self.trials.len() >= self.search.trials || self.in_flight() >= self.parallel {
            return Ok(None);
        }
        self.suggest(sweep, plan, summaries)?;
        Ok(self.queue.pop_front())
    }

    fn finished(&mut self, index: usize, summaries: &[Summary]) {
        if let Some(trial) = self.trials.iter().position(|t| t.runs.contains(&index)) {
            self.settle(trial, summaries);
        }
    }

    fn total(&self, _: &Plan) -> usize {
        self.search.budget()
    }
}
