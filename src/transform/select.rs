//! `--select`: keeps one subtree of a checkpoint (`model_state_dict` of a training
//! checkpoint), with names relative to it.

use std::collections::BTreeMap;

use super::tree::{metadata_from_tree, rebuild};
use super::{Result, TransformError};
use crate::model::{Checkpoint, Key, Node};

/// A new checkpoint holding only what lies under `path`, a dotted path as tensor names spell
/// it (`model_state_dict`, `optimizer_state_dict.state`, `encoder`). Names are relative to it.
///
/// The path is resolved through the tree: dict keys (which may themselves contain dots, as a
/// flat state dict's do), list and tuple indices. Where no key is the path itself but a flat
/// dict has keys starting with `path.` (selecting `encoder` from a flat state dict whose keys
/// are `encoder.layer.0.weight`, ...), those entries form the subtree, with `path.` removed.
/// Only the storages the kept tensors view are kept. Metadata is the subtree's non-tensor
/// leaves (for pickled checkpoints); a safetensors or sharded `metadata` is kept as it is.
///
/// Errors: an unknown path (the error lists the top-level keys), or a path holding no tensors.
pub fn select(ckpt: &Checkpoint, path: &str) -> Result<Checkpoint> {
    let path = path.trim_matches('.');
    let node = if path.is_empty() {
        Some(ckpt.root.clone())
    } else {
        resolve(&ckpt.root, path)
    };
    let Some(node) = node else {
        return Err(TransformError::UnknownPath {
            path: path.into(),
            keys: top_level_keys(&ckpt.root),
        });
    };
    if !node.has_tensor() {
        return Err(TransformError::NoTensors { path: path.into() });
    }
    let from_tree = metadata_from_tree(ckpt);
    let mut out = Checkpoint {
        format: ckpt.format,
        root: node,
        tensors: ckpt.tensors.clone(),
        storages: ckpt.storages.clone(),
        metadata: ckpt.metadata.clone(),
        globals: ckpt.globals.clone(),
        origin: ckpt.origin,
        files: ckpt.files.clone(),
        module_classes: modules_under(&ckpt.module_classes, path),
        // Module objects are not carried into a selection: writers save tensors only.
        modules: Vec::new(),
        names: Default::default(),
    };
    rebuild(&mut out, from_tree);
    Ok(out)
}

/// The module classes at or under `path`, by their paths relative to it.
fn modules_under(classes: &BTreeMap<String, String>, path: &str) -> BTreeMap<String, String> {
    if path.is_empty() {
        return classes.clone();
    }
    classes
        .iter()
        .filter_map(|(m, class)| {
            let rel = if m == path {
                Some("")
            } else {
                m.strip_prefix(path).and_then(|r| r.strip_prefix('.'))
            };
            rel.map(|r| (r.to_string(), class.clone()))
        })
        .collect()
}

fn resolve(node: &Node, rest: &str) -> Option<Node> {
    match node {
        Node::Dict { ordered, items } => {
            if let Some((_, v)) = items.iter().find(|(k, _)| k.to_string() == rest) {
                return Some(v.clone());
            }
            for (k, v) in items {
                let k = k.to_string();
                if let Some(tail) = rest.strip_prefix(k.as_str()).and_then(|t| t.strip_prefix('.')) {
                    if let Some(found) = resolve(v, tail) {
                        return Some(found);
                    }
                }
            }
            // A virtual subtree of a flat dict: the entries under `rest.`.
            let prefix = format!("{rest}.");
            let sub: Vec<(Key, Node)> = items
                .iter()
                .filter_map(|(k, v)| match k {
                    Key::Str(s) => s
                        .strip_prefix(prefix.as_str())
                        .filter(|t| !t.is_empty())
                        .map(|t| (Key::Str(t.to_string()), v.clone())),
                    Key::Int(_) => None,
                })
                .collect();
            (!sub.is_empty()).then_some(Node::Dict {
                ordered: *ordered,
                items: sub,
            })
        }
        Node::List(items) | Node::Tuple(items) => {
            let (head, tail) = match rest.split_once('.') {
                Some((h, t)) => (h, Some(t)),
                None => (rest, None),
            };
            let item = items.get(head.parse::<usize>().ok()?)?;
            match tail {
                None => Some(item.clone()),
                Some(t) => resolve(item, t),
            }
        }
        _ => None,
    }
}

/// The root's keys, for error messages; for a flat state dict, the distinct first components.
fn top_level_keys(root: &Node) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    match root {
        Node::Dict { items, .. } => {
            for (k, _) in items {
                let k = k.to_string();
                let first = k.split('.').next().unwrap_or(&k).to_string();
                if !keys.contains(&first) {
                    keys.push(first);
                }
            }
        }
        Node::List(items) | Node::Tuple(items) => keys.extend((0..items.len()).map(|i| i.to_string())),
        _ => {}
    }
    const SHOW: usize = 30;
    if keys.len() > SHOW {
        let more = keys.len() - SHOW;
        keys.truncate(SHOW);
        keys.push(format!("… ({more} more)"));
    }
    if keys.is_empty() {
        keys.push("(none: the root is not a container)".into());
    }
    keys
}
