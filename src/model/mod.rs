//! Models: structs built from a candle `VarBuilder` whose parameters carry the PyTorch/HF names
//! of DESIGN.md §3, so PyTorch reads what xp writes and the reverse. Parameters are created by
//! a parameter store: from an `init-from` file when it has the name, else initialised exactly as
//! PyTorch/HF would, from xp's own seeded generator (one stream per parameter name). A model
//! from an HF directory starts from the directory's weights; with LoRA the base parameters
//! freeze and only the adapters train.

pub mod hf;
pub mod llama;
pub mod lora;
pub(crate) mod mlp;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result as CandleResult, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, var_builder::SimpleBackend};
use thiserror::Error;

use crate::data::{Dataset, Task};
use crate::rng::Rng;
use crate::spec::{self, RunSpec};

/// A trainable network: inputs of a batch → outputs (predictions, or logits (B, T, V)).
pub trait Model: Send + Sync {
    fn forward(&self, inputs: &Tensor, mode: &mut Mode) -> CandleResult<Tensor>;
}

/// Training or evaluation, with the randomness dropout draws from and the dtype linear layers
/// compute in.
pub struct Mode<'a> {
    pub train: bool,
    pub rng: &'a mut Rng,
    /// F32, or BF16/F16 for mixed precision: the matrix products of linear layers (and their
    /// LoRA adapters) run in it over the f32 parameters; everything else stays f32.
    pub compute: DType,
}

/// Inverted dropout with xp's generator: zero with probability p, scale the rest by 1/(1-p).
pub fn dropout(x: &Tensor, p: f64, mode: &mut Mode) -> CandleResult<Tensor> {
    if !mode.train || p <= 0.0 {
        return Ok(x.clone());
    }
    let scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if mode.rng.unit() < p { 0.0 } else { scale })
        .collect();
    x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?)
}

/// One named parameter.
#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    /// Whether weight decay applies (weight matrices; not biases or norm weights).
    pub decay: bool,
    pub trainable: bool,
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.name, self.var.dims())
    }
}

/// A model with its parameters in creation order.
pub struct Built {
    pub model: Box<dyn Model>,
    pub params: Vec<Param>,
}

impl Built {
    pub fn total_params(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    pub fn trainable_params(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.var.elem_count())
            .sum()
    }

    /// Every parameter by name, for saving.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
            .collect()
    }
}

/// Why a model could not be built; recorded as the failing run's reason.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("cannot read `{path}`: {reason}")]
    Unreadable { path: String, reason: String },

    #[error("`{path}` does not match the model: {summary}\n{details}")]
    Mismatch {
        path: String,
        summary: String,
        details: String,
    },

    #[error("building the model failed: {0}")]
    Build(String),

    #[error("{0}")]
    Hf(#[from] hf::HfError),
}

/// Creates parameters for a `VarBuilder`: from loaded tensors when present, else initialised.
struct ParamStore {
    seed: u64,
    loaded: HashMap<String, Tensor>,
    /// With LoRA: every parameter but the adapters is frozen, and the model sees it detached,
    /// so no gradient is computed for it.
    freeze_base: bool,
    created: Mutex<Vec<(String, Var)>>,
    mismatched: Mutex<Vec<String>>,
}

impl SimpleBackend for ParamStore {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> CandleResult<Tensor> {
        let tensor = match self.loaded.get(name) {
            Some(t) if t.shape() == &shape => t.to_dtype(dtype)?.to_device(dev)?,
            Some(t) => {
                if let Ok(mut m) = self.mismatched.lock() {
                    m.push(format!(
                        "`{name}`: file has {:?}, model needs {:?}",
                        t.dims(),
                        shape.dims()
                    ));
                }
                initial(&shape, name, init, self.seed, dtype, dev)?
            }
            None => initial(&shape, name, init, self.seed, dtype, dev)?,
        };
        let var = Var::from_tensor(&tensor)?;
        let out = if self.freeze_base && !lora::is_adapter(name) {
            var.as_tensor().detach()
        } else {
            var.as_tensor().clone()
        };
        if let Ok(mut created) = self.created.lock() {
            created.push((name.to_owned(), var));
        }
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> CandleResult<Tensor> {
        Err(candle_core::Error::CannotFindTensor {
            path: name.to_owned(),
        })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.loaded.contains_key(name)
    }
}

/// PyTorch-style initial values from the parameter's own stream.
fn initial(
    shape: &Shape,
    name: &str,
    init: Init,
    seed: u64,
    dtype: DType,
    dev: &Device,
) -> CandleResult<Tensor> {
    let n = shape.elem_count();
    let mut rng = Rng::stream(seed, &format!("init/{name}"));
    let values: Vec<f32> = match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Randn { mean, stdev } => (0..n)
            .map(|_| (mean + stdev * rng.normal()) as f32)
            .collect(),
        Init::Uniform { lo, up } => (0..n).map(|_| rng.uniform(lo, up) as f32).collect(),
        Init::Kaiming { .. } => {
            let fan_in = shape
                .dims()
                .get(1..)
                .map_or(1, |d| d.iter().product::<usize>())
                .max(1);
            let bound = 1.0 / (fan_in as f64).sqrt();
            (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect()
        }
    };
    Tensor::from_vec(values, shape.clone(), dev)?.to_dtype(dtype)
}

/// The files of an `init-from` path: a .safetensors file; or a directory holding a PEFT adapter
/// (adapter_model.safetensors), model.safetensors, or an HF model's shards.
pub fn init_files(path: &Path) -> Result<Vec<PathBuf>, ModelError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    for name in ["adapter_model.safetensors", "model.safetensors"] {
        if path.join(name).is_file() {
            return Ok(vec![path.join(name)]);
        }
    }
    hf::weight_files(path).map_err(|e| ModelError::Unreadable {
        path: path.display().to_string(),
        reason: match e {
            hf::HfError::Unreadable { reason, .. } => reason,
            other => other.to_string(),
        },
    })
}

