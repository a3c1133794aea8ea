//! Preflight: everything `xp run` can check before training starts. Each distinct HF model
//! directory is read once (its config and its weights' headers) and each distinct dataset is
//! loaded once, with that model's tokenizer (file errors point at their line); LoRA targets
//! are matched against the model; and every run is checked against what this binary can do
//! (devices, features) and this machine's memory (a run that cannot fit is refused before its
//! data is generated). `xp validate` runs it too, with capability problems as
//! warnings, so the same file is judged the same way by both commands.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, Severity};

use crate::data::tokenizer::HfTokenizer;
use crate::data::{self, Dataset, ModelText, Task};
use crate::diagnostic::Diag;
use crate::front::plan::Plan;
use crate::model::{self, hf, llama, lora};
use crate::spec::{LlamaSource, Model, RunSpec};
use crate::train::{device, memory};

/// The datasets of a set of runs, by [`data_key`].
#[derive(Default)]
pub struct Datasets {
    by_key: BTreeMap<String, Arc<Dataset>>,
}

impl Datasets {
    pub fn get(&self, spec: &RunSpec) -> Option<Arc<Dataset>> {
        self.by_key.get(&data_key(spec)).cloned()
    }
}

/// Runs with equal keys train on identical data.
pub fn data_key(spec: &RunSpec) -> String {
    let seed = spec.data.seed.unwrap_or(spec.seed);
    let model = match &spec.model {
        Model::Llama(LlamaSource::Dims(d)) => format!("context {} vocab {:?}", d.context, d.vocab),
        Model::Llama(LlamaSource::Dir(dir)) => format!("dir {}", dir.display()),
        Model::Mlp(_) => String::new(),
    };
    format!(
        "{}#{seed}#{model}",
        serde_json::to_string(&spec.data.source).unwrap_or_default(),
    )
}

/// An HF model directory as its runs' data needs it.
struct Opened {
    dir: hf::ModelDir,
    tokenizer: Option<Arc<HfTokenizer>>,
}

/// Reads every distinct model directory of the plans: config, weights' headers, tokenizer.
fn open_models(plans: &[Plan]) -> (BTreeMap<PathBuf, Arc<Opened>>, Vec<Diag>) {
    let mut out = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut diags = Vec::new();
    for spec in plans.iter().flat_map(|p| p.runs.iter().map(|r| &r.config)) {
        let Model::Llama(LlamaSource::Dir(path)) = &spec.model else {
            continue;
        };
        if !seen.insert(path.clone()) {
            continue;
        }
        let dir = match hf::ModelDir::open(path) {
            Ok(dir) => dir,
            Err(e) => {
                diags.push(diag(e));
                continue;
            }
        };
        // Its data is still read, so every problem is reported at once.
        if let Err(e) = dir.check() {
            diags.push(diag(e));
        }
        match HfTokenizer::open(path, dir.config.vocab) {
            Ok(tokenizer) => {
                let tokenizer = tokenizer.map(Arc::new);
                out.insert(path.clone(), Arc::new(Opened { dir, tokenizer }));
            }
            Err(e) => diags.push(diag(e)),
        }
    }
    (out, diags)
}

fn diag(e: impl Diagnostic + Send + Sync + 'static) -> Diag {
    Diag {
        source: None,
        inner: Box::new(e),
    }
}

/// Examples cut to the model's context; training goes on with the cut examples.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error(
    "{count} examples of `{path}` are longer than the model's context of {context} tokens and were cut to it"
)]
#[diagnostic(
    code("xp::data::truncated"),
    severity(Warning),
    help(
        "examples cut so far that nothing is left to learn are dropped; shorten them, or use packing=#true"
    )
)]
pub struct Truncated {
    path: String,
    count: usize,
    context: usize,
}

/// Conversations left out because the chat template hides where their turns are.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error(
    "`{path}`: {conversations} left out, whose turns the model's chat template does not render one by one, so their assistant turns cannot be found"
)]
#[diagnostic(code("xp::data::skipped"), severity(Warning), help("{help}"))]
pub struct Skipped {
    path: String,
    conversations: String,
    help: &'static str,
}

