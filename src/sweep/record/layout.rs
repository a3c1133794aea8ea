//! Where everything of a sweep lives on disk (DESIGN.md §5): the experiment's folder with its
//! `current` link, a sweep directory's files (`experiment.kdl`, `plan.json`, the results tables,
//! the locks, the pruning journal, Slurm's files) and a run directory's (`config.*`,
//! `metrics.jsonl`, `train.log`, `summary.json`, `checkpoints/step-<N>/`, the exported model).
//! No other code spells a path or a file name of these directories.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// `runs/<experiment>/`: every sweep of one experiment, and `current`, the newest.
pub struct ExperimentDir {
    pub path: PathBuf,
}

impl ExperimentDir {
    pub fn new(runs_dir: &Path, experiment: &str) -> Self {
        ExperimentDir {
            path: runs_dir.join(experiment),
        }
    }

    /// The link to the newest sweep.
    pub fn current(&self) -> PathBuf {
        self.path.join("current")
    }

    /// The sweep directory `name` (a timestamp, or where `current` points).
    pub fn sweep(&self, name: impl AsRef<Path>) -> SweepDir {
        SweepDir {
            path: self.path.join(name),
        }
    }

    /// The `n`-th sweep started in the second `stamp` (`YYYYMMDD-HHMMSS`): the first is the
    /// stamp alone, later ones get a suffix.
    pub fn stamped(&self, stamp: &str, n: usize) -> SweepDir {
        match n {
            0 | 1 => self.sweep(stamp),
            n => self.sweep(format!("{stamp}-{n}")),
        }
    }
}

/// The name of a sweep directory for a sweep started now: `YYYYMMDD-HHMMSS`.
pub fn sweep_stamp() -> String {
    chrono::Local::now().format("%Y%m%d-%H%M%S").to_string()
}

/// One invocation of `xp run` for one experiment: `runs/<experiment>/<YYYYMMDD-HHMMSS>/`.
#[derive(Debug, Clone)]
pub struct SweepDir {
    pub path: PathBuf,
}

impl SweepDir {
    /// The sweep a path names: a sweep directory, or an experiment's folder, meaning its
    /// `current` sweep.
    pub fn named(dir: &Path) -> SweepDir {
        let experiment = ExperimentDir {
            path: dir.to_owned(),
        };
        let given = SweepDir {
            path: dir.to_owned(),
        };
        if !given.plan().exists() && experiment.current().exists() {
            SweepDir {
                path: experiment.current(),
            }
        } else {
            given
        }
    }

    /// The folder of every sweep of this sweep's experiment.
    pub fn experiment(&self) -> Option<ExperimentDir> {
        self.path
            .parent()
            .map(|p| ExperimentDir { path: p.to_owned() })
    }

    pub fn run(&self, name: &str) -> RunDir {
        RunDir {
            path: self.path.join(name),
        }
    }

    /// The experiment's source as given.
    pub fn source(&self) -> PathBuf {
        self.path.join("experiment.kdl")
    }

    pub fn plan(&self) -> PathBuf {
        self.path.join("plan.json")
    }

    /// A search's journal: every suggested trial, appended before it starts.
    pub fn search_journal(&self) -> PathBuf {
        self.path.join("search.jsonl")
    }

    pub fn results_csv(&self) -> PathBuf {
        self.path.join("results.csv")
    }

    pub fn results_json(&self) -> PathBuf {
        self.path.join("results.json")
    }

    pub fn report(&self) -> PathBuf {
        self.path.join("report.html")
    }

    /// Held by the one xp process that writes the sweep ([`super::lock`]).
    pub fn lock_file(&self) -> PathBuf {
        self.path.join(".lock")
    }

    /// Held by whoever rewrites the results tables.
    pub fn results_lock_file(&self) -> PathBuf {
        self.path.join(".results.lock")
    }

    /// The pruning journal: every run's objective at its evaluation steps, and how it ended.
    pub fn prune_journal(&self) -> PathBuf {
        self.path.join("prune.jsonl")
    }