/// Reads the tensors of an `init-from` path (see [`init_files`]).
pub fn load_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut out = HashMap::new();
    for file in init_files(path)? {
        let unreadable = |reason: String| ModelError::Unreadable {
            path: file.display().to_string(),
            reason,
        };
        if !file.exists() {
            return Err(unreadable("no such file".into()));
        }
        let tensors =
            candle_core::safetensors::load(&file, device).map_err(|e| unreadable(e.to_string()))?;
        // PEFT saves a copy of the base weight an adapted tied lm_head shares with the
        // embedding (`….lm_head.base_layer.weight`); the base model has it already.
        out.extend(tensors.into_iter().filter(|(name, _)| {
            !(name.starts_with(lora::PEFT_PREFIX) && name.contains(".base_layer."))
        }));
    }
    Ok(out)
}

/// Builds the model of a run for its data. `init` holds `init-from` tensors (empty for none):
/// a model's (over the HF directory's weights, where the model has one) or a PEFT adapter's.
pub fn build(
    spec: &RunSpec,
    data: &Dataset,
    init: HashMap<String, Tensor>,
    strict: bool,
    source: &str,
    device: &Device,
) -> Result<Built, ModelError> {
    let targets = spec
        .lora
        .as_ref()
        .map(lora::Targets::new)
        .transpose()
        .map_err(ModelError::Build)?;
    let dir = match &spec.model {
        spec::Model::Llama(spec::LlamaSource::Dir(path)) => Some(hf::ModelDir::open(path)?),
        _ => None,
    };
    let mut loaded = match &dir {
        Some(dir) => dir.load(device)?,
        None => HashMap::new(),
    };
    let base: BTreeSet<String> = loaded.keys().cloned().collect();
    // An adapter initialises the adapters; any other file the model's own parameters.
    let init_is_adapter = init.keys().any(|n| lora::is_adapter(n));
    let init_names: BTreeSet<String> = init.keys().cloned().collect();
    loaded.extend(init);
    let store = Arc::new(ParamStore {
        seed: spec.seed,
        loaded,
        freeze_base: targets.is_some(),
        created: Mutex::new(Vec::new()),
        mismatched: Mutex::new(Vec::new()),
    });
    let backend: Box<dyn SimpleBackend> = Box::new(SharedStore(Arc::clone(&store)));
    let vb = VarBuilder::from_backend(backend, DType::F32, device.clone());
    let fail = |e: candle_core::Error| ModelError::Build(e.to_string());
    let model: Box<dyn Model> = match (&spec.model, data.task) {
        (spec::Model::Mlp(m), Task::Regression { outputs }) => {
            Box::new(mlp::Mlp::new(vb, m, data.input_width(), outputs).map_err(fail)?)
        }
        (spec::Model::Mlp(m), Task::Classification { classes }) => {
            Box::new(mlp::Mlp::new(vb, m, data.input_width(), classes).map_err(fail)?)
        }
        (spec::Model::Llama(spec::LlamaSource::Dims(dims)), Task::Language { vocab }) => {
            if let Some(smaller) = dims.vocab.filter(|&v| v < vocab) {
                return Err(ModelError::Build(format!(
                    "the model's vocabulary ({smaller}) is smaller than the data's ({vocab})"
                )));
            }
            let config = llama::Config::from_dims(dims, vocab);
            Box::new(llama::Llama::with_lora(vb, &config, targets.as_ref()).map_err(fail)?)
        }
        (spec::Model::Llama(spec::LlamaSource::Dir(_)), Task::Language { vocab }) => {
            let config = dir.as_ref().map(|d| d.config.clone()).unwrap_or_default();
            if vocab != config.vocab {
                return Err(ModelError::Build(format!(
                    "the data's vocabulary ({vocab}) is not the model's ({})",
                    config.vocab
                )));
            }
            Box::new(llama::Llama::with_lora(vb, &config, targets.as_ref()).map_err(fail)?)
        }
        (_, task) => {
            return Err(ModelError::Build(format!(
                "the model does not fit the data's task ({task:?})"
            )));
        }
    };
    let created = store.created.lock().map(|c| c.clone()).unwrap_or_default();
    let mismatched = store
        .mismatched
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let names: BTreeSet<&str> = created.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(dir) = &dir {
        // ModelDir::load checked the directory against its config; this is the model's view.
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !lora::is_adapter(n) && !base.contains(**n) && !init_names.contains(**n))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(ModelError::Mismatch {
                path: dir.path.display().to_string(),
                summary: format!("{} missing", missing.len()),
                details: format!("missing: {}", quoted(&missing)),
            });
        }
    }
    if !init_names.is_empty() || !mismatched.is_empty() {
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| lora::is_adapter(n) == init_is_adapter && !init_names.contains(**n))
            .copied()
            .collect();
        let unexpected: Vec<&str> = init_names
            .iter()
            .filter(|n| !names.contains(n.as_str()))
            .map(String::as_str)
            .collect();
        if !mismatched.is_empty() || (strict && (!missing.is_empty() || !unexpected.is_empty())) {
            let mut parts = Vec::new();
            let mut details = Vec::new();
            for (what, list) in [("missing", &missing), ("unexpected", &unexpected)] {
                if !list.is_empty() {
                    parts.push(format!("{} {what}", list.len()));
                    details.push(format!("{what}: {}", quoted(list)));
                }
            }
            if !mismatched.is_empty() {
                parts.push(format!("{} mis-shaped", mismatched.len()));
                details.push(format!(
                    "mis-shaped: {}",
                    mismatched
                        .iter()
                        .take(8)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
            let hint = if init_is_adapter && spec.lora.is_none() {
                "\nthe file is a LoRA adapter: give the experiment a matching `lora`"
            } else {
                ""
            };
            return Err(ModelError::Mismatch {
                path: source.to_owned(),
                summary: parts.join(", "),
                details: details.join("\n") + hint,
            });
        }
    }
    let frozen = targets.is_some();
    let params = created
        .into_iter()
        .map(|(name, var)| {
            let decay = var.rank() >= 2;
            let trainable = !frozen || lora::is_adapter(&name);
            Param {
                name,
                var,
                decay,
                trainable,
            }
        })
        .collect();
    Ok(Built { model, params })
}

/// The first names of a list, quoted.
fn quoted(names: &[&str]) -> String {
    let shown: Vec<String> = names.iter().take(8).map(|n| format!("`{n}`")).collect();
    let more = if names.len() > 8 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// The store behind the `VarBuilder`, shared so `build` can read what was created.
struct SharedStore(Arc<ParamStore>);

impl SimpleBackend for SharedStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> CandleResult<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> CandleResult<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// [`linear`] computed in `compute`, the result in x's dtype: with f32 inputs and a 16-bit
/// `compute`, mixed precision as torch.autocast runs a Linear. The casts have a backward, so
/// f32 parameters get f32 gradients.
pub fn linear_in(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    compute: DType,
) -> CandleResult<Tensor> {
    if x.dtype() == compute && w.dtype() == compute {
        return linear(x, w, b);
    }
    let b = b.map(|b| b.to_dtype(compute)).transpose()?;
    linear(&x.to_dtype(compute)?, &w.to_dtype(compute)?, b.as_ref())?.to_dtype(x.dtype())
}

/// `x @ w.T` (+ b) for x (…, in) and w (out, in), as torch.nn.Linear. A frozen `w` (one that
/// is not tracked: LoRA's base) gets no gradient and costs none ([`crate::ops::frozen_linear`]).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> CandleResult<Tensor> {
    let dims = x.dims().to_vec();
    let (inner, rows) = (
        dims[dims.len() - 1],
        dims[..dims.len() - 1].iter().product::<usize>(),
    );
    let y = crate::ops::frozen_linear(&x.reshape((rows, inner))?, w)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.dim(0)?;
    y.reshape(out)
}