/// Loads every distinct dataset of the plans (reading their HF model directories); one
/// diagnostic per distinct failure, and LoRA targets that match no layer of their model.
/// Runs beyond this machine's memory are said with `too_big` severity (a warning where they
/// will train elsewhere) and their data is not loaded.
pub fn load_data(plans: &[Plan], too_big: Severity) -> (Datasets, Vec<Diag>) {
    let (models, mut diags) = open_models(plans);
    diags.extend(too_large(plans, too_big));
    let mut out = Datasets::default();
    let mut failed: BTreeMap<String, ()> = BTreeMap::new();
    for run in plans.iter().flat_map(|p| &p.runs) {
        let spec = &run.config;
        if beyond_machine(spec) {
            // Said by [`too_large`]; generating its data would exhaust the machine.
            continue;
        }
        let (model_text, opened) = match &spec.model {
            Model::Llama(LlamaSource::Dims(d)) => (
                ModelText {
                    context: Some(d.context),
                    tokenizer: None,
                },
                None,
            ),
            Model::Llama(LlamaSource::Dir(path)) => match models.get(path) {
                Some(opened) => (
                    ModelText {
                        context: Some(opened.dir.config.context),
                        tokenizer: opened.tokenizer.clone(),
                    },
                    Some(opened),
                ),
                // Its diagnostic is out already; the data is still read (as bytes, with no
                // context), so its own problems are reported too.
                None => (ModelText::default(), None),
            },
            Model::Mlp(_) => (ModelText::default(), None),
        };
        let modules = match (opened, &spec.model) {
            (Some(o), _) => Some(o.dir.config.linear_modules()),
            (None, Model::Llama(LlamaSource::Dims(d))) => {
                Some(llama::Config::from_dims(d, 1).linear_modules())
            }
            _ => None,
        };
        if let (Some(lora), Some(modules)) = (&spec.lora, modules)
            && let Some(problem) = lora_problem(lora, &modules)
            && failed.insert(problem.to_string(), ()).is_none()
        {
            diags.push(diag(problem));
        }
        if let (Some(lora), Some(o)) = (&spec.lora, opened)
            && lora.rank > o.dir.config.dim
        {
            let problem = LoraRank {
                rank: lora.rank,
                dim: o.dir.config.dim,
                path: o.dir.path.display().to_string(),
            };
            if failed.insert(problem.to_string(), ()).is_none() {
                diags.push(diag(problem));
            }
        }
        let key = data_key(spec);
        if out.by_key.contains_key(&key) {
            continue;
        }
        let seed = spec.data.seed.unwrap_or(spec.seed);
        let loaded = data::load_for(&spec.data, seed, &model_text)
            .map_err(diag)
            .and_then(|d| match (opened, &spec.model) {
                (Some(o), _) => fit_vocab(
                    d,
                    o.dir.config.vocab,
                    &o.dir.path.display().to_string(),
                    "data for an HF model uses its tokenizer.json; give the model directory one, or use data within its vocabulary".into(),
                ),
                (None, Model::Llama(LlamaSource::Dims(dims))) => match dims.vocab {
                    Some(vocab) => {
                        let help = format!(
                            "set `vocab` to at least {}, or leave it out to use the data's",
                            vocab_of(&d)
                        );
                        fit_vocab(d, vocab, "the model", help)
                    }
                    None => Ok(d),
                },
                _ => Ok(d),
            });
        match loaded {
            Ok(dataset) => {
                if let (true, Some(context), Some(path)) =
                    (dataset.truncated > 0, model_text.context, data_path(spec))
                {
                    diags.push(diag(Truncated {
                        path: path.display().to_string(),
                        count: dataset.truncated,
                        context,
                    }));
                }
                if let (true, Some(path)) = (dataset.skipped > 0, data_path(spec)) {
                    diags.push(diag(Skipped {
                        path: path.display().to_string(),
                        conversations: crate::diagnostic::plural(dataset.skipped, "conversation"),
                        help: data::jsonl::SPLIT_HELP,
                    }));
                }
                out.by_key.insert(key, Arc::new(dataset));
            }
            Err(e) => {
                let code = e.inner.code().map(|c| c.to_string()).unwrap_or_default();
                let text = format!("{code}{}", e.inner);
                if failed.insert(text, ()).is_none() {
                    diags.push(e);
                }
            }
        }
    }
    (out, diags)
}

fn data_path(spec: &RunSpec) -> Option<&Path> {
    use crate::spec::DataSource::{Csv, Jsonl, Text};
    match &spec.data.source {
        Jsonl { path, .. } | Text { path, .. } | Csv { path, .. } => Some(path),
        _ => None,
    }
}

/// Language data predicts over the model's vocabulary (an HF model's, or a `vocab` given to
/// a model from dimensions), which may be larger than the data's (padded vocabularies) but
/// must hold every token of it.
fn fit_vocab(mut data: Dataset, model: usize, name: &str, help: String) -> Result<Dataset, Diag> {
    match data.task {
        Task::Language { vocab } if vocab <= model => {
            data.task = Task::Language { vocab: model };
            Ok(data)
        }
        Task::Language { vocab } => Err(diag(ModelData {
            message: format!(
                "the data's tokens go up to {}, beyond the vocabulary of {name} ({model} tokens)",
                vocab - 1,
            ),
            help,
        })),
        _ => Ok(data),
    }
}

