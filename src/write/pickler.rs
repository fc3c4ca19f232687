//! data.pkl for the zip format: a pickle that `torch.load(weights_only=True)` and libtorch's C++
//! unpickler (`torch::pickle_load`, tch) both accept.
//!
//! Only protocol-2 opcodes, no FRAME, MEMOIZE, STACK_GLOBAL, SHORT_BINUNICODE or BINBYTES; only
//! globals on torch's weights-only allowlist: `torch._utils._rebuild_tensor_v2` (with a typed
//! storage class `torch.FloatStorage`...), `_rebuild_tensor_v3` (with `torch.storage.UntypedStorage`
//! and a dtype, for the dtypes without a typed storage class, as torch writes them),
//! `_rebuild_parameter`, `collections.OrderedDict` (the empty backward-hooks argument, as torch
//! writes it) and `_codecs.encode` (bytes, as Python pickles them at protocol 2). Every dict is
//! written as a plain dict, EMPTY_DICT + SETITEMS (dicts keep their order; libtorch cannot load
//! a top-level OrderedDict). Tensors are memoized, so one tensor reached twice loads as one
//! object; tensors that share a storage name the same storage key, so they share it after load.

use std::collections::HashMap;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{Checkpoint, Key, Node, StorageId, TensorIdx};

/// How one storage is named in the pickle.
#[derive(Debug, Clone)]
pub struct StorageSpec {
    /// The record `data/<key>`.
    pub key: String,
    pub location: String,
    /// The typed storage class (`FloatStorage`...) when every tensor on the storage has that
    /// dtype; None: `torch.storage.UntypedStorage`, tensors rebuilt by `_rebuild_tensor_v3`.
    pub typed: Option<DType>,
    /// Elements of `typed`, or bytes for an untyped storage.
    pub numel: u64,
}

mod op {
    pub const PROTO: u8 = 0x80;
    pub const STOP: u8 = b'.';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const BINFLOAT: u8 = b'G';
    pub const BINUNICODE: u8 = b'X';
    pub const EMPTY_LIST: u8 = b']';
    pub const APPENDS: u8 = b'e';
    pub const EMPTY_DICT: u8 = b'}';
    pub const SETITEMS: u8 = b'u';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const TUPLE: u8 = b't';
    pub const MARK: u8 = b'(';
    pub const GLOBAL: u8 = b'c';
    pub const REDUCE: u8 = b'R';
    pub const BINPERSID: u8 = b'Q';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
}

/// Items per APPENDS / SETITEMS batch, as CPython's pickler writes them.
const BATCH: usize = 1000;
/// Deeper trees than this are refused rather than risk the stack.
const MAX_DEPTH: usize = 10_000;

pub struct Pickler<'a> {
    ckpt: &'a Checkpoint,
    storages: &'a HashMap<StorageId, StorageSpec>,
    out: Vec<u8>,
    next_memo: u32,
    globals: HashMap<(&'static str, &'static str), u32>,
    tensors: HashMap<TensorIdx, u32>,
}

/// Pickles `root`; every tensor's storage must have a spec.
pub fn pickle(ckpt: &Checkpoint, root: &Node, storages: &HashMap<StorageId, StorageSpec>) -> Result<Vec<u8>> {
    let mut p = Pickler {
        ckpt,
        storages,
        out: Vec::new(),
        next_memo: 0,
        globals: HashMap::new(),
        tensors: HashMap::new(),
    };
    p.out.extend_from_slice(&[op::PROTO, 2]);
    p.node(root, 0)?;
    p.out.push(op::STOP);
    Ok(p.out)
}

