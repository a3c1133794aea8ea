//! A run's directory as its run writes it: the sink of the training loop's events, appending
//! and flushing `metrics.jsonl` a line at a time, a timestamped `train.log`, and checkpoints.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use super::layout::{RunDir, SweepDir};
use super::{Summary, atomic, checkpoint, short, write_config, write_summary};
use crate::front::plan::PlannedRun;
use crate::train::{Event, Sink};

/// One run's directory open for writing; also the sink that writes its metrics.jsonl,
/// train.log and checkpoints.
pub struct RunWriter {
    pub dir: RunDir,
    metrics: BufWriter<File>,
    log: BufWriter<File>,
    /// Lines in metrics.jsonl so far (checkpoints record it, so a resume can cut back to it).
    metrics_lines: usize,
    keep: usize,
}

impl RunWriter {
    /// Creates `<sweep>/<run-name>/` with its resolved config, or opens it again to continue a
    /// run, with metrics.jsonl cut back to its first `keep_lines` lines (`None`: kept whole).
    pub fn open(
        sweep: &SweepDir,
        run: &PlannedRun,
        keep_lines: Option<usize>,
    ) -> io::Result<RunWriter> {
        let dir = sweep.run(&run.name);
        if !run.config_kdl.is_empty() || !dir.config_kdl().exists() {
            write_config(sweep, run)?;
        }
        let metrics = dir.metrics();
        let lines = match fs::read_to_string(&metrics) {
            Ok(text) => text.lines().map(|l| format!("{l}\n")).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(atomic::at(&metrics)(e)),
        };
        let kept = keep_lines.map_or(lines.len(), |n| n.min(lines.len()));
        if kept < lines.len() || lines.is_empty() {
            atomic::write(&metrics, lines[..kept].concat().as_bytes())?;
        }
        let append = |path: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(atomic::at(path))
        };
        let keep = run.config.train.checkpoint.map_or(1, |c| c.keep);
        Ok(RunWriter {
            metrics: BufWriter::new(append(&metrics)?),
            log: BufWriter::new(append(&dir.log())?),
            metrics_lines: kept,
            keep,
            dir,
        })
    }

    pub fn write_summary(&self, summary: &Summary) -> io::Result<()> {
        write_summary(&self.dir, summary)
    }

    /// Keeps space for the summary's last write, so that a disk that fills up while the run
    /// trains still lets the run record how it ended.
    pub fn reserve_summary(&self) -> io::Result<()> {
        atomic::reserve(&self.dir.summary())
    }

    /// A timestamped line in train.log.
    pub fn log(&mut self, line: &str) -> io::Result<()> {
        let now = chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%.3f%:z");
        let path = self.dir.log();
        crate::sweep::fault::write_error(&path)
            .and_then(|()| writeln!(self.log, "{now} {line}"))
            .and_then(|()| self.log.flush())
            .map_err(atomic::at(&path))
    }

    fn metrics_line(
        &mut self,
        step: usize,
        epoch: f64,
        time_s: f64,
        metrics: &crate::train::Metrics,
    ) -> io::Result<()> {
        let mut line = serde_json::Map::new();
        line.insert("step".into(), step.into());
        line.insert("epoch".into(), serde_json::Value::from(epoch));
        line.insert("time_s".into(), serde_json::Value::from(time_s));
        for (k, v) in metrics.iter() {
            line.insert(
                k.clone(),
                if v.is_finite() {
                    serde_json::Value::from(*v)
                } else {
                    serde_json::Value::Null
                },
            );
        }
        let path = self.dir.metrics();
        let mut text = serde_json::to_vec(&line).map_err(io::Error::other)?;
        text.push(b'\n');
        crate::sweep::fault::write_error(&path)
            .and_then(|()| self.metrics.write_all(&text))
            .and_then(|()| self.metrics.flush())
            .map_err(atomic::at(&path))?;
        self.metrics_lines += 1;
        let text: Vec<String> = metrics
            .iter()
            .map(|(k, v)| format!("{k}={}", short(*v)))
            .collect();
        self.log(&format!("step {step} epoch {epoch:.2} {}", text.join(" ")))
    }
}

impl Sink for RunWriter {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        match event {
            Event::Start {
                total_steps,
                steps_per_epoch,
                params,
                trainable,
                resumed_from,
            } => {
                if let Some(step) = resumed_from {
                    self.log(&format!("resumed from the checkpoint of step {step}"))?;
                }
                self.log(&format!("training: {total_steps} steps ({steps_per_epoch} per epoch), {params} parameters ({trainable} trainable)"))
            }
            Event::Metrics {
                step,
                epoch,
                time_s,
                metrics,
            } => self.metrics_line(*step, *epoch, *time_s, metrics),
            Event::Batch { record, reused } => self.log(&batch_line(record, *reused)),
            Event::BatchChange(change) => self.log(&change.describe()),
            Event::KernelDisabled(disabled) => self.log(&disabled.describe()),
            Event::Evaluating { .. } => Ok(()),
            Event::EarlyStop { step, reason } => {
                self.log(&format!("early stop at step {step}: {reason}"))
            }
            Event::Checkpoint(cp) => {
                let mut state = cp.state.clone();
                state.metrics_lines = self.metrics_lines;
                let written = checkpoint::write(
                    &self.dir,
                    &crate::train::Snapshot {
                        state: &state,
                        ..cp.clone()
                    },
                    self.keep,
                )?;
                let name = written
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.log(&format!("checkpoint {name} at step {}", state.step))
            }
        }
    }
}

/// train.log's line on how fixed micro-batches are cut, and for `batch-size "auto"` how the
/// micro-batch was chosen.
fn batch_line(record: &crate::train::BatchRecord, reused: bool) -> String {
    use crate::train::memory::human_bytes;
    let bytes = |b: Option<u64>| b.map_or("?".to_owned(), human_bytes);
    let cut = format!(
        "micro-batch {} × {} accumulated",
        record.micro, record.accumulation
    );
    if reused {
        return format!("batch: {cut}, as the checkpoint resumed from started it");
    }
    if !record.auto {
        return format!(
            "batch: {cut}, estimated peak {}",
            bytes(record.estimated_peak_memory_bytes)
        );
    }
    format!(
        "batch: {cut}, chosen by batch-size \"auto\": estimated peak {} of a budget of {} (resident before training {}), measured peak of the probe step {}",
        bytes(record.estimated_peak_memory_bytes),
        bytes(record.budget_bytes),
        bytes(record.resident_memory_bytes),
        bytes(record.probe_peak_memory_bytes)
    )
}
