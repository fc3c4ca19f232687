//! The tar format of torch < 0.4, read the way torch's `_legacy_load` reads it: members found
//! by Python's `tarfile` ([`super::tarfile`]), then
//! * `storages` (extracted): a pickled count; per storage a pickled `(key, location,
//!   storage_type)`, an int64 little-endian element count and the raw bytes; then a pickled
//!   list of views `(target_key, root_key, offset, numel)` in elements of the root;
//! * `tensors` (extracted): a pickled count; per tensor a pickled `(key, storage_key,
//!   tensor_type)`, an int32 ndim, 4 ignored bytes, ndim int64 sizes, ndim int64 strides and an
//!   int64 storage offset; the tensor takes its storage's dtype;
//! * `pickle` (`extractfile`): the object, whose persistent ids are keys: torch's
//!   `persistent_load` returns `deserialized_objects[int(saved_id)]`, one dict holding
//!   storages, views and tensors, later entries replacing earlier ones of the same key.
//!   A tuple persistent id returns its first item (a module class).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{ByteOrder, Checkpoint, DataRef, Format, Origin, Storage, StorageId};
use crate::pickle::{Construct, Global, Heap, Instance, Obj, ObjId, Pickle, Value};
use crate::read::decode::{Decoder, StoragePid, StorageProvider, StorageRef};
use crate::read::tarfile::{self, Archive, Member, Resolved};
use crate::read::{finish, parse_pickle, ReadLimits};
use crate::source::Source;

/// A dict key of `deserialized_objects`, compared as Python compares them (True == 1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PyKey {
    Int(i64),
    Str(String),
}

impl PyKey {
    pub fn of(v: &Value) -> Option<PyKey> {
        match v {
            Value::Int(i) => Some(PyKey::Int(*i)),
            Value::Bool(b) => Some(PyKey::Int(i64::from(*b))),
            Value::Str(s) => Some(PyKey::Str(s.to_string())),
            _ => None,
        }
    }
    fn label(&self) -> String {
        match self {
            PyKey::Int(i) => i.to_string(),
            PyKey::Str(s) => format!("'{s}'"),
        }
    }
}

/// One storage record of the `storages` member.
#[derive(Debug, Clone)]
pub struct TarStorage {
    pub key: PyKey,
    pub location: String,
    pub dtype: DType,
    /// Where its bytes start inside the member, and how many there are.
    pub start: usize,
    pub len: usize,
}

/// One view record: `target` is `numel` elements of `root` from element `offset`.
#[derive(Debug, Clone)]
pub struct TarView {
    pub target: PyKey,
    pub root: PyKey,
    pub offset: u64,
    pub numel: u64,
}

/// One tensor record of the `tensors` member, as written (validated by the reader).
#[derive(Debug, Clone)]
pub struct TarTensor {
    pub key: PyKey,
    pub storage: PyKey,
    pub sizes: Vec<i64>,
    pub strides: Vec<i64>,
    pub offset: i64,
}

/// Parses the pickle at a byte offset of a member, under a label; the caller decides how a
/// failure is reported (the reader: an error; the scanner: a finding).
pub type PickleAt<'f> = dyn FnMut(&str, usize) -> std::result::Result<Pickle, String> + 'f;

/// Walks the `storages` member: every pickle is parsed through `pickle`, binary parts are
/// bounds-checked against the member's length before anything is sized by them.
pub fn walk_storages(
    data: &[u8],
    pickle: &mut PickleAt,
) -> std::result::Result<(Vec<TarStorage>, Vec<TarView>), String> {
    let count = pickle("count", 0)?;
    let mut pos = count.end;
    let n = count_of(&count).ok_or("the storage count is not a non-negative int")?;
    let mut storages = Vec::new();
    for i in 0..n {
        let p = pickle(&format!("#{i}"), pos)?;
        pos += p.end;
        let (key, location, dtype) = storage_header(&p).map_err(|e| format!("storage #{i}: {e}"))?;
        let numel = read_i64(data, pos).ok_or_else(|| format!("storage #{i}: the file ends before its size"))?;
        let len = u64::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(dtype.size() as u64))
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n <= data.len() - (pos + 8))
            .ok_or_else(|| format!("storage #{i}: {numel} elements run past the end of the member"))?;
        storages.push(TarStorage {
            key,
            location,
            dtype,
            start: pos + 8,
            len,
        });
        pos += 8 + len;
    }
    let views = pickle("views", pos)?;
    Ok((storages, parse_views(&views)?))
}

