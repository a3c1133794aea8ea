//! Trains a model and a dataset defined outside xp with xp's training loop: implement
//! `xp::model::Model`, build a `xp::data::Dataset`, and pass both to `xp::train::train` with a
//! run spec resolved from an experiment (its optimizer, schedule, logging and evaluation).
//!
//! cargo run --release --example custom_model

use candle_core::{DType, Device, Tensor, Var};
use xp::data::{Dataset, Examples, Task};
use xp::front::validate_text;
use xp::model::{Built, Mode, Model, Param};
use xp::train::{Event, Sink};

/// y = a·x + b with two scalar parameters.
struct Line {
    a: Tensor,
    b: Tensor,
}

impl Model for Line {
    fn forward(&self, inputs: &Tensor, _mode: &mut Mode) -> candle_core::Result<Tensor> {
        inputs.broadcast_mul(&self.a)?.broadcast_add(&self.b) // (B, 1)
    }
}

/// Prints the metrics the loop reports.
struct Print;

impl Sink for Print {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        if let Event::Metrics { step, metrics, .. } = event {
            println!("step {step}: {metrics:?}");
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The training settings come from an ordinary experiment (the data node is a placeholder:
    // the dataset below replaces it).
    let checked = validate_text(
        "line.kdl",
        r#"experiment "line" {
    data "regression" features=1
    train {
        steps 200
        batch-size 16
        optimizer "sgd" lr=0.1
        eval every=50
        log every=50
    }
}"#,
    );
    let spec = &checked.plans[0].runs[0].config;

    // 256 points of y = 3x - 1.
    let xs: Vec<f32> = (0..256).map(|i| i as f32 / 128.0 - 1.0).collect();
    let ys: Vec<f32> = xs.iter().map(|x| 3.0 * x - 1.0).collect();
    let all = Examples::Tabular {
        features: xs,
        width: 1,
        targets: ys,
        classes: Vec::new(),
    };
    let (train, validation) = xp::data::split(all, 0.25, Some(&mut xp::rng::Rng::new(1)));
    let data = Dataset {
        task: Task::Regression { outputs: 1 },
        train,
        validation,
        pad: 0,
        truncated: 0,
        skipped: 0,
    };

    let device = Device::Cpu;
    let a = Var::zeros(1, DType::F32, &device)?;
    let b = Var::zeros(1, DType::F32, &device)?;
    let model = Line {
        a: a.as_tensor().clone(),
        b: b.as_tensor().clone(),
    };
    let params = vec![
        Param {
            name: "a".into(),
            var: a.clone(),
            decay: false,
            trainable: true,
        },
        Param {
            name: "b".into(),
            var: b.clone(),
            decay: false,
            trainable: true,
        },
    ];
    let built = Built {
        model: Box::new(model),
        params,
    };
    let outcome = xp::train::train(spec, &data, &built, &device, &mut Print)?;
    println!(
        "a = {:.4}, b = {:.4} after {} steps",
        a.to_vec1::<f32>()?[0],
        b.to_vec1::<f32>()?[0],
        outcome.steps
    );
    Ok(())
}
