//! Bad input is refused with a diagnostic, never by a crash, a hang or running out of memory:
//! deep nesting, long `extends` chains, files that are not regular files or are too large,
//! runaway templates and sweeps too large to expand.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::support::{json, stderr, stdout};

const SMALL: &str = "    data \"regression\" features=8 samples=64\n    model \"mlp\" { hidden 8 }\n    train { steps 10 }\n";

/// `xp ARGS` in `dir`, killed after `secs`: `None` when it had to be killed.
fn xp_within(dir: &Path, args: &[&str], secs: u64) -> Option<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xp"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the xp binary runs");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if child.try_wait().expect("waiting on xp").is_some() {
            return Some(child.wait_with_output().expect("xp's output"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("xp killed");
    child.wait().expect("xp reaped");
    None
}

/// The codes of `xp validate --format json FILES`, which must exit 2 within 20 s.
fn codes(dir: &Path, files: &[&str]) -> Vec<String> {
    let mut args = vec!["validate", "--format", "json"];
    args.extend(files);
    let out = xp_within(dir, &args, 20).expect("xp validate finishes");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    json(&out)
        .as_array()
        .expect("a list of diagnostics")
        .iter()
        .map(|d| d["code"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("file written");
}

#[test]
fn deep_nesting_is_an_error_and_other_files_are_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let nest = |name: &str| format!("{}x 1{}", format!("{name} {{").repeat(n), "}".repeat(n));
    write(
        dir.path(),
        "vars.kdl",
        &format!(
            "experiment \"v\" {{\n{SMALL}    vars {{ {} }}\n}}\n",
            nest("v")
        ),
    );
    write(
        dir.path(),
        "unknown.kdl",
        &format!("experiment \"u\" {{\n{SMALL}    {}\n}}\n", nest("a")),
    );
    write(dir.path(), "bare.kdl", &nest("a"));
    write(
        dir.path(),
        "typo.kdl",
        &format!("experiment \"t\" {{\n{SMALL}    optimiser \"adamw\"\n}}\n"),
    );
    let found = codes(
        dir.path(),
        &["vars.kdl", "unknown.kdl", "bare.kdl", "typo.kdl"],
    );
    let deep = found.iter().filter(|c| *c == "xp::parse::too-deep").count();
    assert_eq!(deep, 3, "{found:?}");
    assert!(
        found.contains(&"xp::schema::unknown-node".to_owned()),
        "{found:?}"
    );
}

#[test]
fn braces_inside_strings_and_comments_are_not_nesting() {
    let dir = tempfile::tempdir().unwrap();
    let braces = "{".repeat(200);
    write(
        dir.path(),
        "e.kdl",
        &format!(
            "// {braces}\n/* {braces} */\nexperiment \"e\" {{\n{SMALL}    description \"{braces}\"\n    notes #\"{braces}\"#\n}}\n"
        ),
    );
    let found = codes(dir.path(), &["e.kdl"]);
    assert!(
        !found.contains(&"xp::parse::too-deep".to_owned()),
        "{found:?}"
    );
}

#[test]
fn a_long_extends_chain_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let n = 10_000;
    for i in 0..n {
        let next = if i + 1 < n {
            format!("    extends \"b{}.kdl\"\n", i + 1)
        } else {
            String::new()
        };
        write(
            dir.path(),
            &format!("b{i}.kdl"),
            &format!("experiment \"b{i}\" {{\n{next}}}\n"),
        );
    }
    write(
        dir.path(),
        "e.kdl",
        &format!("experiment \"e\" {{\n    extends \"b0.kdl\"\n{SMALL}}}\n"),
    );
    assert_eq!(codes(dir.path(), &["e.kdl"]), ["xp::extends::too-deep"]);
}

#[test]
fn devices_fifos_and_huge_files_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.kdl");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let huge = std::fs::File::create(dir.path().join("huge.kdl")).unwrap();
    huge.set_len(1 << 40).unwrap();
    for target in ["/dev/zero", "fifo.kdl", "huge.kdl"] {
        write(
            dir.path(),
            "e.kdl",
            &format!("experiment \"e\" {{\n    extends \"{target}\"\n{SMALL}}}\n"),
        );
        let mut found = codes(dir.path(), &["e.kdl", target]);
        found.sort();
        assert_eq!(
            found,
            ["xp::extends::unreadable", "xp::load::unreadable"],
            "{target}"
        );
    }
}

#[test]
fn runaway_templates_exhaust_their_budget() {
    let dir = tempfile::tempdir().unwrap();
    let loops = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
    let big = "{% for i in range(1000) %}{{ 'x' * 10000000 }}{% endfor %}";
    for template in [loops, big, "{{ 'x' * 100000000 }}"] {
        write(
            dir.path(),
            "e.kdl",
            &format!("experiment \"e\" {{\n{SMALL}    name \"{template}\"\n}}\n"),
        );
        assert_eq!(
            codes(dir.path(), &["e.kdl"]),
            ["xp::template::budget"],
            "{template}"
        );
    }
}

#[test]
fn a_sweep_of_ten_million_runs_is_refused_before_expansion() {
    let dir = tempfile::tempdir().unwrap();
    let axes: String = (0..7)
        .map(|i| format!("            a{i} 0 1 2 3 4 5 6 7 8 9\n"))
        .collect();
    let sum: String = (0..7).map(|i| format!(" + a{i}")).collect();
    write(
        dir.path(),
        "e.kdl",
        &format!(
            "experiment \"e\" {{\n    data \"regression\" features=8 samples=64\n    model \"mlp\" {{ hidden 8 }}\n    train {{ steps \"{{{{ 10{sum} }}}}\" }}\n    sweep {{\n        grid {{\n{axes}        }}\n    }}\n}}\n"
        ),
    );
    let out = xp_within(dir.path(), &["plan", "e.kdl"], 20).expect("xp plan finishes");
    assert_eq!(out.status.code(), Some(2));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("xp::sweep::too-many-runs"), "{text}");
    assert!(text.contains("10000000 runs"), "{text}");
}

