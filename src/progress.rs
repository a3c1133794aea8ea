//! Progress on a stream: a line when a run starts and ends, and at most one line every few
//! seconds (and at every evaluation) while it trains.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::execute::Progress;
use crate::plan::PlannedRun;
use crate::record::{Summary, short};
use crate::train::Event;

pub struct Lines<W: Write> {
    out: W,
    every: Duration,
    last: Instant,
    total_steps: usize,
    label: String,
}

impl<W: Write> Lines<W> {
    pub fn new(out: W, every: Duration) -> Self {
        Lines {
            out,
            every,
            last: Instant::now(),
            total_steps: 0,
            label: String::new(),
        }
    }
}

impl<W: Write> Progress for Lines<W> {
    fn run_started(&mut self, index: usize, total: usize, run: &PlannedRun) {
        self.label = format!("[{}/{total}] {}", index + 1, run.name);
        self.last = Instant::now();
        let _ = writeln!(self.out, "{}: started", self.label);
    }

    fn event(&mut self, _run: &PlannedRun, event: &Event) {
        match event {
            Event::Start { total_steps, .. } => self.total_steps = *total_steps,
            Event::Metrics { step, metrics, .. } => {
                let eval = metrics.keys().any(|k| k.starts_with("val/"));
                if !eval && self.last.elapsed() < self.every {
                    return;
                }
                self.last = Instant::now();
                let shown: Vec<String> = metrics
                    .iter()
                    .filter(|(k, _)| !k.ends_with("grad_norm"))
                    .map(|(k, v)| format!("{k} {}", short(*v)))
                    .collect();
                let _ = writeln!(
                    self.out,
                    "{}: step {step}/{} {}",
                    self.label,
                    self.total_steps,
                    shown.join(", ")
                );
            }
            Event::EarlyStop { step, reason } => {
                let _ = writeln!(
                    self.out,
                    "{}: stopped early at step {step}: {reason}",
                    self.label
                );
            }
            Event::Checkpoint(_) => {}
        }
    }

    fn run_finished(&mut self, _index: usize, _total: usize, summary: &Summary) {
        let time = summary
            .wall_s
            .map_or(String::new(), |w| format!(" in {w:.1} s"));
        let reason = summary
            .reason
            .as_ref()
            .map_or(String::new(), |r| format!(": {r}"));
        let _ = writeln!(
            self.out,
            "{}: {}{time}{reason}",
            self.label,
            summary.status.as_str()
        );
    }
}
