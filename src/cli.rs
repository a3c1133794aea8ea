//! The command line: clap definitions, dispatch, and the one place errors become exit codes
//! (0 success; 1 a run failed or a regression was found; 2 invalid input or usage).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands;

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
        #[arg(long, value_enum, default_value_t = DiagFormat::Human)]
        format: DiagFormat,
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
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failure => ExitCode::from(1),
            Outcome::Invalid => ExitCode::from(2),
        }
    }
}

/// An error that ends a command: printed on stderr, then mapped to its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, format } => commands::validate::run(&files, format),
        Command::Schema { format } => commands::schema::run(format),
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
