//! Many runs -> one sweep directory: the executor, run processes, the Slurm launcher, the
//! preflight checks, progress, the adapter export, fault injection for the crash tests, who
//! owns a running run, pruning, and `record/`, the owner of every run- and sweep-directory
//! path and file.

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
pub mod record;
pub(crate) mod slurm;