/// Walks the `tensors` member the same way.
pub fn walk_tensors(data: &[u8], pickle: &mut PickleAt) -> std::result::Result<Vec<TarTensor>, String> {
    let count = pickle("count", 0)?;
    let mut pos = count.end;
    let n = count_of(&count).ok_or("the tensor count is not a non-negative int")?;
    let mut tensors = Vec::new();
    for i in 0..n {
        let p = pickle(&format!("#{i}"), pos)?;
        pos += p.end;
        let items = p.heap.tuple(&p.root).filter(|t| t.len() == 3);
        let (key, storage) = items
            .and_then(|t| Some((PyKey::of(&t[0])?, PyKey::of(&t[1])?)))
            .ok_or_else(|| format!("tensor #{i}: not a (key, storage key, type) tuple"))?;
        let end_of = |what: &str| format!("tensor #{i}: the member ends inside its {what}");
        let ndim = data
            .get(pos..pos + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| end_of("ndim"))?;
        let ndim = usize::try_from(ndim).map_err(|_| format!("tensor #{i}: negative ndim {ndim}"))?;
        // ndim is bounded by the bytes that must follow it before anything is allocated.
        let need = ndim.checked_mul(16).and_then(|n| n.checked_add(16));
        if need.is_none_or(|n| n > data.len() - pos) {
            return Err(end_of("sizes and strides"));
        }
        pos += 8; // ndim and the 4 bytes torch skips
        let sizes = (0..ndim).filter_map(|d| read_i64(data, pos + 8 * d)).collect();
        pos += 8 * ndim;
        let strides = (0..ndim).filter_map(|d| read_i64(data, pos + 8 * d)).collect();
        pos += 8 * ndim;
        let offset = read_i64(data, pos).ok_or_else(|| end_of("storage offset"))?;
        pos += 8;
        tensors.push(TarTensor {
            key,
            storage,
            sizes,
            strides,
            offset,
        });
    }
    Ok(tensors)
}

fn read_i64(data: &[u8], at: usize) -> Option<i64> {
    let b: [u8; 8] = data.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(i64::from_le_bytes(b))
}

/// `range(count)`: a non-negative int (a bool counts as one).
fn count_of(p: &Pickle) -> Option<u64> {
    match p.root {
        Value::Int(i) => u64::try_from(i).ok(),
        Value::Bool(b) => Some(u64::from(b)),
        _ => None,
    }
}

