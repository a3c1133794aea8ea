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

/// Logits and gradients of a model go through two layers of float32 sums in another order than
/// PyTorch's: 1e-4 either way.
pub const DEEP: Tolerance = Tolerance {
    abs: 1e-4,
    rel: 1e-4,
};
/// A mean loss over a batch.
pub const LOSS: Tolerance = Tolerance {
    abs: 1e-6,
    rel: 1e-5,
};

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

/// Prints a comparison's error and fails when it is out of tolerance; `against` names the peer.
pub fn report(case: &str, what: &str, e: Error, tol: Tolerance, against: &str) {
    eprintln!("{case}: {what} {e}");
    assert!(
        e.ok(),
        "{case}: {what} differs from {against}: {e} ({tol:?})"
    );
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

// The fused float32 CPU kernels against the compositions of candle ops they replace
// (xp::ops::composed), on shapes larger than PyTorch's cases: outputs and gradients agree to
// float32 noise.

/// Deterministic values in [-scale, scale).
fn values(shape: &[usize], seed: f32, scale: f32) -> Var {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| (((i as f32 + seed) * 12.9898).sin() * 43_758.547).fract() * scale)
        .collect::<Vec<f32>>();
    Var::from_vec(data, shape, &Device::Cpu).expect("shape matches data")
}

type Op<'a> = &'a dyn Fn(&[&Tensor]) -> candle_core::Result<Tensor>;

/// `fused` and `composed` on the same inputs: outputs and the gradients of a fixed weighting
/// of them within `OP` of each other.
fn same(name: &str, inputs: &[Var], fused: Op, composed: Op) {
    let xs: Vec<&Tensor> = inputs.iter().map(|v| v.as_tensor()).collect();
    let run = |op: Op| {
        let out = op(&xs).unwrap_or_else(|e| panic!("{name}: {e}"));
        let weight = values(out.dims(), 0.5, 1.0);
        let grads = out
            .mul(weight.as_tensor())
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .unwrap_or_else(|e| panic!("{name}: backward: {e}"));
        let grads: Vec<Vec<f32>> = xs
            .iter()
            .map(|x| flat(grads.get(x).expect("a gradient for every input")))
            .collect();
        (flat(&out), grads)
    };
    let (got, got_grads) = run(fused);
    let (want, want_grads) = run(composed);
    let e = Error::of(&got, &want, OP);
    eprintln!("{name}: output {e}");
    assert!(e.ok(), "{name}: the fused output differs: {e}");
    for (i, (got, want)) in got_grads.iter().zip(&want_grads).enumerate() {
        let e = Error::of(got, want, OP);
        eprintln!("{name}: d/dinput{i} {e}");
        assert!(
            e.ok(),
            "{name}: the fused gradient of input {i} differs: {e}"
        );
    }
}

#[test]
fn fused_softmax_matches_composition() {
    same(
        "softmax",
        &[values(&[3, 5, 37], 1.0, 4.0)],
        &|x| ops::softmax(x[0]),
        &|x| ops::composed::softmax(x[0]),
    );
    // A transposed (non-contiguous) input.
    same(
        "softmax of a transpose",
        &[values(&[2, 11, 6], 2.0, 4.0)],
        &|x| ops::softmax(&x[0].t()?),
        &|x| ops::composed::softmax(&x[0].t()?),
    );
}

#[test]
fn fused_log_softmax_matches_composition() {
    same(
        "log_softmax",
        &[values(&[7, 256], 3.0, 20.0)],
        &|x| ops::log_softmax(x[0]),
        &|x| ops::composed::log_softmax(x[0]),
    );
}

#[test]
fn fused_rms_norm_matches_composition() {
    same(
        "rms_norm",
        &[values(&[2, 9, 24], 4.0, 3.0), values(&[24], 5.0, 1.0)],
        &|x| ops::rms_norm(x[0], x[1], 1e-5),
        &|x| ops::composed::rms_norm(x[0], x[1], 1e-5),
    );
}

#[test]
fn fused_rope_matches_composition() {
    let (cos, sin) = ops::rope_tables(16, 8, 10_000.0, DType::F32, &Device::Cpu).expect("tables");
    let (cos, sin) = (
        cos.narrow(0, 0, 6).expect("rows"),
        sin.narrow(0, 0, 6).expect("rows"),
    );
    same(
        "rope",
        &[values(&[2, 3, 6, 8], 6.0, 2.0)],
        &|x| ops::rope(x[0], &cos, &sin),
        &|x| ops::composed::rope(x[0], &cos, &sin),
    );
    // Heads as a transpose of (B, T, H, D), as attention makes them.
    same(
        "rope of strided heads",
        &[values(&[2, 6, 3, 8], 7.0, 2.0)],
        &|x| ops::rope(&x[0].transpose(1, 2)?, &cos, &sin),
        &|x| ops::composed::rope(&x[0].transpose(1, 2)?, &cos, &sin),
    );
}

