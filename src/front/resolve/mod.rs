//! Resolution: an expanded, checked experiment → its [`RunSpec`]. Defaults come from the schema
//! (the single source of truth), paths are made relative to the file that wrote them, the
//! cross-field rules run with spans to point back, and the canonical KDL form is written.
//! Pure: no I/O.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kdl::KdlValue;
use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use crate::diagnostic::Diag;
use crate::front::load::base_dir;
use crate::front::schema::{Body, NodeSpec, Schema, ValueSpec, ValueType, parse_percent};
use crate::front::source::{SourceId, Sources};
use crate::front::tree::{Entry, Literal, Node, Origin};
use crate::spec::*;

#[derive(Debug, Error, Diagnostic)]
pub enum RunError {
    #[error("warmup of {warmup} steps is not shorter than the {steps} training steps")]
    #[diagnostic(
        code("xp::run::warmup-too-long"),
        help("shorten the warmup or train longer")
    )]
    WarmupTooLong {
        warmup: usize,
        steps: usize,
        #[label("{warmup} warmup steps")]
        span: SourceSpan,
    },

    #[error("`{what}` every {every} steps{default} is longer than the {steps} training steps")]
    #[diagnostic(code("xp::run::interval-too-long"), severity(Warning))]
    IntervalTooLong {
        what: &'static str,
        every: usize,
        steps: usize,
        default: &'static str,
        #[label("every {every}")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("LoRA rank {rank} is larger than the model dimension {dim}")]
    #[diagnostic(
        code("xp::run::lora-rank"),
        help(
            "a rank above the layer width adds parameters without adding capacity; use at most {dim}"
        )
    )]
    LoraRank {
        rank: usize,
        dim: usize,
        #[label("rank {rank}")]
        span: SourceSpan,
    },

    #[error("{message}")]
    #[diagnostic(code("xp::run::model-shape"))]
    ModelShape {
        message: String,
        #[label("does not fit")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("the `{model}` model cannot train on `{data}` data")]
    #[diagnostic(code("xp::run::model-data"))]
    ModelData {
        model: String,
        data: String,
        #[label("this model")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("context {context} is shorter than the {needed} tokens of one `{data}` example")]
    #[diagnostic(
        code("xp::run::context-too-short"),
        help("set the model's context to at least {needed}")
    )]
    ContextTooShort {
        context: usize,
        needed: usize,
        data: String,
        #[label("context {context}")]
        span: SourceSpan,
    },

    #[error(
        "an optimizer step of {batch} examples is larger than the {examples} training examples"
    )]
    #[diagnostic(
        code("xp::run::batch-too-large"),
        help("lower batch-size × gradient-accumulation, or use more data")
    )]
    BatchTooLarge {
        batch: usize,
        examples: usize,
        #[label("{batch} examples per step")]
        span: SourceSpan,
    },

    #[error("`{what}` needs evaluations, and this run has no `eval`")]
    #[diagnostic(
        code("xp::run::needs-eval"),
        help("add `eval every=N` to `train`; {what} reads the objective at each evaluation")
    )]
    NeedsEval {
        what: &'static str,
        #[label("needs eval")]
        span: SourceSpan,
    },
}

fn diag(source: SourceId, e: RunError) -> Diag {
    Diag {
        source: Some(source),
        inner: Box::new(e),
    }
}

/// A node's allowed contents with its selected variant.
struct Shape<'a> {
    bodies: Vec<&'a Body>,
}

impl<'a> Shape<'a> {
    fn of(node: &Node, spec: &'a NodeSpec, schema: &'a Schema) -> Self {
        let body = schema.body(spec);
        let mut bodies = vec![body];
        let kind = body
            .tag()
            .and(node.arg(0))
            .and_then(|a| a.as_str())
            .or_else(|| {
                body.tag()
                    .and_then(|t| t.default.first())
                    .and_then(KdlValue::as_string)
            });
        if let Some(v) = kind.and_then(|k| body.variant(k)) {
            bodies.push(&v.body);
        }
        Shape { bodies }
    }

