//! HF model directories, LoRA and chat data against transformers and PEFT: the tiny Llama and
//! Qwen2 directories, adapters and values written by tests/reference/hf.py (hf.json); and, when
//! a Python with peft is at hand, PEFT and transformers loading what `xp run` writes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde::Deserialize;
use xp::data::tokenizer::HfTokenizer;
use xp::data::{self, Examples, ModelText};
use xp::model::{self, Mode, Model, hf, llama, lora};
use xp::ops;
use xp::rng::Rng;
use xp::spec::{Data, DataSource, Lora, Validation};

use super::ops::{DEEP, Error, LOSS, flat};
use super::support::{root, stderr, succeeded, xp};

/// Written by tests/reference/hf.py (transformers 5 and PEFT, float32, eager attention).
const REFERENCE: &str = include_str!("../reference/hf.json");

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    tokens: Vec<Vec<u32>>,
    targets: Vec<Vec<i64>>,
    logits: Vec<f32>,
    lora_logits: Vec<f32>,
    lora_loss: f32,
    lora_grads: BTreeMap<String, Vec<f32>>,
    trainable_params: usize,
    total_params: usize,
    chat: Vec<Example>,
    training: Option<Training>,
}

#[derive(Deserialize)]
struct Example {
    inputs: Vec<u32>,
    targets: Vec<i64>,
}

#[derive(Deserialize)]
struct Training {
    loss: Vec<f64>,
    grad_norm: Vec<f64>,
    adapter: BTreeMap<String, Vec<f32>>,
}

fn case(name: &str) -> Case {
    let reference: Reference =
        serde_json::from_str(REFERENCE).expect("tests/reference/hf.json parses");
    reference
        .cases
        .into_iter()
        .find(|c| c.name == name)
        .expect("the case is in tests/reference/hf.json")
}

fn models() -> PathBuf {
    root().join("tests/fixtures/models")
}

/// The LoRA settings hf.py gave PEFT, as an experiment writes them (globs for the Qwen2 one).
fn lora_of(name: &str) -> Lora {
    let (alpha, rslora, targets): (f64, bool, &[&str]) = match name {
        "tiny-llama-hf" => (8.0, false, &["q_proj", "v_proj", "down_proj"]),
        _ => (
            6.0,
            true,
            &["*.self_attn.k_proj", "o_proj", "*.mlp.gate_*", "lm_head"],
        ),
    };
    Lora {
        rank: 4,
        alpha,
        dropout: 0.0,
        rslora,
        merge: false,
        targets: targets.iter().map(|t| t.to_string()).collect(),
    }
}

/// The model of a directory (with an adapter's tensors and LoRA settings), every tensor a
/// Var so gradients reach it.
fn build(
    dir: &Path,
    adapter: Option<&Path>,
    lora: Option<&Lora>,
) -> (llama::Llama, BTreeMap<String, Var>) {
    let cpu = Device::Cpu;
    let d = hf::ModelDir::open(dir).expect("the model directory opens");
    let mut tensors = d.load(&cpu).expect("its weights load");
    if let Some(adapter) = adapter {
        tensors.extend(model::load_weights(adapter, &cpu).expect("the adapter loads"));
    }
    let vars: BTreeMap<String, Var> = tensors
        .into_iter()
        .map(|(n, t)| (n, Var::from_tensor(&t).expect("a Var")))
        .collect();
    let map: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let targets = lora.map(|l| lora::Targets::new(l).expect("the targets are globs"));
    let m = llama::Llama::with_lora(
        VarBuilder::from_tensors(map, DType::F32, &cpu),
        &d.config,
        targets.as_ref(),
    )
    .expect("the model builds");
    (m, vars)
}

fn logits(m: &llama::Llama, tokens: &[Vec<u32>]) -> Tensor {
    let (b, t) = (tokens.len(), tokens[0].len());
    let input = Tensor::new(tokens.concat().as_slice(), &Device::Cpu)
        .and_then(|x| x.reshape((b, t)))
        .expect("tokens");
    let mut rng = Rng::new(0);
    m.forward(
        &input,
        &mut Mode {
            train: false,
            rng: &mut rng,
            compute: DType::F32,
        },
    )
    .expect("forward")
}

