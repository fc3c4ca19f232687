//! Round trip: a checkpoint built in memory from a fuzzed description (any dtype, small shapes,
//! strided/overlapping/expanded views over a few shared storages of fuzzed bytes, both byte
//! orders, device tags, flags, and a nested tree of containers and scalars) is written as .pth
//! and as safetensors, read back, and compared. Any difference is a bug and panics.
//!
//! .pth keeps everything: names, dtypes, shapes, contents (sha256), strides, offsets, flags,
//! device tags, storage sharing, the structure and the metadata. safetensors keeps the tensors
//! (as a set) and the metadata as strings; a write error is accepted only for what safetensors
//! cannot hold (a dtype without a safetensors name, two tensors with one name).
#![no_main]
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;

use ckpt::dtype::DType;
use ckpt::model::{ByteOrder, Checkpoint, DataRef, Format, Key, Node, Origin, Storage, StorageId, Tensor};
use ckpt::source::Source;
use ckpt::tensor_data::try_sha256_hex;
use ckpt::write::{write, OutFormat, WriteOptions};

#[path = "common.rs"]
mod common;

#[derive(Arbitrary, Debug)]
enum ViewDType {
    /// The storage's dtype.
    Same,
    /// Another dtype of the same size and swap unit (an int32 view of a float32 storage).
    Alt,
    /// Any dtype at all (little-endian storages only: a big-endian storage viewed with two
    /// element sizes has no defined byte order, and the readers refuse it).
    Any(u8),
}

#[derive(Arbitrary, Debug)]
struct ViewD {
    shape: Vec<u8>,
    stride: Vec<u8>,
    offset: u8,
    dtype: ViewDType,
    grad: bool,
    parameter: bool,
}

#[derive(Arbitrary, Debug)]
struct StorageD {
    dtype: u8,
    big: bool,
    device: u8,
    slack: u8,
    at: u16,
    views: Vec<ViewD>,
}

/// The structure, generated with a depth limit (arbitrary's derive would recurse unbounded).
#[derive(Debug)]
enum NodeD {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<NodeD>),
    Tuple(Vec<NodeD>),
    Dict { ordered: bool, items: Vec<(Key, NodeD)> },
    /// Where the next tensor goes.
    Tensor,
}

fn key(u: &mut Unstructured) -> Result<Key> {
    Ok(if u.ratio(1, 5)? {
        Key::Int(i64::from(u.arbitrary::<i8>()?))
    } else {
        // Short names in the alphabets state dicts use; a dot now and then (flat keys).
        let n = u.int_in_range(0..=6)?;
        let mut s = String::new();
        for _ in 0..n {
            s.push(*u.choose(&['a', 'b', 'c', 'w', '0', '1', '_', '.', 'é', '✓'])?);
        }
        Key::Str(s)
    })
}

fn node(u: &mut Unstructured, depth: u32) -> Result<NodeD> {
    let kinds = if depth >= 4 { 7 } else { 10 };
    Ok(match u.int_in_range(0..=kinds)? {
        0 => NodeD::None,
        1 => NodeD::Bool(u.arbitrary()?),
        2 => NodeD::Int(u.arbitrary()?),
        3 => NodeD::Float(u.arbitrary()?),
        4 => NodeD::Str(u.arbitrary()?),
        5 => NodeD::Bytes(u.arbitrary()?),
        6 | 7 => NodeD::Tensor,
        8 => NodeD::List(children(u, depth)?),
        9 => NodeD::Tuple(children(u, depth)?),
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut items: Vec<(Key, NodeD)> = Vec::new();
            for _ in 0..n {
                let k = key(u)?;
                let v = node(u, depth + 1)?;
                if !items.iter().any(|(q, _)| *q == k) {
                    items.push((k, v));
                }
            }
            NodeD::Dict { ordered: u.arbitrary()?, items }
        }
    })
}

fn children(u: &mut Unstructured, depth: u32) -> Result<Vec<NodeD>> {
    let n = u.int_in_range(0..=4)?;
    (0..n).map(|_| node(u, depth + 1)).collect()
}

