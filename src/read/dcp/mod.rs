//! torch.distributed.checkpoint (DCP) directories, as FSDP and DTensor training save them: a
//! `.metadata` pickle naming every fully qualified name with its global size, dtype and chunks,
//! and `__<rank>_<n>.distcp` files holding the chunks. Each global tensor becomes one tensor
//! whose storage is assembled from its chunks ([`crate::assembly`]): nothing is read until a
//! command streams it, and then a bounded block at a time.
//!
//! Tensors are named by their fully qualified names (`model.layers.0.weight`,
//! `optim.state.layers.0.weight.exp_avg`), in `.metadata`'s order; non-tensor items
//! (`optim.param_groups.0.lr`) are kept as the values they hold; the structure is the nested
//! state dict that was saved ([`nest`]).

pub mod chunks;
pub mod metadata;
mod nest;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::assembly::{Assembly, Piece};
use crate::container::index::shard_path;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{ByteOrder, Checkpoint, DataRef, Format, Globals, Key, Node, Origin, Storage, StorageId, Tensor};
use crate::read::{flatten, parse_pickle, ReadLimits};
use crate::source::Source;

use self::metadata::{DcpMetadata, EntryKind, StorageInfo};
use self::nest::nest;

/// The name of the metadata file in a DCP directory.
pub const METADATA: &str = ".metadata";

/// Whether the pickle's top object is a DCP `Metadata` (its first global names the class).
pub fn is_metadata(bytes: &[u8], limits: &ReadLimits) -> bool {
    crate::pickle::parse(bytes, &limits.pickle).is_ok_and(|p| {
        p.heap
            .instance(&p.root)
            .and_then(|i| p.heap.instance_global(i))
            .is_some_and(|g| g.is("torch.distributed.checkpoint.metadata", "Metadata"))
    })
}

/// Reads the checkpoint whose `.metadata` is `path`; its data files lie beside it.
pub fn read(path: &Path, limits: &ReadLimits) -> Result<Checkpoint> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (meta, globals) = parse_metadata_with_globals(path, limits)?;
    let mut reader = Reader {
        path,
        dir,
        limits,
        meta: &meta,
        sources: HashMap::new(),
        globals,
    };
    let mut tensors = Vec::new();
    let mut storages = Vec::new();
    let mut items = Vec::new();
    for entry in &meta.entries {
        let node = match &entry.kind {
            EntryKind::Tensor { dtype, size, chunks } => {
                let mut pieces: Vec<Piece> = Vec::with_capacity(chunks.len());
                for c in chunks {
                    // A chunk listed twice (a replicated shard) is stored, and read, once.
                    if pieces.iter().any(|p| p.offsets == c.offsets && p.sizes == c.sizes) {
                        continue;
                    }
                    let data = reader.chunk(&entry.fqn, &c.offsets, *dtype, &c.sizes)?;
                    pieces.push(Piece {
                        offsets: c.offsets.clone(),
                        sizes: c.sizes.clone(),
                        data,
                    });
                }
                let assembly = Assembly::new(size.clone(), dtype.size() as u64, pieces)
                    .map_err(|why| Error::malformed(path, format!("tensor '{}'", entry.fqn), why))?;
                let len = assembly.nbytes();
                storages.push(Storage {
                    key: None,
                    location: "cpu".into(),
                    byte_order: ByteOrder::Little,
                    data: DataRef {
                        source: Source::assembled(path, assembly),
                        offset: 0,
                        len,
                    },
                    cast: None,
                });
                tensors.push(Tensor {
                    name: entry.fqn.clone(),
                    dtype: *dtype,
                    shape: size.clone(),
                    stride: contiguous_strides(size),
                    offset: 0,
                    storage: StorageId(storages.len() - 1),
                    requires_grad: false,
                    parameter: false,
                });
                Node::Tensor(tensors.len() - 1)
            }
            EntryKind::Bytes => reader.item(&entry.fqn)?,
        };
        items.push((Key::Str(entry.fqn.clone()), node));
    }
    let root = nest(&meta, items);
    let metadata = flatten::flatten(&root, &mut tensors);
    let mut files = vec![path.to_path_buf()];
    let mut data_files: Vec<PathBuf> = reader.sources.values().map(|s| s.path().to_path_buf()).collect();
    data_files.sort();
    files.extend(data_files);
    Ok(Checkpoint {
        format: Format::Dcp,
        root,
        tensors,
        storages,
        metadata,
        globals: reader.globals,
        origin: Origin::Data,
        files,
        module_classes: Default::default(),
        modules: Vec::new(),
        names: Default::default(),
    })
}

/// Every stored item the `.metadata` at `path` names, as (data file, offset, length), in file
/// and offset order: the archives `ckpt check` checks record by record.
pub fn stored_items(path: &Path, limits: &ReadLimits) -> Result<Vec<(PathBuf, u64, u64)>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let meta = parse_metadata(path, limits)?;
    let mut items: Vec<(PathBuf, u64, u64)> = meta
        .storage
        .values()
        .filter_map(|info| Some((shard_path(dir, &info.relative_path)?, info.offset, info.length)))
        .collect();
    items.sort();
    items.dedup();
    Ok(items)
}

/// One item that loading the checkpoint reads: a chunk of a tensor, or a non-tensor value.
#[derive(Debug, Clone)]
pub struct LoadedItem {
    /// The fully qualified name.
    pub fqn: String,
    /// The chunk's offsets in the global tensor; None for a non-tensor item.
    pub offsets: Option<Vec<u64>>,
    /// Where it is stored.
    pub info: StorageInfo,
}

