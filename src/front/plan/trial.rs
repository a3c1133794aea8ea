//! A search's trials as planned runs: a suggested axis assignment goes through the path a grid
//! point takes (`exclude`, `repeat` over seeds, expansion, the schema check, defaults, the
//! cross-field rules, names and ids), so a trial's runs are named, identified and configured as
//! the same point of a grid would be. Pure: no I/O.

use std::fmt;

use kdl::KdlValue;

use super::{Expansion, Resolver, name_runs};
use crate::front::plan::PlannedRun;
use crate::front::points::{self, Point};
use crate::front::schema;
use crate::front::source::Sources;
use crate::front::tree::Node;

/// Plans a search's trials; made by [`super::plan`] with the experiment it checked.
pub struct Planner {
    experiment: Node,
    sources: Sources,
    /// The trials repeat over seeds (run names then carry the seed).
    repeats: bool,
}

impl fmt::Debug for Planner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Planner")
            .field(
                "experiment",
                &self.experiment.arg(0).and_then(|a| a.as_str()),
            )
            .finish()
    }
}

/// Why a suggested point gives no runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected {
    /// An `exclude` rule drops it.
    Excluded,
    /// Its runs fail a check (a value the probe points did not reach breaks a cross-field rule).
    Invalid(String),
}

impl Planner {
    pub(super) fn new(experiment: &Node, sources: &Sources, repeats: bool) -> Self {
        Planner {
            experiment: experiment.clone(),
            sources: sources.clone(),
            repeats,
        }
    }

    /// The runs of one trial: the point `axes` over the sweep's seeds.
    pub fn runs(&self, axes: &[(String, KdlValue)]) -> Result<Vec<PlannedRun>, Rejected> {
        let sweep = self.experiment.child("sweep");
        let base_seed = self
            .experiment
            .child("seed")
            .and_then(|s| s.arg(0))
            .and_then(|a| crate::front::expand::int(&a.value))
            .unwrap_or(0);
        if let Some(sweep) = sweep {
            match points::is_excluded(sweep, axes, base_seed) {
                Ok(true) => return Err(Rejected::Excluded),
                Ok(false) => {}
                Err(e) => return Err(Rejected::Invalid(e.inner.to_string())),
            }
        }
        let repeat = sweep
            .and_then(|s| s.child("repeat"))
            .and_then(|r| r.arg(0))
            .and_then(|a| crate::front::expand::int(&a.value))
            .unwrap_or(1)
            .max(1);
        let schema = schema::experiment();
        let Some(mut resolver) = Resolver::new(&self.experiment, schema, &self.sources, false)
        else {
            return Err(Rejected::Invalid("the schema has no experiment".into()));
        };
        let mut outcome = Expansion::default();
        for replicate in 0..repeat {
            let point = Point {
                axes: axes.to_vec(),
                seed: base_seed + replicate,
                replicate,
            };
            let label = point.label(self.repeats);
            resolver.resolve(point, &label, &mut outcome);
        }
        let problems: Vec<String> = outcome
            .internal
            .iter()
            .cloned()
            .chain(
                outcome
                    .failures
                    .into_diags(repeat as usize)
                    .iter()
                    .map(|d| d.inner.to_string()),
            )
            .collect();
        if !problems.is_empty() {
            return Err(Rejected::Invalid(problems.join("; ")));
        }
        let (planned, bad_name) = name_runs(outcome.runs, self.repeats);
        if let Some(bad) = bad_name {
            return Err(Rejected::Invalid(bad.inner.to_string()));
        }
        Ok(planned)
    }
}
