//! Decoding: a filled experiment node → its [`RunSpec`], one function per part of the spec.

use kdl::KdlValue;

use super::path_of;
use super::reader::{Reader, Res, float, uint};
use crate::front::schema::parse_percent;
use crate::front::source::Sources;
use crate::front::tree::Node;
use crate::spec::*;

fn direction(s: &str) -> Direction {
    if s == "maximize" || s == "max" {
        Direction::Maximize
    } else {
        Direction::Minimize
    }
}

/// Decodes a filled experiment node.
pub fn decode(experiment: &Node, sources: &Sources) -> Res<RunSpec> {
    let r = Reader {
        node: experiment,
        sources,
    };
    let objective = r.need("objective")?;
    let device = r.need("device")?.a_str(0)?;
    // The schema accepted only what Device::parse reads.
    let device = Device::parse(&device).unwrap_or(Device::Auto);
    let precision = match r.need("precision")?.a_str(0)?.as_str() {
        "f32" => Precision::F32,
        "bf16" => Precision::Bf16,
        "f16" => Precision::F16,
        _ => Precision::Auto,
    };
    Ok(RunSpec {
        experiment: r.a_str(0)?,
        description: r.child("description").map(|d| d.a_str(0)).transpose()?,
        tags: r.child("tags").map(|t| t.strings()).unwrap_or_default(),
        seed: r.need("seed")?.a_usize(0)? as u64,
        objective: Objective {
            metric: objective.a_str(0)?,
            direction: direction(&objective.a_str(1)?),
        },
        device,
        precision,
        model: model(&r.need("model")?)?,
        init_from: match r.child("init-from") {
            Some(i) => Some(InitFrom {
                path: i
                    .node
                    .arg(0)
                    .map(|e| path_of(e, sources))
                    .ok_or("`init-from` has no path")?,
                strict: i.p_bool("strict")?,
            }),
            None => None,
        },
        lora: match r.child("lora") {
            Some(l) => Some(Lora {
                rank: l.p_usize("rank")?,
                alpha: l.p_f64("alpha")?,
                dropout: l.p_f64("dropout")?,
                rslora: l.p_bool("rslora")?,
                merge: l.p_bool("merge")?,
                targets: l.need("targets")?.strings(),
            }),
            None => None,
        },
        data: data(&r.need("data")?)?,
        train: train(&r.need("train")?)?,
        resources: r
            .child("resources")
            .map(|res| resources(&res))
            .transpose()?,
        regression: r.child("regression").map(|g| regression(&g)).transpose()?,
    })
}

fn regression(g: &Reader) -> Res<Regression> {
    Ok(Regression {
        baseline: g.p_path("baseline").ok_or("`regression` has no baseline")?,
        join_on: g.child("join-on").map(|j| j.strings()),
        metrics: g
            .node
            .nodes()
            .iter()
            .filter(|n| n.name == "metric")
            .map(|n| {
                let m = Reader {
                    node: n,
                    sources: g.sources,
                };
                let tolerance = match m.prop("tolerance") {
                    Some(KdlValue::String(s)) => {
                        Tolerance::Relative(parse_percent(s).unwrap_or(0.0))
                    }
                    Some(v) => Tolerance::Absolute(float(v).unwrap_or(0.0)),
                    None => Tolerance::Absolute(0.0),
                };
                Ok(GatedMetric {
                    name: m.a_str(0)?,
                    tolerance,
                    direction: m.p_str("direction").ok().map(|d| direction(&d)),
                })
            })
            .collect::<Res<_>>()?,
    })
}

fn model(m: &Reader) -> Res<Model> {
    Ok(match m.kind()? {
        "mlp" => Model::Mlp(MlpDims {
            hidden: m
                .need("hidden")?
                .node
                .args()
                .filter_map(|e| uint(&e.value))
                .collect(),
            activation: match m.need("activation")?.a_str(0)?.as_str() {
                "gelu" => Activation::Gelu,
                "tanh" => Activation::Tanh,
                "silu" => Activation::Silu,
                _ => Activation::Relu,
            },
            dropout: m.need("dropout")?.a_f64(0)?,
        }),
        _ => match m.p_path("path") {
            Some(dir) => Model::Llama(LlamaSource::Dir(dir)),
            None => {
                let heads = m.need("heads")?.a_usize(0)?;
                let dim = m.need("dim")?.a_usize(0)?;
                Model::Llama(LlamaSource::Dims(LlamaDims {
                    layers: m.need("layers")?.a_usize(0)?,
                    heads,
                    kv_heads: m.c_usize("kv-heads")?.unwrap_or(heads),
                    dim,
                    hidden: m.c_usize("hidden")?.unwrap_or(4 * dim),
                    context: m.need("context")?.a_usize(0)?,
                    vocab: m.c_usize("vocab")?,
                    rope_theta: m.need("rope-theta")?.a_f64(0)?,
                    rms_eps: m.need("rms-eps")?.a_f64(0)?,
                    tie_embeddings: m.need("tie-embeddings")?.arg(0)?.as_bool().unwrap_or(false),
                }))
            }
        },
    })
}