/// Attention as the composition: scores plus a -inf mask, then softmax.
fn composed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window: Option<usize>,
) -> candle_core::Result<Tensor> {
    let (_, _, t, d) = q.dims4()?;
    let window = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..t).map(move |j| {
                if j > i || i - j >= window {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu)?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?;
    ops::composed::softmax(&scores.broadcast_add(&mask)?)?.matmul(v)
}

#[test]
fn fused_causal_attention_matches_composition() {
    for window in [None, Some(1), Some(3)] {
        same(
            &format!("causal attention, window {window:?}"),
            &[
                values(&[2, 4, 9, 8], 7.0, 2.0),
                values(&[2, 4, 9, 8], 8.0, 2.0),
                values(&[2, 4, 9, 8], 9.0, 2.0),
            ],
            &|x| ops::causal_attention_windowed(x[0], x[1], x[2], window),
            &|x| composed_attention(x[0], x[1], x[2], window),
        );
    }
}

/// Cross-entropy of each row as log_softmax, gather and mask: the composition the fused op
/// replaces.
fn composed_cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let keep = targets.ne(ops::IGNORE_INDEX)?;
    let safe = keep
        .where_cond(targets, &targets.zeros_like()?)?
        .to_dtype(DType::U32)?;
    let logp = ops::composed::log_softmax(logits)?;
    let picked = logp.gather(&safe.unsqueeze(1)?, 1)?.squeeze(1)?;
    picked.neg()?.mul(&keep.to_dtype(DType::F32)?)
}

#[test]
fn fused_cross_entropy_matches_composition() {
    let targets = Tensor::new(&[3i64, -100, 0, 36, 17, -100, 5], &Device::Cpu).expect("targets");
    same(
        "cross_entropy_rows",
        &[values(&[7, 37], 8.0, 6.0)],
        &|x| ops::cross_entropy_rows(x[0], &targets),
        &|x| composed_cross_entropy_rows(x[0], &targets),
    );
    // Summed as training sums it, through a non-contiguous input.
    same(
        "cross_entropy_rows of a transpose",
        &[values(&[37, 7], 9.0, 6.0)],
        &|x| ops::cross_entropy_rows(&x[0].t()?, &targets)?.sum_all(),
        &|x| composed_cross_entropy_rows(&x[0].t()?, &targets)?.sum_all(),
    );
}

#[test]
fn fused_cross_entropy_marks_targets_outside_the_classes() {
    let logits = values(&[3, 4], 1.0, 2.0);
    let targets = Tensor::new(&[4i64, -1, 2], &Device::Cpu).expect("targets");
    let loss = ops::cross_entropy_rows(logits.as_tensor(), &targets).expect("no error");
    let loss = flat(&loss);
    assert!(loss[0].is_nan() && loss[1].is_nan(), "{loss:?}");
    assert!(loss[2].is_finite(), "{loss:?}");
    // Wrong dtypes and counts are errors, not panics.
    let wrong = Tensor::new(&[1u32, 2, 3], &Device::Cpu).expect("targets");
    assert!(ops::cross_entropy_rows(logits.as_tensor(), &wrong).is_err());
    let short = Tensor::new(&[1i64, 2], &Device::Cpu).expect("targets");
    assert!(ops::cross_entropy_rows(logits.as_tensor(), &short).is_err());
}

#[test]
fn rms_norm_fused_is_the_fused_op() {
    same(
        "rms_norm_fused",
        &[values(&[2, 9, 24], 4.0, 3.0), values(&[24], 5.0, 1.0)],
        &|x| ops::rms_norm_fused(x[0], x[1], 1e-5),
        &|x| ops::composed::rms_norm(x[0], x[1], 1e-5),
    );
}

