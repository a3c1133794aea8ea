//! A search's journal, `search.jsonl` in the sweep directory: one JSON line per trial,
//! appended and flushed before the trial's runs start: its number, its axis values, how many
//! suggestions before it were rejected (excluded, already tried or invalid), and its runs'
//! names, ids and seeds. `--resume` reads it back to replay the search.

use std::fs::OpenOptions;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::SweepDir;
use super::atomic;

/// One run of a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRun {
    pub name: String,
    pub id: String,
    pub seed: u64,
}

/// One line of `search.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub trial: usize,
    /// Axis values by name, in the search's axis order.
    pub axes: serde_json::Map<String, serde_json::Value>,
    /// Suggestions drawn and rejected before this one.
    pub rejected: usize,
    pub runs: Vec<TrialRun>,
}

/// Appends a trial to the journal and flushes it to disk.
pub fn append(sweep: &SweepDir, record: &TrialRecord) -> io::Result<()> {
    let path = sweep.search_journal();
    let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(atomic::at(&path))?;
    // One write: a crash leaves at most a partial last line, which `read` leaves out.
    file.write_all(&line).map_err(atomic::at(&path))?;
    file.sync_data().map_err(atomic::at(&path))
}

/// The trials recorded so far, in order; a last line cut short by a crash is left out (the
/// trial never started). A missing journal is an empty one.
pub fn read(sweep: &SweepDir) -> io::Result<Vec<TrialRecord>> {
    let path = sweep.search_journal();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(atomic::at(&path)(e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<TrialRecord>(line) {
            Ok(r) => records.push(r),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} line {}: {e}", path.display(), i + 1),
                ));
            }
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(trial: usize) -> TrialRecord {
        let mut axes = serde_json::Map::new();
        axes.insert("lr".into(), serde_json::json!(0.001 * (trial + 1) as f64));
        TrialRecord {
            trial,
            axes,
            rejected: trial,
            runs: vec![TrialRun {
                name: format!("t{trial}"),
                id: format!("{trial:012}"),
                seed: 1,
            }],
        }
    }

    #[test]
    fn appended_trials_read_back_and_a_torn_last_line_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let sweep = SweepDir {
            path: dir.path().to_owned(),
        };
        assert_eq!(read(&sweep).unwrap(), vec![]);
        append(&sweep, &record(0)).unwrap();
        append(&sweep, &record(1)).unwrap();
        assert_eq!(read(&sweep).unwrap(), vec![record(0), record(1)]);
        // A crash in the middle of the third line.
        let mut file = OpenOptions::new()
            .append(true)
            .open(sweep.search_journal())
            .unwrap();
        file.write_all(br#"{"trial":2,"axes":{"lr"#).unwrap();
        assert_eq!(read(&sweep).unwrap(), vec![record(0), record(1)]);
        // A damaged line in the middle is an error, not a shorter search.
        std::fs::write(sweep.search_journal(), "{}\n{}\n").unwrap();
        assert!(read(&sweep).is_err());
    }
}
