//! The `.metadata` pickle of a distributed checkpoint, read from the pickle machine's record of
//! it (nothing is executed): a `torch.distributed.checkpoint.metadata.Metadata` whose state
//! holds `state_dict_metadata` (per fully qualified name a `TensorStorageMetadata` with dtype,
//! global size and chunks, or a `BytesStorageMetadata`) and `storage_data` (per
//! `MetadataIndex(fqn, offset)` a `_StorageInfo(relative_path, offset, length)`).
//!
//! As torch 2.11 and 2.15 write it: protocol 4; dataclasses as NEWOBJ + BUILD of their
//! `__dict__`; `TensorProperties` as NEWOBJ + BUILD of a tuple whose first item is the dtype
//! global (`torch float32`); sizes and offsets as `torch.Size((...))`.

use std::collections::HashMap;

use crate::dtype::DType;
use crate::pickle::{Global, Heap, Obj, Pickle, Value};

/// The package whose classes `.metadata` instantiates (`metadata`, `filesystem`).
const DCP_MODULES: &str = "torch.distributed.checkpoint";

/// What the `.metadata` says.
#[derive(Debug)]
pub struct DcpMetadata {
    /// In the file's order.
    pub entries: Vec<Entry>,
    /// Where each chunk (fqn, offsets; bytes entries have no offsets) is stored.
    pub storage: HashMap<(String, Option<Vec<u64>>), StorageInfo>,
    /// The default planner's `planner_data`: per fully qualified name, the keys of its place in
    /// the nested state dict that was saved (`optim.param_groups.0.lr` ->
    /// `optim`, `param_groups`, 0, `lr`). Empty where the file has none (another planner).
    pub paths: HashMap<String, Vec<PathKey>>,
}

/// One key of a [`DcpMetadata::paths`] path: a dict key, or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathKey {
    Str(String),
    Index(u64),
}

/// One fully qualified name of the saved state dict.
#[derive(Debug)]
pub struct Entry {
    pub fqn: String,
    pub kind: EntryKind,
}

#[derive(Debug)]
pub enum EntryKind {
    /// A tensor, saved as chunks that tile its global size.
    Tensor {
        dtype: DType,
        size: Vec<u64>,
        chunks: Vec<Chunk>,
    },
    /// Anything else, saved as bytes (a torch.save of the object, or a BytesIO's own bytes).
    Bytes,
}

/// A box of the global tensor: `offsets .. offsets + sizes`.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub offsets: Vec<u64>,
    pub sizes: Vec<u64>,
}

/// A byte range of one data file.
#[derive(Debug, Clone)]
pub struct StorageInfo {
    pub relative_path: String,
    pub offset: u64,
    pub length: u64,
    /// Transforms (compression...) applied to the bytes, by their descriptors.
    pub transforms: Vec<String>,
}

/// Whether DCP's `.metadata` may name this global: its own classes, torch.Size, dtypes,
/// layouts (`torch.serialization._get_layout`), an OrderedDict, and the path class of
/// `storage_meta.checkpoint_id`. Anything else is refused.
pub fn is_expected_global(g: &Global) -> bool {
    match (g.module.as_str(), g.name.as_str()) {
        (m, _) if m.starts_with(DCP_MODULES) => true,
        ("torch", name) => matches!(name, "Size" | "strided" | "sparse_coo" | "contiguous_format" | "channels_last" | "preserve_format") || DType::parse(name).is_some(),
        ("torch.serialization", "_get_layout") | ("collections", "OrderedDict") => true,
        ("pathlib", name) => matches!(name, "Path" | "PosixPath" | "WindowsPath"),
        _ => false,
    }
}

