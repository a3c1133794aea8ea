//! `xp validate FILE...`: every diagnostic of every file, then a summary line.

use std::io::Write;
use std::path::PathBuf;

use crate::cli::args::DiagFormat;
use crate::cli::{CliError, Exit};
use crate::diagnostic::render::Renderer;
use crate::front::{Overrides, validate_files};

pub fn run(
    files: &[PathBuf],
    overrides: &Overrides,
    format: DiagFormat,
    quiet: bool,
) -> Result<Exit, CliError> {
    let mut checked = validate_files(files, overrides);
    checked.diags.thin_advice(quiet);
    // What `xp run` would check before training: data files, init-from files, and (as
    // warnings) what this binary cannot do.
    let (_, found) =
        crate::sweep::preflight::check(&checked.plans, None, miette::Severity::Warning);
    checked.diags.extend_from(found);
    let mut out = std::io::stdout().lock();
    match format {
        DiagFormat::Human => {
            let text = Renderer::for_stdout().render(&checked.diags, &checked.sources);
            out.write_all(text.as_bytes())?;
            writeln!(out, "{}", checked.diags.summary(files.len()))?;
        }
        DiagFormat::Json => {
            let json = serde_json::to_string_pretty(&checked.diags.to_json(&checked.sources))?;
            writeln!(out, "{json}")?;
        }
    }
    Ok(if checked.diags.has_errors() {
        Exit::Invalid
    } else {
        Exit::Success
    })
}
