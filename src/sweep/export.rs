//! What a finished run leaves for other tools, in their formats: a LoRA run's adapter in PEFT's
//! layout (`adapter/adapter_model.safetensors` under PEFT's tensor names and
//! `adapter/adapter_config.json`, which `PeftModel.from_pretrained` loads), with `merge` also
//! the merged model as an HF directory (`merged/`); a fully fine-tuned HF model as an HF
//! directory again (`model/`: config.json, model.safetensors and the tokenizer's files); any
//! other model as `model.safetensors` (every parameter by its PyTorch/HF name).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::Path;

use candle_core::Tensor;
use serde_json::{Value, json};

use crate::model::lora::{self, PEFT_PREFIX};
use crate::model::{Built, hf, llama};
use crate::spec::{self, RunSpec};
use crate::sweep::record::{RunDir, atomic};

/// The files of an HF model directory besides config.json and the weights, copied with it.
const TOKENIZER_FILES: [&str; 8] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
];

/// Writes a trained model into its run directory, as the module doc says.
pub fn save(run: &RunDir, spec: &RunSpec, built: &Built) -> io::Result<()> {
    let tensors: BTreeMap<String, Tensor> = built
        .params
        .iter()
        .map(|p| (p.name.clone(), p.var.as_tensor().clone()))
        .collect();
    let dir = match &spec.model {
        spec::Model::Llama(spec::LlamaSource::Dir(path)) => {
            Some(hf::ModelDir::open(path).map_err(io::Error::other)?)
        }
        _ => None,
    };
    let Some(lora_spec) = &spec.lora else {
        return match &dir {
            Some(dir) => write_hf_dir(&run.model_dir(), dir, &tensors, false),
            None => write_safetensors(&run.model_file(), &tensors),
        };
    };
    let (adapter, base): (BTreeMap<_, _>, BTreeMap<_, _>) = tensors
        .into_iter()
        .partition(|(name, _)| lora::is_adapter(name));
    let config = match (&dir, &spec.model) {
        (Some(dir), _) => dir.config.clone(),
        (None, spec::Model::Llama(spec::LlamaSource::Dims(d))) => llama::Config::from_dims(d, 1),
        _ => llama::Config::default(),
    };
    let base_path = dir
        .as_ref()
        .map(|d| std::fs::canonicalize(&d.path).unwrap_or_else(|_| d.path.clone()));
    std::fs::create_dir_all(run.adapter()).map_err(atomic::at(&run.adapter()))?;
    let adapter_config = adapter_config(lora_spec, &config, &adapter, base_path.as_deref());
    write_json(&run.adapter_config(), &adapter_config)?;
    write_safetensors(&run.adapter_model(), &adapter)?;
    if dir.is_none() {
        // A model from dimensions has no directory to load the base from: it is saved here.
        write_safetensors(&run.model_file(), &base)?;
    }
    if lora_spec.merge {
        let merged =
            merge(&base, &adapter, lora::scale(lora_spec), &config).map_err(io::Error::other)?;
        let untied = config.tie_embeddings && merged.contains_key("lm_head.weight");
        match &dir {
            Some(dir) => write_hf_dir(&run.merged(), dir, &merged, untied)?,
            None => write_safetensors(&run.merged_file(), &merged)?,
        }
    }
    Ok(())
}

/// PEFT's adapter_config.json for the adapters that were trained.
fn adapter_config(
    spec: &spec::Lora,
    config: &llama::Config,
    adapter: &BTreeMap<String, Tensor>,
    base: Option<&Path>,
) -> Value {
    let adapted: BTreeSet<&str> = adapter
        .keys()
        .filter_map(|n| lora::adapted_module(n))
        .collect();
    let number = |x: f64| {
        if x.fract() == 0.0 && x.abs() < 1e15 {
            json!(x as i64)
        } else {
            json!(x)
        }
    };
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base.map(|p| p.display().to_string()),
        "revision": null,
        "r": spec.rank,
        "lora_alpha": number(spec.alpha),
        "lora_dropout": spec.dropout,
        "use_rslora": spec.rslora,
        "target_modules": target_modules(&adapted, &config.linear_modules()),
        "bias": "none",
        "fan_in_fan_out": false,
        "modules_to_save": null,
        "init_lora_weights": true,
        "inference_mode": true,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": false,
        "lora_bias": false,
    })
}