/// Interprets the parsed pickle. Errors say what is not as DCP writes it, and where.
pub fn parse(pickle: &Pickle) -> Result<DcpMetadata, String> {
    let heap = &pickle.heap;
    if let Some(u) = pickle.globals.iter().find(|u| !is_expected_global(&u.global)) {
        return Err(format!(
            "global {} (byte {}) is not one torch.distributed.checkpoint writes",
            u.global.dotted(),
            u.offset
        ));
    }
    let root = state_of(heap, &pickle.root, "Metadata").ok_or("the pickle is not a torch.distributed.checkpoint Metadata")?;
    let sdm = field(heap, root, "state_dict_metadata").ok_or("Metadata without state_dict_metadata")?;
    let mut entries = Vec::new();
    for (k, v) in dict(heap, sdm).ok_or("state_dict_metadata is not a dict")? {
        let fqn = string(k).ok_or("a state_dict_metadata key is not a string")?;
        let kind = entry_kind(heap, v).map_err(|why| format!("state_dict_metadata['{fqn}']: {why}"))?;
        entries.push(Entry { fqn, kind });
    }
    let sd = field(heap, root, "storage_data").ok_or("Metadata without storage_data")?;
    let mut storage = HashMap::new();
    for (k, v) in dict(heap, sd).ok_or("storage_data is not a dict")? {
        let index = state_of(heap, k, "MetadataIndex").ok_or("a storage_data key is not a MetadataIndex")?;
        let fqn = field(heap, index, "fqn")
            .and_then(string)
            .ok_or("a MetadataIndex without a string fqn")?;
        let offset = match field(heap, index, "offset") {
            None | Some(Value::None) => None,
            Some(o) => Some(size(heap, o).ok_or_else(|| format!("MetadataIndex of '{fqn}': offset is not a torch.Size"))?),
        };
        let info = storage_info(heap, v).map_err(|why| format!("storage_data of '{fqn}': {why}"))?;
        // Later keys win, as they do in the dict Python builds.
        storage.insert((fqn, offset), info);
    }
    let paths = field(heap, root, "planner_data").map_or_else(|| Ok(HashMap::new()), |p| planner_paths(heap, p))?;
    Ok(DcpMetadata { entries, storage, paths })
}

/// `planner_data` as the default planner writes it: a dict of fqn -> tuple of str and int keys.
/// Anything else (None, another planner's data) gives no paths.
fn planner_paths(heap: &Heap, v: &Value) -> Result<HashMap<String, Vec<PathKey>>, String> {
    let Some(items) = dict(heap, v) else {
        return Ok(HashMap::new());
    };
    let mut paths = HashMap::with_capacity(items.len());
    for (k, v) in items {
        let (Some(fqn), Some(keys)) = (string(k), sequence(heap, v)) else {
            return Ok(HashMap::new());
        };
        let mut path = Vec::with_capacity(keys.len());
        for key in keys {
            path.push(match key {
                Value::Str(s) => PathKey::Str(s.to_string()),
                Value::Int(i) if *i >= 0 => PathKey::Index(*i as u64),
                _ => return Err(format!("planner_data['{fqn}']: a key that is neither a string nor an index")),
            });
        }
        paths.insert(fqn, path);
    }
    Ok(paths)
}

fn entry_kind(heap: &Heap, v: &Value) -> Result<EntryKind, String> {
    if class_of(heap, v) == Some("BytesStorageMetadata") {
        return Ok(EntryKind::Bytes);
    }
    let state = state_of(heap, v, "TensorStorageMetadata").ok_or("neither TensorStorageMetadata nor BytesStorageMetadata")?;
    let props = field(heap, state, "properties").ok_or("no properties")?;
    let dtype = dtype_of(heap, props)?;
    let global_size = field(heap, state, "size")
        .and_then(|s| size(heap, s))
        .ok_or("size is not a torch.Size")?;
    let mut chunks = Vec::new();
    let list = field(heap, state, "chunks")
        .and_then(|c| sequence(heap, c))
        .ok_or("chunks is not a list")?;
    for (i, c) in list.iter().enumerate() {
        let st = state_of(heap, c, "ChunkStorageMetadata").ok_or_else(|| format!("chunk {i} is not a ChunkStorageMetadata"))?;
        let offsets = field(heap, st, "offsets").and_then(|s| size(heap, s));
        let sizes = field(heap, st, "sizes").and_then(|s| size(heap, s));
        let (Some(offsets), Some(sizes)) = (offsets, sizes) else {
            return Err(format!("chunk {i}: offsets and sizes are not torch.Size"));
        };
        chunks.push(Chunk { offsets, sizes });
    }
    Ok(EntryKind::Tensor {
        dtype,
        size: global_size,
        chunks,
    })
}

