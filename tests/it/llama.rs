//! xp's Llama replays HF transformers' LlamaForCausalLM: the same weights give the same logits,
//! loss and gradients (tests/reference/llama.py).

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use serde::Deserialize;
use xp::model::{self, Mode, Model, llama};
use xp::ops;
use xp::rng::Rng;

use super::ops::{DEEP, Error, LOSS, flat};
use super::support::root;

/// Written by tests/reference/llama.py (transformers' LlamaForCausalLM, float32, eager
/// attention) with the weights in tests/fixtures/models/: logits, the mean cross-entropy, some
/// gradients in full and every gradient's L2 norm.
const REFERENCE: &str = include_str!("../reference/llama.json");

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    weights: String,
    config: ConfigJson,
    tokens: Vec<Vec<u32>>,
    targets: Vec<Vec<i64>>,
    logits: Vec<f32>,
    loss: f32,
    grads: BTreeMap<String, Vec<f32>>,
    grad_norms: BTreeMap<String, f32>,
}

#[derive(Deserialize)]
struct ConfigJson {
    vocab: usize,
    dim: usize,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    context: usize,
    rope_theta: f64,
    rms_eps: f64,
    tie_embeddings: bool,
}

impl From<&ConfigJson> for llama::Config {
    fn from(c: &ConfigJson) -> Self {
        llama::Config {
            vocab: c.vocab,
            dim: c.dim,
            hidden: c.hidden,
            layers: c.layers,
            heads: c.heads,
            kv_heads: c.kv_heads,
            context: c.context,
            rope_theta: c.rope_theta,
            rms_eps: c.rms_eps,
            tie_embeddings: c.tie_embeddings,
            ..llama::Config::default()
        }
    }
}

fn report(case: &str, what: &str, e: Error, tol: super::ops::Tolerance) {
    super::ops::report(case, what, e, tol, "HF");
}

fn check(name: &str) {
    let reference: Reference =
        serde_json::from_str(REFERENCE).expect("tests/reference/llama.json parses");
    let case = reference
        .cases
        .iter()
        .find(|c| c.name == name)
        .expect("the case is in tests/reference/llama.json");
    let cpu = Device::Cpu;

    // Every tensor of the file as a Var, so gradients reach it.
    let loaded = model::load_weights(&root().join(&case.weights), &cpu).expect("the fixture loads");
    let vars: BTreeMap<String, Var> = loaded
        .into_iter()
        .map(|(n, t)| (n, Var::from_tensor(&t).expect("a Var")))
        .collect();
    let tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    let config = llama::Config::from(&case.config);
    let llama = llama::Llama::new(VarBuilder::from_tensors(tensors, DType::F32, &cpu), &config)
        .expect("the model builds");

    let (b, t) = (case.tokens.len(), case.tokens[0].len());
    let tokens = Tensor::new(case.tokens.concat().as_slice(), &cpu)
        .and_then(|x| x.reshape((b, t)))
        .expect("tokens");
    let targets = Tensor::new(case.targets.concat().as_slice(), &cpu).expect("targets");
    let mut rng = Rng::new(0);
    let logits = llama
        .forward(
            &tokens,
            &mut Mode {
                train: false,
                rng: &mut rng,
            },
        )
        .expect("forward");
    assert_eq!(logits.dims(), [b, t, config.vocab], "{name}: logits shape");
    report(
        name,
        "logits",
        Error::of(&flat(&logits), &case.logits, DEEP),
        DEEP,
    );

    let loss = logits
        .reshape((b * t, config.vocab))
        .and_then(|l| ops::cross_entropy(&l, &targets))
        .expect("loss");
    report(
        name,
        "loss",
        Error::of(&flat(&loss), &[case.loss], LOSS),
        LOSS,
    );

    let grads = loss.backward().expect("backward");
    let grad = |param: &str| {
        let var = vars
            .get(param)
            .unwrap_or_else(|| panic!("{name}: the fixture has no `{param}`"));
        grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient reaches `{param}`"))
            .clone()
    };
    for (param, want) in &case.grads {
        report(
            name,
            &format!("d/d{param}"),
            Error::of(&flat(&grad(param)), want, DEEP),
            DEEP,
        );
    }
    let names: Vec<&String> = vars.keys().collect();
    assert_eq!(
        names,
        case.grad_norms.keys().collect::<Vec<_>>(),
        "{name}: the fixture's parameters are HF's"
    );
    let mut norms = Error::default();
    for (param, &want) in &case.grad_norms {
        let got = grad(param)
            .sqr()
            .and_then(|g| g.sum_all())
            .and_then(|s| s.sqrt())
            .expect("norm");
        let e = Error::of(&flat(&got), &[want], DEEP);
        assert!(
            e.ok(),
            "{name}: |d/d{param}| differs from HF: {e} ({DEEP:?})"
        );
        norms = Error {
            abs: norms.abs.max(e.abs),
            rel: norms.rel.max(e.rel),
            ratio: norms.ratio.max(e.ratio),
        };
    }
    eprintln!("{name}: every gradient's norm {norms}");
}

#[test]
fn untied_matches_hf() {
    check("tiny-llama");
}

#[test]
fn tied_matches_hf() {
    check("tiny-llama-tied");
}
