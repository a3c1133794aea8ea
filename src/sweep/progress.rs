//! Following a sweep as it runs. Runs report [`Update`]s (in-process, or as JSON lines from a
//! run's process); a [`Progress`] shows them: bars on a terminal ([`Bars`]), plain lines
//! otherwise ([`Lines`]), or nothing ([`Silent`]).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::front::plan::PlannedRun;
use crate::sweep::record::{Status, Summary, short};
use crate::train::Event;

/// What a run reports while it trains: the part of the loop's events a display needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Update {
    Start {
        total_steps: usize,
        resumed_from: Option<usize>,
    },
    /// A logged or evaluated step; a non-finite value is `None`.
    Metrics {
        step: usize,
        metrics: BTreeMap<String, Option<f64>>,
    },
    EarlyStop {
        step: usize,
        reason: String,
    },
    Checkpoint {
        step: usize,
    },
}

impl Update {
    /// What the display shows of a loop event (nothing of some).
    pub fn of(event: &Event) -> Option<Update> {
        Some(match event {
            Event::Start {
                total_steps,
                resumed_from,
                ..
            } => Update::Start {
                total_steps: *total_steps,
                resumed_from: *resumed_from,
            },
            Event::Metrics { step, metrics, .. } => Update::Metrics {
                step: *step,
                metrics: metrics
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(*v).filter(|v| v.is_finite())))
                    .collect(),
            },
            Event::EarlyStop { step, reason } => Update::EarlyStop {
                step: *step,
                reason: (*reason).to_owned(),
            },
            Event::Checkpoint(cp) => Update::Checkpoint {
                step: cp.state.step,
            },
            Event::Evaluating { .. }
            | Event::Batch { .. }
            | Event::BatchChange(_)
            | Event::KernelDisabled(_) => return None,
        })
    }
}

/// Follows a sweep as it runs. Several runs may be active at once; `index` is a run's place
/// in the plan.
pub trait Progress {
    /// The sweep is ready: `todo` of its `total` runs are to be trained.
    fn planned(&mut self, _todo: usize, _total: usize) {}
    fn run_started(&mut self, index: usize, total: usize, run: &PlannedRun);
    fn update(&mut self, index: usize, update: &Update);
    fn run_finished(&mut self, index: usize, total: usize, summary: &Summary);
    /// A message about a run or the sweep (a run process's own error output).
    fn note(&mut self, text: &str);
}

/// A progress that shows nothing; notes (a run process's own error output) still go to
/// stderr.
pub struct Silent;

impl Progress for Silent {
    fn run_started(&mut self, _: usize, _: usize, _: &PlannedRun) {}
    fn update(&mut self, _: usize, _: &Update) {}
    fn run_finished(&mut self, _: usize, _: usize, _: &Summary) {}
    fn note(&mut self, text: &str) {
        eprintln!("{text}");
    }
}

/// `loss 2.301, lr 0.001, 5123 tok/s`: the metrics worth a glance.
fn glance(metrics: &BTreeMap<String, Option<f64>>, all: bool) -> String {
    let show = |v: &Option<f64>| v.map_or("nan".to_owned(), short);
    metrics
        .iter()
        .filter(|(k, _)| all || !k.ends_with("grad_norm"))
        .map(|(k, v)| format!("{k} {}", show(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ending(summary: &Summary) -> String {
    let time = summary
        .wall_s
        .map_or(String::new(), |w| format!(" in {w:.1} s"));
    let reason = summary
        .reason
        .as_ref()
        .map_or(String::new(), |r| format!(": {r}"));
    format!("{}{time}{reason}", summary.status.as_str())
}

/// One active run, as the plain display tracks it.
struct Active {
    label: String,
    total_steps: usize,
    last: Instant,
}

/// Plain lines, for logs: a line when a run starts and ends, and while it trains a line at most
/// every `every` (and at every evaluation); `verbose` prints every logged step.
pub struct Lines<W: Write> {
    out: W,
    every: Duration,
    verbose: bool,
    active: HashMap<usize, Active>,
}

impl<W: Write> Lines<W> {
    pub fn new(out: W, every: Duration, verbose: bool) -> Self {
        Lines {
            out,
            every,
            verbose,
            active: HashMap::new(),
        }
    }
}

impl<W: Write> Progress for Lines<W> {
    fn run_started(&mut self, index: usize, total: usize, run: &PlannedRun) {
        let label = format!("[{}/{total}] {}", index + 1, run.name);
        let _ = writeln!(self.out, "{label}: started");
        self.active.insert(
            index,
            Active {
                label,
                total_steps: 0,
                last: Instant::now(),
            },
        );
    }

    fn update(&mut self, index: usize, update: &Update) {
        let Some(run) = self.active.get_mut(&index) else {
            return;
        };
        match update {
            Update::Start {
                total_steps,
                resumed_from,
            } => {
                run.total_steps = *total_steps;
                if let Some(step) = resumed_from {
                    let _ = writeln!(self.out, "{}: resumed after step {step}", run.label);
                }
            }
            Update::Metrics { step, metrics } => {
                let eval = metrics.keys().any(|k| k.starts_with("val/"));
                if !eval && !self.verbose && run.last.elapsed() < self.every {
                    return;
                }
                run.last = Instant::now();
                let _ = writeln!(
                    self.out,
                    "{}: step {step}/{} {}",
                    run.label,
                    run.total_steps,
                    glance(metrics, self.verbose)
                );
            }
            Update::EarlyStop { step, reason } => {
                let _ = writeln!(
                    self.out,
                    "{}: stopped early at step {step}: {reason}",
                    run.label
                );
            }
            Update::Checkpoint { step } => {
                if self.verbose {
                    let _ = writeln!(self.out, "{}: checkpoint at step {step}", run.label);
                }
            }
        }
    }

    fn run_finished(&mut self, index: usize, total: usize, summary: &Summary) {
        let label = self.active.remove(&index).map_or_else(
            || format!("[{}/{total}] {}", index + 1, summary.name),
            |a| a.label,
        );
        let _ = writeln!(self.out, "{label}: {}", ending(summary));
    }

    fn note(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }
}

/// Live bars on a terminal: one line for the sweep (runs done of all, failed, elapsed, ETA) and
/// one bar per active run (step of total, loss, lr, tokens/s, ETA).
pub struct Bars {
    multi: MultiProgress,
    sweep: ProgressBar,
    runs: HashMap<usize, ProgressBar>,
    verbose: bool,
    failed: usize,
}

impl Bars {
    pub fn new(experiment: &str, verbose: bool) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let sweep = multi.add(ProgressBar::new(0));
        sweep.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} {pos}/{len} runs done{msg}, {elapsed} elapsed, ETA {eta}",
            )
            .expect("a valid template"),
        );
        sweep.set_prefix(experiment.to_owned());
        sweep.enable_steady_tick(Duration::from_millis(500));
        Bars {
            multi,
            sweep,
            runs: HashMap::new(),
            verbose,
            failed: 0,
        }
    }
}

