//! `xp compare PATH...`: one table of the runs under the paths (run directories, sweep
//! directories or folders above them) — the settings that differ, the metrics that matter —
//! and, with a baseline, their changes and the regression gate: exit 1 on a regression, a
//! failed or unfinished run, or a baseline run that is missing. Also the gate `xp run` applies
//! after a sweep whose experiment has a `regression` block.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use globset::Glob;

use crate::cli::{CliError, Exit};
use crate::compare::baseline::{self, Baseline, FileFormat};
use crate::compare::discover::{Sweeps, discover};
use crate::compare::format::{self, Format, View};
use crate::compare::{
    self, CompareError, Gate, Gates, Request, TableOptions, gated_columns, junit,
};
use crate::front::plan::Plan;
use crate::spec::Regression;
use crate::sweep::record::atomic;

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run directories, sweep directories or folders above them (`xp compare runs/*`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Metric columns, comma-separated, globs allowed: `val/*,best:val/loss,steps`. A bare name
    /// is the final value. Default: the objective's best and final value, final train/loss, the
    /// validation metrics, steps, wall time and throughput.
    #[arg(long, value_delimiter = ',', value_name = "M,...")]
    pub metrics: Vec<String>,
    /// Sort by this metric (its best value) or column, best first, or by `name`. Default: the
    /// objective.
    #[arg(long, value_name = "METRIC")]
    pub sort: Option<String>,
    /// Keep the runs for which this expression is true: `status == "completed" and rank >= 8`.
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// One row per value of these axes or settings; the other varying values (seeds) become
    /// mean ± std and a count.
    #[arg(long, value_delimiter = ',', value_name = "AXIS,...")]
    pub group_by: Vec<String>,
    #[arg(long, value_enum, default_value_t = CompareFormat::Table)]
    pub format: CompareFormat,
    /// Compare with a baseline (.csv or .json, as --save-baseline writes): changes, and the gate.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Join runs to baseline rows by these axes instead of by run name.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "AXIS,...",
        requires = "baseline"
    )]
    pub join_on: Vec<String>,
    /// Gate a metric: `val/loss>+2%` (fail when it rises more than 2% above the baseline),
    /// `val/accuracy<0.01` (when it falls more than 0.01 below). Repeatable. Default: the
    /// `regression` block the runs were configured with.
    #[arg(long, value_name = "RULE", requires = "baseline")]
    pub fail_on: Vec<String>,
    /// Write the compared metrics as a baseline (.csv or .json).
    #[arg(long, value_name = "FILE")]
    pub save_baseline: Option<PathBuf>,
    /// Write the gate's result as JUnit XML: one test case per run and gated metric.
    #[arg(long, value_name = "FILE", requires = "baseline")]
    pub junit: Option<PathBuf>,
    /// Show the table again every `--interval` seconds while runs are unfinished (a sweep
    /// training elsewhere); ends when every run has ended, with the gate's verdict.
    #[arg(long, conflicts_with_all = ["save_baseline", "junit"])]
    pub watch: bool,
    /// Only each experiment's current sweep: in a folder holding a `current` link
    /// (`runs/<experiment>/`), the sweep it points to.
    #[arg(long)]
    pub latest: bool,
    /// Every column, however wide: the table is not fitted to the terminal (or `COLUMNS`).
    #[arg(long)]
    pub wide: bool,
    /// List every constant setting instead of one line about them.
    #[arg(short, long)]
    pub verbose: bool,
    /// Seconds between two tables with `--watch`.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 2.0,
        requires = "watch"
    )]
    pub interval: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompareFormat {
    Table,
    Csv,
    Json,
    Markdown,
}

impl From<CompareFormat> for Format {
    fn from(f: CompareFormat) -> Format {
        match f {
            CompareFormat::Table => Format::Table,
            CompareFormat::Csv => Format::Csv,
            CompareFormat::Json => Format::Json,
            CompareFormat::Markdown => Format::Markdown,
        }
    }
}

/// A compare error as the command line reports it (exit 2).
pub(crate) fn usage(e: CompareError) -> CliError {
    match e.help() {
        Some(help) => CliError::Usage(format!("{e}\n  help: {help}")),
        None => CliError::Usage(e.to_string()),
    }
}

