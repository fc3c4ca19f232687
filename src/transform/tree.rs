//! Keeping a checkpoint consistent after its tree changed: re-indexing tensors, dropping
//! orphan storages, renaming tensors from their new paths.

use std::collections::{BTreeMap, HashSet};

use crate::model::{Checkpoint, Node, StorageId, Tensor, TensorIdx};
use crate::read::flatten;

/// Calls `f` on every tensor leaf's index, in tree order.
pub(crate) fn for_each_leaf(node: &Node, f: &mut impl FnMut(TensorIdx)) {
    match node {
        Node::Tensor(i) => f(*i),
        Node::List(items) | Node::Tuple(items) => items.iter().for_each(|n| for_each_leaf(n, f)),
        Node::Dict { items, .. } => items.iter().for_each(|(_, n)| for_each_leaf(n, f)),
        _ => {}
    }
}

fn map_leaves(node: &mut Node, f: &impl Fn(TensorIdx) -> TensorIdx) {
    match node {
        Node::Tensor(i) => *i = f(*i),
        Node::List(items) | Node::Tuple(items) => items.iter_mut().for_each(|n| map_leaves(n, f)),
        Node::Dict { items, .. } => items.iter_mut().for_each(|(_, n)| map_leaves(n, f)),
        _ => {}
    }
}

/// Whether `ckpt.metadata` is what the tree's non-tensor leaves give (pickled checkpoints), as
/// opposed to metadata of the container (safetensors `__metadata__`, a sharded index's).
pub(crate) fn metadata_from_tree(ckpt: &Checkpoint) -> bool {
    let mut scratch = ckpt.tensors.clone();
    flatten::flatten(&ckpt.root, &mut scratch) == ckpt.metadata
}

/// After the tree changed: keeps the tensors the tree references (in their old order, each
/// leaf pointing at its own tensor), drops storages no tensor views, and names tensors (and,
/// where `metadata_from_tree`, the metadata) from their paths.
pub(crate) fn rebuild(ckpt: &mut Checkpoint, metadata_from_tree: bool) {
    compact(ckpt);
    prune_storages(ckpt);
    let metadata = flatten::flatten(&ckpt.root, &mut ckpt.tensors);
    if metadata_from_tree {
        ckpt.metadata = metadata;
    }
}

/// Keeps only the tensors the tree references, in their old relative order, and points the
/// leaves at their new indices. A tensor referenced by two leaves (never made by the readers)
/// is duplicated so that every leaf has its own.
fn compact(ckpt: &mut Checkpoint) {
    let mut seen = HashSet::new();
    let mut dup_leaf = false;
    for_each_leaf(&ckpt.root, &mut |i| {
        if !seen.insert(i) {
            dup_leaf = true;
        }
    });
    if dup_leaf {
        split_shared_leaves(ckpt);
        seen.clear();
        for_each_leaf(&ckpt.root, &mut |i| {
            seen.insert(i);
        });
    }
    if seen.len() == ckpt.tensors.len() && seen.iter().all(|&i| i < ckpt.tensors.len()) {
        return;
    }
    let mut new_index = vec![usize::MAX; ckpt.tensors.len()];
    let old = std::mem::take(&mut ckpt.tensors);
    for (i, t) in old.into_iter().enumerate() {
        if seen.contains(&i) {
            new_index[i] = ckpt.tensors.len();
            ckpt.tensors.push(t);
        }
    }
    map_leaves(&mut ckpt.root, &|i| new_index.get(i).copied().unwrap_or(usize::MAX));
}

fn split_shared_leaves(ckpt: &mut Checkpoint) {
    fn walk(node: &mut Node, seen: &mut HashSet<TensorIdx>, tensors: &mut Vec<Tensor>) {
        match node {
            Node::Tensor(i) if !seen.insert(*i) => {
                if let Some(t) = tensors.get(*i).cloned() {
                    tensors.push(t);
                    *i = tensors.len() - 1;
                    seen.insert(*i);
                }
            }
            Node::List(items) | Node::Tuple(items) => items.iter_mut().for_each(|n| walk(n, seen, tensors)),
            Node::Dict { items, .. } => items.iter_mut().for_each(|(_, n)| walk(n, seen, tensors)),
            _ => {}
        }
    }
    let mut seen = HashSet::new();
    walk(&mut ckpt.root, &mut seen, &mut ckpt.tensors);
}

/// Removes the storages no tensor views and renumbers the rest (keeping their order).
/// Returns how many were removed.
pub fn prune_storages(ckpt: &mut Checkpoint) -> usize {
    let used: HashSet<StorageId> = ckpt.tensors.iter().map(|t| t.storage).collect();
    if used.len() == ckpt.storages.len() {
        return 0;
    }
    let mut remap: BTreeMap<usize, usize> = BTreeMap::new();
    let old = std::mem::take(&mut ckpt.storages);
    let before = old.len();
    for (i, s) in old.into_iter().enumerate() {
        if used.contains(&StorageId(i)) {
            remap.insert(i, ckpt.storages.len());
            ckpt.storages.push(s);
        }
    }
    for t in &mut ckpt.tensors {
        t.storage = StorageId(remap[&t.storage.0]);
    }
    before - ckpt.storages.len()
}

/// Removes the leaves of the given tensors from the tree: a dict entry goes, a list or tuple
/// element becomes `None` (so its siblings keep their indices, and names), and a dict emptied
/// by the removal goes too. Then [`rebuild`]s.
pub(crate) fn remove_tensors(ckpt: &mut Checkpoint, remove: &HashSet<TensorIdx>) {
    fn walk(node: &mut Node, remove: &HashSet<TensorIdx>) {
        match node {
            Node::Dict { items, .. } => {
                items.retain_mut(|(_, v)| {
                    if let Node::Tensor(i) = v {
                        return !remove.contains(i);
                    }
                    let was_full = matches!(v, Node::Dict { items, .. } if !items.is_empty());
                    walk(v, remove);
                    !(was_full && matches!(v, Node::Dict { items, .. } if items.is_empty()))
                });
            }
            Node::List(items) | Node::Tuple(items) => {
                for v in items.iter_mut() {
                    match v {
                        Node::Tensor(i) if remove.contains(i) => *v = Node::None,
                        _ => walk(v, remove),
                    }
                }
            }
            _ => {}
        }
    }
    let from_tree = metadata_from_tree(ckpt);
    if let Node::Tensor(i) = ckpt.root {
        if remove.contains(&i) {
            ckpt.root = Node::None;
        }
    }
    walk(&mut ckpt.root, remove);
    rebuild(ckpt, from_tree);
}
