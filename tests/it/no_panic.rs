//! No input panics the front end: random text, random edits of real experiments, and random
//! token soups built from the language's own words.

use proptest::prelude::*;
use xp::front::{validate_schema_text, validate_text};

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