pub fn run(args: CompareArgs) -> Result<Exit, CliError> {
    let mut rules = Vec::new();
    let mut bad = Vec::new();
    for rule in &args.fail_on {
        match Gate::parse(rule) {
            Ok(g) => rules.push(g),
            Err(e) => bad.push(usage(e).to_string()),
        }
    }
    if !bad.is_empty() {
        return Err(CliError::Usage(bad.join("\nerror: ")));
    }
    let save_format = match &args.save_baseline {
        Some(path) => Some(FileFormat::of(path).map_err(usage)?),
        None => None,
    };
    let base = match &args.baseline {
        Some(path) => Some(read_baseline(path).map_err(usage)?),
        None => None,
    };
    if args.watch && !(args.interval.is_finite() && args.interval > 0.0) {
        return Err(CliError::Usage(format!(
            "--interval {} is not a positive number of seconds",
            args.interval
        )));
    }
    let sweeps = if args.latest {
        Sweeps::Current
    } else {
        Sweeps::All
    };
    let view = View {
        width: (!args.wide).then(table_width),
        verbose: args.verbose,
    };
    let mut found = discover(&args.paths, sweeps).map_err(usage)?;
    warn(&found.warnings)?;
    let gates = if rules.is_empty() {
        Gates::FromRuns
    } else {
        Gates::Rules(rules)
    };
    let request = Request {
        options: TableOptions {
            metrics: args.metrics.clone(),
            sort: args.sort.clone(),
            group_by: args.group_by.clone(),
            require: Vec::new(),
            hide_settings: false,
        },
        filter: args.filter.as_deref(),
        baseline: base.as_ref(),
        join_on: (!args.join_on.is_empty()).then(|| args.join_on.clone()),
        gates,
    };
    let mut report = compare::compare(&found.runs, &request).map_err(usage)?;
    let mut text = format::render(
        &report.comparison,
        report.verdict.as_ref(),
        args.format.into(),
        view,
    );
    if args.watch {
        let terminal = std::io::stdout().is_terminal();
        loop {
            // Interrupted runs wait for a `--resume` that may never come: not waited for.
            let unfinished = found
                .runs
                .iter()
                .filter(|r| {
                    matches!(
                        r.summary.status,
                        crate::sweep::record::Status::Pending
                            | crate::sweep::record::Status::Running
                    )
                })
                .count();
            let mut out = std::io::stdout().lock();
            if terminal {
                // Home and clear: the new table replaces the old one in place.
                out.write_all(b"\x1b[H\x1b[2J")?;
            }
            out.write_all(text.as_bytes())?;
            if unfinished == 0 {
                break;
            }
            writeln!(
                out,
                "{unfinished} of {} runs unfinished; again in {} s (Ctrl-C stops)",
                found.runs.len(),
                args.interval
            )?;
            out.flush()?;
            drop(out);
            std::thread::sleep(std::time::Duration::from_secs_f64(args.interval));
            found = discover(&args.paths, sweeps).map_err(usage)?;
            report = compare::compare(&found.runs, &request).map_err(usage)?;
            text = format::render(
                &report.comparison,
                report.verdict.as_ref(),
                args.format.into(),
                view,
            );
        }
    } else {
        std::io::stdout().lock().write_all(text.as_bytes())?;
    }
    if let (Some(path), Some(save)) = (&args.save_baseline, save_format) {
        let runs: Vec<&compare::Run> = found.runs.iter().collect();
        let extra = gated_columns(&request.gates, &runs);
        let text = baseline::save(&report.comparison, &extra, save);
        atomic::write(path, text.as_bytes())?;
        let rows = report.comparison.rows.iter().filter(|r| r.runs > 0).count();
        eprintln!("saved the baseline {} ({rows} rows)", path.display());
    }
    if let (Some(path), Some(verdict)) = (&args.junit, &report.verdict) {
        atomic::write(path, junit::render(verdict).as_bytes())?;
    }
    let outcome = match &report.verdict {
        Some(v) if !v.passed() => Exit::Failure,
        _ => Exit::Success,
    };
    // Ten thousand runs take a while to free, and the process ends now anyway.
    std::mem::forget(report);
    std::mem::forget(found);
    Ok(outcome)
}

/// The width of output that is not a terminal and names none in `COLUMNS`.
const PIPE_WIDTH: usize = 200;

/// The width a table fits: `COLUMNS` where it is a number, else the terminal's, else
/// [`PIPE_WIDTH`].
pub(crate) fn table_width() -> usize {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    match terminal_size::terminal_size_of(std::io::stdout()) {
        Some((terminal_size::Width(w), _)) if w > 0 => usize::from(w),
        _ => PIPE_WIDTH,
    }
}

fn warn(warnings: &[String]) -> Result<(), CliError> {
    let mut err = std::io::stderr().lock();
    for w in warnings {
        writeln!(err, "warning: {w}")?;
    }
    Ok(())
}

