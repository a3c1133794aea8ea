//! `xp schema`: the embedded experiment schema as written, or as a Markdown reference.

use std::io::Write;

use crate::cli::args::SchemaFormat;
use crate::cli::{CliError, Exit};
use crate::front::schema;

pub fn run(format: SchemaFormat) -> Result<Exit, CliError> {
    let text = match format {
        SchemaFormat::Kdl => schema::EXPERIMENT_SOURCE.to_owned(),
        SchemaFormat::Markdown => schema::markdown::reference(schema::experiment()),
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(Exit::Success)
}