    fn args(&self) -> Vec<&'a ValueSpec> {
        self.bodies.iter().flat_map(|b| b.args.iter()).collect()
    }

    fn props(&self) -> Vec<&'a ValueSpec> {
        self.bodies
            .iter()
            .flat_map(|b| b.props.iter())
            .filter(|p| p.name.as_deref() != Some("*"))
            .collect()
    }

    fn prop(&self, name: &str) -> Option<&'a ValueSpec> {
        self.bodies.iter().find_map(|b| b.prop(name))
    }

    fn nodes(&self) -> Vec<&'a NodeSpec> {
        self.bodies.iter().flat_map(|b| b.nodes.iter()).collect()
    }

    fn node(&self, name: &str) -> Option<&'a NodeSpec> {
        let all = self.nodes();
        all.iter()
            .find(|n| n.name == name)
            .or_else(|| all.iter().find(|n| n.name == "*"))
            .copied()
    }

    fn exclusive(&self) -> Vec<&'a Vec<String>> {
        self.bodies
            .iter()
            .flat_map(|b| b.exclusive.iter())
            .collect()
    }
}

fn default_entry(key: Option<&str>, value: &KdlValue, at: &Node) -> Entry {
    Entry {
        origin: Origin::Default,
        ..Entry::new(key, value.clone(), at.source, at.name_span)
    }
}

/// Fills in every default the schema gives: missing arguments and properties of present nodes,
/// and missing settings nodes (not features such as `eval`, whose absence means off).
pub fn fill(node: &mut Node, spec: &NodeSpec, schema: &Schema) {
    let body = schema.body(spec);
    if let Some(tag) = body.tag()
        && node.arg(0).is_none()
        && let Some(d) = tag.default.first()
    {
        let entry = default_entry(None, d, node);
        node.set_arg(0, entry);
    }
    let shape = Shape::of(node, spec, schema);
    let given = node.args().count();
    let mut index = 0;
    for arg in shape.args() {
        if index >= given {
            if arg.default.is_empty() {
                break;
            }
            for d in &arg.default {
                let entry = default_entry(None, d, node);
                node.set_arg(index, entry);
                index += 1;
            }
        } else {
            index += if arg.multiple { given - index } else { 1 };
        }
    }
    let present = |node: &Node, name: &str| node.prop(name).is_some() || node.child(name).is_some();
    let excluded = |node: &Node, name: &str| {
        shape
            .exclusive()
            .iter()
            .any(|g| g.iter().any(|m| m == name) && g.iter().any(|m| m != name && present(node, m)))
    };
    for prop in shape.props() {
        let Some(name) = prop.name.as_deref() else {
            continue;
        };
        if node.prop(name).is_none()
            && !excluded(node, name)
            && let Some(d) = prop.default.first()
        {
            let entry = default_entry(Some(name), d, node);
            node.set_prop(entry);
        }
    }
    for child_spec in shape.nodes() {
        if child_spec.name == "*"
            || child_spec.multiple
            || child_spec.feature
            || node.child(&child_spec.name).is_some()
        {
            continue;
        }
        if excluded(node, &child_spec.name) || !materializable(child_spec, schema) {
            continue;
        }
        let mut child = Node::new(child_spec.name.clone(), node.source, node.name_span);
        fill(&mut child, child_spec, schema);
        if !child.entries.is_empty() || !child.nodes().is_empty() {
            node.nodes_mut().push(child);
        }
    }
    if let Some(children) = node.children.as_mut() {
        for child in children.nodes.iter_mut() {
            if let Some(child_spec) = shape.node(&child.name) {
                fill(child, child_spec, schema);
            }
        }
    }
}

/// Whether a missing node can be created from defaults alone.
fn materializable(spec: &NodeSpec, schema: &Schema) -> bool {
    let body = schema.body(spec);
    let tag_ok = body.tag().is_none_or(|t| !t.default.is_empty());
    let first_arg = body.args.iter().find(|a| !a.tag);
    let args_ok = first_arg.is_none_or(|a| !a.default.is_empty());
    let props_ok = body
        .props
        .iter()
        .all(|p| !p.required || !p.default.is_empty());
    tag_ok && args_ok && props_ok
}

/// The experiment as canonical KDL: every setting, defaults included, in schema order.
pub fn canonical(experiment: &Node, schema: &Schema, sources: &Sources) -> String {
    let mut out = String::new();
    if let Some(spec) = schema.document.node("experiment") {
        write_node(&mut out, experiment, spec, schema, sources, 0);
    }
    out
}

