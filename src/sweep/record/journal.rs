//! The pruning journal, `prune.jsonl` in the sweep directory: what every run of a pruned sweep
//! reported at its evaluation steps (its objective) and how it ended, one JSON object a line,
//! appended under the journal's lock (`.prune.lock`). Every run decides from it alone, so runs
//! in one process, run processes (`--jobs`) and Slurm array tasks prune alike, with no server.

use std::fs::OpenOptions;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::{Lock, Status, SweepDir, atomic};

/// One line of the journal: a run's objective at an evaluation step, or how the run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// The run's name and id (hyperband assigns brackets by id).
    pub run: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The objective at `step`; `null` when it was not a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<Status>,
}

impl Line {
    /// The objective a run reported at `step` (NaN and infinities are written as not a number).
    pub fn report(run: &str, id: &str, step: usize, value: f64) -> Line {
        Line {
            run: run.to_owned(),
            id: id.to_owned(),
            step: Some(step),
            value: value.is_finite().then_some(value),
            end: None,
        }
    }

    /// A run ended as `status`.
    pub fn end(run: &str, id: &str, status: Status) -> Line {
        Line {
            run: run.to_owned(),
            id: id.to_owned(),
            step: None,
            value: None,
            end: Some(status),
        }
    }
}

/// The journal's lock, held while it lives: one run reads, decides and appends at a time.
pub fn lock(sweep: &SweepDir) -> io::Result<Lock> {
    Lock::acquire(&sweep.prune_lock_file())
}

/// Every whole line of the journal (none when there is no journal yet); a line that does not
/// read (one a crashed writer left torn) is skipped.
pub fn read(sweep: &SweepDir) -> io::Result<Vec<Line>> {
    let path = sweep.prune_journal();
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(atomic::at(&path)(e)),
    }
}

/// Appends one line, flushed to disk, under the lock the caller holds.
pub fn append(sweep: &SweepDir, line: &Line) -> io::Result<()> {
    let path = sweep.prune_journal();
    let mut text = serde_json::to_string(line).map_err(io::Error::other)?;
    text.push('\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(atomic::at(&path))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(atomic::at(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines read back as written; a torn last line and a missing journal read as nothing.
    #[test]
    fn lines_round_trip_and_torn_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = SweepDir {
            path: dir.path().to_owned(),
        };
        assert!(read(&sweep).unwrap().is_empty());
        let lines = [
            Line::report("a", "1", 20, 0.5),
            Line::report("a", "1", 40, f64::NAN),
            Line::end("a", "1", Status::Pruned),
        ];
        for l in &lines {
            append(&sweep, l).unwrap();
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(sweep.prune_journal())
            .unwrap();
        file.write_all(b"{\"run\":\"b\",\"id\":\"2\",\"st").unwrap();
        assert_eq!(read(&sweep).unwrap(), lines);
    }
}
