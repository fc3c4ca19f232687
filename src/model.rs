//! The one data model every reader produces and every writer consumes.
//!
//! A [`Checkpoint`] is a structure tree ([`Node`]) whose tensor leaves index into a flat list of
//! [`Tensor`]s; each tensor is a view (dtype, shape, strides, offset) of a [`Storage`], and a
//! storage is a byte range of an input file ([`DataRef`]) that is only read when a command asks.
//! Views, shared storages, device tags and requires_grad flags are kept as the file has them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::dtype::DType;
use crate::pickle::{Global, GlobalUse, Usage};
use crate::source::Source;

/// The container a checkpoint came in ([`Checkpoint::format`]). New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// `torch.save`'s zip format (its default since PyTorch 1.6).
    PthZip,
    /// `torch.save`'s legacy formats: one pickle stream (`_use_new_zipfile_serialization=False`)
    /// or the older tar archive.
    PthLegacy,
    /// A TorchScript archive (`torch.jit.save`).
    TorchScript,
    /// A safetensors file.
    Safetensors,
    /// A Hugging Face sharded checkpoint: an `*.index.json` and its shards.
    Sharded,
    /// A `torch.distributed.checkpoint` directory (FSDP, DTensor): a `.metadata` pickle and
    /// the `.distcp` files holding each tensor's chunks.
    Dcp,
    /// A DeepSpeed ZeRO checkpoint folder (`global_step10/`): per-rank model- and
    /// optimizer-states files, read as the fp32 weights `zero_to_fp32.py` recovers.
    Zero,
    /// Made in a program with [`crate::CheckpointBuilder`], not read from a file.
    Built,
}

impl Format {
    /// The name `ckpt inspect` shows.
    pub fn name(self) -> &'static str {
        match self {
            Format::PthZip => "pth-zip",
            Format::PthLegacy => "pth-legacy",
            Format::TorchScript => "torchscript",
            Format::Safetensors => "safetensors",
            Format::Sharded => "sharded",
            Format::Dcp => "dcp",
            Format::Zero => "deepspeed-zero",
            Format::Built => "built",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Byte order of a storage's elements in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
}

/// Where a storage's bytes are: a range of an input file.
#[derive(Debug, Clone)]
pub struct DataRef {
    pub source: Arc<Source>,
    pub offset: u64,
    pub len: u64,
}

impl DataRef {
    /// The bytes, straight from the map. The reader proved the range lies inside the file.
    #[cfg(any(feature = "ndarray", feature = "internals"))] // zero-copy views, and the tests
    pub fn bytes(&self) -> &[u8] {
        self.source.slice(self.offset, self.len).unwrap_or(&[])
    }
}

/// Index into [`Checkpoint::storages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageId(pub usize);

/// A block of raw tensor memory, as torch's storages are.
#[derive(Debug, Clone)]
pub struct Storage {
    /// The key the file gives it (zip `data/<key>`, legacy key); None where the format has no
    /// storages of its own (safetensors: one per tensor, never shared).
    pub key: Option<String>,
    /// The device tag saved with it: "cpu", "cuda:0", "mps"...
    pub location: String,
    pub byte_order: ByteOrder,
    pub data: DataRef,
    /// A pending element-type change (`convert --dtype`): the bytes in `data` hold `from`
    /// elements, every tensor on this storage already says `to`, and whoever streams the bytes
    /// out converts them. None: the bytes are what the tensors' dtype says.
    pub cast: Option<Cast>,
}

/// An element-type conversion applied while streaming a storage out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cast {
    pub from: DType,
    pub to: DType,
}

impl Storage {
    /// Bytes in the input file.
    #[cfg(feature = "internals")] // only the integration tests call it
    pub fn nbytes(&self) -> u64 {
        self.data.len
    }
    /// Bytes once streamed out (after any pending cast).
    pub fn out_nbytes(&self) -> u64 {
        match self.cast {
            Some(c) => self.data.len / c.from.size() as u64 * c.to.size() as u64,
            None => self.data.len,
        }
    }
}

/// A named tensor: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    /// In elements, as torch counts them.
    pub stride: Vec<u64>,
    /// In elements from the start of the storage.
    pub offset: u64,
    pub storage: StorageId,
    pub requires_grad: bool,
    /// Saved as an nn.Parameter (so its requires_grad is real), not a plain (detached) tensor.
    pub parameter: bool,
}