fn report(case: &str, what: &str, e: Error, tol: super::ops::Tolerance) {
    super::ops::report(case, what, e, tol, "transformers/PEFT");
}

fn logits_match(name: &str) {
    let c = case(name);
    let (m, _) = build(&models().join(name), None, None);
    let got = logits(&m, &c.tokens);
    report(
        name,
        "logits",
        Error::of(&flat(&got), &c.logits, DEEP),
        DEEP,
    );
}

#[test]
fn an_hf_llama_directory_gives_transformers_logits() {
    logits_match("tiny-llama-hf");
}

/// Attention biases, tied embeddings, a sliding window on one layer.
#[test]
fn an_hf_qwen2_directory_gives_transformers_logits() {
    logits_match("tiny-qwen2-hf");
}

fn lora_matches(name: &str) {
    let c = case(name);
    let adapter = models().join(format!("{name}-adapter"));
    let spec = lora_of(name);
    let (m, vars) = build(&models().join(name), Some(&adapter), Some(&spec));
    let out = logits(&m, &c.tokens);
    report(
        name,
        "LoRA logits",
        Error::of(&flat(&out), &c.lora_logits, DEEP),
        DEEP,
    );
    let vocab = out.dim(2).expect("vocab");
    let targets = Tensor::new(c.targets.concat().as_slice(), &Device::Cpu).expect("targets");
    let loss = out
        .reshape(((), vocab))
        .and_then(|l| ops::cross_entropy(&l, &targets))
        .expect("loss");
    report(
        name,
        "loss",
        Error::of(&flat(&loss), &[c.lora_loss], LOSS),
        LOSS,
    );
    let grads = loss.backward().expect("backward");
    let adapters: Vec<&String> = vars.keys().filter(|n| lora::is_adapter(n)).collect();
    assert_eq!(
        adapters,
        c.lora_grads.keys().collect::<Vec<_>>(),
        "{name}: xp's adapters are PEFT's"
    );
    let mut worst = Error::default();
    for (param, want) in &c.lora_grads {
        let g = grads
            .get(vars[param].as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient reaches `{param}`"));
        let e = Error::of(&flat(g), want, DEEP);
        assert!(
            e.ok(),
            "{name}: d/d{param} differs from PEFT: {e} ({DEEP:?})"
        );
        worst = Error {
            abs: worst.abs.max(e.abs),
            rel: worst.rel.max(e.rel),
            ratio: worst.ratio.max(e.ratio),
        };
    }
    eprintln!("{name}: every adapter gradient {worst}");
}

#[test]
fn lora_on_an_hf_llama_gives_peft_logits_loss_and_gradients() {
    lora_matches("tiny-llama-hf");
}

/// rsLoRA, globs, and an adapter on the tied lm_head.
#[test]
fn lora_on_an_hf_qwen2_gives_peft_logits_loss_and_gradients() {
    lora_matches("tiny-qwen2-hf");
}

fn chat_matches(name: &str) {
    let c = case(name);
    let dir = models().join(name);
    let config = hf::ModelDir::open(&dir).expect("opens").config;
    let tokenizer = HfTokenizer::open(&dir, config.vocab)
        .expect("the tokenizer loads")
        .expect("the directory has one");
    let valid = root().join("tests/fixtures/chat/valid.jsonl");
    let spec = Data {
        seed: None,
        source: DataSource::Jsonl {
            path: valid.clone(),
            prompt_field: "prompt".into(),
            response_field: "response".into(),
            messages_field: "messages".into(),
            validation: Validation::File(valid),
            shuffle: false,
            packing: false,
        },
    };
    let model = ModelText {
        context: Some(config.context),
        tokenizer: Some(std::sync::Arc::new(tokenizer)),
    };
    let data = data::load_for(&spec, 0, &model).expect("the data loads");
    let Examples::Tokens { inputs, targets } = &data.train else {
        panic!("token data");
    };
    assert_eq!(inputs.len(), c.chat.len());
    for (i, want) in c.chat.iter().enumerate() {
        assert_eq!(inputs[i], want.inputs, "{name}: line {} inputs", i + 1);
        assert_eq!(targets[i], want.targets, "{name}: line {} targets", i + 1);
    }
}

/// Llama 2's template (bos_token, `.strip()`, raise_exception) and prompt/response lines with a
/// BOS-adding tokenizer.
#[test]
fn chat_data_for_the_llama_is_tokenized_as_transformers_does() {
    chat_matches("tiny-llama-hf");
}

/// A ChatML template with a default system prompt and `{% generation %}` blocks.
#[test]
fn chat_data_for_the_qwen2_is_tokenized_as_transformers_does() {
    chat_matches("tiny-qwen2-hf");
}

/// Runs a fixture experiment of tests/fixtures/hf/ into `runs`; its run directory.
fn run(runs: &Path, experiment: &str) -> PathBuf {
    let file = root()
        .join("tests/fixtures/hf")
        .join(format!("{experiment}.kdl"));
    let out = xp(
        &root(),
        &[
            "run",
            file.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
            "-q",
        ],
    );
    succeeded(&out);
    runs.join(experiment).join("current").join("seed=3")
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("JSON")
}

#[test]
fn lora_training_on_chat_data_follows_peft_step_by_step() {
    let c = case("tiny-llama-hf");
    let want = c.training.expect("the llama case trains");
    let runs = tempfile::tempdir().unwrap();
    let dir = run(runs.path(), "lora-llama");
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), want.loss.len());
    let mut worst = 0.0f64;
    for (i, row) in rows.iter().enumerate() {
        for (key, value) in [
            ("train/loss", want.loss[i]),
            ("train/grad_norm", want.grad_norm[i]),
        ] {
            let got = row[key].as_f64().unwrap();
            let rel = (got - value).abs() / value.abs();
            worst = worst.max(rel);
            assert!(rel < 1e-4, "step {}: {key} {got}, PEFT {value}", i + 1);
        }
    }
    eprintln!("lora-llama: largest relative error of loss and grad norm {worst:.2e}");

    // print_trainable_parameters' counts.
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["params"]["trainable"], c.trainable_params);
    assert_eq!(summary["params"]["total"], c.total_params);

    // The adapter after three steps, in PEFT's layout.
    let adapter =
        candle_core::safetensors::load(dir.join("adapter/adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(
        adapter.keys().collect::<std::collections::BTreeSet<_>>(),
        want.adapter.keys().collect(),
        "the adapter's tensors are PEFT's"
    );
    for (name, values) in &want.adapter {
        let e = Error::of(&flat(&adapter[name]), values, DEEP);
        assert!(e.ok(), "{name} after training differs from PEFT's: {e}");
    }
    let config = read_json(&dir.join("adapter/adapter_config.json"));
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8);
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["down_proj", "q_proj", "v_proj"])
    );
    let base = PathBuf::from(config["base_model_name_or_path"].as_str().unwrap());
    assert_eq!(base, models().join("tiny-llama-hf").canonicalize().unwrap());
    // merge=#true: the merged model as an HF directory; the base is not copied.
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
    ] {
        assert!(dir.join("merged").join(file).is_file(), "merged/{file}");
    }
    assert!(!dir.join("model.safetensors").exists());
}

