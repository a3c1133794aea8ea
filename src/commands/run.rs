//! `xp run FILE`: validate → plan → preflight (data, capabilities) → train every run into a new
//! sweep directory. Exit 1 when a run failed or diverged, 2 when the input is invalid.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::Glob;

use crate::cli::{CliError, Outcome};
use crate::commands::report_diagnostics;
use crate::diagnostic::Diagnostics;
use crate::execute::{self, Options, Silent};
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
    let source = std::fs::read_to_string(&args.file)?;
    let options = Options {
        runs_dir,
        device: args.device.clone(),
    };
    let mut failures = 0;
    for plan in &checked.plans {
        let mut lines = Lines::new(std::io::stderr(), Duration::from_secs(5));
        let progress: &mut dyn execute::Progress =
            if args.quiet { &mut Silent } else { &mut lines };
        let report = execute::run_plan(plan, &source, &datasets, &options, progress)?;
        failures += report.failures();
        print_summary(
            &report,
            plan.runs
                .first()
                .map(|r| r.config.objective.metric.as_str())
                .unwrap_or("val/loss"),
        )?;
    }
    Ok(if failures > 0 {
        Outcome::Failure
    } else {
        Outcome::Success
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
    writeln!(out, "{}", display(&report.dir))?;
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

fn display(p: &Path) -> String {
    p.display().to_string()
}
