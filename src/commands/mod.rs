//! One module per subcommand; each returns an [`Outcome`](crate::cli::Outcome).

pub mod schema;
pub mod validate;