/// `(key, location, storage_type)`: the element type is the storage class's.
fn storage_header(p: &Pickle) -> std::result::Result<(PyKey, String, DType), String> {
    let t = p
        .heap
        .tuple(&p.root)
        .filter(|t| t.len() == 3)
        .ok_or("not a (key, location, type) tuple")?;
    let key = PyKey::of(&t[0]).ok_or("the key is not an int or a string")?;
    let location = match &t[1] {
        Value::Str(s) => s.to_string(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        _ => return Err("the location is not a string".into()),
    };
    let class = p.heap.global(&t[2]).ok_or("the storage type is not a class")?;
    let dtype =
        DType::from_storage_class(&class.name).ok_or_else(|| format!("unknown storage type {}", class.dotted()))?;
    Ok((key, location, dtype))
}

fn parse_views(p: &Pickle) -> std::result::Result<Vec<TarView>, String> {
    let items = match p.heap.obj(&p.root) {
        Some(Obj::List(items) | Obj::Tuple(items)) => items,
        _ => return Err("the storage views are not a list".into()),
    };
    items
        .iter()
        .map(|v| {
            let t = p
                .heap
                .tuple(v)
                .filter(|t| t.len() == 4)
                .ok_or("a view is not a 4-tuple")?;
            let uint = |v: &Value| match v {
                Value::Int(i) => u64::try_from(*i).ok(),
                _ => None,
            };
            Ok(TarView {
                target: PyKey::of(&t[0]).ok_or("a view key is not an int or a string")?,
                root: PyKey::of(&t[1]).ok_or("a view's root key is not an int or a string")?,
                offset: uint(&t[2]).ok_or("a view offset is not a count")?,
                numel: uint(&t[3]).ok_or("a view size is not a count")?,
            })
        })
        .collect()
}

/// What a key of `deserialized_objects` holds.
#[derive(Debug, Clone, Copy)]
enum Entry {
    Storage(usize),
    Tensor(usize),
}

/// A storage as torch builds it: bytes of the file, and an element type.
#[derive(Debug, Clone)]
struct Built {
    offset: u64,
    len: u64,
    dtype: DType,
    location: String,
}

/// Reads a tar checkpoint whose members `tarfile` lists as `members`.
pub fn read(source: Arc<Source>, members: &[Member], limits: &ReadLimits) -> Result<Checkpoint> {
    let path = source.path().to_path_buf();
    let bytes = source.bytes();
    let archive = Archive { members };
    let storages_at = resolve(&path, "storages", archive.extract("storages", None))?;
    let tensors_at = resolve(
        &path,
        "tensors",
        archive.extract("tensors", Some(("storages", &data_of(storages_at)))),
    )?;
    let pickle_at = resolve(&path, "pickle", archive.extractfile("pickle"))?;

    let member = |(start, len): (usize, usize)| &bytes[start..start + len];
    let mut objects: HashMap<PyKey, Entry> = HashMap::new();
    let built = read_storages(&path, member(storages_at), storages_at.0, limits, &mut objects)?;
    let tensors = read_tensors(&path, member(tensors_at), limits, &mut objects)?;

    let mut main = parse_pickle(&path, "pickle", member(pickle_at), limits)?;
    link_persistent_ids(&mut main.heap, &objects, &built, &tensors)
        .map_err(|e| Error::malformed(&path, "pickle", e))?;
    let mut provider = TarStorages {
        source: source.clone(),
        built: &built,
        ids: HashMap::new(),
        storages: Vec::new(),
    };
    let decoded =
        Decoder::new(&main.heap, &mut provider, &path, "pickle", None, limits.decode.clone()).decode(&main.root)?;
    let origin = if decoded.saw_module {
        Origin::WholeModel
    } else {
        Origin::Data
    };
    let storages = provider.storages;
    Ok(finish(
        &path,
        Format::PthLegacy,
        origin,
        decoded,
        storages,
        &main.globals,
    ))
}

/// The storages of the `storages` member (which starts at byte `base`) and the views onto
/// them, each recorded in `objects` under its key.
fn read_storages(
    path: &Path,
    data: &[u8],
    base: usize,
    limits: &ReadLimits,
    objects: &mut HashMap<PyKey, Entry>,
) -> Result<Vec<Built>> {
    let mut built: Vec<Built> = Vec::new();
    let (records, views) = walk_storages(data, &mut parser(path, "storages", data, limits))
        .map_err(|e| Error::malformed(path, "storages", e))?;
    for r in records {
        objects.insert(r.key.clone(), Entry::Storage(built.len()));
        built.push(Built {
            offset: (base + r.start) as u64,
            len: r.len as u64,
            dtype: r.dtype,
            location: r.location,
        });
    }
    for v in views {
        let view = storage_view(objects, &built, &v).map_err(|e| Error::malformed(path, "storages views", e))?;
        objects.insert(v.target.clone(), Entry::Storage(built.len()));
        built.push(view);
    }
    Ok(built)
}

/// The tensors of the `tensors` member, each with the index of its storage, recorded in
/// `objects` under its key.
fn read_tensors(
    path: &Path,
    data: &[u8],
    limits: &ReadLimits,
    objects: &mut HashMap<PyKey, Entry>,
) -> Result<Vec<(usize, TarTensor)>> {
    let records = walk_tensors(data, &mut parser(path, "tensors", data, limits))
        .map_err(|e| Error::malformed(path, "tensors", e))?;
    let mut tensors: Vec<(usize, TarTensor)> = Vec::new();
    for t in records {
        let storage = match objects.get(&t.storage) {
            Some(Entry::Storage(s)) => *s,
            _ => {
                return Err(Error::malformed(
                    path,
                    "tensors",
                    format!(
                        "tensor {} names storage {}, which is not a storage",
                        t.key.label(),
                        t.storage.label()
                    ),
                ))
            }
        };
        objects.insert(t.key.clone(), Entry::Tensor(tensors.len()));
        tensors.push((storage, t));
    }
    Ok(tensors)
}

/// Member bytes (start, length), or why torch cannot read them.
fn resolve(path: &Path, name: &str, r: Resolved) -> Result<(usize, usize)> {
    match r {
        Resolved::Data { offset, size } => Ok((offset, size)),
        Resolved::Fails(why) | Resolved::Host(why) => Err(Error::malformed(path, name, why)),
    }
}

fn data_of((offset, size): (usize, usize)) -> Resolved {
    Resolved::Data { offset, size }
}

/// A pickle parser over one member's bytes, for the walkers.
fn parser<'f>(
    path: &'f Path,
    member: &'f str,
    data: &'f [u8],
    limits: &'f ReadLimits,
) -> impl FnMut(&str, usize) -> std::result::Result<Pickle, String> + 'f {
    move |label: &str, at: usize| {
        let rest = data.get(at..).unwrap_or_default();
        parse_pickle(path, &format!("{member} {label}"), rest, limits).map_err(|e| e.to_string())
    }
}

