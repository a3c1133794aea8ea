//! Baselines: the file `--save-baseline` writes and `--baseline` reads, CSV or JSON by
//! extension, in the shape of a sweep's `results.csv` / `results.json` (so those serve as
//! baselines too): `name`, `experiment`, `status`, one column per axis, then metric columns
//! (`final:val/loss`, `best:val/loss`, `steps`, `wall_s`, `tokens_per_s`, `peak_memory_bytes`);
//! blank or null where a value is missing. And the join of baseline rows to compared rows:
//! by run name and experiment, or by the values of chosen axes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::CompareError;
use super::runs::{Column, canonical, show};
use super::table::{Comparison, Row, RowKey};

/// A baseline file's format, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    Json,
}

impl FileFormat {
    pub fn of(path: &Path) -> Result<FileFormat, CompareError> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Ok(FileFormat::Csv),
            Some(e) if e.eq_ignore_ascii_case("json") => Ok(FileFormat::Json),
            _ => Err(CompareError::Baseline {
                file: path.display().to_string(),
                message: "a baseline is a .csv or a .json file".into(),
                help: Some("name the file `….csv` or `….json`".into()),
            }),
        }
    }
}

/// A baseline as read.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// The file, as shown in messages.
    pub file: String,
    /// Every column (or key) the file has.
    pub headings: BTreeSet<String>,
    pub rows: Vec<BaseRow>,
}

/// One run (or group) of a baseline.
#[derive(Debug, Clone)]
pub struct BaseRow {
    pub name: String,
    /// Empty where the file has none: the row then joins a run of any experiment.
    pub experiment: String,
    pub status: String,
    /// The axis columns.
    pub keys: BTreeMap<String, Value>,
    pub values: BTreeMap<Column, f64>,
    /// Where it is: `line 3` of a CSV file, `row 2` of a JSON one.
    pub at: String,
}

/// Columns that are neither axes nor metrics.
const OTHER: [&str; 4] = ["name", "experiment", "status", "id"];

impl Baseline {
    pub fn parse(text: &str, format: FileFormat, file: &str) -> Result<Baseline, CompareError> {
        let error = |message: String| CompareError::Baseline {
            file: file.to_owned(),
            message,
            help: None,
        };
        let mut base = Baseline {
            file: file.to_owned(),
            ..Baseline::default()
        };
        match format {
            FileFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .flexible(false)
                    .from_reader(text.as_bytes());
                let headers: Vec<String> = reader
                    .headers()
                    .map_err(|e| error(e.to_string()))?
                    .iter()
                    .map(str::to_owned)
                    .collect();
                if !headers.iter().any(|h| h == "name") {
                    return Err(error("it has no `name` column".into()));
                }
                base.headings = headers.iter().cloned().collect();
                for record in reader.records() {
                    let record = record.map_err(|e| error(e.to_string()))?;
                    let line = record.position().map_or(0, |p| p.line());
                    let mut row = BaseRow::new(format!("line {line}"));
                    for (h, cell) in headers.iter().zip(record.iter()) {
                        row.set(h, Cell::Text(cell)).map_err(&error)?;
                    }
                    base.rows.push(row);
                }
            }
            FileFormat::Json => {
                let value: Value =
                    serde_json::from_str(text).map_err(|e| error(format!("not JSON: {e}")))?;
                let Value::Array(items) = value else {
                    return Err(error(
                        "expected a list of rows, as `--save-baseline` writes".into(),
                    ));
                };
                for (i, item) in items.iter().enumerate() {
                    let Value::Object(map) = item else {
                        return Err(error(format!("row {} is not an object", i + 1)));
                    };
                    if !map.contains_key("name") {
                        return Err(error(format!("row {} has no `name`", i + 1)));
                    }
                    let mut row = BaseRow::new(format!("row {}", i + 1));
                    for (k, v) in map {
                        base.headings.insert(k.clone());
                        row.set(k, Cell::Json(v)).map_err(&error)?;
                    }
                    base.rows.push(row);
                }
            }
        }
        Ok(base)
    }
}