/// The adapter xp trained, merged by xp and applied by xp, give the same logits; a fully
/// fine-tuned HF model is saved as an HF directory.
#[test]
fn merged_and_fully_fine_tuned_models_are_hf_directories() {
    let runs = tempfile::tempdir().unwrap();
    let lora_run = run(runs.path(), "lora-llama");
    let tokens = case("tiny-llama-hf").tokens;
    let spec = lora_of("tiny-llama-hf");
    let (adapted, _) = build(
        &models().join("tiny-llama-hf"),
        Some(&lora_run.join("adapter")),
        Some(&spec),
    );
    let (merged, _) = build(&lora_run.join("merged"), None, None);
    let e = Error::of(
        &flat(&logits(&merged, &tokens)),
        &flat(&logits(&adapted, &tokens)),
        DEEP,
    );
    report("lora-llama", "merged against adapted logits", e, DEEP);

    let full = run(runs.path(), "full-qwen2");
    let tensors =
        candle_core::safetensors::load(full.join("model/model.safetensors"), &Device::Cpu).unwrap();
    assert!(
        !tensors.contains_key("lm_head.weight"),
        "tied, as save_pretrained writes it"
    );
    let config = read_json(&full.join("model/config.json"));
    assert_eq!(config["model_type"], "qwen2");
    assert_eq!(config["dtype"], "float32");
    let (m, _) = build(&full.join("model"), None, None);
    let (base, _) = build(&models().join("tiny-qwen2-hf"), None, None);
    let moved = Error::of(
        &flat(&logits(&m, &tokens)),
        &flat(&logits(&base, &tokens)),
        DEEP,
    );
    assert!(!moved.ok(), "two steps of training change the model");
}