#[test]
fn runs_beyond_the_machines_memory_are_refused_before_anything_is_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let huge = [
        (
            "modulus",
            "    data \"modular-addition\" modulus=65536\n    model \"llama\" { layers 1; heads 1; dim 8; hidden 8; context 4 }\n    train { steps 1; batch-size 1 }\n",
        ),
        (
            "features",
            "    data \"regression\" features=9223372036854775807 samples=2\n    model \"mlp\" { hidden 4 }\n    train { steps 1; batch-size 1 }\n",
        ),
        (
            "hidden",
            "    data \"regression\" features=2 samples=8\n    model \"mlp\" { hidden 4000000000000 }\n    train { steps 1; batch-size 1 }\n",
        ),
    ];
    for (name, body) in huge {
        let file = format!("{name}.kdl");
        write(
            dir.path(),
            &file,
            &format!("experiment \"{name}\" {{\n{body}}}\n"),
        );
        // Validation says it (a warning: another machine may have the memory) and allocates
        // nothing; running it here is refused.
        let out = xp_within(dir.path(), &["validate", &file], 20).expect("validate finishes");
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stdout(&out));
        assert!(
            stdout(&out).contains("more memory than this machine has"),
            "{name}: {}",
            stdout(&out)
        );
        let runs = dir.path().join("runs");
        let out = xp_within(
            dir.path(),
            &["run", &file, "--runs-dir", runs.to_str().unwrap(), "-q"],
            20,
        )
        .expect("run finishes");
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("more memory than this machine has"),
            "{name}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn data_and_model_paths_to_fifos_and_devices_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("mkfifo")
        .arg(dir.path().join("fifo.txt"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // An HF model directory whose config.json is a FIFO.
    std::fs::create_dir(dir.path().join("model")).unwrap();
    let made = Command::new("mkfifo")
        .arg(dir.path().join("model/config.json"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let model = "    model \"llama\" { layers 1; heads 1; dim 8; hidden 8; context 16 }\n";
    let cases = [
        format!("    data \"text\" path=\"fifo.txt\"\n{model}"),
        format!("    data \"text\" path=\"/dev/zero\"\n{model}"),
        format!("    data \"jsonl\" path=\"/dev/zero\"\n{model}"),
        "    data \"csv\" path=\"fifo.txt\" target=\"y\"\n    model \"mlp\" { hidden 4 }\n"
            .to_owned(),
        "    data \"text\" path=\"fifo.txt\"\n    model \"llama\" path=\"model\"\n".to_owned(),
    ];
    for body in cases {
        write(
            dir.path(),
            "e.kdl",
            &format!("experiment \"e\" {{\n{body}    train {{ steps 1; batch-size 1 }}\n}}\n"),
        );
        let out = xp_within(dir.path(), &["validate", "e.kdl"], 20)
            .unwrap_or_else(|| panic!("validate blocked on {body}"));
        assert_eq!(out.status.code(), Some(2), "{body}: {}", stdout(&out));
        assert!(
            stdout(&out).contains("not a regular file"),
            "{body}: {}",
            stdout(&out)
        );
    }
}
