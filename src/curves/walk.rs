//! What one checkpoint holds for learning curves: histories (lists of per-epoch values under a
//! loss or metric name), scalar losses and metrics, and the epoch or step it was saved at.
//!
//! The structure tree is walked directly rather than the flattened metadata: a history of 0-d
//! tensors is a list of tensors there, which flattening names as separate tensors.

use crate::elem::decode_f64;
use crate::error::Result;
use crate::model::{Checkpoint, Key, Node};
use crate::tensor_data::for_each_chunk;

use super::names::is_metric_name;

/// Subtrees that hold no per-epoch numbers of the run: model and optimizer state, schedulers,
/// AMP scalers, hyperparameters, Lightning's loop and callback state (read on its own, see
/// `lightning`). A key naming one of these (`optimizer_state_dict`, `hyper_parameters`) is
/// passed over.
const SKIPPED_SUBTREES: [&str; 9] = [
    "state_dict",
    "optim",
    "sched",
    "scaler",
    "hparams",
    "hyper_parameters",
    "loops",
    "callbacks",
    "args",
];

/// The curves-related content of one checkpoint.
#[derive(Debug, Default)]
pub(super) struct Content {
    /// (dotted name, values) of each history, in file order.
    pub histories: Vec<(String, Vec<f64>)>,
    /// (dotted name, value) of each scalar loss or metric, in file order.
    pub scalars: Vec<(String, f64)>,
    /// The top-level `epoch`.
    pub epoch: Option<f64>,
    /// The top-level `global_step`, else `step`.
    pub step: Option<f64>,
}

/// Reads the histories, scalars, epoch and step of `ckpt`.
pub(super) fn content(ckpt: &Checkpoint) -> Result<Content> {
    let mut out = Content::default();
    if let Node::Dict { items, .. } = &ckpt.root {
        let top = |name: &str| {
            items
                .iter()
                .find(|(k, _)| matches!(k, Key::Str(s) if s == name))
                .map(|(_, v)| v)
        };
        out.epoch = top("epoch").map(|n| number(ckpt, n)).transpose()?.flatten();
        out.step = match top("global_step") {
            Some(n) => number(ckpt, n)?,
            None => top("step").map(|n| number(ckpt, n)).transpose()?.flatten(),
        };
    }
    collect(ckpt, &ckpt.root, &mut String::new(), &mut out)?;
    Ok(out)
}

fn collect(ckpt: &Checkpoint, node: &Node, path: &mut String, out: &mut Content) -> Result<()> {
    match node {
        Node::Dict { items, .. } => {
            for (key, value) in items {
                let key = key.to_string();
                let lower = key.to_ascii_lowercase();
                if SKIPPED_SUBTREES.iter().any(|s| lower.contains(s)) {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                collect(ckpt, value, path, out)?;
                path.truncate(len);
            }
        }
        Node::List(items) | Node::Tuple(items) if items.len() >= 2 && is_metric_name(path) => {
            if let Some(values) = history(ckpt, items)? {
                out.histories.push((path.clone(), values));
            }
        }
        Node::Int(_) | Node::Float(_) | Node::Tensor(_) if is_metric_name(path) => {
            if let Some(v) = scalar(ckpt, node)? {
                out.scalars.push((path.clone(), v));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The values of a list whose every item is a number or a one-element tensor; None otherwise.
fn history(ckpt: &Checkpoint, items: &[Node]) -> Result<Option<Vec<f64>>> {
    let mut values = Vec::with_capacity(items.len());
    for item in items {
        match number(ckpt, item)? {
            Some(v) => values.push(v),
            None => return Ok(None),
        }
    }
    Ok(Some(values))
}

/// A scalar loss or metric: a number, or a 0-d tensor that is not a parameter.
fn scalar(ckpt: &Checkpoint, node: &Node) -> Result<Option<f64>> {
    if let Node::Tensor(idx) = node {
        match ckpt.tensors.get(*idx) {
            Some(t) if t.shape.is_empty() && !t.parameter => {}
            _ => return Ok(None),
        }
    }
    number(ckpt, node)
}

/// A number: an int, a float, or the single element of a tensor of one element (`loss.item()`
/// saved without `.item()`). None for anything else.
pub(super) fn number(ckpt: &Checkpoint, node: &Node) -> Result<Option<f64>> {
    match node {
        Node::Int(i) => Ok(Some(*i as f64)),
        Node::Float(f) => Ok(Some(*f)),
        Node::Tensor(idx) => {
            let Some(tensor) = ckpt.tensors.get(*idx) else {
                return Ok(None);
            };
            if tensor.numel() != 1 || tensor.shape.len() > 1 {
                return Ok(None);
            }
            let size = tensor.dtype.size();
            let mut bytes = Vec::with_capacity(size);
            for_each_chunk::<crate::Error>(ckpt, tensor, |chunk| {
                bytes.extend_from_slice(chunk);
                Ok(())
            })?;
            Ok((bytes.len() >= size).then(|| decode_f64(tensor.dtype, &bytes)))
        }
        _ => Ok(None),
    }
}
