//! `xp run FILE`: validate → plan → preflight (data, capabilities) → train every run into a new
//! sweep directory. Exit 1 when a run failed or diverged, 2 when the input is invalid.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::cli::args::{Launcher, RunArgs};
use crate::cli::report_diagnostics;
use crate::cli::table::Table;
use crate::cli::{CliError, Exit};
use crate::diagnostic::Diagnostics;
use crate::front::plan::Plan;
use crate::front::user_config::Defaults;
use crate::front::{Checked, Overrides, validate_files};
use crate::sweep::executor::{self, SweepError, SweepOptions};
use crate::sweep::preflight;
use crate::sweep::processes::Processes;
use crate::sweep::progress::{Bars, Lines, Progress, Silent};
use crate::sweep::record::{Status, SweepDir, atomic, short};
use crate::sweep::slurm::launch::{Launch, launch};

/// `xp run`'s flags resolved once, with the user's defaults where the flags leave something
/// open; what follows is orchestration only.
pub struct Settings {
    pub file: PathBuf,
    pub overrides: Overrides,
    /// `--only`: the glob and its matcher.
    pub only: Option<(String, GlobMatcher)>,
    /// The device every run trains on, whatever the experiment says.
    pub device: Option<String>,
    /// `--device cuda:0,1`: GPUs to hand out to the runs, one each at a time.
    pub gpus: Vec<String>,
    pub runs_dir: PathBuf,
    pub quiet: bool,
    pub verbose: bool,
    /// Runs at once (`--jobs`): on this machine (default 1), or the Slurm array's throttle.
    pub jobs: Option<usize>,
    pub launcher: Launcher,
    /// With the Slurm launcher: follow the job until its runs are done.
    pub wait: bool,
    pub resume: bool,
    pub retry_failed: bool,
    pub reuse: bool,
    pub fail_fast: bool,
}

impl Settings {
    /// Checks the flags against each other and fills in the user's defaults.
    pub fn resolve(args: RunArgs, defaults: Defaults) -> Result<Settings, CliError> {
        if args.jobs == Some(0) {
            return Err(CliError::Usage("--jobs must be at least 1".into()));
        }
        if args.wait && args.launcher != Launcher::Slurm {
            return Err(CliError::Usage(
                "--wait follows a Slurm job: it goes with --launcher slurm (a local `xp run` always waits for its runs)".into(),
            ));
        }
        if args.fail_fast && args.launcher == Launcher::Slurm {
            return Err(CliError::Usage(
                "--fail-fast stops a local sweep; Slurm starts an array's tasks on its own (`scancel JOB` stops them)".into(),
            ));
        }
        let gpus = gpus(args.device.as_deref())?;
        if args.jobs.is_some_and(|j| j > gpus.len())
            && !gpus.is_empty()
            && args.launcher == Launcher::Local
        {
            eprintln!(
                "warning: --jobs {}: one run per GPU, so {} at once",
                args.jobs.unwrap_or_default(),
                gpus.len()
            );
        }
        let only = only_glob(args.only)?;
        Ok(Settings {
            file: args.file,
            overrides: args.overrides.into(),
            only,
            device: gpus.first().cloned().or(args.device).or(defaults.device),
            gpus,
            runs_dir: args
                .runs_dir
                .or(defaults.runs_dir)
                .unwrap_or_else(|| PathBuf::from("runs")),
            quiet: args.quiet,
            verbose: args.verbose,
            jobs: args.jobs,
            launcher: args.launcher,
            wait: args.wait,
            resume: args.resume,
            retry_failed: args.retry_failed,
            reuse: args.reuse,
            fail_fast: args.fail_fast,
        })
    }
}

impl Settings {
    /// The command that continues this sweep: every flag that chose its runs and where they
    /// are, so that following it literally resumes this sweep and no other.
    pub fn resume_command(&self) -> String {
        self.resume_command_with(&self.recorded_overrides())
    }

    /// The overrides as plan.json records them: `--set K=V`, `--axis A=V,V`, `--only GLOB`.
    pub fn recorded_overrides(&self) -> Vec<String> {
        let sets = self.overrides.set.iter().map(|s| format!("--set {s}"));
        let axes = self.overrides.axis.iter().map(|a| format!("--axis {a}"));
        let only = self.only.iter().map(|(p, _)| format!("--only {p}"));
        sets.chain(axes).chain(only).collect()
    }

