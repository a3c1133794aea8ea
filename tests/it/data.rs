//! Data files: csv, text and jsonl loaded through `xp::data::load`, and their diagnostics.

use std::path::{Path, PathBuf};

use candle_core::Device;
use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme};
use tempfile::TempDir;
use xp::data::{self, DataError, Dataset, Examples, Task};
use xp::ops::IGNORE_INDEX;
use xp::spec::{CsvTask as Kind, Data, DataSource, Validation};

const IGN: i64 = IGNORE_INDEX;
const END: u32 = 256;

type Loaded = Result<Dataset, DataError>;

fn write(dir: &TempDir, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn csv_spec(
    path: &Path,
    task: Kind,
    validation: Validation,
    shuffle: bool,
    features: Option<&[&str]>,
) -> Data {
    let features = features.map(|f| f.iter().map(|s| s.to_string()).collect());
    let (path, target) = (path.into(), "y".into());
    Data {
        seed: Some(7),
        source: DataSource::Csv {
            path,
            target,
            task,
            validation,
            shuffle,
            features,
        },
    }
}

/// A csv with the target `y`, file order kept, all other columns as features.
fn csv(path: &Path, task: Kind, validation: Validation) -> Loaded {
    data::load(&csv_spec(path, task, validation, false, None), 0, None)
}

fn text(
    path: &Path,
    tokenizer: Option<&Path>,
    validation: Validation,
    context: Option<usize>,
) -> Loaded {
    let source = DataSource::Text {
        path: path.into(),
        tokenizer: tokenizer.map(Into::into),
        validation,
    };
    data::load(&Data { seed: None, source }, 0, context)
}

fn jsonl_spec(path: &Path, validation: Validation, shuffle: bool, packing: bool) -> Data {
    let source = DataSource::Jsonl {
        path: path.into(),
        prompt_field: "prompt".into(),
        response_field: "response".into(),
        messages_field: "messages".into(),
        validation,
        shuffle,
        packing,
    };
    Data { seed: None, source }
}

/// A jsonl file in file order, unpacked.
fn jsonl(path: &Path, validation: Validation, context: Option<usize>) -> Loaded {
    data::load(&jsonl_spec(path, validation, false, false), 0, context)
}

fn ok(result: Loaded) -> Dataset {
    result.unwrap_or_else(|e| panic!("{}", render(&e)))
}

/// The error of `result`, checked to have `code` and a message ending with `message`.
fn err(result: Loaded, code: &str, message: &str) -> DataError {
    let e = match result {
        Ok(d) => panic!("loaded, but expected {code}: {d:?}"),
        Err(e) => e,
    };
    assert_eq!(
        e.code().map(|c| c.to_string()).as_deref(),
        Some(code),
        "{}",
        render(&e)
    );
    assert!(
        e.to_string().ends_with(message),
        "`{e}` does not end with `{message}`"
    );
    e
}

fn help(e: &DataError) -> String {
    e.help().map(|h| h.to_string()).unwrap_or_default()
}

fn render(e: &DataError) -> String {
    let mut out = String::new();
    let handler =
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(200);
    handler.render_report(&mut out, e).unwrap();
    out
}

/// Asserts that the rendered diagnostic holds `snippet` (source lines and the label under them).
fn assert_rendered(e: &DataError, snippet: &str) {
    let rendered = render(e);
    assert!(
        rendered.contains(snippet),
        "{rendered}\ndoes not contain\n{snippet}"
    );
}

fn tabular(e: &Examples) -> (&[f32], usize, &[f32], &[u32]) {
    match e {
        Examples::Tabular {
            features,
            width,
            targets,
            classes,
        } => (features, *width, targets, classes),
        Examples::Tokens { .. } => panic!("expected tabular examples"),
    }
}

fn tokens(e: &Examples) -> (&[Vec<u32>], &[Vec<i64>]) {
    match e {
        Examples::Tokens { inputs, targets } => (inputs, targets),
        Examples::Tabular { .. } => panic!("expected token examples"),
    }
}

fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

fn labels(s: &str) -> Vec<i64> {
    s.bytes().map(i64::from).collect()
}

// ---- csv ----

#[test]
fn csv_regression_keeps_file_order_and_holds_out_the_last_rows() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "a,b,y\n1,2,3\n4,5,6\n7,8,9\n10,11,12.5\n");
    let d = ok(csv(&path, Kind::Regression, Validation::Fraction(0.25)));
    assert_eq!(d.task, Task::Regression { outputs: 1 });
    assert_eq!(
        tabular(&d.train),
        (
            &[1.0, 2.0, 4.0, 5.0, 7.0, 8.0][..],
            2,
            &[3.0, 6.0, 9.0][..],
            &[][..]
        )
    );
    assert_eq!(
        tabular(&d.validation),
        (&[10.0, 11.0][..], 2, &[12.5][..], &[][..])
    );
    assert_eq!(d.truncated, 0);

    let batch = d.batch(&d.train, &[2, 0], &Device::Cpu).unwrap();
    assert_eq!(
        batch.inputs.to_vec2::<f32>().unwrap(),
        [[7.0, 8.0], [1.0, 2.0]]
    );
    assert_eq!(batch.targets.to_vec2::<f32>().unwrap(), [[9.0], [3.0]]);
}

