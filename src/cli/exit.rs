//! How a command ends: the one place outcomes and errors become exit codes (0 success; 1 a run
//! failed or a regression was found; 2 invalid input or usage; 130 interrupted).

use std::process::ExitCode;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// A run failed or a regression was found.
    Failure,
    /// The input or the usage was invalid.
    Invalid,
    /// Stopped by Ctrl-C or SIGTERM.
    Interrupted,
}

impl From<Exit> for ExitCode {
    fn from(o: Exit) -> Self {
        match o {
            Exit::Success => ExitCode::SUCCESS,
            Exit::Failure => ExitCode::from(1),
            Exit::Invalid => ExitCode::from(2),
            Exit::Interrupted => ExitCode::from(130),
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
pub fn code(result: Result<Exit, CliError>) -> ExitCode {
    match result {
        Ok(outcome) => outcome.into(),
        Err(CliError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Invalid.into()
        }
    }
}