fn validation(d: &Reader) -> Res<Validation> {
    Ok(match d.p_path("validation") {
        Some(p) => Validation::File(p),
        None => Validation::Fraction(d.p_f64("validation-fraction")?),
    })
}

fn data(d: &Reader) -> Res<Data> {
    let source = match d.kind()? {
        "regression" => DataSource::Regression {
            features: d.p_usize("features")?,
            samples: d.p_usize("samples")?,
            noise: d.p_f64("noise")?,
            validation_fraction: d.p_f64("validation-fraction")?,
        },
        "classification" => DataSource::Classification {
            features: d.p_usize("features")?,
            classes: d.p_usize("classes")?,
            samples: d.p_usize("samples")?,
            validation_fraction: d.p_f64("validation-fraction")?,
        },
        "modular-addition" => DataSource::ModularAddition {
            modulus: d.p_usize("modulus")?,
            train_fraction: d.p_f64("train-fraction")?,
        },
        "copy" => DataSource::Copy {
            length: d.p_usize("length")?,
            vocab: d.p_usize("vocab")?,
            samples: d.p_usize("samples")?,
            validation_fraction: d.p_f64("validation-fraction")?,
        },
        "text" => DataSource::Text {
            path: d.p_path("path").ok_or("`text` has no path")?,
            tokenizer: d.p_path("tokenizer"),
            validation: validation(d)?,
        },
        "jsonl" => DataSource::Jsonl {
            path: d.p_path("path").ok_or("`jsonl` has no path")?,
            prompt_field: d.p_str("prompt-field")?,
            response_field: d.p_str("response-field")?,
            messages_field: d.p_str("messages-field")?,
            validation: validation(d)?,
            shuffle: d.p_bool("shuffle")?,
            packing: d.p_bool("packing")?,
        },
        "csv" => DataSource::Csv {
            path: d.p_path("path").ok_or("`csv` has no path")?,
            target: d.p_str("target")?,
            task: if d.p_str("task")? == "classification" {
                CsvTask::Classification
            } else {
                CsvTask::Regression
            },
            validation: validation(d)?,
            shuffle: d.p_bool("shuffle")?,
            features: d.child("features").map(|f| f.strings()),
        },
        other => return Err(format!("unknown data kind `{other}`")),
    };
    Ok(Data {
        seed: d.prop("seed").and_then(uint).map(|s| s as u64),
        source,
    })
}

fn train(t: &Reader) -> Res<Train> {
    let length = match t.c_usize("epochs")? {
        Some(e) => Length::Epochs(e),
        None => Length::Steps(t.c_usize("steps")?.unwrap_or(1000)),
    };
    // `batch-size` has a default unless `batch-tokens` is given (they exclude each other).
    let batch_size = match t.child("batch-size") {
        Some(batch) => Some(match batch.arg(0)? {
            KdlValue::String(_) => BatchSize::Auto,
            v => BatchSize::Fixed(uint(v).ok_or("bad batch size")?),
        }),
        None => None,
    };
    Ok(Train {
        length,
        batch_size,
        batch_tokens: t.c_usize("batch-tokens")?,
        // Absent with `effective-batch` (they exclude each other): one until a micro-batch is
        // chosen.
        gradient_accumulation: t.c_usize("gradient-accumulation")?.unwrap_or(1),
        effective_batch: t.c_usize("effective-batch")?,
        optimizer: optimizer(&t.need("optimizer")?)?,
        schedule: schedule(&t.need("schedule")?)?,
        grad_clip: t.child("grad-clip").map(|g| g.a_f64(0)).transpose()?,
        eval: match t.child("eval") {
            Some(e) => Some(Eval {
                every: e.p_usize("every")?,
                batches: e.prop("batches").and_then(uint),
            }),
            None => None,
        },
        log_every: t.need("log")?.p_usize("every")?,
        checkpoint: match t.child("checkpoint") {
            Some(c) => Some(Checkpoint {
                every: c.p_usize("every")?,
                keep: c.p_usize("keep")?,
                best: c.p_bool("best")?,
            }),
            None => None,
        },
        early_stop: match t.child("early-stop") {
            Some(e) => Some(EarlyStop {
                patience: e.p_usize("patience")?,
                min_delta: e.p_f64("min-delta")?,
                threshold: e.prop("threshold").and_then(float),
            }),
            None => None,
        },
    })
}

