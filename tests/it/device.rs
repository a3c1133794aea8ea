//! The device-resident step, run on the CPU (`Control::device_step`): it follows the host's
//! bit-exact step to float32 rounding for every kind of optimizer, with clipping, accumulation
//! and f16 loss scaling; it copies no parameters, gradients or optimizer state per step (the
//! host step does, and the counts show it); its checkpoints resume on either path. And the
//! kernel self-check: a deliberately wrong kernel is turned off, reported in train.log and
//! summary.json, and the run follows the normal one.

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use xp::train::transfer::Kind;
use xp::train::{Control, Event, Outcome, Resume, Sink, TrainerState};

use super::support::{current_sweep, experiment_dir, xp};

/// A checkpoint as the sink got it: the state, the parameters' values, the optimizer's buffers.
type Checkpoint = (TrainerState, Vec<Vec<f32>>, Vec<(String, Vec<f32>)>);

/// The loss of every logged step, and the checkpoints handed over.
#[derive(Default)]
struct Capture {
    loss: Vec<f64>,
    grad_norm: Vec<f64>,
    loss_scale: Vec<f64>,
    checkpoints: Vec<Checkpoint>,
}

impl Sink for Capture {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        match event {
            Event::Metrics { metrics, .. } => {
                if let Some(l) = metrics.get("train/loss") {
                    self.loss.push(*l);
                }
                if let Some(n) = metrics.get("train/grad_norm") {
                    self.grad_norm.push(*n);
                }
                if let Some(s) = metrics.get("train/loss_scale") {
                    self.loss_scale.push(*s);
                }
            }
            Event::Checkpoint(cp) => {
                let params = cp
                    .params
                    .iter()
                    .map(|p| values(p.var.as_tensor()))
                    .collect();
                let optimizer = cp.optimizer.to_vec();
                self.checkpoints.push((cp.state.clone(), params, optimizer));
            }
            _ => {}
        }
        Ok(())
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn spec(text: &str) -> xp::spec::RunSpec {
    let checked = xp::front::validate_text("device.kdl", text);
    assert!(!checked.plans.is_empty(), "the experiment is valid: {text}");
    checked.plans[0].runs[0].config.clone()
}

/// A run of `spec` from scratch (or from `resume`, whose parameters are set first): its capture,
/// outcome and final parameters.
fn train(
    spec: &xp::spec::RunSpec,
    device_step: bool,
    compute: DType,
    resume: Option<(Resume, &[Vec<f32>])>,
) -> (Capture, Outcome, Vec<Vec<f32>>) {
    let text = xp::data::ModelText {
        context: None,
        tokenizer: None,
    };
    let data = xp::data::load_for(&spec.data, spec.seed, &text).expect("the data loads");
    let cpu = Device::Cpu;
    let built = xp::model::build(spec, &data, HashMap::new(), true, "", &cpu).expect("builds");
    let resume = resume.map(|(r, params)| {
        for (p, v) in built.params.iter().zip(params) {
            p.var
                .set(&Tensor::from_vec(v.clone(), p.var.shape(), &cpu).unwrap())
                .unwrap();
        }
        r
    });
    let mut capture = Capture::default();
    let control = Control {
        resume,
        device_step,
        ..Control::default()
    };
    let outcome = xp::train::train_in(spec, &data, &built, &cpu, &mut capture, control, compute)
        .expect("trains");
    assert_eq!(outcome.ending, xp::train::Ending::Completed);
    let params = built
        .params
        .iter()
        .map(|p| values(p.var.as_tensor()))
        .collect();
    (capture, outcome, params)
}

/// |a − b| ≤ rel · max(|b|) over each list, for lists of equal lengths.
fn assert_close(what: &str, got: &[f64], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().map(|v| v.abs()).fold(1e-12, f64::max);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{what}[{i}]: {g} vs {w} (scale {scale})"
        );
    }
}

fn assert_params_close(what: &str, got: &[Vec<f32>], want: &[Vec<f32>], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: parameters");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
        let w: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
        assert_close(&format!("{what}: parameter {i}"), &g, &w, rel);
    }
}

fn experiment(optimizer: &str, extra: &str) -> String {
    format!(
        r#"experiment "device" {{
    seed 5
    model "mlp" {{ hidden 32 32; activation "gelu" }}
    data "classification" features=8 classes=4 samples=256
    train {{
        steps 30
        batch-size 32
        gradient-accumulation 2
        {optimizer}
        schedule "cosine" warmup-steps=3
        grad-clip 0.5
        log every=5
        {extra}
    }}
}}"#
    )
}

