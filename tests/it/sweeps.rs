//! Sweep expansion, templates, composition and overrides, checked by hand on small experiments.

use std::path::PathBuf;

use xp::front::plan::Plan;
use xp::front::{Checked, Overrides, validate_files, validate_text};
use xp::spec::{BatchSize, Length, OptimizerKind, ScheduleKind, Warmup};

fn checked(text: &str) -> Checked {
    validate_text("test.kdl", text)
}

fn plan(text: &str) -> Plan {
    let c = checked(text);
    let errors: Vec<String> = c
        .diags
        .iter()
        .filter(|d| d.severity() != miette::Severity::Advice)
        .map(|d| format!("{d:?}"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(c.plans.len(), 1);
    c.plans.into_iter().next().unwrap()
}

fn codes(text: &str) -> Vec<String> {
    checked(text).diags.iter().map(|d| d.code()).collect()
}

fn messages(text: &str) -> Vec<String> {
    checked(text)
        .diags
        .iter()
        .map(|d| d.inner.to_string())
        .collect()
}

fn names(p: &Plan) -> Vec<&str> {
    p.runs.iter().map(|r| r.name.as_str()).collect()
}

/// An experiment around a sweep block, with `lr`, `rank` and (when swept) `batch` read by settings.
fn experiment(sweep: &str) -> String {
    let batch = if sweep.contains("batch") {
        "\"{{ batch }}\""
    } else {
        "16"
    };
    format!(
        r#"experiment "e" {{
    seed 10
    model "llama" {{ dim 64; context 8 }}
    lora rank="{{{{ rank }}}}" alpha="{{{{ rank * 2 }}}}"
    data "modular-addition" modulus=13
    train {{
        steps 100
        batch-size {batch}
        optimizer "adamw" lr="{{{{ lr }}}}"
    }}
    sweep {{
{sweep}
    }}
}}
"#
    )
}

#[test]
fn grid_with_an_exclusion_and_repeat_gives_sixteen_runs_in_order() {
    let p = plan(&experiment(
        "        grid {\n            lr 1e-3 3e-3 1e-2\n            rank 4 8 16\n        }\n        exclude lr=1e-2 rank=16\n        repeat 2",
    ));
    assert_eq!(p.runs.len(), 16);
    // Last axis fastest, seeds fastest of all; the excluded point is missing.
    let expected = [
        "lr=0.001,rank=4,seed=10",
        "lr=0.001,rank=4,seed=11",
        "lr=0.001,rank=8,seed=10",
        "lr=0.001,rank=8,seed=11",
        "lr=0.001,rank=16,seed=10",
        "lr=0.001,rank=16,seed=11",
        "lr=0.003,rank=4,seed=10",
        "lr=0.003,rank=4,seed=11",
        "lr=0.003,rank=8,seed=10",
        "lr=0.003,rank=8,seed=11",
        "lr=0.003,rank=16,seed=10",
        "lr=0.003,rank=16,seed=11",
        "lr=0.01,rank=4,seed=10",
        "lr=0.01,rank=4,seed=11",
        "lr=0.01,rank=8,seed=10",
        "lr=0.01,rank=8,seed=11",
    ];
    assert_eq!(names(&p), expected);
    let r = &p.runs[5];
    assert_eq!(r.seed, 11);
    assert_eq!(r.config.seed, 11);
    assert_eq!(r.config.lora.as_ref().unwrap().rank, 16);
    assert_eq!(r.config.lora.as_ref().unwrap().alpha, 32.0);
    assert_eq!(r.config.train.optimizer.lr, 0.001);
    // Ids hash the resolved config: all distinct, stable across plans.
    let again = plan(&experiment(
        "        grid {\n            lr 1e-3 3e-3 1e-2\n            rank 4 8 16\n        }\n        exclude lr=1e-2 rank=16\n        repeat 2",
    ));
    let ids: std::collections::BTreeSet<&str> = p.runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 16);
    assert_eq!(
        p.runs.iter().map(|r| &r.id).collect::<Vec<_>>(),
        again.runs.iter().map(|r| &r.id).collect::<Vec<_>>()
    );
}

