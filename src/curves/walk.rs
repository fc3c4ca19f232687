//! What one checkpoint holds for learning curves: histories (lists of per-epoch values under a
//! loss or metric name), scalar losses and metrics, and the epoch or step it was saved at.
//!
//! The structure tree is walked directly rather than the flattened metadata: a history of 0-d
//! tensors is a list of tensors there, which flattening names as separate tensors.

use crate::dtype::DType;
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
        Node::List(items) | Node::Tuple(items)
            if items.len() >= 2 && items.iter().all(|i| matches!(i, Node::Dict { .. })) =>
        {
            records(ckpt, items, path, out)?;
        }
        Node::List(items) | Node::Tuple(items) if items.len() >= 2 && is_metric_name(path) => {
            if let Some(values) = history(ckpt, items)? {
                out.histories.push((path.clone(), values));
            }
        }
        Node::Tensor(idx) if is_metric_name(path) && history_tensor(ckpt, *idx) => {
            out.histories.push((path.clone(), tensor_values(ckpt, *idx)?));
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

/// A list of per-epoch records (`[{"epoch": 1, "train_loss": 0.9, "val_loss": 1.1}, ...]`): a
/// history per loss or metric key, NaN where a record lacks it.
fn records(ckpt: &Checkpoint, items: &[Node], path: &str, out: &mut Content) -> Result<()> {
    let mut keys: Vec<String> = Vec::new();
    for item in items {
        if let Node::Dict { items: fields, .. } = item {
            for (key, _) in fields {
                let key = key.to_string();
                if is_metric_name(&key) && !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
    }
    for key in keys {
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            let field = match item {
                Node::Dict { items: fields, .. } => fields.iter().find(|(k, _)| k.to_string() == key).map(|(_, v)| v),
                _ => None,
            };
            values.push(match field {
                Some(node) => number(ckpt, node)?.unwrap_or(f64::NAN),
                None => f64::NAN,
            });
        }
        if values.iter().filter(|v| v.is_finite()).count() >= 2 {
            let name = if path.is_empty() { key } else { format!("{path}.{key}") };
            out.histories.push((name, values));
        }
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

/// The most values a 1-D tensor may hold to be read as a history (a per-step log of a long run
/// fits; the f64 copy of its values stays within 8 MiB).
const MAX_TENSOR_HISTORY: u64 = 1 << 20;

/// Whether tensor `idx` is a history (`torch.tensor(losses)`): 1-D, two or more real numbers,
/// not a parameter, at most [`MAX_TENSOR_HISTORY`] of them.
fn history_tensor(ckpt: &Checkpoint, idx: usize) -> bool {
    ckpt.tensors.get(idx).is_some_and(|t| {
        t.shape.len() == 1
            && (2..=MAX_TENSOR_HISTORY).contains(&t.numel())
            && !t.parameter
            && t.dtype != DType::Bool
            && !t.dtype.is_complex()
    })
}

/// The values of tensor `idx` (a history tensor) as f64.
fn tensor_values(ckpt: &Checkpoint, idx: usize) -> Result<Vec<f64>> {
    let tensor = &ckpt.tensors[idx];
    let size = tensor.dtype.size();
    let mut bytes = Vec::with_capacity(tensor.nbytes() as usize);
    for_each_chunk::<crate::Error>(ckpt, tensor, |chunk| {
        bytes.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(bytes.chunks_exact(size).map(|b| decode_f64(tensor.dtype, b)).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(items: Vec<(&str, Node)>) -> Node {
        Node::Dict {
            ordered: false,
            items: items.into_iter().map(|(k, v)| (Key::Str(k.into()), v)).collect(),
        }
    }

    #[test]
    fn histories_records_scalars_and_the_epoch_are_found_and_state_is_passed_over() {
        let mut ckpt = crate::CheckpointBuilder::new().build();
        ckpt.root = dict(vec![
            ("epoch", Node::Int(3)),
            ("best_val_loss", Node::Float(0.5)),
            (
                "history",
                dict(vec![(
                    "val_loss",
                    Node::Tuple(vec![Node::Float(1.0), Node::Float(f64::NAN)]),
                )]),
            ),
            (
                "log",
                Node::List(vec![
                    dict(vec![
                        ("epoch", Node::Int(1)),
                        ("train_loss", Node::Float(2.0)),
                        ("val_acc", Node::Int(0)),
                    ]),
                    dict(vec![("epoch", Node::Int(2)), ("train_loss", Node::Float(1.5))]),
                    dict(vec![("train_loss", Node::Float(1.0)), ("val_acc", Node::Float(0.5))]),
                ]),
            ),
            ("optimizer", dict(vec![("loss_scale", Node::Float(1024.0))])),
            ("hparams", dict(vec![("loss_weight", Node::Float(0.1))])),
            ("lr_history", Node::List(vec![Node::Float(0.1), Node::Float(0.01)])),
        ]);
        let c = content(&ckpt).unwrap();
        assert_eq!(c.epoch, Some(3.0));
        assert_eq!(c.step, None);
        assert_eq!(c.scalars, [("best_val_loss".to_string(), 0.5)]);
        let names: Vec<&str> = c.histories.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["history.val_loss", "log.train_loss", "log.val_acc"]);
        assert_eq!(c.histories[1].1, [2.0, 1.5, 1.0]);
        let acc = &c.histories[2].1;
        assert_eq!((acc[0], acc[2]), (0.0, 0.5));
        assert!(acc[1].is_nan());
    }
}
