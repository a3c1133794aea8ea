//! `xp report PATH... [-o FILE]`: one self-contained HTML page of the runs under the paths —
//! the comparison table, their curves, statuses and the settings that differ.

use std::io::Write;
use std::path::PathBuf;

use crate::cli::compare::usage;
use crate::cli::{CliError, Exit};
use crate::report::{self, ReportError};

/// Where the report goes when `-o` is not given.
const DEFAULT_OUTPUT: &str = "report.html";

pub fn run(paths: &[PathBuf], output: Option<PathBuf>) -> Result<Exit, CliError> {
    let output = output.unwrap_or_else(|| PathBuf::from(DEFAULT_OUTPUT));
    let written = report::write(paths, &output).map_err(|e| match e {
        ReportError::Compare(e) => usage(e),
        e @ ReportError::Write { .. } => CliError::Usage(e.to_string()),
    })?;
    let mut err = std::io::stderr().lock();
    for w in &written.warnings {
        writeln!(err, "warning: {w}")?;
    }
    let runs = match written.runs {
        1 => "1 run".to_owned(),
        n => format!("{n} runs"),
    };
    println!("wrote {} ({runs})", output.display());
    Ok(Exit::Success)
}