#[test]
fn zip_pairs_element_by_element_and_blocks_combine_by_product() {
    let p = plan(&experiment(
        "        grid {\n            rank 4 8\n        }\n        zip {\n            lr 1e-3 1e-2\n            batch 16 32\n        }",
    ));
    assert_eq!(
        names(&p),
        [
            "rank=4,lr=0.001,batch=16",
            "rank=4,lr=0.01,batch=32",
            "rank=8,lr=0.001,batch=16",
            "rank=8,lr=0.01,batch=32"
        ]
    );
    assert_eq!(
        p.runs[1].config.train.batch_size,
        Some(BatchSize::Fixed(32))
    );
    assert_eq!(
        codes(&experiment(
            "        zip {\n            lr 1e-3 1e-2\n            rank 4\n        }"
        )),
        ["xp::sweep::zip-length"]
    );
}

#[test]
fn random_is_deterministic_from_its_seed_and_in_range() {
    let sweep = |seed: u32| {
        experiment(&format!(
            "        random count=6 seed={seed} {{\n            lr \"log-uniform\" 1e-4 1e-2\n            rank \"choice\" 4 8 16\n        }}"
        ))
    };
    let a = plan(&sweep(1));
    let b = plan(&sweep(1));
    let c = plan(&sweep(2));
    let lrs = |p: &Plan| {
        p.runs
            .iter()
            .map(|r| r.config.train.optimizer.lr)
            .collect::<Vec<_>>()
    };
    assert_eq!(lrs(&a), lrs(&b));
    assert_ne!(lrs(&a), lrs(&c));
    assert_eq!(a.runs.len(), 6);
    for r in &a.runs {
        assert!((1e-4..=1e-2).contains(&r.config.train.optimizer.lr));
        assert!([4, 8, 16].contains(&r.config.lora.as_ref().unwrap().rank));
    }
    // Adding an axis to the block leaves the other axes' values as they were.
    let wider = plan(&experiment(
        "        random count=6 seed=1 {\n            lr \"log-uniform\" 1e-4 1e-2\n            rank \"choice\" 4 8 16\n            batch \"int-uniform\" 8 12\n        }",
    ));
    assert_eq!(lrs(&wider), lrs(&a));
    for r in &wider.runs {
        assert!(matches!(
            r.config.train.batch_size,
            Some(BatchSize::Fixed(8..=12))
        ));
    }
    // Independent of other blocks: a grid before it does not change its draws.
    let with_grid = plan(&experiment(
        "        grid {\n            batch 16 32\n        }\n        random count=6 seed=1 {\n            lr \"log-uniform\" 1e-4 1e-2\n            rank \"choice\" 4 8 16\n        }",
    ));
    assert_eq!(lrs(&with_grid)[..6], lrs(&a)[..]);
    assert_eq!(lrs(&with_grid)[6..], lrs(&a)[..]);
}

#[test]
fn include_appends_and_when_excludes() {
    let p = plan(&experiment(
        "        grid {\n            lr 1e-3 1e-2\n            rank 4 8\n        }\n        exclude when=\"{{ lr > 0.005 and rank > 4 }}\"\n        include lr=0.1 rank=2",
    ));
    assert_eq!(
        names(&p),
        [
            "lr=0.001,rank=4",
            "lr=0.001,rank=8",
            "lr=0.01,rank=4",
            "lr=0.1,rank=2"
        ]
    );
    assert_eq!(
        codes(&experiment(
            "        grid {\n            lr 1e-3\n            rank 4\n        }\n        include lr=0.1"
        )),
        ["xp::sweep::include-axes"]
    );
    assert_eq!(
        codes(&experiment(
            "        grid {\n            lr 1e-3\n            rank 4\n        }\n        exclude lr=1e-3"
        )),
        ["xp::sweep::empty"]
    );
}

#[test]
fn templates_keep_their_type_render_text_and_none_unsets() {
    let p = plan(
        r#"experiment "t" {
    model "llama" { dim 64; context 8 }
    data "modular-addition" modulus=13
    train {
        steps "{{ 50 * 2 }}"
        batch-size "1{{ 6 }}"
        optimizer "{{ opt }}" lr="{{ 0.5 / 100 }}"
        schedule "cosine" warmup-steps="{{ none }}"
        grad-clip "{{ clip }}"
    }
    sweep {
        grid {
            opt "adamw" "sgd"
            clip 1.0 #null
        }
    }
    name "{{ opt }}-{{ clip }}"
}
"#,
    );
    assert_eq!(
        names(&p),
        ["adamw-1.0", "adamw-None", "sgd-1.0", "sgd-None"]
    );
    let r = &p.runs[0].config;
    assert_eq!(r.train.length, Length::Steps(100));
    assert_eq!(r.train.batch_size, Some(BatchSize::Fixed(16)));
    assert_eq!(r.train.optimizer.lr, 0.005);
    assert_eq!(r.train.grad_clip, Some(1.0));
    assert_eq!(r.train.schedule.warmup, None);
    assert_eq!(p.runs[1].config.train.grad_clip, None);
    assert!(matches!(
        p.runs[2].config.train.optimizer.kind,
        OptimizerKind::Sgd(_)
    ));
}

