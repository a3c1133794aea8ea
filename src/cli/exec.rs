//! `xp exec SWEEP_DIR --index I`: trains one run of a planned sweep in this process. `xp run`
//! starts one per run (`--jobs`), and each task of a Slurm array runs one. The run is read back
//! from the sweep's `plan.json`; it continues from its newest checkpoint when it has one. Its
//! progress goes to stdout as JSON lines, for the process that started it.
//!
//! Exit codes: 0 the run completed (or was pruned), 1 it failed or diverged, 2 the sweep or
//! index is not usable, 130 it was interrupted (and checkpointed).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

use super::args::ExecArgs;
use crate::cli::{CliError, Exit};
use crate::front::plan::Plan;
use crate::sweep::executor::{self, SweepOptions};
use crate::sweep::preflight::{self, device_of};
use crate::sweep::progress::{Lines, Progress, Update};
use crate::sweep::record::{self, Status, Summary, SweepDir, read_summary, results};
use crate::train::precision;

/// Reads a sweep's `plan.json`.
pub fn read_plan(sweep: &SweepDir) -> Result<Plan, CliError> {
    let path = sweep.plan();
    let bytes = std::fs::read(&path).map_err(|e| {
        CliError::Usage(format!(
            "{} is not a sweep directory: cannot read {}: {e}",
            sweep.path.display(),
            path.display()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CliError::Usage(format!(
            "{} was not written by this version of xp: {e}",
            path.display()
        ))
    })
}

pub fn run(args: ExecArgs) -> Result<Exit, CliError> {
    let sweep = SweepDir {
        path: args.sweep.clone(),
    };
    let plan = read_plan(&sweep)?;
    let Some(run) = plan.runs.get(args.index) else {
        return Err(CliError::Usage(format!(
            "the sweep in {} has {} runs; there is no run {}",
            args.sweep.display(),
            plan.runs.len(),
            args.index
        )));
    };
    let stop = Arc::new(AtomicBool::new(false));
    // Slurm's warning before a time limit (`--signal=B:USR1@…`): checkpoint and requeue.
    let requeue = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM, SIGUSR1] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    signal_hook::flag::register(SIGUSR1, Arc::clone(&requeue))?;
    let single = Plan {
        runs: vec![run.clone()],
        ..plan.clone()
    };
    let (datasets, diags) =
        preflight::load_data(std::slice::from_ref(&single), miette::Severity::Error);
    let device = device_of(&run.config, args.device.as_deref());
    let run_dir = sweep.run(&run.name);
    let mut summary = read_summary(&run_dir).unwrap_or_else(|| {
        Summary::pending(
            &plan.experiment,
            run,
            &device,
            precision::of_device(run.config.precision, &device).0,
        )
    });
    summary.device = device.clone();
    let data = datasets.get(&run.config);
    if data.is_none() {
        let problems: Vec<String> = diags.iter().map(|d| d.inner.to_string()).collect();
        summary.fail(format!(
            "its data could not be loaded: {}",
            problems.join("; ")
        ));
        record::ready_run_dir(&sweep, run, &summary)?;
    } else {
        let options = SweepOptions {
            device: args.device.clone(),
            stop: Some(Arc::clone(&stop)),
            ..SweepOptions::default()
        };
        let mut wire = Wire(std::io::stdout());
        let mut lines = Lines::new(std::io::stderr(), Duration::from_secs(30), false);
        let progress: &mut dyn Progress = if args.json_progress {
            &mut wire
        } else {
            lines.run_started(args.index, plan.runs.len(), run);
            &mut lines
        };
        let result = executor::execute_run(
            &sweep,
            run,
            args.index,
            data,
            &mut summary,
            plan.prune,
            &options,
            progress,
        );
        match result {
            // How the run ended is recorded; only a later line of train.log was lost.
            Err(e) if crate::sweep::slurm::settled(&summary) => eprintln!("{e}"),
            Err(e) => {
                // As the in-process path records it (executor::run_plan); the orchestrator
                // reads the reason from summary.json.
                summary.fail(format!("writing the run directory failed: {e}"));
                if let Err(again) = record::write_summary(&run_dir, &summary) {
                    eprintln!("{again}");
                }
            }
            Ok(()) => {}
        }
        progress.run_finished(args.index, plan.runs.len(), &summary);
    }
    if args.update_results {
        results::refresh(&sweep, &plan, &device)?;
    }
    Ok(match summary.status {
        Status::Completed | Status::Pruned => Exit::Success,
        Status::Interrupted => {
            if requeue.load(Ordering::SeqCst) {
                crate::sweep::slurm::requeue_self();
            }
            Exit::Interrupted
        }
        _ => Exit::Failure,
    })
}

/// Progress as JSON lines on a stream, for the orchestrator. A closed stream (the orchestrator
/// is gone) is not an error: the run directory is the record.
struct Wire<W: Write>(W);

impl<W: Write> Progress for Wire<W> {
    fn run_started(&mut self, _: usize, _: usize, _: &crate::front::plan::PlannedRun) {}

    fn update(&mut self, _: usize, update: &Update) {
        if let Ok(line) = serde_json::to_string(update) {
            let _ = writeln!(self.0, "{line}");
            let _ = self.0.flush();
        }
    }

    fn run_finished(&mut self, _: usize, _: usize, _: &Summary) {}

    fn note(&mut self, text: &str) {
        eprintln!("{text}");
    }
}