/// Cross-entropy over 50,000 and 150,000 classes against float64 values from
/// tests/reference/cross_entropy_vocab.py (F.cross_entropy on float64 logits). Peaked rows put
/// the mass off the target in tens of thousands of tiny terms, which a float32 running sum
/// rounds away (such a loss came out ~1e-4 too low); torch's float32 is within ~2.4e-6.
#[test]
fn cross_entropy_matches_float64_on_large_vocabularies() {
    // (target, peaked, the float64 loss)
    type Row = (usize, bool, f64);
    let cases: [(usize, &[Row]); 2] = [
        (
            50_000,
            &[
                (123, true, 0.0015206508922761916),
                (49_999, false, 10.412143236367333),
                (7, true, 0.0015205482192646004),
            ],
        ),
        (
            150_000,
            &[
                (149_000, true, 0.004555033117979898),
                (0, false, 12.320755944652129),
            ],
        ),
    ];
    for (vocab, rows) in cases {
        let mut logits = Vec::with_capacity(vocab * rows.len());
        for (r, &(t, peaked, _)) in rows.iter().enumerate() {
            let row = (0..vocab).map(|j| ((j * 7919 + r * 104_729) % 1000) as f32 / 100.0 - 5.0);
            let start = logits.len();
            logits.extend(row);
            if peaked {
                logits[start + t] = 20.0;
            }
        }
        let x = Var::from_vec(logits, (rows.len(), vocab), &Device::Cpu).unwrap();
        let targets: Vec<i64> = rows.iter().map(|&(t, _, _)| t as i64).collect();
        let targets = Tensor::new(targets, &Device::Cpu).unwrap();
        let loss = ops::cross_entropy_rows(x.as_tensor(), &targets).unwrap();
        let got: Vec<f32> = loss.to_vec1().unwrap();
        for (&(t, _, want), got) in rows.iter().zip(&got) {
            assert!(
                (f64::from(*got) - want).abs() <= 2.5e-6 * want.max(1.0),
                "vocab {vocab}, target {t}: {got} against float64 {want}"
            );
        }
        // The gradient of the mean: softmax − onehot, each row summing to zero.
        let grads = ops::cross_entropy(x.as_tensor(), &targets)
            .unwrap()
            .backward()
            .unwrap();
        let dx: Vec<Vec<f32>> = grads.get(&x).unwrap().to_vec2().unwrap();
        for (row, &(t, peaked, want)) in dx.iter().zip(rows.iter()) {
            let off: f64 = row.iter().map(|&v| f64::from(v)).sum();
            assert!(off.abs() < 1e-6, "row sum {off}");
            if peaked {
                // d/dx[t] = (p_t − 1)/rows with p_t = exp(−loss), to float32's resolution of p_t.
                let expect = ((-want).exp() - 1.0) / rows.len() as f64;
                let g = f64::from(row[t]);
                assert!((g - expect).abs() <= 6e-8, "{g} vs {expect}");
            }
        }
    }
}

/// A frozen linear layer's product and input gradient are candle's matmul's, bit for bit, and
/// its backward forms no gradient for the weight: the gradient store holds x's alone, where
/// candle's matmul also leaves a (in, out) gradient for the transposed weight.
#[test]
fn frozen_linear_is_matmuls_input_gradient_alone() {
    let x = values(&[13, 24], 1.0, 2.0);
    let w = values(&[40, 24], 2.0, 0.5).as_tensor().detach();
    let run = |y: Tensor| {
        let weight = values(y.dims(), 0.5, 1.0);
        let store = y
            .mul(weight.as_tensor())
            .and_then(|l| l.sum_all())
            .and_then(|l| l.backward())
            .expect("backward");
        let dx = flat(store.get(x.as_tensor()).expect("a gradient for x"));
        let shapes: Vec<Vec<usize>> = store
            .get_ids()
            .filter_map(|id| store.get_id(*id))
            .map(|g| g.dims().to_vec())
            .collect();
        (flat(&y), dx, shapes)
    };
    let plain = run(x.as_tensor().matmul(&w.t().expect("t")).expect("matmul"));
    let frozen = run(ops::frozen_linear(x.as_tensor(), &w).expect("frozen linear"));
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&frozen.0), bits(&plain.0), "the product");
    assert_eq!(bits(&frozen.1), bits(&plain.1), "x's gradient");
    assert!(
        plain.2.contains(&vec![24, 40]),
        "candle forms dW: {:?}",
        plain.2
    );
    assert!(!frozen.2.contains(&vec![24, 40]), "{:?}", frozen.2);
    assert!(!frozen.2.contains(&vec![40, 24]), "{:?}", frozen.2);
    // A weight that trains gets candle's matmul and its gradient.
    let trained = values(&[40, 24], 2.0, 0.5);
    let y = ops::frozen_linear(x.as_tensor(), trained.as_tensor()).expect("linear");
    let store = y.sum_all().and_then(|l| l.backward()).expect("backward");
    assert!(
        store.get(trained.as_tensor()).is_some(),
        "a trained weight's gradient"
    );
}
