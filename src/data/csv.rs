//! CSV tables: a header row naming the columns, numeric feature columns and a target column,
//! for regression or classification.
//!
//! Cells are separated by commas; a file whose first line has no comma but semicolons, tabs or
//! `|` (as spreadsheets export in many locales, and `.tsv` files) is read with that separator.
//!
//! Class labels are the target cells' text, trimmed. The classes are the distinct labels of
//! the training file, sorted numerically when every label is a number (`2` before `10`) and
//! lexically (by bytes) otherwise, and numbered 0..C in that order; a validation file may use
//! only these labels.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::Path;

use super::{DataError, Dataset, Examples, Problems, SourceFile, Task, split_checked};
use crate::diagnostic::plural;
use crate::diagnostic::suggest::{list, suggest};
use crate::rng::Rng;
use crate::spec::{self, Validation};

/// Loads a table: the validation split is a file with the same column names (in any order)
/// or a fraction of the rows, shuffled by the seed when `shuffle` is set, else the last rows.
pub fn load(
    path: &Path,
    target: &str,
    task: spec::CsvTask,
    validation: &Validation,
    shuffle: bool,
    features: Option<&[String]>,
    seed: u64,
) -> Result<Dataset, DataError> {
    let file = SourceFile::read(path)?;
    let table = Table::read(&file)?;
    let columns = Columns::pick(&file, &table, target, features)?;
    let rows = Rows::parse(&file, &table, &columns, task)?;
    let (classes, all) = match task {
        spec::CsvTask::Regression => (None, rows.examples(&[])),
        spec::CsvTask::Classification => {
            let classes = Classes::of(&file, &table, &columns)?;
            let ids = classes.ids(&file, &table, &columns, None)?;
            (Some(classes), rows.examples(&ids))
        }
    };
    let (train, validation) = match validation {
        Validation::Fraction(fraction) => {
            let mut rng = shuffle.then(|| Rng::stream(seed, "data/csv"));
            split_checked(path, all, *fraction, rng.as_mut(), "rows")?
        }
        Validation::File(other) => {
            let other = SourceFile::read(other)?;
            let other_table = Table::read(&other)?;
            let names: Vec<&str> = columns.features.iter().map(|&i| table.name(i)).collect();
            let other_columns = Columns::find(
                &other,
                &other_table,
                &file.path,
                table.name(columns.target),
                &names,
            )?;
            let other_rows = Rows::parse(&other, &other_table, &other_columns, task)?;
            let ids = match &classes {
                Some(classes) => {
                    classes.ids(&other, &other_table, &other_columns, Some(&file.path))?
                }
                None => Vec::new(),
            };
            (all, other_rows.examples(&ids))
        }
    };
    let task = match &classes {
        Some(classes) => Task::Classification {
            classes: classes.names.len(),
        },
        None => Task::Regression { outputs: 1 },
    };
    Ok(Dataset {
        task,
        train,
        validation,
        pad: 0,
        truncated: 0,
        skipped: 0,
    })
}

/// A file's records as the csv crate reads them, with where each starts.
struct Table {
    header: Record,
    records: Vec<Record>,
}

struct Record {
    cells: csv::StringRecord,
    start: usize,
    line: usize,
    delimiter: u8,
}