/// `root._untyped_storage[offset_bytes : offset_bytes + numel * element_size]`.
fn storage_view(objects: &HashMap<PyKey, Entry>, built: &[Built], v: &TarView) -> std::result::Result<Built, String> {
    let Some(Entry::Storage(root)) = objects.get(&v.root) else {
        return Err(format!(
            "view {} of {}, which is not a storage",
            v.target.label(),
            v.root.label()
        ));
    };
    let root = &built[*root];
    let esize = root.dtype.size() as u64;
    let start = v.offset.checked_mul(esize);
    let len = v.numel.checked_mul(esize);
    match (start, len) {
        (Some(start), Some(len)) if start.checked_add(len).is_some_and(|e| e <= root.len) => Ok(Built {
            offset: root.offset + start,
            len,
            dtype: root.dtype,
            location: root.location.clone(),
        }),
        _ => Err(format!(
            "view {} lies outside storage {}",
            v.target.label(),
            v.root.label()
        )),
    }
}

/// `int(saved_id)` as Python computes it for the ids torch writes (ints and decimal strings).
fn persistent_key(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Str(s) => tarfile::py_int(s.as_bytes(), 10)
            .ok()
            .and_then(|n| i64::try_from(n).ok()),
        Value::Bytes(b) => tarfile::py_int(b, 10).ok().and_then(|n| i64::try_from(n).ok()),
        _ => None,
    }
}

