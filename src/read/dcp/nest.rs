//! The nested state dict a distributed checkpoint was saved from, rebuilt from the default
//! planner's `planner_data` as `dcp_to_torch_save` rebuilds it: `{"model": {"0.weight": ...},
//! "optim": {"state": ..., "param_groups": [{...}]}, "epoch": 3}`, not a flat dict of fully
//! qualified names, so a .pth written from it loads as torch's consolidation does.

use std::collections::HashMap;

use crate::model::{Key, Node};

use super::metadata::{DcpMetadata, PathKey};

/// A place of the state dict while it is rebuilt.
enum Slot {
    Leaf(Node),
    /// Keys in first-insertion order, with an index for lookups.
    Dict(Vec<(String, Slot)>, HashMap<String, usize>),
    /// torch's `set_element` pads a list with None up to an index it sets.
    List(Vec<Option<Slot>>),
}

/// The items (one per fully qualified name, in `.metadata`'s order) nested by their planner
/// paths; the flat dict of fully qualified names where the file has no paths for them all or
/// they do not form one tree (a path through a leaf, a place set twice, an index past the
/// number of items).
pub fn nest(meta: &DcpMetadata, items: Vec<(Key, Node)>) -> Node {
    let flat = |items| Node::Dict { ordered: true, items };
    if meta.paths.is_empty() {
        return flat(items);
    }
    let mut root = Slot::Dict(Vec::new(), HashMap::new());
    let limit = items.len() as u64;
    for (key, node) in &items {
        let Key::Str(fqn) = key else { return flat(items) };
        let Some(path) = meta.paths.get(fqn) else { return flat(items) };
        if !place(&mut root, path, node.clone(), limit) {
            return flat(items);
        }
    }
    into_node(root)
}

/// Sets `path` under `slot` to `leaf`, making the dicts and lists on the way; false where the
/// path does not fit the tree built so far.
fn place(slot: &mut Slot, path: &[PathKey], leaf: Node, limit: u64) -> bool {
    let Some((first, rest)) = path.split_first() else { return false };
    let fresh = || match rest.first() {
        None => Slot::Leaf(Node::None), // replaced below
        Some(PathKey::Str(_)) => Slot::Dict(Vec::new(), HashMap::new()),
        Some(PathKey::Index(_)) => Slot::List(Vec::new()),
    };
    let child = match (slot, first) {
        (Slot::Dict(entries, index), PathKey::Str(k)) => {
            if let Some(&i) = index.get(k) {
                if rest.is_empty() {
                    return false; // set twice
                }
                &mut entries[i].1
            } else {
                index.insert(k.clone(), entries.len());
                entries.push((k.clone(), fresh()));
                &mut entries.last_mut().expect("just pushed").1
            }
        }
        (Slot::List(items), PathKey::Index(i)) if *i < limit => {
            let i = *i as usize;
            if items.len() <= i {
                items.resize_with(i + 1, || None);
            }
            match &mut items[i] {
                Some(_) if rest.is_empty() => return false,
                Some(child) => child,
                none => none.insert(fresh()),
            }
        }
        _ => return false,
    };
    if rest.is_empty() {
        *child = Slot::Leaf(leaf);
        return true;
    }
    !matches!(child, Slot::Leaf(_)) && place(child, rest, leaf, limit)
}

fn into_node(slot: Slot) -> Node {
    match slot {
        Slot::Leaf(node) => node,
        Slot::Dict(entries, _) => Node::Dict {
            ordered: false,
            items: entries.into_iter().map(|(k, v)| (Key::Str(k), into_node(v))).collect(),
        },
        Slot::List(items) => Node::List(items.into_iter().map(|s| s.map_or(Node::None, into_node)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(paths: &[(&str, Vec<PathKey>)]) -> DcpMetadata {
        DcpMetadata {
            entries: Vec::new(),
            storage: HashMap::new(),
            paths: paths.iter().map(|(k, p)| (k.to_string(), p.clone())).collect(),
        }
    }

    fn s(k: &str) -> PathKey {
        PathKey::Str(k.into())
    }

    fn items(names: &[&str]) -> Vec<(Key, Node)> {
        names.iter().enumerate().map(|(i, n)| (Key::Str(n.to_string()), Node::Int(i as i64))).collect()
    }

    #[test]
    fn paths_nest_dicts_and_lists() {
        let m = meta(&[
            ("model.w", vec![s("model"), s("w")]),
            ("optim.param_groups.1.lr", vec![s("optim"), s("param_groups"), PathKey::Index(1), s("lr")]),
            ("epoch", vec![s("epoch")]),
        ]);
        let root = nest(&m, items(&["model.w", "optim.param_groups.1.lr", "epoch"]));
        let Node::Dict { items, .. } = &root else { panic!("a dict") };
        let keys: Vec<String> = items.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(keys, ["model", "optim", "epoch"]);
        let Node::Dict { items: optim, .. } = &items[1].1 else { panic!("optim is a dict") };
        let Node::List(groups) = &optim[0].1 else { panic!("param_groups is a list") };
        assert!(matches!(groups[0], Node::None), "padded with None as torch pads it");
        assert!(matches!(&groups[1], Node::Dict { items, .. } if items.len() == 1));
    }

    #[test]
    fn paths_that_do_not_form_one_tree_keep_the_flat_dict() {
        let flat = |root: &Node| matches!(root, Node::Dict { ordered: true, .. });
        // A path through a leaf.
        let m = meta(&[("a", vec![s("a")]), ("a.b", vec![s("a"), s("b")])]);
        assert!(flat(&nest(&m, items(&["a", "a.b"]))));
        // One place set twice.
        let m = meta(&[("x", vec![s("a")]), ("y", vec![s("a")])]);
        assert!(flat(&nest(&m, items(&["x", "y"]))));
        // An index past the number of items (a hostile file's huge list).
        let m = meta(&[("l", vec![s("l"), PathKey::Index(1 << 40)])]);
        assert!(flat(&nest(&m, items(&["l"]))));
        // An item without a path.
        let m = meta(&[("a", vec![s("a")])]);
        assert!(flat(&nest(&m, items(&["a", "b"]))));
    }
}
