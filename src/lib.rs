//! xp: a declarative experiment runner for machine-learning research.
//!
//! An experiment is KDL text; a sweep directory of trained runs and comparable tables come out.
//! The folders are the pipeline, data flowing one way down this list:
//!
//! 1. [`front`]: experiment text → plans. `front::load` reads files, `front::parse` and
//!    `front::tree` make the **spanned tree** (what the user wrote: every value knows its
//!    source and byte span), `front::compose` applies `extends`, `--set` and `--axis`,
//!    `front::check` checks the tree against the [`front::schema`], `front::points` and
//!    `front::expand` turn the sweep into one tree per run (templates evaluated by
//!    `front::template`), `front::resolve` fills defaults, applies the cross-field rules
//!    and decodes each run into a [`spec::RunSpec`], and [`front::plan`] names the runs: a
//!    [`front::plan::Plan`] of **planned runs** (name, id, axis values, seed and `RunSpec`).
//!    [`front::validate_files`] runs the whole front end and collects every
//!    [`diagnostic`] of every file; it never touches a run directory.
//! 2. [`spec`]: the **`RunSpec`**, one run typed and complete, without spans: the contract
//!    between the front end and everything after it (`config.json`; its hash is the run's id).
//! 3. [`data`], [`model`], [`ops`]: datasets, models (MLP, Llama, LoRA, HF directories) and
//!    differentiable ops, one file per op family with its CPU kernel, CUDA launch, backward and
//!    composed reference.
//! 4. [`train`]: one run in one process. The loop ([`train::train`]) knows no paths and
//!    prints nothing; it emits [`train::Event`]s to a [`train::Sink`].
//! 5. [`sweep`]: many runs → a sweep directory. The executor trains a plan's runs, each in its
//!    own `xp exec` process or as a Slurm job array; [`sweep::record`] is the only code that
//!    knows run- and sweep-directory paths and files (`summary.json`, `metrics.jsonl`,
//!    checkpoints, results tables, the lock).
//! 6. [`compare`] and `report`: read run directories into tables, baselines and gates, and
//!    the HTML report.
//! 7. [`cli`]: clap's definitions, one file per subcommand, exit codes in one place.
//!
//! The library API is what `examples/` use: [`front::validate_files`] and
//! [`front::validate_text`] for plans, [`sweep::executor::run_plan`] to train one, and
//! [`train::train`] with a [`model::Model`] and a [`data::Dataset`] of one's own.

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
