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
                compute: DType::F32,
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

/// The training loss of every step, as the loop reports it, and the loss scale where it has one.
#[derive(Default)]
struct Curve {
    loss: Vec<f64>,
    loss_scale: Vec<f64>,
    skipped: f64,
}

impl xp::train::Sink for Curve {
    fn event(&mut self, event: &xp::train::Event) -> std::io::Result<()> {
        if let xp::train::Event::Metrics { metrics, .. } = event {
            if let Some(l) = metrics.get("train/loss") {
                self.loss.push(*l);
            }
            if let Some(s) = metrics.get("train/loss_scale") {
                self.loss_scale.push(*s);
            }
            if let Some(s) = metrics.get("train/skipped_steps") {
                self.skipped = *s;
            }
        }
        Ok(())
    }
}

/// Mixed precision on the CPU through the library: the linear layers computing in bf16 (or f16
/// with loss scaling) over f32 parameters follow the f32 loss curve of the same run, and the
/// parameters stay f32.
#[test]
fn mixed_precision_tracks_the_f32_loss_curve() {
    let checked = xp::front::validate_text(
        "mixed.kdl",
        r#"experiment "mixed" {
    seed 3
    model "llama" {
        layers 2; heads 4; dim 64; context 8
    }
    data "modular-addition" modulus=23 train-fraction=0.6
    train {
        steps 60
        batch-size 64
        optimizer "adamw" lr=3e-3 weight-decay=0.1
        log every=1
    }
}"#,
    );
    let spec = &checked.plans[0].runs[0].config;
    let text = xp::data::ModelText {
        context: Some(8),
        tokenizer: None,
    };
    let data = xp::data::load_for(&spec.data, spec.seed, &text).expect("the data loads");
    let cpu = Device::Cpu;
    let run = |compute: DType| {
        let built = model::build(spec, &data, HashMap::new(), true, "", &cpu).expect("builds");
        let mut curve = Curve::default();
        let control = xp::train::Control::default();
        let outcome = xp::train::train_in(spec, &data, &built, &cpu, &mut curve, control, compute)
            .expect("trains");
        assert_eq!(outcome.ending, xp::train::Ending::Completed, "{compute:?}");
        for p in &built.params {
            assert_eq!(
                p.var.dtype(),
                DType::F32,
                "{compute:?}: {} is not f32",
                p.name
            );
        }
        curve
    };
    let f32 = run(DType::F32);
    let first = f32.loss[0];
    let last = f32.loss[f32.loss.len() - 1];
    assert!(last < 0.8 * first, "f32 does not learn: {first} → {last}");
    assert!(f32.loss_scale.is_empty(), "f32 has no loss scale");
    for compute in [DType::BF16, DType::F16] {
        let half = run(compute);
        assert_eq!(half.loss.len(), f32.loss.len(), "{compute:?}");
        // Loose: 16-bit products change every step's rounding, and the runs drift apart.
        let worst = half
            .loss
            .iter()
            .zip(&f32.loss)
            .map(|(h, f)| (h - f).abs() / f)
            .fold(0.0, f64::max);
        eprintln!("{compute:?}: largest relative difference of the loss curve {worst:.4}");
        assert!(worst < 0.15, "{compute:?} leaves the f32 curve by {worst}");
        assert!(
            worst > 0.0,
            "{compute:?} gave the f32 curve exactly: not 16-bit"
        );
        let mean: f64 = half
            .loss
            .iter()
            .zip(&f32.loss)
            .map(|(h, f)| (h - f).abs() / f)
            .sum::<f64>()
            / f32.loss.len() as f64;
        assert!(mean < 0.05, "{compute:?}: mean relative difference {mean}");
        if compute == DType::F16 {
            assert_eq!(
                half.loss_scale.len(),
                half.loss.len(),
                "the scale is logged"
            );
            eprintln!(
                "f16: {} steps skipped, final scale {:?}",
                half.skipped,
                half.loss_scale.last()
            );
        } else {
            assert!(half.loss_scale.is_empty(), "bf16 has no loss scale");
        }
    }
}