fn vocab_of(data: &Dataset) -> usize {
    match data.task {
        Task::Language { vocab } => vocab,
        _ => 0,
    }
}

/// Data that the model cannot read.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code("xp::model::vocab"))]
pub struct ModelData {
    message: String,
    #[help]
    help: String,
}

/// LoRA targets that are no glob or match no linear layer of the model.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code("xp::run::lora-targets"))]
pub struct LoraTargets {
    message: String,
    #[help]
    help: String,
}

fn lora_problem(spec: &crate::spec::Lora, modules: &[String]) -> Option<LoraTargets> {
    let names = lora::LINEAR_MODULES.join(", ");
    let help = format!(
        "a target matches a module's full name (model.layers.0.self_attn.q_proj) or a dotted end of it; the linear layers are {names}: e.g. `q_proj` or `*.mlp.*`"
    );
    if let Err(message) = lora::Targets::new(spec) {
        return Some(LoraTargets { message, help });
    }
    let unmatched = lora::unmatched(spec, modules);
    if unmatched.is_empty() {
        return None;
    }
    let list: Vec<String> = unmatched.iter().map(|p| format!("`{p}`")).collect();
    let message = match list.as_slice() {
        [one] => format!("the LoRA target {one} matches no linear layer of the model"),
        _ => format!(
            "the LoRA targets {} match no linear layer of the model",
            list.join(", ")
        ),
    };
    Some(LoraTargets { message, help })
}

/// A LoRA rank above the width of an HF model's layers (a model from dimensions is checked
/// with the other cross-field rules, pointing at the rank).
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("LoRA rank {rank} is larger than the dimension {dim} of the model `{path}`")]
#[diagnostic(
    code("xp::model::lora-rank"),
    help(
        "a rank above the layer width adds parameters without adding capacity; use at most {dim}"
    )
)]
pub struct LoraRank {
    rank: usize,
    dim: usize,
    path: String,
}

/// An `init-from` file that cannot be used.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("cannot use `{path}` for init-from: {reason}")]
#[diagnostic(
    code("xp::run::init-from"),
    help(
        "init-from takes a .safetensors file, or a directory holding model.safetensors, an HF model's shards or a PEFT adapter (adapter_model.safetensors)"
    )
)]
pub struct InitFrom {
    path: String,
    reason: String,
}

/// Checks that every `init-from` file exists and is a readable safetensors file (its header;
/// the tensors are matched against the model when the run starts), and that a PEFT adapter
/// comes with a `lora` of its rank.
pub fn check_init_from(plans: &[Plan]) -> Vec<Diag> {
    let mut checked = BTreeSet::new();
    let mut diags = Vec::new();
    for spec in plans.iter().flat_map(|p| p.runs.iter().map(|r| &r.config)) {
        let Some(init) = &spec.init_from else {
            continue;
        };
        let problem = |path: &Path, reason: String| {
            diag(InitFrom {
                path: path.display().to_string(),
                reason,
            })
        };
        let adapter = init.path.join("adapter_config.json");
        if adapter.is_file() {
            let rank = std::fs::read_to_string(&adapter)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v.get("r").and_then(serde_json::Value::as_u64));
            let reason = match (&spec.lora, rank) {
                (None, _) => Some(
                    "it is a LoRA adapter, and the experiment has no `lora`; add one with the adapter's rank and targets".to_owned(),
                ),
                (Some(l), Some(r)) if l.rank as u64 != r => Some(format!(
                    "the adapter has rank {r}, the experiment's `lora` rank {}",
                    l.rank
                )),
                _ => None,
            };
            if let Some(reason) = reason
                && checked.insert((adapter.clone(), reason.clone()))
            {
                diags.push(problem(&init.path, reason));
            }
        }
        let files = match model::init_files(&init.path) {
            Ok(files) => files,
            Err(e) => {
                if checked.insert((init.path.clone(), String::new())) {
                    diags.push(problem(&init.path, e.to_string()));
                }
                continue;
            }
        };
        for file in files {
            if !checked.insert((file.clone(), String::new())) {
                continue;
            }
            let mut start = [0u8; 2];
            let reason = match std::fs::File::open(&file).and_then(|mut f| f.read_exact(&mut start)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such file".to_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Some("it is not a safetensors file".to_owned()),
                Err(e) => Some(e.to_string()),
                Ok(()) if &start == b"PK" => Some(
                    "it is a PyTorch zip archive, not safetensors; convert it with `safetensors.torch.save_file`".to_owned(),
                ),
                Ok(()) => hf::read_header(&file).err().map(|_| "it is not a safetensors file".to_owned()),
            };
            if let Some(reason) = reason {
                diags.push(problem(&file, reason));
            }
        }
    }
    diags
}

