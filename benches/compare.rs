//! `xp compare` at scale (`cargo bench --bench compare`): one sweep of 10,000 run directories
//! (configs from a real 10,000-run plan, summaries and metrics written as `xp run` writes them,
//! 1% of the runs still running so their metrics.jsonl is read), compared by the library and by
//! the `xp` binary end to end, medians of repeated runs on a warm file cache.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use xp::compare::discover::{Sweeps, discover};
use xp::compare::format::{Format, View, render};
use xp::compare::{Request, compare};
use xp::front::validate_text;

const SWEEP: &str = r#"experiment "bench" {
    seed 1
    objective "val/loss" "minimize"
    model "llama" {
        layers 2; heads 4; dim 64; context 8
    }
    lora rank="{{ rank }}" alpha="{{ rank * 2 }}" {
        targets "q_proj" "v_proj"
    }
    data "modular-addition" modulus=97
    train {
        steps 1000
        batch-size 64
        optimizer "adamw" lr="{{ lr }}" weight-decay=0.1
        schedule "cosine" warmup-ratio=0.1
        eval every=100
    }
    sweep {
        grid {
            lr LRS
            rank 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64
        }
        repeat 2
    }
    name "lr{{ lr }}-r{{ rank }}-s{{ seed }}"
}
"#;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes the sweep's run directories; returns how many.
fn write_runs(sweep: &Path) -> usize {
    let lrs: Vec<String> = (1..=79).map(|i| format!("{}", i as f64 * 1e-4)).collect();
    let text = SWEEP.replace("LRS", &lrs.join(" "));
    let checked = validate_text("bench.kdl", &text);
    assert!(
        checked.diags.is_empty(),
        "the generated sweep must be valid: {:?}",
        checked.diags.iter().next()
    );
    let runs = &checked.plans[0].runs;
    for (i, run) in runs.iter().enumerate().take(10_000) {
        let dir = sweep.join(&run.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&run.settings).unwrap(),
        )
        .unwrap();
        let x = (i % 997) as f64 / 997.0;
        let running = i % 100 == 99;
        let axes: serde_json::Map<String, serde_json::Value> = run
            .axes
            .iter()
            .map(|(k, v)| (k.clone(), xp::front::plan::value_json(v)))
            .collect();
        let finals = json!({"train/loss": 0.5 + x, "train/lr": 1e-5, "val/loss": 0.6 + x,
            "val/accuracy": 0.9 - x / 2.0, "val/perplexity": 1.8 + x});
        let summary = json!({
            "name": run.name, "id": run.id, "experiment": "bench",
            "status": if running { "running" } else { "completed" }, "reason": null,
            "axes": axes, "seed": run.seed, "steps": if running { 0 } else { 1000 },
            "final": if running { json!({}) } else { finals.clone() },
            "best": if running { json!({}) } else { json!({
                "train/loss": {"value": 0.5 + x, "step": 1000}, "val/loss": {"value": 0.6 + x, "step": 900},
                "val/accuracy": {"value": 0.9 - x / 2.0, "step": 1000}, "val/perplexity": {"value": 1.8 + x, "step": 900}}) },
            "started_at": "2025-01-01T00:00:00+00:00", "finished_at": "2025-01-01T00:10:00+00:00",
            "wall_s": 600.0 + x, "tokens_per_s": 25_000.0 - x, "peak_memory_bytes": 104_857_600,
            "device": "cpu", "precision": "f32", "params": {"total": 120_000, "trainable": 8_000},
            "xp_version": "0.1.0",
        });
        std::fs::write(
            dir.join("summary.json"),
            serde_json::to_vec_pretty(&summary).unwrap(),
        )
        .unwrap();
        let mut metrics = String::new();
        for step in (100..=1000).step_by(100) {
            let mut line = finals.clone();
            line["step"] = json!(step);
            line["epoch"] = json!(step as f64 / 50.0);
            line["time_s"] = json!(step as f64 * 0.6);
            metrics.push_str(&line.to_string());
            metrics.push('\n');
        }
        std::fs::write(dir.join("metrics.jsonl"), metrics).unwrap();
    }
    runs.len().min(10_000)
}

fn main() {
    // `XP_BENCH_DIR=DIR` keeps the run directories there (to profile `xp compare DIR/runs`).
    let temp = tempfile::tempdir().unwrap();
    let root =
        std::env::var_os("XP_BENCH_DIR").map_or_else(|| temp.path().to_path_buf(), Into::into);
    let root = root.as_path();
    let sweep = root.join("runs/bench/20250101-000000");
    let start = Instant::now();
    let n = write_runs(&sweep);
    assert_eq!(n, 10_000);
    println!(
        "compare: {n} run directories (written in {:.1} s)",
        start.elapsed().as_secs_f64()
    );
    let paths = vec![root.join("runs")];

    let samples: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            let found = discover(&paths, Sweeps::All).unwrap();
            assert_eq!(found.runs.len(), n);
            std::hint::black_box(found);
            start.elapsed()
        })
        .collect();
    println!(
        "  find + read (library)           median {:>8.1} ms",
        ms(median(samples))
    );

    let found = discover(&paths, Sweeps::All).unwrap();
    let samples: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            let report = compare(&found.runs, &Request::default()).unwrap();
            std::hint::black_box(render(
                &report.comparison,
                None,
                Format::Table,
                View::default(),
            ));
            start.elapsed()
        })
        .collect();
    println!(
        "  tabulate + render (library)     median {:>8.1} ms",
        ms(median(samples))
    );

    let base = root.join("base.csv");
    let exe = env!("CARGO_BIN_EXE_xp");
    let run = |args: &[&str]| -> Duration {
        let samples: Vec<Duration> = (0..7)
            .map(|_| {
                let start = Instant::now();
                let out = Command::new(exe)
                    .arg("compare")
                    .arg(&paths[0])
                    .args(args)
                    .output()
                    .unwrap();
                let took = start.elapsed();
                assert!(
                    out.status.code().is_some_and(|c| c <= 1),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                took
            })
            .collect();
        median(samples)
    };
    let base_arg = base.to_str().unwrap();
    Command::new(exe)
        .arg("compare")
        .arg(&paths[0])
        .args(["--save-baseline", base_arg])
        .output()
        .unwrap();
    let cases: [(&str, Vec<&str>); 5] = [
        ("xp compare DIR", vec![]),
        ("  --format json", vec!["--format", "json"]),
        ("  --group-by rank", vec!["--group-by", "rank"]),
        (
            "  --filter 'rank >= 8 and val_loss < 1'",
            vec!["--filter", "rank >= 8 and val_loss < 1"],
        ),
        (
            "  --baseline FILE --fail-on val/loss>2%",
            vec!["--baseline", base_arg, "--fail-on", "val/loss>2%"],
        ),
    ];
    for (name, args) in cases {
        println!("  {name:<40} median {:>8.1} ms", ms(run(&args)));
    }
}