/// Replaces every persistent id naming a tensor by the `_rebuild_tensor_v2` call the decoder
/// understands, so the object pickle decodes like a zip checkpoint's. Ids naming storages stay
/// (an opaque storage); tuple ids (module classes) stay.
fn link_persistent_ids(
    heap: &mut Heap,
    objects: &HashMap<PyKey, Entry>,
    built: &[Built],
    tensors: &[(usize, TarTensor)],
) -> std::result::Result<(), String> {
    for i in 0..heap.len() {
        let id = ObjId(i as u32);
        let Obj::PersistentId(pid) = heap.get(id) else { continue };
        if heap.tuple(pid).is_some() {
            continue;
        }
        let key = persistent_key(pid).ok_or("a persistent id is neither a tuple nor an integer key")?;
        match objects.get(&PyKey::Int(key)) {
            Some(Entry::Tensor(t)) => {
                let (storage, record) = &tensors[*t];
                let call = rebuild_call(heap, *storage, &built[*storage], record)?;
                *heap.get_mut(id) = Obj::Instance(Box::new(call));
            }
            Some(Entry::Storage(_)) => {}
            None => {
                return Err(format!(
                    "persistent id {key} names nothing in storages or tensors (KeyError)"
                ))
            }
        }
    }
    Ok(())
}

/// `_rebuild_tensor_v2(('storage', <Class>, key, location, numel), offset, size, stride, False, None)`.
fn rebuild_call(heap: &mut Heap, storage: usize, b: &Built, t: &TarTensor) -> std::result::Result<Instance, String> {
    let uint = |v: i64, what: &str| {
        u64::try_from(v)
            .map(|n| Value::Int(n as i64))
            .map_err(|_| format!("tensor {}: negative {what} {v}", t.key.label()))
    };
    let sizes = t
        .sizes
        .iter()
        .map(|&s| uint(s, "size"))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let strides = t
        .strides
        .iter()
        .map(|&s| uint(s, "stride"))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let offset = uint(t.offset, "storage offset")?;
    let class = b.dtype.storage_class().ok_or("a storage type without a class")?;
    let mut obj = |o: Obj| Value::Obj(heap.alloc(o));
    let class = obj(Obj::Global(Global {
        module: "torch".into(),
        name: class.into(),
    }));
    let numel = Value::Int((b.len / b.dtype.size() as u64) as i64);
    let pid_tuple = obj(Obj::Tuple(vec![
        Value::Str("storage".into()),
        class,
        Value::Str(storage.to_string().into()),
        Value::Str(b.location.as_str().into()),
        numel,
    ]));
    let pid = obj(Obj::PersistentId(pid_tuple));
    let sizes = obj(Obj::Tuple(sizes));
    let strides = obj(Obj::Tuple(strides));
    let args = obj(Obj::Tuple(vec![
        pid,
        offset,
        sizes,
        strides,
        Value::Bool(false),
        Value::None,
    ]));
    let callable = obj(Obj::Global(Global {
        module: "torch._utils".into(),
        name: "_rebuild_tensor_v2".into(),
    }));
    Ok(Instance {
        callable,
        construct: Construct::Reduce,
        args,
        kwargs: None,
        state: None,
        list_items: Vec::new(),
        dict_items: Vec::new(),
    })
}

/// Storages by their index in `built` (the key the rebuilt persistent ids carry).
struct TarStorages<'b> {
    source: Arc<Source>,
    built: &'b [Built],
    ids: HashMap<usize, StorageRef>,
    storages: Vec<Storage>,
}

impl StorageProvider for TarStorages<'_> {
    fn storage(&mut self, pid: &StoragePid) -> std::result::Result<StorageRef, String> {
        let index: usize = pid.key.parse().map_err(|_| "unknown storage")?;
        if let Some(r) = self.ids.get(&index) {
            return Ok(*r);
        }
        let b = self.built.get(index).ok_or("unknown storage")?;
        let r = StorageRef {
            id: StorageId(self.storages.len()),
            nbytes: b.len,
        };
        self.storages.push(Storage {
            key: Some(index.to_string()),
            location: b.location.clone(),
            byte_order: ByteOrder::Little,
            data: DataRef {
                source: self.source.clone(),
                offset: b.offset,
                len: b.len,
            },
            cast: None,
        });
        self.ids.insert(index, r);
        Ok(r)
    }
}