#[test]
fn a_node_whose_when_is_false_is_dropped() {
    let p = plan(
        r#"experiment "w" {
    model "llama" { dim 64; context 8 }
    data "modular-addition" modulus=13
    train {
        steps 100
        optimizer "adamw" lr="{{ lr }}"
        grad-clip 0.5 when="{{ lr > 0.005 }}"
    }
    sweep {
        grid {
            lr 1e-3 1e-2
        }
    }
}
"#,
    );
    assert_eq!(p.runs[0].config.train.grad_clip, None);
    assert_eq!(p.runs[1].config.train.grad_clip, Some(0.5));
}

#[test]
fn vars_are_constants_and_may_derive_from_axes() {
    let p = plan(
        r#"experiment "v" {
    model "llama" { dim 64; context 8 }
    data "modular-addition" modulus=13
    vars {
        total 200
        warm "{{ total // 10 }}"
        peak "{{ base_lr * 10 }}"
    }
    train {
        steps "{{ total }}"
        optimizer "adamw" lr="{{ peak }}"
        schedule "linear" warmup-steps="{{ warm }}"
    }
    sweep {
        grid {
            base_lr 1e-4 2e-4
        }
    }
}
"#,
    );
    let r = &p.runs[1].config;
    assert_eq!(r.train.length, Length::Steps(200));
    assert_eq!(r.train.schedule.warmup, Some(Warmup::Steps(20)));
    assert!((r.train.optimizer.lr - 2e-3).abs() < 1e-15);
}

#[test]
fn defaults_and_aliases_resolve_to_canonical_form() {
    let p = plan(
        "experiment \"d\" {\n    data \"regression\"\n    train {\n        optimizer \"AdamW\"\n        schedule \"StepLR\" step-size=10\n    }\n}\n",
    );
    assert_eq!(names(&p), ["run"]);
    let r = &p.runs[0];
    assert!(
        matches!(r.config.train.optimizer.kind, OptimizerKind::Adamw(a) if a.weight_decay == 0.01)
    );
    assert!(
        matches!(r.config.train.schedule.kind, ScheduleKind::Step { step_size: 10, gamma } if gamma == 0.1)
    );
    assert_eq!(r.config.train.length, Length::Steps(1000));
    assert!(
        r.config_kdl.contains("optimizer \"adamw\" lr=0.001"),
        "{}",
        r.config_kdl
    );
    assert!(
        r.config_kdl.contains("schedule \"step\""),
        "{}",
        r.config_kdl
    );
    // The canonical form is itself a valid experiment that resolves to the same config.
    let again = plan(&r.config_kdl);
    assert_eq!(again.runs[0].config, r.config);
    assert_eq!(again.runs[0].id, r.id);
}

#[test]
fn per_run_errors_name_the_point_and_count_the_failures() {
    let text = experiment(
        "        grid {\n            lr 1e-3 3e-3 1e-2\n            rank 4 8 128\n        }\n        repeat 2",
    );
    let m = messages(&text);
    assert_eq!(
        m,
        [
            "LoRA rank 128 is larger than the model dimension 64 (at lr=0.001, rank=128, seed=10; fails for 6 of 18 runs)"
        ]
    );
    let c = checked(&text);
    let d = c.diags.iter().next().unwrap();
    let label = d.inner.labels().unwrap().next().unwrap();
    // The label points at the template that produced the value.
    assert_eq!(
        &c.sources.get(d.source.unwrap()).text[label.offset()..label.offset() + label.len()],
        "\"{{ rank }}\""
    );
}

#[test]
fn schema_errors_of_expanded_values_point_at_the_template() {
    let text =
        experiment("        grid {\n            lr 1e-3 -1.0\n            rank 4\n        }");
    assert_eq!(
        messages(&text),
        ["-1.0 is out of range: must be > 0 (at lr=-1.0, rank=4; fails for 1 of 2 runs)"]
    );
}

