//! The command line: clap's definitions ([`args`]), one file per subcommand, and dispatch; the
//! exit codes are decided in one place ([`exit`]).

pub(crate) mod args;
pub(crate) mod compare;
pub(crate) mod exec;
pub(crate) mod exit;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod schema;
pub(crate) mod status;
pub(crate) mod table;
pub(crate) mod validate;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::diagnostic::render::Renderer;
use crate::front::Checked;
use args::{Cli, Command};
pub use exit::{CliError, Exit};

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    exit::code(match cli.command {
        Command::Validate {
            files,
            overrides,
            format,
            quiet,
        } => validate::run(&files, &overrides.into(), format, quiet),
        Command::Plan {
            file,
            overrides,
            only,
            format,
            quiet,
        } => plan::run(file, &overrides.into(), only, format, quiet),
        Command::Run(args) => run::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Report { paths, output } => report::run(&paths, output),
        Command::Schema { format } => schema::run(format),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "xp", &mut std::io::stdout());
            Ok(Exit::Success)
        }
        Command::Status { paths } => status::run(&paths),
        Command::Exec(args) => exec::run(args),
    })
}

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
