//! Where the executor takes a sweep's next run from: a fixed list (a grid's runs still to
//! train), or a search, which adds a trial's runs to the plan when a slot frees and learns from
//! each run that ends ([`crate::sweep::search::trials::Trials`]).

use std::collections::VecDeque;

use crate::front::plan::Plan;
use crate::sweep::options::SweepError;
use crate::sweep::record::{Summary, SweepDir};

/// The runs of a sweep, handed out one at a time.
pub(crate) trait Queue {
    /// The index of the next run to start now, if there is one; a search may add runs (to the
    /// plan, with their summaries) to give one. `None` while runs are in flight can mean "wait
    /// for their results"; with none in flight, the sweep is done.
    fn next(
        &mut self,
        sweep: &SweepDir,
        plan: &mut Plan,
        summaries: &mut Vec<Summary>,
    ) -> Result<Option<usize>, SweepError>;

    /// A run ended; its summary is in `summaries`.
    fn finished(&mut self, index: usize, summaries: &[Summary]);

    /// How many runs the sweep has, as progress counts them.
    fn total(&self, plan: &Plan) -> usize;
}

/// A fixed list of runs, in order.
pub(crate) struct Fixed(pub VecDeque<usize>);

impl Queue for Fixed {
    fn next(
        &mut self,
        _: &SweepDir,
        _: &mut Plan,
        _: &mut Vec<Summary>,
    ) -> Result<Option<usize>, SweepError> {
        Ok(self.0.pop_front())
    }

    fn finished(&mut self, _: usize, _: &[Summary]) {}

    fn total(&self, plan: &Plan) -> usize {
        plan.runs.len()
    }
}
