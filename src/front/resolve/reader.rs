//! Reading a filled, checked node's values by name, typed; a missing value is an internal error.

use std::path::PathBuf;

use kdl::KdlValue;

use super::path_of;
use crate::front::source::Sources;
use crate::front::tree::Node;

/// Reads values of a filled, checked node; a missing one is an internal error (the schema
/// guarantees presence after `fill`).
pub(super) struct Reader<'a> {
    pub(super) node: &'a Node,
    pub(super) sources: &'a Sources,
}

pub(super) type Res<T> = Result<T, String>;

impl<'a> Reader<'a> {
    pub(super) fn child(&self, name: &str) -> Option<Reader<'a>> {
        self.node.child(name).map(|node| Reader {
            node,
            sources: self.sources,
        })
    }

    pub(super) fn need(&self, name: &str) -> Res<Reader<'a>> {
        self.child(name)
            .ok_or_else(|| format!("`{}` has no `{name}`", self.node.name))
    }

    pub(super) fn kind(&self) -> Res<&'a str> {
        self.node
            .arg(0)
            .and_then(|a| a.as_str())
            .ok_or_else(|| format!("`{}` has no kind", self.node.name))
    }

    pub(super) fn arg(&self, i: usize) -> Res<&'a KdlValue> {
        self.node
            .arg(i)
            .map(|e| &e.value)
            .ok_or_else(|| format!("`{}` has no argument {i}", self.node.name))
    }

    pub(super) fn prop(&self, name: &str) -> Option<&'a KdlValue> {
        self.node.prop(name).map(|e| &e.value)
    }

    pub(super) fn p_f64(&self, name: &str) -> Res<f64> {
        self.prop(name)
            .and_then(float)
            .ok_or_else(|| format!("`{}` has no number `{name}`", self.node.name))
    }

    pub(super) fn p_usize(&self, name: &str) -> Res<usize> {
        self.prop(name)
            .and_then(uint)
            .ok_or_else(|| format!("`{}` has no count `{name}`", self.node.name))
    }

    pub(super) fn p_bool(&self, name: &str) -> Res<bool> {
        self.prop(name)
            .and_then(KdlValue::as_bool)
            .ok_or_else(|| format!("`{}` has no flag `{name}`", self.node.name))
    }

    pub(super) fn p_str(&self, name: &str) -> Res<String> {
        self.prop(name)
            .and_then(KdlValue::as_string)
            .map(str::to_owned)
            .ok_or_else(|| format!("`{}` has no `{name}`", self.node.name))
    }

    pub(super) fn p_path(&self, name: &str) -> Option<PathBuf> {
        self.node
            .prop(name)
            .filter(|e| e.as_str().is_some())
            .map(|e| path_of(e, self.sources))
    }

    pub(super) fn a_usize(&self, i: usize) -> Res<usize> {
        uint(self.arg(i)?).ok_or_else(|| format!("`{}` needs a count", self.node.name))
    }

    pub(super) fn a_f64(&self, i: usize) -> Res<f64> {
        float(self.arg(i)?).ok_or_else(|| format!("`{}` needs a number", self.node.name))
    }

    pub(super) fn a_str(&self, i: usize) -> Res<String> {
        self.arg(i)?
            .as_string()
            .map(str::to_owned)
            .ok_or_else(|| format!("`{}` needs a string", self.node.name))
    }

    pub(super) fn c_usize(&self, name: &str) -> Res<Option<usize>> {
        self.child(name).map(|c| c.a_usize(0)).transpose()
    }

    pub(super) fn strings(&self) -> Vec<String> {
        self.node
            .args()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect()
    }
}

pub(super) fn float(v: &KdlValue) -> Option<f64> {
    match v {
        KdlValue::Integer(i) => Some(*i as f64),
        KdlValue::Float(f) => Some(*f),
        _ => None,
    }
}

pub(super) fn uint(v: &KdlValue) -> Option<usize> {
    match v {
        KdlValue::Integer(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}
