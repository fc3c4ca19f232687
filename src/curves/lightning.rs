//! The callback state Lightning saves in every `.ckpt`: ModelCheckpoint (the monitored quantity,
//! its current and best score, the best file) and EarlyStopping (its wait count, the epoch it
//! stopped at, its best score and patience).
//!
//! Lightning keys `callbacks` by each callback's state key, its class name followed by its
//! identifying arguments: `ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', ...}`.

use serde::Serialize;

use crate::error::Result;
use crate::model::{Checkpoint, Key, Node};

/// What a Lightning checkpoint's callbacks say.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LightningState {
    /// ModelCheckpoint's monitored quantity (`val_loss`).
    pub monitor: Option<String>,
    /// `min` or `max`, from the callback's state key.
    pub mode: Option<String>,
    /// The monitored value when the file was saved.
    pub current_score: Option<f64>,
    /// The best monitored value so far.
    pub best_model_score: Option<f64>,
    /// The file ModelCheckpoint holds the best.
    pub best_model_path: Option<String>,
    /// Every file kept, with its score.
    pub best_k_models: Vec<(String, Option<f64>)>,
    /// EarlyStopping's state, if the run had the callback.
    pub early_stopping: Option<EarlyStoppingState>,
}

/// EarlyStopping's saved state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EarlyStoppingState {
    /// Validation checks since the last improvement.
    pub wait_count: Option<f64>,
    /// The epoch it stopped training at (0: it did not stop).
    pub stopped_epoch: Option<f64>,
    /// The best monitored value it saw.
    pub best_score: Option<f64>,
    /// Its patience.
    pub patience: Option<f64>,
}

/// The Lightning callback state of `ckpt`, or None for a file Lightning did not write (or whose
/// callbacks include no ModelCheckpoint).
pub(super) fn state(ckpt: &Checkpoint) -> Result<Option<LightningState>> {
    let Some(callbacks) = top(&ckpt.root, "callbacks") else {
        return Ok(None);
    };
    let Node::Dict { items, .. } = callbacks else {
        return Ok(None);
    };
    let mut out = None;
    let mut early = None;
    for (key, value) in items {
        let key = key.to_string();
        if key.starts_with("ModelCheckpoint") && out.is_none() {
            out = Some(LightningState {
                monitor: text(value, "monitor"),
                mode: quoted_arg(&key, "mode"),
                current_score: number(ckpt, value, "current_score")?,
                best_model_score: number(ckpt, value, "best_model_score")?,
                best_model_path: text(value, "best_model_path").filter(|p| !p.is_empty()),
                best_k_models: best_k(ckpt, value)?,
                early_stopping: None,
            });
        } else if key.starts_with("EarlyStopping") && early.is_none() {
            early = Some(EarlyStoppingState {
                wait_count: number(ckpt, value, "wait_count")?,
                stopped_epoch: number(ckpt, value, "stopped_epoch")?,
                best_score: number(ckpt, value, "best_score")?,
                patience: number(ckpt, value, "patience")?,
            });
        }
    }
    Ok(out.map(|s| LightningState {
        early_stopping: early,
        ..s
    }))
}

fn top<'a>(node: &'a Node, name: &str) -> Option<&'a Node> {
    match node {
        Node::Dict { items, .. } => items
            .iter()
            .find(|(k, _)| matches!(k, Key::Str(s) if s == name))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn text(dict: &Node, name: &str) -> Option<String> {
    match top(dict, name)? {
        Node::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn number(ckpt: &Checkpoint, dict: &Node, name: &str) -> Result<Option<f64>> {
    match top(dict, name) {
        Some(node) => super::walk::number(ckpt, node),
        None => Ok(None),
    }
}

fn best_k(ckpt: &Checkpoint, dict: &Node) -> Result<Vec<(String, Option<f64>)>> {
    let Some(Node::Dict { items, .. }) = top(dict, "best_k_models") else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .map(|(k, v)| Ok((k.to_string(), super::walk::number(ckpt, v)?)))
        .collect()
}

/// The value of `'name': 'value'` in a callback's state key.
fn quoted_arg(key: &str, name: &str) -> Option<String> {
    let rest = &key[key.find(&format!("'{name}': '"))? + name.len() + 5..];
    Some(rest[..rest.find('\'')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::quoted_arg;

    #[test]
    fn mode_from_the_state_key() {
        let key = "ModelCheckpoint{'monitor': 'val_acc', 'mode': 'max', 'every_n_train_steps': 0}";
        assert_eq!(quoted_arg(key, "mode").as_deref(), Some("max"));
        assert_eq!(quoted_arg(key, "monitor").as_deref(), Some("val_acc"));
        assert_eq!(quoted_arg(key, "dirpath"), None);
    }
}