impl LoadedItem {
    /// Whether torch loads it as a tensor: `torch.load(weights_only=True)` in
    /// `FileSystemReader.read_data`; other items go through `DefaultLoadPlanner.load_bytes`,
    /// which calls `torch.load(weights_only=False)`.
    pub fn is_tensor(&self) -> bool {
        self.offsets.is_some()
    }
    /// Where it lies, for messages: `chunk [0, 4] of 'model.w' (bytes 1641..3282)`.
    pub fn describe(&self) -> String {
        chunks::describe(&self.fqn, self.offsets.as_deref(), &self.info)
    }
}

/// The items torch reads when it loads the checkpoint whose `.metadata` is `path`: each chunk
/// of each tensor and each non-tensor item of `state_dict_metadata`, with the storage
/// `storage_data` gives it (a storage entry that no item names is never read). In
/// `.metadata`'s order.
pub fn loaded_items(path: &Path, limits: &ReadLimits) -> Result<Vec<LoadedItem>> {
    let meta = parse_metadata(path, limits)?;
    let mut items = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for entry in &meta.entries {
        let keys: Vec<Option<Vec<u64>>> = match &entry.kind {
            EntryKind::Tensor { chunks, .. } => chunks.iter().map(|c| Some(c.offsets.clone())).collect(),
            EntryKind::Bytes => vec![None],
        };
        for offsets in keys {
            let key = (entry.fqn.clone(), offsets.clone());
            if !seen.insert(key.clone()) {
                continue; // a replicated chunk, read once
            }
            let info = meta.storage.get(&key).cloned().ok_or_else(|| {
                Error::malformed(path, "storage_data", format!("no storage recorded for '{}' {offsets:?}", entry.fqn))
            })?;
            items.push(LoadedItem {
                fqn: entry.fqn.clone(),
                offsets,
                info,
            });
        }
    }
    Ok(items)
}

/// The `.metadata` at `path`, interpreted.
fn parse_metadata(path: &Path, limits: &ReadLimits) -> Result<DcpMetadata> {
    parse_metadata_with_globals(path, limits).map(|(meta, _)| meta)
}

/// [`parse_metadata`], with the globals its pickle references.
fn parse_metadata_with_globals(path: &Path, limits: &ReadLimits) -> Result<(DcpMetadata, Globals)> {
    let source = Source::open(path)?;
    if source.len() > limits.max_pickle_bytes {
        return Err(Error::malformed(
            path,
            "pickle",
            format!("{} bytes, more than the limit of {}", source.len(), limits.max_pickle_bytes),
        ));
    }
    let pickle = parse_pickle(path, "pickle", source.bytes(), limits)?;
    let meta = metadata::parse(&pickle).map_err(|why| Error::malformed(path, "pickle", why))?;
    Ok((meta, Globals::from_uses(&pickle.globals)))
}

/// Row-major strides of a shape, in elements.
pub(crate) fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1].saturating_mul(shape[d + 1]);
    }
    strides
}

/// Opens data files once each and reads each stored item once.
struct Reader<'a> {
    path: &'a Path,
    dir: &'a Path,
    limits: &'a ReadLimits,
    meta: &'a DcpMetadata,
    sources: HashMap<String, Arc<Source>>,
    /// Every global of `.metadata` and of the chunks' archives.
    globals: Globals,
}

impl Reader<'_> {
    fn storage(&self, fqn: &str, offsets: Option<&[u64]>) -> Result<&StorageInfo> {
        let key = (fqn.to_string(), offsets.map(<[u64]>::to_vec));
        let what = match offsets {
            Some(o) => format!("chunk {o:?} of '{fqn}'"),
            None => format!("item '{fqn}'"),
        };
        let info = self
            .meta
            .storage
            .get(&key)
            .ok_or_else(|| Error::malformed(self.path, "storage_data", format!("no storage recorded for {what}")))?;
        if !info.transforms.is_empty() {
            return Err(Error::Unsupported {
                path: self.path.into(),
                what: format!(
                    "{what} is stored through transforms {:?} (compression or an extension), which ckpt does not undo",
                    info.transforms
                ),
            });
        }
        Ok(info)
    }

    /// The data file a storage entry names, opened once.
    fn source(&mut self, fqn: &str, relative: &str) -> Result<Arc<Source>> {
        if let Some(s) = self.sources.get(relative) {
            return Ok(s.clone());
        }
        let file = shard_path(self.dir, relative).ok_or_else(|| {
            Error::malformed(
                self.path,
                "storage_data",
                format!("'{fqn}' names '{relative}', which is not a plain file name beside .metadata"),
            )
        })?;
        if !file.is_file() {
            return Err(Error::malformed(
                self.path,
                "storage_data",
                format!("data file {} of '{fqn}' is missing", file.display()),
            ));
        }
        let source = Source::open(&file)?;
        self.sources.insert(relative.to_string(), source.clone());
        Ok(source)
    }

    fn chunk(&mut self, fqn: &str, offsets: &[u64], dtype: DType, sizes: &[u64]) -> Result<DataRef> {
        let info = self.storage(fqn, Some(offsets))?.clone();
        let source = self.source(fqn, &info.relative_path)?;
        let place = chunks::describe(fqn, Some(offsets), &info);
        let (data, globals) = chunks::tensor_bytes(&source, &info, &place, dtype, sizes, self.limits)?;
        self.globals.merge(&globals);
        Ok(data)
    }

    fn item(&mut self, fqn: &str) -> Result<Node> {
        let info = self.storage(fqn, None)?.clone();
        let source = self.source(fqn, &info.relative_path)?;
        let (node, globals) = chunks::item(&source, &info, &chunks::describe(fqn, None, &info), self.limits)?;
        self.globals.merge(&globals);
        Ok(node)
    }
}
