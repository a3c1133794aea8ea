//! Many runs -> one sweep directory: the executor, where it takes its runs from (a fixed list
//! or a model-based search), run processes, the Slurm launcher, the preflight checks, progress,
//! the adapter export, fault injection for the crash tests, who owns a running run, pruning, and
//! `record/`, the owner of every run- and sweep-directory path and file.

pub(crate) mod budgets;
pub mod executor;
pub(crate) mod export;
pub(crate) mod fault;
pub(crate) mod options;
pub(crate) mod owner;
pub mod preflight;
pub(crate) mod prepare;
pub(crate) mod processes;
pub mod progress;
pub(crate) mod prune;
pub(crate) mod queue;
pub mod record;
pub mod search;
pub(crate) mod slurm;
