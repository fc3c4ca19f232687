//! `--drop`: removes tensors by pattern (a classifier head, optimizer state, BN counters).

use std::collections::HashSet;

#[cfg(feature = "internals")] // only the tests call to_json
use serde_json::{json, Value as Json};

use super::pattern::{compile, require_matches};
use super::tree::remove_tensors;
use super::Result;
use crate::model::Checkpoint;

/// What [`drop_layers`] removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DropReport {
    /// Names of the removed tensors, in checkpoint order.
    pub removed: Vec<String>,
    /// Elements of the removed tensors.
    pub removed_params: u64,
    pub removed_bytes: u64,
    /// For each pattern, how many tensors it matched (a tensor may match several).
    pub per_pattern: Vec<(String, usize)>,
    /// Tensors left.
    pub remaining: usize,
    /// Storages removed because no remaining tensor views them.
    pub storages_removed: usize,
}

impl DropReport {
    #[cfg(feature = "internals")] // only the integration tests call it
    pub fn to_json(&self) -> Json {
        json!({
            "removed": self.removed,
            "removed_params": self.removed_params,
            "removed_bytes": self.removed_bytes,
            "per_pattern": self.per_pattern.iter().map(|(p, n)| json!({"pattern": p, "tensors": n})).collect::<Vec<_>>(),
            "remaining": self.remaining,
            "storages_removed": self.storages_removed,
        })
    }
}

/// Removes every tensor whose name matches one of `patterns` ([`super::Pattern`]: a glob
/// over the whole name, or a module prefix). A pattern that matches nothing is an error and
/// nothing is removed, so a typo never passes silently.
///
/// In the tree, a removed tensor's dict entry goes (and a dict that becomes empty by it goes
/// too); a removed list or tuple element becomes `None`, so the others keep their indices and
/// names. Storages no remaining tensor views are removed (the rest are renumbered).
pub fn drop_layers(ckpt: &mut Checkpoint, patterns: &[String]) -> Result<DropReport> {
    let pats = compile(patterns)?;
    require_matches(&pats, ckpt.tensors.iter().map(|t| t.name.as_str()))?;
    let mut per_pattern: Vec<(String, usize)> = patterns.iter().map(|p| (p.clone(), 0)).collect();
    let mut remove = HashSet::new();
    for (i, t) in ckpt.tensors.iter().enumerate() {
        for (k, p) in pats.iter().enumerate() {
            if p.matches(&t.name) {
                per_pattern[k].1 += 1;
                remove.insert(i);
            }
        }
    }
    let mut report = DropReport {
        per_pattern,
        ..Default::default()
    };
    for (i, t) in ckpt.tensors.iter().enumerate() {
        if remove.contains(&i) {
            report.removed.push(t.name.clone());
            report.removed_params += t.numel();
            report.removed_bytes += t.nbytes();
        }
    }
    let storages = ckpt.storages.len();
    remove_tensors(ckpt, &remove);
    report.remaining = ckpt.tensors.len();
    report.storages_removed = storages - ckpt.storages.len();
    Ok(report)
}