impl Table {
    fn read(file: &SourceFile) -> Result<Table, DataError> {
        let (body, bom) = file.body();
        let delimiter = delimiter(body);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(file.text.as_bytes());
        let mut records = Vec::new();
        // Lines are counted here rather than taken from csv, whose positions count blank lines
        // oddly; `counted` is the line of byte `counted_to`.
        let (mut counted, mut counted_to) = (1, 0);
        for result in reader.records() {
            let cells = result.map_err(|e| {
                let (start, line) = e
                    .position()
                    .map_or((0, 1), |p| (p.byte() as usize, p.line() as usize));
                let start = start.min(file.text.len());
                file.bad_row(
                    line,
                    start..start,
                    format!("cannot read the row: {e}"),
                    None,
                )
            })?;
            // A line of spaces is blank, not a row of one empty cell.
            if cells.len() == 1 && cells[0].trim().is_empty() {
                continue;
            }
            // A record's position may be before the byte order mark or blank lines, which csv skips.
            let mut start = cells
                .position()
                .map_or(0, |p| p.byte() as usize)
                .clamp(bom, file.text.len());
            start += file.text[start..]
                .bytes()
                .take_while(|b| matches!(b, b'\n' | b'\r'))
                .count();
            counted += file.text.as_bytes()[counted_to..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            counted_to = start;
            records.push(Record {
                cells,
                start,
                line: counted,
                delimiter,
            });
        }
        let mut records = records.into_iter();
        let Some(header) = records.next() else {
            return Err(file.empty(
                "header row",
                Some("the first line names the columns, e.g. `x1,x2,y`".into()),
            ));
        };
        let records: Vec<Record> = records.collect();
        if records.is_empty() {
            return Err(file.empty("rows below the header", None));
        }
        Ok(Table { header, records })
    }

    fn name(&self, column: usize) -> &str {
        self.header.cells.get(column).map_or("", str::trim)
    }

    fn names(&self) -> Vec<&str> {
        self.header.cells.iter().map(str::trim).collect()
    }
}

impl Record {
    /// The byte range of a cell's value in the file, spaces around it left out (of the whole
    /// row when there is no such cell).
    fn span(&self, file: &SourceFile, column: Option<usize>) -> Range<usize> {
        let cells = cell_spans(&file.text, self.start, self.delimiter);
        let row = self.start..cells.last().map_or(self.start, |c| c.end);
        let Some(cell) = column.and_then(|c| cells.get(c).cloned()) else {
            return row;
        };
        let text = &file.text[cell.clone()];
        match text.trim() {
            "" => cell,
            value => {
                let start = cell.start + (text.len() - text.trim_start().len());
                start..start + value.len()
            }
        }
    }
}

/// The separator of a table: a comma, unless its first line has none and has semicolons, tabs
/// or `|` (the most of them wins). A table of one column cannot be used for training, so
/// reading such a line by another separator loses nothing.
fn delimiter(body: &str) -> u8 {
    let first = body
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    let count = |d: u8| first.bytes().filter(|&b| b == d).count();
    if count(b',') > 0 {
        return b',';
    }
    [b';', b'\t', b'|']
        .into_iter()
        .map(|d| (count(d), d))
        .filter(|&(n, _)| n > 0)
        .max_by_key(|&(n, d)| (n, std::cmp::Reverse(d)))
        .map_or(b',', |(_, d)| d)
}

/// The byte ranges of the cells of the record that starts at `start`. The csv crate reads the
/// data but gives no cell positions, so this scanner of the same dialect (`delimiter`, double
/// quotes doubled inside quoted cells, any line ending) finds them for diagnostics.
fn cell_spans(text: &str, start: usize, delimiter: u8) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = start;
    loop {
        let begin = i;
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            while i < bytes.len() {
                if bytes[i] == b'"' {
                    if bytes.get(i + 1) == Some(&b'"') {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
        }
        while i < bytes.len() && bytes[i] != delimiter && !matches!(bytes[i], b'\n' | b'\r') {
            i += 1;
        }
        spans.push(begin..i);
        if bytes.get(i) == Some(&delimiter) {
            i += 1;
        } else {
            return spans;
        }
    }
}

/// Which columns of a file are the target and the features.
struct Columns {
    target: usize,
    features: Vec<usize>,
}

impl Columns {
    /// The target and features of the training file: the listed features, or every other column.
    fn pick(
        file: &SourceFile,
        table: &Table,
        target: &str,
        features: Option<&[String]>,
    ) -> Result<Columns, DataError> {
        let names = table.names();
        let target_index = column(file, table, target)?;
        let Some(features) = features else {
            let features: Vec<usize> = (0..names.len()).filter(|&i| i != target_index).collect();
            if features.is_empty() {
                return Err(file.empty(
                    &format!("feature columns (the header names only the target `{target}`)"),
                    Some("a header like `x1,x2,y` gives two features and the target `y`".into()),
                ));
            }
            for &i in &features {
                column(file, table, names[i])?;
            }
            return Ok(Columns {
                target: target_index,
                features,
            });
        };
        let mut indices = Vec::with_capacity(features.len());
        for (k, feature) in features.iter().enumerate() {
            let index = column(file, table, feature)?;
            let problem = if index == target_index {
                Some(format!(
                    "`{feature}` is the target and cannot also be a feature"
                ))
            } else if features[..k].contains(feature) {
                Some(format!("`{feature}` is listed twice in `features`"))
            } else {
                None
            };
            if let Some(message) = problem {
                return Err(bad_column(file, table, index, message, None));
            }
            indices.push(index);
        }
        Ok(Columns {
            target: target_index,
            features: indices,
        })
    }

    /// The same columns in another file with the same header names (in any order); `trained_on`
    /// names the training file. Columns it lacks are said to be missing from this file: a
    /// close name is suggested only among its columns that no other needed column takes.
    fn find(
        file: &SourceFile,
        table: &Table,
        trained_on: &str,
        target: &str,
        features: &[&str],
    ) -> Result<Columns, DataError> {
        let needed: Vec<&str> = std::iter::once(target)
            .chain(features.iter().copied())
            .collect();
        let names = table.names();
        let missing: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|n| !names.contains(n))
            .collect();
        if let Some(&first) = missing.first() {
            let spare = names.iter().copied().filter(|n| !needed.contains(n));
            let mut help = match suggest(first, spare) {
                Some(close) => format!("did you mean `{close}`? "),
                None => String::new(),
            };
            if missing.len() > 1 {
                help += &format!("it also lacks {}; ", list(missing[1..].iter().copied()));
            }
            help += &format!(
                "a validation file needs the columns the model trains on; its columns are {}",
                list(names.iter().copied())
            );
            return Err(DataError::UnknownColumn {
                path: file.path.clone(),
                column: first.to_owned(),
                context: format!(", which the training file `{trained_on}` has"),
                source_code: file.named(),
                span: table.header.span(file, None).into(),
                help,
            });
        }
        Ok(Columns {
            target: column(file, table, target)?,
            features: features
                .iter()
                .map(|f| column(file, table, f))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The index of the column named `name`, which must appear once.
fn column(file: &SourceFile, table: &Table, name: &str) -> Result<usize, DataError> {
    let names = table.names();
    let mut found = names
        .iter()
        .enumerate()
        .filter(|(_, n)| **n == name)
        .map(|(i, _)| i);
    let Some(index) = found.next() else {
        let mut help = match suggest(name, names.iter().copied()) {
            Some(close) => format!("did you mean `{close}`? "),
            None => String::new(),
        };
        help += &format!("the columns are {}", list(names.iter().copied()));
        if !names.is_empty() && names.iter().all(|n| n.parse::<f64>().is_ok()) {
            help += "; the first line must be a header naming the columns, and this one looks like data";
        }
        return Err(DataError::UnknownColumn {
            path: file.path.clone(),
            column: name.to_owned(),
            context: String::new(),
            source_code: file.named(),
            span: table.header.span(file, None).into(),
            help,
        });
    };
    if let Some(again) = found.next() {
        return Err(bad_column(
            file,
            table,
            again,
            format!("the header names `{name}` twice"),
            Some("rename one of the columns".into()),
        ));
    }
    Ok(index)
}

fn bad_column(
    file: &SourceFile,
    table: &Table,
    index: usize,
    message: String,
    help: Option<String>,
) -> DataError {
    DataError::BadColumn {
        path: file.path.clone(),
        line: table.header.line,
        message,
        source_code: file.named(),
        span: table.header.span(file, Some(index)).into(),
        help,
    }
}

/// The parsed cells: features row-major, and regression targets (classification labels stay
/// in the table until the classes are known).
struct Rows {
    features: Vec<f32>,
    width: usize,
    targets: Vec<f32>,
}

impl Rows {
    fn parse(
        file: &SourceFile,
        table: &Table,
        columns: &Columns,
        task: spec::CsvTask,
    ) -> Result<Rows, DataError> {
        let width = columns.features.len();
        let mut rows = Rows {
            features: Vec::with_capacity(table.records.len() * width),
            width,
            targets: Vec::new(),
        };
        let mut problems = Problems::new(&file.path);
        let mut cells = Repeated::default();
        let expected = table.header.cells.len();
        for record in &table.records {
            let width = record.cells.len();
            if width != expected {
                cells.add(Issue::Width(width), || Problem {
                    line: record.line,
                    span: record.span(file, None),
                    message: format!("this row has {width} cells, but the header has {expected}"),
                    help: None,
                });
                continue;
            }
            for &i in &columns.features {
                let value = number(record, i).unwrap_or_else(|kind| {
                    cells.add(Issue::Cell(i, kind), || {
                        cell_problem(file, table, record, i, kind, false)
                    });
                    0.0
                });
                rows.features.push(value);
            }
            let target = columns.target;
            match task {
                spec::CsvTask::Regression => {
                    let value = number(record, target).unwrap_or_else(|kind| {
                        cells.add(Issue::Cell(target, kind), || {
                            cell_problem(file, table, record, target, kind, true)
                        });
                        0.0
                    });
                    rows.targets.push(value);
                }
                spec::CsvTask::Classification => {
                    if record.cells[target].trim().is_empty() {
                        let kind = CellKind::Empty;
                        cells.add(Issue::Cell(target, kind), || {
                            let mut problem = cell_problem(file, table, record, target, kind, true);
                            problem.message =
                                format!("empty cell in the target column `{}`", table.name(target));
                            problem.help = Some("every row needs a class".into());
                            problem
                        });
                    }
                }
            }
        }
        cells.report(file, &mut problems);
        problems.finish()?;
        Ok(rows)
    }

    /// The examples, with `classes` ids for classification (empty for regression).
    fn examples(self, classes: &[u32]) -> Examples {
        Examples::Tabular {
            features: self.features,
            width: self.width,
            targets: self.targets,
            classes: classes.to_vec(),
        }
    }
}

/// A problem rows can share: a number of cells other than the header's, or a cell of a column
/// that is not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Issue {
    Width(usize),
    Cell(usize, CellKind),
}

/// What is wrong with a cell that should hold a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CellKind {
    Empty,
    NotFinite,
    NotNumber,
}

/// The finite number in a cell.
fn number(record: &Record, column: usize) -> Result<f32, CellKind> {
    let cell = record.cells.get(column).unwrap_or("").trim();
    if cell.is_empty() {
        return Err(CellKind::Empty);
    }
    match cell.parse::<f32>() {
        Ok(value) if value.is_finite() => Ok(value),
        Ok(_) => Err(CellKind::NotFinite),
        Err(_) => Err(CellKind::NotNumber),
    }
}

/// The problem of one cell, as reported for the first row that has it.
fn cell_problem(
    file: &SourceFile,
    table: &Table,
    record: &Record,
    column: usize,
    kind: CellKind,
    target: bool,
) -> Problem {
    let cell = record.cells.get(column).unwrap_or("").trim();
    let name = table.name(column);
    let (message, help) = match (kind, target) {
        (CellKind::Empty, true) => (
            format!("empty cell in column `{name}`"),
            "every row needs a target",
        ),
        (CellKind::Empty, false) => (
            format!("empty cell in column `{name}`"),
            "fill in missing values, or leave the column out with `features`",
        ),
        (CellKind::NotFinite, _) => (
            format!("`{cell}` in column `{name}` is not a finite number"),
            "fill in missing values before training",
        ),
        (CellKind::NotNumber, true) => (
            format!("`{cell}` in the target column `{name}` is not a number"),
            "regression targets are numbers; for class labels use task=\"classification\"",
        ),
        (CellKind::NotNumber, false) => (
            format!("`{cell}` in column `{name}` is not a number"),
            "features must be numbers; leave the column out with `features`",
        ),
    };
    Problem {
        line: record.line,
        span: record.span(file, Some(column)),
        message,
        help: Some(help.into()),
    }
}

/// The class labels of the training file, in class-id order.
struct Classes {
    names: Vec<String>,
}

impl Classes {
    fn of(file: &SourceFile, table: &Table, columns: &Columns) -> Result<Classes, DataError> {
        let distinct: BTreeSet<&str> = table.records.iter().map(|r| label(r, columns)).collect();
        let mut names: Vec<&str> = distinct.into_iter().collect();
        let numbers: Option<Vec<f64>> = names.iter().map(|n| n.parse::<f64>().ok()).collect();
        if let Some(numbers) = numbers {
            let mut pairs: Vec<(f64, &str)> = numbers.into_iter().zip(names).collect();
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
            names = pairs.into_iter().map(|(_, n)| n).collect();
        }
        if names.len() < 2 {
            return Err(DataError::OneClass {
                path: file.path.clone(),
                column: table.name(columns.target).to_owned(),
                class: names.first().map_or("", |n| n).to_owned(),
                source_code: file.named(),
                span: table.header.span(file, Some(columns.target)).into(),
            });
        }
        Ok(Classes {
            names: names.into_iter().map(str::to_owned).collect(),
        })
    }

    /// The class id of every row; `trained_on` names the training file when these rows are
    /// another file's, whose labels must all be known.
    fn ids(
        &self,
        file: &SourceFile,
        table: &Table,
        columns: &Columns,
        trained_on: Option<&str>,
    ) -> Result<Vec<u32>, DataError> {
        let index: HashMap<&str, u32> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect();
        let mut problems = Problems::new(&file.path);
        let mut unseen = Repeated::default();
        let mut ids = Vec::with_capacity(table.records.len());
        for record in &table.records {
            let text = label(record, columns);
            match index.get(text) {
                Some(&id) => ids.push(id),
                None => unseen.add(text, || {
                    let shown: Vec<&str> = self.names.iter().take(10).map(String::as_str).collect();
                    let more = if self.names.len() > shown.len() {
                        ", …"
                    } else {
                        ""
                    };
                    Problem {
                        line: record.line,
                        span: record.span(file, Some(columns.target)),
                        message: format!("the class `{text}` does not occur in the training data"),
                        help: Some(format!(
                            "the classes of `{}` are {}{more}",
                            trained_on.unwrap_or(&file.path),
                            list(shown)
                        )),
                    }
                }),
            }
        }
        unseen.report(file, &mut problems);
        problems.finish()?;
        Ok(ids)
    }
}

fn label<'a>(record: &'a Record, columns: &Columns) -> &'a str {
    record.cells.get(columns.target).unwrap_or("").trim()
}

/// A problem found in a row, before it is known how many rows have it.
struct Problem {
    line: usize,
    span: Range<usize>,
    message: String,
    help: Option<String>,
}

/// Problems that many rows share (text in a number column, an unknown class, a missing cell),
/// each reported once: where it first occurs, with the number of rows that have it. They are
/// reported in the order they first occur, which is the order of the rows.
struct Repeated<K> {
    index: HashMap<K, usize>,
    found: Vec<(Problem, usize)>,
}

impl<K> Default for Repeated<K> {
    fn default() -> Self {
        Repeated {
            index: HashMap::new(),
            found: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Repeated<K> {
    /// Counts a row with the problem `key`; `first` describes it for the first such row.
    fn add(&mut self, key: K, first: impl FnOnce() -> Problem) {
        match self.index.get(&key) {
            Some(&i) => self.found[i].1 += 1,
            None => {
                self.index.insert(key, self.found.len());
                self.found.push((first(), 1));
            }
        }
    }

    fn report(self, file: &SourceFile, problems: &mut Problems) {
        for (problem, rows) in self.found {
            let message = match rows {
                1 => problem.message,
                _ => format!(
                    "{} (and in {})",
                    problem.message,
                    plural(rows - 1, "more row")
                ),
            };
            problems.push(file.bad_row(problem.line, problem.span, message, problem.help));
        }
    }
}
