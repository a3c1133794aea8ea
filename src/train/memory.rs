//! Estimates of a run's peak training memory from its resolved configuration: parameters,
//! gradients, optimizer state and one micro-batch's activations, counted from what xp's
//! training loop and models actually keep (src/train.rs, src/model/, src/ops/), so the
//! orchestrator can pack runs that fit together and `xp plan` can show what a run will need.
//!
//! The counts are bytes of tensor data the loop holds at its peak, the end of the backward pass
//! of the step's last micro-batch (the whole forward graph is still alive then: candle frees it
//! only when `backward` returns). Allocator slack, the binary, the data set and thread stacks
//! are not counted; `tests/it/memory.rs` measures how the estimate compares with the process's
//! peak resident memory on the CPU (BENCHMARKS.md, "Memory estimates").
//!
//! - **parameters**: every parameter in f32 (the master weights), plus, where the linear
//!   layers compute in bf16/f16 (CUDA, precision `auto`/`bf16`/`f16`), a 16-bit copy of every
//!   linear weight: `linear_in` casts the weight each forward and the graph keeps the cast.
//! - **gradients**: trainable × 4 bytes × 2 per shard running at once: its `GradStore` and
//!   the sum `forward_backward` adds it to (each add makes a new tensor beside the old sum);
//!   plus one for the step's sum when a micro-batch has more shards than run at once.
//! - **optimizer**: trainable × 4 bytes × the per-element buffers of the rule (src/optim.rs):
//!   adam/adamw 2 (3 with amsgrad); sgd 1 with momentum, else 0; rmsprop 1, +1 with momentum,
//!   +1 centered; adagrad 1; lion 1.
//! - **activations** (f32 unless said otherwise), with N = batch × T tokens of what of a
//!   micro-batch trains at once (T the longest sequence; 1 for tables): on the CPU the
//!   micro-batch is split into shards (crate::train::shards) that run as many at a time as
//!   the run has threads (`resources { cpus }`, else what a run alone gets: `RAYON_NUM_THREADS`
//!   or the machine's), so batch is the rows of that many of the largest shard; on CUDA the
//!   whole micro-batch; d the model width, q = heads × head_dim,
//!   k = kv_heads × head_dim, h the MLP width, V the vocabulary, H the heads, per llama layer:
//!   - N × (2d + 2q + 4k + 2q + 4d + 4h): two RMSNorm outputs; q's projection and its RoPE;
//!     k's projection and RoPE, v's projection and the contiguous copy attention makes of it;
//!     attention's output and its (B, T, H·hd) copy; o_proj's output and the residual sum; gate,
//!     up, silu(gate) and their product; down_proj's output and the residual sum;
//!   - plus N × 2q when kv_heads < heads (k and v repeated to every head);
//!   - plus batch × H × T² × 2 (scores and probabilities; the fused causal softmax on the CPU) or
//!     × 6 where the composition runs (CUDA: scaled scores, masked, shifted, exp, normalised);
//!   - LoRA per adapted module of (out, in): + N × (r + 3·out) (A's and B's outputs, the scaled
//!     one and the sum), + N × 2·in with dropout (the mask and the dropped input);
//!   - 16-bit linear layers: + N × (in + out) × 2 bytes per linear (the casts of its input and
//!     output) on top of the f32 output.
//!
//!   Plus the embedding's output and the final norm (2 × N × d), and the head: N × V × 4
//!   (the logits and their log-softmax, kept for backward, and the two gradients of those
//!   backward computes first). For an MLP: the input N × F, per hidden layer of width w
//!   N × 3w (the product, the bias sum, the activation; + 2w with dropout), and the output
//!   layer and loss N × 4 × O.
//!
//!   The sum is doubled ([`BACKWARD_FACTOR`]): candle frees no saved tensor until `backward`
//!   returns, and measured on the CPU (with glibc's arenas and mmap threshold pinned, which
//!   changes nothing) the peak grows by twice the saved tensors as batch, sequence and width
//!   grow: the gradients backward allocates (each as zeros plus a sum) sit beside them. On the
//!   CPU each shard running at once adds [`SHARD_OVERHEAD`].

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::data::{Dataset, Task, text};
use crate::model::{hf, llama, lora};
use crate::spec::{
    self, BatchSize, Batching, DataSource, Device, OptimizerKind, Precision, RunSpec,
};