#[test]
fn csv_features_are_the_listed_columns_in_their_order() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "y,a,b,c\n1,2,3,4\n5,6,7,8\n");
    let val = write(&dir, "v.csv", "c,b,a,y,extra\n40,30,20,10,x\n");
    let spec = csv_spec(
        &path,
        Kind::Regression,
        Validation::File(val),
        true,
        Some(&["c", "a"]),
    );
    let d = ok(data::load(&spec, 0, None));
    assert_eq!(
        tabular(&d.train),
        (&[4.0, 2.0, 8.0, 6.0][..], 2, &[1.0, 5.0][..], &[][..])
    );
    assert_eq!(
        tabular(&d.validation),
        (&[40.0, 20.0][..], 2, &[10.0][..], &[][..])
    );
}

#[test]
fn csv_classes_sort_numerically_when_all_are_numbers() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "x,y\n0,10\n1,2\n2,1\n3,2\n4,10\n");
    let d = ok(csv(&path, Kind::Classification, Validation::Fraction(0.2)));
    assert_eq!(d.task, Task::Classification { classes: 3 });
    // 1 → 0, 2 → 1, 10 → 2 (lexically 10 would come before 2).
    assert_eq!(tabular(&d.train).3, [2, 1, 0, 1]);
    assert_eq!(tabular(&d.validation).3, [2]);
    let batch = d.batch(&d.train, &[0, 2], &Device::Cpu).unwrap();
    assert_eq!(batch.targets.to_vec1::<i64>().unwrap(), [2, 0]);
    assert_eq!(batch.counted, 2);
}

#[test]
fn csv_classes_sort_lexically_otherwise_and_validation_uses_the_same_ids() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "x,y\n0,cat\n1,ant\n2, bee \n3,10\n");
    let val = write(&dir, "v.csv", "y,x\nbee,9\ncat,8\n");
    let d = ok(csv(&path, Kind::Classification, Validation::File(val)));
    // Lexical order: "10" < "ant" < "bee" < "cat"; cells are trimmed.
    assert_eq!(d.task, Task::Classification { classes: 4 });
    assert_eq!(tabular(&d.train).3, [3, 1, 2, 0]);
    assert_eq!(
        tabular(&d.validation),
        (&[9.0, 8.0][..], 1, &[][..], &[2, 3][..])
    );
}

#[test]
fn csv_shuffled_split_is_a_deterministic_permutation() {
    let dir = TempDir::new().unwrap();
    let rows: String = (0..20).map(|i| format!("{i},{}\n", i * 10)).collect();
    let path = write(&dir, "t.csv", format!("x,y\n{rows}"));
    let spec = csv_spec(
        &path,
        Kind::Regression,
        Validation::Fraction(0.25),
        true,
        None,
    );
    let a = ok(data::load(&spec, 0, None));
    assert_eq!(a, ok(data::load(&spec, 0, None)));
    let (train, val) = (tabular(&a.train).0, tabular(&a.validation).0);
    assert_eq!((train.len(), val.len()), (15, 5));
    let in_order: Vec<f32> = (0..20).map(|i| i as f32).collect();
    let mut all: Vec<f32> = train.iter().chain(val).copied().collect();
    assert_ne!(all, in_order);
    all.sort_by(f32::total_cmp);
    assert_eq!(all, in_order);
    // Targets stay with their rows.
    for (x, y) in train.iter().zip(tabular(&a.train).2) {
        assert_eq!(*y, x * 10.0);
    }
    let other_seed = Data {
        seed: Some(8),
        ..spec
    };
    assert_ne!(ok(data::load(&other_seed, 0, None)).train, a.train);
}

#[test]
fn csv_reads_bom_crlf_quotes_and_blank_lines() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "t.csv",
        "\u{feff}\"a\",y\r\n\"1.5\",2\r\n\r\n  \r\n3, 4 \r\n",
    );
    let d = ok(csv(&path, Kind::Regression, Validation::Fraction(0.5)));
    assert_eq!(tabular(&d.train), (&[1.5][..], 1, &[2.0][..], &[][..]));
    assert_eq!(tabular(&d.validation), (&[3.0][..], 1, &[4.0][..], &[][..]));
}

/// Spreadsheets export semicolons in many locales, and `.tsv` files tabs: a first line with no
/// comma but one of these is read with it (a table of one column could not be trained on).
#[test]
fn csv_separated_by_semicolons_tabs_or_bars_is_read_so() {
    let dir = TempDir::new().unwrap();
    for sep in [";", "\t", "|"] {
        let text = "a,b,y\n1,2,3\n4,5,6\n".replace(',', sep);
        let path = write(&dir, "t.csv", text);
        let d = ok(csv(&path, Kind::Regression, Validation::Fraction(0.0)));
        assert_eq!(
            tabular(&d.train),
            (&[1.0, 2.0, 4.0, 5.0][..], 2, &[3.0, 6.0][..], &[][..]),
            "separator {sep:?}"
        );
    }
    // Cells are found by the same separator: the label is on the bad cell.
    let path = write(&dir, "t.csv", "a;b;y\n1;2;3\n4;x,5;6\n");
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.0)),
        "xp::data::bad-row",
        "t.csv:3: `x,5` in column `b` is not a number",
    );
    assert_rendered(&e, " 3 │ 4;x,5;6\n   ·   ─┬─\n");
    // A comma in the first line keeps the comma.
    let path = write(&dir, "t.csv", "a;b,y\n1,2\n");
    let d = ok(csv(&path, Kind::Regression, Validation::Fraction(0.0)));
    assert_eq!(tabular(&d.train).1, 1);
}

#[test]
fn csv_unreadable_files() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope.csv");
    err(
        csv(&missing, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::unreadable",
        "nope.csv`: no such file",
    );
}

