//! xp: a declarative experiment runner for machine-learning research.
//!
//! The stages, each a module with typed input and output, data flowing one way:
//! [`load`] → [`parse`] → [`check`] (the [`schema`]) → … ; [`validate`] runs the front end
//! over files and collects every [`diagnostic`].

pub mod check;
pub mod diagnostic;
pub mod load;
pub mod parse;
pub mod schema;
pub mod source;
pub mod suggest;
pub mod template;
pub mod tree;
pub mod validate;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
mod commands;
#[cfg(feature = "cli")]
pub mod render;