fn read_baseline(path: &Path) -> Result<Baseline, CompareError> {
    let format = FileFormat::of(path)?;
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CompareError::Baseline {
        file: file.clone(),
        message: if e.kind() == std::io::ErrorKind::NotFound {
            "no such file".into()
        } else {
            format!("cannot read it: {e}")
        },
        help: Some("write one with `xp compare RUNS --save-baseline FILE`".into()),
    })?;
    Baseline::parse(&text, format, &file)
}

/// Before `xp run` trains: every baseline the experiments' `regression` blocks name must be
/// readable. One that does not exist yet is announced, not an error: the sweep about to run can
/// become it.
pub fn check_baselines(plans: &[Plan]) -> Result<(), CliError> {
    let files: BTreeSet<&Path> = plans
        .iter()
        .filter_map(|p| p.runs.first())
        .filter_map(|r| r.config.regression.as_ref())
        .map(|g| g.baseline.as_path())
        .collect();
    for file in files {
        if file.exists() {
            read_baseline(file).map_err(usage)?;
        } else {
            eprintln!(
                "warning: the regression baseline {} does not exist yet; the gate cannot pass until it does",
                file.display()
            );
        }
    }
    Ok(())
}

/// The gate of `xp run`: the sweeps just finished against the baselines of their experiments'
/// `regression` blocks, each baseline once with all the sweeps that name it (its rows of other
/// experiments, and those `--only` does not select, are not expected). Prints the verdicts and
/// returns the worst outcome.
pub fn gate_sweeps(finished: &[(PathBuf, &Plan)], only: Option<&str>) -> Result<Exit, CliError> {
    // A search's runs were planned as it ran: its sweep's plan.json has them.
    let mut recorded = Vec::new();
    for (dir, plan) in finished {
        if plan.runs.is_empty() && plan.search.is_some() {
            let sweep = crate::sweep::record::SweepDir { path: dir.clone() };
            recorded.push(crate::cli::exec::read_plan(&sweep)?);
        }
    }
    let mut recorded = recorded.iter();
    let mut by_baseline: BTreeMap<&Path, (Vec<PathBuf>, BTreeSet<&str>, &Regression)> =
        BTreeMap::new();
    for (dir, plan) in finished {
        let runs = match plan.runs.is_empty() && plan.search.is_some() {
            true => recorded.next().map_or(&plan.runs, |p| &p.runs),
            false => &plan.runs,
        };
        if let Some(g) = runs.first().and_then(|r| r.config.regression.as_ref()) {
            let entry = by_baseline
                .entry(g.baseline.as_path())
                .or_insert_with(|| (Vec::new(), BTreeSet::new(), g));
            entry.0.push(dir.clone());
            entry.1.insert(plan.experiment.as_str());
        }
    }
    let only = only
        .and_then(|g| Glob::new(g).ok())
        .map(|g| g.compile_matcher());
    let mut outcome = Exit::Success;
    let mut out = std::io::stdout().lock();
    for (file, (dirs, experiments, regression)) in by_baseline {
        writeln!(out)?;
        let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        if !file.exists() {
            writeln!(
                out,
                "gate: no baseline at {} yet. To accept these results as the baseline:\n  xp compare {} --save-baseline {}",
                file.display(),
                shown.join(" "),
                file.display()
            )?;
            outcome = worse(outcome, Exit::Invalid);
            continue;
        }
        let mut base = read_baseline(file).map_err(usage)?;
        base.rows.retain(|b| {
            (b.experiment.is_empty() || experiments.contains(b.experiment.as_str()))
                && only.as_ref().is_none_or(|g| g.is_match(&b.name))
        });
        let found = discover(&dirs, Sweeps::All).map_err(usage)?;
        warn(&found.warnings)?;
        let request = Request {
            options: TableOptions {
                hide_settings: true,
                ..TableOptions::default()
            },
            filter: None,
            baseline: Some(&base),
            join_on: regression.join_on.clone(),
            gates: Gates::FromRuns,
        };
        let report = compare::compare(&found.runs, &request).map_err(usage)?;
        let view = View {
            width: Some(table_width()),
            verbose: false,
        };
        let text = format::render(
            &report.comparison,
            report.verdict.as_ref(),
            Format::Table,
            view,
        );
        out.write_all(text.as_bytes())?;
        if report.verdict.as_ref().is_some_and(|v| !v.passed()) {
            outcome = worse(outcome, Exit::Failure);
        }
    }
    Ok(outcome)
}

/// The outcome that says more: invalid over failure over success.
fn worse(a: Exit, b: Exit) -> Exit {
    let rank = |o: Exit| match o {
        Exit::Success => 0,
        Exit::Failure => 1,
        _ => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}