#[test]
fn bytes_that_are_not_utf8_are_pointed_at() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", b"x,y\n1,2\n3,\xe9t\xe9\n");
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::not-utf8",
        "t.csv:3: not UTF-8 text: byte 10 is 0xe9",
    );
    assert_rendered(
        &e,
        " 3 │ 3,\u{fffd}t\u{fffd}\n   ·   ┬\n   ·   ╰── this byte",
    );
    assert!(help(&e).contains("UTF-8"), "{}", help(&e));
    let path = write(
        &dir,
        "t.jsonl",
        b"{\"prompt\": \"a\xff\", \"response\": \"b\"}\n",
    );
    err(
        jsonl(&path, Validation::Fraction(0.0), None),
        "xp::data::not-utf8",
        "t.jsonl:1: not UTF-8 text: byte 13 is 0xff",
    );
}

#[test]
fn csv_empty_file_has_no_header_and_a_header_alone_no_rows() {
    let dir = TempDir::new().unwrap();
    for contents in ["", "\n\n", "\u{feff}"] {
        let path = write(&dir, "t.csv", contents);
        err(
            csv(&path, Kind::Regression, Validation::Fraction(0.2)),
            "xp::data::empty",
            "t.csv` has no header row",
        );
    }
    let path = write(&dir, "t.csv", "x,y\n");
    let message = "t.csv` has no rows below the header";
    err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::empty",
        message,
    );
}

#[test]
fn csv_unknown_target_suggests_a_column() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "feat,Y\n1,2\n");
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::unknown-column",
        "has no column `y`",
    );
    assert_eq!(help(&e), "did you mean `Y`? the columns are `feat`, `Y`");
    assert_rendered(&e, " 1 │ feat,Y\n   · ───┬──\n   ·    ╰── the header");
}

#[test]
fn csv_without_a_header_says_the_first_line_looks_like_data() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "1,2\n3,4\n");
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::unknown-column",
        "has no column `y`",
    );
    assert!(help(&e).ends_with(
        "the first line must be a header naming the columns, and this one looks like data"
    ));
}

#[test]
fn csv_unknown_feature_and_a_validation_file_without_the_column() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "alpha,beta,y\n1,2,3\n");
    let spec = csv_spec(
        &path,
        Kind::Regression,
        Validation::Fraction(0.2),
        false,
        Some(&["alpa"]),
    );
    let e = err(
        data::load(&spec, 0, None),
        "xp::data::unknown-column",
        "t.csv` has no column `alpa`",
    );
    assert!(
        help(&e).starts_with("did you mean `alpha`?"),
        "{}",
        help(&e)
    );

    let val = write(&dir, "v.csv", "alpha,y\n1,3\n");
    let e = err(
        csv(&path, Kind::Regression, Validation::File(val)),
        "xp::data::unknown-column",
        &format!(
            "v.csv` has no column `beta`, which the training file `{}` has",
            path.display()
        ),
    );
    assert_eq!(
        help(&e),
        "a validation file needs the columns the model trains on; its columns are `alpha`, `y`"
    );
}

#[test]
fn a_column_missing_from_the_validation_file_suggests_no_column_in_use() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "feat1,feat2,feat3,y\n1,2,3,4\n");
    let missing = format!(
        "has no column `feat2`, which the training file `{}` has",
        path.display()
    );
    let validate_with = |header: &str| {
        let val = write(&dir, "v.csv", format!("{header}\n1,2,3,4\n"));
        let e = err(
            csv(&path, Kind::Regression, Validation::File(val)),
            "xp::data::unknown-column",
            &missing,
        );
        help(&e)
    };
    // `feat1` is close to `feat2`, but is a column of its own: no "did you mean".
    assert_eq!(
        validate_with("feat1,y"),
        "it also lacks `feat3`; a validation file needs the columns the model trains on; its columns are `feat1`, `y`"
    );
    // A column the training file does not use is a plausible renaming.
    let e = validate_with("feat1,Feat_2,feat3,y");
    assert!(e.starts_with("did you mean `Feat_2`?"), "{e}");
}

#[test]
fn csv_row_with_the_wrong_number_of_cells() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "a,b,y\n1,2,3\n4,5\n");
    let message = "t.csv:3: this row has 2 cells, but the header has 3";
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::bad-row",
        message,
    );
    assert_rendered(&e, " 3 │ 4,5\n   · ─┬─\n   ·  ╰── here");
}

#[test]
fn csv_cell_that_is_not_a_number_is_labelled() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "a,b,y\n1,2,3\n4,\"x,y\",6\n");
    let message = "t.csv:3: `x,y` in column `b` is not a number";
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::bad-row",
        message,
    );
    assert_eq!(
        help(&e),
        "features must be numbers; leave the column out with `features`"
    );
    assert_rendered(&e, " 3 │ 4,\"x,y\",6\n   ·   ──┬──\n   ·     ╰── here");
}

#[test]
fn csv_target_that_is_not_a_number_suggests_classification() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "a,y\n1,cat\n");
    let message = "t.csv:2: `cat` in the target column `y` is not a number";
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::bad-row",
        message,
    );
    assert!(help(&e).contains("task=\"classification\""));
}

