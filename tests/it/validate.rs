//! `xp validate`: one snapshot per fixture, the JSON form, exit codes, and the shipped experiments.

use super::support::{code_of, fixture_args, fixture_files, fixtures, json, root, stdout, xp};

/// Every fixture against its snapshot (`validate@<stage>__<name>.kdl.snap`); `glob!` checks
/// them all and then reports every mismatch, not only the first.
#[test]
fn every_fixture_matches_its_snapshot() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("tests/snapshots/validate"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::glob!(fixtures(), "*/*.kdl", |file| {
            let rel = file.strip_prefix(fixtures()).unwrap().to_str().unwrap();
            let extra = fixture_args(file);
            let mut args = vec!["validate", rel];
            args.extend(extra.iter().map(String::as_str));
            let out = xp(&fixtures(), &args);
            insta::assert_snapshot!(
                "validate",
                format!("exit: {:?}\n{}", out.status.code(), stdout(&out))
            );
        });
    });
}

#[test]
fn every_fixture_reports_its_code_in_json() {
    for file in fixture_files() {
        let code = code_of(&file);
        let extra = fixture_args(&file);
        let mut args = vec!["validate", "--format", "json", file.to_str().unwrap()];
        args.extend(extra.iter().map(String::as_str));
        let out = xp(&fixtures(), &args);
        let diags = json(&out);
        let codes: Vec<&str> = diags
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["code"].as_str().unwrap())
            .collect();
        assert!(
            codes.contains(&code.as_str()),
            "{}: expected {code}, found {codes:?}",
            file.display()
        );
        let severe = diags
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["severity"] == "error");
        assert_eq!(
            out.status.code(),
            Some(if severe { 2 } else { 0 }),
            "{}",
            file.display()
        );
    }
}

#[test]
fn json_diagnostics_carry_code_span_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = "experiment \"x\" {\n    data \"regression\"\n    train { steps \"ten\" }\n}\n";
    std::fs::write(dir.path().join("e.kdl"), text).unwrap();
    let out = xp(dir.path(), &["validate", "--format", "json", "e.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    let diags = json(&out);
    let d = &diags.as_array().unwrap()[0];
    assert_eq!(d["code"], "xp::schema::wrong-type");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "e.kdl");
    assert_eq!(d["message"], "expected an integer, found a string \"ten\"");
    let label = &d["labels"][0];
    let offset = text.find("\"ten\"").unwrap();
    assert_eq!(label["offset"], offset);
    assert_eq!(label["length"], 5);
    assert_eq!(label["line"], 3);
    assert_eq!(label["column"], 19);
}

#[test]
fn shipped_experiments_validate_clean() {
    let mut files: Vec<String> = std::fs::read_dir(root().join("experiments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    files.sort();
    assert!(files.len() >= 2);
    let mut args = vec!["validate", "--format", "json"];
    args.extend(files.iter().map(String::as_str));
    let out = xp(&root(), &args);
    // Clean but for warnings about what this build cannot run yet.
    let diags = json(&out);
    let unexpected: Vec<&serde_json::Value> = diags
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] != "xp::run::unsupported" || d["severity"] != "warning")
        .collect();
    assert!(unexpected.is_empty(), "{}", stdout(&out));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn ten_mistakes_give_ten_diagnostics_with_help() {
    let text = r#"experiment "ten" {
    seed -1
    objective "val/loss" "minimise"
    data "modular-adition" modulus=97
    trian {
        batch-size "32"
        optimizer "sgd" lr=0.1 beta1=0.9
        schedule "cosine" warmup-steps=10 warmup-ratio=0.1
        grad-clip #true
    }
    lora rank="{{ rnak }}" alpha=0
    sweep {
        grid {
            rank 4 8
        }
    }
}
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ten.kdl"), text).unwrap();
    let out = xp(dir.path(), &["validate", "--format", "json", "ten.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    let diags = json(&out);
    let found: Vec<(&str, bool)> = diags
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["code"].as_str().unwrap(), d["help"].is_string()))
        .collect();
    let expected = [
        ("xp::schema::out-of-range", false),
        ("xp::schema::unknown-value", true),
        ("xp::schema::unknown-value", true),
        ("xp::schema::unknown-node", true),
        ("xp::schema::wrong-type", true),
        ("xp::schema::unknown-property", true),
        ("xp::schema::exclusive", true),
        ("xp::schema::wrong-type", true),
        ("xp::template::unknown-variable", true),
        ("xp::schema::out-of-range", false),
    ];
    assert_eq!(found, expected);
}

