//! Running the real binary in tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures/validate")
}

/// `xp ARGS` in `dir`, without colour and with a fixed environment.
pub fn xp(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("COLUMNS")
        .output()
        .expect("the xp binary runs")
}

/// A temporary directory holding the experiment `text` as `e.kdl`.
pub fn experiment_dir(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("e.kdl"), text).expect("e.kdl written");
    dir
}

/// The sweep directory an experiment's `current` points at, under `dir/runs`.
pub fn current_sweep(dir: &Path, runs: &str, experiment: &str) -> PathBuf {
    let base = dir.join(runs).join(experiment);
    base.join(std::fs::read_link(base.join("current")).expect("a current sweep"))
}

/// A run's metrics.jsonl without its wall-clock fields and measures of the process (its peak
/// memory): what must be bit-identical between two trainings of the same run.
pub fn timeless_metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            if let Some(o) = v.as_object_mut() {
                o.retain(|k, _| {
                    k != "time_s" && !k.ends_with("_per_s") && !k.ends_with("peak_memory_bytes")
                });
            }
            v
        })
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts that a command exited 0, showing what it printed when it did not.
#[track_caller]
pub fn succeeded(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(o), stderr(o));
}

pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

/// The fixture files (and the directory that stands for an unreadable file), sorted.
pub fn fixture_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(fixtures()).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "kdl") {
                    files.push(f);
                }
            }
        }
    }
    files.sort();
    files
}

/// `schema/unknown-node.kdl` → `xp::schema::unknown-node`.
pub fn code_of(fixture: &Path) -> String {
    let rel = fixture.strip_prefix(fixtures()).unwrap();
    let stage = rel.parent().unwrap().to_str().unwrap();
    let name = rel.file_stem().unwrap().to_str().unwrap();
    format!("xp::{stage}::{name}")
}

/// Extra arguments a fixture asks for on its first line: `// xp: --set train.steps=5`.
pub fn fixture_args(fixture: &Path) -> Vec<String> {
    let text = std::fs::read(fixture)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let first = text.lines().next().unwrap_or("");
    first
        .strip_prefix("// xp:")
        .map(|rest| rest.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Copies a directory tree; symbolic links (a sweep's `current`) are left out.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