    /// [`Settings::resume_command`] with the `overrides` a sweep recorded instead of these.
    pub fn resume_command_with(&self, overrides: &[String]) -> String {
        let mut words = vec![
            "xp".to_owned(),
            "run".into(),
            self.file.display().to_string(),
        ];
        let mut flag = |name: &str, value: &str| words.extend([name.to_owned(), value.to_owned()]);
        for o in overrides {
            let (name, value) = o.split_once(' ').unwrap_or((o, ""));
            flag(name, value);
        }
        if !self.gpus.is_empty() {
            let indices: Vec<&str> = self
                .gpus
                .iter()
                .filter_map(|g| g.strip_prefix("cuda:"))
                .collect();
            flag("--device", &format!("cuda:{}", indices.join(",")));
        } else if let Some(device) = &self.device {
            flag("--device", device);
        }
        flag("--runs-dir", &self.runs_dir.display().to_string());
        if let Some(jobs) = self.jobs {
            flag("--jobs", &jobs.to_string());
        }
        words.push("--resume".into());
        words
            .iter()
            .map(|w| shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A word as a shell reads it back: bare when it is plain, else single-quoted.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        crate::sweep::slurm::quote(word)
    }
}

/// `--device cuda:0,1`: the GPUs to hand out; empty for any other device.
fn gpus(device: Option<&str>) -> Result<Vec<String>, CliError> {
    match device.and_then(|d| d.strip_prefix("cuda:")) {
        Some(list) if list.contains(',') => list
            .split(',')
            .map(|n| match n.trim().parse::<usize>() {
                Ok(n) => Ok(format!("cuda:{n}")),
                Err(_) => Err(CliError::Usage(format!(
                    "--device {}: `{n}` is not a GPU index (write cuda:0,1,…)",
                    device.unwrap_or_default()
                ))),
            })
            .collect(),
        _ => Ok(Vec::new()),
    }
}

pub fn run(args: RunArgs) -> Result<Exit, CliError> {
    let overrides: Overrides = args.overrides.clone().into();
    let mut checked = validate_files(std::slice::from_ref(&args.file), &overrides);
    // User defaults, where the flags leave something open.
    let mut config_diags = Diagnostics::default();
    let defaults = crate::front::user_config::read(&mut checked.sources, &mut config_diags);
    checked.diags.extend(config_diags);
    checked.diags.thin_advice(args.quiet);
    let args = Settings::resolve(args, defaults)?;
    if report_diagnostics(&checked)? {
        return Ok(Exit::Invalid);
    }
    refuse_unsupported_searches(&checked.plans, &args)?;
    select_runs(&mut checked.plans, args.only.as_ref(), &args.file)?;
    if !preflight_passes(&checked, &args)? {
        return Ok(Exit::Invalid);
    }
    let source = std::fs::read_to_string(&args.file).map_err(atomic::at(&args.file))?;
    let stop = stop_on_signals()?;
    // Each run's process loads its own data: what the preflight loaded is not kept.
    let datasets = preflight::Datasets::default();
    let options = SweepOptions {
        runs_dir: args.runs_dir.clone(),
        device: args.device.clone(),
        resume: args.resume,
        retry_failed: args.retry_failed,
        reuse: args.reuse,
        fail_fast: args.fail_fast,
        stop: Some(Arc::clone(&stop)),
        processes: None,
    };
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Usage(format!("cannot find the xp binary to run runs with: {e}")))?;
    let mut failures = 0;
    let mut interrupted = false;
    let mut finished = Vec::new();
    for plan in &checked.plans {
        let cpus = plan
            .runs
            .iter()
            .filter_map(|r| r.config.resources.as_ref().and_then(|r| r.cpus))
            .max();
        // A search with `parallel` trials at once runs each trial's seeds side by side unless
        // --jobs says how many runs at once.
        let jobs = match (&plan.search, args.jobs) {
            (_, Some(jobs)) => jobs,
            (Some(search), None) => search.parallel.unwrap_or(1).saturating_mul(search.repeat),
            (None, None) => 1,
        };
        let options = SweepOptions {
            processes: Some(Processes::local(exe.clone(), jobs, cpus, args.gpus.clone())),
            ..options.clone()
        };
        let mut progress = progress_for(&args, plan);
        let result = match args.launcher {
            Launcher::Local => {
                executor::run_plan(plan, &source, &datasets, &options, progress.as_mut())
            }
            Launcher::Slurm => {
                let how = Launch {
                    exe: &exe,
                    throttle: args.jobs,
                    wait: args.wait,
                };
                match launch(plan, &source, &options, &how, progress.as_mut()) {
                    Ok(Some(report)) => Ok(report),
                    Ok(None) => continue,
                    Err(e) => Err(e),
                }
            }
        };
        drop(progress);
        let report = match result {
            Ok(report) => report,
            Err(e) => return Err(sweep_error(e, &args)),
        };
        failures += report.failures();
        interrupted |= report.interrupted;
        // A search's runs are in the plan it wrote as it went.
        let recorded = match plan.search {
            Some(_) => crate::cli::exec::read_plan(&SweepDir {
                path: report.dir.clone(),
            })
            .ok(),
            None => None,
        };
        print_summary(
            &report,
            recorded
                .as_ref()
                .unwrap_or(plan)
                .runs
                .first()
                .map(|r| r.config.objective.metric.as_str())
                .unwrap_or("val/loss"),
        )?;
        write_report(&report.dir);
        if interrupted {
            break;
        }
        finished.push((report.dir.clone(), plan));
    }
    Ok(if interrupted {
        eprintln!(
            "interrupted: `{}` continues where it stopped",
            args.resume_command()
        );
        Exit::Interrupted
    } else {
        // The gate of the experiments' `regression` blocks: the sweeps against their baselines.
        let gate = crate::cli::compare::gate_sweeps(
            &finished,
            args.only.as_ref().map(|(p, _)| p.as_str()),
        )?;
        if failures > 0 { Exit::Failure } else { gate }
    })
}

