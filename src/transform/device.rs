//! `--device`: rewrites the device tags saved with storages (what `map_location` does at load
//! time, done once in the file).

use std::fmt;

use super::{Result, TransformError};
use crate::model::Checkpoint;

/// Where storages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRule {
    /// Every storage to this device.
    All(String),
    /// Storages on `from` to `to`. A `from` without an index (`cuda`) matches every index of
    /// that device type (`cuda`, `cuda:0`, `cuda:1`...).
    Map { from: String, to: String },
}

impl DeviceRule {
    /// `cpu`, `cuda:1` (everything there) or `cuda:1=cuda:0` (only what is on cuda:1).
    pub fn parse(s: &str) -> Result<DeviceRule> {
        let bad = |why: &str| TransformError::BadDevice {
            rule: s.into(),
            why: why.into(),
        };
        match s.split_once('=') {
            None => {
                check_device(s).map_err(|w| bad(&w))?;
                Ok(DeviceRule::All(s.into()))
            }
            Some((from, to)) => {
                check_device(from).map_err(|w| bad(&w))?;
                check_device(to).map_err(|w| bad(&w))?;
                Ok(DeviceRule::Map {
                    from: from.into(),
                    to: to.into(),
                })
            }
        }
    }

    /// Whether a storage saved on `location` moves, and where to.
    pub fn apply(&self, location: &str) -> Option<&str> {
        match self {
            DeviceRule::All(to) => Some(to),
            DeviceRule::Map { from, to } => {
                let matches =
                    location == from || (!from.contains(':') && location.split(':').next() == Some(from.as_str()));
                matches.then_some(to.as_str())
            }
        }
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRule::All(to) => f.write_str(to),
            DeviceRule::Map { from, to } => write!(f, "{from}={to}"),
        }
    }
}

/// Location tags torch 2.11's `default_restore_location` restores without a plugin, by device
/// type: exact tags (`cpu`, `meta`) and types that take an optional `:N` (`cuda`, `mps`, `xpu`,
/// `hpu`, `mtia`, and `privateuseone`, the out-of-tree backend before a plugin renames it). Any
/// other tag makes `torch.load` fail with "don't know how to restore data location".
const EXACT: [&str; 2] = ["cpu", "meta"];
const INDEXED: [&str; 6] = ["cuda", "mps", "xpu", "hpu", "mtia", "privateuseone"];

/// A device as a location tag torch restores: one of [`EXACT`], or one of [`INDEXED`] with an
/// optional `:N`.
fn check_device(s: &str) -> std::result::Result<(), String> {
    let (kind, index) = match s.split_once(':') {
        Some((k, i)) => (k, Some(i)),
        None => (s, None),
    };
    let known = || format!("torch restores {}, {}[:N]", EXACT.join(", "), INDEXED.join("[:N], "));
    if EXACT.contains(&kind) {
        return match index {
            None => Ok(()),
            Some(_) => Err(format!("{kind} takes no index ({})", known())),
        };
    }
    if !INDEXED.contains(&kind) {
        return Err(format!(
            "torch.load cannot restore a storage tagged '{s}' ({})",
            known()
        ));
    }
    match index {
        Some(i) if i.is_empty() || !i.chars().all(|c| c.is_ascii_digit()) => {
            Err(format!("'{i}' is not a device index"))
        }
        _ => Ok(()),
    }
}

/// Refuses a `FROM=TO` rule when no storage is on FROM: it would change nothing.
pub fn require_match(ckpt: &Checkpoint, rule: &DeviceRule) -> Result<()> {
    let DeviceRule::Map { from, .. } = rule else {
        return Ok(());
    };
    if ckpt.storages.iter().any(|s| rule.apply(&s.location).is_some()) {
        return Ok(());
    }
    let mut on: Vec<&str> = ckpt.storages.iter().map(|s| s.location.as_str()).collect();
    on.sort_unstable();
    on.dedup();
    Err(TransformError::BadDevice {
        rule: rule.to_string(),
        why: format!(
            "no storage is on {from} (the file's storages are on: {})",
            on.join(", ")
        ),
    })
}

/// What [`set_device`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceReport {
    /// Storages whose location changed.
    pub storages_changed: usize,
    /// Storages left as they were (another device, or already there).
    pub storages_unchanged: usize,
    /// Tensors viewing a changed storage.
    pub tensors_moved: usize,
}

/// Rewrites the location tag of every storage the rule matches.
pub fn set_device(ckpt: &mut Checkpoint, rule: &DeviceRule) -> DeviceReport {
    let mut report = DeviceReport::default();
    let mut changed = vec![false; ckpt.storages.len()];
    for (i, s) in ckpt.storages.iter_mut().enumerate() {
        match rule.apply(&s.location) {
            Some(to) if to != s.location => {
                s.location = to.to_string();
                changed[i] = true;
                report.storages_changed += 1;
            }
            _ => report.storages_unchanged += 1,
        }
    }
    report.tensors_moved = ckpt
        .tensors
        .iter()
        .filter(|t| changed.get(t.storage.0).copied().unwrap_or(false))
        .count();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules() {
        assert_eq!(DeviceRule::parse("cpu").unwrap(), DeviceRule::All("cpu".into()));
        assert_eq!(DeviceRule::parse("cuda:1").unwrap(), DeviceRule::All("cuda:1".into()));
        assert_eq!(
            DeviceRule::parse("cuda:1=cuda:0").unwrap(),
            DeviceRule::Map {
                from: "cuda:1".into(),
                to: "cuda:0".into()
            }
        );
        for good in ["meta", "mps", "mps:0", "xpu:1", "hpu", "mtia:0", "privateuseone:2"] {
            assert!(DeviceRule::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "CUDA", "cuda:", "cuda:x", "cpu:0", "=cpu", "cuda:1=", "a b", "gpu", "banana", "cuda0", "meta:0",
        ] {
            assert!(DeviceRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn map_without_index_matches_every_index() {
        let r = DeviceRule::parse("cuda=cpu").unwrap();
        assert_eq!(r.apply("cuda:3"), Some("cpu"));
        assert_eq!(r.apply("cuda"), Some("cpu"));
        assert_eq!(r.apply("cudax:0"), None);
        assert_eq!(r.apply("mps"), None);
        let r = DeviceRule::parse("cuda:1=cuda:0").unwrap();
        assert_eq!(r.apply("cuda:1"), Some("cuda:0"));
        assert_eq!(r.apply("cuda:0"), None);
    }
}