impl Tensor {
    /// Number of elements; readers have proved it does not overflow.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
    pub fn nbytes(&self) -> u64 {
        self.numel() * self.dtype.size() as u64
    }
    /// Whether the elements lie row-major and densely from `offset` on.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1u64;
        for (&dim, &stride) in self.shape.iter().zip(&self.stride).rev() {
            if dim != 1 && stride != expected {
                return false;
            }
            expected = expected.saturating_mul(dim);
        }
        true
    }
}

/// A key of a dict in the structure tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Str(String),
    Int(i64),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Str(s) => f.write_str(s),
            Key::Int(i) => write!(f, "{i}"),
        }
    }
}

/// Index into [`Checkpoint::tensors`].
pub type TensorIdx = usize;

/// The structure of what was saved, as far as it is data: containers, scalars and tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Node>),
    Tuple(Vec<Node>),
    /// `ordered` marks a `collections.OrderedDict` (what state_dict() returns).
    Dict {
        ordered: bool,
        items: Vec<(Key, Node)>,
    },
    Tensor(TensorIdx),
    /// Something ckpt keeps only as a description: an object of an unknown class without
    /// tensors, a torch.device, a big integer...
    Opaque(String),
}

impl Node {
    /// Whether a tensor lies anywhere below this node.
    pub fn has_tensor(&self) -> bool {
        match self {
            Node::Tensor(_) => true,
            Node::List(items) | Node::Tuple(items) => items.iter().any(Node::has_tensor),
            Node::Dict { items, .. } => items.iter().any(|(_, v)| v.has_tensor()),
            _ => false,
        }
    }
}

internal_fields! {
/// Everything a reader found in a checkpoint: open one with [`crate::open()`], find its tensors
/// with [`Checkpoint::tensor`] and [`Checkpoint::tensors`], make one with
/// [`crate::CheckpointBuilder`], write one with [`crate::write::write()`].
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub format: Format,
    pub root: Node,
    pub tensors: Vec<Tensor>,
    pub storages: Vec<Storage>,
    /// Non-tensor leaves by dotted name (training checkpoints), or safetensors' `__metadata__`.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Every global the file's pickles reference, with how each is used.
    pub globals: Globals,
    /// What the reader understood about how the file was saved.
    #[cfg_attr(not(any(feature = "cli", feature = "internals")), expect(dead_code, reason = "only the commands read it"))]
    pub origin: Origin,
    /// Every file the checkpoint was read from: the file itself, or a sharded checkpoint's index
    /// and shards. Writers never write over any of them.
    pub files: Vec<PathBuf>,
    /// The class (`torch.nn.modules.batchnorm.BatchNorm2d`) of every nn.Module with tensors of
    /// its own (whole models, TorchScript), by its path as tensor names spell it ("" for a root
    /// module); empty for files of plain tensors.
    #[cfg_attr(not(any(feature = "cli", feature = "internals")), expect(dead_code, reason = "only the commands read it"))]
    pub module_classes: BTreeMap<String, String>,
    /// Every nn.Module object of a whole model or TorchScript archive, as the file read holds
    /// them, in `named_modules()` order; empty for files of plain tensors and for checkpoints a
    /// transform made (writers save tensors, not module objects).
    #[cfg_attr(not(any(feature = "cli", feature = "internals")), expect(dead_code, reason = "only the commands read it"))]
    pub modules: Vec<Module>,
    /// Positions in `tensors` by name, for [`Checkpoint::tensor`]; start with
    /// `NameIndex::default()`.
    pub names: NameIndex,
}
}

/// One nn.Module object of a whole model (`torch.save(model)`) or a TorchScript archive: what
/// the file says of it without its code.
#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    /// Its path as `named_modules()` spells it: "" for the root, "layers.0.attn" below.
    pub path: String,
    /// Its class as the file names it: `torch.nn.modules.linear.Linear`, a user's
    /// `model.Block`, or TorchScript's `__torch__.torch.nn.modules.linear.Linear`.
    pub class: String,
    /// Its attributes of plain values (numbers, bools, strings, None, tuples and lists of
    /// them) in file order: `training` and the hyperparameters (`in_features`, `p`, `eps`...).
    /// Underscored internals, tensors, submodules and other objects are left out.
    pub attributes: Vec<(String, Node)>,
}

