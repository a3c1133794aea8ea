//! What a run is: the typed, fully resolved configuration (defaults applied, templates
//! evaluated, aliases canonical). Every later stage reads this, never the written form. It is
//! serialized as `config.json`; its hash is the run's id.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunSpec {
    pub experiment: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub seed: u64,
    pub objective: Objective,
    pub device: Device,
    pub precision: Precision,
    pub model: Model,
    pub init_from: Option<InitFrom>,
    pub lora: Option<Lora>,
    pub data: Data,
    pub train: Train,
    pub regression: Option<Regression>,
    /// Not part of the run's id: the same training on other resources is the same run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// What one run needs (`resources { }`), for `--jobs` and the Slurm launcher.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Resources {
    pub cpus: Option<usize>,
    pub gpus: Option<usize>,
    pub memory: Option<String>,
    pub time: Option<String>,
    pub partition: Option<String>,
    pub slurm: Vec<String>,
}

impl Resources {
    /// `memory` in bytes (see [`memory_bytes`]); `None` when not given or not a size.
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory.as_deref().and_then(memory_bytes)
    }
}

/// A memory size as Slurm's `--mem` takes it, in bytes: a whole number with an optional unit
/// `B`, `K`, `M`, `G` or `T` (powers of 1024, case-insensitive, `KB` for `K` and so on); a
/// bare number is megabytes, as for Slurm. `None` for anything else, or zero.
pub fn memory_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let unit = unit.to_ascii_uppercase();
    let unit = match unit.as_str() {
        "B" => "B",
        u => u.strip_suffix('B').unwrap_or(u),
    };
    let shift = match unit {
        "B" => 0,
        "" | "M" => 20,
        "K" => 10,
        "G" => 30,
        "T" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift).filter(|&b| b > 0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Objective {
    pub metric: String,
    pub direction: Direction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Minimize,
    Maximize,
}

impl Direction {
    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Minimize => a < b,
            Direction::Maximize => a > b,
        }
    }
}

/// Whether higher is better for a metric that is not the objective.
pub fn direction_of(metric: &str) -> Direction {
    let m = metric.rsplit('/').next().unwrap_or(metric);
    if m.contains("accuracy") || m.contains("f1") || m.ends_with("_per_s") {
        Direction::Maximize
    } else {
        Direction::Minimize
    }
}