fn write_node(
    out: &mut String,
    node: &Node,
    spec: &NodeSpec,
    schema: &Schema,
    sources: &Sources,
    depth: usize,
) {
    let shape = Shape::of(node, spec, schema);
    let indent = "    ".repeat(depth);
    let _ = write!(out, "{indent}{}", node.name);
    let arg_specs = shape.args();
    for (i, arg) in node.args().enumerate() {
        let slot = arg_specs.get(i).or(arg_specs.last()).copied();
        let _ = write!(out, " {}", value_text(arg, slot, sources));
    }
    let mut props: Vec<&Entry> = node.entries.iter().filter(|e| e.key.is_some()).collect();
    let order = |name: &str| {
        shape
            .props()
            .iter()
            .position(|p| p.name.as_deref() == Some(name))
            .unwrap_or(usize::MAX)
    };
    props.sort_by_key(|e| {
        (
            order(e.name().unwrap_or_default()),
            e.name().unwrap_or_default().to_owned(),
        )
    });
    for prop in props {
        let name = prop.name().unwrap_or_default();
        let _ = write!(
            out,
            " {name}={}",
            value_text(prop, shape.prop(name), sources)
        );
    }
    let mut children: Vec<(&Node, &NodeSpec)> = node
        .nodes()
        .iter()
        .filter_map(|c| shape.node(&c.name).map(|s| (c, s)))
        .collect();
    let order = |name: &str| {
        shape
            .nodes()
            .iter()
            .position(|n| n.name == name)
            .unwrap_or(usize::MAX)
    };
    children.sort_by_key(|(c, _)| order(&c.name));
    if children.is_empty() {
        out.push('\n');
        return;
    }
    out.push_str(" {\n");
    for (child, child_spec) in children {
        write_node(out, child, child_spec, schema, sources, depth + 1);
    }
    let _ = writeln!(out, "{indent}}}");
}

fn value_text(entry: &Entry, slot: Option<&ValueSpec>, sources: &Sources) -> String {
    match (slot.map(|s| s.ty), &entry.value) {
        (Some(ValueType::Path), KdlValue::String(_)) => Literal(&KdlValue::String(
            path_of(entry, sources).display().to_string(),
        ))
        .to_string(),
        _ => Literal(&entry.value).to_string(),
    }
}

/// A path value, relative to the file that wrote it.
fn path_of(entry: &Entry, sources: &Sources) -> PathBuf {
    let written = Path::new(entry.as_str().unwrap_or_default());
    if written.is_absolute() {
        written.to_path_buf()
    } else {
        base_dir(sources.get(entry.source)).join(written)
    }
}

/// Reads values of a filled, checked node; a missing one is an internal error (the schema
/// guarantees presence after `fill`).
struct Reader<'a> {
    node: &'a Node,
    sources: &'a Sources,
}