#[test]
fn names_must_be_unique_and_usable() {
    let text =
        experiment("        grid {\n            lr 1e-3 1e-2\n            rank 4\n        }")
            .replace("    seed 10\n", "    seed 10\n    name \"r{{ rank }}\"\n");
    assert_eq!(codes(&text), ["xp::sweep::name-collision"]);
    let text = experiment("        grid {\n            lr 1e-3\n            rank 4\n        }")
        .replace("    seed 10\n", "    seed 10\n    name \"a/{{ rank }}\"\n");
    assert_eq!(codes(&text), ["xp::sweep::bad-name"]);
}

#[test]
fn points_with_the_same_config_are_an_error() {
    let text =
        experiment("        grid {\n            lr 1e-3 0.001\n            rank 4\n        }");
    assert_eq!(codes(&text), ["xp::sweep::duplicate-config"]);
}

#[test]
fn no_sweep_is_one_run_named_run() {
    let p = plan(
        "experiment \"one\" {\n    data \"classification\" classes=3\n    train { steps 20 }\n}\n",
    );
    assert_eq!(names(&p), ["run"]);
    assert_eq!(p.runs[0].axes, []);
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn extends_chains_merge_by_name_and_recursively() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "base/root.kdl",
        "experiment \"root\" {\n    seed 3\n    data \"regression\" samples=512\n    train {\n        steps 100\n        optimizer \"sgd\" lr=0.1 momentum=0.9\n        eval every=10\n    }\n}\n",
    );
    write(
        dir.path(),
        "base/middle.kdl",
        "experiment \"middle\" {\n    extends \"root.kdl\"\n    model \"mlp\" { hidden 32 32 }\n    train {\n        steps 300\n    }\n}\n",
    );
    let top = write(
        dir.path(),
        "top.kdl",
        "experiment \"top\" {\n    extends \"base/middle.kdl\"\n    train {\n        optimizer \"adamw\" lr=\"{{ lr }}\"\n    }\n    sweep {\n        grid {\n            lr 1e-3 1e-2\n        }\n    }\n}\n",
    );
    let c = validate_files(&[top], &Overrides::default());
    assert!(c.diags.is_empty(), "{:?}", c.diags);
    let p = &c.plans[0];
    assert_eq!(p.experiment, "top");
    let r = &p.runs[0].config;
    assert_eq!(r.seed, 3);
    assert_eq!(r.train.length, Length::Steps(300));
    assert_eq!(r.train.eval.unwrap().every, 10);
    assert!(matches!(&r.model, xp::spec::Model::Mlp(m) if m.hidden == [32, 32]));
    // A node given again replaces the base's: the optimizer is adamw with its own defaults.
    assert!(matches!(r.train.optimizer.kind, OptimizerKind::Adamw(_)));
    assert_eq!(r.train.optimizer.lr, 0.001);
}

#[test]
fn extends_errors_point_at_the_extends_and_into_the_base() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.kdl",
        "experiment \"a\" {\n    extends \"b.kdl\"\n}\n",
    );
    write(
        dir.path(),
        "b.kdl",
        "experiment \"b\" {\n    extends \"a.kdl\"\n}\n",
    );
    let c = validate_files(&[dir.path().join("a.kdl")], &Overrides::default());
    assert_eq!(
        c.diags.iter().map(|d| d.code()).collect::<Vec<_>>(),
        ["xp::extends::cycle"]
    );

    write(
        dir.path(),
        "base.kdl",
        "experiment \"base\" {\n    data \"regression\" samples=1\n}\n",
    );
    write(
        dir.path(),
        "child.kdl",
        "experiment \"child\" {\n    extends \"base.kdl\"\n}\n",
    );
    let c = validate_files(&[dir.path().join("child.kdl")], &Overrides::default());
    let d = c.diags.iter().next().unwrap();
    assert_eq!(d.code(), "xp::schema::out-of-range");
    assert!(c.sources.get(d.source.unwrap()).name.ends_with("base.kdl"));
    let help = d.inner.help().unwrap().to_string();
    assert!(
        help.contains("which") && help.contains("child.kdl") && help.contains("extends"),
        "{help}"
    );
}