/// The dtype of a TensorProperties: the first item of its state tuple (torch 2.11, 2.15), or
/// its `dtype` field (a plain dataclass state).
fn dtype_of(heap: &Heap, props: &Value) -> Result<DType, String> {
    let inst = heap.instance(props).ok_or("properties is not a TensorProperties")?;
    let state = inst.state.as_ref().ok_or("TensorProperties without state")?;
    let global = match heap.obj(state) {
        Some(Obj::Tuple(items)) => items.first().and_then(|d| heap.global(d)),
        Some(Obj::Dict(_)) => field(heap, state, "dtype").and_then(|d| heap.global(d)),
        _ => None,
    }
    .ok_or("TensorProperties without a dtype")?;
    if global.module != "torch" {
        return Err(format!("dtype {} is not a torch dtype", global.dotted()));
    }
    DType::parse(&global.name).ok_or_else(|| format!("dtype torch.{} is not one ckpt reads", global.name))
}

fn storage_info(heap: &Heap, v: &Value) -> Result<StorageInfo, String> {
    let st = state_of(heap, v, "_StorageInfo").ok_or("not a _StorageInfo")?;
    let relative_path = field(heap, st, "relative_path")
        .and_then(string)
        .ok_or("relative_path is not a string")?;
    let int = |name: &str| match field(heap, st, name) {
        Some(Value::Int(i)) if *i >= 0 => Ok(*i as u64),
        _ => Err(format!("{name} is not a non-negative integer")),
    };
    let transforms = match field(heap, st, "transform_descriptors") {
        None | Some(Value::None) => Vec::new(),
        Some(t) => sequence(heap, t)
            .ok_or("transform_descriptors is not a list")?
            .iter()
            .map(|d| string(d).unwrap_or_else(|| "<not a string>".into()))
            .collect(),
    };
    Ok(StorageInfo {
        relative_path,
        offset: int("offset")?,
        length: int("length")?,
        transforms,
    })
}

/// The class name (in DCP's modules) an instance was made from.
fn class_of<'h>(heap: &'h Heap, v: &Value) -> Option<&'h str> {
    let inst = heap.instance(v)?;
    let g = heap.instance_global(inst)?;
    g.module.starts_with(DCP_MODULES).then_some(g.name.as_str())
}

/// The `__dict__` state of an instance of DCP's class `class` (the first item when the state
/// is a (dict, slots) pair).
fn state_of<'h>(heap: &'h Heap, v: &Value, class: &str) -> Option<&'h Value> {
    let inst = heap.instance(v)?;
    let g = heap.instance_global(inst)?;
    if g.name != class || !g.module.starts_with(DCP_MODULES) {
        return None;
    }
    let state = inst.state.as_ref()?;
    match heap.obj(state)? {
        Obj::Dict(_) => Some(state),
        Obj::Tuple(items) if items.len() == 2 => items.first().filter(|d| matches!(heap.obj(d), Some(Obj::Dict(_)))),
        _ => None,
    }
}

fn dict<'h>(heap: &'h Heap, v: &Value) -> Option<&'h [(Value, Value)]> {
    match heap.obj(v)? {
        Obj::Dict(items) => Some(items),
        Obj::Instance(inst) => Some(&inst.dict_items), // an OrderedDict
        _ => None,
    }
}

/// A field of a `__dict__` state (the last assignment wins, as in Python).
fn field<'h>(heap: &'h Heap, state: &Value, name: &str) -> Option<&'h Value> {
    dict(heap, state)?
        .iter()
        .rev()
        .find(|(k, _)| matches!(k, Value::Str(s) if &**s == name))
        .map(|(_, v)| v)
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

fn sequence<'h>(heap: &'h Heap, v: &Value) -> Option<&'h [Value]> {
    match heap.obj(v)? {
        Obj::List(items) | Obj::Tuple(items) => Some(items),
        _ => None,
    }
}

/// A `torch.Size((d0, d1, ...))` (a REDUCE of the torch.Size global on a tuple of ints).
fn size(heap: &Heap, v: &Value) -> Option<Vec<u64>> {
    let inst = heap.instance(v)?;
    if !heap.instance_global(inst)?.is("torch", "Size") {
        return None;
    }
    let args = heap.tuple(&inst.args)?;
    let dims = sequence(heap, args.first()?)?;
    dims.iter()
        .map(|d| match d {
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            _ => None,
        })
        .collect()
}