#[test]
fn errors_of_all_files_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.kdl"),
        "experiment \"a\" {\n    data \"regression\"\n    sed 1\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.kdl"),
        "experiment \"b\" {\n    data \"regression\" samples=0\n}\n",
    )
    .unwrap();
    let out = xp(dir.path(), &["validate", "a.kdl", "missing.kdl", "b.kdl"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stdout(&out);
    assert!(text.contains("xp::schema::unknown-node"), "{text}");
    assert!(text.contains("xp::load::unreadable"), "{text}");
    assert!(text.contains("xp::schema::out-of-range"), "{text}");
    assert!(
        text.ends_with("3 errors, 0 warnings in 3 files\n"),
        "{text}"
    );
}

#[test]
fn a_clean_file_exits_zero_with_a_summary() {
    let out = xp(&root(), &["validate", "experiments/quickstart.kdl"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "0 errors, 0 warnings in 1 file\n");
}

proptest::proptest! {
    /// Rendering reads a span's context through the line index; it must see what miette's own
    /// scan of the whole text sees, whatever the line endings.
    #[test]
    fn source_windows_read_like_miette(
        text in "[a\n\r{ ]{0,80}",
        offset in 0usize..90,
        len in 0usize..10,
        before in 0usize..4,
        after in 0usize..4,
    ) {
        use miette::SourceCode;
        // Spans lie inside their file; past its end miette's own reader panics.
        let offset = offset.min(text.len());
        let len = len.min(text.len() - offset);
        let source = xp::front::source::Source::new("f.kdl", None, text.clone());
        let span = miette::SourceSpan::new(offset.into(), len);
        let whole = text.as_bytes().read_span(&span, before, after);
        let window = source.read_span(&span, before, after);
        match (whole, window) {
            (Ok(w), Ok(s)) => {
                proptest::prop_assert_eq!(w.data(), s.data());
                proptest::prop_assert_eq!(w.span(), s.span());
                proptest::prop_assert_eq!(w.line(), s.line());
                proptest::prop_assert_eq!(w.column(), s.column());
                proptest::prop_assert_eq!(w.line_count(), s.line_count());
            }
            (Err(_), Err(_)) => {}
            (w, s) => proptest::prop_assert!(false, "{:?} against {:?}", w.is_ok(), s.is_ok()),
        }
    }
}

/// The codes `xp validate --format json` reports for an experiment.
fn codes_of(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("e.kdl"), text).unwrap();
    let out = xp(dir.path(), &["validate", "--format", "json", "e.kdl"]);
    json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_typo_does_not_hide_a_cross_field_mistake_elsewhere() {
    let text = "experiment \"e\" {\n    data \"modular-addition\" modulus=23\n    model \"llama\" {\n        layers 1\n        heads 3\n        dim 64\n        context 8\n    }\n    train {\n        steps 10\n        bogus 1\n    }\n}\n";
    let mut codes = codes_of(text);
    codes.sort();
    assert_eq!(codes, ["xp::run::model-shape", "xp::schema::unknown-node"]);
}

#[test]
fn a_missing_data_node_is_a_schema_error() {
    let text = "experiment \"e\" {\n    model \"mlp\" { hidden 8 }\n    train { steps 10 }\n}\n";
    assert_eq!(codes_of(text), ["xp::schema::missing-required"]);
}

#[test]
fn run_names_that_clash_with_sweep_files_or_hide_characters_are_refused() {
    for name in [
        "results.csv",
        "plan.json",
        "Report.html",
        "slurm",
        "experiment.kdl",
        "current",
        // KDL escapes: KDL v2 refuses these characters written literally.
        "run\\u{202E}gpj.exe",
        "a\\u{2066}b",
        "zero\\u{200B}width",
        "tab\\there",
    ] {
        let text = format!(
            "experiment \"e\" {{\n    data \"regression\" features=8 samples=64\n    model \"mlp\" {{ hidden 8 }}\n    train {{ steps 10 }}\n    name \"{name}\"\n}}\n"
        );
        assert_eq!(codes_of(&text), ["xp::sweep::bad-name"], "{name:?}");
    }
}
