//! Pruning a sweep's runs (`sweep { prune … }`): [`policy`] decides, purely, from what the runs
//! reported; this side keeps the record, the sweep's pruning journal
//! ([`crate::sweep::record::journal`]), reading it and appending to it under its lock. A run
//! asks at each of its evaluation steps, wherever it trains, so pruning needs no server.

pub mod policy;

use std::io;

use crate::front::plan::PlannedRun;
use crate::spec::Pruning;
use crate::sweep::record::journal::{self, Line};
use crate::sweep::record::{Status, SweepDir};
use policy::History;

/// Asks the sweep whether one run goes on.
pub struct Pruner<'a> {
    sweep: &'a SweepDir,
    pruning: Pruning,
    run: &'a PlannedRun,
}

impl<'a> Pruner<'a> {
    pub fn new(sweep: &'a SweepDir, pruning: Pruning, run: &'a PlannedRun) -> Self {
        Pruner {
            sweep,
            pruning,
            run,
        }
    }

    /// The run's objective at an evaluation step (NaN when the evaluation did not give it):
    /// decided from the journal and recorded in it, in one hold of its lock. `Some(reason)`:
    /// the run stops.
    pub fn judge(&self, step: usize, value: f64) -> io::Result<Option<String>> {
        let _lock = journal::lock(self.sweep)?;
        let history = history(&journal::read(self.sweep)?);
        let objective = &self.run.config.objective;
        let cut = policy::decide(
            self.pruning,
            objective.direction,
            &history,
            &self.run.id,
            step,
            value,
        );
        let line = Line::report(&self.run.name, &self.run.id, step, value);
        journal::append(self.sweep, &line)?;
        Ok(cut.map(|c| c.describe(&objective.metric)))
    }
}

/// Records how a run of a pruned sweep ended (the median counts the completed ones).
pub fn ended(sweep: &SweepDir, run: &PlannedRun, status: Status) -> io::Result<()> {
    let _lock = journal::lock(sweep)?;
    journal::append(sweep, &Line::end(&run.name, &run.id, status))
}

/// The journal's lines as the policy reads them.
fn history(lines: &[Line]) -> History {
    let mut history = History::default();
    for line in lines {
        if let Some(step) = line.step {
            history.report(&line.id, step, line.value.unwrap_or(f64::NAN));
        }
        if line.end == Some(Status::Completed) {
            history.complete(&line.id);
        }
    }
    history
}
