//! What a writing command did, as one record that both its text output and its `--json` output
//! come from: a list of named actions (renamed, cast, kept, dropped, frozen ...), each with a
//! count and the items it touched, then what was written.
//!
//! To report a new transform, turn its report into an [`Action`] (see the `From` impls below)
//! and [`Record::push`] it; the JSON gains an entry `{"action", "count", "items", ...}` and the
//! text a line, with no change to the commands' printing.

use serde_json::{json, Value as Json};

use crate::transform::{CastReport, DeviceReport, DropReport, FreezeReport, RenameReport};
use crate::write::{OutFormat, WriteReport};

/// One thing a command did to the checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// What was done, a past-tense verb: `renamed`, `cast`, `kept`, `dropped` ...
    pub name: String,
    /// How many tensors (or storages, as `summary` says) it touched.
    pub count: usize,
    /// One JSON value per item touched (a name, or an object such as `{"from", "to"}`).
    pub items: Vec<Json>,
    /// The text line for people ("cast 14 tensors to bfloat16").
    pub summary: String,
    /// Further fields of the JSON entry (the cast's target dtype ...).
    pub extra: serde_json::Map<String, Json>,
}

impl Action {
    pub fn new(name: &str, items: Vec<Json>, summary: String) -> Action {
        Action {
            name: name.into(),
            count: items.len(),
            items,
            summary,
            extra: serde_json::Map::new(),
        }
    }

    /// Adds a field to the action's JSON entry.
    pub fn with(mut self, key: &str, value: Json) -> Action {
        self.extra.insert(key.into(), value);
        self
    }

    pub fn to_json(&self) -> Json {
        let mut o = json!({"action": self.name, "count": self.count, "items": self.items});
        if let Json::Object(map) = &mut o {
            map.extend(self.extra.clone());
        }
        o
    }
}

/// What was written: one entry of [`Record`].
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub format: OutFormat,
    pub report: WriteReport,
}

impl Written {
    pub fn to_json(&self) -> Json {
        json!({
            "format": self.format.name(),
            "files": self.report.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "tensors": self.report.tensors,
            "bytes": self.report.bytes,
            "deduplicated": self.report.deduplicated.iter()
                .map(|(name, kept)| json!({"name": name, "kept": kept}))
                .collect::<Vec<_>>(),
        })
    }

    /// "wrote out.safetensors (safetensors): 15 tensors, 11.1 KiB".
    pub fn to_text(&self) -> String {
        let files = match self.report.files.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} files ({} ...)",
                many.len(),
                many.first().map(|p| p.display().to_string()).unwrap_or_default()
            ),
        };
        format!(
            "wrote {files} ({}): {} tensors, {}",
            self.format.name(),
            self.report.tensors,
            crate::units::human_bytes(self.report.bytes)
        )
    }
}

/// Everything a writing command did, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record {
    pub actions: Vec<Action>,
    /// None when nothing was written (a dry run, a report only).
    pub written: Option<Written>,
}

impl Record {
    pub fn push(&mut self, action: impl Into<Action>) {
        self.actions.push(action.into());
    }

    /// `{"command", "input", "actions": [...], "written": {...} | null}`.
    pub fn to_json(&self, command: &str, input: &str) -> Json {
        json!({
            "command": command,
            "input": input,
            "actions": self.actions.iter().map(Action::to_json).collect::<Vec<_>>(),
            "written": self.written.as_ref().map(Written::to_json),
        })
    }
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> Vec<Json> {
    names.map(|n| json!(n)).collect()
}

impl From<&RenameReport> for Action {
    fn from(r: &RenameReport) -> Action {
        let items = r
            .renamed
            .iter()
            .map(|(from, to)| json!({"from": from, "to": to}))
            .collect();
        Action::new("renamed", items, format!("renamed {} tensors", r.renamed.len()))
            .with("unchanged", json!(r.unchanged))
    }
}

/// A cast is two actions: the tensors cast and the tensors kept in their dtype.
pub fn cast_actions(r: &CastReport) -> [Action; 2] {
    let cast = r
        .cast
        .iter()
        .map(|c| json!({"name": c.name, "from": c.from.name()}))
        .collect();
    let kept = r
        .kept
        .iter()
        .map(|k| json!({"name": k.name, "dtype": k.dtype.name(), "reason": k.reason.tag()}))
        .collect();
    [
        Action::new(
            "cast",
            cast,
            format!("cast {} tensors to {}; {} kept", r.cast.len(), r.to, r.kept.len()),
        )
        .with("to", json!(r.to.name())),
        // Its line is the cast's: one line says both.
        Action::new("kept", kept, String::new()),
    ]
}

impl From<&DeviceReport> for Action {
    fn from(r: &DeviceReport) -> Action {
        let mut a = Action::new(
            "device_retagged",
            Vec::new(),
            format!("device tags: {} storages changed", r.storages_changed),
        );
        a.count = r.storages_changed;
        a.with("tensors_moved", json!(r.tensors_moved))
            .with("storages_unchanged", json!(r.storages_unchanged))
    }
}

impl From<&DropReport> for Action {
    fn from(r: &DropReport) -> Action {
        let per_pattern: serde_json::Map<String, Json> =
            r.per_pattern.iter().map(|(p, n)| (p.clone(), json!(n))).collect();
        Action::new(
            "dropped",
            names(r.removed.iter()),
            format!(
                "removed {} tensors ({} parameters)",
                r.removed.len(),
                crate::units::grouped(r.removed_params)
            ),
        )
        .with("params", json!(r.removed_params))
        .with("bytes", json!(r.removed_bytes))
        .with("per_pattern", Json::Object(per_pattern))
        .with("remaining", json!(r.remaining))
    }
}

/// A freeze is two actions: the parameters now frozen and those now trainable (with the flags
/// the file had when no rule was given).
pub fn freeze_actions(r: &FreezeReport) -> [Action; 2] {
    let with = |flag: bool| -> Vec<Json> {
        names(
            r.entries
                .iter()
                .filter(|e| e.requires_grad == flag && e.shared_with.is_none())
                .map(|e| &e.name),
        )
    };
    [
        Action::new("frozen", with(false), String::new()).with("params", json!(r.frozen_params)),
        Action::new("trainable", with(true), r.summary()).with("params", json!(r.trainable_params)),
    ]
}
