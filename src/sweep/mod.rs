//! Many runs -> one sweep directory: the executor, run processes, the Slurm launcher, the
//! preflight checks, progress, the adapter export, fault injection for the crash tests, who owns a running run, and
//! `record/`, the owner of every run- and sweep-directory path and file.

pub mod executor;
pub mod export;
pub mod fault;
pub mod options;
pub mod owner;
pub mod preflight;
pub mod prepare;
pub mod processes;
pub mod progress;
pub mod record;
pub mod slurm;
