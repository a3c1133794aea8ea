//! Every diagnostic code is declared once and has a fixture.

use std::collections::BTreeMap;

use super::support::{code_of, fixture_files, root};

/// Every `code("xp::…")` in the sources, with where it is declared.
fn declared_codes() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, _) in text.match_indices("code(\"xp::") {
                    let rest = &text[i + 6..];
                    let code = &rest[..rest.find('"').unwrap()];
                    out.push((code.to_owned(), path.display().to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn codes_are_unique() {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (code, file) in declared_codes() {
        if let Some(first) = seen.insert(code.clone(), file.clone()) {
            panic!("{code} is declared twice: {first} and {file}");
        }
    }
    assert!(seen.len() >= 25, "found only {} codes", seen.len());
}

#[test]
fn every_code_has_a_fixture_and_every_fixture_a_code() {
    let declared: Vec<String> = declared_codes().into_iter().map(|(c, _)| c).collect();
    let fixtures: Vec<String> = fixture_files().iter().map(|f| code_of(f)).collect();
    let missing: Vec<&String> = declared.iter().filter(|c| !fixtures.contains(c)).collect();
    let stray: Vec<&String> = fixtures.iter().filter(|f| !declared.contains(f)).collect();
    assert!(missing.is_empty(), "codes without a fixture: {missing:?}");
    assert!(stray.is_empty(), "fixtures without a code: {stray:?}");
}
