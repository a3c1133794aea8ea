//! xp: a declarative experiment runner for machine-learning research.
//!
//! The stages, each a module with typed input and output, data flowing one way:
//! [`load`] → [`parse`] → [`check`] (the [`schema`]) → … ; [`validate`] runs the front end
//! over files and collects every [`diagnostic`].

pub mod check;
pub mod compare;
pub mod compose;
pub mod data;
pub mod device;
pub mod diagnostic;
pub mod execute;
pub mod expand;
pub mod export;
pub mod fault;
pub mod load;
pub mod memory;
pub mod model;
pub mod ops;
pub mod optim;
pub mod parse;
pub mod plan;
pub mod pool;
pub mod preflight;
pub mod progress;
pub mod record;
pub mod report;
pub mod resolve;
pub mod rng;
pub mod schedule;
pub mod schema;
pub mod slurm;
pub mod source;
pub mod spec;
pub mod suggest;
pub mod table;
pub mod template;
pub mod threads;
pub mod train;
pub mod tree;
pub mod user_config;
pub mod validate;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
mod commands;
#[cfg(feature = "cli")]
pub mod render;
