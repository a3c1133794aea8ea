//! How a command ends: the one place outcomes and errors become exit codes (0 success; 1 a run
//! failed or a regression was found; 2 invalid input or usage; 130 interrupted).

use std::process::ExitCode;

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

/// The exit code of a command's result; an error is printed on stderr first. A closed pipe
/// (`xp compare | head`) is not an error.
pub fn code(result: Result<Outcome, CliError>) -> ExitCode {
    match result {
        Ok(outcome) => outcome.into(),
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            Outcome::Invalid.into()
        }
    }
}