/// Activation bytes at the peak per byte of saved tensors (see the module's documentation):
/// fitted to the slopes measured by tests/it/memory.rs, 2.0 to 2.4 over batch and sequence.
pub const BACKWARD_FACTOR: f64 = 2.0;

/// Bytes each shard running at once holds beyond its tensor data (its thread's allocator
/// pages): fitted to tests/it/memory.rs, where one running shard's peak is 10 to 19 MiB above
/// its tensors and two running shards' peak is about twice one's.
pub const SHARD_OVERHEAD: f64 = 16.0 * 1024.0 * 1024.0;

/// A run's estimated peak training memory, in bytes, by what holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Estimate {
    pub parameters: u64,
    pub gradients: u64,
    pub optimizer: u64,
    pub activations: u64,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.parameters
            .saturating_add(self.gradients)
            .saturating_add(self.optimizer)
            .saturating_add(self.activations)
    }
}

/// Parameter counts as `model::build` reports them (`Built::total_params`,
/// `Built::trainable_params`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub trainable: u64,
}

/// [`estimate`]'s total from the configuration alone, for the orchestrator.
pub fn estimate_bytes(spec: &RunSpec) -> Option<u64> {
    estimate(spec, None).map(|e| e.total())
}

/// The estimate of a run's peak training memory (see the module's documentation for the
/// formula). `data`, where loaded, gives the vocabulary, widths and sequence length; without it
/// they come from the configuration where it fixes them (synthetic data; text and jsonl are
/// taken at the model's full context, an upper bound). `None` when something it needs is
/// unknown: `batch-size "auto"`, a CSV's width or a tokenizer's vocabulary without the data, an
/// unreadable model directory, a model that does not fit the data.
pub fn estimate(spec: &RunSpec, data: Option<&Dataset>) -> Option<Estimate> {
    estimate_with(spec, data, None)
}

/// [`estimate`] with micro-batches of `micro` examples, whatever the spec's batch size (the
/// search of `batch-size "auto"`).
pub fn estimate_micro(spec: &RunSpec, data: Option<&Dataset>, micro: usize) -> Option<Estimate> {
    estimate_with(spec, data, Some(micro))
}

fn estimate_with(spec: &RunSpec, data: Option<&Dataset>, micro: Option<usize>) -> Option<Estimate> {
    let mut shape = shape(spec, data)?;
    let micro = match (spec.train.batching(), micro) {
        (Batching::Examples(_), Some(micro)) => micro.max(1),
        (Batching::Examples(BatchSize::Fixed(b)), None) => b.max(1),
        (Batching::Examples(BatchSize::Auto), None) => return None,
        // At most `budget` tokens at once: as many rows as fit of the longest sequence that
        // fits (the attention scores grow with the sequence, so the longest is the peak).
        (Batching::Tokens(budget), _) => match &mut shape {
            Shape::Mlp { .. } => return None,
            Shape::Llama { seq, .. } => {
                *seq = (*seq).clamp(1, budget.max(1));
                (budget / *seq).max(1)
            }
        },
    };
    let half = computes_in_half(spec);
    let per_row = match &shape {
        Shape::Mlp { .. } => 1,
        Shape::Llama { seq, .. } => *seq,
    };
    let at_once = Concurrency::of(spec, micro, per_row);
    let rows = at_once.rows as f64;
    let (counts, linear_weights, activations) = match &shape {
        Shape::Mlp {
            hidden,
            inputs,
            outputs,
        } => {
            let (counts, linear) = mlp_counts(hidden, *inputs, *outputs);
            let acts = mlp_activations(spec, hidden, *inputs, *outputs, half) * rows;
            (counts, linear, acts)
        }
        Shape::Llama { config, seq } => {
            let targets = lora_targets(spec)?;
            let (counts, linear) = llama_counts(config, targets.as_ref());
            let acts = llama_activations(
                config,
                targets.as_ref(),
                *seq as f64,
                rows,
                (on_cuda(spec), half),
            );
            (counts, linear, acts)
        }
    };
    let trainable = counts.trainable as f64;
    let parameters = counts.total as f64 * 4.0 + if half { linear_weights * 2.0 } else { 0.0 };
    Some(Estimate {
        parameters: parameters as u64,
        gradients: (trainable * 4.0 * at_once.gradient_copies as f64) as u64,
        optimizer: (trainable * 4.0 * optimizer_buffers(&spec.train.optimizer.kind)) as u64,
        activations: (activations * BACKWARD_FACTOR + at_once.overhead) as u64,
    })
}

