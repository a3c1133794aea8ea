//! The optimizers replay PyTorch: every case of tests/reference/optimizers.py, step by step, and
//! their state survives a checkpoint bit for bit.

use std::collections::BTreeMap;

use serde::Deserialize;
use xp::spec;
use xp::train::optim::{self, Optimizer};

/// Written by tests/reference/optimizers.py (torch.optim's CPU single-tensor optimizers and
/// lucidrains' Lion, float32): inputs, the parameters after each step, the final state.
const REFERENCE: &str = include_str!("../reference/optimizers.json");

#[derive(Deserialize)]
struct Reference {
    decay: Vec<bool>,
    initial: Vec<Vec<f32>>,
    /// Per step, per parameter.
    grads: Vec<Vec<Vec<f32>>>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    optimizer: spec::OptimizerConfig,
    lrs: Vec<f64>,
    /// Per step, per parameter: the values after that step.
    params: Vec<Vec<Vec<f32>>>,
    /// torch's `optimizer.state`, as `{index}.{buffer}`; `step` is torch's one float.
    state: BTreeMap<String, Vec<f32>>,
    /// The same case with a correctly rounded float32 `sqrt`, after the last step.
    #[serde(rename = "exact-sqrt")]
    exact_sqrt: Final,
}

#[derive(Deserialize)]
struct Final {
    params: Vec<Vec<f32>>,
    state: BTreeMap<String, Vec<f32>>,
}

fn reference() -> Reference {
    serde_json::from_str(REFERENCE).expect("tests/reference/optimizers.json parses")
}

fn kind(case: &Case) -> &'static str {
    match case.optimizer.kind {
        spec::OptimizerKind::Sgd(_) => "sgd",
        spec::OptimizerKind::Adam(_) => "adam",
        spec::OptimizerKind::Adamw(_) => "adamw",
        spec::OptimizerKind::Rmsprop(_) => "rmsprop",
        spec::OptimizerKind::Adagrad(_) => "adagrad",
        spec::OptimizerKind::Lion(_) => "lion",
    }
}

/// Runs steps `steps` of `case` on `params`.
fn run(
    r: &Reference,
    case: &Case,
    opt: &mut dyn Optimizer,
    params: &mut [Vec<f32>],
    steps: std::ops::Range<usize>,
) {
    for step in steps {
        for (index, param) in params.iter_mut().enumerate() {
            let grad = &r.grads[step][index];
            opt.update(index, param, grad, case.lrs[step], r.decay[index]);
        }
    }
}

fn close(got: f32, want: f32) -> bool {
    (got - want).abs() <= 1e-7 + 1e-6 * want.abs()
}

/// Largest absolute and relative differences, and how many values differ at all.
#[derive(Default, Debug)]
struct Error {
    abs: f32,
    rel: f32,
    inexact: usize,
    values: usize,
}

impl Error {
    fn add(&mut self, got: f32, want: f32) {
        let abs = (got - want).abs();
        self.abs = self.abs.max(abs);
        self.rel = self.rel.max(abs / want.abs().max(f32::MIN_POSITIVE));
        self.inexact += usize::from(got.to_bits() != want.to_bits());
        self.values += 1;
    }
}

#[test]
fn every_case_matches_pytorch_step_by_step() {
    let r = reference();
    let mut failures = Vec::new();
    let mut errors: BTreeMap<&str, Error> = BTreeMap::new();
    for case in &r.cases {
        let mut opt = optim::build(&case.optimizer);
        let mut params = r.initial.clone();
        for step in 0..case.lrs.len() {
            run(&r, case, opt.as_mut(), &mut params, step..step + 1);
            for (index, (got, want)) in params.iter().zip(&case.params[step]).enumerate() {
                assert_eq!(got.len(), want.len());
                for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
                    errors.entry(kind(case)).or_default().add(g, w);
                    if !close(g, w) {
                        failures.push(format!(
                            "{}: step {}, parameter {index}[{k}]: {g} but PyTorch {w}",
                            case.name,
                            step + 1
                        ));
                    }
                }
            }
        }
    }
    eprintln!("difference from PyTorch per kind: {errors:#?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(errors.len(), 6, "every kind has a case");
}