/// A dtype with the same element size and byte-swap unit.
fn alt_of(d: DType) -> DType {
    match d {
        DType::F32 => DType::I32,
        DType::I32 | DType::U32 => DType::F32,
        DType::F16 => DType::BF16,
        DType::BF16 | DType::I16 | DType::U16 => DType::F16,
        DType::F64 => DType::I64,
        DType::I64 | DType::U64 => DType::F64,
        DType::U8 => DType::I8,
        DType::I8 | DType::Bool => DType::U8,
        DType::F8E4M3Fn | DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz | DType::F8E8M0Fnu => DType::U8,
        DType::C32 | DType::C64 | DType::C128 => d,
    }
}

fn dtype(i: u8) -> DType {
    DType::ALL[i as usize % DType::ALL.len()]
}

struct Built {
    ckpt: Checkpoint,
    /// Some storage is viewed with two element sizes (torch.save refuses that; a writer may).
    mixed_sizes: bool,
}

fn build(u: &mut Unstructured) -> Result<Option<Built>> {
    let mut storages: Vec<StorageD> = u.arbitrary()?;
    storages.truncate(4);
    storages.retain(|s| !s.views.is_empty());
    for s in &mut storages {
        s.views.truncate(4);
    }
    let root_items = match node(u, 0)? {
        NodeD::Dict { items, .. } => items,
        other => vec![(Key::Str("x".into()), other)],
    };
    let ordered: bool = u.arbitrary()?;
    let data: Vec<u8> = u.arbitrary()?;

    // Views, in generation order: (storage index, tensor without a name).
    let mut views: Vec<Tensor> = Vec::new();
    let mut lens = Vec::new();
    let mut mixed_sizes = false;
    for (si, s) in storages.iter().enumerate() {
        let base = dtype(s.dtype);
        let mut need_bytes = 0u64;
        let mut sizes = HashSet::new();
        for v in &s.views {
            let dt = match v.dtype {
                ViewDType::Same => base,
                ViewDType::Alt => alt_of(base),
                ViewDType::Any(i) if !s.big => dtype(i),
                ViewDType::Any(_) => base,
            };
            sizes.insert(dt.size());
            let ndim = v.shape.len().min(4);
            let shape: Vec<u64> = v.shape[..ndim].iter().map(|&d| u64::from(d % 6)).collect();
            let stride: Vec<u64> = (0..ndim).map(|i| u64::from(v.stride.get(i).copied().unwrap_or(1) % 7)).collect();
            let empty = shape.iter().any(|&d| d == 0);
            let offset = if empty { 0 } else { u64::from(v.offset % 9) };
            if !empty {
                let last = offset + shape.iter().zip(&stride).map(|(&d, &st)| (d - 1) * st).sum::<u64>();
                need_bytes = need_bytes.max((last + 1) * dt.size() as u64);
            }
            let grad_ok = dt.is_floating() || dt.is_complex();
            views.push(Tensor {
                name: String::new(),
                dtype: dt,
                shape,
                stride,
                offset,
                storage: StorageId(si),
                requires_grad: grad_ok && v.grad,
                parameter: dt.is_floating() && v.parameter,
            });
        }
        mixed_sizes |= sizes.len() > 1;
        // Whole elements of the storage's own dtype, with some slack at the end.
        let esize = base.size() as u64;
        let len = (need_bytes.div_ceil(esize) + u64::from(s.slack % 5)) * esize;
        lens.push(len);
    }
    let file_len = lens.iter().copied().max().unwrap_or(0).max(data.len() as u64) as usize;
    let mut file = data;
    let pad = file.len();
    while file.len() < file_len {
        let b = if pad == 0 { file.len() as u8 } else { file[file.len() % pad] };
        file.push(b.wrapping_mul(31).wrapping_add(7));
    }
    let path = common::write_input("storage.bin", &file);
    let source: Arc<Source> = match Source::open(&path) {
        Ok(s) => s,
        Err(_) => return Ok(None),
    };
    let model_storages: Vec<Storage> = storages
        .iter()
        .zip(&lens)
        .enumerate()
        .map(|(si, (s, &len))| Storage {
            key: Some(si.to_string()),
            location: ["cpu", "cpu", "cuda:0", "cuda:1", "mps", "meta"][s.device as usize % 6].into(),
            byte_order: if s.big { ByteOrder::Big } else { ByteOrder::Little },
            data: DataRef { source: source.clone(), offset: u64::from(s.at) % (file_len as u64 - len + 1), len },
            cast: None,
        })
        .collect();

    // The tree: tensors fill the Tensor slots in generation order; leftover views go to the
    // top level, leftover slots become None. Tensors are numbered depth-first, as readers do.
    let mut next = 0usize;
    let mut tensors = Vec::new();
    fn realize(n: NodeD, views: &[Tensor], next: &mut usize, tensors: &mut Vec<Tensor>) -> Node {
        match n {
            NodeD::None => Node::None,
            NodeD::Bool(b) => Node::Bool(b),
            NodeD::Int(i) => Node::Int(i),
            NodeD::Float(f) => Node::Float(f),
            NodeD::Str(s) => Node::Str(s),
            NodeD::Bytes(b) => Node::Bytes(b),
            NodeD::List(items) => Node::List(items.into_iter().map(|c| realize(c, views, next, tensors)).collect()),
            NodeD::Tuple(items) => Node::Tuple(items.into_iter().map(|c| realize(c, views, next, tensors)).collect()),
            NodeD::Dict { ordered, items } => Node::Dict { ordered, items: items.into_iter().map(|(k, c)| (k, realize(c, views, next, tensors))).collect() },
            NodeD::Tensor => match views.get(*next) {
                Some(t) => {
                    *next += 1;
                    tensors.push(t.clone());
                    Node::Tensor(tensors.len() - 1)
                }
                None => Node::None,
            },
        }
    }
    let mut items: Vec<(Key, Node)> = root_items.into_iter().map(|(k, c)| (k, realize(c, &views, &mut next, &mut tensors))).collect();
    for i in next..views.len() {
        let k = Key::Str(format!("t{i}"));
        if items.iter().any(|(q, _)| *q == k) {
            continue;
        }
        tensors.push(views[i].clone());
        items.push((k, Node::Tensor(tensors.len() - 1)));
    }
    // Storages no tensor views (their views collided with a key above) are dropped.
    let used: HashSet<StorageId> = tensors.iter().map(|t| t.storage).collect();
    let mut remap = HashMap::new();
    let mut kept = Vec::new();
    for (i, s) in model_storages.into_iter().enumerate() {
        if used.contains(&StorageId(i)) {
            remap.insert(StorageId(i), StorageId(kept.len()));
            kept.push(s);
        }
    }
    for t in &mut tensors {
        t.storage = remap[&t.storage];
    }
    let root = Node::Dict { ordered, items };
    let metadata = ckpt::read::flatten::flatten(&root, &mut tensors);
    let ckpt = Checkpoint { format: Format::PthZip, root, tensors, storages: kept, metadata, globals: Default::default(), names: Default::default(), origin: Origin::Data, files: Vec::new(), module_classes: Default::default(), modules: Vec::new() };
    Ok(Some(Built { ckpt, mixed_sizes }))
}