    /// Held by the run that reads and appends to the pruning journal.
    pub fn prune_lock_file(&self) -> PathBuf {
        self.path.join(".prune.lock")
    }

    /// Slurm's files: the batch script, the record of jobs and the tasks' output.
    pub fn slurm(&self) -> PathBuf {
        self.path.join("slurm")
    }

    pub fn slurm_script(&self) -> PathBuf {
        self.slurm().join("submit.sbatch")
    }

    pub fn slurm_jobs(&self) -> PathBuf {
        self.slurm().join("jobs.json")
    }

    /// Each array task's output file, as a pattern for `sbatch --output`.
    pub fn slurm_output(&self) -> PathBuf {
        self.slurm().join("%A_%a.out")
    }
}

/// One run's directory: `<sweep>/<run-name>/`.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn new(path: &Path) -> Self {
        RunDir {
            path: path.to_owned(),
        }
    }

    pub fn config_kdl(&self) -> PathBuf {
        self.path.join("config.kdl")
    }

    pub fn config_json(&self) -> PathBuf {
        self.path.join("config.json")
    }

    pub fn metrics(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }

    pub fn log(&self) -> PathBuf {
        self.path.join("train.log")
    }

    pub fn summary(&self) -> PathBuf {
        self.path.join("summary.json")
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.path.join("checkpoints")
    }

    /// `checkpoints/step-<N>/`.
    pub fn checkpoint(&self, step: usize) -> CheckpointDir {
        self.checkpoint_named(&format!("step-{step}"))
    }

    /// `checkpoints/best/`: the best by the objective.
    pub fn best_checkpoint(&self) -> CheckpointDir {
        self.checkpoint_named("best")
    }

    fn checkpoint_named(&self, name: &str) -> CheckpointDir {
        CheckpointDir {
            path: self.checkpoints().join(name),
        }
    }

    /// The trained model, for a model that is neither LoRA-adapted nor an HF directory.
    pub fn model_file(&self) -> PathBuf {
        self.path.join("model.safetensors")
    }

    /// A fully fine-tuned HF model, as an HF directory.
    pub fn model_dir(&self) -> PathBuf {
        self.path.join("model")
    }

    /// The LoRA adapter in PEFT's layout.
    pub fn adapter(&self) -> PathBuf {
        self.path.join("adapter")
    }

    pub fn adapter_config(&self) -> PathBuf {
        self.adapter().join("adapter_config.json")
    }

    pub fn adapter_model(&self) -> PathBuf {
        self.adapter().join("adapter_model.safetensors")
    }

    /// The base model with the adapter merged in.
    pub fn merged(&self) -> PathBuf {
        self.path.join("merged")
    }

    /// The merged weights of a model that has no HF directory to copy.
    pub fn merged_file(&self) -> PathBuf {
        self.merged().join("model.safetensors")
    }
}

/// The step of a checkpoint directory's name (`step-<N>`); `None` for `best` and leftovers.
pub fn checkpoint_step(name: &OsStr) -> Option<usize> {
    name.to_str()?.strip_prefix("step-")?.parse().ok()
}

/// `checkpoints/<step-N or best>/`.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    pub path: PathBuf,
}

impl CheckpointDir {
    pub fn new(path: &Path) -> Self {
        CheckpointDir {
            path: path.to_owned(),
        }
    }

    /// The trained parameters by their PyTorch/HF names.
    pub fn model(&self) -> PathBuf {
        self.path.join("model.safetensors")
    }

    /// Every optimizer buffer.
    pub fn optimizer(&self) -> PathBuf {
        self.path.join("optimizer.safetensors")
    }

    /// The loop's state; written last, so a directory without it is no checkpoint.
    pub fn trainer(&self) -> PathBuf {
        self.path.join("trainer.json")
    }

    /// The SHA-256 of each of the other files, written after them.
    pub fn checksums(&self) -> PathBuf {
        self.path.join("checksums.json")
    }
}