/// Where each tensor name lies in [`Checkpoint::tensors`], built on the first lookup. A cache:
/// transforms rename, drop and add tensors after a lookup may have built it, so every answer is
/// checked against the tensors (see [`Checkpoint::tensor`]).
#[derive(Debug, Clone, Default)]
pub struct NameIndex(OnceLock<HashMap<String, TensorIdx>>);

impl NameIndex {
    /// The position of `name`, if the first tensor of that name when the index was built lay
    /// there and still has that name; otherwise the tensors are searched in order.
    pub(crate) fn find(&self, tensors: &[Tensor], name: &str) -> Option<TensorIdx> {
        let index = self.0.get_or_init(|| {
            let mut map = HashMap::with_capacity(tensors.len());
            for (i, t) in tensors.iter().enumerate() {
                map.entry(t.name.clone()).or_insert(i);
            }
            map
        });
        match index.get(name) {
            Some(&i) if tensors.get(i).is_some_and(|t| t.name == name) => Some(i),
            // A miss, or a hit that `tensors` no longer agrees with: renamed, dropped or added
            // since the index was built. Only then is the list searched.
            _ => tensors.iter().position(|t| t.name == name),
        }
    }
}

/// Every global a checkpoint's pickles name, with how the pickles use each one (referenced,
/// called, instantiated, built), recorded once by the reader so that commands can judge them
/// (`scan::dangerous_globals`) without reading the file again. Serializes as the sorted list
/// of "module.name".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Globals {
    by_name: BTreeMap<String, (Global, BTreeSet<Usage>)>,
}

impl Globals {
    pub fn from_uses(uses: &[GlobalUse]) -> Globals {
        let mut g = Globals::default();
        for u in uses {
            g.by_name
                .entry(u.global.dotted())
                .or_insert_with(|| (u.global.clone(), BTreeSet::new()))
                .1
                .insert(u.usage);
        }
        g
    }
    /// Adds another file's globals (the shards of one checkpoint).
    pub fn merge(&mut self, other: &Globals) {
        for (name, (global, usages)) in &other.by_name {
            self.by_name
                .entry(name.clone())
                .or_insert_with(|| (global.clone(), BTreeSet::new()))
                .1
                .extend(usages.iter().copied());
        }
    }
    /// Each global with every way it is used.
    #[cfg(feature = "cli")] // only the commands use it
    pub fn uses(&self) -> impl Iterator<Item = (&Global, &BTreeSet<Usage>)> {
        self.by_name.values().map(|(g, u)| (g, u))
    }
}

/// Queries only `ckpt verify` (libtorch) and the integration tests make.
#[cfg(any(feature = "tch", feature = "internals"))]
impl Globals {
    /// The names, as "module.name", in order.
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.by_name.keys()
    }
}

/// Queries only the integration tests make.
#[cfg(feature = "internals")]
impl Globals {
    pub fn contains(&self, dotted: &str) -> bool {
        self.by_name.contains_key(dotted)
    }
    pub fn len(&self) -> usize {
        self.by_name.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl serde::Serialize for Globals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.by_name.keys())
    }
}

/// How the tensors got into the file, which decides what their flags mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Plain tensors and containers (a state_dict, a training checkpoint, safetensors).
    Data,
    /// A whole nn.Module pickled by `torch.save(model)`; names follow `model.state_dict()`.
    WholeModel,
    /// A TorchScript archive; names follow the scripted module's `state_dict()`.
    Scripted,
}

impl Checkpoint {
    /// The container it came in ([`Format::Built`] for a [`crate::CheckpointBuilder`]'s).
    ///
    /// ```
    /// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/model.safetensors");
    /// let ckpt = ckpt::open(&path)?;
    /// assert_eq!(ckpt.format(), ckpt::Format::Safetensors);
    /// # Ok::<(), ckpt::Error>(())
    /// ```
    pub fn format(&self) -> Format {
        self.format
    }
    pub(crate) fn storage(&self, id: StorageId) -> &Storage {
        &self.storages[id.0]
    }
    /// The number of elements of all its tensors: a model's parameter count (buffers included).
    pub fn total_params(&self) -> u64 {
        self.tensors.iter().map(Tensor::numel).sum()
    }
    /// The bytes of all its tensors' elements (views of one storage each counted whole).
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(Tensor::nbytes).sum()
    }
}