/// Whether a metric has a best value worth keeping (not the lr, gradient norm, throughput,
/// f16's loss scale and skipped steps, nor what a step's batch held and the memory it took).
pub fn ranked(metric: &str) -> bool {
    !(metric.ends_with("/lr")
        || metric.ends_with("grad_norm")
        || metric.ends_with("_per_s")
        || metric.ends_with("/loss_scale")
        || metric.ends_with("/skipped_steps")
        || metric.ends_with("/batch_size")
        || metric.ends_with("/tokens")
        || metric.ends_with("/padding_ratio")
        || metric.ends_with("/peak_memory_bytes"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "index")]
pub enum Device {
    Auto,
    Cpu,
    Cuda(Option<usize>),
}

impl Device {
    /// Reads a device as `--device` and the `device` node write it: `auto`, `cpu`, `cuda` or
    /// `cuda:N`; `None` for anything else (an index too large for usize included).
    pub fn parse(text: &str) -> Option<Device> {
        match text {
            "auto" => Some(Device::Auto),
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda(None)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Some(Device::Cuda(Some(i))),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    Auto,
    F32,
    Bf16,
    F16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Model {
    Mlp(MlpDims),
    Llama(LlamaSource),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MlpDims {
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub dropout: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    Relu,
    Gelu,
    Tanh,
    Silu,
}

/// A Llama-architecture decoder: from dimensions, or from an HF model directory whose
/// config.json gives them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LlamaSource {
    Dims(LlamaDims),
    Dir(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LlamaDims {
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub dim: usize,
    pub hidden: usize,
    pub context: usize,
    /// `None`: the data's vocabulary.
    pub vocab: Option<usize>,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct InitFrom {
    pub path: PathBuf,
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Lora {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub rslora: bool,
    pub merge: bool,
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Data {
    /// Seed for generating, splitting and shuffling; `None`: the run's seed.
    pub seed: Option<u64>,
    pub source: DataSource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum DataSource {
    #[serde(rename_all = "kebab-case")]
    Regression {
        features: usize,
        samples: usize,
        noise: f64,
        validation_fraction: f64,
    },
    #[serde(rename_all = "kebab-case")]
    Classification {
        features: usize,
        classes: usize,
        samples: usize,
        validation_fraction: f64,
    },
    #[serde(rename_all = "kebab-case")]
    ModularAddition { modulus: usize, train_fraction: f64 },
    #[serde(rename_all = "kebab-case")]
    Copy {
        length: usize,
        vocab: usize,
        samples: usize,
        validation_fraction: f64,
    },
    #[serde(rename_all = "kebab-case")]
    Text {
        path: PathBuf,
        tokenizer: Option<PathBuf>,
        validation: Validation,
    },
    #[serde(rename_all = "kebab-case")]
    Jsonl {
        path: PathBuf,
        prompt_field: String,
        response_field: String,
        messages_field: String,
        validation: Validation,
        shuffle: bool,
        packing: bool,
    },
    #[serde(rename_all = "kebab-case")]
    Csv {
        path: PathBuf,
        target: String,
        task: CsvTask,
        validation: Validation,
        shuffle: bool,
        features: Option<Vec<String>>,
    },
}

/// Where the validation split comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Validation {
    File(PathBuf),
    Fraction(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CsvTask {
    Regression,
    Classification,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Train {
    pub length: Length,
    /// Examples per micro-batch; `None` when micro-batches are cut by `batch_tokens` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<BatchSize>,
    /// Tokens per micro-batch, padding included (`batch-tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_tokens: Option<usize>,
    pub gradient_accumulation: usize,
    /// Examples per optimizer step with `batch-size "auto"`: the accumulation follows the
    /// micro-batch chosen (`effective-batch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_batch: Option<usize>,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    pub grad_clip: Option<f64>,
    pub eval: Option<Eval>,
    pub log_every: usize,
    pub checkpoint: Option<Checkpoint>,
    pub early_stop: Option<EarlyStop>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Length {
    Steps(usize),
    Epochs(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BatchSize {
    Fixed(usize),
    Auto,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct OptimizerConfig {
    pub lr: f64,
    pub decay_all: bool,
    pub kind: OptimizerKind,
}

/// An optimizer and its hyperparameters; each variant's settings are one named struct that
/// the update rule keeps as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum OptimizerKind {
    Sgd(Sgd),
    Adam(Adam),
    /// Adam with decoupled weight decay: Adam's settings, torch's `AdamW` rule.
    Adamw(Adam),
    Rmsprop(Rmsprop),
    Adagrad(Adagrad),
    Lion(Lion),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Sgd {
    pub momentum: f64,
    pub dampening: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub amsgrad: bool,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Rmsprop {
    pub alpha: f64,
    pub eps: f64,
    pub momentum: f64,
    pub centered: bool,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Adagrad {
    pub lr_decay: f64,
    pub eps: f64,
    pub initial_accumulator: f64,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Lion {
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Schedule {
    pub interval: Interval,
    /// `None`: the kind's default (10% for the decaying HF-style kinds, none otherwise).
    pub warmup: Option<Warmup>,
    pub kind: ScheduleKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interval {
    Step,
    Epoch,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Warmup {
    Steps(usize),
    Ratio(f64),
    Epochs(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ScheduleKind {
    Constant,
    #[serde(rename_all = "kebab-case")]
    Linear {
        min_lr_ratio: f64,
    },
    #[serde(rename_all = "kebab-case")]
    Cosine {
        min_lr_ratio: f64,
    },
    #[serde(rename_all = "kebab-case")]
    CosineWithRestarts {
        cycles: usize,
        min_lr_ratio: f64,
    },
    #[serde(rename_all = "kebab-case")]
    Polynomial {
        power: f64,
        end_lr: f64,
    },
    #[serde(rename_all = "kebab-case")]
    Exponential {
        gamma: f64,
    },
    #[serde(rename_all = "kebab-case")]
    InverseSqrt {
        timescale: Option<usize>,
    },
    #[serde(rename_all = "kebab-case")]
    Step {
        step_size: usize,
        gamma: f64,
    },
    #[serde(rename_all = "kebab-case")]
    MultiStep {
        milestones: Vec<usize>,
        gamma: f64,
    },
    #[serde(rename_all = "kebab-case")]
    CosineAnnealing {
        t_max: Option<usize>,
        eta_min: f64,
    },
    #[serde(rename_all = "kebab-case")]
    CosineWarmRestarts {
        t_0: usize,
        t_mult: usize,
        eta_min: f64,
    },
    #[serde(rename_all = "kebab-case")]
    OneCycle {
        max_lr: Option<f64>,
        pct_start: f64,
        anneal: Anneal,
        div_factor: f64,
        final_div_factor: f64,
        three_phase: bool,
    },
    #[serde(rename_all = "kebab-case")]
    ReduceOnPlateau {
        mode: Option<Direction>,
        factor: f64,
        patience: usize,
        threshold: f64,
        threshold_mode: ThresholdMode,
        cooldown: usize,
        min_lr: f64,
        eps: f64,
    },
}

impl ScheduleKind {
    /// The decaying HF/fsdp_qlora-style kinds warm up for 10% of the steps unless told otherwise.
    pub fn warms_up_by_default(&self) -> bool {
        matches!(
            self,
            ScheduleKind::Linear { .. }
                | ScheduleKind::Cosine { .. }
                | ScheduleKind::CosineWithRestarts { .. }
                | ScheduleKind::Polynomial { .. }
                | ScheduleKind::InverseSqrt { .. }
                | ScheduleKind::Exponential { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anneal {
    Cos,
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThresholdMode {
    Rel,
    Abs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Eval {
    pub every: usize,
    /// `None`: the whole validation split.
    pub batches: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Checkpoint {
    pub every: usize,
    pub keep: usize,
    pub best: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EarlyStop {
    pub patience: usize,
    pub min_delta: f64,
    pub threshold: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Regression {
    pub baseline: PathBuf,
    pub join_on: Option<Vec<String>>,
    pub metrics: Vec<GatedMetric>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GatedMetric {
    pub name: String,
    pub tolerance: Tolerance,
    pub direction: Option<Direction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tolerance {
    Absolute(f64),
    /// In percent of the baseline value.
    Relative(f64),
}

/// How a run's micro-batches are cut: `batch-size` or `batch-tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// A number of examples (or "auto").
    Examples(BatchSize),
    /// Examples grouped by length, at most this many tokens (padding included) each.
    Tokens(usize),
}

impl Train {
    /// How micro-batches are cut (`batch-size` when neither is set, as its default).
    pub fn batching(&self) -> Batching {
        match (self.batch_tokens, self.batch_size) {
            (Some(tokens), _) => Batching::Tokens(tokens),
            (None, Some(size)) => Batching::Examples(size),
            (None, None) => Batching::Examples(BatchSize::Fixed(32)),
        }
    }

    /// Examples per optimizer step, when it is known before training: a fixed batch size
    /// times the accumulation, or `effective-batch` with `batch-size "auto"`.
    pub fn examples_per_step(&self) -> Option<usize> {
        match self.batching() {
            Batching::Examples(BatchSize::Fixed(b)) => Some(b * self.gradient_accumulation),
            Batching::Examples(BatchSize::Auto) => self.effective_batch,
            Batching::Tokens(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory_bytes;

    #[test]
    fn memory_sizes_read_as_slurm_reads_them() {
        let gib = 1u64 << 30;
        assert_eq!(memory_bytes("16G"), Some(16 * gib));
        assert_eq!(memory_bytes("16gb"), Some(16 * gib));
        assert_eq!(memory_bytes("500M"), Some(500 << 20));
        assert_eq!(memory_bytes("500"), Some(500 << 20));
        assert_eq!(memory_bytes("2T"), Some(2 << 40));
        assert_eq!(memory_bytes("64K"), Some(64 << 10));
        assert_eq!(memory_bytes("4096B"), Some(4096));
        for bad in [
            "",
            "G",
            "16 GiB",
            "1.5G",
            "-1G",
            "16X",
            "0",
            "99999999999999T",
        ] {
            assert_eq!(memory_bytes(bad), None, "{bad:?}");
        }
    }
}

/// How a sweep stops unpromising runs (`sweep { prune … }`), every step count resolved. A
/// property of the sweep, not of a run (in `plan.json`, not in a run's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Pruning {
    /// Asynchronous successive halving: rungs at `min_steps × reduction^k`.
    Asha { min_steps: usize, reduction: usize },
    /// Worse than the median of the completed runs at the same step, after `warmup_steps` and
    /// once `startup_runs` runs completed.
    Median {
        warmup_steps: usize,
        startup_runs: usize,
    },
    /// ASHA brackets from `min_steps` to `max_steps`.
    Hyperband {
        min_steps: usize,
        max_steps: usize,
        reduction: usize,
    },
}

impl Pruning {
    pub fn name(self) -> &'static str {
        match self {
            Pruning::Asha { .. } => "asha",
            Pruning::Median { .. } => "median",
            Pruning::Hyperband { .. } => "hyperband",
        }
    }
}
