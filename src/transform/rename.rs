//! `--strip-prefix` / `--add-prefix`: the renames that make a `DataParallel` (`module.`) or
//! `torch.compile` (`_orig_mod.`) state dict load into the bare model, and back.
//!
//! How prefixes map onto the structure tree (names are dotted paths through it):
//!
//! * **strip** works on dict keys, at any depth, that lead to tensors. A key that starts with
//!   the prefix loses it (`module.conv1.weight` -> `conv1.weight` in a flat state dict;
//!   in a training checkpoint `{"model": {"module.conv1.weight": ...}}` the inner keys lose
//!   it, so `model.module.conv1.weight` -> `model.conv1.weight`). A key that *is* the prefix
//!   without its dot, holding a dict (`{"module": {"conv1.weight": ...}}`), is replaced by that
//!   dict's entries. Prefixes are stripped repeatedly while one applies, so
//!   `_orig_mod.module.x` loses both. A prefix that strips no tensor is an error (a typo
//!   must not write an unchanged file).
//!   Keys of entries without tensors (metadata) are never touched.
//! * **add** prepends to the full names: every top-level entry holding tensors gets the
//!   prefix on its key (a flat state dict's keys; a training checkpoint's `model_state_dict`
//!   becomes `<prefix>.model_state_dict`). A root that is not a dict is wrapped into one.
//!
//! A prefix given without a trailing `.` gets one: prefixes name modules.
//! A rename that gives two tensors one name (or puts one key twice into a dict) is an error,
//! naming both; the checkpoint is then unchanged.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{json, Value as Json};

use super::pattern::module_hint;
use super::tree::{metadata_from_tree, rebuild};
use super::{Result, TransformError};
use crate::model::{Checkpoint, Key, Node, Tensor};

/// What [`rename`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenameReport {
    /// (old name, new name) of every tensor whose name changed, in checkpoint order.
    pub renamed: Vec<(String, String)>,
    /// Tensors whose name did not change.
    pub unchanged: usize,
    /// For each strip prefix (as normalised, with its dot), how many tensors lost it.
    pub stripped: Vec<(String, usize)>,
    /// The prefix added, as normalised.
    pub added: Option<String>,
}

impl RenameReport {
    pub fn to_json(&self) -> Json {
        json!({
            "renamed": self.renamed.iter().map(|(a, b)| json!({"from": a, "to": b})).collect::<Vec<_>>(),
            "unchanged": self.unchanged,
            "stripped": self.stripped.iter().map(|(p, n)| json!({"prefix": p, "tensors": n})).collect::<Vec<_>>(),
            "added": self.added,
        })
    }
}

fn normalise(prefix: &str) -> Result<String> {
    let p = prefix.trim();
    if p.is_empty() || p.chars().all(|c| c == '.') {
        return Err(TransformError::BadPattern {
            pattern: prefix.into(),
            why: "an empty prefix".into(),
        });
    }
    Ok(if p.ends_with('.') {
        p.to_string()
    } else {
        format!("{p}.")
    })
}

/// Strips each of `strip` where present and adds `add` (see the module docs for how that maps
/// onto nested checkpoints). Errors (nothing changed): an empty prefix, a strip prefix that no
/// tensor has, or two tensors (or dict keys) that would get one name.
pub fn rename(ckpt: &mut Checkpoint, strip: &[String], add: Option<&str>) -> Result<RenameReport> {
    let strip: Vec<String> = strip.iter().map(|p| normalise(p)).collect::<Result<_>>()?;
    let add = match add {
        Some(a) if !a.is_empty() => Some(normalise(a)?),
        _ => None,
    };
    let mut root = ckpt.root.clone();
    let mut counts = vec![0usize; strip.len()];
    if !strip.is_empty() {
        strip_node(&mut root, &strip, &mut counts);
    }
    let missing: Vec<String> = strip
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n == 0)
        .map(|(p, _)| p.clone())
        .collect();
    if !missing.is_empty() {
        return Err(TransformError::NoMatch {
            patterns: missing,
            hint: format!(
                "no tensor name has this prefix; {}",
                module_hint(ckpt.tensors.iter().map(|t| t.name.as_str()))
            ),
        });
    }
    if let Some(a) = &add {
        root = add_prefix(root, a);
    }
    // New names, checked for collisions before anything changes.
    let mut scratch = ckpt.tensors.clone();
    crate::read::flatten::flatten(&root, &mut scratch);
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, t) in scratch.iter().enumerate() {
        if let Some(&j) = by_name.get(t.name.as_str()) {
            return Err(TransformError::Collision {
                a: ckpt.tensors[j].name.clone(),
                b: ckpt.tensors[i].name.clone(),
                name: t.name.clone(),
            });
        }
        by_name.insert(&t.name, i);
    }
    check_keys(&root, &mut String::new())?;
    let old_names: Vec<String> = ckpt.tensors.iter().map(|t| t.name.clone()).collect();
    let from_tree = metadata_from_tree(ckpt);
    ckpt.root = root;
    rebuild(ckpt, from_tree);
    ckpt.module_classes = renamed_modules(&ckpt.module_classes, &old_names, &ckpt.tensors);
    let mut report = RenameReport {
        stripped: strip.into_iter().zip(counts).collect(),
        added: add,
        ..Default::default()
    };
    for (old, t) in old_names.into_iter().zip(&ckpt.tensors) {
        if old == t.name {
            report.unchanged += 1;
        } else {
            report.renamed.push((old, t.name.clone()));
        }
    }
    Ok(report)
}