#[test]
fn the_loss_scale_skips_overflowing_steps_and_grows_back() {
    let mut scale = xp::train::LossScale::new();
    assert_eq!(scale.scale, 65536.0);
    let mut grads = vec![Some(vec![65536.0f32, -131072.0]), None];
    assert!(scale.unscale(&mut grads), "finite gradients are a step");
    assert_eq!(grads[0], Some(vec![1.0, -2.0]), "unscaled");
    let mut overflowed = vec![Some(vec![f32::INFINITY, 1.0])];
    assert!(
        !scale.unscale(&mut overflowed),
        "an overflow skips the step"
    );
    assert_eq!(
        (scale.scale, scale.skipped, scale.good_steps),
        (32768.0, 1, 0)
    );
    let mut nan = vec![Some(vec![f32::NAN])];
    assert!(!scale.unscale(&mut nan));
    assert_eq!((scale.scale, scale.skipped), (16384.0, 2));
    for _ in 0..1999 {
        assert!(scale.unscale(&mut [Some(vec![1.0])]));
    }
    assert_eq!(scale.scale, 16384.0, "not yet 2000 finite steps in a row");
    assert!(scale.unscale(&mut [Some(vec![1.0])]));
    assert_eq!(
        (scale.scale, scale.good_steps),
        (32768.0, 0),
        "2000 finite steps double it"
    );
}

/// A LoRA step's backward forms no gradient for the frozen base: the gradient store holds the
/// adapters' gradients and no tensor shaped like a base weight or its transpose (candle's
/// matmul backward would leave a `dW` of every frozen linear layer's transposed weight there).
#[test]
fn lora_backward_forms_no_base_weight_gradient() {
    let text = r#"experiment "t" {
    model "llama" { layers 2; heads 4; dim 32; hidden 48; context 64; vocab 20 }
    lora rank=4 alpha=8 { targets "q_proj" "v_proj" "down_proj" "lm_head"; }
    data "copy" length=5 vocab=16 samples=64
    train { batch-size 3; optimizer "adamw" lr=0.01; }
}"#;
    let checked = xp::front::validate_text("t.kdl", text);
    let spec = &checked.plans[0].runs[0].config;
    let data = xp::data::load(&spec.data, spec.seed, Some(64)).expect("data");
    let device = Device::Cpu;
    let built = model::build(spec, &data, HashMap::new(), true, "", &device).expect("model");
    let batch = data.batch(&data.train, &[0, 1, 2], &device).expect("batch");
    let logits = built
        .model
        .forward(
            &batch.inputs,
            &mut Mode {
                train: true,
                rng: &mut Rng::new(0),
                compute: DType::F32,
            },
        )
        .expect("forward");
    let vocab = logits.dims()[2];
    let store = logits
        .reshape(((), vocab))
        .and_then(|l| ops::cross_entropy(&l, &batch.targets.flatten_all()?))
        .and_then(|l| l.backward())
        .expect("backward");
    let (adapters, base): (Vec<_>, Vec<_>) = built.params.iter().partition(|p| p.trainable);
    assert_eq!(adapters.len(), 2 * (2 * 3 + 1), "A and B of 7 modules");
    for p in &adapters {
        assert!(
            store.get(p.var.as_tensor()).is_some(),
            "{} has a gradient",
            p.name
        );
    }
    let mut frozen: Vec<Vec<usize>> = Vec::new();
    for p in &base {
        let dims = p.var.dims().to_vec();
        frozen.push(dims.iter().rev().copied().collect());
        frozen.push(dims);
    }
    let stored: Vec<Vec<usize>> = store
        .get_ids()
        .filter_map(|id| store.get_id(*id))
        .map(|g| g.dims().to_vec())
        .collect();
    let base_shaped: Vec<&Vec<usize>> = stored.iter().filter(|d| frozen.contains(d)).collect();
    assert!(
        base_shaped.is_empty(),
        "gradients shaped like base weights: {base_shaped:?} (all: {stored:?})"
    );
}
