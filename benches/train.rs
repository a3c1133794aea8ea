//! Side-by-side CPU training benchmark: xp and PyTorch (benches/peer/llama_train.py, HF
//! LlamaForCausalLM) train the same Llama-architecture model on random tokens with AdamW —
//! same dimensions, batch, steps and thread count, in one run — and the ratio is printed.
//!
//! cargo bench --bench train                     # both models, 1 and 2 threads, 5 runs each
//! XP_BENCH_THREADS=2 XP_BENCH_RUNS=3 XP_BENCH_PYTHON=/path/to/python cargo bench --bench train
//! XP_BENCH_SHAPES=mid cargo bench --bench train  # only the shapes whose name contains "mid"
//!
//! The mid shape runs twice: every parameter training, and LoRA (rank 8 on q_proj and v_proj,
//! the base frozen) against PEFT's LoRA on the PyTorch side.
//!
//! Each measurement runs in its own process so the thread count (RAYON_NUM_THREADS for xp,
//! torch.set_num_threads for PyTorch) is fixed from the start. xp and PyTorch take turns, run
//! after run, so a change in the machine's load falls on both; each row prints every run's
//! ratio, and the median ratio with its spread (lowest to highest).

use std::process::Command;

// The same allocator as the xp binary (src/main.rs), so the benchmark measures what users run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

use candle_core::Device;
use xp::data::{Dataset, Examples, Task};
use xp::rng::Rng;
use xp::train::{Event, Sink};

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    vocab: usize,
    context: usize,
    layers: usize,
    heads: usize,
    dim: usize,
    hidden: usize,
    batch: usize,
    /// Timed steps: about two seconds of training either way.
    steps: usize,
    /// LoRA's rank on q_proj and v_proj (alpha twice the rank), the base frozen; `None`:
    /// every parameter trains.
    lora: Option<usize>,
}

/// A mid-sized model (8 layers, dim 256, vocab 8192, ctx 256), fully trained and with LoRA.
const MID: Shape = Shape {
    name: "mid (8×256, ctx 256)",
    vocab: 8192,
    context: 256,
    layers: 8,
    heads: 8,
    dim: 256,
    hidden: 1024,
    batch: 8,
    steps: 4,
    lora: None,
};

const SHAPES: [Shape; 4] = [
    Shape {
        name: "benchmark (4×128, ctx 128)",
        vocab: 256,
        context: 128,
        layers: 4,
        heads: 4,
        dim: 128,
        hidden: 512,
        batch: 16,
        steps: 30,
        lora: None,
    },
    Shape {
        name: "quickstart (1×64, ctx 4)",
        vocab: 25,
        context: 4,
        layers: 1,
        heads: 4,
        dim: 64,
        hidden: 256,
        batch: 64,
        steps: 500,
        lora: None,
    },
    MID,
    Shape {
        name: "mid LoRA r8 q,v",
        lora: Some(8),
        ..MID
    },
];
const WARMUP: usize = 3;

/// Records when each step's metrics arrive.
struct Times(Vec<(usize, Instant)>);

impl Sink for Times {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        if let Event::Metrics { step, .. } = event {
            self.0.push((*step, Instant::now()));
        }
        Ok(())
    }
}

/// Trains in this process and returns tokens per second over the timed steps.
fn xp_tokens_per_s(s: Shape) -> f64 {
    let lora = s.lora.map_or(String::new(), |r| {
        format!(
            "lora rank={r} alpha={} {{ targets \"q_proj\" \"v_proj\"; }}",
            2 * r
        )
    });
    let experiment = format!(
        r#"experiment "bench" {{
    model "llama" {{
        layers {}; heads {}; dim {}; hidden {}; context {}; vocab {}
    }}
    {lora}
    data "copy" length=1 vocab=4 samples=100000
    train {{
        steps {}
        batch-size {}
        optimizer "adamw" lr=1e-3 weight-decay=0.01
        log every=1
    }}
}}"#,
        s.layers,
        s.heads,
        s.dim,
        s.hidden,
        s.context,
        s.vocab,
        WARMUP + s.steps,
        s.batch
    );
    let checked = xp::front::validate_text("bench.kdl", &experiment);
    let Some(plan) = checked.plans.first() else {
        panic!("the benchmark experiment is invalid: {:?}", checked.diags)
    };
    let spec = &plan.runs[0].config;
    let mut rng = Rng::new(1);
    let n = s.batch * (WARMUP + s.steps);
    let rows: Vec<Vec<u32>> = (0..n)
        .map(|_| (0..=s.context).map(|_| rng.below(s.vocab) as u32).collect())
        .collect();
    let inputs = rows.iter().map(|r| r[..s.context].to_vec()).collect();
    let targets = rows
        .iter()
        .map(|r| r[1..].iter().map(|&t| i64::from(t)).collect())
        .collect();
    let train = Examples::Tokens { inputs, targets };
    let data = Dataset {
        task: Task::Language { vocab: s.vocab },
        validation: train.select(&[]),
        train,
        pad: 0,
        truncated: 0,
        skipped: 0,
    };
    let device = Device::Cpu;
    let built =
        xp::model::build(spec, &data, Default::default(), true, "", &device).expect("model");
    let mut times = Times(Vec::new());
    xp::train::train(spec, &data, &built, &device, &mut times).expect("training");
    let start = times
        .0
        .iter()
        .find(|(step, _)| *step == WARMUP)
        .map(|(_, t)| *t)
        .expect("warmup step");
    let end = times.0.last().map(|(_, t)| *t).expect("last step");
    (s.steps * s.batch * s.context) as f64 / end.duration_since(start).as_secs_f64()
}

