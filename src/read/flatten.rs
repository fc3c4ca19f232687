//! Names tensors and collects metadata from the structure tree, the way users address a
//! checkpoint: dict keys joined with ".", list and tuple indices as numbers.
//!
//! Dicts are always walked into. A list or tuple is walked into only when a tensor lies inside
//! it; otherwise it is one metadata value (a loss history stays one array, not 100 entries).

use serde_json::{Map, Value as Json};

use crate::model::{Node, Tensor, TensorIdx};

/// Sets every tensor's name from its place in `root` and returns the non-tensor leaves.
pub fn flatten(root: &Node, tensors: &mut [Tensor]) -> Map<String, Json> {
    let mut metadata = Map::new();
    walk(root, &mut String::new(), tensors, &mut metadata);
    metadata
}

fn walk(node: &Node, path: &mut String, tensors: &mut [Tensor], metadata: &mut Map<String, Json>) {
    let mut child = |key: &dyn std::fmt::Display, value: &Node, path: &mut String, tensors: &mut [Tensor]| {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&key.to_string());
        walk(value, path, tensors, metadata);
        path.truncate(len);
    };
    match node {
        Node::Tensor(idx) => {
            if let Some(t) = tensors.get_mut(*idx) {
                t.name = path.clone();
            }
        }
        Node::Dict { items, .. } => {
            for (k, v) in items {
                child(k, v, path, tensors);
            }
        }
        Node::List(items) | Node::Tuple(items) if node.has_tensor() => {
            for (i, v) in items.iter().enumerate() {
                child(&i, v, path, tensors);
            }
        }
        leaf => {
            metadata.insert(path.clone(), to_json(leaf));
        }
    }
}

/// Adds what ckpt knows of how a tensor was saved beyond its data (a DTensor's placements and
/// mesh) as metadata under the tensor's own name: metadata holds only non-tensor leaves, so the
/// name is free, and the note sits beside the tensor it describes.
pub fn add_notes(metadata: &mut Map<String, Json>, tensors: &[Tensor], notes: &[(TensorIdx, String)]) {
    for (idx, note) in notes {
        if let Some(t) = tensors.get(*idx) {
            metadata.insert(t.name.clone(), Json::String(note.clone()));
        }
    }
}

/// A non-tensor node as JSON. Floats JSON cannot hold (NaN, inf) become strings.
pub fn to_json(node: &Node) -> Json {
    match node {
        Node::None => Json::Null,
        Node::Bool(b) => Json::Bool(*b),
        Node::Int(i) => Json::from(*i),
        Node::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .unwrap_or_else(|| Json::String(f.to_string())),
        Node::Str(s) => Json::String(s.clone()),
        Node::Bytes(b) => Json::String(format!("<{} bytes>", b.len())),
        Node::List(items) | Node::Tuple(items) => Json::Array(items.iter().map(to_json).collect()),
        Node::Dict { items, .. } => Json::Object(items.iter().map(|(k, v)| (k.to_string(), to_json(v))).collect()),
        Node::Tensor(_) => Json::String("<tensor>".into()),
        Node::Opaque(s) => Json::String(s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::model::{Key, StorageId};

    fn tensor() -> Tensor {
        Tensor {
            name: String::new(),
            dtype: DType::F32,
            shape: vec![1],
            stride: vec![1],
            offset: 0,
            storage: StorageId(0),
            requires_grad: false,
            parameter: false,
        }
    }

    #[test]
    fn names_join_keys_and_indices_and_keep_tensorless_lists_whole() {
        let root = Node::Dict {
            ordered: false,
            items: vec![
                (Key::Str("epoch".into()), Node::Int(3)),
                (
                    Key::Str("opt".into()),
                    Node::Dict {
                        ordered: false,
                        items: vec![(Key::Int(0), Node::List(vec![Node::Tensor(0), Node::Float(0.5)]))],
                    },
                ),
                (
                    Key::Str("hist".into()),
                    Node::List(vec![Node::Float(1.0), Node::Float(2.0)]),
                ),
            ],
        };
        let mut tensors = vec![tensor()];
        let meta = flatten(&root, &mut tensors);
        assert_eq!(tensors[0].name, "opt.0.0");
        assert_eq!(meta.get("epoch"), Some(&Json::from(3)));
        assert_eq!(meta.get("opt.0.1"), Some(&Json::from(0.5)));
        assert_eq!(meta.get("hist"), Some(&serde_json::json!([1.0, 2.0])));
    }
}
