//! xp's differentiable ops replay PyTorch: every case of tests/reference/ops.py, its output and
//! the gradient of a fixed weighting of it with respect to every input.

use candle_core::{DType, Device, Tensor, Var};
use serde::Deserialize;
use xp::ops;

/// Written by tests/reference/ops.py (torch.softmax, F.log_softmax, HF LlamaRMSNorm,
/// F.layer_norm, HF LlamaRotaryEmbedding + apply_rotary_pos_emb, HF repeat_kv +
/// F.scaled_dot_product_attention(is_causal=True), F.silu, F.gelu, F.cross_entropy, F.mse_loss;
/// float32): inputs, the weight w, the output and d((out · w).sum()) / d input.
const REFERENCE: &str = include_str!("../reference/ops.json");

/// A value matches PyTorch when |got − want| ≤ abs + rel·|want|: float32 noise for one op.
const OP: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-5,
};

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Values {
    shape: Vec<usize>,
    data: Vec<f32>,
}

#[derive(Deserialize)]
struct Input {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
    grad: Vec<f32>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    op: String,
    inputs: Vec<Input>,
    weight: Values,
    output: Values,
    eps: Option<f64>,
    /// rope: the tables' theta and length, and HF's tables (context, head_dim).
    theta: Option<f64>,
    context: Option<usize>,
    cos: Option<Values>,
    sin: Option<Values>,
    /// Cross-entropy: the class of each row, -100 for none; and how many count.
    targets: Option<Vec<i64>>,
    count: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

/// The largest absolute and relative differences, and the largest as a fraction of the
/// tolerance (over 1 fails).
#[derive(Default, Clone, Copy, Debug)]
pub struct Error {
    pub abs: f32,
    pub rel: f32,
    pub ratio: f32,
}

impl Error {
    /// Compares `got` with `want` element by element.
    pub fn of(got: &[f32], want: &[f32], tol: Tolerance) -> Error {
        assert_eq!(got.len(), want.len(), "length");
        let mut e = Error::default();
        for (&g, &w) in got.iter().zip(want) {
            let d = (g - w).abs();
            // A NaN fails: its ratio is infinite.
            let ratio = if d.is_nan() {
                f32::INFINITY
            } else {
                d / (tol.abs + tol.rel * w.abs())
            };
            e.abs = e.abs.max(d);
            if w != 0.0 {
                e.rel = e.rel.max(d / w.abs());
            }
            e.ratio = e.ratio.max(ratio);
        }
        e
    }

    pub fn ok(&self) -> bool {
        self.ratio <= 1.0
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max abs error {:.2e}, max rel error {:.2e} ({:.2} of tolerance)",
            self.abs, self.rel, self.ratio
        )
    }
}

pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("a float32 tensor")
}

fn tensor(v: &Values) -> Tensor {
    Tensor::from_vec(v.data.clone(), v.shape.clone(), &Device::Cpu).expect("shape matches data")
}