/// What a search cannot do: run under Slurm (each trial waits for the results before it, and
/// an array is submitted whole). [`select_runs`] refuses `--only` for one.
fn refuse_unsupported_searches(plans: &[Plan], args: &Settings) -> Result<(), CliError> {
    let Some(plan) = plans.iter().find(|p| p.search.is_some()) else {
        return Ok(());
    };
    if args.launcher == Launcher::Slurm {
        return Err(CliError::Usage(format!(
            "experiment `{}` is a search: each trial is suggested from the results of the trials before it, which a Slurm job array submitted whole cannot wait for; run it with the local launcher (`--jobs N` or `parallel=N` trials at once), or sample the space under Slurm with a `random count=N` block",
            plan.experiment
        )));
    }
    Ok(())
}

/// `--only`'s glob, checked.
pub(crate) fn only_glob(only: Option<String>) -> Result<Option<(String, GlobMatcher)>, CliError> {
    only.map(|pattern| match Glob::new(&pattern) {
        Ok(g) => Ok((pattern, g.compile_matcher())),
        Err(e) => Err(CliError::Usage(format!(
            "--only `{pattern}` is not a valid glob: {e}"
        ))),
    })
    .transpose()
}

/// `--only`: the runs whose name matches, recorded in plan.json with `--set` and `--axis` so
/// that a resume must choose the same runs. `xp plan --only` previews the same selection.
pub(crate) fn select_runs(
    plans: &mut Vec<Plan>,
    only: Option<&(String, GlobMatcher)>,
    file: &Path,
) -> Result<(), CliError> {
    if let Some((pattern, glob)) = only {
        // A search's runs are not known before it runs.
        if let Some(plan) = plans.iter().find(|p| p.search.is_some()) {
            return Err(CliError::Usage(format!(
                "experiment `{}` is a search: its runs are suggested while it runs, so --only cannot choose among them",
                plan.experiment
            )));
        }
        for plan in plans.iter_mut() {
            plan.runs.retain(|r| glob.is_match(&r.name));
        }
        plans.retain(|p| !p.runs.is_empty());
        for plan in plans.iter_mut() {
            plan.overrides.push(format!("--only {pattern}"));
        }
        if plans.is_empty() {
            return Err(CliError::Usage(format!(
                "--only `{pattern}` matches no run; `xp plan {}` lists them",
                file.display()
            )));
        }
    }
    Ok(())
}