/// What of a micro-batch is in memory at once: on the CPU its shards (crate::train::shards) run
/// as many at a time as the run has threads.
struct Concurrency {
    /// What the threads running shards hold beyond tensors ([`SHARD_OVERHEAD`] each, on the
    /// CPU).
    overhead: f64,
    /// Rows whose activations are alive together.
    rows: usize,
    /// Parameter-sized f32 gradient buffers alive together.
    gradient_copies: usize,
}

impl Concurrency {
    fn of(spec: &RunSpec, micro: usize, per_row: usize) -> Self {
        if on_cuda(spec) {
            return Concurrency {
                overhead: 0.0,
                rows: micro,
                gradient_copies: 2,
            };
        }
        let shards = crate::train::shards(micro, per_row);
        let threads = spec
            .resources
            .as_ref()
            .and_then(|r| r.cpus)
            .unwrap_or_else(crate::train::threads::available);
        let running = shards.len().min(threads.max(1));
        let largest = shards.iter().map(|r| r.len()).max().unwrap_or(micro);
        Concurrency {
            overhead: running as f64 * SHARD_OVERHEAD,
            rows: running * largest,
            // Each running shard's GradStore and the sum it is added to, and the step's sum when
            // there are more shards than run at once.
            gradient_copies: 2 * running + usize::from(shards.len() > running),
        }
    }
}

/// The parameter counts of the model `model::build` would build for this run.
pub fn parameter_counts(spec: &RunSpec, data: Option<&Dataset>) -> Option<Counts> {
    Some(match shape(spec, data)? {
        Shape::Mlp {
            hidden,
            inputs,
            outputs,
        } => mlp_counts(&hidden, inputs, outputs).0,
        Shape::Llama { config, .. } => llama_counts(&config, lora_targets(spec)?.as_ref()).0,
    })
}

/// What the estimate needs of the model and the data.
enum Shape {
    Mlp {
        hidden: Vec<usize>,
        inputs: usize,
        outputs: usize,
    },
    Llama {
        config: llama::Config,
        /// The longest sequence of a micro-batch.
        seq: usize,
    },
}

fn shape(spec: &RunSpec, data: Option<&Dataset>) -> Option<Shape> {
    match &spec.model {
        spec::Model::Mlp(m) => {
            let (inputs, outputs) = match data {
                Some(d) => match d.task {
                    Task::Regression { outputs } => (d.input_width(), outputs),
                    Task::Classification { classes } => (d.input_width(), classes),
                    Task::Language { .. } => return None,
                },
                None => match spec.data.source {
                    DataSource::Regression { features, .. } => (features, 1),
                    DataSource::Classification {
                        features, classes, ..
                    } => (features, classes),
                    _ => return None,
                },
            };
            Some(Shape::Mlp {
                hidden: m.hidden.clone(),
                inputs,
                outputs,
            })
        }
        spec::Model::Llama(spec::LlamaSource::Dims(dims)) => {
            let (vocab, seq) = match data {
                Some(d) => match d.task {
                    Task::Language { vocab } => (vocab, d.input_width()),
                    _ => return None,
                },
                None => match &spec.data.source {
                    // `a + b =`: four tokens.
                    DataSource::ModularAddition { modulus, .. } => (modulus + 2, 4),
                    // x₁…xₙ SEP x₁…xₙ without its last token.
                    DataSource::Copy { length, vocab, .. } => (vocab + 1, 2 * length),
                    DataSource::Text {
                        tokenizer: None, ..
                    }
                    | DataSource::Jsonl { .. } => (text::BYTE_VOCAB, dims.context),
                    _ => return None,
                },
            };
            Some(Shape::Llama {
                config: llama::Config::from_dims(dims, vocab),
                seq,
            })
        }
        spec::Model::Llama(spec::LlamaSource::Dir(path)) => {
            // Reads config.json and lists the shards; no tensor is read.
            let config = hf::ModelDir::open(path).ok()?.config;
            let seq = match data {
                Some(d) => d.input_width(),
                None => config.context,
            };
            Some(Shape::Llama { config, seq })
        }
    }
}

fn lora_targets(spec: &RunSpec) -> Option<Option<lora::Targets>> {
    match &spec.lora {
        Some(l) => lora::Targets::new(l).ok().map(Some),
        None => Some(None),
    }
}