type Summary = Vec<(String, DType, Vec<u64>, String)>;

fn summary(c: &Checkpoint) -> Summary {
    c.tensors
        .iter()
        .map(|t| {
            let h = try_sha256_hex(c, t).unwrap_or_else(|e| panic!("hashing '{}': {e}", t.name));
            (t.name.clone(), t.dtype, t.shape.clone(), h)
        })
        .collect()
}

fn partition(c: &Checkpoint) -> Vec<usize> {
    let mut ids: HashMap<StorageId, usize> = HashMap::new();
    c.tensors
        .iter()
        .map(|t| {
            let n = ids.len();
            *ids.entry(t.storage).or_insert(n)
        })
        .collect()
}

/// The structure with what a .pth may change normalized (dict kinds; floats by bits).
fn norm(n: &Node) -> String {
    match n {
        Node::None => "None".into(),
        Node::Bool(b) => format!("{b}"),
        Node::Int(i) => format!("{i}"),
        Node::Float(f) => format!("f{:016x}", f.to_bits()),
        Node::Str(s) | Node::Opaque(s) => format!("{s:?}"),
        Node::Bytes(b) => format!("b{b:?}"),
        Node::List(items) => format!("[{}]", items.iter().map(norm).collect::<Vec<_>>().join(",")),
        Node::Tuple(items) => format!("({})", items.iter().map(norm).collect::<Vec<_>>().join(",")),
        Node::Dict { items, .. } => format!(
            "{{{}}}",
            items
                .iter()
                .map(|(k, v)| format!("{}:{}", match k { Key::Str(s) => format!("{s:?}"), Key::Int(i) => i.to_string() }, norm(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Node::Tensor(i) => format!("T{i}"),
    }
}

fn opts(format: OutFormat) -> WriteOptions {
    WriteOptions::new(format)
}

fn check_pth(orig: &Checkpoint, mixed_sizes: bool) {
    let out = common::fresh_output("out.pth");
    let r = write(orig, &out, &opts(OutFormat::Pth));
    if let Err(e) = &r {
        assert!(mixed_sizes, "pth write failed: {e}");
        return;
    }
    let back = ckpt::read::open(&out).unwrap_or_else(|e| panic!("reading back the .pth: {e}"));
    assert_eq!(summary(orig), summary(&back), "pth: tensors differ");
    for (a, b) in orig.tensors.iter().zip(&back.tensors) {
        assert_eq!(
            (&a.stride, a.offset, a.requires_grad, a.parameter),
            (&b.stride, b.offset, b.requires_grad, b.parameter),
            "pth: layout/flags of '{}'",
            a.name
        );
        assert_eq!(orig.storages[a.storage.0].location, back.storages[b.storage.0].location, "pth: device of '{}'", a.name);
        assert_eq!(back.storages[b.storage.0].byte_order, ByteOrder::Little, "pth: '{}' written big-endian", a.name);
    }
    assert_eq!(partition(orig), partition(&back), "pth: storage sharing");
    assert_eq!(norm(&orig.root), norm(&back.root), "pth: structure");
    assert_eq!(serde_json::to_string(&orig.metadata).unwrap(), serde_json::to_string(&back.metadata).unwrap(), "pth: metadata");
}

fn check_safetensors(orig: &Checkpoint) {
    let out = common::fresh_output("out.safetensors");
    let r = write(orig, &out, &opts(OutFormat::Safetensors));
    let unholdable = orig.tensors.iter().find(|t| t.dtype.safetensors_name().is_none());
    let names: HashSet<&str> = orig.tensors.iter().map(|t| t.name.as_str()).collect();
    let duplicate_names = names.len() != orig.tensors.len();
    match r {
        Err(e) => assert!(unholdable.is_some() || duplicate_names, "safetensors write failed: {e}"),
        Ok(_) => {
            assert!(unholdable.is_none(), "safetensors wrote a {} tensor", unholdable.unwrap().dtype);
            assert!(!duplicate_names, "safetensors wrote two tensors with one name");
            let back = ckpt::read::open(&out).unwrap_or_else(|e| panic!("reading back the safetensors: {e}"));
            let mut a = summary(orig);
            let mut b = summary(&back);
            a.sort();
            b.sort();
            assert_eq!(a, b, "safetensors: tensors differ");
            for (k, v) in &orig.metadata {
                let want = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(back.metadata.get(k), Some(&serde_json::Value::String(want)), "safetensors: metadata '{k}'");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(Some(built)) = build(&mut u) else { return };
    check_pth(&built.ckpt, built.mixed_sizes);
    check_safetensors(&built.ckpt);
});
