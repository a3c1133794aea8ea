//! One module per subcommand; each returns an [`Outcome`](crate::cli::Outcome).

pub mod compare;
pub mod exec;
pub mod plan;
pub mod report;
pub mod run;
pub mod schema;
pub mod slurm;
pub mod status;
pub mod validate;

use std::io::Write;

use crate::cli::CliError;
use crate::render::Renderer;
use crate::validate::Checked;

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