/// Something a run asks for that this binary cannot do.
#[derive(Debug)]
pub struct Unsupported {
    what: String,
    runs: usize,
    help: String,
    severity: Severity,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} {})",
            self.what,
            self.runs,
            if self.runs == 1 { "run" } else { "runs" }
        )
    }
}

impl std::error::Error for Unsupported {}

impl Diagnostic for Unsupported {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(UNSUPPORTED_CODE))
    }
    fn severity(&self) -> Option<Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.help))
    }
}

// The code of [`Unsupported`], written as its fixture and the code test expect: code("xp::run::unsupported")
const UNSUPPORTED_CODE: &str = "xp::run::unsupported";

/// Where a run trains, as run directories record it (`cpu`, `cuda:0`): the experiment's device
/// unless `--device` says otherwise, resolved as [`device::open_device`] will open it. A device
/// that cannot be used keeps the name it was asked by; [`capabilities`] reports why.
pub fn device_of(spec: &RunSpec, flag: Option<&str>) -> String {
    match device::resolve(spec, flag) {
        Ok(resolved) => resolved.name(),
        Err(_) => match device::requested(spec, flag) {
            Ok(requested) => device::display(requested),
            Err(_) => flag.unwrap_or_default().to_owned(),
        },
    }
}

/// The memory a run needs at least: its training estimate and its synthetic data, in floating
/// point (sizes from the schema's ranges can pass any integer type), and the two parts.
fn needed(spec: &RunSpec) -> (f64, f64) {
    let training = memory::estimate(spec, None).map_or(0.0, |e| e.total() as f64);
    let data = data::synthetic::bytes(&spec.data.source).unwrap_or(0.0);
    (training, data)
}

/// Whether a run cannot fit in this machine's memory at all: its data is never generated.
fn beyond_machine(spec: &RunSpec) -> bool {
    let (training, data) = needed(spec);
    memory::physical_memory().is_some_and(|total| training + data > total as f64)
}

/// Runs that need more memory than this machine has, said once with the largest of them.
fn too_large(plans: &[Plan], severity: Severity) -> Option<Diag> {
    let total = memory::physical_memory()?;
    let over: Vec<(&str, f64, f64)> = plans
        .iter()
        .flat_map(|p| &p.runs)
        .map(|r| (r.name.as_str(), needed(&r.config)))
        .filter(|(_, (t, d))| t + d > total as f64)
        .map(|(name, (t, d))| (name, t, d))
        .collect();
    let &(name, training, data) = over
        .iter()
        .max_by(|a, b| (a.1 + a.2).total_cmp(&(b.1 + b.2)))?;
    let human = |b: f64| {
        if b >= u64::MAX as f64 {
            format!("more than {}", memory::human_bytes(u64::MAX))
        } else {
            memory::human_bytes(b as u64)
        }
    };
    Some(Diag {
        source: None,
        inner: Box::new(Unsupported {
            what: format!(
                "more memory than this machine has ({})",
                memory::human_bytes(total)
            ),
            runs: over.len(),
            help: format!(
                "the largest, `{name}`, needs about {} ({} to train, {} of data); make its model or data smaller, or run it where there is more memory (`--launcher slurm` with `resources {{ memory }}`)",
                human(training + data),
                human(training),
                human(data)
            ),
            severity,
        }),
    })
}

/// What the runs ask for that this binary cannot do; errors for `xp run`, warnings for
/// `xp validate`.
pub fn capabilities(plans: &[Plan], device_flag: Option<&str>, severity: Severity) -> Vec<Diag> {
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for spec in plans.iter().flat_map(|p| p.runs.iter().map(|r| &r.config)) {
        let mut missing = |what: &str, help: &str| {
            *counts
                .entry((what.to_owned(), help.to_owned()))
                .or_default() += 1
        };
        if let Err(e) = device::resolve(spec, device_flag) {
            missing(&e.what, &e.help);
        }
    }
    counts
        .into_iter()
        .map(|((what, help), runs)| Diag {
            source: None,
            inner: Box::new(Unsupported {
                what,
                runs,
                help,
                severity,
            }),
        })
        .collect()
}

/// Every preflight check: capabilities (with the given severity), `init-from` files and data.
pub fn check(
    plans: &[Plan],
    device_flag: Option<&str>,
    capability: Severity,
) -> (Datasets, Vec<Diag>) {
    let mut diags = capabilities(plans, device_flag, capability);
    diags.extend(check_init_from(plans));
    let (datasets, data) = load_data(plans, capability);
    diags.extend(data);
    diags.extend(super::budgets::check(plans, &datasets));
    (datasets, diags)
}
