//! The Markdown reference of a schema (`xp schema --format markdown`, docs/reference.md):
//! every node with its arguments, properties, children and kinds.

use std::fmt::Write;

use kdl::KdlValue;

use super::{Body, BodyRef, NodeSpec, Schema, ValueSpec, ValueType};
use crate::front::check::range_rule;

/// The whole reference.
pub fn reference(schema: &Schema) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# The `{}` language: reference\n", schema.name);
    let _ = writeln!(
        out,
        "Generated from `schemas/{}.kdl` by `xp schema --format markdown`; do not edit by hand.\n\
         Every scalar value may be a template (`\"{{{{ lr * 2 }}}}\"`) unless marked *literal*; \
         every node inside an experiment may carry `when=\"{{{{ expr }}}}\"`.\n",
        schema.name
    );
    let mut stack = Vec::new();
    for node in &schema.document.nodes {
        section(&mut out, schema, node, &[], &mut stack);
    }
    if schema.name == "experiment" {
        limits(&mut out);
    }
    out
}

/// The bounds the front end enforces, each with the diagnostic that reports it.
fn limits(out: &mut String) {
    use crate::front::{load, parse, points, source, template};
    let rows = [
        (
            format!(
                "An experiment file, or a file it extends, is a regular file of at most {} MiB; \
                 FIFOs, devices and directories are refused unread",
                source::MAX_FILE_BYTES / (1024 * 1024)
            ),
            "xp::load::unreadable`, `xp::extends::unreadable",
        ),
        (
            format!("Blocks `{{ }}` nest at most {} deep", parse::MAX_NESTING),
            "xp::parse::too-deep",
        ),
        (
            format!("An `extends` chain has at most {} bases", load::MAX_EXTENDS),
            "xp::extends::too-deep",
        ),
        (
            format!(
                "One evaluation of a template runs at most {} minijinja instructions and produces \
                 at most {} KiB",
                template::FUEL,
                template::MAX_OUTPUT_BYTES / 1024
            ),
            "xp::template::budget",
        ),
        (
            format!(
                "A sweep has at most {} runs, counted before expansion (grid axes multiply, \
                 `include` adds, `repeat` multiplies)",
                points::MAX_RUNS
            ),
            "xp::sweep::too-many-runs",
        ),
    ];
    let _ = writeln!(out, "## Limits\n");
    let _ = writeln!(out, "| limit | diagnostic |\n|---|---|");
    for (text, code) in rows {
        let _ = writeln!(out, "| {text} | `{code}` |");
    }
}