/// The module classes under the modules' new paths: a module's new path is what its first
/// tensor's new name has in place of the old path (tensors keep their order through a rename).
/// Modules without tensors have nothing to rename by and are left out.
fn renamed_modules(classes: &BTreeMap<String, String>, old: &[String], new: &[Tensor]) -> BTreeMap<String, String> {
    classes
        .iter()
        .filter_map(|(module, class)| {
            old.iter().zip(new).find_map(|(o, n)| {
                let suffix = if module.is_empty() {
                    Some(o.as_str())
                } else {
                    o.strip_prefix(module.as_str())?.strip_prefix('.')
                }?;
                let path = n.name.strip_suffix(suffix)?.trim_end_matches('.');
                Some((path.to_string(), class.clone()))
            })
        })
        .collect()
}

fn count_tensors(node: &Node) -> usize {
    let mut n = 0;
    super::tree::for_each_leaf(node, &mut |_| n += 1);
    n
}

/// Which prefix applies to this entry, if any: the key starts with it (and keeps something),
/// or is it without the dot and holds a dict.
fn applicable(key: &str, value: &Node, strip: &[String]) -> Option<usize> {
    strip.iter().position(|p| {
        (key.len() > p.len() && key.starts_with(p.as_str()))
            || (key.len() + 1 == p.len() && p.starts_with(key) && matches!(value, Node::Dict { .. }))
    })
}

fn strip_node(node: &mut Node, strip: &[String], counts: &mut [usize]) {
    match node {
        Node::Dict { items, .. } => {
            let mut queue: VecDeque<(Key, Node)> = std::mem::take(items).into();
            while let Some((key, mut value)) = queue.pop_front() {
                if !value.has_tensor() {
                    items.push((key, value));
                    continue;
                }
                if let Key::Str(s) = &key {
                    if let Some(k) = applicable(s, &value, strip) {
                        counts[k] += count_tensors(&value);
                        let p = &strip[k];
                        if s.len() + 1 == p.len() {
                            // The key is the module: its entries take its place.
                            if let Node::Dict { items: children, .. } = value {
                                for child in children.into_iter().rev() {
                                    queue.push_front(child);
                                }
                            }
                        } else {
                            queue.push_front((Key::Str(s[p.len()..].to_string()), value));
                        }
                        continue;
                    }
                }
                strip_node(&mut value, strip, counts);
                items.push((key, value));
            }
        }
        Node::List(items) | Node::Tuple(items) => items.iter_mut().for_each(|n| strip_node(n, strip, counts)),
        _ => {}
    }
}

fn add_prefix(root: Node, prefix: &str) -> Node {
    match root {
        Node::Dict { ordered, items } => Node::Dict {
            ordered,
            items: items
                .into_iter()
                .map(|(k, v)| {
                    if v.has_tensor() {
                        (Key::Str(format!("{prefix}{k}")), v)
                    } else {
                        (k, v)
                    }
                })
                .collect(),
        },
        other => Node::Dict {
            ordered: true,
            items: vec![(Key::Str(prefix.trim_end_matches('.').to_string()), other)],
        },
    }
}

/// Fails if any dict holds one key twice.
fn check_keys(node: &Node, path: &mut String) -> Result<()> {
    match node {
        Node::Dict { items, .. } => {
            let mut seen: HashMap<String, ()> = HashMap::new();
            for (k, v) in items {
                let key = k.to_string();
                if seen.insert(key.clone(), ()).is_some() {
                    let place = if path.is_empty() {
                        "the top-level dict".to_string()
                    } else {
                        format!("'{path}'")
                    };
                    return Err(TransformError::KeyCollision { key, place });
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                check_keys(v, path)?;
                path.truncate(len);
            }
        }
        Node::List(items) | Node::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&i.to_string());
                check_keys(v, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}
