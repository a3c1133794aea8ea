//! The command line as clap parses it: the subcommands, their flags and the value enums. What
//! the flags mean is decided by the subcommands' files.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "xp",
    version,
    about = "A declarative experiment runner for machine-learning research",
    after_help = "Examples:
  xp validate experiments/quickstart.kdl          check an experiment, every mistake at once
  xp plan experiments/quickstart.kdl --set train.steps=50
  xp run experiments/quickstart.kdl --jobs 2      train every run into runs/quickstart/
  xp compare runs/*                               one table of every run
  xp status runs                                  where each sweep stands

Every node and option of the experiment language: docs/reference.md (or `xp schema --format markdown`)."
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
        /// Leave out advice (such as "`AdamW` is the PyTorch name of `adamw`").
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the runs an experiment describes, without running anything.
    Plan {
        /// The experiment file.
        file: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
        /// Only the runs whose name matches this glob: what `xp run --only` trains.
        #[arg(long, value_name = "GLOB")]
        only: Option<String>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
        format: PlanFormat,
        /// Leave out advice (such as "`AdamW` is the PyTorch name of `adamw`").
        #[arg(long, short)]
        quiet: bool,
    },
    /// Train every run of an experiment into a new sweep directory.
    #[command(after_help = "Exit codes:
  0  every run completed (and the regression gate, if any, passed)
  1  a run failed or diverged, or the gate found a regression
  2  invalid input or usage: nothing was trained
  130  interrupted (Ctrl-C); `xp run --resume` continues")]
    Run(RunArgs),
    /// Compare runs in one table; with a baseline, gate regressions.
    ///
    /// One row per run: the settings that differ and the metrics that matter. With a baseline,
    /// the changes and a gate: exit 1 on a regression, a failed or a missing run.
    Compare(super::compare::CompareArgs),
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
        /// Run directories, sweep directories, experiments' directories (their current sweep)
        /// or folders above them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Train one run of a planned sweep (what `xp run` and Slurm tasks start per run).
    #[command(hide = true)]
    Exec(ExecArgs),
    /// Print a shell completion script: `xp completions bash > ~/.local/share/bash-completion/completions/xp`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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

/// Where runs execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Launcher {
    /// Processes on this machine, `--jobs` at once.
    Local,
    /// A Slurm job array.
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

/// `xp run`'s flags as given; [`crate::cli::run`] resolves them into settings in one step.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The experiment file.
    pub file: PathBuf,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Run only the runs whose name matches this glob.
    #[arg(long, value_name = "GLOB")]
    pub only: Option<String>,
    /// Train on this device, whatever the experiment says: cpu, cuda, cuda:N.
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Where sweep directories go (default: `runs-dir` of the user config, else `runs`).
    #[arg(long, value_name = "DIR")]
    pub runs_dir: Option<PathBuf>,
    /// No progress display, and no advice (such as "`AdamW` is the PyTorch name of `adamw`").
    #[arg(long, short, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Every logged step and evaluation, and checkpoints, in the progress display.
    #[arg(long, short)]
    pub verbose: bool,
    /// Runs at once: on this machine each run gets its share of the cores (or one GPU of
    /// `--device cuda:0,1,…`); with Slurm, the array's throttle (`%N`). Default: 1 here,
    /// no throttle on Slurm.
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Where runs execute: processes on this machine, or a Slurm job array.
    #[arg(long, value_enum, default_value_t = Launcher::Local)]
    pub launcher: Launcher,
    /// With `--launcher slurm`: follow the job until every run has ended.
    #[arg(long)]
    pub wait: bool,
    /// Continue the experiment's current sweep: completed runs are kept, interrupted ones
    /// continue from their newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// With --resume: train failed and diverged runs again.
    #[arg(long, requires = "resume")]
    pub retry_failed: bool,
    /// Take completed runs with the same id from earlier sweeps instead of training them.
    #[arg(long)]
    pub reuse: bool,
    /// Stop at the first failed run.
    #[arg(long)]
    pub fail_fast: bool,
}

/// `xp exec`'s flags: one run of a planned sweep.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The sweep directory.
    pub sweep: PathBuf,
    /// The run's index in the sweep's plan.json.
    #[arg(long)]
    pub index: usize,
    #[arg(long, value_name = "DEVICE")]
    pub device: Option<String>,
    /// Rewrite the sweep's results tables when the run ends.
    #[arg(long)]
    pub update_results: bool,
    /// Progress as JSON lines on stdout (for `xp run`), not plain lines on stderr.
    #[arg(long)]
    pub json_progress: bool,
}
