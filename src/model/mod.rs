//! Models: structs built from a candle `VarBuilder` whose parameters carry the PyTorch/HF names
//! of DESIGN.md §3, so PyTorch reads what xp writes and the reverse. Parameters are created by
//! a parameter store: from an `init-from` file when it has the name, else initialised exactly as
//! PyTorch/HF would, from xp's own seeded generator (one stream per parameter name).

pub mod llama;
pub mod mlp;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result as CandleResult, Shape, Tensor, Var};
use candle_nn::{Init, VarBuilder, var_builder::SimpleBackend};
use thiserror::Error;

use crate::data::{Dataset, Task};
use crate::rng::Rng;
use crate::spec::{self, RunSpec};

/// A trainable network: inputs of a batch → outputs (predictions, or logits (B, T, V)).
pub trait Model: Send {
    fn forward(&self, inputs: &Tensor, mode: &mut Mode) -> CandleResult<Tensor>;
}

/// Training or evaluation, with the randomness dropout draws from.
pub struct Mode<'a> {
    pub train: bool,
    pub rng: &'a mut Rng,
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
}

/// Creates parameters for a `VarBuilder`: from loaded tensors when present, else initialised.
struct ParamStore {
    seed: u64,
    loaded: HashMap<String, Tensor>,
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
        let out = var.as_tensor().clone();
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

/// Reads the tensors of an `init-from` path: a .safetensors file, or a directory with
/// model.safetensors.
pub fn load_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let file = if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    let unreadable = |reason: String| ModelError::Unreadable {
        path: file.display().to_string(),
        reason,
    };
    if !file.exists() {
        return Err(unreadable("no such file".into()));
    }
    candle_core::safetensors::load(&file, device).map_err(|e| unreadable(e.to_string()))
}

/// Builds the model of a run for its data. `init` holds `init-from` tensors (empty for none).
pub fn build(
    spec: &RunSpec,
    data: &Dataset,
    init: HashMap<String, Tensor>,
    strict: bool,
    source: &str,
    device: &Device,
) -> Result<Built, ModelError> {
    let store = Arc::new(ParamStore {
        seed: spec.seed,
        loaded: init,
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
        (spec::Model::Llama(spec::Llama::Dims(dims)), Task::Language { vocab }) => {
            Box::new(llama::Llama::new(vb, &llama::Config::from_dims(dims, vocab)).map_err(fail)?)
        }
        (spec::Model::Llama(spec::Llama::Dir(dir)), _) => {
            return Err(ModelError::Build(format!(
                "loading HF model directories ({}) is not supported by this version of xp",
                dir.display()
            )));
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
    if !store.loaded.is_empty() {
        let names: BTreeMap<&str, ()> = created.iter().map(|(n, _)| (n.as_str(), ())).collect();
        let missing: Vec<&str> = names
            .keys()
            .filter(|n| !store.loaded.contains_key(**n))
            .copied()
            .collect();
        let mut unexpected: Vec<&str> = store
            .loaded
            .keys()
            .filter(|n| !names.contains_key(n.as_str()))
            .map(String::as_str)
            .collect();
        unexpected.sort();
        if !mismatched.is_empty() || (strict && (!missing.is_empty() || !unexpected.is_empty())) {
            let mut parts = Vec::new();
            let mut details = Vec::new();
            for (what, list) in [("missing", &missing), ("unexpected", &unexpected)] {
                if !list.is_empty() {
                    parts.push(format!("{} {what}", list.len()));
                    details.push(format!(
                        "{what}: {}",
                        list.iter()
                            .take(8)
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
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
            return Err(ModelError::Mismatch {
                path: source.to_owned(),
                summary: parts.join(", "),
                details: details.join("\n"),
            });
        }
    }
    let params = created
        .into_iter()
        .map(|(name, var)| {
            let decay = var.rank() >= 2;
            Param {
                name,
                var,
                decay,
                trainable: true,
            }
        })
        .collect();
    Ok(Built { model, params })
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

/// `x @ w.T` (+ b) for x (…, in) and w (out, in), as torch.nn.Linear.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> CandleResult<Tensor> {
    let dims = x.dims().to_vec();
    let (inner, rows) = (
        dims[dims.len() - 1],
        dims[..dims.len() - 1].iter().product::<usize>(),
    );
    let y = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    let last = out.len() - 1;
    out[last] = w.dim(0)?;
    y.reshape(out)
}