enum Cell<'a> {
    Text(&'a str),
    Json(&'a Value),
}

impl BaseRow {
    fn new(at: String) -> BaseRow {
        BaseRow {
            name: String::new(),
            experiment: String::new(),
            status: String::new(),
            keys: BTreeMap::new(),
            values: BTreeMap::new(),
            at,
        }
    }

    fn set(&mut self, heading: &str, cell: Cell) -> Result<(), String> {
        let text = match &cell {
            Cell::Text(t) => t.to_string(),
            Cell::Json(v) => show(v),
        };
        match heading {
            "name" => self.name = text,
            "experiment" => self.experiment = text,
            "status" => self.status = text,
            h if OTHER.contains(&h) => {}
            h if Column::is_heading(h) => {
                let value = match cell {
                    Cell::Text(t) => match t.trim() {
                        "" => None,
                        t => Some(t.parse::<f64>().map_err(|_| {
                            format!("{}: `{t}` in column `{h}` is not a number", self.at)
                        })?),
                    },
                    Cell::Json(Value::Null) => None,
                    Cell::Json(v) => Some(
                        v.as_f64()
                            .ok_or_else(|| format!("{}: `{h}` is {v}, not a number", self.at))?,
                    ),
                };
                if let Some(v) = value.filter(|v| v.is_finite()) {
                    self.values.insert(Column::parse(h), v);
                }
            }
            h => {
                let value = match cell {
                    Cell::Text(t) => Value::from(t),
                    Cell::Json(v) => v.clone(),
                };
                self.keys.insert(h.to_owned(), value);
            }
        }
        Ok(())
    }
}

/// The baseline of a comparison: its rows (runs, or groups), their axes, and the compared metric
/// columns plus `extra` (the gated ones, so a saved baseline always covers the gate).
pub fn save(c: &Comparison, extra: &[Column], format: FileFormat) -> String {
    let mut columns = c.columns.clone();
    for e in extra {
        if !columns.contains(e) {
            columns.push(e.clone());
        }
    }
    let rows: Vec<&Row> = c.rows.iter().filter(|r| r.runs > 0).collect();
    let axes: BTreeSet<&str> = rows
        .iter()
        .flat_map(|r| r.keys.keys().map(String::as_str))
        .filter(|k| !OTHER.contains(k) && !Column::is_heading(k))
        .collect();
    match format {
        FileFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let mut header: Vec<String> = OTHER[..3].iter().map(|s| s.to_string()).collect();
            header.extend(axes.iter().map(|a| a.to_string()));
            header.extend(columns.iter().map(|c| c.to_string()));
            let mut lines = vec![header];
            for r in &rows {
                let mut line = vec![r.name.clone(), r.experiment.clone(), r.status.clone()];
                line.extend(
                    axes.iter()
                        .map(|a| r.keys.get(*a).map(show).unwrap_or_default()),
                );
                line.extend(columns.iter().map(|c| {
                    r.values
                        .get(c)
                        .map_or(String::new(), |s| format!("{}", s.mean))
                }));
                lines.push(line);
            }
            for line in lines {
                // Writing to memory fails only on a bug; the line is dropped rather than panic.
                let _ = w.write_record(&line);
            }
            let bytes = w.into_inner().unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        FileFormat::Json => {
            let list: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let mut o = serde_json::Map::new();
                    o.insert("name".into(), Value::from(r.name.clone()));
                    o.insert("experiment".into(), Value::from(r.experiment.clone()));
                    o.insert("status".into(), Value::from(r.status.clone()));
                    for a in &axes {
                        o.insert(
                            a.to_string(),
                            r.keys.get(*a).cloned().unwrap_or(Value::Null),
                        );
                    }
                    for c in &columns {
                        o.insert(
                            c.to_string(),
                            r.values.get(c).map_or(Value::Null, |s| c.json(s.mean)),
                        );
                    }
                    Value::Object(o)
                })
                .collect();
            serde_json::to_string_pretty(&list).unwrap_or_default() + "\n"
        }
    }
}