impl Progress for Bars {
    fn planned(&mut self, todo: usize, total: usize) {
        self.sweep.set_length(todo as u64);
        if total > todo {
            let prefix = self.sweep.prefix();
            self.sweep
                .set_prefix(format!("{prefix} ({} already done)", total - todo));
        }
        self.sweep.reset_eta();
    }

    fn run_started(&mut self, index: usize, _total: usize, run: &PlannedRun) {
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template(
                "  {prefix:24!} {bar:24.cyan/blue} {pos:>6}/{len:6} {msg} ETA {eta}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(run.name.clone());
        bar.set_message("starting");
        self.runs.insert(index, bar);
    }

    fn update(&mut self, index: usize, update: &Update) {
        let Some(bar) = self.runs.get(&index) else {
            return;
        };
        match update {
            Update::Start {
                total_steps,
                resumed_from,
            } => {
                bar.set_length(*total_steps as u64);
                if let Some(step) = resumed_from {
                    bar.set_position(*step as u64);
                    bar.reset_eta();
                }
            }
            Update::Metrics { step, metrics } => {
                bar.set_position(*step as u64);
                let value = |k: &str| metrics.get(k).copied().flatten();
                let mut parts = Vec::new();
                if let Some(v) = value("train/loss") {
                    parts.push(format!("loss {}", short(v)));
                }
                if let Some(v) = value("train/lr") {
                    parts.push(format!("lr {v:.2e}"));
                }
                if let Some(v) = value("train/tokens_per_s") {
                    parts.push(format!("{v:.0} tok/s"));
                }
                if !parts.is_empty() {
                    bar.set_message(parts.join(", "));
                }
                if self.verbose && metrics.keys().any(|k| k.starts_with("val/")) {
                    let prefix = bar.prefix();
                    let _ = self
                        .multi
                        .println(format!("{prefix}: step {step} {}", glance(metrics, false)));
                }
            }
            Update::EarlyStop { step, reason } => {
                let prefix = bar.prefix();
                let _ = self
                    .multi
                    .println(format!("{prefix}: stopped early at step {step}: {reason}"));
            }
            Update::Checkpoint { .. } => {}
        }
    }

    fn run_finished(&mut self, index: usize, _total: usize, summary: &Summary) {
        if let Some(bar) = self.runs.remove(&index) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        if matches!(summary.status, Status::Failed | Status::Diverged) {
            self.failed += 1;
            self.sweep.set_message(format!(" ({} failed)", self.failed));
        }
        self.sweep.inc(1);
        let _ = self
            .multi
            .println(format!("{}: {}", summary.name, ending(summary)));
    }

    fn note(&mut self, text: &str) {
        let _ = self.multi.println(text);
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        for bar in self.runs.values() {
            bar.finish_and_clear();
        }
        self.sweep.finish_and_clear();
        let _ = self.multi.clear();
    }
}