fn peer_tokens_per_s(s: Shape, threads: usize, python: &str) -> Result<f64, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peer/llama_train.py");
    let args = [
        ("--threads", threads),
        ("--vocab", s.vocab),
        ("--context", s.context),
        ("--layers", s.layers),
        ("--heads", s.heads),
        ("--dim", s.dim),
        ("--hidden", s.hidden),
        ("--batch", s.batch),
        ("--warmup", WARMUP),
        ("--steps", s.steps),
        ("--lora", s.lora.unwrap_or(0)),
    ];
    let mut cmd = Command::new(python);
    cmd.arg(script);
    for (k, v) in args {
        cmd.arg(k).arg(v.to_string());
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or("failed")
            .to_owned());
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(line.trim()).map_err(|e| e.to_string())?;
    json["tokens_per_s"]
        .as_f64()
        .ok_or_else(|| "no tokens_per_s".into())
}

fn main() {
    // SAFETY: the first thing the process does; no other thread exists yet.
    unsafe { xp::train::threads::configure() };
    // A child measuring xp alone: `train <shape index>`.
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--xp-child") {
        let shape = SHAPES[args[i + 1].parse::<usize>().expect("shape index")];
        println!("{}", xp_tokens_per_s(shape));
        return;
    }
    let threads: Vec<usize> = std::env::var("XP_BENCH_THREADS")
        .map(|t| t.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|_| vec![1, 2]);
    let runs: usize = std::env::var("XP_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5)
        .max(1);
    let python = std::env::var("XP_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    // Only the shapes whose name contains this (e.g. "mid").
    let only = std::env::var("XP_BENCH_SHAPES").unwrap_or_default();
    let me = std::env::current_exe().expect("own path");
    println!(
        "{:<28} {:>7} {:>11} {:>14} {:>8}  median (min-max)",
        "model", "threads", "xp tokens/s", "torch tokens/s", "xp/torch"
    );
    for (index, shape) in SHAPES.iter().enumerate() {
        if !shape.name.contains(only.as_str()) {
            continue;
        }
        for &t in &threads {
            let mut ratios = Vec::new();
            for _ in 0..runs {
                let out = Command::new(&me)
                    .args(["--xp-child", &index.to_string()])
                    .env("RAYON_NUM_THREADS", t.to_string())
                    .output()
                    .expect("child");
                let xp: f64 = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .unwrap_or(f64::NAN);
                let (peer, ratio) = match peer_tokens_per_s(*shape, t, &python) {
                    Ok(p) => {
                        ratios.push(xp / p);
                        (format!("{p:.0}"), format!("{:.2}", xp / p))
                    }
                    Err(e) => {
                        eprintln!("PyTorch peer skipped: {e}");
                        ("-".into(), "-".into())
                    }
                };
                println!(
                    "{:<28} {:>7} {:>11.0} {:>14} {:>8}",
                    shape.name, t, xp, peer, ratio
                );
            }
            ratios.sort_by(f64::total_cmp);
            if let (Some(lo), Some(hi)) = (ratios.first(), ratios.last()) {
                let median = ratios[ratios.len() / 2];
                println!(
                    "{:<28} {:>7} {:>11} {:>14} {:>8}  {median:.2} ({lo:.2}-{hi:.2})",
                    shape.name, t, "", "", ""
                );
            }
        }
    }
}
