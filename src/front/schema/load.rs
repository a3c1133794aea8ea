//! Schema text → [`Schema`]. The dialect's structure is checked by the meta-schema (a test
//! validates every shipped schema with the same engine as experiments); this loader only
//! resolves `use` splices and reports what it cannot interpret.

use std::collections::BTreeMap;

use kdl::{KdlDocument, KdlNode, KdlValue};

use super::{Body, BodyRef, Format, Implied, NodeSpec, Schema, ValueSpec, ValueType, Variant};
use crate::front::parse::{args, children, prop};

/// Loads a schema written in the dialect.
pub fn load(text: &str) -> Result<Schema, String> {
    let doc = KdlDocument::parse(text).map_err(|e| format!("schema is not valid KDL: {e:?}"))?;
    let mut header = None;
    let mut raw_defines = BTreeMap::new();
    let mut document = None;
    for node in doc.nodes() {
        match node.name().value() {
            "schema" => header = Some(node),
            "document" => document = Some(node),
            "define" => {
                let name = first_string(node).ok_or("`define` needs a name")?;
                raw_defines.insert(name.to_owned(), node);
            }
            other => return Err(format!("unknown top-level schema node `{other}`")),
        }
    }
    let header = header.ok_or("the schema has no `schema` node")?;
    let loader = Loader {
        raw_defines: &raw_defines,
    };
    let defines = raw_defines
        .iter()
        .map(|(name, node)| Ok((name.clone(), loader.body(node, &mut vec![name.clone()])?)))
        .collect::<Result<_, String>>()?;
    let document = document.ok_or("the schema has no `document` node")?;
    let schema = Schema {
        name: first_string(header).unwrap_or_default().to_owned(),
        version: prop(header, "version")
            .and_then(|e| e.value().as_integer())
            .unwrap_or(1) as i64,
        document: loader.body(document, &mut Vec::new())?,
        defines,
    };
    check_refs(&schema)?;
    Ok(schema)
}

struct Loader<'a> {
    raw_defines: &'a BTreeMap<String, &'a KdlNode>,
}

impl Loader<'_> {
    /// `stack` holds the definitions being spliced, to reject `use` cycles.
    fn body(&self, node: &KdlNode, stack: &mut Vec<String>) -> Result<Body, String> {
        let mut body = Body::default();
        for child in children(node) {
            match child.name().value() {
                "description" => body.description = first_string(child).map(str::to_owned),
                "arg" => body.args.push(value_spec(child, false)?),
                "prop" => body.props.push(value_spec(child, true)?),
                "node" => body.nodes.push(self.node_spec(child, stack)?),
                "variant" => body.variants.push(self.variant(child, stack)?),
                "exclusive" => body.exclusive.push(strings(child)),
                "use" => {
                    let name = first_string(child).ok_or("`use` needs a definition name")?;
                    if stack.iter().any(|s| s == name) {
                        return Err(format!("`use \"{name}\"` splices a definition into itself"));
                    }
                    let def = self
                        .raw_defines
                        .get(name)
                        .ok_or_else(|| format!("`use` of unknown definition `{name}`"))?;
                    stack.push(name.to_owned());
                    let spliced = self.body(def, stack)?;
                    stack.pop();
                    merge(&mut body, spliced);
                }
                "alias" => {}
                other => return Err(format!("unknown schema item `{other}`")),
            }
        }
        Ok(body)
    }

    fn node_spec(&self, node: &KdlNode, stack: &mut Vec<String>) -> Result<NodeSpec, String> {
        let name = first_string(node).ok_or("`node` needs a name")?.to_owned();
        let body = match prop(node, "ref").and_then(|e| e.value().as_string()) {
            Some(r) => BodyRef::Ref(r.to_owned()),
            None => BodyRef::Inline(self.body(node, stack)?),
        };
        Ok(NodeSpec {
            name,
            format: format_of(node)?,
            required: flag(node, "required"),
            multiple: flag(node, "multiple"),
            feature: flag(node, "feature"),
            body,
        })
    }

    fn variant(&self, node: &KdlNode, stack: &mut Vec<String>) -> Result<Variant, String> {
        let name = first_string(node)
            .ok_or("`variant` needs a name")?
            .to_owned();
        let alias_nodes = || {
            children(node)
                .iter()
                .filter(|c| c.name().value() == "alias")
        };
        let aliases = alias_nodes()
            .filter_map(|c| first_string(c).map(str::to_owned))
            .collect();
        let implies = alias_nodes()
            .filter_map(|c| first_string(c).map(|a| (a, c)))
            .flat_map(|(alias, c)| {
                c.entries().iter().filter_map(move |e| {
                    e.name().map(|p| Implied {
                        alias: alias.to_owned(),
                        prop: p.value().to_owned(),
                        value: e.value().clone(),
                    })
                })
            })
            .collect();
        Ok(Variant {
            name,
            aliases,
            implies,
            body: self.body(node, stack)?,
        })
    }
}