/// Whether the linear layers compute in bf16/f16 ([`crate::train::precision::resolve`]): on CUDA
/// unless `f32`; `device "auto"` is CUDA in a CUDA build.
fn computes_in_half(spec: &RunSpec) -> bool {
    on_cuda(spec) && spec.precision != Precision::F32
}

/// Whether the run trains on a GPU, where xp's fused CPU kernels do not run.
fn on_cuda(spec: &RunSpec) -> bool {
    match spec.device {
        Device::Cpu => false,
        Device::Cuda(_) => true,
        Device::Auto => cfg!(feature = "cuda"),
    }
}

/// Per-element f32 buffers of an optimizer's state.
fn optimizer_buffers(kind: &OptimizerKind) -> f64 {
    let n = match kind {
        OptimizerKind::Adam(a) | OptimizerKind::Adamw(a) => 2 + usize::from(a.amsgrad),
        OptimizerKind::Sgd(s) => usize::from(s.momentum != 0.0),
        OptimizerKind::Rmsprop(r) => 1 + usize::from(r.momentum > 0.0) + usize::from(r.centered),
        OptimizerKind::Adagrad(_) | OptimizerKind::Lion(_) => 1,
    };
    n as f64
}

/// Counts, and the elements of the linear weights (which a 16-bit run casts).
fn mlp_counts(hidden: &[usize], inputs: usize, outputs: usize) -> (Counts, f64) {
    let sizes: Vec<u64> = std::iter::once(inputs)
        .chain(hidden.iter().copied())
        .chain([outputs])
        .map(|s| s as u64)
        .collect();
    let weights: u64 = sizes
        .windows(2)
        .map(|w| w[0].saturating_mul(w[1]))
        .fold(0, u64::saturating_add);
    let biases: u64 = sizes.iter().skip(1).fold(0, |a, &s| a.saturating_add(s));
    let total = weights.saturating_add(biases);
    (
        Counts {
            total,
            trainable: total,
        },
        weights as f64,
    )
}

/// Activation bytes of one example through an MLP.
fn mlp_activations(
    spec: &RunSpec,
    hidden: &[usize],
    inputs: usize,
    outputs: usize,
    half: bool,
) -> f64 {
    let dropout = match &spec.model {
        spec::Model::Mlp(m) if m.dropout > 0.0 => 2.0,
        _ => 0.0,
    };
    let mut elements = inputs as f64 + 4.0 * outputs as f64;
    let mut half_elements = 0.0;
    let mut fan_in = inputs as f64;
    for &w in hidden {
        let w = w as f64;
        elements += (3.0 + dropout) * w;
        half_elements += fan_in + w;
        fan_in = w;
    }
    half_elements += fan_in + outputs as f64;
    elements * 4.0 + if half { half_elements * 2.0 } else { 0.0 }
}

/// Counts with LoRA's adapters (only they train when there are targets), and the elements of
/// the linear weights.
fn llama_counts(config: &llama::Config, targets: Option<&lora::Targets>) -> (Counts, f64) {
    let params = config.parameters();
    let elements = |shape: &[usize]| shape.iter().fold(1u64, |a, &s| a.saturating_mul(s as u64));
    let base: u64 = params
        .iter()
        .map(|(_, s)| elements(s))
        .fold(0, u64::saturating_add);
    let linear: u64 = linear_shapes(config)
        .iter()
        .map(|(_, out, inp)| (*out as u64).saturating_mul(*inp as u64))
        .fold(0, u64::saturating_add);
    let adapters: u64 = match targets {
        Some(t) => linear_shapes(config)
            .iter()
            .filter(|(module, _, _)| t.matches(module))
            .map(|(_, out, inp)| (t.rank as u64).saturating_mul((out + inp) as u64))
            .fold(0, u64::saturating_add),
        None => 0,
    };
    let total = base.saturating_add(adapters);
    let trainable = if targets.is_some() { adapters } else { total };
    (Counts { total, trainable }, linear as f64)
}

/// Every linear module (the ones LoRA can adapt) with its (out, in); a tied lm_head is the
/// embedding.
fn linear_shapes(config: &llama::Config) -> Vec<(String, usize, usize)> {
    let (d, hd) = (config.dim, config.head_dim());
    let mut out = Vec::new();
    for module in config.linear_modules() {
        let name = module.rsplit('.').next().unwrap_or(&module);
        let (rows, cols) = match name {
            "q_proj" => (config.heads * hd, d),
            "k_proj" | "v_proj" => (config.kv_heads * hd, d),
            "o_proj" => (d, config.heads * hd),
            "gate_proj" | "up_proj" => (config.hidden, d),
            "down_proj" => (d, config.hidden),
            _ => (config.vocab, d),
        };
        out.push((module, rows, cols));
    }
    out
}

