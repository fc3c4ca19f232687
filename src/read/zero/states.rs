//! What ckpt needs from DeepSpeed's per-rank `torch.save` files, read as ordinary checkpoints
//! (nothing executed). A model-states file holds `module` (the state dict; under ZeRO-3 its
//! parameters are empty placeholders), `buffer_names`, `param_shapes` (per parameter group, an
//! ordered dict of name -> torch.Size), `shared_params` (tied name -> name it is the same
//! tensor as) and optionally `frozen_param_shapes`. An optimizer-states file holds
//! `optimizer_state_dict` with `partition_count` (an int, or one per group under ZeRO-2),
//! `param_alignment_paddings` (ZeRO-2, DeepSpeed 0.18 on) and the rank's fp32 master weights:
//! per group one flat 1-D tensor, `single_partition_of_fp32_groups` (ZeRO-1/2) or
//! `fp32_flat_groups` (ZeRO-3).

use std::path::Path;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{ByteOrder, Checkpoint, DataRef, Key, Node, TensorIdx};

/// How the fp32 master weights are partitioned, told by the key the partitions are saved under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// ZeRO-1 and ZeRO-2: each group's flat vector split into consecutive ranges, one per rank.
    Two,
    /// ZeRO-3: every parameter split into equal ranges, one per rank.
    Three,
}

/// A rank's optimizer-states file, as far as consolidation goes.
pub struct OptimStates {
    pub stage: Stage,
    /// The data-parallel world size the file was saved with.
    pub partition_count: u64,
    /// Per group, per parameter, the elements of padding after it (ZeRO-2 only).
    pub alignment_paddings: Option<Vec<Vec<u64>>>,
    /// Per group, the rank's flat fp32 partition.
    pub partitions: Vec<DataRef>,
}

/// A model-states file: names, shapes, buffers and frozen parameters.
pub struct ModelStates {
    /// Per group, (name, shape) in order.
    pub param_shapes: Vec<Vec<(String, Vec<u64>)>>,
    /// Buffers in the state dict's order: (name, tensor of the file's checkpoint).
    pub buffers: Vec<(String, TensorIdx)>,
    /// (tied name, the name it is the same tensor as), in order.
    pub shared: Vec<(String, String)>,
    /// Frozen (requires_grad=False) parameters, kept out of the partitions: (name, shape).
    pub frozen: Vec<(String, Vec<u64>)>,
    /// This file's piece of each frozen parameter: all of it under ZeRO-2, under ZeRO-3 the
    /// rank's `ceil(numel / ranks)` elements.
    pub fragments: Vec<(String, TensorIdx)>,
}