/// PyTorch's float32 `sqrt` on CPU is MKL's where MKL is built in, and not correctly rounded;
/// with a correctly rounded one every kind matches PyTorch exactly.
#[test]
fn every_case_matches_pytorch_bit_for_bit_with_a_correctly_rounded_sqrt() {
    let r = reference();
    for case in &r.cases {
        let mut opt = optim::build(&case.optimizer);
        let mut params = r.initial.clone();
        run(&r, case, opt.as_mut(), &mut params, 0..case.lrs.len());
        for (index, (got, want)) in params.iter().zip(&case.exact_sqrt.params).enumerate() {
            assert_eq!(
                to_bits(got),
                to_bits(want),
                "{}: parameter {index}",
                case.name
            );
        }
        let state = torch_state(&opt.state());
        assert_eq!(
            bits_map(&state),
            bits_map(&case.exact_sqrt.state),
            "{}",
            case.name
        );
    }
}

/// Our state as torch names it: the step as torch's one float (the first limb, for short runs).
fn torch_state(state: &[(String, Vec<f32>)]) -> BTreeMap<String, Vec<f32>> {
    (state.iter())
        .map(|(name, values)| match name.ends_with(".step") {
            true => {
                assert_eq!(values[1..], [0.0, 0.0], "{name}");
                (name.clone(), values[..1].to_vec())
            }
            false => (name.clone(), values.clone()),
        })
        .collect()
}

fn bits_map(state: &BTreeMap<String, Vec<f32>>) -> BTreeMap<&str, Vec<u32>> {
    (state.iter())
        .map(|(name, values)| (name.as_str(), to_bits(values)))
        .collect()
}