#[test]
fn csv_empty_and_non_finite_cells() {
    let dir = TempDir::new().unwrap();
    let regression = |contents: &str, message: &str| {
        let path = write(&dir, "t.csv", contents);
        err(
            csv(&path, Kind::Regression, Validation::Fraction(0.2)),
            "xp::data::bad-row",
            message,
        )
    };
    regression("a,y\n1,2\n ,3\n", "t.csv:3: empty cell in column `a`");
    regression(
        "a,y\n1,2\n\n3,nan\n",
        "t.csv:4: `nan` in column `y` is not a finite number",
    );
    // Lines are counted past a byte order mark, CRLF and blank lines; the label is on the value.
    let e = regression(
        "\u{feff}a,y\r\n1,2\r\n\r\n3, inf \r\n",
        "t.csv:4: `inf` in column `y` is not a finite number",
    );
    assert_rendered(&e, " 4 │ 3, inf \n   ·    ─┬─\n");

    let path = write(&dir, "t.csv", "a,y\n1,b\n2,\n");
    let message = "t.csv:3: empty cell in the target column `y`";
    err(
        csv(&path, Kind::Classification, Validation::Fraction(0.2)),
        "xp::data::bad-row",
        message,
    );
}

#[test]
fn csv_every_bad_row_is_reported() {
    let dir = TempDir::new().unwrap();
    // Rows of 3, 4, … cells: thirty different problems.
    let rows: String = (0..30)
        .map(|i| format!("{i},1,2{}\n", ",0".repeat(i)))
        .collect();
    let path = write(&dir, "t.csv", format!("a,y\n1,2\n{rows}"));
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::many",
        "t.csv` has 30 problems",
    );
    assert_eq!(help(&e), "the first 20 are shown");
    let related: Vec<String> = e.related().unwrap().map(|r| r.to_string()).collect();
    assert_eq!(related.len(), 20);
    assert!(
        related[0].ends_with("t.csv:3: this row has 3 cells, but the header has 2"),
        "{}",
        related[0]
    );
    assert!(related[19].contains("t.csv:22:"), "{}", related[19]);
}

/// Text labels with the default task, or a text column, are one problem, not one per row.
#[test]
fn csv_text_in_a_number_column_is_said_once_with_the_rows_counted() {
    let dir = TempDir::new().unwrap();
    let rows: String = (0..30).map(|i| format!("{i},cat\n")).collect();
    let path = write(&dir, "t.csv", format!("a,y\n1,2\n{rows}3,\n4,5,6\n7,8,9\n"));
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::many",
        "t.csv` has 3 problems",
    );
    let related: Vec<&dyn Diagnostic> = e.related().unwrap().collect();
    assert_eq!(related.len(), 3);
    assert!(
        related[0].to_string().ends_with(
            "t.csv:3: `cat` in the target column `y` is not a number (and in 29 more rows)"
        ),
        "{}",
        related[0]
    );
    let help = related[0].help().map(|h| h.to_string()).unwrap_or_default();
    assert!(help.contains("task=\"classification\""), "{help}");
    assert!(
        related[1]
            .to_string()
            .ends_with("t.csv:33: empty cell in column `y`")
    );
    assert!(
        related[2]
            .to_string()
            .ends_with("t.csv:34: this row has 3 cells, but the header has 2 (and in 1 more row)")
    );

    let path = write(&dir, "t.csv", "a,b,y\n1,red,2\n2,blue,3\n3,4,5\n");
    err(
        csv(&path, Kind::Regression, Validation::Fraction(0.2)),
        "xp::data::bad-row",
        "t.csv:2: `red` in column `b` is not a number (and in 1 more row)",
    );
}

#[test]
fn csv_unseen_class_in_the_validation_file() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "x,y\n1,a\n2,b\n");
    let val = write(&dir, "v.csv", "x,y\n1,a\n2,c\n3,c\n");
    let message = "v.csv:3: the class `c` does not occur in the training data (and in 1 more row)";
    let e = err(
        csv(&path, Kind::Classification, Validation::File(val)),
        "xp::data::bad-row",
        message,
    );
    assert!(help(&e).ends_with("t.csv` are `a`, `b`"), "{}", help(&e));
}

#[test]
fn csv_classification_needs_two_classes() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "x,y\n1,a\n2,a\n");
    let message = "has a single class in column `y`: `a`";
    let e = err(
        csv(&path, Kind::Classification, Validation::Fraction(0.5)),
        "xp::data::one-class",
        message,
    );
    assert_rendered(&e, " 1 │ x,y\n   ·   ┬\n   ·   ╰── the target column");
}

#[test]
fn csv_columns_used_twice() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "x,y\n1,2\n");
    let spec = csv_spec(
        &path,
        Kind::Regression,
        Validation::Fraction(0.5),
        false,
        Some(&["x", "y"]),
    );
    let message = "t.csv:1: `y` is the target and cannot also be a feature";
    err(data::load(&spec, 0, None), "xp::data::bad-column", message);

    let path = write(&dir, "t.csv", "x,y,x\n1,2,3\n");
    let message = "t.csv:1: the header names `x` twice";
    let e = err(
        csv(&path, Kind::Regression, Validation::Fraction(0.5)),
        "xp::data::bad-column",
        message,
    );
    assert_rendered(&e, " 1 │ x,y,x\n   ·     ┬\n");
}

#[test]
fn csv_fraction_that_leaves_no_validation_rows() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.csv", "x,y\n1,2\n3,4\n");
    let message = "has no validation rows: 0.1 of 2 rows rounds to none";
    err(
        csv(&path, Kind::Regression, Validation::Fraction(0.1)),
        "xp::data::empty",
        message,
    );
}

// ---- text ----

