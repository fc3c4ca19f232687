//! Transforms of a [`Checkpoint`]: element-type casts, device tags, renames, selecting a
//! subtree, dropping layers, freezing parameters. Every transform is a pure function on the
//! in-memory model: no file is read or written (except that [`loss_report()`] reads the
//! tensor bytes a pending cast would convert).
//!
//! Every transform leaves the checkpoint consistent: `root`'s `Node::Tensor` leaves index
//! `tensors` (each index once, in the order of `tensors`), every tensor's name is its dotted
//! path in `root` (as [`crate::read::flatten`] names it), and tensors only reference existing
//! storages. Transforms that remove tensors ([`drop_layers()`], [`select()`]) also remove the
//! storages no remaining tensor views, so a writer never meets an orphan storage.
//!
//! Names and patterns: every option that picks tensors by name takes a [`Pattern`] (a module
//! prefix or a glob over the whole name; [`pattern`] describes it once), and refuses one that
//! matches nothing ([`pattern::require_matches`]).

pub mod cast;
pub mod device;
pub mod drop_layers;
pub mod freeze;
pub mod norms;
pub mod params;
pub mod pattern;
pub mod rename;
pub mod select;
pub(crate) mod tree;

pub use crate::elem::Losses;
pub use cast::{cast, try_loss_report, CastReport, Keep, KeepReason};
pub use device::{require_match as require_device_match, set_device, DeviceReport, DeviceRule};
pub use drop_layers::{drop_layers, DropReport};
pub use freeze::{try_freeze, FreezeReport, FreezeRule};
pub use pattern::Pattern;
pub use rename::{rename, rename_map, rename_regex, RenameReport, RenameRule};
pub use select::select;

#[cfg(doc)]
use crate::model::Checkpoint;

/// Why a transform refused. Nothing was changed when a transform returns one of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TransformError {
    /// Patterns that match no tensor: a typo never passes silently.
    #[error("{} no tensor: {}{}", if .patterns.len() == 1 { "pattern matches" } else { "patterns match" }, quote_list(.patterns), hint_suffix(.hint))]
    NoMatch { patterns: Vec<String>, hint: String },
    #[error("invalid pattern '{pattern}': {why}")]
    BadPattern { pattern: String, why: String },
    /// A rename would give two tensors one name.
    #[error("renaming makes '{a}' and '{b}' collide: both would be named '{name}'")]
    Collision { a: String, b: String, name: String },
    /// A rename would put one key twice into a dict (a tensor's new key equals another entry's).
    #[error("renaming puts the key '{key}' twice into {place}")]
    KeyCollision { key: String, place: String },
    /// `--rename` rules that change no tensor name: a typo never passes silently.
    #[error("{} no tensor name: {}", if .rules.len() == 1 { "rename rule changes" } else { "rename rules change" }, quote_list(.rules))]
    RenamesNothing { rules: Vec<String> },
    /// Rename map entries that name no tensor.
    #[error("rename map: no tensor named {}", quote_list(.names))]
    MapNamesNoTensor { names: Vec<String> },
    /// A rename that would take a tensor out of the nested dict holding it (a .pth keeps the
    /// nesting, so the new name must keep the path of the dicts above it).
    #[error("renaming '{from}' to '{to}' would move it out of '{parent}', a nested dict of the checkpoint (rename within it, or --select it first)")]
    LeavesParent { from: String, to: String, parent: String },
    #[error("renaming '{from}' leaves it no name")]
    EmptyName { from: String },
    #[error("no '{path}' in the checkpoint; its top-level keys are: {}", .keys.join(", "))]
    UnknownPath { path: String, keys: Vec<String> },
    #[error("'{path}' holds no tensors")]
    NoTensors { path: String },
    #[error("invalid device rule '{rule}': {why}")]
    BadDevice { rule: String, why: String },
}

fn quote_list(items: &[String]) -> String {
    items.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(", ")
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}

pub type Result<T, E = TransformError> = std::result::Result<T, E>;