/// The Python that has torch, transformers and peft (`XP_REFERENCE_PYTHON`, default
/// `python3`), or why there is none.
fn reference_python() -> Result<String, String> {
    let python = std::env::var("XP_REFERENCE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args(["-c", "import torch, transformers, peft"])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(python),
        Ok(o) => Err(format!(
            "`{python}` cannot import torch, transformers and peft: {}",
            stderr(&o).lines().last().unwrap_or("")
        )),
        Err(e) => Err(format!("`{python}` does not run: {e}")),
    }
}

#[test]
#[ignore = "needs torch, transformers, peft; scripts/peer-tests.sh runs it"]
fn peft_and_transformers_load_what_xp_writes() {
    let python = reference_python()
        .unwrap_or_else(|why| panic!("{why} (set XP_REFERENCE_PYTHON to a Python with them)"));
    let runs = tempfile::tempdir().unwrap();
    let lora_run = run(runs.path(), "lora-llama");
    let full = run(runs.path(), "full-qwen2");
    let tokens = case("tiny-llama-hf").tokens;
    let request = serde_json::json!({
        "tokens": tokens,
        "adapter": lora_run.join("adapter"),
        "merged": lora_run.join("merged"),
        "model": full.join("model"),
    });
    let mut child = Command::new(&python)
        .arg(root().join("tests/reference/peft_check.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(request.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "peft_check.py failed:\n{}",
        stderr(&out)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let values = |key: &str| -> Vec<f32> {
        answer[key]
            .as_array()
            .unwrap_or_else(|| panic!("no `{key}` logits"))
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    let spec = lora_of("tiny-llama-hf");
    let (adapted, _) = build(
        &models().join("tiny-llama-hf"),
        Some(&lora_run.join("adapter")),
        Some(&spec),
    );
    let ours = flat(&logits(&adapted, &tokens));
    report(
        "PeftModel.from_pretrained",
        "logits",
        Error::of(&values("adapter"), &ours, DEEP),
        DEEP,
    );
    report(
        "merged/",
        "logits",
        Error::of(&values("merged"), &ours, DEEP),
        DEEP,
    );
    let (m, _) = build(&full.join("model"), None, None);
    let ours = flat(&logits(&m, &tokens));
    report(
        "model/",
        "logits",
        Error::of(&values("model"), &ours, DEEP),
        DEEP,
    );
}

/// A model directory in a temp dir with this config.json (and a weights file that is not read).
fn config_dir(config: serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"").unwrap();
    dir
}

fn base_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "llama", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-6
    })
}