type Res<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn child(&self, name: &str) -> Option<Reader<'a>> {
        self.node.child(name).map(|node| Reader {
            node,
            sources: self.sources,
        })
    }

    fn need(&self, name: &str) -> Res<Reader<'a>> {
        self.child(name)
            .ok_or_else(|| format!("`{}` has no `{name}`", self.node.name))
    }

    fn kind(&self) -> Res<&'a str> {
        self.node
            .arg(0)
            .and_then(|a| a.as_str())
            .ok_or_else(|| format!("`{}` has no kind", self.node.name))
    }

    fn arg(&self, i: usize) -> Res<&'a KdlValue> {
        self.node
            .arg(i)
            .map(|e| &e.value)
            .ok_or_else(|| format!("`{}` has no argument {i}", self.node.name))
    }

    fn prop(&self, name: &str) -> Option<&'a KdlValue> {
        self.node.prop(name).map(|e| &e.value)
    }

    fn p_f64(&self, name: &str) -> Res<f64> {
        self.prop(name)
            .and_then(float)
            .ok_or_else(|| format!("`{}` has no number `{name}`", self.node.name))
    }

    fn p_usize(&self, name: &str) -> Res<usize> {
        self.prop(name)
            .and_then(uint)
            .ok_or_else(|| format!("`{}` has no count `{name}`", self.node.name))
    }

    fn p_bool(&self, name: &str) -> Res<bool> {
        self.prop(name)
            .and_then(KdlValue::as_bool)
            .ok_or_else(|| format!("`{}` has no flag `{name}`", self.node.name))
    }

    fn p_str(&self, name: &str) -> Res<String> {
        self.prop(name)
            .and_then(KdlValue::as_string)
            .map(str::to_owned)
            .ok_or_else(|| format!("`{}` has no `{name}`", self.node.name))
    }

    fn p_path(&self, name: &str) -> Option<PathBuf> {
        self.node
            .prop(name)
            .filter(|e| e.as_str().is_some())
            .map(|e| path_of(e, self.sources))
    }

    fn a_usize(&self, i: usize) -> Res<usize> {
        uint(self.arg(i)?).ok_or_else(|| format!("`{}` needs a count", self.node.name))
    }

    fn a_f64(&self, i: usize) -> Res<f64> {
        float(self.arg(i)?).ok_or_else(|| format!("`{}` needs a number", self.node.name))
    }

    fn a_str(&self, i: usize) -> Res<String> {
        self.arg(i)?
            .as_string()
            .map(str::to_owned)
            .ok_or_else(|| format!("`{}` needs a string", self.node.name))
    }

    fn c_usize(&self, name: &str) -> Res<Option<usize>> {
        self.child(name).map(|c| c.a_usize(0)).transpose()
    }

    fn strings(&self) -> Vec<String> {
        self.node
            .args()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect()
    }
}

fn float(v: &KdlValue) -> Option<f64> {
    match v {
        KdlValue::Integer(i) => Some(*i as f64),
        KdlValue::Float(f) => Some(*f),
        _ => None,
    }
}