fn optimizer(o: &Reader) -> Res<OptimizerConfig> {
    let wd = || o.p_f64("weight-decay");
    let kind = match o.kind()? {
        "sgd" => OptimizerKind::Sgd(Sgd {
            momentum: o.p_f64("momentum")?,
            dampening: o.p_f64("dampening")?,
            nesterov: o.p_bool("nesterov")?,
            weight_decay: wd()?,
        }),
        k @ ("adam" | "adamw") => {
            let adam = Adam {
                beta1: o.p_f64("beta1")?,
                beta2: o.p_f64("beta2")?,
                eps: o.p_f64("eps")?,
                amsgrad: o.p_bool("amsgrad")?,
                weight_decay: wd()?,
            };
            if k == "adam" {
                OptimizerKind::Adam(adam)
            } else {
                OptimizerKind::Adamw(adam)
            }
        }
        "rmsprop" => OptimizerKind::Rmsprop(Rmsprop {
            alpha: o.p_f64("alpha")?,
            eps: o.p_f64("eps")?,
            momentum: o.p_f64("momentum")?,
            centered: o.p_bool("centered")?,
            weight_decay: wd()?,
        }),
        "adagrad" => OptimizerKind::Adagrad(Adagrad {
            lr_decay: o.p_f64("lr-decay")?,
            eps: o.p_f64("eps")?,
            initial_accumulator: o.p_f64("initial-accumulator")?,
            weight_decay: wd()?,
        }),
        "lion" => OptimizerKind::Lion(Lion {
            beta1: o.p_f64("beta1")?,
            beta2: o.p_f64("beta2")?,
            weight_decay: wd()?,
        }),
        other => return Err(format!("unknown optimizer `{other}`")),
    };
    Ok(OptimizerConfig {
        lr: o.p_f64("lr")?,
        decay_all: o.p_bool("decay-all")?,
        kind,
    })
}

fn resources(r: &Reader) -> Res<Resources> {
    let text = |name: &str| r.child(name).map(|c| c.a_str(0)).transpose();
    Ok(Resources {
        cpus: r.child("cpus").map(|c| c.a_usize(0)).transpose()?,
        gpus: r.child("gpus").map(|c| c.a_usize(0)).transpose()?,
        memory: text("memory")?,
        time: text("time")?,
        partition: text("partition")?,
        slurm: r.child("slurm").map(|c| c.strings()).unwrap_or_default(),
    })
}

fn schedule(s: &Reader) -> Res<Schedule> {
    let warmup = if let Some(v) = s.prop("warmup-steps").and_then(uint) {
        Some(Warmup::Steps(v))
    } else if let Some(v) = s.prop("warmup-ratio").and_then(float) {
        Some(Warmup::Ratio(v))
    } else {
        s.prop("warmup-epochs").and_then(float).map(Warmup::Epochs)
    };
    let kind = match s.kind()? {
        "constant" => ScheduleKind::Constant,
        "linear" => ScheduleKind::Linear {
            min_lr_ratio: s.p_f64("min-lr-ratio")?,
        },
        "cosine" => ScheduleKind::Cosine {
            min_lr_ratio: s.p_f64("min-lr-ratio")?,
        },
        "cosine-with-restarts" => ScheduleKind::CosineWithRestarts {
            cycles: s.p_usize("cycles")?,
            min_lr_ratio: s.p_f64("min-lr-ratio")?,
        },
        "polynomial" => ScheduleKind::Polynomial {
            power: s.p_f64("power")?,
            end_lr: s.p_f64("end-lr")?,
        },
        "exponential" => ScheduleKind::Exponential {
            gamma: s.p_f64("gamma")?,
        },
        "inverse-sqrt" => ScheduleKind::InverseSqrt {
            timescale: s.prop("timescale").and_then(uint),
        },
        "step" => ScheduleKind::Step {
            step_size: s.p_usize("step-size")?,
            gamma: s.p_f64("gamma")?,
        },
        "multi-step" => ScheduleKind::MultiStep {
            milestones: s
                .need("milestones")?
                .node
                .args()
                .filter_map(|e| uint(&e.value))
                .collect(),
            gamma: s.p_f64("gamma")?,
        },
        "cosine-annealing" => ScheduleKind::CosineAnnealing {
            t_max: s.prop("t-max").and_then(uint),
            eta_min: s.p_f64("eta-min")?,
        },
        "cosine-warm-restarts" => ScheduleKind::CosineWarmRestarts {
            t_0: s.p_usize("t-0")?,
            t_mult: s.p_usize("t-mult")?,
            eta_min: s.p_f64("eta-min")?,
        },
        "one-cycle" => ScheduleKind::OneCycle {
            max_lr: s.prop("max-lr").and_then(float),
            pct_start: s.p_f64("pct-start")?,
            anneal: if s.p_str("anneal")? == "linear" {
                Anneal::Linear
            } else {
                Anneal::Cos
            },
            div_factor: s.p_f64("div-factor")?,
            final_div_factor: s.p_f64("final-div-factor")?,
            three_phase: s.p_bool("three-phase")?,
        },
        "reduce-on-plateau" => ScheduleKind::ReduceOnPlateau {
            mode: s.prop("mode").and_then(KdlValue::as_string).map(direction),
            factor: s.p_f64("factor")?,
            patience: s.p_usize("patience")?,
            threshold: s.p_f64("threshold")?,
            threshold_mode: if s.p_str("threshold-mode")? == "abs" {
                ThresholdMode::Abs
            } else {
                ThresholdMode::Rel
            },
            cooldown: s.p_usize("cooldown")?,
            min_lr: s.p_f64("min-lr")?,
            eps: s.p_f64("eps")?,
        },
        other => return Err(format!("unknown schedule `{other}`")),
    };
    Ok(Schedule {
        interval: if s.p_str("interval")? == "epoch" {
            Interval::Epoch
        } else {
            Interval::Step
        },
        warmup,
        kind,
    })
}
