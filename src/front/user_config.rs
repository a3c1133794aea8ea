//! User defaults: `config.kdl` in the user's config directory (or the file `XP_CONFIG` names),
//! checked against `schemas/user-config.kdl` by the same engine as experiments. Command-line
//! flags win over it.

use std::path::PathBuf;

use crate::diagnostic::Diagnostics;
use crate::front::check;
use crate::front::load;
use crate::front::parse;
use crate::front::schema;
use crate::front::source::Sources;
use crate::front::tree;

/// The schema of the user config file.
pub const SCHEMA_SOURCE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/user-config.kdl"
));

/// What the user config sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Defaults {
    pub runs_dir: Option<PathBuf>,
    pub device: Option<String>,
}

/// The config file's path: `XP_CONFIG`, else `config.kdl` in the platform's config directory.
pub fn path() -> Option<PathBuf> {
    match std::env::var_os("XP_CONFIG") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            directories::ProjectDirs::from("", "", "xp").map(|d| d.config_dir().join("config.kdl"))
        }
    }
}

/// Reads the user defaults; a missing file is no defaults, a broken one is diagnostics.
pub fn read(sources: &mut Sources, diags: &mut Diagnostics) -> Defaults {
    let Some(path) = path() else {
        return Defaults::default();
    };
    if std::env::var_os("XP_CONFIG").is_none() && !path.exists() {
        return Defaults::default();
    }
    let Some(id) = load::load(&path, sources, diags) else {
        return Defaults::default();
    };
    let text = sources.get(id).text.clone();
    let Some(doc) = parse::parse(&text, id, diags) else {
        return Defaults::default();
    };
    let schema = match schema::load(SCHEMA_SOURCE) {
        Ok(s) => s,
        Err(e) => unreachable!("the embedded user-config schema is invalid: {e}"),
    };
    let mut nodes = tree::from_kdl(&doc, id);
    let options = check::CheckOptions {
        allow_when: false,
        scope_of: |_| crate::front::template::Scope::default(),
        root: id,
    };
    let report = check::check(&mut nodes, &schema, &options);
    let failed = report.has_errors();
    diags.extend_from(report.diags);
    if failed {
        return Defaults::default();
    }
    let dir = load::base_dir(sources.get(id));
    let arg = |name: &str| {
        nodes
            .iter()
            .rfind(|n| n.name == name)
            .and_then(|n| n.arg(0))
            .and_then(|a| a.as_str())
            .map(str::to_owned)
    };
    Defaults {
        runs_dir: arg("runs-dir").map(|p| dir.join(p)),
        device: arg("device"),
    }
}
