//! No input panics the front end: random text, random edits of real experiments, random
//! token soups built from the language's own words, and hostile files (deep nesting, huge
//! numbers, runaway templates, sweeps too large, paths to devices and directories) that must
//! be refused quickly with a diagnostic.

use proptest::prelude::*;
use xp::front::{Overrides, validate_files, validate_schema_text, validate_text};

const QUICKSTART: &str = include_str!("../../experiments/quickstart.kdl");
const LORA: &str = include_str!("../../experiments/lora-sweep.kdl");

const TOKENS: &[&str] = &[
    "experiment",
    "\"e\"",
    "{",
    "}",
    "{",
    "}",
    ";",
    "\n",
    " ",
    "model",
    "\"llama\"",
    "\"mlp\"",
    "data",
    "\"csv\"",
    "\"regression\"",
    "train",
    "steps",
    "epochs",
    "optimizer",
    "\"adamw\"",
    "\"sgd\"",
    "schedule",
    "\"cosine\"",
    "\"StepLR\"",
    "lr=",
    "warmup-ratio=",
    "sweep",
    "grid",
    "zip",
    "random",
    "count=",
    "exclude",
    "include",
    "repeat",
    "vars",
    "lr",
    "rank",
    "1",
    "-1",
    "0.5",
    "1e-3",
    "1e400",
    "#true",
    "#null",
    "true",
    "\"{{ lr }}\"",
    "\"{{ lr\"",
    "\"{% if %}\"",
    "\"{{ none }}\"",
    "when=",
    "(f32)",
    "\"\"",
    "/-",
    "//",
    "=",
    "\"log-uniform\"",
    "\"choice\"",
    "hidden",
    "targets",
    "\"*\"",
    "regression",
    "metric",
    "tolerance=",
    "\"2%\"",
    "name",
    "extends",
    "\"a.kdl\"",
    "batch-size",
    "\"auto\"",
    "\"32\"",
    "r#\"x\"#",
    "\"\"\"\nx\n\"\"\"",
    "\\",
    "é",
    "\u{0}",
];

fn edit(base: &'static str) -> impl Strategy<Value = String> {
    (
        0..base.len(),
        0usize..40,
        prop::collection::vec(prop::sample::select(TOKENS), 0..4),
    )
        .prop_map(move |(at, cut, insert)| {
            let mut at = at;
            while !base.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + cut).min(base.len());
            while !base.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}{}{}", &base[..at], insert.concat(), &base[end..])
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_text(text in "\\PC{0,300}") {
        let _ = validate_text("fuzz.kdl", &text);
        let _ = validate_schema_text("fuzz.kdl", &text);
    }

    #[test]
    fn edited_quickstart(text in edit(QUICKSTART)) {
        let _ = validate_text("fuzz.kdl", &text);
    }

    #[test]
    fn edited_sweep(text in edit(LORA)) {
        let _ = validate_text("fuzz.kdl", &text);
    }

    #[test]
    fn token_soup(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80)) {
        let text = tokens.join(" ");
        let _ = validate_text("fuzz.kdl", &text);
        let wrapped = format!("experiment \"e\" {{\n{text}\n}}\n");
        let _ = validate_text("fuzz.kdl", &wrapped);
    }
}

/// A number far outside every range: many digits, maybe a fraction and an exponent.
fn huge_number() -> impl Strategy<Value = String> {
    (1usize..500, any::<bool>(), prop::option::of(-400i32..400)).prop_map(|(digits, frac, exp)| {
        let mut n = "9".repeat(digits);
        if frac {
            n.push_str(".5");
        }
        if let Some(e) = exp {
            n.push_str(&format!("e{e}"));
        }
        n
    })
}

const TEMPLATES: &[&str] = &[
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(1000) %}{{ 'x' * 10000000 }}{% endfor %}",
    "{{ 'x' * 100000000 }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{{ range(100000) | list | length }}",
    "{{ 10 ** 10 ** 10 }}",
    "{{ 1 / 0 }}",
    "{{ lr",
];

const PATHS: &[&str] = &[
    "/dev/zero",
    "/dev/null",
    "/dev/stdin",
    "/",
    "",
    ".",
    "..",
    "/proc/self/mem",
    "e.kdl",
];

/// An experiment with one hostile part.
fn hostile() -> impl Strategy<Value = String> {
    let nested = (
        1usize..5000,
        prop::sample::select(&["vars", "a", "train", "sweep"][..]),
        any::<bool>(),
    )
        .prop_map(|(depth, name, closed)| {
            let close = if closed {
                "}".repeat(depth)
            } else {
                String::new()
            };
            format!("    {}x 1{close}\n", format!("{name} {{ ").repeat(depth))
        });
    let number = (
        prop::sample::select(
            &[
                "    train { steps N }\n",
                "    data \"modular-addition\" modulus=N\n",
                "    data \"regression\" features=N samples=N\n",
                "    model \"mlp\" { hidden N }\n",
                "    sweep { random count=N { lr \"uniform\" 0 1 }; repeat N }\n",
                "    lora rank=N\n",
            ][..],
        ),
        huge_number(),
    )
        .prop_map(|(slot, n)| slot.replace('N', &n));
    let template = prop::sample::select(TEMPLATES)
        .prop_map(|t| format!("    name \"{t}\"\n    vars {{ v \"{t}\" }}\n"));
    let path = prop::sample::select(PATHS).prop_map(|p| format!("    extends \"{p}\"\n"));
    let sweep = (1usize..12, 1usize..12).prop_map(|(axes, values)| {
        let grid: String = (0..axes)
            .map(|a| {
                format!(
                    "a{a} {}\n",
                    (0..values)
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })
            .collect();
        let sum: String = (0..axes).map(|a| format!(" + a{a}")).collect();
        format!("    train {{ steps \"{{{{ 1{sum} }}}}\" }}\n    sweep {{ grid {{\n{grid}}} }}\n")
    });
    prop_oneof![nested, number, template, path, sweep].prop_map(|part| {
        format!(
            "experiment \"e\" {{\n    data \"regression\" features=8 samples=64\n    model \"mlp\" {{ hidden 8 }}\n{part}}}\n"
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hostile_files_are_refused_without_panic(text in hostile()) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("e.kdl");
        std::fs::write(&file, &text).unwrap();
        let _ = validate_files(&[file], &Overrides::default());
    }
}
