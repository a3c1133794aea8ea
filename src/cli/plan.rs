//! `xp plan FILE`: every run the experiment describes — name, id, axis values, effective batch,
//! steps, warmup steps and estimated peak training memory, with the memory budget where
//! `resources { memory }` gives one and a mark on the runs whose estimate passes it — or, as
//! JSON, with each run's resolved configuration and memory estimate. A search shows its space,
//! its budget and the start-up trials it draws before results steer it. Writes nothing.

use std::io::Write;
use std::path::PathBuf;

use crate::cli::args::PlanFormat;
use crate::cli::table::Table;
use crate::cli::{CliError, Exit};
use crate::cli::{report_diagnostics, run};
use crate::front::plan::{self, Plan};
use crate::front::search::Search;
use crate::front::tree::Plain;
use crate::front::{Overrides, validate_files};
use crate::spec::{BatchSize, Batching, RunSpec};
use crate::sweep::search;
use crate::train::memory;
use crate::train::schedule::planned_warmup;

pub fn run(
    file: PathBuf,
    overrides: &Overrides,
    only: Option<String>,
    format: PlanFormat,
    quiet: bool,
) -> Result<Exit, CliError> {
    let only = run::only_glob(only)?;
    let mut checked = validate_files(std::slice::from_ref(&file), overrides);
    checked.diags.thin_advice(quiet);
    if report_diagnostics(&checked)? {
        return Ok(Exit::Invalid);
    }
    run::select_runs(&mut checked.plans, only.as_ref(), &file)?;
    let mut out = std::io::stdout().lock();
    match format {
        PlanFormat::Table => {
            for (i, p) in checked.plans.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                out.write_all(table(p).as_bytes())?;
            }
        }
        PlanFormat::Json => {
            let mut plans = serde_json::to_value(&checked.plans)?;
            with_estimates(&mut plans, &checked.plans);
            let json = serde_json::to_string_pretty(&plans)?;
            writeln!(out, "{json}")?;
        }
    }
    Ok(Exit::Success)
}

/// The trials a search runs before results steer it, as axis values by name (with `exclude`
/// and repeated points drawn again, as the sweep does).
fn startup_points(p: &Plan) -> Vec<Vec<(String, kdl::KdlValue)>> {
    let (Some(search), Some(planner)) = (&p.search, &p.planner) else {
        return Vec::new();
    };
    let mut tried = std::collections::BTreeSet::new();
    search::startup(search, |params| {
        match planner.runs(&search::point(search, params)) {
            Ok(runs) if runs.iter().all(|r| !tried.contains(&r.id)) => {
                tried.extend(runs.into_iter().map(|r| r.id));
                true
            }
            _ => false,
        }
    })
    .iter()
    .map(|params| search::point(search, params))
    .collect()
}

/// A search: its space, its budget, and the start-up trials it draws first.
fn search_table(p: &Plan, search: &Search) -> String {
    let mut out = format!(
        "experiment `{}`: a {} search of {} × {} = at most {} (seed {}, {}){}\n\n",
        p.experiment,
        search.sampler.as_str(),
        crate::diagnostic::plural(search.trials, "trial"),
        crate::diagnostic::plural(search.repeat, "seed"),
        crate::diagnostic::plural(search.budget(), "run"),
        search.seed,
        match search.parallel {
            Some(n) => format!("{} at once", crate::diagnostic::plural(n, "trial")),
            None => "as many trials at once as --jobs".to_owned(),
        },
        if p.overrides.is_empty() {
            String::new()
        } else {
            format!(" (with {})", p.overrides.join(" "))
        }
    );
    let mut space = Table::new(vec!["axis".into(), "distribution".into()]);
    for axis in &search.axes {
        space.push(vec![axis.name.clone(), axis.distribution.describe()]);
    }
    out.push_str(&space.render());
    let startup = startup_points(p);
    let mut headers = vec!["trial".to_owned()];
    headers.extend(search.axes.iter().map(|a| a.name.clone()));
    let mut trials = Table::new(headers);
    for (i, point) in startup.iter().enumerate() {
        let mut row = vec![i.to_string()];
        row.extend(point.iter().map(|(_, v)| Plain(v).to_string()));
        trials.push(row);
    }
    if startup.len() >= search.trials {
        out.push_str(&format!(
            "\nevery trial is drawn at random, independently of the results:\n\n{}",
            trials.render()
        ));
    } else {
        out.push_str(&format!(
            "\nthe first {} are drawn at random:\n\n{}\nthe later {} depend on the results of the trials before them: they are known only as the search runs (search.jsonl records each).\n",
            crate::diagnostic::plural(startup.len(), "trial"),
            trials.render(),
            crate::diagnostic::plural(search.trials - startup.len(), "trial"),
        ));
    }
    out
}

