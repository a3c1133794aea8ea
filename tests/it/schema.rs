//! The schema files: valid against the meta-schema, and docs/reference.md current.

use xp::front::schema::{self, EXPERIMENT_SOURCE, META_SOURCE};
use xp::front::validate_schema_text;

use super::support::{root, stdout, xp};

fn assert_clean(name: &str, text: &str) {
    let checked = validate_schema_text(name, text);
    let messages: Vec<String> = checked.diags.iter().map(|d| format!("{d:?}")).collect();
    assert!(messages.is_empty(), "{name}: {messages:#?}");
}

#[test]
fn experiment_schema_is_valid_against_the_meta_schema() {
    assert_clean("experiment.kdl", EXPERIMENT_SOURCE);
    assert!(schema::load(EXPERIMENT_SOURCE).is_ok());
}

#[test]
fn meta_schema_describes_itself() {
    assert_clean("meta.kdl", META_SOURCE);
}

#[test]
fn meta_schema_rejects_a_broken_schema() {
    let broken = "schema \"x\" version=1\ndocument {\n    node \"a\" requird=#true {\n        prop \"b\" type=\"integer\"\n    }\n}\n";
    let checked = validate_schema_text("broken.kdl", broken);
    let codes: Vec<String> = checked.diags.iter().map(|d| d.code()).collect();
    assert_eq!(
        codes,
        ["xp::schema::unknown-property", "xp::schema::unknown-value"]
    );
}

#[test]
fn reference_doc_is_current() {
    let out = xp(&root(), &["schema", "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(0));
    let committed = std::fs::read_to_string(root().join("docs/reference.md")).unwrap_or_default();
    assert!(
        committed == stdout(&out),
        "docs/reference.md is stale: run `cargo run -- schema --format markdown > docs/reference.md`"
    );
}

#[test]
fn schema_command_prints_the_embedded_schema() {
    let out = xp(&root(), &["schema"]);
    assert_eq!(stdout(&out), EXPERIMENT_SOURCE);
}

#[test]
fn user_config_schema_is_valid_against_the_meta_schema() {
    assert_clean("user-config.kdl", xp::front::user_config::SCHEMA_SOURCE);
}