fn uint(v: &KdlValue) -> Option<usize> {
    match v {
        KdlValue::Integer(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

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
        regression: match r.child("regression") {
            Some(g) => Some(Regression {
                baseline: g.p_path("baseline").ok_or("`regression` has no baseline")?,
                join_on: g.child("join-on").map(|j| j.strings()),
                metrics: g
                    .node
                    .nodes()
                    .iter()
                    .filter(|n| n.name == "metric")
                    .map(|n| {
                        let m = Reader { node: n, sources };
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
            }),
            None => None,
        },
    })
}

fn model(m: &Reader) -> Res<Model> {
    Ok(match m.kind()? {
        "mlp" => Model::Mlp(Mlp {
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
            Some(dir) => Model::Llama(Llama::Dir(dir)),
            None => {
                let heads = m.need("heads")?.a_usize(0)?;
                let dim = m.need("dim")?.a_usize(0)?;
                Model::Llama(Llama::Dims(LlamaDims {
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
                Task::Classification
            } else {
                Task::Regression
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
    let batch = t.need("batch-size")?;
    let batch_size = match batch.arg(0)? {
        KdlValue::String(_) => BatchSize::Auto,
        v => BatchSize::Fixed(uint(v).ok_or("bad batch size")?),
    };
    let o = t.need("optimizer")?;
    let wd = || o.p_f64("weight-decay");
    let kind = match o.kind()? {
        "sgd" => OptimizerKind::Sgd {
            momentum: o.p_f64("momentum")?,
            dampening: o.p_f64("dampening")?,
            nesterov: o.p_bool("nesterov")?,
            weight_decay: wd()?,
        },
        k @ ("adam" | "adamw") => {
            let (beta1, beta2, eps, amsgrad, weight_decay) = (
                o.p_f64("beta1")?,
                o.p_f64("beta2")?,
                o.p_f64("eps")?,
                o.p_bool("amsgrad")?,
                wd()?,
            );
            if k == "adam" {
                OptimizerKind::Adam {
                    beta1,
                    beta2,
                    eps,
                    amsgrad,
                    weight_decay,
                }
            } else {
                OptimizerKind::Adamw {
                    beta1,
                    beta2,
                    eps,
                    amsgrad,
                    weight_decay,
                }
            }
        }
        "rmsprop" => OptimizerKind::Rmsprop {
            alpha: o.p_f64("alpha")?,
            eps: o.p_f64("eps")?,
            momentum: o.p_f64("momentum")?,
            centered: o.p_bool("centered")?,
            weight_decay: wd()?,
        },
        "adagrad" => OptimizerKind::Adagrad {
            lr_decay: o.p_f64("lr-decay")?,
            eps: o.p_f64("eps")?,
            initial_accumulator: o.p_f64("initial-accumulator")?,
            weight_decay: wd()?,
        },
        "lion" => OptimizerKind::Lion {
            beta1: o.p_f64("beta1")?,
            beta2: o.p_f64("beta2")?,
            weight_decay: wd()?,
        },
        other => return Err(format!("unknown optimizer `{other}`")),
    };
    let optimizer = Optimizer {
        lr: o.p_f64("lr")?,
        decay_all: o.p_bool("decay-all")?,
        kind,
    };
    Ok(Train {
        length,
        batch_size,
        gradient_accumulation: t.need("gradient-accumulation")?.a_usize(0)?,
        optimizer,
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

/// The number of training examples of a synthetic dataset, known before any data is made.
pub fn synthetic_train_examples(data: &DataSource) -> Option<usize> {
    let split =
        |samples: usize, val: f64| samples - ((samples as f64 * val).round() as usize).min(samples);
    match data {
        DataSource::Regression {
            samples,
            validation_fraction,
            ..
        }
        | DataSource::Classification {
            samples,
            validation_fraction,
            ..
        }
        | DataSource::Copy {
            samples,
            validation_fraction,
            ..
        } => Some(split(*samples, *validation_fraction)),
        DataSource::ModularAddition {
            modulus,
            train_fraction,
        } => Some(((modulus * modulus) as f64 * train_fraction).round() as usize),
        _ => None,
    }
}

/// Tokens in one example of a synthetic sequence task.
pub fn synthetic_sequence_length(data: &DataSource) -> Option<usize> {
    match data {
        // a b = c
        DataSource::ModularAddition { .. } => Some(4),
        // x₁…xₙ SEP x₁…xₙ, less the last token (it is only a target)
        DataSource::Copy { length, .. } => Some(2 * length),
        _ => None,
    }
}

/// The cross-field rules of one run, pointing at the values that break them.
pub fn rules(experiment: &Node, spec: &RunSpec) -> Vec<Diag> {
    let mut out = Vec::new();
    let find = |path: &[&str]| -> Option<&Node> {
        path.iter().try_fold(experiment, |n, name| n.child(name))
    };
    let prop_at = |path: &[&str], name: &str| {
        find(path)
            .and_then(|n| n.prop(name))
            .map(|e| (e.source, e.span))
    };
    let node_at = |path: &[&str]| find(path).map(|n| (n.source, n.name_span));
    let arg_at = |path: &[&str]| {
        find(path)
            .and_then(|n| n.arg(0))
            .map(|e| (e.source, e.span))
    };
    let here = (experiment.source, experiment.name_span);

    let train = &spec.train;
    if let Length::Steps(steps) = train.length {
        if let Some(Warmup::Steps(w)) = train.schedule.warmup
            && w >= steps
        {
            let (source, span) = prop_at(&["train", "schedule"], "warmup-steps").unwrap_or(here);
            out.push(diag(
                source,
                RunError::WarmupTooLong {
                    warmup: w,
                    steps,
                    span,
                },
            ));
        }
        // (log has no such rule: it also logs at the last step, and its default of 10 must
        // not fail a short run.)
        for (what, every, consequence) in [
            (
                "eval",
                train.eval.map(|e| e.every),
                "evaluation would run only once, at the end",
            ),
            (
                "checkpoint",
                train.checkpoint.map(|c| c.every),
                "no checkpoint would ever be written",
            ),
        ] {
            if let Some(every) = every
                && every > steps
            {
                let entry = find(&["train", what]).and_then(|n| n.prop("every"));
                let default = if entry.is_some_and(|e| e.origin == Origin::Default) {
                    " (the default)"
                } else {
                    ""
                };
                let (source, span) = entry
                    .map(|e| (e.source, e.span))
                    .or(node_at(&["train", what]))
                    .unwrap_or(here);
                let help = format!("{consequence}; use an interval of at most {steps}");
                out.push(diag(
                    source,
                    RunError::IntervalTooLong {
                        what,
                        every,
                        steps,
                        default,
                        span,
                        help,
                    },
                ));
            }
        }
    }
    if train.eval.is_none() {
        if train.early_stop.is_some() {
            let (source, span) = node_at(&["train", "early-stop"]).unwrap_or(here);
            out.push(diag(
                source,
                RunError::NeedsEval {
                    what: "early-stop",
                    span,
                },
            ));
        }
        if matches!(train.schedule.kind, ScheduleKind::ReduceOnPlateau { .. }) {
            let (source, span) = arg_at(&["train", "schedule"]).unwrap_or(here);
            out.push(diag(
                source,
                RunError::NeedsEval {
                    what: "reduce-on-plateau",
                    span,
                },
            ));
        }
    }
    let sequence_data = matches!(
        spec.data.source,
        DataSource::ModularAddition { .. }
            | DataSource::Copy { .. }
            | DataSource::Text { .. }
            | DataSource::Jsonl { .. }
    );
    let data_kind = find(&["data"])
        .and_then(|d| d.arg(0))
        .and_then(|a| a.as_str())
        .unwrap_or("")
        .to_owned();
    let (model_source, model_span) = arg_at(&["model"]).or(node_at(&["model"])).unwrap_or(here);
    match &spec.model {
        Model::Mlp(_) if sequence_data => out.push(diag(
            model_source,
            RunError::ModelData {
                model: "mlp".into(),
                data: data_kind.clone(),
                span: model_span,
                help: "token sequences need a sequence model: use `model \"llama\"`".into(),
            },
        )),
        Model::Llama(_) if !sequence_data => out.push(diag(
            model_source,
            RunError::ModelData {
                model: "llama".into(),
                data: data_kind.clone(),
                span: model_span,
                help: "tabular data needs `model \"mlp\"`".into(),
            },
        )),
        Model::Llama(Llama::Dims(l)) => {
            let at = |name: &str| arg_at(&["model", name]).unwrap_or((model_source, model_span));
            if l.dim % l.heads != 0 {
                let (source, span) = at("heads");
                let help = format!("use a head count that divides {}", l.dim);
                out.push(diag(
                    source,
                    RunError::ModelShape {
                        message: format!("{} heads do not divide dim {}", l.heads, l.dim),
                        span,
                        help,
                    },
                ));
            } else if (l.dim / l.heads) % 2 != 0 {
                let (source, span) = at("heads");
                let help = "rotary embeddings rotate pairs of dimensions; choose dim / heads even"
                    .to_owned();
                let message = format!(
                    "head size {} (dim {} / {} heads) is odd",
                    l.dim / l.heads,
                    l.dim,
                    l.heads
                );
                out.push(diag(
                    source,
                    RunError::ModelShape {
                        message,
                        span,
                        help,
                    },
                ));
            }
            if l.heads % l.kv_heads != 0 {
                let (source, span) = at("kv-heads");
                let help = format!(
                    "grouped-query attention shares each key/value head among heads / kv-heads; use a divisor of {}",
                    l.heads
                );
                let message = format!("{} kv-heads do not divide {} heads", l.kv_heads, l.heads);
                out.push(diag(
                    source,
                    RunError::ModelShape {
                        message,
                        span,
                        help,
                    },
                ));
            }
            if let Some(lora) = &spec.lora
                && lora.rank > l.dim
            {
                let (source, span) = prop_at(&["lora"], "rank").unwrap_or(here);
                out.push(diag(
                    source,
                    RunError::LoraRank {
                        rank: lora.rank,
                        dim: l.dim,
                        span,
                    },
                ));
            }
            if let Some(needed) = synthetic_sequence_length(&spec.data.source)
                && l.context < needed
            {
                let (source, span) = at("context");
                out.push(diag(
                    source,
                    RunError::ContextTooShort {
                        context: l.context,
                        needed,
                        data: data_kind,
                        span,
                    },
                ));
            }
        }
        _ => {}
    }
    if let (Some(batch), Some(examples)) = (
        train.effective_batch(),
        synthetic_train_examples(&spec.data.source),
    ) && batch > examples
    {
        let (source, span) = arg_at(&["train", "batch-size"]).unwrap_or(here);
        out.push(diag(
            source,
            RunError::BatchTooLarge {
                batch,
                examples,
                span,
            },
        ));
    }
    out
}