#[test]
fn text_bytes_in_windows_with_the_last_windows_for_validation() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.txt", "abcdefg");
    let d = ok(text(&path, None, Validation::Fraction(0.34), Some(3)));
    assert_eq!(d.task, Task::Language { vocab: 257 });
    assert_eq!(d.pad, END);
    // Tokens a..g then END; three windows, the last one short.
    assert_eq!(
        tokens(&d.train),
        (
            &[bytes("abc"), bytes("def")][..],
            &[labels("bcd"), labels("efg")][..]
        )
    );
    assert_eq!(tokens(&d.validation), (&[bytes("g")][..], &[vec![256]][..]));
    let batch = d.batch(&d.validation, &[0], &Device::Cpu).unwrap();
    assert_eq!(batch.inputs.to_vec2::<u32>().unwrap(), [[103]]);
}

#[test]
fn text_windows_default_to_128_and_validation_file() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.txt", "x".repeat(300));
    let val = write(&dir, "v.txt", "\u{feff}hé\r\n");
    let d = ok(text(&path, None, Validation::File(val), None));
    let (inputs, targets) = tokens(&d.train);
    assert_eq!(
        inputs.iter().map(Vec::len).collect::<Vec<_>>(),
        [128, 128, 44]
    );
    assert_eq!(targets[2].last(), Some(&256));
    // The byte order mark is not text; é is two bytes; CRLF stays.
    assert_eq!(
        tokens(&d.validation),
        (
            &[vec![104, 0xc3, 0xa9, 13, 10]][..],
            &[vec![0xc3, 0xa9, 13, 10, 256]][..]
        )
    );
}

#[test]
fn text_errors() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.txt", "");
    err(
        text(&path, None, Validation::Fraction(0.1), None),
        "xp::data::empty",
        "t.txt` has no text",
    );
    let path = write(&dir, "t.txt", b"ab\xc3");
    err(
        text(&path, None, Validation::Fraction(0.1), None),
        "xp::data::not-utf8",
        "t.txt:1: not UTF-8 text: byte 2 is 0xc3",
    );
    let path = write(&dir, "t.txt", "abcdef");
    let message = "has no validation windows: 0.1 of 2 windows rounds to none";
    err(
        text(&path, None, Validation::Fraction(0.1), Some(4)),
        "xp::data::empty",
        message,
    );
}

