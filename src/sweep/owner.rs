//! Whether a run that its summary records as `running` still has a process training it. A
//! local sweep's runs live only as long as the `xp run` that holds the sweep's lock (its run
//! processes die with it); a sweep submitted to Slurm is the queue's to tell. A run whose
//! owner is gone (a SIGKILLed `xp run`, a cancelled job) is read as `interrupted`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::sweep::record::{Status, Summary, SweepDir, lock};
use crate::sweep::slurm;

/// The owners of a sweep's runs, as found when read.
pub struct Owners {
    /// The process holding the sweep's lock lives.
    local: bool,
    /// For a sweep submitted to Slurm, the queued tasks by plan index, or why the queue could
    /// not be read (nothing is then judged).
    queue: Option<Result<BTreeMap<usize, String>, String>>,
}

impl Owners {
    /// Looks at the sweep's lock and, when it was submitted to Slurm, its queue.
    pub fn of(sweep: &SweepDir) -> Owners {
        let submitted = slurm::jobs(sweep).map_or(true, |jobs| !jobs.is_empty());
        Owners {
            local: lock::holder_lives(&sweep.lock_file()),
            queue: submitted.then(|| slurm::queued(sweep).map_err(|e| e.to_string())),
        }
    }

    /// The Slurm state of each queued run, when the sweep was submitted and the queue read.
    pub fn queued(&self) -> Option<&BTreeMap<usize, String>> {
        self.queue.as_ref().and_then(|q| q.as_ref().ok())
    }

    /// Why the queue of a sweep submitted to Slurm could not be read.
    pub fn queue_error(&self) -> Option<&str> {
        self.queue
            .as_ref()
            .and_then(|q| q.as_ref().err())
            .map(String::as_str)
    }

    /// Whether run `index` may still be trained by a live process.
    pub fn alive(&self, index: usize) -> bool {
        self.local
            || match &self.queue {
                None => false,
                Some(Err(_)) => true,
                Some(Ok(queued)) => queued.contains_key(&index),
            }
    }

    /// The summary of run `index` as it stands: `running` becomes `interrupted` when no live
    /// process trains the run.
    pub fn settle(&self, index: usize, summary: &mut Summary) {
        self.settle_status(index, &mut summary.status, &mut summary.reason);
    }

    fn settle_status(&self, index: usize, status: &mut Status, reason: &mut Option<String>) {
        if *status == Status::Running && !self.alive(index) {
            *status = Status::Interrupted;
            *reason = Some(GONE.into());
        }
    }
}

/// The reason of a run read as interrupted because its owner is gone.
const GONE: &str = "its process is gone (xp was killed?); `xp run --resume` continues it";

/// [`Owners::settle`] for a run directory found on its own (`xp compare`): its sweep is the
/// folder above it, and its index the run's place in the sweep's plan.json.
pub fn settle_run(run_dir: &Path, name: &str, status: &mut Status, reason: &mut Option<String>) {
    if *status != Status::Running {
        return;
    }
    let Some(sweep) = run_dir.parent() else {
        return;
    };
    let sweep = SweepDir {
        path: sweep.to_owned(),
    };
    // Only the runs of a sweep xp planned have an owner to ask about.
    let Some(index) = std::fs::read(sweep.plan())
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|plan| {
            plan["runs"]
                .as_array()?
                .iter()
                .position(|r| r["name"] == name)
        })
    else {
        return;
    };
    Owners::of(&sweep).settle_status(index, status, reason);
}
