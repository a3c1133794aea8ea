//! Front-end speed, medians of repeated runs (`cargo bench --bench validate`):
//! - `xp validate` on a generated 10,000-line file (many experiments, each with templates, a
//!   sweep and every kind of node);
//! - validating and planning one sweep of 10,000 runs (a 100 × 100 grid with templates, vars
//!   and a name template): expansion, per-run checks, resolution, names and ids;
//! - 16,000 `vars`, each read by the next, and 20,000 diagnostics rendered for humans and as
//!   JSON: both were quadratic once (54 s and 7 s), and must stay linear.

use std::time::{Duration, Instant};

use xp::diagnostic::render::Renderer;
use xp::front::validate_text;

/// About `lines` lines of valid experiments.
fn generate(lines: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    while out.lines().count() < lines {
        out.push_str(&format!(
            r#"experiment "bench-{i}" {{
    description "generated experiment {i}"
    seed {i}
    objective "val/loss" "minimize"
    model "llama" {{
        layers 2; heads 4; dim 128; context 64
    }}
    lora rank="{{{{ rank }}}}" alpha="{{{{ rank * 2 }}}}" dropout=0.05 {{
        targets "q_proj" "v_proj"
    }}
    data "modular-addition" modulus=97 train-fraction=0.5
    vars {{
        total 1000
    }}
    train {{
        steps "{{{{ total }}}}"
        batch-size 64
        optimizer "adamw" lr="{{{{ lr }}}}" weight-decay=0.1 beta2=0.98
        schedule "cosine" warmup-ratio=0.1 min-lr-ratio=0.1
        grad-clip 1.0
        eval every=100 batches=8
        checkpoint every=500 keep=2
    }}
    sweep {{
        grid {{
            lr 1e-3 3e-3 1e-2
            rank 4 8 16
        }}
        exclude lr=1e-2 rank=16
        repeat 2
    }}
    name "r{{{{ rank }}}}-lr{{{{ lr }}}}-s{{{{ seed }}}}"
}}
"#
        ));
        i += 1;
    }
    out
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One experiment whose sweep has `n × n` runs.
fn big_sweep(n: usize) -> String {
    let values = |scale: f64| {
        (1..=n)
            .map(|i| format!("{}", i as f64 * scale))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        r#"experiment "big" {{
    seed 1
    model "llama" {{
        layers 2; heads 4; dim 64; context 8
    }}
    lora rank=8 alpha="{{{{ alpha }}}}" dropout=0.0
    data "modular-addition" modulus=97
    vars {{
        total 1000
        warm "{{{{ total // 10 }}}}"
    }}
    train {{
        steps "{{{{ total }}}}"
        batch-size 64
        optimizer "adamw" lr="{{{{ lr }}}}" weight-decay=0.1
        schedule "cosine" warmup-steps="{{{{ warm }}}}"
        eval every=100
    }}
    sweep {{
        grid {{
            lr {}
            alpha {}
        }}
    }}
    name "lr{{{{ lr }}}}-a{{{{ alpha }}}}"
}}
"#,
        values(1e-5),
        values(0.5)
    )
}

/// An experiment with `n` vars, each computed from the one before; training reads the last.
fn many_vars(n: usize) -> String {
    let vars: String = (1..n)
        .map(|i| format!("        v{i} \"{{{{ v{} + 1 }}}}\"\n", i - 1))
        .collect();
    format!(
        "experiment \"vars\" {{\n    data \"regression\" features=8 samples=64\n    model \"mlp\" {{ hidden 8 }}\n    train {{ steps \"{{{{ v{} }}}}\" }}\n    vars {{\n        v0 1\n{vars}    }}\n}}\n",
        n - 1
    )
}

/// An experiment with `n` unknown nodes: `n` diagnostics.
fn many_mistakes(n: usize) -> String {
    let nodes: String = (0..n).map(|i| format!("    bogus{i} 1\n")).collect();
    format!(
        "experiment \"typos\" {{\n    data \"regression\" features=8 samples=64\n    model \"mlp\" {{ hidden 8 }}\n    train {{ steps 10 }}\n{nodes}}}\n"
    )
}

/// The median of `runs` timings of `f`, in milliseconds.
fn time_ms<T>(runs: usize, mut f: impl FnMut() -> T) -> f64 {
    let samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    median(samples).as_secs_f64() * 1e3
}

fn scale() {
    let vars = many_vars(16_000);
    let checked = validate_text("vars.kdl", &vars);
    assert!(
        checked.diags.is_empty(),
        "{:?}",
        checked.diags.iter().next()
    );
    println!("vars: 16,000, each reading the one before");
    println!(
        "  validate + plan  median {:>8.1} ms",
        time_ms(3, || validate_text("vars.kdl", &vars))
    );

    let mistakes = many_mistakes(20_000);
    let checked = validate_text("typos.kdl", &mistakes);
    assert_eq!(checked.diags.len(), 20_000);
    let renderer = Renderer::new(false);
    println!("diagnostics: 20,000 in one file");
    println!(
        "  human            median {:>8.1} ms",
        time_ms(3, || renderer.render(&checked.diags, &checked.sources))
    );
    println!(
        "  json             median {:>8.1} ms",
        time_ms(3, || serde_json::to_string(
            &checked.diags.to_json(&checked.sources)
        ))
    );
}

fn main() {
    scale();
    let sweep = big_sweep(100);
    let checked = validate_text("sweep.kdl", &sweep);
    assert!(
        checked.diags.is_empty(),
        "the generated sweep must be valid: {:?}",
        checked.diags.iter().next()
    );
    assert_eq!(checked.plans[0].runs.len(), 10_000);
    let samples: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(validate_text("sweep.kdl", &sweep));
            start.elapsed()
        })
        .collect();
    println!("plan: 10,000-run sweep");
    println!(
        "  validate + plan  median {:>8.1} ms",
        median(samples).as_secs_f64() * 1e3
    );

    let text = generate(10_000);
    let lines = text.lines().count();
    let checked = validate_text("bench.kdl", &text);
    assert!(
        checked.diags.is_empty(),
        "the generated file must be valid: {:?}",
        checked.diags.iter().next()
    );

    let mut samples = Vec::new();
    for _ in 0..11 {
        let start = Instant::now();
        let checked = validate_text("bench.kdl", &text);
        samples.push(start.elapsed());
        std::hint::black_box(checked);
    }
    let parse: Vec<Duration> = (0..11)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(kdl::KdlDocument::parse(&text).ok());
            start.elapsed()
        })
        .collect();
    let total = median(samples);
    let parse = median(parse);
    println!("validate: {lines} lines, {} bytes", text.len());
    println!(
        "  parse (kdl)      median {:>8.1} ms",
        parse.as_secs_f64() * 1e3
    );
    println!(
        "  parse + check    median {:>8.1} ms",
        total.as_secs_f64() * 1e3
    );
}
