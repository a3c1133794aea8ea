//! `xp run FILE`: validate → plan → preflight (data, capabilities) → train every run into a new
//! sweep directory. Exit 1 when a run failed or diverged, 2 when the input is invalid.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use globset::Glob;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::cli::{CliError, Outcome};
use crate::commands::report_diagnostics;
use crate::diagnostic::Diagnostics;
use crate::execute::{self, Options, Silent, SweepError};
use crate::preflight;
use crate::progress::Lines;
use crate::record::{Status, short};
use crate::table::Table;
use crate::validate::{Overrides, validate_files};

pub struct RunArgs {
    pub file: PathBuf,
    pub overrides: Overrides,
    pub only: Option<String>,
    pub device: Option<String>,
    pub runs_dir: Option<PathBuf>,
    pub quiet: bool,
    pub resume: bool,
    pub retry_failed: bool,
    pub reuse: bool,
    pub fail_fast: bool,
}

pub fn run(mut args: RunArgs) -> Result<Outcome, CliError> {
    let mut checked = validate_files(std::slice::from_ref(&args.file), &args.overrides);
    // User defaults, where the flags leave something open.
    let mut config_diags = Diagnostics::default();
    let defaults = crate::user_config::read(&mut checked.sources, &mut config_diags);
    checked.diags.extend(config_diags);
    let runs_dir = args
        .runs_dir
        .take()
        .or(defaults.runs_dir)
        .unwrap_or_else(|| PathBuf::from("runs"));
    args.device = args.device.take().or(defaults.device);
    if report_diagnostics(&checked)? {
        return Ok(Outcome::Invalid);
    }
    if let Some(pattern) = &args.only {
        let glob = match Glob::new(pattern) {
            Ok(g) => g.compile_matcher(),
            Err(e) => {
                return Err(CliError::Usage(format!(
                    "--only `{pattern}` is not a valid glob: {e}"
                )));
            }
        };
        for plan in &mut checked.plans {
            plan.runs.retain(|r| glob.is_match(&r.name));
        }
        checked.plans.retain(|p| !p.runs.is_empty());
        if checked.plans.is_empty() {
            return Err(CliError::Usage(format!(
                "--only `{pattern}` matches no run; `xp plan {}` lists them",
                args.file.display()
            )));
        }
    }
    let mut pre = Diagnostics::default();
    let (datasets, found) = preflight::check(
        &checked.plans,
        args.device.as_deref(),
        miette::Severity::Error,
    );
    pre.extend_from(found);
    if !pre.is_empty() {
        let text = crate::render::Renderer::for_stderr().render(&pre, &checked.sources);
        std::io::stderr().write_all(text.as_bytes())?;
        if pre.has_errors() {
            return Ok(Outcome::Invalid);
        }
    }
    crate::commands::compare::check_baselines(&checked.plans)?;
    let source = std::fs::read_to_string(&args.file)?;
    let stop = Arc::new(AtomicBool::new(false));
    // The first Ctrl-C or SIGTERM stops gracefully (the active run checkpoints); a second one
    // exits at once — every file others read is replaced atomically, so nothing is corrupted.
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let options = Options {
        runs_dir,
        device: args.device.clone(),
        resume: args.resume,
        retry_failed: args.retry_failed,
        reuse: args.reuse,
        fail_fast: args.fail_fast,
        stop: Some(Arc::clone(&stop)),
    };
    let mut failures = 0;
    let mut interrupted = false;
    let mut finished = Vec::new();
    for plan in &checked.plans {
        let mut lines = Lines::new(std::io::stderr(), Duration::from_secs(5));
        let progress: &mut dyn execute::Progress =
            if args.quiet { &mut Silent } else { &mut lines };
        let report = match execute::run_plan(plan, &source, &datasets, &options, progress) {
            Ok(report) => report,
            Err(SweepError::Io(e)) => return Err(CliError::Io(e)),
            Err(e) => return Err(CliError::Usage(e.to_string())),
        };
        failures += report.failures();
        interrupted |= report.interrupted;
        print_summary(
            &report,
            plan.runs
                .first()
                .map(|r| r.config.objective.metric.as_str())
                .unwrap_or("val/loss"),
        )?;
        if interrupted {
            break;
        }
        finished.push((report.dir.clone(), plan));
    }
    Ok(if interrupted {
        eprintln!(
            "interrupted: `xp run {} --resume` continues where it stopped",
            args.file.display()
        );
        Outcome::Interrupted
    } else {
        // The gate of the experiments' `regression` blocks: the sweeps against their baselines.
        let gate = crate::commands::compare::gate_sweeps(&finished, args.only.as_deref())?;
        if failures > 0 { Outcome::Failure } else { gate }
    })
}

fn print_summary(report: &execute::SweepReport, objective: &str) -> Result<(), CliError> {
    let mut t = Table::new(vec![
        "name".into(),
        "status".into(),
        format!("final {objective}"),
        format!("best {objective}"),
        "steps".into(),
        "wall_s".into(),
    ]);
    for s in &report.summaries {
        t.push(vec![
            s.name.clone(),
            s.status.as_str().into(),
            s.last.get(objective).map_or(String::new(), |v| short(*v)),
            s.best
                .get(objective)
                .map_or(String::new(), |b| short(b.value)),
            s.steps.to_string(),
            s.wall_s.map_or(String::new(), |w| format!("{w:.1}")),
        ]);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", report.dir.display())?;
    out.write_all(t.render().as_bytes())?;
    let failed: Vec<&str> = report
        .summaries
        .iter()
        .filter(|s| matches!(s.status, Status::Failed | Status::Diverged))
        .map(|s| s.name.as_str())
        .collect();
    if !failed.is_empty() {
        writeln!(out, "{} failed: {}", failed.len(), failed.join(", "))?;
    }
    Ok(())
}