/// A WordLevel tokenizer.json written by hand, with an end-of-text token.
const TOKENIZER: &str = r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [
    {"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": null,
  "decoder": null,
  "model": {
    "type": "WordLevel",
    "vocab": {"<|endoftext|>": 0, "[UNK]": 1, "the": 2, "cat": 3, "sat": 4, "on": 5, "mat": 6},
    "unk_token": "[UNK]"
  }
}"#;

#[test]
fn text_with_a_tokenizer() {
    let dir = TempDir::new().unwrap();
    let tokenizer = write(&dir, "tokenizer.json", TOKENIZER);
    let path = write(&dir, "t.txt", "the cat sat on the mat");
    let val = write(&dir, "v.txt", "the dog sat");
    let d = ok(text(
        &path,
        Some(&tokenizer),
        Validation::File(val),
        Some(4),
    ));
    assert_eq!(d.task, Task::Language { vocab: 7 });
    assert_eq!(d.pad, 0);
    // the cat sat on the mat <|endoftext|> = 2 3 4 5 2 6 0.
    assert_eq!(
        tokens(&d.train),
        (
            &[vec![2, 3, 4, 5], vec![2, 6]][..],
            &[vec![3, 4, 5, 2], vec![6, 0]][..]
        )
    );
    // An unknown word is [UNK].
    assert_eq!(
        tokens(&d.validation),
        (&[vec![2, 1, 4]][..], &[vec![1, 4, 0]][..])
    );
}

/// The end-of-text token is the one the model's files declare, whatever its spelling.
#[test]
fn text_ends_with_the_end_token_the_tokenizer_files_declare() {
    let eot = TOKENIZER
        .replace("<|endoftext|>", "<EOT>")
        .replace("\"[UNK]\": 1", "\"[UNK]\": 1, \"</s>\": 7");
    let end = |extra: &[(&str, &str)]| {
        let dir = TempDir::new().unwrap();
        let tokenizer = write(&dir, "tokenizer.json", &eot);
        for (name, text) in extra {
            write(&dir, name, text);
        }
        let path = write(&dir, "t.txt", "the cat");
        let d = ok(text(
            &path,
            Some(&tokenizer),
            Validation::Fraction(0.0),
            None,
        ));
        tokens(&d.train).1[0].last().copied()
    };
    // The tokenizer's configs, in transformers' order; `</s>` is an ordinary word here.
    let config = [(
        "tokenizer_config.json",
        r#"{"eos_token": {"content": "<EOT>"}}"#,
    )];
    assert_eq!(end(&config), Some(0));
    let map = [("special_tokens_map.json", r#"{"eos_token": "[UNK]"}"#)];
    assert_eq!(end(&map), Some(1));
    let model = [("config.json", r#"{"eos_token_id": [3, 0]}"#)];
    assert_eq!(end(&model), Some(3));
    // Without them, the special token of tokenizer.json that names an end.
    assert_eq!(end(&[]), Some(0));
}

#[test]
fn text_with_a_broken_tokenizer() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.txt", "the cat");
    let fraction = || Validation::Fraction(0.5);
    // An unknown model type is found after reading the whole model: no label.
    let tokenizer = write(
        &dir,
        "tokenizer.json",
        TOKENIZER.replace("\"WordLevel\"", "\"WordLevl\""),
    );
    let message = "tokenizer.json`: data did not match any variant of untagged enum ModelUntagged";
    let e = err(
        text(&path, Some(&tokenizer), fraction(), None),
        "xp::data::bad-tokenizer",
        message,
    );
    assert!(e.labels().is_none_or(|mut l| l.next().is_none()));

    let tokenizer = write(&dir, "tokenizer.json", "{\n  \"version\": \"1.0\",,\n}");
    let message = "tokenizer.json`: key must be a string";
    let e = err(
        text(&path, Some(&tokenizer), fraction(), None),
        "xp::data::bad-tokenizer",
        message,
    );
    assert_rendered(
        &e,
        " 2 │   \"version\": \"1.0\",,\n   ·                    ┬\n   ·                    ╰── here",
    );

    let missing = dir.path().join("none.json");
    err(
        text(&path, Some(&missing), fraction(), None),
        "xp::data::unreadable",
        "none.json`: no such file",
    );
}

// ---- jsonl ----

#[test]
fn jsonl_prompt_response_learns_only_the_response() {
    let dir = TempDir::new().unwrap();
    let lines =
        "{\"prompt\": \"ab\", \"response\": \"cd\"}\n{\"prompt\": \"\", \"response\": \"xyz\"}\n";
    let path = write(&dir, "t.jsonl", lines);
    let d = ok(jsonl(&path, Validation::Fraction(0.5), None));
    assert_eq!(d.task, Task::Language { vocab: 257 });
    assert_eq!(d.pad, END);
    assert_eq!(
        tokens(&d.train),
        (&[bytes("abcd")][..], &[vec![IGN, 99, 100, 256]][..])
    );
    assert_eq!(
        tokens(&d.validation),
        (&[bytes("xyz")][..], &[vec![121, 122, 256]][..])
    );
}

#[test]
fn jsonl_messages_learn_the_assistant_content() {
    let dir = TempDir::new().unwrap();
    let line = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#;
    let path = write(&dir, "t.jsonl", format!("{line}\n{line}\n"));
    let d = ok(jsonl(&path, Validation::Fraction(0.5), None));
    let (inputs, targets) = tokens(&d.train);
    assert_eq!(inputs[0], bytes("user: hi\nassistant: yo\n"));
    // Position k's target is token k+1; "yo\n" starts at token 20.
    let mut expected = vec![IGN; 19];
    expected.extend(labels("yo\n"));
    expected.push(256);
    assert_eq!(targets[0], expected);
}

#[test]
fn jsonl_batches_pad_with_end_of_text_and_ignore_the_padding() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "t.jsonl",
        "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"c\", \"response\": \"def\"}\n",
    );
    let d = ok(jsonl(&path, Validation::Fraction(0.0), Some(8)));
    assert!(d.validation.is_empty());
    let batch = d.batch(&d.train, &[0, 1], &Device::Cpu).unwrap();
    assert_eq!(
        batch.inputs.to_vec2::<u32>().unwrap(),
        [vec![97, 98, 256, 256], bytes("cdef")]
    );
    assert_eq!(
        batch.targets.to_vec2::<i64>().unwrap(),
        [vec![98, 256, IGN, IGN], vec![100, 101, 102, 256]]
    );
    assert_eq!(batch.counted, 6);
}

#[test]
fn jsonl_field_names_bom_crlf_and_blank_lines() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "t.jsonl",
        "\u{feff}{\"q\": \"a\", \"a\": \"b\"}\r\n\r\n   \n{\"q\": \"c\", \"a\": \"d\"}",
    );
    let mut spec = jsonl_spec(&path, Validation::Fraction(0.5), false, false);
    if let DataSource::Jsonl {
        prompt_field,
        response_field,
        messages_field,
        ..
    } = &mut spec.source
    {
        (*prompt_field, *response_field, *messages_field) = ("q".into(), "a".into(), "m".into());
    }
    let d = ok(data::load(&spec, 0, None));
    assert_eq!(tokens(&d.train), (&[bytes("ab")][..], &[vec![98, 256]][..]));
    assert_eq!(
        tokens(&d.validation),
        (&[bytes("cd")][..], &[vec![100, 256]][..])
    );
}

#[test]
fn jsonl_truncates_to_the_context_and_counts() {
    let dir = TempDir::new().unwrap();
    let lines = [
        r#"{"prompt": "ab", "response": "cdef"}"#,
        r#"{"prompt": "abcd", "response": "e"}"#,
        r#"{"prompt": "a", "response": "b"}"#,
    ];
    let path = write(&dir, "t.jsonl", lines.join("\n"));
    let val = write(&dir, "v.jsonl", lines[2]);
    let d = ok(jsonl(&path, Validation::File(val), Some(3)));
    // The second example keeps nothing to learn within 3 tokens and is left out.
    assert_eq!(
        tokens(&d.train),
        (
            &[bytes("abc"), bytes("ab")][..],
            &[vec![IGN, 99, 100], vec![98, 256]][..]
        )
    );
    assert_eq!(d.truncated, 2);

    let val = write(&dir, "v.jsonl", lines[1]);
    let message = "has no validation examples with a response within the context of 3 tokens";
    err(
        jsonl(&path, Validation::File(val), Some(3)),
        "xp::data::empty",
        message,
    );
}

#[test]
fn jsonl_packing_concatenates_into_context_windows() {
    let dir = TempDir::new().unwrap();
    let lines = "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"c\", \"response\": \"de\"}\n{\"prompt\": \"v\", \"response\": \"w\"}\n";
    let path = write(&dir, "t.jsonl", lines);
    let spec = jsonl_spec(&path, Validation::Fraction(0.34), false, true);
    let d = ok(data::load(&spec, 0, Some(4)));
    assert_eq!(
        tokens(&d.train),
        (
            &[bytes("abcd"), bytes("e")][..],
            &[vec![98, 256, 100, 101], vec![256]][..]
        )
    );
    // Validation examples are not packed.
    assert_eq!(
        tokens(&d.validation),
        (&[bytes("vw")][..], &[vec![119, 256]][..])
    );

    let message =
        "packing `".to_owned() + &path.display().to_string() + "` needs the model's context length";
    err(
        data::load(&spec, 0, None),
        "xp::data::packing-needs-context",
        &message,
    );
}

