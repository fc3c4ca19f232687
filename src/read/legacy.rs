//! PyTorch's legacy format (torch < 1.6, or `_use_new_zipfile_serialization=False`): five
//! pickles in a row (magic number, protocol version, sys_info, the object, the storage keys),
//! then each storage as an 8-byte element count followed by its raw bytes, in key order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{ByteOrder, Checkpoint, DataRef, Format, Origin, Storage, StorageId};
use crate::pickle::{Obj, Pickle, Value};
use crate::read::decode::{parse_storage_pid, Decoder, StoragePid, StorageProvider, StorageRef};
use crate::read::{finish, parse_pickle, ReadLimits};
use crate::source::Source;

/// 0x1950a86a20f9469cfc6c as LONG1 bytes (little-endian), what the first pickle holds.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

/// Whether the first pickle's value is the magic number, whatever protocol wrote it
/// (`LONG1` at protocol 2, a decimal `LONG` line at protocol 0).
pub fn is_magic(root: &Value) -> bool {
    matches!(root, Value::BigInt(b) if **b == MAGIC)
}

struct LegacyStorages {
    /// Key -> (byte offset of the data, byte length, element type if typed).
    ranges: HashMap<String, (u64, u64)>,
    source: Arc<Source>,
    byte_order: ByteOrder,
    by_key: HashMap<(String, Option<(u64, u64)>), StorageRef>,
    storages: Vec<Storage>,
}

impl StorageProvider for LegacyStorages {
    fn storage(&mut self, pid: &StoragePid) -> std::result::Result<StorageRef, String> {
        let (root_key, view) = match &pid.view {
            Some((root, offset, size)) => (root.clone(), Some((*offset, *size))),
            None => (pid.key.clone(), None),
        };
        let cache_key = (root_key.clone(), view);
        if let Some(r) = self.by_key.get(&cache_key) {
            return Ok(*r);
        }
        let &(offset, len) = self
            .ranges
            .get(&root_key)
            .ok_or_else(|| format!("storage '{root_key}' is not in the file"))?;
        let (offset, len) = match view {
            None => (offset, len),
            Some((view_offset, view_numel)) => {
                let esize = pid.dtype.map_or(1, DType::size) as u64;
                let view_len = view_numel.checked_mul(esize).ok_or("storage view size overflows")?;
                let end = view_offset.checked_add(view_len).ok_or("storage view overflows")?;
                if end > len {
                    return Err(format!(
                        "storage view [{view_offset}, {end}) lies outside storage '{root_key}' of {len} bytes"
                    ));
                }
                (offset + view_offset, view_len)
            }
        };
        let r = StorageRef {
            id: StorageId(self.storages.len()),
            nbytes: len,
        };
        self.storages.push(Storage {
            key: Some(pid.key.clone()),
            location: pid.location.clone(),
            byte_order: self.byte_order,
            data: DataRef {
                source: self.source.clone(),
                offset,
                len,
            },
            cast: None,
        });
        self.by_key.insert(cache_key, r);
        Ok(r)
    }
}

pub fn read(source: Arc<Source>, limits: &ReadLimits) -> Result<Checkpoint> {
    let path = source.path().to_path_buf();
    let bytes = source.bytes();
    let mut pos = 0usize;
    let next = |record: &str, pos: &mut usize| -> Result<Pickle> {
        let rest = bytes.get(*pos..).unwrap_or(&[]);
        let p = parse_pickle(&path, record, rest, limits)?;
        *pos += p.end;
        Ok(p)
    };
    let magic = next("magic number", &mut pos)?;
    if !is_magic(&magic.root) {
        return Err(Error::UnknownFormat {
            path,
            why: "legacy magic number missing".into(),
        });
    }
    let version = next("protocol version", &mut pos)?;
    if version.root != Value::Int(PROTOCOL_VERSION) {
        return Err(Error::malformed(
            &path,
            "protocol version",
            format!("expected {PROTOCOL_VERSION}, found {:?}", version.root),
        ));
    }
    let sys_info = next("sys_info", &mut pos)?;
    let little = little_endian(&sys_info);
    let main = next("object", &mut pos)?;
    let keys = storage_keys(&path, &next("storage keys", &mut pos)?)?;
    let element_size = element_sizes(&path, &main)?;
    let ranges = storage_ranges(&source, &keys, &element_size, little, pos as u64)?;
    let byte_order = if little { ByteOrder::Little } else { ByteOrder::Big };
    let mut provider = LegacyStorages {
        ranges,
        source: source.clone(),
        byte_order,
        by_key: HashMap::new(),
        storages: Vec::new(),
    };
    let decoded = Decoder::new(
        &main.heap,
        &mut provider,
        &path,
        "object pickle",
        None,
        limits.decode.clone(),
    )
    .decode(&main.root)?;
    let origin = if decoded.saw_module {
        Origin::WholeModel
    } else {
        Origin::Data
    };
    let mut globals = main.globals.clone();
    globals.extend(sys_info.globals.iter().cloned());
    Ok(finish(
        &path,
        Format::PthLegacy,
        origin,
        decoded,
        provider.storages,
        &globals,
    ))
}

