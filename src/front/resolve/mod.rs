//! Resolution: an expanded, checked experiment → its [`RunSpec`](crate::spec::RunSpec).
//! Defaults come from the schema (the single source of truth), paths are made relative to the
//! file that wrote them, the cross-field rules run with spans to point back, and the canonical
//! KDL form is written. Pure: no I/O.

mod canonical;
mod decode;
mod defaults;
mod error;
mod reader;
mod rules;
mod settings;
mod shape;

use std::path::{Path, PathBuf};

pub use canonical::canonical;
pub use decode::decode;
pub use defaults::fill;
pub use rules::rules;
pub use settings::{Settings, settings, spec, value_json};

use crate::front::load::base_dir;
use crate::front::source::Sources;
use crate::front::tree::Entry;

/// A path value, relative to the file that wrote it.
fn path_of(entry: &Entry, sources: &Sources) -> PathBuf {
    let written = Path::new(entry.as_str().unwrap_or_default());
    if written.is_absolute() {
        written.to_path_buf()
    } else {
        base_dir(sources.get(entry.source)).join(written)
    }
}