/// Per step the device path copies the batch, the loss and (at log steps) the gradient norm:
/// no parameter, gradient or optimizer buffer. The host path copies every trainable parameter
/// twice and every gradient once.
#[test]
fn the_device_step_follows_the_host_step_and_copies_no_parameters() {
    let optimizers = [
        r#"optimizer "adamw" lr=3e-3 weight-decay=0.1"#,
        r#"optimizer "sgd" lr=0.05 momentum=0.9 dampening=0.1 weight-decay=1e-3"#,
        r#"optimizer "sgd" lr=0.05 momentum=0.9 nesterov=#true"#,
        r#"optimizer "adam" lr=3e-3 amsgrad=#true weight-decay=1e-3"#,
        r#"optimizer "rmsprop" lr=1e-3 momentum=0.5 centered=#true"#,
        r#"optimizer "adagrad" lr=0.05 lr-decay=0.01"#,
        r#"optimizer "lion" lr=3e-4 weight-decay=0.1"#,
    ];
    for optimizer in optimizers {
        let spec = spec(&experiment(optimizer, ""));
        let (host, host_out, host_params) = train(&spec, false, DType::F32, None);
        let (device, device_out, device_params) = train(&spec, true, DType::F32, None);
        assert_eq!(
            host.loss.len(),
            6,
            "{optimizer}: logged every 5 of 30 steps"
        );
        assert_close(optimizer, &device.loss, &host.loss, 1e-5);
        assert_close(optimizer, &device.grad_norm, &host.grad_norm, 1e-5);
        assert_params_close(optimizer, &device_params, &host_params, 1e-5);
        // Clipping acts: the norms before clipping exceed the limit.
        assert!(
            host.grad_norm.iter().any(|&n| n > 0.5),
            "{:?}",
            host.grad_norm
        );

        let trainable: u64 = host_params.iter().map(|p| 4 * p.len() as u64).sum();
        let (h, d) = (host_out.transfers, device_out.transfers);
        assert_eq!(
            h.bytes(Kind::Parameters),
            30 * 2 * trainable,
            "{optimizer}: host"
        );
        assert_eq!(
            h.bytes(Kind::Gradients),
            30 * trainable,
            "{optimizer}: host"
        );
        for kind in [Kind::Parameters, Kind::Gradients, Kind::OptimizerState] {
            assert_eq!(
                d.bytes(kind),
                0,
                "{optimizer}: the device path copied {kind:?}"
            );
        }
        // The loss of each step, and the norm at each of the 6 log steps.
        assert_eq!(d.copies(Kind::Scalars), 30 + 6, "{optimizer}");
        assert_eq!(d.bytes(Kind::Batch), h.bytes(Kind::Batch));
        assert!(d.bytes(Kind::Batch) > 0);
    }
}

/// f16 loss scaling on the device: unscaling and the finite check are tensor ops, one value read
/// a step, and the run follows the host's.
#[test]
fn f16_loss_scaling_works_on_the_device_path() {
    let spec = spec(&experiment(
        r#"optimizer "adamw" lr=3e-3 weight-decay=0.1"#,
        "",
    ));
    let (host, _, host_params) = train(&spec, false, DType::F16, None);
    let (device, out, device_params) = train(&spec, true, DType::F16, None);
    assert_eq!(device.loss_scale, host.loss_scale);
    assert!(!device.loss_scale.is_empty(), "f16 logs its scale");
    assert_close("f16 loss", &device.loss, &host.loss, 1e-5);
    assert_params_close("f16", &device_params, &host_params, 1e-5);
    // The loss, the finite check a step, and the norm at the 6 log steps.
    assert_eq!(out.transfers.copies(Kind::Scalars), 30 + 30 + 6);
    assert_eq!(out.transfers.bytes(Kind::Parameters), 0);
}