/// How compared rows find their baseline row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOn {
    /// The run name, within its experiment when the baseline names one.
    NameAndExperiment,
    /// The values of these axes (`name` and `experiment` may be among them).
    Keys(Vec<String>),
}

/// Compared rows against baseline rows.
#[derive(Debug, Clone, Default)]
pub struct Joined {
    /// For each compared row, the index of its baseline row.
    pub matches: Vec<Option<usize>>,
    /// Baseline rows no compared row (nor a run the filter left out) matches.
    pub missing: Vec<usize>,
}

/// Joins; two baseline rows with one key are an error, since a run could not be judged by one.
pub fn join(
    base: &Baseline,
    rows: &[Row],
    left_out: &[RowKey],
    on: &JoinOn,
) -> Result<Joined, CompareError> {
    if let JoinOn::Keys(keys) = on {
        for k in keys {
            if k != "name" && k != "experiment" && !base.headings.contains(k) {
                return Err(CompareError::Baseline {
                    file: base.file.clone(),
                    message: format!("it has no column `{k}` to join on"),
                    help: Some(format!(
                        "its columns: {}",
                        super::some_of(base.headings.iter().map(String::as_str), 16)
                    )),
                });
            }
        }
    }
    let mut index: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for (i, b) in base.rows.iter().enumerate() {
        let key = match on {
            JoinOn::NameAndExperiment => vec![b.name.clone(), b.experiment.clone()],
            JoinOn::Keys(keys) => keys
                .iter()
                .map(|k| match k.as_str() {
                    "name" => b.name.clone(),
                    "experiment" => b.experiment.clone(),
                    k => b.keys.get(k).map(canonical).unwrap_or_default(),
                })
                .collect(),
        };
        if let Some(first) = index.insert(key.clone(), i) {
            let what = match on {
                JoinOn::NameAndExperiment => format!("run `{}`", b.name),
                JoinOn::Keys(keys) => keys
                    .iter()
                    .zip(&key)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            };
            return Err(CompareError::Baseline {
                file: base.file.clone(),
                message: format!(
                    "two rows for {what} ({} and {})",
                    base.rows[first].at, b.at
                ),
                help: Some(
                    "a baseline holds one row per run: save it from one sweep (`xp compare runs/EXP/current --save-baseline FILE`), or join on axes that tell the rows apart (`--join-on`)"
                        .into(),
                ),
            });
        }
    }
    let find = |name: &str, experiment: &str, keys: &BTreeMap<String, Value>| -> Option<usize> {
        match on {
            JoinOn::NameAndExperiment => index
                .get(&vec![name.to_owned(), experiment.to_owned()])
                .or_else(|| index.get(&vec![name.to_owned(), String::new()]))
                .copied(),
            JoinOn::Keys(ks) => {
                let key: Option<Vec<String>> = ks
                    .iter()
                    .map(|k| match k.as_str() {
                        "name" => Some(name.to_owned()),
                        "experiment" => Some(experiment.to_owned()),
                        k => keys.get(k).map(canonical),
                    })
                    .collect();
                key.and_then(|k| index.get(&k).copied())
            }
        }
    };
    let matches: Vec<Option<usize>> = rows
        .iter()
        .map(|r| find(&r.name, &r.experiment, &r.keys))
        .collect();
    let mut seen = vec![false; base.rows.len()];
    for i in matches.iter().flatten() {
        seen[*i] = true;
    }
    for k in left_out {
        if let Some(i) = find(&k.name, &k.experiment, &k.keys) {
            seen[i] = true;
        }
    }
    Ok(Joined {
        matches,
        missing: (0..base.rows.len()).filter(|i| !seen[*i]).collect(),
    })
}
