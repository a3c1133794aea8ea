//! xp: a declarative experiment runner for machine-learning research.

pub mod compare;
pub mod data;
pub mod diagnostic;
pub mod front;
pub mod model;
pub mod ops;
pub(crate) mod report;
pub mod rng;
pub mod spec;
pub mod sweep;
pub mod train;

#[cfg(feature = "cli")]
pub mod cli;