#[test]
fn overrides_set_values_and_axes_and_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "e.kdl",
        &experiment("        grid {\n            lr 1e-3 1e-2\n            rank 4\n        }"),
    );
    let overrides = Overrides {
        set: vec![
            "train.steps=50".into(),
            "train.optimizer.beta2=0.95".into(),
            "train.grad-clip=2".into(),
        ],
        axis: vec!["rank=8,16".into(), "lr=3e-4".into()],
    };
    let c = validate_files(std::slice::from_ref(&file), &overrides);
    assert!(c.diags.is_empty(), "{:?}", c.diags);
    let p = &c.plans[0];
    assert_eq!(names(p), ["lr=0.0003,rank=8", "lr=0.0003,rank=16"]);
    let r = &p.runs[0].config;
    assert_eq!(r.train.length, Length::Steps(50));
    assert_eq!(r.train.grad_clip, Some(2.0));
    assert!(matches!(r.train.optimizer.kind, OptimizerKind::Adamw(a) if a.beta2 == 0.95));
    assert_eq!(
        p.overrides,
        [
            "--set train.steps=50",
            "--set train.optimizer.beta2=0.95",
            "--set train.grad-clip=2",
            "--axis rank=8,16",
            "--axis lr=3e-4"
        ]
    );

    let bad = Overrides {
        set: vec!["train.stpes=5".into(), "nothing".into()],
        axis: vec!["=1".into()],
    };
    let c = validate_files(&[file], &bad);
    let found: Vec<String> = c.diags.iter().map(|d| d.code()).collect();
    assert_eq!(
        found,
        [
            "xp::override::unknown-path",
            "xp::override::syntax",
            "xp::override::syntax"
        ]
    );
    let help = c
        .diags
        .iter()
        .next()
        .unwrap()
        .inner
        .help()
        .unwrap()
        .to_string();
    assert_eq!(help, "did you mean `steps`?");
}

#[test]
fn cross_field_rules_reject_impossible_runs() {
    let base = |train: &str, model: &str| {
        format!(
            "experiment \"x\" {{\n    model {model}\n    data \"modular-addition\" modulus=13\n    train {{\n{train}\n    }}\n}}\n"
        )
    };
    let llama = "\"llama\" { dim 64; heads 4; context 8 }";
    assert_eq!(
        codes(&base(
            "        steps 10\n        schedule \"linear\" warmup-steps=10",
            llama
        )),
        ["xp::run::warmup-too-long"]
    );
    assert_eq!(
        codes(&base("        steps 10\n        eval every=20", llama)),
        ["xp::run::interval-too-long"]
    );
    assert_eq!(
        codes(&base("        steps 10\n        early-stop", llama)),
        ["xp::run::needs-eval"]
    );
    assert_eq!(
        codes(&base(
            "        steps 10",
            "\"llama\" { dim 64; heads 5; context 8 }"
        )),
        ["xp::run::model-shape"]
    );
    assert_eq!(
        codes(&base("        steps 10", "\"llama\" { dim 64; context 2 }")),
        ["xp::run::context-too-short"]
    );
    assert_eq!(
        codes(&base("        steps 10", "\"mlp\"")),
        ["xp::run::model-data"]
    );
    assert_eq!(
        codes(&base("        steps 10\n        batch-size 100", llama)),
        ["xp::run::batch-too-large"]
    );
    assert_eq!(
        codes(&base("        steps 10", llama)),
        Vec::<String>::new()
    );
}

#[test]
fn plan_prints_a_table_and_json_and_writes_nothing() {
    use super::support::{root, stderr, stdout, xp};
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "e.kdl",
        &experiment("        grid {\n            lr 1e-3 1e-2\n            rank 4 8\n        }"),
    );
    let out = xp(
        dir.path(),
        &["plan", file.to_str().unwrap(), "--set", "train.steps=40"],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "experiment `e`: 4 runs (with --set train.steps=40)"
    );
    assert!(
        lines[2].starts_with("name") && lines[2].contains("effective-batch"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("lr=0.001,rank=4 ")
            && lines[3].ends_with(" 16     40       0  18.9 MiB"),
        "{text}"
    );
    assert_eq!(lines.len(), 7);
    // Nothing written next to the experiment.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let out = xp(
        dir.path(),
        &["plan", file.to_str().unwrap(), "--format", "json"],
    );
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = plans[0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    assert_eq!(runs[3]["name"], "lr=0.01,rank=8");
    assert_eq!(runs[3]["axes"], serde_json::json!({"lr": 0.01, "rank": 8}));
    assert_eq!(runs[3]["config"]["train.optimizer.lr"], 0.01);
    assert_eq!(runs[3]["config"]["lora.rank"], 8);
    assert_eq!(runs[3]["id"].as_str().unwrap().len(), 12);
    assert!(runs[3]["estimated_memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(runs[3]["warmup_steps"], 0);
    assert!(runs[3]["estimated_memory"]["activations"].as_u64().unwrap() > 0);

    let out = xp(
        &root(),
        &[
            "plan",
            "experiments/quickstart.kdl",
            "--set",
            "train.stesp=1",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("did you mean `steps`?"));
}