fn merge(into: &mut Body, from: Body) {
    into.args.extend(from.args);
    into.props.extend(from.props);
    into.nodes.extend(from.nodes);
    into.variants.extend(from.variants);
    into.exclusive.extend(from.exclusive);
    if into.description.is_none() {
        into.description = from.description;
    }
}

fn value_spec(node: &KdlNode, is_prop: bool) -> Result<ValueSpec, String> {
    let name = first_string(node).map(str::to_owned);
    if is_prop && name.is_none() {
        return Err("`prop` needs a name".into());
    }
    let mut spec = ValueSpec::new(name);
    spec.tag = flag(node, "tag");
    spec.ty = match prop(node, "type").and_then(|e| e.value().as_string()) {
        Some(t) => ValueType::ALL
            .iter()
            .find(|(n, _)| *n == t)
            .map(|(_, ty)| *ty)
            .ok_or_else(|| format!("unknown value type `{t}`"))?,
        None if spec.tag => ValueType::String,
        None => ValueType::Any,
    };
    spec.required = flag(node, "required");
    spec.multiple = flag(node, "multiple");
    spec.template = prop(node, "template")
        .and_then(|e| e.value().as_bool())
        .unwrap_or(true);
    spec.min = number(node, "min");
    spec.max = number(node, "max");
    spec.above = number(node, "above");
    spec.below = number(node, "below");
    spec.min_count = number(node, "min-count").map_or(0, |n| n as usize);
    spec.max_count = number(node, "max-count").map(|n| n as usize);
    spec.format = format_of(node)?;
    if let Some(d) = prop(node, "default") {
        spec.default.push(d.value().clone());
    }
    for child in children(node) {
        match child.name().value() {
            "description" => spec.description = first_string(child).map(str::to_owned),
            "enum" => spec.enum_values.extend(strings(child)),
            "alias" => {
                if let [from, to] = strings(child).as_slice() {
                    spec.aliases.push((from.clone(), to.clone()));
                }
            }
            "default" => spec.default.extend(args(child).map(|e| e.value().clone())),
            other => return Err(format!("unknown value option `{other}`")),
        }
    }
    Ok(spec)
}

fn check_refs(schema: &Schema) -> Result<(), String> {
    fn walk(schema: &Schema, body: &Body) -> Result<(), String> {
        for node in &body.nodes {
            match &node.body {
                BodyRef::Ref(name) if !schema.defines.contains_key(name) => {
                    return Err(format!(
                        "node `{}` refers to unknown definition `{name}`",
                        node.name
                    ));
                }
                BodyRef::Ref(_) => {}
                BodyRef::Inline(b) => walk(schema, b)?,
            }
        }
        body.variants.iter().try_for_each(|v| walk(schema, &v.body))
    }
    walk(schema, &schema.document)?;
    schema.defines.values().try_for_each(|b| walk(schema, b))
}

fn first_string(node: &KdlNode) -> Option<&str> {
    args(node).next().and_then(|e| e.value().as_string())
}

fn strings(node: &KdlNode) -> Vec<String> {
    args(node)
        .filter_map(|e| e.value().as_string().map(str::to_owned))
        .collect()
}

fn flag(node: &KdlNode, name: &str) -> bool {
    prop(node, name)
        .and_then(|e| e.value().as_bool())
        .unwrap_or(false)
}

fn number(node: &KdlNode, name: &str) -> Option<f64> {
    prop(node, name).and_then(|e| match e.value() {
        KdlValue::Integer(i) => Some(*i as f64),
        KdlValue::Float(f) => Some(*f),
        _ => None,
    })
}

fn format_of(node: &KdlNode) -> Result<Option<Format>, String> {
    match prop(node, "format").and_then(|e| e.value().as_string()) {
        None => Ok(None),
        Some(f) => Format::ALL
            .iter()
            .find(|(n, _)| *n == f)
            .map(|(_, fmt)| Some(*fmt))
            .ok_or_else(|| format!("unknown format `{f}`")),
    }
}
