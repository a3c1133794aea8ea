//! Runs an experiment file from code, as `xp run` does: validate and plan, load the data,
//! train every run into a sweep directory, and read the summaries.
//!
//! cargo run --release --example run_experiment -- experiments/quickstart.kdl

use std::path::PathBuf;

use xp::front::{Overrides, validate_files};
use xp::sweep::executor::{self, Silent, SweepOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "experiments/quickstart.kdl".into()),
    );
    // A shorter run than the file asks for, as `--set train.steps=60` would.
    let overrides = Overrides {
        set: vec!["train.steps=60".into()],
        axis: Vec::new(),
    };
    let checked = validate_files(std::slice::from_ref(&file), &overrides);
    if checked.diags.has_errors() {
        for d in checked.diags.iter() {
            eprintln!("{d:?}");
        }
        return Err("the experiment has errors".into());
    }
    let (datasets, problems) =
        xp::sweep::preflight::load_data(&checked.plans, miette::Severity::Error);
    if let Some(p) = problems.first() {
        return Err(format!("{p:?}").into());
    }
    let source = std::fs::read_to_string(&file)?;
    let options = SweepOptions {
        runs_dir: std::env::temp_dir().join("xp-example-runs"),
        ..SweepOptions::default()
    };
    for plan in &checked.plans {
        let report = executor::run_plan(plan, &source, &datasets, &options, &mut Silent)?;
        println!("{}", report.dir.display());
        for s in &report.summaries {
            println!(
                "{:<12} {:<10} val/accuracy {:?}",
                s.name,
                s.status.as_str(),
                s.last.get("val/accuracy")
            );
        }
    }
    Ok(())
}