/// Whether `sys_info` says the storages are little-endian (the default when it does not say).
fn little_endian(sys_info: &Pickle) -> bool {
    match sys_info.heap.obj(&sys_info.root) {
        Some(Obj::Dict(pairs)) => !pairs
            .iter()
            .any(|(k, v)| matches!(k, Value::Str(s) if &**s == "little_endian") && *v == Value::Bool(false)),
        _ => true,
    }
}

/// The storage keys pickle: a list of the keys of the storages that follow, in file order.
fn storage_keys(path: &Path, keys_pickle: &Pickle) -> Result<Vec<String>> {
    match keys_pickle.heap.obj(&keys_pickle.root) {
        Some(Obj::List(items)) => items
            .iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s.to_string()),
                _ => Err(Error::malformed(path, "storage keys", "a key is not a string")),
            })
            .collect(),
        _ => Err(Error::malformed(path, "storage keys", "not a list")),
    }
}

/// The element size of each storage, from the storage types the object's persistent ids name
/// (the file gives a storage's size in elements).
fn element_sizes(path: &Path, main: &Pickle) -> Result<HashMap<String, u64>> {
    let mut element_size = HashMap::new();
    for i in 0..main.heap.len() {
        if let Obj::PersistentId(pid) = main.heap.get(crate::pickle::ObjId(i as u32)) {
            // At pickle protocol 0 persistent ids are text lines: torch.load's persistent_load
            // refuses them ("saved_id must be a tuple"), so the file cannot be loaded.
            if main.heap.tuple(pid).is_none() {
                return Err(Error::malformed(
                    path,
                    "object",
                    "a persistent id is not a tuple (written at pickle protocol 0): torch.load refuses it",
                ));
            }
            if let Ok(p) = parse_storage_pid(&main.heap, pid) {
                let root = p.view.as_ref().map_or(p.key.clone(), |v| v.0.clone());
                element_size.insert(root, p.dtype.map_or(1, DType::size) as u64);
            }
        }
    }
    Ok(element_size)
}

/// Where each storage's bytes are, (start, length) by key: from `offset` on, each storage is
/// its element count (8 bytes, in the file's byte order), then its elements.
fn storage_ranges(
    source: &Source,
    keys: &[String],
    element_size: &HashMap<String, u64>,
    little: bool,
    mut offset: u64,
) -> Result<HashMap<String, (u64, u64)>> {
    let path = source.path();
    let mut ranges = HashMap::new();
    let file_len = source.len();
    for key in keys {
        let place = format!("storage '{key}' at byte {offset}");
        let head = source
            .slice(offset, 8)
            .ok_or_else(|| Error::malformed(path, &place, "file ends before the storage's size"))?;
        let head: [u8; 8] = head.try_into().unwrap_or([0; 8]);
        let numel = if little {
            u64::from_le_bytes(head)
        } else {
            u64::from_be_bytes(head)
        };
        let esize = *element_size
            .get(key)
            .ok_or_else(|| Error::malformed(path, &place, "no tensor names this storage"))?;
        let len = numel
            .checked_mul(esize)
            .ok_or_else(|| Error::malformed(path, &place, "size overflows"))?;
        let start = offset + 8;
        let end = start.checked_add(len).filter(|&e| e <= file_len).ok_or_else(|| {
            Error::malformed(
                path,
                &place,
                format!("{numel} elements of {esize} bytes run past the end of the file ({file_len} bytes)"),
            )
        })?;
        ranges.insert(key.clone(), (start, len));
        offset = end;
    }
    Ok(ranges)
}