fn table(p: &Plan) -> String {
    if let Some(search) = &p.search {
        return search_table(p, search);
    }
    let axes: Vec<String> = p
        .runs
        .first()
        .map(|r| r.axes.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let mut headers = vec!["name".to_owned(), "id".to_owned()];
    headers.extend(axes.iter().cloned());
    headers.extend([
        "seed".to_owned(),
        "effective-batch".to_owned(),
        "steps".to_owned(),
        "warmup".to_owned(),
        "memory".to_owned(),
    ]);
    let budgets = p.runs.iter().any(|r| budget(&r.config).is_some());
    if budgets {
        headers.push("budget".to_owned());
    }
    let mut t = Table::new(headers);
    for r in &p.runs {
        let mut row = vec![r.name.clone(), r.id.clone()];
        row.extend(r.axes.iter().map(|(_, v)| Plain(v).to_string()));
        row.push(r.seed.to_string());
        let train = &r.config.train;
        row.push(match (train.examples_per_step(), train.batch_tokens) {
            (Some(b), _) if auto(&r.config) => format!("{b} (auto micro-batch)"),
            (Some(b), _) => b.to_string(),
            (None, Some(tokens)) => {
                format!("{} × {tokens} tokens", train.gradient_accumulation)
            }
            (None, None) => "auto".to_owned(),
        });
        row.push(match plan::steps(&r.config) {
            Some(s) => s.to_string(),
            None => format!("{} epochs", epochs(&r.config)),
        });
        row.push(planned_warmup(&r.config.train).map_or_else(|how| how, |w| w.to_string()));
        let (estimate, budget) = (estimate(&r.config), budget(&r.config));
        let mut cell = match estimate {
            None => "?".to_owned(),
            // The least an automatic batch size can take: one example a micro-batch.
            Some(e) if auto(&r.config) => format!("≥ {}", memory::human_bytes(e)),
            Some(e) => memory::human_bytes(e),
        };
        if fits(estimate, budget) == Some(false) {
            cell.push_str(" (over budget)");
        }
        row.push(cell);
        if budgets {
            row.push(budget.map_or("-".to_owned(), memory::human_bytes));
        }
        t.push(row);
    }
    let overrides = if p.overrides.is_empty() {
        String::new()
    } else {
        format!(" (with {})", p.overrides.join(" "))
    };
    format!(
        "experiment `{}`: {}{overrides}\n\n{}",
        p.experiment,
        p.summary(),
        t.render()
    )
}

/// Whether the run's batch size is `"auto"`.
fn auto(spec: &RunSpec) -> bool {
    spec.train.batching() == Batching::Examples(BatchSize::Auto)
}

/// The run's estimated peak training memory; with `batch-size "auto"` at one example a
/// micro-batch, the least it can take.
fn estimate(spec: &RunSpec) -> Option<u64> {
    if auto(spec) {
        memory::estimate_micro(spec, None, 1).map(|e| e.total())
    } else {
        memory::estimate_bytes(spec)
    }
}

/// `resources { memory }` in bytes.
fn budget(spec: &RunSpec) -> Option<u64> {
    spec.resources.as_ref().and_then(|r| r.memory_bytes())
}

/// Whether the estimate keeps within the budget, where both are known.
fn fits(estimate: Option<u64>, budget: Option<u64>) -> Option<bool> {
    Some(estimate? <= budget?)
}

/// Adds each run's memory estimate to the plans' JSON: `estimated_memory_bytes` and its parts
/// under `estimated_memory`, both null when it cannot be estimated, and with `resources {
/// memory }` the budget (`memory_budget_bytes`) and whether the estimate keeps within it
/// (`fits`). Kept out of `PlannedRun`,
/// whose JSON is plan.json, which the run processes read back.
fn with_estimates(json: &mut serde_json::Value, plans: &[Plan]) {
    let Some(json_plans) = json.as_array_mut() else {
        return;
    };
    for (json_plan, plan) in json_plans.iter_mut().zip(plans) {
        if plan.search.is_some()
            && let Some(object) = json_plan.as_object_mut()
        {
            let startup: Vec<serde_json::Value> = startup_points(plan)
                .iter()
                .map(|point| {
                    point
                        .iter()
                        .map(|(k, v)| (k.clone(), plan::value_json(v)))
                        .collect::<serde_json::Map<_, _>>()
                        .into()
                })
                .collect();
            object.insert("startup_trials".into(), startup.into());
        }
        let Some(runs) = json_plan.get_mut("runs").and_then(|r| r.as_array_mut()) else {
            continue;
        };
        for (run, planned) in runs.iter_mut().zip(&plan.runs) {
            let estimate = memory::estimate(&planned.config, None);
            if let Some(run) = run.as_object_mut() {
                run.insert(
                    "warmup_steps".into(),
                    planned_warmup(&planned.config.train).ok().into(),
                );
                run.insert(
                    "estimated_memory_bytes".into(),
                    estimate.map(|e| e.total()).into(),
                );
                run.insert(
                    "estimated_memory".into(),
                    serde_json::to_value(estimate).unwrap_or_default(),
                );
                if let Some(bytes) = budget(&planned.config) {
                    run.insert("memory_budget_bytes".into(), bytes.into());
                    let least = self::estimate(&planned.config);
                    run.insert("fits".into(), fits(least, Some(bytes)).into());
                }
            }
        }
    }
}

fn epochs(spec: &RunSpec) -> usize {
    match spec.train.length {
        crate::spec::Length::Epochs(e) => e,
        crate::spec::Length::Steps(_) => 0,
    }
}