/// A checkpoint the device path writes has the host optimizer's buffer names; it resumes on the
/// device path exactly and on the host path to float32 rounding.
#[test]
fn a_device_checkpoint_resumes_on_either_path() {
    let text = experiment(
        r#"optimizer "adamw" lr=3e-3 weight-decay=0.1"#,
        "checkpoint every=10",
    );
    let spec = spec(&text);
    let (whole, _, final_params) = train(&spec, true, DType::F32, None);
    assert_eq!(whole.checkpoints.len(), 2, "steps 10 and 20");
    let (state, params, optimizer) = whole.checkpoints[0].clone();
    assert_eq!(state.step, 10);
    let names = |o: &[(String, Vec<f32>)]| o.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    // The names a host optimizer keeps for the same parameters.
    let mut host_optimizer = xp::train::optim::build(&spec.train.optimizer);
    for (index, p) in params.iter().enumerate() {
        let mut values = p.clone();
        host_optimizer.update(index, &mut values, &vec![0.0; p.len()], 1e-3, true);
    }
    let host_names: Vec<String> = names(&host_optimizer.state());
    assert_eq!(
        names(&optimizer),
        host_names,
        "the buffers are named as the host's"
    );
    let saved: BTreeMap<String, usize> = optimizer
        .iter()
        .map(|(n, v)| (n.clone(), v.len()))
        .collect();
    assert!(saved.contains_key("0.exp_avg") && saved.contains_key("0.step"));

    let resume = |device_step| {
        let r = Resume {
            state: state.clone(),
            optimizer: optimizer.clone(),
        };
        train(&spec, device_step, DType::F32, Some((r, &params)))
    };
    let (on_device, _, device_params) = resume(true);
    assert_eq!(
        on_device.loss,
        whole.loss[2..],
        "device → device: the same bits"
    );
    assert_eq!(device_params, final_params);
    let (on_host, _, host_params) = resume(false);
    assert_close("device → host", &on_host.loss, &whole.loss[2..], 1e-5);
    assert_params_close("device → host", &host_params, &final_params, 1e-5);
}

/// A kernel made wrong on purpose (`XP_FAULT_KERNEL`) fails its self-check: the run completes on
/// the composed ops, says so in train.log and summary.json, and follows the run with the kernel
/// (a 25% error in every RMSNorm would change its losses far more).
#[test]
fn a_wrong_kernel_is_turned_off_and_reported() {
    let text = r#"experiment "kernels" {
    seed 2
    device "cpu"
    model "llama" { layers 2; heads 2; dim 32; context 8 }
    data "modular-addition" modulus=11 train-fraction=0.6
    train {
        steps 8
        batch-size 16
        optimizer "adamw" lr=3e-3
        log every=1
    }
}"#;
    let dir = experiment_dir(text);
    let run = |runs: &str, env: Option<&str>| {
        let args = ["run", "e.kdl", "--runs-dir", runs];
        let out = match env {
            // The variable is set for the child process only.
            Some(kernel) => std::process::Command::new(env!("CARGO_BIN_EXE_xp"))
                .current_dir(dir.path())
                .args(args)
                .env("XP_FAULT_KERNEL", kernel)
                .output()
                .expect("xp runs"),
            None => xp(dir.path(), &args),
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let sweep = current_sweep(dir.path(), runs, "kernels");
        let run = std::fs::read_dir(&sweep)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.join("summary.json").exists())
            .expect("a run directory");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap())
                .unwrap();
        let log = std::fs::read_to_string(run.join("train.log")).unwrap();
        let losses: Vec<f64> = std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|m| m["train/loss"].as_f64())
            .collect();
        (summary, log, losses)
    };
    let (normal, normal_log, normal_losses) = run("normal", None);
    assert_eq!(normal["status"], "completed");
    assert!(normal.get("disabled_kernels").is_none(), "{normal}");
    assert!(!normal_log.contains("disabled"), "{normal_log}");

    let (wrong, log, losses) = run("wrong", Some("rms_norm"));
    assert_eq!(wrong["status"], "completed", "{wrong}");
    let disabled = wrong["disabled_kernels"]
        .as_array()
        .expect("disabled_kernels");
    assert_eq!(disabled.len(), 1, "{wrong}");
    assert_eq!(disabled[0]["kernel"], "rms_norm");
    assert_eq!(disabled[0]["device"], "cpu");
    assert!(disabled[0]["max_error"].as_f64().unwrap() > 0.1, "{wrong}");
    assert!(
        log.contains("warning: kernel rms_norm disabled on cpu"),
        "{log}"
    );
    assert_eq!(losses.len(), 8);
    let normal_losses: Vec<f64> = normal_losses;
    // The composition and the kernel agree to float32 rounding, not bit for bit.
    assert_close("losses", &losses, &normal_losses, 1e-4);
}