#[test]
fn jsonl_shuffled_split_is_deterministic() {
    let dir = TempDir::new().unwrap();
    let lines: String = (0..20)
        .map(|i| format!("{{\"prompt\": \"{i}\", \"response\": \"r\"}}\n"))
        .collect();
    let path = write(&dir, "t.jsonl", lines);
    let shuffled = jsonl_spec(&path, Validation::Fraction(0.25), true, false);
    let a = ok(data::load(&shuffled, 3, None));
    assert_eq!(a, ok(data::load(&shuffled, 3, None)));
    let in_order = ok(jsonl(&path, Validation::Fraction(0.25), None));
    assert_ne!(a.train, in_order.train);
    assert_eq!(tokens(&in_order.validation).0[0], bytes("15r"));
    let sorted = |d: &Dataset| {
        let mut all: Vec<Vec<u32>> = tokens(&d.train)
            .0
            .iter()
            .chain(tokens(&d.validation).0)
            .cloned()
            .collect();
        all.sort();
        all
    };
    assert_eq!(sorted(&a), sorted(&in_order));
}

#[test]
fn jsonl_bad_json_points_at_the_column() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "t.jsonl",
        "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"a\" \"response\": \"b\"}\n",
    );
    let message = "t.jsonl:2: not valid JSON: expected `,` or `}`";
    let e = err(
        jsonl(&path, Validation::Fraction(0.5), None),
        "xp::data::bad-row",
        message,
    );
    assert_rendered(
        &e,
        " 2 │ {\"prompt\": \"a\" \"response\": \"b\"}\n   ·                ┬\n   ·                ╰── here",
    );
}

#[test]
fn jsonl_misspelt_field_is_suggested() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.jsonl", "{\"prompt\": \"a\", \"respnse\": \"b\"}\n");
    let e = err(
        jsonl(&path, Validation::Fraction(0.5), None),
        "xp::data::bad-row",
        "t.jsonl:1: no field `response`",
    );
    assert_eq!(help(&e), "did you mean `response` for `respnse`?");
    assert_rendered(
        &e,
        " 1 │ {\"prompt\": \"a\", \"respnse\": \"b\"}\n   ·                 ────┬────\n",
    );

    let path = write(&dir, "t.jsonl", "\n{\"text\": \"a\"}\n");
    let message = "t.jsonl:2: no fields `prompt` and `response`, nor `messages`";
    let e = err(
        jsonl(&path, Validation::Fraction(0.5), None),
        "xp::data::bad-row",
        message,
    );
    assert!(help(&e).ends_with("this line has `text`"), "{}", help(&e));
}

#[test]
fn jsonl_wrong_types() {
    let dir = TempDir::new().unwrap();
    let cases = [
        ("[1, 2]", "expected a JSON object, found a list"),
        (
            r#"{"prompt": 1, "response": "b"}"#,
            "`prompt` must be a string, found a number",
        ),
        (
            r#"{"messages": "hi"}"#,
            "`messages` must be a list of {role, content} objects, found a string",
        ),
        (
            r#"{"messages": [{"role": "user", "content": null}]}"#,
            "`content` of message 1 must be a string, found null",
        ),
        (
            r#"{"messages": [{"role": "user", "contnt": "x"}]}"#,
            "message 1 of `messages` has no `content`",
        ),
        (
            r#"{"messages": [], "prompt": "a"}"#,
            "this line has both `messages` and `prompt`",
        ),
    ];
    for (line, message) in cases {
        let path = write(
            &dir,
            "t.jsonl",
            format!("{{\"prompt\": \"a\", \"response\": \"b\"}}\n{line}\n"),
        );
        err(
            jsonl(&path, Validation::Fraction(0.5), None),
            "xp::data::bad-row",
            &format!("t.jsonl:2: {message}"),
        );
    }
}

#[test]
fn jsonl_examples_with_nothing_to_learn() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.jsonl", r#"{"prompt": "a", "response": ""}"#);
    let message = "t.jsonl:1: the `response` is empty: nothing to learn";
    err(
        jsonl(&path, Validation::Fraction(0.5), None),
        "xp::data::bad-row",
        message,
    );

    let path = write(
        &dir,
        "t.jsonl",
        r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
    );
    let message = "t.jsonl:1: no `assistant` message with content: nothing to learn";
    err(
        jsonl(&path, Validation::Fraction(0.5), None),
        "xp::data::bad-row",
        message,
    );
}

#[test]
fn jsonl_empty_file_and_many_problems() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "t.jsonl", "\n \r\n");
    err(
        jsonl(&path, Validation::Fraction(0.5), None),
        "xp::data::empty",
        "t.jsonl` has no examples",
    );

    let path = write(
        &dir,
        "t.jsonl",
        "{\n[]\n{\"prompt\": \"a\", \"response\": \"b\"}\n",
    );
    let e = err(
        jsonl(&path, Validation::Fraction(0.5), None),
        "xp::data::many",
        "t.jsonl` has 2 problems",
    );
    let related: Vec<String> = e.related().unwrap().map(|r| r.to_string()).collect();
    assert_eq!(related.len(), 2);
    assert!(
        related[0].contains("t.jsonl:1: not valid JSON"),
        "{}",
        related[0]
    );
    assert!(
        related[1].contains("t.jsonl:2: expected a JSON object"),
        "{}",
        related[1]
    );
}