/// A dict's value by string key (the last one, as Python keeps).
fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    match node {
        Node::Dict { items, .. } => items
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Key::Str(s) if s == key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn dict_items(node: &Node) -> Option<&[(Key, Node)]> {
    match node {
        Node::Dict { items, .. } => Some(items),
        _ => None,
    }
}

fn list(node: &Node) -> Option<&[Node]> {
    match node {
        Node::List(items) | Node::Tuple(items) => Some(items),
        _ => None,
    }
}

fn uint(node: &Node) -> Option<u64> {
    match node {
        Node::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn key_str(key: &Key) -> Option<&str> {
    match key {
        Key::Str(s) => Some(s),
        Key::Int(_) => None,
    }
}

/// Errors about one of DeepSpeed's files.
struct Place<'a>(&'a Path);

impl Place<'_> {
    fn bad(&self, place: &str, what: impl Into<String>) -> Error {
        Error::malformed(self.0, place, what)
    }
}

pub fn optim_states(path: &Path, ckpt: &Checkpoint) -> Result<OptimStates> {
    let at = Place(path);
    let osd = get(&ckpt.root, "optimizer_state_dict")
        .ok_or_else(|| at.bad("optimizer_state_dict", "missing: not a DeepSpeed ZeRO optimizer-states file"))?;
    let stage = match (get(osd, "single_partition_of_fp32_groups"), get(osd, "fp32_flat_groups")) {
        (Some(groups), None) => (Stage::Two, groups),
        (None, Some(groups)) => (Stage::Three, groups),
        (Some(_), Some(_)) => {
            return Err(at.bad(
                "optimizer_state_dict",
                "holds both single_partition_of_fp32_groups (ZeRO-2) and fp32_flat_groups (ZeRO-3)",
            ))
        }
        (None, None) => {
            return Err(at.bad(
                "optimizer_state_dict",
                "neither single_partition_of_fp32_groups (ZeRO-1/2) nor fp32_flat_groups (ZeRO-3): not a ZeRO checkpoint",
            ))
        }
    };
    let (stage, groups) = stage;
    let key = match stage {
        Stage::Two => "optimizer_state_dict.single_partition_of_fp32_groups",
        Stage::Three => "optimizer_state_dict.fp32_flat_groups",
    };
    let groups = list(groups).ok_or_else(|| at.bad(key, "not a list"))?;
    let partitions = groups
        .iter()
        .enumerate()
        .map(|(g, node)| match node {
            Node::Tensor(idx) => flat_partition(ckpt, *idx).map_err(|why| at.bad(&format!("{key}.{g}"), why)),
            _ => Err(at.bad(&format!("{key}.{g}"), "not a tensor")),
        })
        .collect::<Result<Vec<_>>>()?;
    let count_key = "optimizer_state_dict.partition_count";
    let counts = get(osd, "partition_count").ok_or_else(|| at.bad(count_key, "missing"))?;
    // ZeRO-2 saves one count per group (expert groups may differ); zero_to_fp32 takes the largest.
    let partition_count = match counts {
        Node::List(items) | Node::Tuple(items) => items.iter().map(uint).try_fold(0u64, |m, c| c.map(|c| m.max(c))),
        n => uint(n),
    }
    .filter(|&c| c > 0)
    .ok_or_else(|| at.bad(count_key, "not a positive integer or a list of them"))?;
    let pad_key = "optimizer_state_dict.param_alignment_paddings";
    let alignment_paddings = match get(osd, "param_alignment_paddings") {
        None | Some(Node::None) => None,
        Some(node) => Some(
            list(node)
                .and_then(|groups| {
                    groups
                        .iter()
                        .map(|g| list(g).and_then(|p| p.iter().map(uint).collect::<Option<Vec<_>>>()))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| at.bad(pad_key, "not a list of lists of non-negative integers"))?,
        ),
    };
    Ok(OptimStates {
        stage,
        partition_count,
        alignment_paddings,
        partitions,
    })
}

/// The bytes of a flat fp32 partition: a 1-D contiguous little-endian float32 tensor.
fn flat_partition(ckpt: &Checkpoint, idx: TensorIdx) -> std::result::Result<DataRef, String> {
    let t = &ckpt.tensors[idx];
    if t.dtype != DType::F32 || t.shape.len() != 1 {
        return Err(format!(
            "a {} tensor of shape {:?}; ZeRO saves flat float32 partitions",
            t.dtype, t.shape
        ));
    }
    tensor_bytes(ckpt, idx)
}

/// The bytes of a contiguous little-endian tensor, where they lie in its file.
pub fn tensor_bytes(ckpt: &Checkpoint, idx: TensorIdx) -> std::result::Result<DataRef, String> {
    let t = &ckpt.tensors[idx];
    if !t.is_contiguous() {
        return Err(format!(
            "a strided view (stride {:?}); DeepSpeed saves contiguous tensors",
            t.stride
        ));
    }
    let storage = &ckpt.storages[t.storage.0];
    if storage.byte_order != ByteOrder::Little {
        return Err("a big-endian tensor".into());
    }
    let esize = t.dtype.size() as u64;
    let start = t.offset.checked_mul(esize);
    match start.and_then(|s| s.checked_add(t.nbytes())) {
        Some(end) if end <= storage.data.len => Ok(DataRef {
            source: storage.data.source.clone(),
            offset: storage.data.offset + t.offset * esize,
            len: t.nbytes(),
        }),
        _ => Err(format!(
            "its {} elements reach past its {}-byte storage",
            t.numel(),
            storage.data.len
        )),
    }
}

pub fn model_states(path: &Path, ckpt: &Checkpoint) -> Result<ModelStates> {
    let at = Place(path);
    let root = &ckpt.root;
    let names = get(root, "buffer_names")
        .ok_or_else(|| at.bad("buffer_names", "missing: not a DeepSpeed model-states file"))?;
    let names: Vec<&str> = list(names)
        .and_then(|n| {
            n.iter()
                .map(|s| match s {
                    Node::Str(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect()
        })
        .ok_or_else(|| at.bad("buffer_names", "not a list of strings"))?;
    let module = get(root, "module")
        .and_then(dict_items)
        .ok_or_else(|| at.bad("module", "missing or not a dict"))?;
    let mut buffers = Vec::new();
    for (key, value) in module {
        let Some(name) = key_str(key).filter(|k| names.contains(k)) else {
            continue;
        };
        match value {
            Node::Tensor(idx) => buffers.push((name.to_string(), *idx)),
            _ => return Err(at.bad(&format!("module.{name}"), "a buffer that is not a tensor")),
        }
    }
    let groups = get(root, "param_shapes")
        .and_then(list)
        .ok_or_else(|| at.bad("param_shapes", "missing or not a list"))?;
    let param_shapes = groups
        .iter()
        .enumerate()
        .map(|(g, group)| shapes(&at, &format!("param_shapes.{g}"), group))
        .collect::<Result<Vec<_>>>()?;
    let frozen = match get(root, "frozen_param_shapes") {
        None | Some(Node::None) => Vec::new(),
        Some(node) => shapes(&at, "frozen_param_shapes", node)?,
    };
    let fragments = match get(root, "frozen_param_fragments") {
        None | Some(Node::None) => Vec::new(),
        Some(node) => dict_items(node)
            .and_then(|items| {
                items
                    .iter()
                    .map(|(k, v)| match (key_str(k), v) {
                        (Some(k), Node::Tensor(idx)) => Some((k.to_string(), *idx)),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| at.bad("frozen_param_fragments", "not a dict of tensors"))?,
    };
    let shared = match get(root, "shared_params") {
        None => Vec::new(),
        Some(node) => dict_items(node)
            .and_then(|items| {
                items
                    .iter()
                    .map(|(k, v)| match (key_str(k), v) {
                        (Some(k), Node::Str(v)) => Some((k.to_string(), v.clone())),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| at.bad("shared_params", "not a dict of names"))?,
    };
    Ok(ModelStates {
        param_shapes,
        buffers,
        shared,
        frozen,
        fragments,
    })
}

/// An ordered dict of name -> torch.Size.
fn shapes(at: &Place, place: &str, node: &Node) -> Result<Vec<(String, Vec<u64>)>> {
    let items = dict_items(node).ok_or_else(|| at.bad(place, "not a dict"))?;
    items
        .iter()
        .map(|(k, v)| {
            let name = key_str(k).ok_or_else(|| at.bad(place, format!("key {k} is not a string")))?;
            let shape = list(v)
                .and_then(|d| d.iter().map(uint).collect::<Option<Vec<_>>>())
                .ok_or_else(|| at.bad(&format!("{place}.{name}"), "not a torch.Size"))?;
            Ok((name.to_string(), shape))
        })
        .collect()
}