impl Pickler<'_> {
    fn put(&mut self) -> u32 {
        let id = self.next_memo;
        self.next_memo += 1;
        if id < 256 {
            self.out.extend_from_slice(&[op::BINPUT, id as u8]);
        } else {
            self.out.push(op::LONG_BINPUT);
            self.out.extend_from_slice(&id.to_le_bytes());
        }
        id
    }

    fn get(&mut self, id: u32) {
        if id < 256 {
            self.out.extend_from_slice(&[op::BINGET, id as u8]);
        } else {
            self.out.push(op::LONG_BINGET);
            self.out.extend_from_slice(&id.to_le_bytes());
        }
    }

    fn global(&mut self, module: &'static str, name: &'static str) {
        if let Some(&id) = self.globals.get(&(module, name)) {
            return self.get(id);
        }
        self.out.push(op::GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let id = self.put();
        self.globals.insert((module, name), id);
    }

    fn bool(&mut self, b: bool) {
        self.out.push(if b { op::NEWTRUE } else { op::NEWFALSE });
    }

    fn int(&mut self, v: i64) {
        if (0..=0xff).contains(&v) {
            self.out.extend_from_slice(&[op::BININT1, v as u8]);
        } else if (0..=0xffff).contains(&v) {
            self.out.push(op::BININT2);
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if let Ok(v) = i32::try_from(v) {
            self.out.push(op::BININT);
            self.out.extend_from_slice(&v.to_le_bytes());
        } else {
            // Two's complement, little-endian, always 8 bytes: Python reads any length, and
            // libtorch's unpickler reads only 8 (it refuses the shorter form Python writes).
            self.out.extend_from_slice(&[op::LONG1, 8]);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn uint(&mut self, v: u64) -> Result<()> {
        let v = i64::try_from(v).map_err(|_| Error::Unwritable {
            tensor: String::new(),
            why: format!("{v} does not fit a pickled integer"),
        })?;
        self.int(v);
        Ok(())
    }

    fn str(&mut self, s: &str) {
        self.out.push(op::BINUNICODE);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// `_codecs.encode(text, 'latin1')`: how Python 3 pickles bytes at protocol 2.
    fn bytes(&mut self, b: &[u8]) {
        self.global("_codecs", "encode");
        let text: String = b.iter().map(|&c| c as char).collect();
        self.str(&text);
        self.str("latin1");
        self.out.extend_from_slice(&[op::TUPLE2, op::REDUCE]);
    }

    fn tuple_end(&mut self, n: usize) {
        match n {
            1 => self.out.push(op::TUPLE1),
            2 => self.out.push(op::TUPLE2),
            3 => self.out.push(op::TUPLE3),
            _ => self.out.push(op::TUPLE),
        }
    }

    fn uint_tuple(&mut self, values: &[u64]) -> Result<()> {
        if values.is_empty() {
            self.out.push(op::EMPTY_TUPLE);
            return Ok(());
        }
        if values.len() > 3 {
            self.out.push(op::MARK);
        }
        for &v in values {
            self.uint(v)?;
        }
        self.tuple_end(values.len());
        Ok(())
    }

    fn node(&mut self, node: &Node, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::Unwritable {
                tensor: String::new(),
                why: format!("the structure nests deeper than {MAX_DEPTH} levels"),
            });
        }
        match node {
            Node::None => self.out.push(op::NONE),
            Node::Bool(b) => self.bool(*b),
            Node::Int(i) => self.int(*i),
            Node::Float(f) => {
                self.out.push(op::BINFLOAT);
                self.out.extend_from_slice(&f.to_bits().to_be_bytes());
            }
            Node::Str(s) | Node::Opaque(s) => self.str(s),
            Node::Bytes(b) => self.bytes(b),
            Node::List(items) => {
                self.out.push(op::EMPTY_LIST);
                for batch in items.chunks(BATCH) {
                    self.out.push(op::MARK);
                    for item in batch {
                        self.node(item, depth + 1)?;
                    }
                    self.out.push(op::APPENDS);
                }
            }
            Node::Tuple(items) => {
                if items.is_empty() {
                    self.out.push(op::EMPTY_TUPLE);
                } else {
                    if items.len() > 3 {
                        self.out.push(op::MARK);
                    }
                    for item in items {
                        self.node(item, depth + 1)?;
                    }
                    self.tuple_end(items.len());
                }
            }
            Node::Dict { items, .. } => {
                self.out.push(op::EMPTY_DICT);
                for batch in items.chunks(BATCH) {
                    self.out.push(op::MARK);
                    for (k, v) in batch {
                        match k {
                            Key::Str(s) => self.str(s),
                            Key::Int(i) => self.int(*i),
                        }
                        self.node(v, depth + 1)?;
                    }
                    self.out.push(op::SETITEMS);
                }
            }
            Node::Tensor(idx) => self.tensor(*idx)?,
        }
        Ok(())
    }

    fn hooks(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(&[op::EMPTY_TUPLE, op::REDUCE]);
    }

    fn tensor(&mut self, idx: TensorIdx) -> Result<()> {
        if let Some(&id) = self.tensors.get(&idx) {
            self.get(id);
            return Ok(());
        }
        let ckpt = self.ckpt;
        let t = ckpt.tensors.get(idx).ok_or_else(|| Error::Unwritable {
            tensor: format!("#{idx}"),
            why: "the structure names a tensor that does not exist".into(),
        })?;
        let spec = self
            .storages
            .get(&t.storage)
            .ok_or_else(|| Error::Unwritable {
                tensor: t.name.clone(),
                why: "its storage was not planned".into(),
            })?
            .clone();
        let named = |e: Error| match e {
            Error::Unwritable { tensor, why } if tensor.is_empty() => Error::Unwritable {
                tensor: t.name.clone(),
                why,
            },
            other => other,
        };
        if t.parameter {
            self.global("torch._utils", "_rebuild_parameter");
        }
        // _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
        // _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype)
        let v3 = spec.typed.is_none();
        self.global(
            "torch._utils",
            if v3 { "_rebuild_tensor_v3" } else { "_rebuild_tensor_v2" },
        );
        self.out.push(op::MARK);
        {
            // ('storage', storage_type, key, location, numel)
            self.out.push(op::MARK);
            self.str("storage");
            match spec.typed.and_then(DType::storage_class) {
                Some(class) if !v3 => self.global("torch", class),
                _ => self.global("torch.storage", "UntypedStorage"),
            }
            self.str(&spec.key);
            self.str(&spec.location);
            self.uint(spec.numel).map_err(named)?;
            self.out.push(op::TUPLE);
            self.out.push(op::BINPERSID);
        }
        self.uint(t.offset).map_err(named)?;
        self.uint_tuple(&t.shape).map_err(named)?;
        self.uint_tuple(&t.stride).map_err(named)?;
        // A Parameter carries requires_grad itself; its data is a plain tensor.
        self.bool(t.requires_grad && !t.parameter);
        self.hooks();
        if v3 {
            self.global("torch", t.dtype.name());
        }
        self.out.push(op::TUPLE);
        self.out.push(op::REDUCE);
        if t.parameter {
            self.bool(t.requires_grad);
            self.hooks();
            self.out.extend_from_slice(&[op::TUPLE3, op::REDUCE]);
        }
        let id = self.put();
        self.tensors.insert(idx, id);
        Ok(())
    }
}