/// Activation bytes of one micro-batch of `batch` sequences of `seq` tokens through a Llama.
fn llama_activations(
    c: &llama::Config,
    targets: Option<&lora::Targets>,
    seq: f64,
    batch: f64,
    (cuda, half): (bool, bool),
) -> f64 {
    let n = batch * seq;
    let hd = c.head_dim() as f64;
    let (d, h, v) = (c.dim as f64, c.hidden as f64, c.vocab as f64);
    let (heads, kv) = (c.heads as f64, c.kv_heads as f64);
    let (q, k) = (heads * hd, kv * hd);
    let repeat = if c.kv_heads < c.heads { 2.0 * q } else { 0.0 };
    let per_token = 2.0 * d + 2.0 * q + 4.0 * k + 2.0 * q + 4.0 * d + 4.0 * h + repeat;
    // The fused causal softmax (CPU, f32) keeps scores and probabilities; the composition
    // keeps every step of it.
    let score_copies = if cuda { 6.0 } else { 2.0 };
    let attention = batch * heads * seq * seq * score_copies;
    let layers = c.layers as f64 * (n * per_token + attention);
    let mut elements = layers + 2.0 * n * d + 4.0 * n * v;
    let mut half_bytes = 0.0;
    for (module, out, inp) in linear_shapes(c) {
        let (out, inp) = (out as f64, inp as f64);
        if let Some(t) = targets.filter(|t| t.matches(&module)) {
            elements += n * (t.rank as f64 + 3.0 * out);
            if t.dropout > 0.0 {
                elements += n * 2.0 * inp;
            }
        }
        half_bytes += n * (inp + out) * 2.0;
    }
    elements * 4.0 + if half { half_bytes } else { 0.0 }
}

/// This machine's physical memory (Linux: `MemTotal` of /proc/meminfo); `None` elsewhere.
pub fn physical_memory() -> Option<u64> {
    kib_field("/proc/meminfo", "MemTotal:")
}

/// The memory this machine can still give without swapping (Linux: `MemAvailable`); `None`
/// elsewhere.
pub fn available_memory() -> Option<u64> {
    kib_field("/proc/meminfo", "MemAvailable:")
}

/// The process's resident memory now (Linux: `VmRSS`).
pub fn resident() -> Option<u64> {
    kib_field("/proc/self/status", "VmRSS:")
}

/// A `Name:   N kB` line of a /proc file, in bytes.
fn kib_field(path: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes for people, in binary units: `512 B`, `85.3 MiB`, `1.20 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ if value < 10.0 => format!("{value:.2} {}", UNITS[unit]),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// The highest [`peak_since_last`] reading of this process so far.
static HIGHEST: AtomicU64 = AtomicU64::new(0);

/// The process's resident-memory high-water mark: Linux's `VmHWM`, the most physical memory the
/// process has held at once (tensors, allocator slack, the binary, thread stacks). `None`
/// where the platform does not report it.
fn high_water_mark() -> Option<u64> {
    kib_field("/proc/self/status", "VmHWM:")
}

/// The process's peak resident memory since the last [`peak_since_last`] (or since it started),
/// without resetting the mark.
pub fn peak_now() -> Option<u64> {
    high_water_mark()
}

/// The process's peak resident memory since the previous call (since it started, at the first):
/// the high-water mark, which is then reset to the memory resident now (Linux's
/// `/proc/self/clear_refs`, "5"), so the next call measures the next stretch of steps. Where
/// the reset is refused the mark stays the peak since the start, still a true peak.
pub fn peak_since_last() -> Option<u64> {
    let peak = high_water_mark()?;
    HIGHEST.fetch_max(peak, Ordering::Relaxed);
    // A failed reset leaves the mark as it is: the next reading is the peak since the start.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    Some(peak)
}

/// The process's peak resident memory since it started: the highest of the readings of
/// [`peak_since_last`] and the mark now.
pub fn process_peak() -> Option<u64> {
    let highest = HIGHEST.load(Ordering::Relaxed);
    match high_water_mark() {
        Some(now) => Some(now.max(highest)),
        None => (highest > 0).then_some(highest),
    }
}
