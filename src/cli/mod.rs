//! The command line: clap definitions, dispatch, and the one place errors become exit codes
//! (0 success; 1 a run failed or a regression was found; 2 invalid input or usage).

pub mod compare;
pub mod exec;
pub mod plan;
pub mod report;
pub mod run;
pub mod schema;
pub mod status;
pub mod table;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "xp",
    version,
    about = "A declarative experiment runner for machine-learning research"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check experiment files and report every mistake at once.
    Validate {
        /// Experiment files (.kdl).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        overrides: OverrideArgs,
        #[arg(long, value_enum, default_value_t = DiagFormat::Human)]
        format: DiagFormat,
    },
    /// List the runs an experiment describes, without running anything.
    Plan {
        /// The experiment file.
        file: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
        #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
        format: PlanFormat,
    },
    /// Train every run of an experiment into a new sweep directory.
    Run {
        /// The experiment file.
        file: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
        /// Run only the runs whose name matches this glob.
        #[arg(long, value_name = "GLOB")]
        only: Option<String>,
        /// Train on this device, whatever the experiment says: cpu, cuda, cuda:N.
        #[arg(long, value_name = "DEVICE")]
        device: Option<String>,
        /// Where sweep directories go (default: `runs-dir` of the user config, else `runs`).
        #[arg(long, value_name = "DIR")]
        runs_dir: Option<PathBuf>,
        /// No progress display.
        #[arg(long, short, conflicts_with = "verbose")]
        quiet: bool,
        /// Every logged step and evaluation, and checkpoints, in the progress display.
        #[arg(long, short)]
        verbose: bool,
        /// Runs at once: on this machine each run gets its share of the cores (or one GPU of
        /// `--device cuda:0,1,…`); with Slurm, the array's throttle (`%N`). Default: 1 here,
        /// no throttle on Slurm.
        #[arg(long, short, value_name = "N")]
        jobs: Option<usize>,
        /// Where runs execute: processes on this machine, or a Slurm job array.
        #[arg(long, value_enum, default_value_t = LauncherArg::Local)]
        launcher: LauncherArg,
        /// With `--launcher slurm`: follow the job until every run has ended.
        #[arg(long)]
        wait: bool,
        /// Continue the experiment's current sweep: completed runs are kept, interrupted ones
        /// continue from their newest checkpoint.
        #[arg(long)]
        resume: bool,
        /// With --resume: train failed and diverged runs again.
        #[arg(long, requires = "resume")]
        retry_failed: bool,
        /// Take completed runs with the same id from earlier sweeps instead of training them.
        #[arg(long)]
        reuse: bool,
        /// Stop at the first failed run.
        #[arg(long)]
        fail_fast: bool,
    },
    /// Compare runs in one table; with a baseline, gate regressions.
    ///
    /// One row per run: the settings that differ and the metrics that matter. With a baseline,
    /// the changes and a gate: exit 1 on a regression, a failed or a missing run.
    Compare(self::compare::CompareArgs),
    /// Write one self-contained HTML report of runs: the table, loss and lr curves, statuses.
    Report {
        /// Run directories, sweep directories or folders above them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The HTML file to write (default: report.html in the current directory).
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Each run's state in a sweep directory (also of runs queued in Slurm).
    Status {
        /// A sweep directory, or an experiment's directory (its current sweep).
        dir: PathBuf,
    },
    /// Train one run of a planned sweep (what `xp run` and Slurm tasks start per run).
    #[command(hide = true)]
    Exec {
        /// The sweep directory.
        sweep: PathBuf,
        /// The run's index in the sweep's plan.json.
        #[arg(long)]
        index: usize,
        #[arg(long, value_name = "DEVICE")]
        device: Option<String>,
        /// Rewrite the sweep's results tables when the run ends.
        #[arg(long)]
        update_results: bool,
        /// Progress as JSON lines on stdout (for `xp run`), not plain lines on stderr.
        #[arg(long)]
        json_progress: bool,
    },
    /// Print the experiment schema, or a reference of every node and option.
    Schema {
        #[arg(long, value_enum, default_value_t = SchemaFormat::Kdl)]
        format: SchemaFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagFormat {
    Human,
    Json,
}

/// `--set` and `--axis`, shared by the commands that read an experiment.
#[derive(Debug, Clone, clap::Args)]
pub struct OverrideArgs {
    /// Override a setting: `--set train.steps=50`, `--set train.optimizer.lr=3e-4`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    /// Replace or add a grid axis: `--axis lr=1e-3,3e-3`.
    #[arg(long = "axis", value_name = "NAME=V1,V2")]
    pub axis: Vec<String>,
}

impl From<OverrideArgs> for crate::front::Overrides {
    fn from(a: OverrideArgs) -> Self {
        crate::front::Overrides {
            set: a.set,
            axis: a.axis,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LauncherArg {
    Local,
    Slurm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaFormat {
    Kdl,
    Markdown,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A run failed or a regression was found.
    Failure,
    /// The input or the usage was invalid.
    Invalid,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failure => ExitCode::from(1),
            Outcome::Invalid => ExitCode::from(2),
            Outcome::Interrupted => ExitCode::from(130),
        }
    }
}

/// An error that ends a command: printed on stderr, then mapped to its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate {
            files,
            overrides,
            format,
        } => self::validate::run(&files, &overrides.into(), format),
        Command::Plan {
            file,
            overrides,
            format,
        } => self::plan::run(file, &overrides.into(), format),
        Command::Run {
            file,
            overrides,
            only,
            device,
            runs_dir,
            quiet,
            verbose,
            jobs,
            launcher,
            wait,
            resume,
            retry_failed,
            reuse,
            fail_fast,
        } => self::run::run(self::run::RunArgs {
            file,
            overrides: overrides.into(),
            only,
            device,
            runs_dir,
            quiet,
            verbose,
            jobs,
            launcher: match launcher {
                LauncherArg::Local => self::run::Launcher::Local,
                LauncherArg::Slurm => self::run::Launcher::Slurm,
            },
            wait,
            resume,
            retry_failed,
            reuse,
            fail_fast,
        }),
        Command::Compare(args) => self::compare::run(args),
        Command::Report { paths, output } => self::report::run(&paths, output),
        Command::Schema { format } => self::schema::run(format),
        Command::Status { dir } => self::status::run(&dir),
        Command::Exec {
            sweep,
            index,
            device,
            update_results,
            json_progress,
        } => self::exec::run(self::exec::ExecArgs {
            sweep,
            index,
            device,
            update_results,
            json_progress,
        }),
    };
    match result {
        Ok(outcome) => outcome.into(),
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::Invalid.into()
        }
    }
}

use std::io::Write;

use crate::diagnostic::render::Renderer;
use crate::front::Checked;

/// Prints the front end's diagnostics on stderr; returns whether any is an error.
pub fn report_diagnostics(checked: &Checked) -> Result<bool, CliError> {
    if !checked.diags.is_empty() {
        let text = Renderer::for_stderr().render(&checked.diags, &checked.sources);
        let mut err = std::io::stderr().lock();
        err.write_all(text.as_bytes())?;
        if checked.diags.has_errors() {
            writeln!(
                err,
                "{}",
                checked.diags.summary(
                    checked
                        .sources
                        .iter()
                        .filter(|(_, s)| s.path.is_some())
                        .count()
                )
            )?;
        }
    }
    Ok(checked.diags.has_errors())
}