fn section(
    out: &mut String,
    schema: &Schema,
    node: &NodeSpec,
    path: &[&str],
    stack: &mut Vec<String>,
) {
    if let BodyRef::Ref(name) = &node.body {
        if stack.contains(name) {
            return;
        }
        stack.push(name.clone());
    }
    let body = schema.body(node);
    let mut full: Vec<&str> = path.to_vec();
    full.push(&node.name);
    let title = full
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(" › ");
    let level = "#".repeat((full.len() + 1).min(6));
    let _ = writeln!(out, "{level} {title}\n");
    let mut flags = Vec::new();
    if node.required {
        flags.push("required".to_owned());
    }
    if node.multiple {
        flags.push("may repeat".to_owned());
    }
    if let Some(f) = node.format {
        flags.push(format!("any name: {}", f.describe()));
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "*{}*\n", flags.join("; "));
    }
    body_tables(out, body);
    for variant in &body.variants {
        let aliases = if variant.aliases.is_empty() {
            String::new()
        } else {
            format!(
                " (also: {})",
                variant
                    .aliases
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let _ = writeln!(out, "**`{} \"{}\"`**{aliases}\n", node.name, variant.name);
        body_tables(out, &variant.body);
    }
    for child in body
        .nodes
        .iter()
        .chain(body.variants.iter().flat_map(|v| v.body.nodes.iter()))
    {
        if is_simple(child) {
            continue;
        }
        section(out, schema, child, &full, stack);
    }
    if let BodyRef::Ref(_) = &node.body {
        stack.pop();
    }
}

fn body_tables(out: &mut String, body: &Body) {
    if let Some(d) = &body.description {
        let _ = writeln!(out, "{d}\n");
    }
    let values: Vec<(String, &ValueSpec)> = body
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let name = a.name.clone().unwrap_or_else(|| {
                if a.multiple {
                    "values…".into()
                } else {
                    "value".into()
                }
            });
            (format!("argument {} `{name}`", i + 1), a)
        })
        .chain(
            body.props
                .iter()
                .map(|p| (format!("`{}=`", p.name.as_deref().unwrap_or("*")), p)),
        )
        .collect();
    let children: Vec<&NodeSpec> = body.nodes.iter().collect();
    if !values.is_empty() || !children.is_empty() {
        let _ = writeln!(out, "| option | type | default | description |");
        let _ = writeln!(out, "|---|---|---|---|");
        for (name, spec) in &values {
            let ty = if spec.tag {
                format!(
                    "kind: {}",
                    body.variants
                        .iter()
                        .map(|v| format!("`{}`", v.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                type_cell(spec)
            };
            let _ = writeln!(
                out,
                "| {name} | {ty} | {} | {} |",
                default_cell(spec),
                desc_cell(spec)
            );
        }
        for child in children {
            let (ty, default, desc) = child_cells(child, body);
            let _ = writeln!(out, "| node `{}` | {ty} | {default} | {desc} |", child.name);
        }
        out.push('\n');
    }
    for group in &body.exclusive {
        let _ = writeln!(
            out,
            "At most one of {}.\n",
            group
                .iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// A node that is just one value (`seed 1`): fully described by its row in the parent's table.
fn is_simple(node: &NodeSpec) -> bool {
    matches!(&node.body, BodyRef::Inline(b) if b.nodes.is_empty() && b.variants.is_empty() && b.props.is_empty() && b.args.len() == 1)
}

fn child_cells(child: &NodeSpec, _parent: &Body) -> (String, String, String) {
    let flags = [
        child.required.then_some("required"),
        child.multiple.then_some("may repeat"),
    ];
    let flags: Vec<&str> = flags.into_iter().flatten().collect();
    match &child.body {
        BodyRef::Inline(b) if is_simple(child) => {
            let a = ValueSpec {
                required: false,
                ..b.args[0].clone()
            };
            let a = &a;
            let mut desc = b.description.clone().unwrap_or_default();
            if !flags.is_empty() {
                desc = format!("*{}* {desc}", flags.join(", "));
            }
            (type_cell(a), default_cell(a), escape(&desc))
        }
        _ => (
            "node".into(),
            String::new(),
            format!(
                "{}see below",
                if flags.is_empty() {
                    String::new()
                } else {
                    format!("*{}*; ", flags.join(", "))
                }
            ),
        ),
    }
}

fn type_cell(spec: &ValueSpec) -> String {
    let mut t = if spec.tag {
        "kind".to_owned()
    } else if spec.name.as_deref() == Some("*") {
        format!(
            "{} (any {} name)",
            spec.ty.name(),
            spec.format.map_or("", |f| f.name())
        )
    } else {
        spec.ty.name().to_owned()
    };
    if !spec.enum_values.is_empty() {
        let values = spec
            .enum_values
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        t = if matches!(spec.ty, ValueType::String) {
            values
        } else {
            format!("{t} or {values}")
        };
    }
    if spec.min.is_some() || spec.max.is_some() || spec.above.is_some() || spec.below.is_some() {
        t = format!("{t}, {}", range_rule(spec).trim_start_matches("must be "));
    }
    if let Some(f) = spec.format.filter(|_| spec.name.as_deref() != Some("*")) {
        t = format!("{t} ({})", f.name());
    }
    if spec.multiple {
        t = format!("{t}, one or more");
    }
    if spec.required {
        t = format!("{t}, **required**");
    }
    if !spec.template {
        t = format!("{t}, *literal*");
    }
    escape(&t)
}

fn default_cell(spec: &ValueSpec) -> String {
    let values: Vec<String> = spec
        .default
        .iter()
        .map(|d| match d {
            KdlValue::String(s) => format!("`\"{s}\"`"),
            KdlValue::Bool(b) => format!("`#{b}`"),
            other => format!("`{other}`"),
        })
        .collect();
    escape(&values.join(" "))
}

fn desc_cell(spec: &ValueSpec) -> String {
    let mut d = spec.description.clone().unwrap_or_default();
    if !spec.aliases.is_empty() {
        let aliases = spec
            .aliases
            .iter()
            .map(|(a, c)| format!("`{a}` → `{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        d = format!("{d} Also accepted: {aliases}.").trim().to_owned();
    }
    escape(&d)
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