#[test]
fn no_panics_on_odd_bytes() {
    let dir = TempDir::new().unwrap();
    let odd: [&[u8]; 8] = [
        b"",
        b"\xef\xbb\xbf",
        b"\r\n\r\n",
        b"\"",
        b"\"a\nb",
        b",,,\n,,\n",
        b"{\"\xc3\xa9\":",
        b"\x00\x01",
    ];
    for contents in odd {
        let path = write(&dir, "f", contents);
        for task in [Kind::Regression, Kind::Classification] {
            let _ = data::load(
                &csv_spec(&path, task, Validation::Fraction(0.5), true, None),
                0,
                None,
            );
        }
        for context in [Some(0), Some(1), None] {
            let _ = text(&path, None, Validation::Fraction(0.5), context);
            let _ = data::load(
                &jsonl_spec(&path, Validation::Fraction(0.5), true, true),
                0,
                context,
            );
            let _ = jsonl(&path, Validation::Fraction(0.5), context);
        }
    }
}

// ---- the model's vocabulary ----

/// Runs `xp COMMAND e.kdl ARGS` on an experiment of `model` on byte text; what it printed, and
/// the losses of the run when it trained.
fn byte_run(command: &str, model: &str, args: &[&str]) -> (std::process::Output, Vec<f64>) {
    let dir = TempDir::new().unwrap();
    let text: String = (0..40)
        .map(|i| format!("line {i}: the cat sat on the mat.\n"))
        .collect();
    write(&dir, "t.txt", text);
    let experiment = format!(
        r#"experiment "vocab" {{
    model "llama" {{
        {model}
    }}
    data "text" path="t.txt" validation-fraction=0.1
    train {{
        steps 12
        batch-size 4
        optimizer "adamw" lr=1e-2
        log every=1
    }}
}}
"#
    );
    write(&dir, "e.kdl", experiment);
    let runs = dir.path().join("runs");
    let runs_dir = runs.to_str().unwrap();
    let mut all = vec![command, "e.kdl"];
    if command == "run" {
        all.extend(["--runs-dir", runs_dir]);
    }
    all.extend(args);
    let out = super::support::xp(dir.path(), &all);
    if !runs.join("vocab/current").exists() {
        return (out, Vec::new());
    }
    let sweep = super::support::current_sweep(dir.path(), "runs", "vocab");
    let losses = std::fs::read_dir(&sweep)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("metrics.jsonl"))
        .filter(|p| p.is_file())
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter_map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).ok()?["train/loss"].as_f64()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    (out, losses)
}

/// A vocabulary larger than the data's (as HF models pad theirs) trains: byte tokens index the
/// larger embedding and the loss is over all 300 outputs.
#[test]
fn a_model_vocabulary_larger_than_the_datas_trains() {
    let model = "layers 1\n heads 2\n dim 16\n hidden 32\n context 32\n vocab 300";
    let (out, losses) = byte_run("run", model, &["-q"]);
    super::support::succeeded(&out);
    assert_eq!(losses.len(), 12, "{losses:?}");
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    // ln 300 at the start (uniform over the larger vocabulary, not ln 257), lower at the end.
    assert!((losses[0] - 300f64.ln()).abs() < 0.05, "{losses:?}");
    assert!(losses[11] < losses[0] - 1.0, "{losses:?}");
}

/// One smaller than the data's tokens is an error before training, with the size to use.
#[test]
fn a_model_vocabulary_smaller_than_the_datas_is_refused() {
    let model = "layers 1\n heads 2\n dim 16\n hidden 32\n context 32\n vocab 200";
    let (out, losses) = byte_run("run", model, &["-q"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        super::support::stderr(&out)
    );
    assert!(losses.is_empty());
    let (out, _) = byte_run("validate", model, &["--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        super::support::stderr(&out)
    );
    let json = super::support::json(&out);
    let text = json.to_string();
    assert!(text.contains("xp::model::vocab"), "{text}");
    assert!(
        text.contains(
            "the data's tokens go up to 256, beyond the vocabulary of the model (200 tokens)"
        ),
        "{text}"
    );
    assert!(text.contains("set `vocab` to at least 257"), "{text}");
}

/// `xp validate --format json` keeps every row problem of a file with its file and line, and
/// names the file on the group too.
#[test]
fn json_diagnostics_keep_the_file_and_line_of_every_row() {
    let dir = TempDir::new().unwrap();
    write(&dir, "t.csv", "a,b,y\n1,2,3\n4,x,6\n7,8\n");
    let experiment = r#"experiment "x" {
    model "mlp" { hidden 8 }
    data "csv" path="t.csv" target="y"
    train {
        steps 10
        batch-size 2
        optimizer "adamw" lr=1e-3
    }
}
"#;
    write(&dir, "e.kdl", experiment);
    let out = super::support::xp(dir.path(), &["validate", "--format", "json", "e.kdl"]);
    let json = super::support::json(&out);
    let group = &json[0];
    assert_eq!(group["code"], "xp::data::many", "{json}");
    assert_eq!(group["file"], "t.csv", "{json}");
    let rows: Vec<(String, String, u64)> = group["related"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["code"].as_str().unwrap().to_owned(),
                r["file"].as_str().unwrap().to_owned(),
                r["labels"][0]["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let bad_row = || "xp::data::bad-row".to_owned();
    assert_eq!(
        rows,
        [
            (bad_row(), "t.csv".to_owned(), 3),
            (bad_row(), "t.csv".to_owned(), 4)
        ]
    );
}