#[test]
fn final_state_matches_pytorch() {
    let r = reference();
    for case in &r.cases {
        let mut opt = optim::build(&case.optimizer);
        let mut params = r.initial.clone();
        run(&r, case, opt.as_mut(), &mut params, 0..case.lrs.len());
        let state = torch_state(&opt.state());
        let names: Vec<&String> = state.keys().collect();
        assert_eq!(
            names,
            case.state.keys().collect::<Vec<_>>(),
            "{}",
            case.name
        );
        for (name, want) in &case.state {
            let got = &state[name];
            assert_eq!(got.len(), want.len(), "{}: {name}", case.name);
            // Relative to the buffer's scale: RMSprop's momentum buffer sums terms of its
            // largest size, each carrying PyTorch's sqrt error.
            let scale = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
            for (&g, &w) in got.iter().zip(want) {
                assert!(
                    (g - w).abs() <= 1e-7 + 1e-6 * scale,
                    "{}: {name}: {g} but PyTorch {w}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn a_restored_optimizer_continues_bit_identically() {
    let r = reference();
    for case in &r.cases {
        let steps = case.lrs.len();
        let mut straight = optim::build(&case.optimizer);
        let mut expected = r.initial.clone();
        run(&r, case, straight.as_mut(), &mut expected, 0..steps);
        for split in 0..=steps {
            let mut first = optim::build(&case.optimizer);
            let mut params = r.initial.clone();
            run(&r, case, first.as_mut(), &mut params, 0..split);
            let mut second = optim::build(&case.optimizer);
            second.load_state(&first.state()).unwrap();
            assert_eq!(bits(&second.state()), bits(&first.state()));
            run(&r, case, second.as_mut(), &mut params, split..steps);
            let got: Vec<Vec<u32>> = params.iter().map(|p| to_bits(p)).collect();
            let want: Vec<Vec<u32>> = expected.iter().map(|p| to_bits(p)).collect();
            assert!(got == want, "{}: restored after step {split}", case.name);
            assert_eq!(
                bits(&second.state()),
                bits(&straight.state()),
                "{}: restored after step {split}",
                case.name
            );
        }
    }
}

fn to_bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn bits(state: &[(String, Vec<f32>)]) -> Vec<(String, Vec<u32>)> {
    state
        .iter()
        .map(|(name, values)| (name.clone(), to_bits(values)))
        .collect()
}

fn adam(amsgrad: bool) -> Box<dyn Optimizer> {
    optim::build(&spec::OptimizerConfig {
        lr: 1e-3,
        decay_all: false,
        kind: spec::OptimizerKind::Adam(spec::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            amsgrad,
            weight_decay: 0.0,
        }),
    })
}

fn named(state: &[(&str, Vec<f32>)]) -> Vec<(String, Vec<f32>)> {
    state
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect()
}

#[test]
fn load_state_names_every_bad_buffer_and_keeps_the_old_state() {
    let mut opt = adam(false);
    opt.update(0, &mut [1.0, 2.0], &[0.5, -0.5], 1e-3, true);
    let before = bits(&opt.state());
    let bad = named(&[
        ("0.step", vec![1.0, 0.0, 0.0]),
        ("0.exp_avg", vec![0.0; 3]),
        ("0.exp_avg_sq", vec![0.0; 2]),
        ("0.max_exp_avg_sq", vec![0.0; 3]),
        ("0.momentum_buffer", vec![0.0; 3]),
        ("1.exp_avg", vec![0.0; 3]),
        ("1.step", vec![1.5, 0.0, 0.0]),
        ("step", vec![1.0, 0.0, 0.0]),
        ("x.exp_avg", vec![0.0; 3]),
    ]);
    let err = opt.load_state(&bad).unwrap_err();
    for name in [
        "`0.exp_avg_sq` has 2 values but `0.exp_avg` has 3",
        "`0.max_exp_avg_sq`",
        "`0.momentum_buffer`",
        "`1.exp_avg_sq` is missing",
        "`1.step` is not a step count",
        "`step`",
        "`x.exp_avg`",
    ] {
        assert!(err.contains(name), "{name} not in: {err}");
    }
    assert!(!err.contains("state `0.exp_avg` has"), "{err}");
    assert!(!err.contains("`1.step` is missing"), "{err}");
    assert_eq!(bits(&opt.state()), before);
}

#[test]
fn load_state_requires_each_buffer_once() {
    let mut opt = adam(true);
    let state = named(&[
        ("2.exp_avg", vec![0.0]),
        ("2.exp_avg", vec![0.0]),
        ("2.exp_avg_sq", vec![0.0]),
    ]);
    let err = opt.load_state(&state).unwrap_err();
    assert!(err.contains("`2.exp_avg` appears twice"), "{err}");
    assert!(err.contains("`2.max_exp_avg_sq` is missing"), "{err}");
    assert!(err.contains("`2.step` is missing"), "{err}");
}

#[test]
fn step_counts_are_kept_exactly_past_float32() {
    let mut opt = adam(false);
    // 2^48 + 2^24·3 + 5: no float32 holds it.
    let step = vec![5.0, 3.0, 1.0];
    let state = named(&[
        ("7.step", step.clone()),
        ("7.exp_avg", vec![0.0]),
        ("7.exp_avg_sq", vec![0.0]),
    ]);
    opt.load_state(&state).unwrap();
    assert_eq!(opt.state()[0], ("7.step".to_string(), step));
    opt.update(7, &mut [1.0], &[1.0], 1e-3, false);
    assert_eq!(opt.state()[0].1, [6.0, 3.0, 1.0]);
    // Each limb is below 2^24 (the last below 2^16), a whole number, not negative.
    for limbs in [
        vec![16_777_216.0, 0.0, 0.0],
        vec![0.0, 0.0, 65_536.0],
        vec![-1.0, 0.0, 0.0],
        vec![0.5, 0.0, 0.0],
        vec![f32::NAN, 0.0, 0.0],
        vec![1.0, 0.0],
    ] {
        let state = named(&[
            ("0.step", limbs.clone()),
            ("0.exp_avg", vec![0.0]),
            ("0.exp_avg_sq", vec![0.0]),
        ]);
        let err = opt.load_state(&state).unwrap_err();
        assert!(err.contains("`0.step`"), "{limbs:?}: {err}");
    }
}

#[test]
fn plain_sgd_keeps_no_state() {
    let mut opt = optim::build(&spec::OptimizerConfig {
        lr: 0.1,
        decay_all: false,
        kind: spec::OptimizerKind::Sgd(spec::Sgd {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }),
    });
    let mut param = [1.0, -1.0];
    opt.update(0, &mut param, &[0.5, 0.25], 0.5, true);
    assert_eq!(param, [0.75, -1.125]);
    assert!(opt.state().is_empty());
    let err = opt
        .load_state(&named(&[("0.momentum_buffer", vec![0.0; 2])]))
        .unwrap_err();
    assert!(err.contains("`0.momentum_buffer`"), "{err}");
}

/// AdamW as one op over a flattened group (the CPU side of kernels/adamw.cu) gives the
/// optimizer's own bits, with and without decay, step after step.
#[test]
fn flattened_adamw_step_is_the_optimizer_bit_for_bit() {
    use candle_core::{Device, Tensor};
    let (beta1, beta2, eps, weight_decay) = (0.9, 0.95, 1e-8, 0.1);
    let spec = spec::OptimizerConfig {
        lr: 1e-3,
        decay_all: false,
        kind: spec::OptimizerKind::Adamw(spec::Adam {
            beta1,
            beta2,
            eps,
            amsgrad: false,
            weight_decay,
        }),
    };
    let n = 257;
    let value = |i: usize, seed: f32| ((i as f32 + seed) * 12.9898).sin() * 0.5;
    for decay in [true, false] {
        let mut opt = optim::build(&spec);
        let mut param: Vec<f32> = (0..n).map(|i| value(i, 1.0)).collect();
        let mut state_values = param.clone();
        state_values.extend(std::iter::repeat_n(0.0, 2 * n));
        let state = Tensor::from_vec(state_values, (3, n), &Device::Cpu).expect("state");
        for step in 1..=5u64 {
            let grad: Vec<f32> = (0..n).map(|i| value(i, 10.0 * step as f32)).collect();
            let lr = 1e-3 * step as f64;
            opt.update(0, &mut param, &grad, lr, decay);
            let g = Tensor::from_vec(grad, n, &Device::Cpu).expect("grad");
            optim::AdamwStep {
                beta1,
                beta2,
                eps,
                weight_decay,
                step,
                lr,
                decay,
            }
            .apply(&state, &g)
            .expect("the step applies");
            let got = state
                .get(0)
                .and_then(|p| p.to_vec1::<f32>())
                .expect("params");
            assert_eq!(got, param, "decay {decay}, step {step}");
        }
        let saved: BTreeMap<String, Vec<f32>> = opt.state().into_iter().collect();
        let rows = state.to_vec2::<f32>().expect("state");
        assert_eq!(rows[1], saved["0.exp_avg"], "decay {decay}");
        assert_eq!(rows[2], saved["0.exp_avg_sq"], "decay {decay}");
    }
}

#[test]
fn flattened_adamw_step_refuses_bad_input() {
    use candle_core::{Device, Tensor};
    let step = optim::AdamwStep {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        step: 1,
        lr: 1e-3,
        decay: true,
    };
    let state = Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu).expect("state");
    let short = Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).expect("grad");
    assert!(step.apply(&state, &short).is_err());
    let grad = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).expect("grad");
    assert!(
        optim::AdamwStep { step: 0, ..step }
            .apply(&state, &grad)
            .is_err()
    );
    step.apply(&state, &grad)
        .expect("a zero gradient is a step");
}
