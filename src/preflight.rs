//! Preflight: everything `xp run` can check before training starts. Each distinct dataset is
//! loaded once (file errors point at their line), and every run is checked against what this
//! binary can do (devices, features). `xp validate` runs it too, with capability problems as
//! warnings, so the same file is judged the same way by both commands.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, Severity};

use crate::data::{self, Dataset};
use crate::diagnostic::Diag;
use crate::plan::Plan;
use crate::spec::{BatchSize, Device, Llama, Model, Precision, RunSpec};

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
    format!(
        "{}#{seed}#{:?}",
        serde_json::to_string(&spec.data.source).unwrap_or_default(),
        context(spec)
    )
}

/// The sequence length data is cut to: the model's context.
fn context(spec: &RunSpec) -> Option<usize> {
    match &spec.model {
        Model::Llama(Llama::Dims(d)) => Some(d.context),
        _ => None,
    }
}

/// Loads every distinct dataset of the plans; one diagnostic per distinct failure.
pub fn load_data(plans: &[Plan]) -> (Datasets, Vec<Diag>) {
    let mut out = Datasets::default();
    let mut diags = Vec::new();
    let mut failed: BTreeMap<String, ()> = BTreeMap::new();
    for run in plans.iter().flat_map(|p| &p.runs) {
        let key = data_key(&run.config);
        if out.by_key.contains_key(&key) {
            continue;
        }
        let seed = run.config.data.seed.unwrap_or(run.config.seed);
        match data::load(&run.config.data, seed, context(&run.config)) {
            Ok(dataset) => {
                out.by_key.insert(key, Arc::new(dataset));
            }
            Err(e) => {
                let text = format!("{}{e}", e.code().map(|c| c.to_string()).unwrap_or_default());
                if failed.insert(text, ()).is_none() {
                    diags.push(Diag {
                        source: None,
                        inner: Box::new(e),
                    });
                }
            }
        }
    }
    (out, diags)
}

/// An `init-from` file that cannot be used.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("cannot use `{path}` for init-from: {reason}")]
#[diagnostic(
    code("xp::run::init-from"),
    help("init-from takes a .safetensors file, or a directory holding model.safetensors")
)]
pub struct InitFrom {
    path: String,
    reason: String,
}

/// Checks that every `init-from` file exists and is a readable safetensors file (its header;
/// the tensors are matched against the model when the run starts).
pub fn check_init_from(plans: &[Plan]) -> Vec<Diag> {
    let mut checked = std::collections::BTreeSet::new();
    let mut diags = Vec::new();
    for spec in plans.iter().flat_map(|p| p.runs.iter().map(|r| &r.config)) {
        let Some(init) = &spec.init_from else {
            continue;
        };
        let file = if init.path.is_dir() {
            init.path.join("model.safetensors")
        } else {
            init.path.clone()
        };
        if !checked.insert(file.clone()) {
            continue;
        }
        let reason = match std::fs::read(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("no such file".to_owned()),
            Err(e) => Some(e.to_string()),
            Ok(bytes) if bytes.starts_with(b"PK") => Some(
                "it is a PyTorch zip archive, not safetensors; convert it with `safetensors.torch.save_file`".to_owned(),
            ),
            Ok(bytes) => safetensors::SafeTensors::read_metadata(&bytes).err().map(|_| "it is not a safetensors file".to_owned()),
        };
        if let Some(reason) = reason {
            diags.push(Diag {
                source: None,
                inner: Box::new(InitFrom {
                    path: file.display().to_string(),
                    reason,
                }),
            });
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

/// Where runs train: the experiment's device unless `--device` says otherwise.
pub fn device_of(spec: &RunSpec, flag: Option<&str>) -> String {
    match flag {
        Some(d) => d.to_owned(),
        None => match spec.device {
            Device::Auto | Device::Cpu => "cpu".into(),
            Device::Cuda(None) => "cuda".into(),
            Device::Cuda(Some(i)) => format!("cuda:{i}"),
        },
    }
}

/// The precision a run computes in on this device, and a warning when it falls back.
pub fn precision_of(spec: &RunSpec, device: &str) -> (&'static str, Option<String>) {
    match (spec.precision, device) {
        (Precision::Auto | Precision::F32, _) => ("f32", None),
        (Precision::Bf16 | Precision::F16, "cpu") => (
            "f32",
            Some(
                format!(
                    "{:?} was requested; the CPU computes in f32",
                    spec.precision
                )
                .to_lowercase(),
            ),
        ),
        (Precision::Bf16, _) => ("bf16", None),
        (Precision::F16, _) => ("f16", None),
    }
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
        let device = device_of(spec, device_flag);
        if device != "cpu" {
            missing(
                &format!("device `{device}` needs a CUDA build of xp"),
                "this xp was built without CUDA; build with `--features cuda`, or use `--device cpu`",
            );
        }
        if spec.lora.is_some() {
            missing(
                "`lora` adapters are not supported by this version of xp",
                "train without `lora` (full fine-tuning) for now",
            );
        }
        if spec.train.checkpoint.is_some() {
            missing(
                "`checkpoint` is not supported by this version of xp",
                "remove `checkpoint`; the final model is always saved",
            );
        }
        if spec.regression.is_some() {
            missing(
                "`regression` gates are not supported by this version of xp",
                "remove `regression` for now",
            );
        }
        if spec.train.batch_size == BatchSize::Auto {
            missing(
                "`batch-size \"auto\"` is not supported by this version of xp",
                "give a batch size",
            );
        }
        if let Model::Llama(Llama::Dir(_)) = spec.model {
            missing(
                "HF model directories (`model \"llama\" path=…`) are not supported by this version of xp",
                "give the model's dimensions",
            );
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
    let (datasets, data) = load_data(plans);
    diags.extend(data);
    (datasets, diags)
}