/// PEFT's `target_modules` for exactly the adapted modules: the list of their last names
/// where those name no other module (PEFT matches a list by name ends), else a regular
/// expression PEFT matches against whole module names.
fn target_modules(adapted: &BTreeSet<&str>, modules: &[String]) -> Value {
    let leaf = |m: &str| m.rsplit('.').next().unwrap_or(m).to_owned();
    let leaves: BTreeSet<String> = adapted.iter().map(|m| leaf(m)).collect();
    let covered = modules
        .iter()
        .filter(|m| leaves.contains(&leaf(m)))
        .all(|m| adapted.contains(m.as_str()));
    if covered {
        return json!(leaves);
    }
    let names: Vec<String> = adapted.iter().map(|m| m.replace('.', "\\.")).collect();
    json!(format!("({})", names.join("|")))
}

/// The base weights with every adapter merged in: W + s · B A (PEFT's `merge_and_unload`).
fn merge(
    base: &BTreeMap<String, Tensor>,
    adapter: &BTreeMap<String, Tensor>,
    scale: f64,
    config: &llama::Config,
) -> candle_core::Result<BTreeMap<String, Tensor>> {
    let mut out = base.clone();
    for (name, a) in adapter {
        let Some(module) = name
            .strip_prefix(PEFT_PREFIX)
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        let Some(b) = adapter.get(&format!("{PEFT_PREFIX}{module}.lora_B.weight")) else {
            continue;
        };
        let weight = format!("{module}.weight");
        let w = match base.get(&weight) {
            Some(w) => w,
            // A tied lm_head: the merged head is the embedding plus the update, untied.
            None if module == "lm_head" && config.tie_embeddings => base
                .get("model.embed_tokens.weight")
                .ok_or_else(|| candle_core::Error::Msg("no embedding to merge into".into()))?,
            None => continue,
        };
        let merged = (w + (b.matmul(a)? * scale)?)?;
        out.insert(weight, merged);
    }
    Ok(out)
}

/// An HF model directory: the source's config.json (float32 now, untied when asked), the
/// weights, and the source's tokenizer files.
fn write_hf_dir(
    out: &Path,
    source: &hf::ModelDir,
    tensors: &BTreeMap<String, Tensor>,
    untie: bool,
) -> io::Result<()> {
    std::fs::create_dir_all(out).map_err(atomic::at(out))?;
    let mut config = source.config_json.clone();
    for key in ["torch_dtype", "dtype"] {
        if config.contains_key(key) {
            config.insert(key.into(), json!("float32"));
        }
    }
    if !config.contains_key("torch_dtype") && !config.contains_key("dtype") {
        config.insert("dtype".into(), json!("float32"));
    }
    if untie {
        config.insert("tie_word_embeddings".into(), json!(false));
    }
    write_json(&out.join("config.json"), &Value::Object(config))?;
    write_safetensors(&out.join("model.safetensors"), tensors)?;
    for name in TOKENIZER_FILES {
        let from = source.path.join(name);
        if from.is_file() {
            let bytes = std::fs::read(&from).map_err(atomic::at(&from))?;
            atomic::write(&out.join(name), &bytes)?;
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    atomic::write(path, &bytes)
}

/// Tensors by name as a safetensors file, atomically, with the `format: pt` metadata that
/// transformers and PEFT write.
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, Tensor>) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(atomic::at(dir))?;
    }
    let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let bytes = safetensors::serialize(tensors.iter(), Some(metadata)).map_err(io::Error::other)?;
    atomic::write_with(path, |file| file.write_all(&bytes))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
            .map_err(atomic::at(path))?;
    }
    Ok(())
}