/// What can be checked before training: data, capabilities of this build and devices,
/// baselines; fallbacks (bf16 asked for on the CPU) are said once, with how many runs they
/// concern. Whether training may start.
fn preflight_passes(checked: &Checked, args: &Settings) -> Result<bool, CliError> {
    let mut pre = Diagnostics::default();
    // A Slurm job's devices are the compute nodes': what this machine lacks is only a warning.
    let capability = match args.launcher {
        Launcher::Local => miette::Severity::Error,
        Launcher::Slurm => miette::Severity::Warning,
    };
    let (_, found) = preflight::check(&checked.plans, args.device.as_deref(), capability);
    pre.extend_from(found);
    if !pre.is_empty() {
        let text = crate::diagnostic::render::Renderer::for_stderr().render(&pre, &checked.sources);
        std::io::stderr().write_all(text.as_bytes())?;
        if pre.has_errors() {
            return Ok(false);
        }
    }
    crate::cli::compare::check_baselines(&checked.plans)?;
    let mut fallbacks: std::collections::BTreeMap<String, usize> = Default::default();
    for run in checked.plans.iter().flat_map(|p| &p.runs) {
        let device = preflight::device_of(&run.config, args.device.as_deref());
        if let (_, Some(warning)) =
            crate::train::precision::of_device(run.config.precision, &device)
        {
            *fallbacks.entry(warning).or_default() += 1;
        }
    }
    for (warning, runs) in fallbacks {
        eprintln!(
            "warning: {warning} ({})",
            crate::diagnostic::plural(runs, "run")
        );
    }
    Ok(true)
}

/// The first Ctrl-C or SIGTERM stops gracefully (the active run checkpoints); a second one
/// exits at once — every file others read is replaced atomically, so nothing is corrupted.
fn stop_on_signals() -> Result<Arc<AtomicBool>, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// A sweep that could not start, as the CLI says it; a resume with other overrides gets the
/// command that resumes the sweep as it was.
fn sweep_error(e: SweepError, args: &Settings) -> CliError {
    match e {
        SweepError::Io(e) => CliError::Io(e),
        SweepError::OverridesChanged {
            dir,
            recorded,
            given,
        } => {
            let command = args.resume_command_with(&recorded);
            let e = SweepError::OverridesChanged {
                dir,
                recorded,
                given,
            };
            CliError::Usage(format!(
                "{e}\n`{command}` resumes the sweep as it was; without --resume a new sweep starts"
            ))
        }
        e => CliError::Usage(e.to_string()),
    }
}

/// `report.html` in the sweep directory. A report that cannot be written is a warning: the
/// runs themselves are recorded.
fn write_report(dir: &std::path::Path) {
    let path = SweepDir {
        path: dir.to_owned(),
    }
    .report();
    match crate::report::write(&[dir.to_owned()], &path) {
        Ok(written) => {
            for warning in written.warnings {
                eprintln!("warning: {warning}");
            }
            println!("report: {}", path.display());
        }
        Err(e) => eprintln!("warning: the sweep's report was not written: {e}"),
    }
}

/// Bars on a terminal, plain lines otherwise, nothing with `--quiet`.
fn progress_for(args: &Settings, plan: &Plan) -> Box<dyn Progress> {
    if args.quiet {
        Box::new(Silent)
    } else if std::io::stderr().is_terminal() && std::env::var_os("XP_PLAIN_PROGRESS").is_none() {
        Box::new(Bars::new(&plan.experiment, args.verbose))
    } else {
        Box::new(Lines::new(
            std::io::stderr(),
            Duration::from_secs(if args.verbose { 0 } else { 10 }),
            args.verbose,
        ))
    }
}

fn print_summary(report: &executor::SweepReport, objective: &str) -> Result<(), CliError> {
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
    let pruned = report
        .summaries
        .iter()
        .filter(|s| s.status == Status::Pruned)
        .count();
    if pruned > 0 {
        writeln!(
            out,
            "{pruned} of {} runs pruned (stopped early by the sweep's `prune`)",
            report.summaries.len()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_command_repeats_every_flag_that_chose_the_runs() {
        let settings = Settings {
            file: PathBuf::from("my exp.kdl"),
            overrides: Overrides {
                set: vec!["train.steps=50".into(), "name=it's".into()],
                axis: vec!["lr=1e-3,3e-3".into()],
            },
            only: Some(("lr*".into(), Glob::new("lr*").unwrap().compile_matcher())),
            device: Some("cuda:0".into()),
            gpus: vec!["cuda:0".into(), "cuda:2".into()],
            runs_dir: PathBuf::from("/data/runs"),
            quiet: true,
            verbose: false,
            jobs: Some(2),
            launcher: Launcher::Local,
            wait: false,
            resume: false,
            retry_failed: false,
            reuse: false,
            fail_fast: false,
        };
        assert_eq!(
            settings.resume_command(),
            "xp run 'my exp.kdl' --set train.steps=50 --set 'name=it'\\''s' --axis lr=1e-3,3e-3 \
             --only 'lr*' --device cuda:0,2 --runs-dir /data/runs --jobs 2 --resume"
        );
    }
}