/// Runs `case`'s op on `x` (its inputs, in order); checks what it computes on the side (rope's
/// tables, cross-entropy's count) and returns the output.
fn forward(case: &Case, x: &[&Tensor]) -> candle_core::Result<Tensor> {
    let eps = || case.eps.expect("the case has eps");
    match case.op.as_str() {
        "softmax" => ops::softmax(x[0]),
        "log_softmax" => ops::log_softmax(x[0]),
        "rms_norm" => ops::rms_norm(x[0], x[1], eps()),
        "layer_norm" => ops::layer_norm(x[0], x[1], x[2], eps()),
        "rope" => {
            let (t, d) = (x[0].dim(2)?, x[0].dim(3)?);
            let context = case.context.expect("the case has context");
            let theta = case.theta.expect("the case has theta");
            let (cos, sin) = ops::rope_tables(context, d, theta, DType::F32, &Device::Cpu)?;
            for (name, got, want) in [("cos", &cos, &case.cos), ("sin", &sin, &case.sin)] {
                let want = want.as_ref().expect("the case has tables");
                assert_eq!(got.dims(), want.shape, "{}: {name} table shape", case.name);
                let e = Error::of(&flat(got), &want.data, OP);
                eprintln!("{}: {name} table {e}", case.name);
                assert!(
                    e.ok(),
                    "{}: the {name} table differs from HF's: {e}",
                    case.name
                );
            }
            ops::rope(x[0], &cos.narrow(0, 0, t)?, &sin.narrow(0, 0, t)?)
        }
        "causal_attention" => ops::causal_attention(x[0], x[1], x[2]),
        "silu" => ops::silu(x[0]),
        "gelu" => ops::gelu(x[0]),
        "swiglu" => ops::swiglu(x[0], x[1]),
        "cross_entropy" | "cross_entropy_sum" => {
            let targets = case.targets.clone().expect("the case has targets");
            let targets = Tensor::new(targets.as_slice(), &Device::Cpu)?;
            if case.op == "cross_entropy" {
                return ops::cross_entropy(x[0], &targets);
            }
            let (sum, count) = ops::cross_entropy_sum(x[0], &targets)?;
            assert_eq!(Some(count), case.count, "{}: counted targets", case.name);
            Ok(sum)
        }
        "squared_error_sum" => ops::squared_error_sum(x[0], x[1]),
        other => panic!("{}: no op `{other}` in xp::ops", case.name),
    }
}

/// Every case of `op`: output and input gradients within tolerance of PyTorch's. `--nocapture`
/// shows the errors.
fn check(op: &str) {
    let reference: Reference =
        serde_json::from_str(REFERENCE).expect("tests/reference/ops.json parses");
    let cases: Vec<&Case> = reference.cases.iter().filter(|c| c.op == op).collect();
    assert!(
        !cases.is_empty(),
        "tests/reference/ops.json has no case for `{op}`"
    );
    for case in cases {
        let vars: Vec<Var> = case
            .inputs
            .iter()
            .map(|i| {
                Var::from_vec(i.data.clone(), i.shape.clone(), &Device::Cpu)
                    .expect("shape matches data")
            })
            .collect();
        let xs: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let out = forward(case, &xs).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(out.dims(), case.output.shape, "{}: output shape", case.name);
        let mut errors = vec![(
            "output".to_owned(),
            Error::of(&flat(&out), &case.output.data, OP),
        )];

        let loss = out
            .mul(&tensor(&case.weight))
            .and_then(|l| l.sum_all())
            .expect("weighting");
        let grads = loss.backward().expect("backward");
        for (input, var) in case.inputs.iter().zip(&vars) {
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{}: no gradient reaches `{}`", case.name, input.name));
            assert_eq!(
                grad.dims(),
                input.shape,
                "{}: d/d{} shape",
                case.name,
                input.name
            );
            errors.push((
                format!("d/d{}", input.name),
                Error::of(&flat(grad), &input.grad, OP),
            ));
        }
        for (what, e) in &errors {
            eprintln!("{}: {what} {e}", case.name);
        }
        for (what, e) in errors {
            assert!(
                e.ok(),
                "{}: {what} differs from PyTorch: {e} ({OP:?})",
                case.name
            );
        }
    }
}

#[test]
fn softmax() {
    check("softmax");
}

#[test]
fn log_softmax() {
    check("log_softmax");
}

#[test]
fn rms_norm() {
    check("rms_norm");
}

#[test]
fn layer_norm() {
    check("layer_norm");
}

#[test]
fn rope() {
    check("rope");
}

#[test]
fn causal_attention() {
    check("causal_attention");
}

#[test]
fn silu() {
    check("silu");
}

#[test]
fn gelu() {
    check("gelu");
}

#[test]
fn swiglu() {
    check("swiglu");
}

#[test]
fn cross_entropy() {
    check("cross_entropy");
}

#[test]
fn cross_entropy_sum() {
    check("cross_entropy_sum");
}

#[test]
fn squared_error_sum() {
    check("squared_error_sum");
}