fn with(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn config_error(config: serde_json::Value) -> String {
    let dir = config_dir(config);
    match hf::ModelDir::open(dir.path()) {
        Ok(_) => panic!("the config is accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn older_configs_and_other_families_are_read() {
    let dir = config_dir(with(
        base_config(),
        serde_json::json!({"rope_theta": 500000.0, "rope_scaling": {"type": "linear", "factor": 2.0}, "attention_bias": true, "mlp_bias": true, "head_dim": 16}),
    ));
    let c = hf::ModelDir::open(dir.path()).unwrap().config;
    assert_eq!(c.rope_theta, 500000.0);
    assert_eq!(c.rope_scaling, llama::RopeScaling::Linear { factor: 2.0 });
    assert!(c.qkv_bias && c.o_bias && c.mlp_bias);
    assert_eq!(c.head_dim(), 16);
    assert!(
        c.parameters()
            .iter()
            .any(|(n, s)| n == "model.layers.1.self_attn.o_proj.bias" && s == &[32])
    );

    let dir = config_dir(with(
        base_config(),
        serde_json::json!({"model_type": "mistral", "sliding_window": 8}),
    ));
    let c = hf::ModelDir::open(dir.path()).unwrap().config;
    assert_eq!(c.windows, vec![Some(8), Some(8)]);
    assert!(!c.qkv_bias);

    let dir = config_dir(with(
        base_config(),
        serde_json::json!({"model_type": "qwen2", "sliding_window": 8, "use_sliding_window": false}),
    ));
    let c = hf::ModelDir::open(dir.path()).unwrap().config;
    assert!(c.windows.iter().all(Option::is_none), "{:?}", c.windows);
    assert!(c.qkv_bias && !c.o_bias);
}

#[test]
fn what_xp_cannot_read_in_a_config_is_said() {
    for (extra, message) in [
        (
            serde_json::json!({"model_type": "gemma"}),
            "model_type `gemma` is not supported",
        ),
        (
            serde_json::json!({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}),
            "RoPE scaling `yarn` is not supported",
        ),
        (
            serde_json::json!({"hidden_size": "32"}),
            "`hidden_size` must be a non-negative integer",
        ),
        (
            serde_json::json!({"quantization_config": {"bits": 4}}),
            "quantized weights",
        ),
        (
            serde_json::json!({"hidden_act": "gelu"}),
            "hidden_act `gelu`",
        ),
        (
            serde_json::json!({"num_key_value_heads": 3}),
            "3 key/value heads do not divide 4",
        ),
    ] {
        let e = config_error(with(base_config(), extra));
        assert!(e.contains(message), "{e}");
    }
    let mut missing = base_config();
    missing.as_object_mut().unwrap().remove("vocab_size");
    assert!(config_error(missing).contains("config.json has no `vocab_size`"));
}

/// The parameter list preflight checks files against is the one the model creates.
#[test]
fn the_checked_parameters_are_the_models() {
    for (tie, bias) in [(false, false), (true, true)] {
        let c = llama::Config {
            vocab: 16,
            dim: 8,
            hidden: 12,
            layers: 2,
            heads: 2,
            kv_heads: 1,
            context: 8,
            rope_theta: 10000.0,
            rms_eps: 1e-5,
            tie_embeddings: tie,
            qkv_bias: bias,
            o_bias: bias,
            mlp_bias: bias,
            ..Default::default()
        };
        let names = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = Recorder(std::sync::Arc::clone(&names));
        let vb = VarBuilder::from_backend(Box::new(recorder), DType::F32, Device::Cpu);
        llama::Llama::new(vb, &c).expect("builds");
        let created = names.lock().unwrap().clone();
        assert_eq!(created, c.parameters());
    }
}

/// Names and shapes seen, shared with the test.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<usize>)>>>;

struct Recorder(Seen);

impl candle_nn::var_builder::SimpleBackend for Recorder {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .unwrap()
            .push((name.to_owned(), s.dims().to_vec()));
        Tensor::zeros(s, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        Err(candle_core::Error::CannotFindTensor { path: name.into() })
    }
    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// A model directory with the tiny Qwen2's tokenizer and the chat template `template`.
fn chat_dir(template: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = models().join("tiny-qwen2-hf");
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(from.join(name), dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("chat_template.jinja"), template).unwrap();
    dir
}

/// The chat data of `lines` as the model of `dir` reads it.
fn chat_data(dir: &Path, lines: &str) -> Result<data::Dataset, data::DataError> {
    let tokenizer = HfTokenizer::open(dir, 320)
        .expect("opens")
        .expect("has one");
    let path = dir.join("t.jsonl");
    std::fs::write(&path, lines).unwrap();
    let spec = Data {
        seed: None,
        source: DataSource::Jsonl {
            path,
            prompt_field: "prompt".into(),
            response_field: "response".into(),
            messages_field: "messages".into(),
            validation: Validation::Fraction(0.0),
            shuffle: false,
            packing: false,
        },
    };
    let model = ModelText {
        context: Some(128),
        tokenizer: Some(std::sync::Arc::new(tokenizer)),
    };
    data::load_for(&spec, 0, &model)
}

const TWO_TURNS: &str = r#"{"messages": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}, {"role": "user", "content": "And 4?"}, {"role": "assistant", "content": "7"}]}"#;

/// With `{% generation %}` blocks, the assistant turns are what they write, as transformers'
/// assistant mask (TRL's assistant-only loss) has them: here, as in TRL's Qwen2.5 training
/// template, the newline after `<|im_start|>assistant` is learned.
#[test]
fn generation_blocks_mark_the_learned_text_as_transformers_masks_it() {
    let dir = chat_dir(
        r#"{%- for message in messages %}
    {%- if message['role'] == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- generation %}
        {{- '\n' + message['content'] + '<|im_end|>\n' }}
        {%- endgeneration %}
    {%- else %}
        {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"#,
    );
    let d = chat_data(dir.path(), TWO_TURNS).expect("loads");
    let Examples::Tokens { inputs, targets } = &d.train else {
        panic!("token data");
    };
    // transformers 5 `apply_chat_template(..., return_assistant_tokens_mask=True)`, in the
    // format of tests/reference/hf.py's `marked` (203 is the newline, 4 <|im_end|>).
    let want_inputs: Vec<u32> = vec![
        3, 89, 87, 263, 203, 37, 296, 225, 22, 298, 225, 23, 18, 4, 203, 3, 69, 304, 315, 203, 25,
        4, 203, 3, 89, 87, 263, 203, 37, 278, 225, 24, 35, 4, 203, 3, 69, 304, 315, 203, 27, 4,
    ];
    let n = -100;
    let want_targets: Vec<i64> = vec![
        n, n, n, n, n, n, n, n, n, n, n, n, n, n, n, n, n, n, 203, 25, 4, 203, n, n, n, n, n, n, n,
        n, n, n, n, n, n, n, n, n, 203, 27, 4, 203,
    ];
    assert_eq!(inputs[0], want_inputs);
    assert_eq!(targets[0], want_targets);
}

/// A template that renders earlier turns differently once the conversation goes on (phi-3's
/// end token, Qwen3 dropping earlier reasoning) hides where the turns are: those conversations
/// are left out and counted, the others are kept.
#[test]
fn conversations_a_template_cannot_split_are_skipped_and_counted() {
    let dir = chat_dir(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
         {% if add_generation_prompt %}<|im_start|>assistant\n{% else %}</s>{% endif %}",
    );
    let one = r#"{"messages": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]}"#;
    let d = chat_data(dir.path(), &format!("{one}\n{TWO_TURNS}\n{one}\n")).expect("loads");
    assert_eq!(d.skipped, 1);
    assert_eq!(d.train.len(), 2);

    let e = chat_data(dir.path(), TWO_TURNS).expect_err("nothing is left");
    assert!(
        e.to_string().ends_with(
            "has no examples its chat template can split into turns (1 conversation left out)"
        ),
        "{e}"
    );
}

#[test]
fn a_lora_rank_beyond_the_hf_models_width_is_refused_before_training() {
    let model = models().join("tiny-llama-hf");
    let dim = hf::ModelDir::open(&model)
        .expect("the fixture opens")
        .config
        .dim;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = root().join("tests/fixtures/chat/train.jsonl");
    let file = dir.path().join("rank.kdl");
    std::fs::write(
        &file,
        format!(
            "experiment \"rank\" {{\n    model \"llama\" path={:?}\n    lora rank=4 {{ targets \"q_proj\"; }}\n    data \"jsonl\" path={:?}\n    train {{ steps 1; batch-size 4; }}\n}}\n",
            model.display().to_string(),
            data.display().to_string()
        ),
    )
    .expect("experiment written");
    let file = file.to_str().unwrap();
    let output = |args: &[&str]| {
        let out = xp(&root(), args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let at_width = format!("lora.rank={dim}");
    let (code, text) = output(&["validate", file, "--set", &at_width]);
    assert_eq!(code, Some(0), "{text}");
    let too_wide = format!("lora.rank={}", dim * 32);
    let runs = dir.path().join("runs");
    let runs = runs.to_str().unwrap();
    let message = format!("LoRA rank {} is larger than the dimension {dim}", dim * 32);
    for args in [
        vec!["validate", file, "--set", &too_wide],
        vec!["run", file, "--set", &too_wide, "--runs-dir", runs, "-q"],
    ] {
        let (code, text) = output(&args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
        assert!(text.contains(&message), "{args:?}: {text}");
    }
    assert!(!dir.path().join("runs/rank").exists(), "nothing is trained");
}
