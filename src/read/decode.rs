//! Turns the value tree of a torch pickle into ckpt's structure tree.
//!
//! Calls of `torch._utils._rebuild_*` become tensors (their storage comes from the persistent
//! id, resolved by the format's [`StorageProvider`]); a DTensor becomes its local shard, with a
//! note on its placements and mesh; OrderedDict, set, `_codecs.encode`, torch.Size become plain
//! containers; torch.dtype, torch.device, torch.layout become their `str()` text; an nn.Module
//! object graph (from `torch.save(model)`, or a TorchScript archive) becomes the flat
//! OrderedDict `model.state_dict()` would return; any other object stays opaque unless tensors
//! live inside it. Nothing is executed: this only reads.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{Key, Module, Node, StorageId, Tensor, TensorIdx};
use crate::pickle::{Global, Heap, Instance, Obj, ObjId, Value};
use crate::read::script::{ScriptClass, ScriptClasses};

/// Bounds on what decoding may build, against object graphs that share one object many times
/// (a DAG that expands exponentially into a tree) or nest without end.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    pub max_depth: usize,
    pub max_nodes: usize,
    /// Bytes of strings and bytes copied into the tree.
    pub max_bytes: usize,
    /// Largest logical size of one tensor (elements x element size). A stride-0 view of one
    /// element may claim any shape; hashing or converting it costs its logical size.
    pub max_view_bytes: u64,
    /// Module visits while flattening a whole model: shared submodules are repeated under every
    /// name (as `state_dict()` does), so a graph sharing each child twice explodes exponentially.
    pub max_modules: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // A whole model nests a few dozen levels; a training checkpoint a handful. Millions of
        // nodes cover the largest optimizer states while a memo bomb still stops in milliseconds.
        // No real tensor reaches 1 TiB; real models have thousands of modules, not 262 144.
        DecodeLimits {
            max_depth: 512,
            max_nodes: 20_000_000,
            max_bytes: 256 << 20,
            max_view_bytes: 1 << 40,
            max_modules: 1 << 18,
        }
    }
}

/// A storage as a persistent id `('storage', storage_type, key, location, numel[, view])` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePid {
    /// The element type of a typed storage (`torch.FloatStorage`); None for `UntypedStorage`.
    pub dtype: Option<DType>,
    pub key: String,
    pub location: String,
    /// Elements for a typed storage, bytes for an untyped one.
    pub numel: u64,
    /// Legacy format only: (root key, byte offset, size in elements) of a storage view.
    pub view: Option<(String, u64, u64)>,
}

/// A resolved storage: its id in the checkpoint and its size in bytes.
#[derive(Debug, Clone, Copy)]
pub struct StorageRef {
    pub id: StorageId,
    pub nbytes: u64,
}

/// Finds the bytes behind a persistent id; each format keeps them elsewhere.
pub trait StorageProvider {
    fn storage(&mut self, pid: &StoragePid) -> std::result::Result<StorageRef, String>;
}

/// What decoding produced.
#[derive(Debug)]
pub struct Decoded {
    pub root: Node,
    pub tensors: Vec<Tensor>,
    /// Whether an nn.Module object graph was turned into a state dict.
    pub saw_module: bool,
    /// What a tensor was saved as when ckpt reads only part of it: a DTensor's placements and
    /// mesh, for the local shard that `tensors` holds.
    pub notes: Vec<(TensorIdx, String)>,
    /// The class of every nn.Module object with tensors of its own, by its path as tensor names
    /// spell it.
    pub module_classes: BTreeMap<String, String>,
    /// Every module object, with its class and plain attributes, in `named_modules()` order.
    pub modules: Vec<Module>,
}

#[derive(Debug, Clone)]
struct TensorSpec {
    storage: StorageId,
    dtype: DType,
    shape: Vec<u64>,
    stride: Vec<u64>,
    offset: u64,
    requires_grad: bool,
    parameter: bool,
    note: Option<String>,
}

pub struct Decoder<'a> {
    heap: &'a Heap,
    provider: &'a mut dyn StorageProvider,
    file: &'a Path,
    record: &'a str,
    script: Option<&'a ScriptClasses>,
    limits: DecodeLimits,
    specs: HashMap<ObjId, TensorSpec>,
    tensors: Vec<Tensor>,
    notes: Vec<(TensorIdx, String)>,
    active: HashSet<ObjId>,
    /// The dict keys leading to what is being decoded, for error messages.
    place: Vec<String>,
    nodes: usize,
    bytes: usize,
    modules: usize,
    saw_module: bool,
    module_classes: BTreeMap<String, String>,
    module_objects: Vec<Module>,
}

const REBUILD_FUNCS: [&str; 6] = [
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_from_type_v2",
];

/// Below these, a pickle may expand as it likes (65 536 values, 16 MiB).
const NODES_FLOOR: usize = 1 << 16;
const BYTES_FLOOR: usize = 16 << 20;

/// Values (objects and the items they hold) and string/bytes payload of a heap.
fn heap_size(heap: &Heap) -> (usize, usize) {
    fn add<'v>(totals: &mut (usize, usize), items: impl Iterator<Item = &'v Value>) {
        for v in items {
            totals.0 += 1;
            totals.1 = totals.1.saturating_add(match v {
                Value::Str(s) => s.len(),
                Value::Bytes(b) | Value::BigInt(b) => b.len(),
                _ => 0,
            });
        }
    }
    let mut totals = (0usize, 0usize);
    for i in 0..heap.len() {
        totals.0 += 1;
        match heap.get(ObjId(i as u32)) {
            Obj::Tuple(items) | Obj::List(items) | Obj::Set(items) | Obj::FrozenSet(items) => {
                add(&mut totals, items.iter())
            }
            Obj::Dict(pairs) => add(&mut totals, pairs.iter().flat_map(|(k, v)| [k, v])),
            Obj::ByteArray(b) => totals.1 = totals.1.saturating_add(b.len()),
            Obj::Global(_) => {}
            Obj::PersistentId(v) => add(&mut totals, std::iter::once(v)),
            Obj::Instance(inst) => {
                add(
                    &mut totals,
                    [&inst.callable, &inst.args]
                        .into_iter()
                        .chain(inst.kwargs.iter())
                        .chain(inst.state.iter()),
                );
                add(&mut totals, inst.list_items.iter());
                add(&mut totals, inst.dict_items.iter().flat_map(|(k, v)| [k, v]));
            }
        }
    }
    totals
}

fn is_rebuild(g: &Global) -> bool {
    (g.module == "torch._utils" || g.module == "torch._tensor") && REBUILD_FUNCS.contains(&g.name.as_str())
}

impl<'a> Decoder<'a> {
    pub fn new(
        heap: &'a Heap,
        provider: &'a mut dyn StorageProvider,
        file: &'a Path,
        record: &'a str,
        script: Option<&'a ScriptClasses>,
        limits: DecodeLimits,
    ) -> Self {
        Decoder {
            heap,
            provider,
            file,
            record,
            script,
            limits,
            specs: HashMap::new(),
            tensors: Vec::new(),
            notes: Vec::new(),
            active: HashSet::new(),
            place: Vec::new(),
            nodes: 0,
            bytes: 0,
            modules: 0,
            saw_module: false,
            module_classes: BTreeMap::new(),
            module_objects: Vec::new(),
        }
    }

    fn err(&self, what: impl Into<String>) -> Error {
        let place = if self.place.is_empty() {
            self.record.to_string()
        } else {
            format!("{}, at '{}'", self.record, self.place.join("."))
        };
        Error::malformed(self.file, place, what)
    }

    fn count(&mut self, bytes: usize) -> Result<()> {
        self.nodes += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.nodes > self.limits.max_nodes {
            return Err(self.err(format!(
                "the object graph expands to more than {} values (shared references repeated too often)",
                self.limits.max_nodes
            )));
        }
        if self.bytes > self.limits.max_bytes {
            return Err(self.err(format!("more than {} bytes of strings", self.limits.max_bytes)));
        }
        Ok(())
    }

    /// Decodes the tree under `root`. Object graphs nest as deep as `max_depth` (a hostile
    /// pickle deeper still), so the walk keeps its own stack of [`Frame`]s on the heap instead
    /// of recursing: any caller's thread has stack enough.
    pub fn decode(mut self, root: &Value) -> Result<Decoded> {
        // Shared references (the memo) let a small pickle describe a huge tree. A real pickle
        // visits each value about once (a layer shared across depth, a dozen times), so the tree
        // may hold at most 32 times the pickle's own values and 4 times its string bytes, with
        // floors for small pickles; the absolute limits still apply.
        let (values, payload) = heap_size(self.heap);
        self.limits.max_nodes = self.limits.max_nodes.min(values.saturating_mul(32).max(NODES_FLOOR));
        self.limits.max_bytes = self.limits.max_bytes.min(payload.saturating_mul(4).max(BYTES_FLOOR));
        let root = self.walk(root.clone())?;
        Ok(Decoded {
            root,
            tensors: self.tensors,
            saw_module: self.saw_module,
            notes: self.notes,
            module_classes: self.module_classes,
            modules: self.module_objects,
        })
    }

    /// Runs the explicit stack: a frame asks for the node of one part at a time
    /// ([`Step::Want`]) and is resumed with it; a finished frame's node goes to the frame below.
    fn walk(&mut self, root: Value) -> Result<Node> {
        let mut stack: Vec<Frame<'a>> = Vec::new();
        let mut step = self.start(Want::Value(root, 0, None), &mut stack)?;
        loop {
            step = match step {
                Step::Want(want) => self.start(want, &mut stack)?,
                Step::Made(node) => match stack.pop() {
                    Some(frame) => self.resume(frame, node, &mut stack)?,
                    None => return Ok(node),
                },
            };
        }
    }

    /// Begins decoding a part: a leaf is made at once; anything else pushes its frame and asks
    /// for its first part.
    fn start(&mut self, want: Want<'a>, stack: &mut Vec<Frame<'a>>) -> Result<Step<'a>> {
        match want {
            Want::Value(v, depth, place) => {
                self.enter(place, stack);
                self.node(&v, depth, stack)
            }
            Want::Module {
                inst,
                prefix,
                depth,
                place,
            } => {
                self.enter(place, stack);
                self.module(inst, prefix, depth, stack)
            }
        }
    }

    /// Pushes a part's place, to be popped ([`Frame::Unplace`]) once its node is made.
    fn enter(&mut self, place: Option<String>, stack: &mut Vec<Frame<'a>>) {
        if let Some(place) = place {
            self.place.push(place);
            stack.push(Frame::Unplace);
        }
    }

    /// Resumes `frame` with the node of the part it asked for.
    fn resume(&mut self, frame: Frame<'a>, node: Node, stack: &mut Vec<Frame<'a>>) -> Result<Step<'a>> {
        match frame {
            Frame::Unplace => {
                self.place.pop();
                Ok(Step::Made(node))
            }
            Frame::Release(id) => {
                self.active.remove(&id);
                Ok(Step::Made(node))
            }
            Frame::Seq(mut seq) => {
                seq.done.push(node);
                Ok(seq.next(stack))
            }
            Frame::Dict(mut dict) => {
                if let Some(last) = dict.items.last_mut() {
                    last.1 = node;
                }
                Ok(self.next_pair(dict, stack))
            }
            Frame::Unwrap { tuple } => Ok(Step::Made(match node {
                Node::List(items) | Node::Tuple(items) if tuple => Node::Tuple(items),
                Node::List(items) | Node::Tuple(items) => Node::List(items),
                other => other,
            })),
            Frame::Opaque(mut opaque) => {
                opaque.parts.push(node);
                Ok(self.next_part(opaque, stack))
            }
            Frame::Module(mut module) => {
                self.module_part(&mut module, node)?;
                self.next_module_step(module, stack)
            }
        }
    }

    fn node(&mut self, v: &Value, depth: usize, stack: &mut Vec<Frame<'a>>) -> Result<Step<'a>> {
        if depth > self.limits.max_depth {
            return Err(self.err(format!("nested deeper than {} levels", self.limits.max_depth)));
        }
        let leaf = match v {
            Value::None => {
                self.count(0)?;
                Node::None
            }
            Value::Bool(b) => {
                self.count(0)?;
                Node::Bool(*b)
            }
            Value::Int(i) => {
                self.count(0)?;
                Node::Int(*i)
            }
            Value::BigInt(b) => {
                self.count(b.len())?;
                Node::Opaque(format!("integer of {} bytes", b.len()))
            }
            Value::Float(f) => {
                self.count(0)?;
                Node::Float(*f)
            }
            Value::Str(s) => {
                self.count(s.len())?;
                Node::Str(s.to_string())
            }
            Value::Bytes(b) => {
                self.count(b.len())?;
                Node::Bytes(b.to_vec())
            }
            Value::Obj(id) => {
                self.count(0)?;
                if !self.active.insert(*id) {
                    return Ok(Step::Made(Node::Opaque("<recursive reference>".into())));
                }
                // Out of the active set again once its node is made.
                stack.push(Frame::Release(*id));
                return self.obj(*id, depth, stack);
            }
        };
        Ok(Step::Made(leaf))
    }

    /// A tuple, list or set (`tuple`: made a tuple) whose items are decoded one level deeper.
    fn seq(items: &'a [Value], tuple: bool, depth: usize, stack: &mut Vec<Frame<'a>>) -> Step<'a> {
        let done = Vec::with_capacity(items.len().min(1 << 16));
        SeqFrame {
            items,
            tuple,
            depth,
            done,
        }
        .next(stack)
    }

    /// A dict whose values are decoded one level deeper, each under its key.
    fn dict(
        &mut self,
        pairs: Cow<'a, [(Value, Value)]>,
        ordered: bool,
        depth: usize,
        stack: &mut Vec<Frame<'a>>,
    ) -> Step<'a> {
        let items = Vec::with_capacity(pairs.len().min(1 << 16));
        self.next_pair(
            DictFrame {
                pairs,
                ordered,
                depth,
                items,
            },
            stack,
        )
    }

    fn next_pair(&mut self, mut dict: DictFrame<'a>, stack: &mut Vec<Frame<'a>>) -> Step<'a> {
        let Some((k, v)) = dict.pairs.get(dict.items.len()) else {
            return Step::Made(Node::Dict {
                ordered: dict.ordered,
                items: dict.items,
            });
        };
        let key = self.key(k);
        let want = Want::Value(v.clone(), dict.depth + 1, Some(key.to_string()));
        // The value's node replaces the placeholder when it is made.
        dict.items.push((key, Node::None));
        stack.push(Frame::Dict(dict));
        Step::Want(want)
    }

    fn key(&self, k: &Value) -> Key {
        match k {
            Value::Str(s) => Key::Str(s.to_string()),
            Value::Int(i) => Key::Int(*i),
            Value::Bool(b) => Key::Int(*b as i64),
            Value::Float(f) => Key::Str(f.to_string()),
            Value::None => Key::Str("None".into()),
            Value::Bytes(b) => Key::Str(String::from_utf8_lossy(b).into_owned()),
            other => Key::Str(self.describe(other)),
        }
    }

    fn describe(&self, v: &Value) -> String {
        match self.heap.obj(v) {
            Some(Obj::Global(g)) => g.dotted(),
            Some(Obj::Instance(i)) => match self.callee(i) {
                Some(g) => format!("<{} object>", g.dotted()),
                None => "<object>".into(),
            },
            Some(Obj::Tuple(_)) => "<tuple>".into(),
            _ => "<value>".into(),
        }
    }

    fn obj(&mut self, id: ObjId, depth: usize, stack: &mut Vec<Frame<'a>>) -> Result<Step<'a>> {
        let heap = self.heap;
        Ok(match heap.get(id) {
            Obj::Tuple(items) => Self::seq(items, true, depth, stack),
            Obj::List(items) | Obj::Set(items) | Obj::FrozenSet(items) => Self::seq(items, false, depth, stack),
            Obj::Dict(pairs) => self.dict(Cow::Borrowed(pairs), false, depth, stack),
            Obj::ByteArray(b) => {
                self.count(b.len())?;
                Step::Made(Node::Bytes(b.clone()))
            }
            Obj::Global(g) => Step::Made(Node::Opaque(g.dotted())),
            Obj::PersistentId(_) => Step::Made(Node::Opaque("<persistent id>".into())),
            Obj::Instance(inst) => return self.instance(id, inst, depth, stack),
        })
    }
    /// The global an instance was made from: its callable, or the class inside a legacy
    /// `('module', cls, source_file, source)` persistent id; for an object that protocols 0 and 1
    /// make as `copyreg._reconstructor(cls, base, state)`, that `cls`.
    fn callee<'h>(&self, inst: &'h Instance) -> Option<&'h Global>
    where
        'a: 'h,
    {
        let heap: &'h Heap = self.heap;
        let class = |v: &Value| -> Option<&'h Global> {
            match heap.obj(v)? {
                Obj::Global(g) => Some(g),
                Obj::PersistentId(pid) => heap.tuple(pid)?.get(1).and_then(|c| heap.global(c)),
                _ => None,
            }
        };
        match heap.global(&inst.callable) {
            Some(g) if g.is("copyreg", "_reconstructor") || g.is("copy_reg", "_reconstructor") => {
                heap.tuple(&inst.args)?.first().and_then(class)
            }
            _ => class(&inst.callable),
        }
    }

    fn instance(
        &mut self,
        id: ObjId,
        inst: &'a Instance,
        depth: usize,
        stack: &mut Vec<Frame<'a>>,
    ) -> Result<Step<'a>> {
        let Some(g) = self.callee(inst) else {
            return Ok(self.opaque_object(inst, "<object>".into(), depth, stack));
        };
        if is_rebuild(g) {
            let spec = self.tensor_spec(id, depth)?;
            // A note copies strings of the pickle once per reference to the tensor, so it
            // counts against the string budget like any other copy.
            self.count(spec.note.as_ref().map_or(0, String::len))?;
            return Ok(Step::Made(self.new_tensor(spec)));
        }
        let heap = self.heap;
        let args: &[Value] = heap.tuple(&inst.args).unwrap_or(&[]);
        let unwrap = |stack: &mut Vec<Frame<'a>>, tuple: bool| match args.first() {
            Some(a) => {
                stack.push(Frame::Unwrap { tuple });
                Step::Want(Want::Value(a.clone(), depth + 1, None))
            }
            None if tuple => Step::Made(Node::Tuple(Vec::new())),
            None => Step::Made(Node::List(Vec::new())),
        };
        Ok(match (g.module.as_str(), g.name.as_str()) {
            ("collections", "OrderedDict") => {
                let pairs = ordered_dict_pairs(heap, inst, args);
                self.dict(Cow::Owned(pairs), true, depth, stack)
            }
            ("builtins" | "__builtin__", "set" | "frozenset") => unwrap(stack, false),
            ("torch", "Size") => unwrap(stack, true),
            (module, name) => match self.literal_call(module, name, args)? {
                Some(node) => Step::Made(node),
                None if self.script.is_some_and(|s| s.get(&g.dotted()).is_some())
                    || module_state(heap, inst).is_some() =>
                {
                    self.saw_module = true;
                    return self.module(inst, String::new(), depth, stack);
                }
                None => {
                    let label = format!("<{} object>", g.dotted());
                    self.opaque_object(inst, label, depth, stack)
                }
            },
        })
    }

    /// The value of a call that torch.save writes for a plain value (bytes, torch.device,
    /// torch.layout), made from its literal arguments; None for any other callable.
    fn literal_call(&mut self, module: &str, name: &str, args: &[Value]) -> Result<Option<Node>> {
        Ok(Some(match (module, name) {
            // b'' is pickled as a call of bytes() with no arguments.
            ("builtins" | "__builtin__", "bytes" | "bytearray") if args.is_empty() => Node::Bytes(Vec::new()),
            ("_codecs", "encode") => match args.first() {
                // Python 3 pickles bytes at protocol 2 as _codecs.encode(text, 'latin1').
                Some(Value::Str(s)) => {
                    let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
                    match bytes {
                        Some(b) => {
                            self.count(b.len())?;
                            Node::Bytes(b)
                        }
                        None => Node::Opaque("<encoded text>".into()),
                    }
                }
                _ => Node::Opaque("<encoded text>".into()),
            },
            ("torch", "device") => {
                let parts: Vec<String> = args
                    .iter()
                    .map(|a| match a {
                        Value::Str(s) => s.to_string(),
                        Value::Int(i) => i.to_string(),
                        _ => "?".into(),
                    })
                    .collect();
                Node::Opaque(parts.join(":"))
            }
            // torch.save registers `_get_layout(str(layout))` as the reduction of a torch.layout.
            ("torch.serialization", "_get_layout") => match args.first() {
                Some(Value::Str(s)) => {
                    self.count(s.len())?;
                    Node::Opaque(s.to_string())
                }
                _ => Node::Opaque("<torch.layout>".into()),
            },
            _ => return Ok(None),
        }))
    }

    /// An object of a class ckpt does not know: kept as a description, unless tensors live in its
    /// state or arguments, in which case that part is kept so the tensors can be found and named.
    fn opaque_object(
        &mut self,
        inst: &'a Instance,
        label: String,
        depth: usize,
        stack: &mut Vec<Frame<'a>>,
    ) -> Step<'a> {
        let opaque = OpaqueFrame {
            inst,
            label,
            depth,
            next: OpaquePart::State,
            parts: Vec::new(),
        };
        self.next_part(opaque, stack)
    }

    /// Asks for the object's next part, in order: state, dict items, list items, arguments.
    fn next_part(&mut self, mut opaque: OpaqueFrame<'a>, stack: &mut Vec<Frame<'a>>) -> Step<'a> {
        let (inst, depth) = (opaque.inst, opaque.depth);
        loop {
            let part = opaque.next;
            opaque.next = part.after();
            match part {
                OpaquePart::State => {
                    if let Some(state) = &inst.state {
                        stack.push(Frame::Opaque(opaque));
                        return Step::Want(Want::Value(state.clone(), depth + 1, None));
                    }
                }
                OpaquePart::DictItems if !inst.dict_items.is_empty() => {
                    stack.push(Frame::Opaque(opaque));
                    return self.dict(Cow::Borrowed(&inst.dict_items), false, depth, stack);
                }
                OpaquePart::ListItems if !inst.list_items.is_empty() => {
                    stack.push(Frame::Opaque(opaque));
                    return Self::seq(&inst.list_items, false, depth, stack);
                }
                OpaquePart::DictItems | OpaquePart::ListItems => {}
                OpaquePart::Args => {
                    stack.push(Frame::Opaque(opaque));
                    return Step::Want(Want::Value(inst.args.clone(), depth + 1, None));
                }
                OpaquePart::Done => {
                    let label = opaque.label;
                    return Step::Made(
                        opaque
                            .parts
                            .into_iter()
                            .find(Node::has_tensor)
                            .unwrap_or(Node::Opaque(label)),
                    );
                }
            }
        }
    }

    /// Begins `model.state_dict()`'s entries for one module: its parameters, then its persistent
    /// buffers, then each child module's, names prefixed as torch does ([`ModuleStep`]).
    fn module(
        &mut self,
        inst: &'a Instance,
        prefix: String,
        depth: usize,
        stack: &mut Vec<Frame<'a>>,
    ) -> Result<Step<'a>> {
        if depth > self.limits.max_depth {
            return Err(self.err(format!("modules nested deeper than {} levels", self.limits.max_depth)));
        }
        self.modules += 1;
        if self.modules > self.limits.max_modules {
            return Err(self.err(format!(
                "the model expands to more than {} modules (submodules shared too often)",
                self.limits.max_modules
            )));
        }
        self.record_module(inst)?;
        let steps = self.module_steps(inst, &prefix);
        let module = ModuleFrame {
            inst,
            prefix,
            depth,
            steps: steps.into_iter(),
            waiting: None,
            entries: Vec::new(),
        };
        self.next_module_step(module, stack)
    }

    /// What flattening one module does, in order. It depends on the object graph alone, so it
    /// is listed up front and then carried out part by part.
    fn module_steps(&self, inst: &'a Instance, prefix: &str) -> Vec<ModuleStep<'a>> {
        let heap = self.heap;
        let state = inst
            .state
            .as_ref()
            .and_then(|s| dict_pairs(heap, s))
            .unwrap_or_default();
        let script = self
            .callee(inst)
            .and_then(|g| self.script.and_then(|s| s.get(&g.dotted())));
        if let Some(class) = script {
            return self.script_module_steps(class, named(&state));
        }
        let field = |name: &str| state.iter().find(|(k, _)| str_of(k) == Some(name)).map(|(_, v)| v);
        let members = |name: &str| named(&field(name).and_then(|p| dict_pairs(heap, p)).unwrap_or_default());
        let params = members("_parameters")
            .into_iter()
            .filter(|(_, v)| !matches!(v, Value::None));
        let mut steps: Vec<ModuleStep> = params
            .map(|(name, v)| ModuleStep::Tensor { name, v, param: true })
            .collect();
        let non_persistent: HashSet<&str> = field("_non_persistent_buffers_set")
            .map(|s| set_strings(heap, s))
            .unwrap_or_default();
        let buffers = members("_buffers")
            .into_iter()
            .filter(|(name, v)| !matches!(v, Value::None) && !non_persistent.contains(name.as_str()));
        steps.extend(buffers.map(|(name, v)| ModuleStep::Tensor { name, v, param: false }));
        steps.push(ModuleStep::NoteClass);
        for (name, v) in members("_modules") {
            match heap.instance(&v) {
                Some(child) => steps.push(ModuleStep::Child { name, inst: child }),
                None if matches!(v, Value::None) => {}
                None => {
                    steps.push(ModuleStep::Fail(format!("submodule '{prefix}{name}' is not an object")));
                    break;
                }
            }
        }
        steps
    }

    /// A TorchScript module's steps: its attributes hold parameters, buffers and submodules
    /// side by side; the archive's code (`class`) says which is which.
    fn script_module_steps(&self, class: &ScriptClass, state: Vec<(String, Value)>) -> Vec<ModuleStep<'a>> {
        let mut steps = Vec::new();
        for param in [true, false] {
            let listed = |name: &str| match param {
                true => class.parameters.contains(name),
                false => class.buffers.contains(name),
            };
            let own = state
                .iter()
                .filter(|(name, v)| listed(name) && !matches!(v, Value::None));
            steps.extend(own.cloned().map(|(name, v)| ModuleStep::Tensor { name, v, param }));
        }
        steps.push(ModuleStep::NoteClass);
        for (name, v) in state {
            if let Some(child) = self.heap.instance(&v) {
                let is_module = self
                    .callee(child)
                    .is_some_and(|g| self.script.is_some_and(|s| s.get(&g.dotted()).is_some()));
                if is_module {
                    steps.push(ModuleStep::Child { name, inst: child });
                }
            }
        }
        steps
    }

    /// Carries out the module's steps up to the next part to decode.
    fn next_module_step(&mut self, mut module: ModuleFrame<'a>, stack: &mut Vec<Frame<'a>>) -> Result<Step<'a>> {
        while let Some(step) = module.steps.next() {
            let want = match step {
                ModuleStep::Tensor { name, v, param } => {
                    let want = Want::Value(v, module.depth + 1, Some(name.clone()));
                    module.waiting = Some((name, param));
                    want
                }
                ModuleStep::NoteClass => {
                    self.note_class(module.inst, !module.entries.is_empty());
                    continue;
                }
                ModuleStep::Child { name, inst } => Want::Module {
                    inst,
                    prefix: format!("{}{name}.", module.prefix),
                    depth: module.depth + 1,
                    place: Some(name),
                },
                ModuleStep::Fail(why) => return Err(self.err(why)),
            };
            stack.push(Frame::Module(module));
            return Ok(Step::Want(want));
        }
        Ok(Step::Made(Node::Dict {
            ordered: true,
            items: module.entries,
        }))
    }

    /// Takes the node of the module's part: one of its tensors, or a child module's entries.
    fn module_part(&mut self, module: &mut ModuleFrame<'a>, node: Node) -> Result<()> {
        let Some((name, is_param)) = module.waiting.take() else {
            if let Node::Dict { items, .. } = node {
                module.entries.extend(items);
            }
            return Ok(());
        };
        let prefix = &module.prefix;
        let Node::Tensor(idx) = node else {
            let kind = if is_param { "parameter" } else { "buffer" };
            return Err(self.err(format!("{kind} '{prefix}{name}' is not a tensor")));
        };
        // TorchScript stores parameters as plain tensors; the archive's code says they are
        // parameters, and their saved requires_grad is the real one.
        if is_param && self.script.is_some() {
            if let Some(t) = self.tensors.get_mut(idx) {
                t.parameter = true;
            }
        }
        module.entries.push((Key::Str(format!("{prefix}{name}")), node));
        Ok(())
    }

    /// Records the class of a module that holds tensors of its own (what `--keep-norms` needs;
    /// modules without tensors are skipped, which keeps a hostile graph of empty modules cheap).
    fn note_class(&mut self, inst: &'a Instance, has_tensors: bool) {
        if has_tensors {
            if let Some(class) = self.callee(inst) {
                self.module_classes.insert(self.place.join("."), class.dotted());
            }
        }
    }

    /// Records a module object as it is entered (so in `named_modules()` order): its path, its
    /// class, and its attributes of plain values; for TorchScript also its class constants,
    /// which the archive's code holds. Every value kept counts against the decoding limits,
    /// like any other node: a hostile graph sharing one big state among many modules stops.
    fn record_module(&mut self, inst: &'a Instance) -> Result<()> {
        let heap = self.heap;
        let global = self.callee(inst);
        let class = global.map_or_else(|| "<unknown class>".to_string(), Global::dotted);
        self.count(class.len())?;
        let state = inst.state.as_ref().and_then(|s| dict_pairs(heap, s)).unwrap_or_default();
        let script = global.and_then(|g| self.script.and_then(|s| s.get(&g.dotted())));
        let mut attributes = Vec::new();
        for (name, v) in named(&state) {
            // Underscored names are nn.Module's own bookkeeping (_parameters, hooks...). A
            // TorchScript module holds its parameters and buffers among its attributes, an
            // absent one (a Linear without bias) as None.
            let tensor_slot = script.is_some_and(|c| c.parameters.contains(&name) || c.buffers.contains(&name));
            if name.starts_with('_') || tensor_slot {
                continue;
            }
            if let Some(node) = self.plain(&v, 0)? {
                self.count(name.len())?;
                attributes.push((name, node));
            }
        }
        for (name, node) in script.map(|c| c.constants.as_slice()).unwrap_or_default() {
            self.count(name.len())?;
            attributes.push((name.clone(), node.clone()));
        }
        let path = self.place.join(".");
        // Paths repeat their parents' names: counted, a deep model of long names stops.
        self.count(path.len())?;
        self.module_objects.push(Module {
            path,
            class,
            attributes,
        });
        Ok(())
    }

    /// A plain value (a number, bool, string, None, or a tuple or list of them) as a node; None
    /// for anything else (tensors, objects, dicts).
    fn plain(&mut self, v: &Value, depth: usize) -> Result<Option<Node>> {
        const MAX_PLAIN_DEPTH: usize = 8;
        const MAX_PLAIN_ITEMS: usize = 64;
        let node = match v {
            Value::None => Node::None,
            Value::Bool(b) => Node::Bool(*b),
            Value::Int(i) => Node::Int(*i),
            Value::Float(f) => Node::Float(*f),
            Value::Str(s) => {
                self.count(s.len())?;
                return Ok(Some(Node::Str(s.to_string())));
            }
            Value::Obj(_) if depth < MAX_PLAIN_DEPTH => {
                let heap = self.heap;
                let (items, tuple) = match heap.obj(v) {
                    Some(Obj::Tuple(items)) => (items.as_slice(), true),
                    Some(Obj::List(items)) => (items.as_slice(), false),
                    Some(Obj::Instance(inst)) => {
                        let Some(g) = self.callee(inst) else { return Ok(None) };
                        let arg = heap.tuple(&inst.args).and_then(|a| a.first());
                        let items = match (g.module.as_str(), g.name.as_str()) {
                            // torch.Size is a tuple, pickled as `torch.Size((4, 3))`.
                            ("torch", "Size") => arg.and_then(|a| heap.tuple(a)).map(|t| (t, true)),
                            // TorchScript pickles a typed list as `build_intlist([1, 2])`...
                            ("torch.jit._pickle", "build_intlist" | "build_floatlist" | "build_boollist" | "build_doublelist") => {
                                match arg.and_then(|a| heap.obj(a)) {
                                    Some(Obj::List(items)) => Some((items.as_slice(), false)),
                                    _ => None,
                                }
                            }
                            // ...and other containers with their type: `restore_type_tag(value, type)`.
                            ("torch.jit._pickle", "restore_type_tag") => {
                                return match arg {
                                    Some(a) => self.plain(a, depth + 1),
                                    None => Ok(None),
                                };
                            }
                            _ => None,
                        };
                        match items {
                            Some(items) => items,
                            None => return Ok(None),
                        }
                    }
                    _ => return Ok(None),
                };
                if items.len() > MAX_PLAIN_ITEMS {
                    return Ok(None);
                }
                let mut nodes = Vec::with_capacity(items.len());
                for item in items {
                    match self.plain(item, depth + 1)? {
                        Some(node) => nodes.push(node),
                        None => return Ok(None),
                    }
                }
                if tuple {
                    Node::Tuple(nodes)
                } else {
                    Node::List(nodes)
                }
            }
            _ => return Ok(None),
        };
        self.count(0)?;
        Ok(Some(node))
    }

    fn new_tensor(&mut self, spec: TensorSpec) -> Node {
        let idx = self.tensors.len();
        self.tensors.push(Tensor {
            name: String::new(),
            dtype: spec.dtype,
            shape: spec.shape,
            stride: spec.stride,
            offset: spec.offset,
            storage: spec.storage,
            requires_grad: spec.requires_grad,
            parameter: spec.parameter,
        });
        if let Some(note) = spec.note {
            self.notes.push((idx, note));
        }
        Node::Tensor(idx)
    }

    /// The tensor a rebuild call makes, decoded once per pickled object (tied weights pickle
    /// one Parameter object twice and must come out sharing everything). Calls wrap calls
    /// (a Parameter around a tensor, a subclass around either); the chain is followed down to
    /// the storage, then each wrapper's part is applied on the way back up.
    fn tensor_spec(&mut self, id: ObjId, depth: usize) -> Result<TensorSpec> {
        let mut wrappers = Vec::new();
        let mut target = Rebuild::Object(id, depth);
        let mut spec = loop {
            target = match target {
                Rebuild::Object(id, depth) => match self.specs.get(&id) {
                    Some(spec) => break spec.clone(),
                    None => {
                        wrappers.push(Wrapper::Object(id));
                        self.rebuild_call(id, depth)?
                    }
                },
                Rebuild::Call(func, args, depth) => match self.unwrap_call(func, args, depth)? {
                    (Some(wrapper), inner) => {
                        wrappers.push(wrapper);
                        inner
                    }
                    (None, _) => break self.rebuild_tensor(func, args)?,
                },
            };
        };
        for wrapper in wrappers.into_iter().rev() {
            match wrapper {
                Wrapper::Object(id) => {
                    self.specs.insert(id, spec.clone());
                }
                Wrapper::Parameter { func, requires_grad } => {
                    spec.requires_grad = match requires_grad {
                        Some(Value::Bool(b)) => *b,
                        _ => return Err(self.err(format!("{func}: requires_grad is not a bool"))),
                    };
                    spec.parameter = true;
                }
                Wrapper::Subclass { parameter } => spec.parameter |= parameter,
                Wrapper::Shard {
                    requires_grad,
                    parameter,
                    note,
                } => {
                    spec.requires_grad = requires_grad;
                    spec.parameter = parameter;
                    spec.note = Some(note);
                }
            }
        }
        Ok(spec)
    }

    /// The rebuild call that pickled object `id` is.
    fn rebuild_call(&self, id: ObjId, depth: usize) -> Result<Rebuild<'a>> {
        if depth > self.limits.max_depth {
            return Err(self.err("tensor rebuild calls nested too deeply"));
        }
        let heap = self.heap;
        let Some(inst) = heap.instance(&Value::Obj(id)) else {
            return Err(self.err("expected a tensor"));
        };
        let Some(g) = self.callee(inst).filter(|g| is_rebuild(g)) else {
            return Err(self.err("expected a tensor rebuild call"));
        };
        let args = heap
            .tuple(&inst.args)
            .ok_or_else(|| self.err(format!("{} without an argument tuple", g.dotted())))?;
        Ok(Rebuild::Call(&g.name, args, depth))
    }

    /// For a call that wraps another tensor: what it adds, and the call or object it wraps.
    /// (None, _) for a call that rebuilds a tensor from its storage.
    fn unwrap_call(
        &self,
        func: &'a str,
        args: &'a [Value],
        depth: usize,
    ) -> Result<(Option<Wrapper<'a>>, Rebuild<'a>)> {
        let heap = self.heap;
        Ok(match func {
            "_rebuild_parameter" | "_rebuild_parameter_with_state" => {
                let inner = args.first().and_then(|a| match a {
                    Value::Obj(id) => Some(*id),
                    _ => None,
                });
                let inner = inner.ok_or_else(|| self.err(format!("{func}: first argument is not a tensor")))?;
                let wrapper = Wrapper::Parameter {
                    func,
                    requires_grad: args.get(1),
                };
                (Some(wrapper), Rebuild::Object(inner, depth + 1))
            }
            "_rebuild_from_type_v2" => {
                // (func, new_type, args, state): a tensor subclass; nn.Parameter is the one that matters.
                // A chain of these passes no object on the way down; it is bounded here.
                if depth > self.limits.max_depth {
                    return Err(self.err("tensor rebuild calls nested too deeply"));
                }
                if args
                    .first()
                    .and_then(|f| heap.global(f))
                    .is_some_and(|g| g.is("torch._utils", "_rebuild_wrapper_subclass"))
                {
                    let (wrapper, local) = self.wrapper_subclass(args)?;
                    return Ok((Some(wrapper), Rebuild::Object(local, depth + 1)));
                }
                let f = args.first().and_then(|f| heap.global(f)).filter(|g| is_rebuild(g));
                let f = f.ok_or_else(|| self.err("_rebuild_from_type_v2 of an unknown function"))?;
                let inner_args = args
                    .get(2)
                    .and_then(|a| heap.tuple(a))
                    .ok_or_else(|| self.err("_rebuild_from_type_v2 without arguments"))?;
                let parameter = args
                    .get(1)
                    .and_then(|t| heap.global(t))
                    .is_some_and(|t| t.name == "Parameter");
                (
                    Some(Wrapper::Subclass { parameter }),
                    Rebuild::Call(&f.name, inner_args, depth + 1),
                )
            }
            _ => (None, Rebuild::Call(func, args, depth)),
        })
    }

    /// `_rebuild_from_type_v2(_rebuild_wrapper_subclass, cls, (cls, dtype, size, stride, offset,
    /// layout, device, requires_grad), state)`: a tensor subclass without storage of its own. A
    /// DTensor keeps this process's shard in its state as `_local_tensor` (what torch.load gives
    /// as `._local_tensor`), and its placements and mesh in `_spec`; the shard is the tensor
    /// ckpt reads, with the DTensor's own flags (`_is_param` in the state marks a Parameter).
    fn wrapper_subclass(&self, args: &'a [Value]) -> Result<(Wrapper<'a>, ObjId)> {
        let heap = self.heap;
        let class = args
            .get(1)
            .and_then(|c| heap.global(c))
            .map_or_else(|| "?".into(), Global::dotted);
        let state = subclass_state(heap, args.get(3));
        let field = |name: &str| state.iter().find_map(|entries| lookup(entries, name));
        let Some(Value::Obj(local)) = field("_local_tensor") else {
            return Err(self.err(format!(
                "{class} is a tensor subclass without storage of its own; ckpt reads only DTensor's _local_tensor"
            )));
        };
        let wrapper: &[Value] = args.get(2).and_then(|a| heap.tuple(a)).unwrap_or(&[]);
        let shard = Wrapper::Shard {
            requires_grad: matches!(wrapper.get(7), Some(Value::Bool(true))),
            parameter: matches!(field("_is_param"), Some(Value::Bool(true))),
            note: dtensor_note(heap, field("_spec")),
        };
        Ok((shard, *local))
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata])`,
    /// `_rebuild_tensor_v3(..., dtype)` and the old `_rebuild_tensor(storage, offset, size, stride)`.
    fn rebuild_tensor(&mut self, func: &str, args: &[Value]) -> Result<TensorSpec> {
        let heap = self.heap;
        let pid_value = match args.first().and_then(|a| heap.obj(a)) {
            Some(Obj::PersistentId(p)) => p,
            _ => return Err(self.err(format!("{func}: first argument is not a storage"))),
        };
        let pid = parse_storage_pid(heap, pid_value).map_err(|e| self.err(e))?;
        let offset = args
            .get(1)
            .and_then(uint)
            .ok_or_else(|| self.err(format!("{func}: bad storage offset")))?;
        let shape = args
            .get(2)
            .and_then(|a| uints(heap, a))
            .ok_or_else(|| self.err(format!("{func}: bad size")))?;
        let stride = args
            .get(3)
            .and_then(|a| uints(heap, a))
            .ok_or_else(|| self.err(format!("{func}: bad stride")))?;
        let requires_grad = matches!(args.get(4), Some(Value::Bool(true)));
        let dtype = if func == "_rebuild_tensor_v3" {
            let g = args
                .get(6)
                .and_then(|d| heap.global(d))
                .ok_or_else(|| self.err("_rebuild_tensor_v3 without a dtype"))?;
            DType::parse(&g.name).ok_or_else(|| self.err(format!("unsupported dtype torch.{}", g.name)))?
        } else {
            pid.dtype
                .ok_or_else(|| self.err(format!("{func} of an untyped storage has no dtype")))?
        };
        if shape.len() != stride.len() {
            return Err(self.err(format!(
                "size has {} dimensions but stride has {}",
                shape.len(),
                stride.len()
            )));
        }
        let storage = self.provider.storage(&pid).map_err(|e| self.err(e))?;
        check_view(&shape, &stride, offset, dtype, storage.nbytes).map_err(|e| self.err(e))?;
        let logical = shape.iter().product::<u64>() * dtype.size() as u64; // check_view proved no overflow
        if logical > self.limits.max_view_bytes {
            return Err(self.err(format!(
                "a view of size {shape:?} ({logical} bytes) exceeds the limit of {} bytes for one tensor",
                self.limits.max_view_bytes
            )));
        }
        Ok(TensorSpec {
            storage: storage.id,
            dtype,
            shape,
            stride,
            offset,
            requires_grad,
            parameter: false,
            note: None,
        })
    }
}

/// What a step of the walk gives: a finished node, or a part it needs first.
enum Step<'a> {
    Made(Node),
    Want(Want<'a>),
}

/// A part to decode, with `place` (a dict key, an index, a member's name) pushed on the
/// decoder's place while it is decoded.
enum Want<'a> {
    /// A value at a depth.
    Value(Value, usize, Option<String>),
    /// A child module to flatten: its entries come back as an ordered dict.
    Module {
        inst: &'a Instance,
        prefix: String,
        depth: usize,
        place: Option<String>,
    },
}

/// A value being decoded, waiting on the walk's stack for the node of its current part.
enum Frame<'a> {
    /// Pops the decoder's place once the node above it is made.
    Unplace,
    /// Takes an object out of the active set (recursion guard) once its node is made.
    Release(ObjId),
    Seq(SeqFrame<'a>),
    Dict(DictFrame<'a>),
    /// `set(x)`, `frozenset(x)`, `torch.Size(x)`: the node of `x`, as a list or (`tuple`) a tuple.
    Unwrap {
        tuple: bool,
    },
    Opaque(OpaqueFrame<'a>),
    Module(ModuleFrame<'a>),
}

/// A tuple, list or set; its items are decoded one level deeper, each under its index.
struct SeqFrame<'a> {
    items: &'a [Value],
    tuple: bool,
    depth: usize,
    done: Vec<Node>,
}

impl<'a> SeqFrame<'a> {
    fn next(self, stack: &mut Vec<Frame<'a>>) -> Step<'a> {
        let i = self.done.len();
        let Some(item) = self.items.get(i) else {
            return Step::Made(if self.tuple {
                Node::Tuple(self.done)
            } else {
                Node::List(self.done)
            });
        };
        let want = Want::Value(item.clone(), self.depth + 1, Some(i.to_string()));
        stack.push(Frame::Seq(self));
        Step::Want(want)
    }
}

/// A dict; the last of `items` holds a placeholder until its value's node is made.
struct DictFrame<'a> {
    pairs: Cow<'a, [(Value, Value)]>,
    ordered: bool,
    depth: usize,
    items: Vec<(Key, Node)>,
}

/// An object of a class ckpt does not know, and the nodes of the parts decoded so far.
struct OpaqueFrame<'a> {
    inst: &'a Instance,
    label: String,
    depth: usize,
    next: OpaquePart,
    parts: Vec<Node>,
}

/// The parts of an opaque object where tensors may live, in the order they are looked at.
#[derive(Clone, Copy)]
enum OpaquePart {
    State,
    DictItems,
    ListItems,
    Args,
    Done,
}

impl OpaquePart {
    fn after(self) -> OpaquePart {
        match self {
            OpaquePart::State => OpaquePart::DictItems,
            OpaquePart::DictItems => OpaquePart::ListItems,
            OpaquePart::ListItems => OpaquePart::Args,
            OpaquePart::Args | OpaquePart::Done => OpaquePart::Done,
        }
    }
}

/// One nn.Module being flattened into `state_dict()` entries.
struct ModuleFrame<'a> {
    inst: &'a Instance,
    /// Its members' names start with this (`encoder.layers.0.`).
    prefix: String,
    depth: usize,
    steps: std::vec::IntoIter<ModuleStep<'a>>,
    /// The member whose tensor is being decoded, and whether it is a parameter; None while a
    /// child module is.
    waiting: Option<(String, bool)>,
    entries: Vec<(Key, Node)>,
}

/// One thing flattening a module does ([`Decoder::module_steps`]).
enum ModuleStep<'a> {
    /// Decode a member that must be a tensor (`param`: a parameter, else a buffer).
    Tensor {
        name: String,
        v: Value,
        param: bool,
    },
    /// Record the module's class if it has tensors of its own.
    NoteClass,
    Child {
        name: String,
        inst: &'a Instance,
    },
    /// Stop with this error.
    Fail(String),
}

/// Where the chain of a tensor's rebuild calls goes next.
enum Rebuild<'a> {
    /// A pickled object (decoded once, then shared), at a depth.
    Object(ObjId, usize),
    /// A call (function name, arguments), at a depth.
    Call(&'a str, &'a [Value], usize),
}

/// What a call that wraps a tensor adds to it, applied once the wrapped tensor is known.
enum Wrapper<'a> {
    /// Remember the tensor as this object's.
    Object(ObjId),
    /// `_rebuild_parameter(tensor, requires_grad, ...)`.
    Parameter {
        func: &'a str,
        requires_grad: Option<&'a Value>,
    },
    /// `_rebuild_from_type_v2` of a subclass; nn.Parameter makes a parameter.
    Subclass { parameter: bool },
    /// A DTensor's local shard, with the DTensor's flags and a note on its placements.
    Shard {
        requires_grad: bool,
        parameter: bool,
        note: String,
    },
}

/// The pairs of an `OrderedDict(...)` call: `OrderedDict([(k, v), ...])` as protocol 0 writers
/// pickle it, then the items set on it.
fn ordered_dict_pairs(heap: &Heap, inst: &Instance, args: &[Value]) -> Vec<(Value, Value)> {
    let mut pairs: Vec<(Value, Value)> = Vec::new();
    if let Some(Some(Obj::List(items))) = args.first().map(|a| heap.obj(a)) {
        for item in items {
            if let Some([k, v]) = heap.tuple(item).or_else(|| match heap.obj(item) {
                Some(Obj::List(l)) => Some(l.as_slice()),
                _ => None,
            }) {
                pairs.push((k.clone(), v.clone()));
            }
        }
    }
    pairs.extend(inst.dict_items.iter().cloned());
    pairs
}

/// Proves that every element of the view lies inside the storage, with checked arithmetic.
pub fn check_view(shape: &[u64], stride: &[u64], offset: u64, dtype: DType, storage_bytes: u64) -> Result<(), String> {
    let mut numel: u64 = 1;
    for &d in shape {
        numel = numel.checked_mul(d).ok_or("number of elements overflows")?;
    }
    numel
        .checked_mul(dtype.size() as u64)
        .ok_or("size in bytes overflows")?;
    if numel == 0 {
        return Ok(());
    }
    let mut last = offset;
    for (&d, &s) in shape.iter().zip(stride) {
        last = (d - 1)
            .checked_mul(s)
            .and_then(|x| last.checked_add(x))
            .ok_or("view extent overflows")?;
    }
    let end = last
        .checked_add(1)
        .and_then(|e| e.checked_mul(dtype.size() as u64))
        .ok_or("view extent overflows")?;
    if end > storage_bytes {
        return Err(format!(
            "view (offset {offset}, size {shape:?}, stride {stride:?}, {dtype}) reaches byte {end} of a {storage_bytes}-byte storage"
        ));
    }
    Ok(())
}

/// Reads `('storage', storage_type, key, location, numel[, view_metadata])`.
pub fn parse_storage_pid(heap: &Heap, pid: &Value) -> Result<StoragePid, String> {
    if let Value::Str(text) = pid {
        // Pickle protocol 0 writes a persistent id as text, the repr of torch's tuple; torch.load
        // fails on it too ("saved_id must be a tuple"), so there is nothing to agree with.
        let head: String = text.chars().take(40).collect();
        return Err(format!(
            "persistent id is text ({head:?}...), as pickle protocol 0 writes it; torch.load cannot read such a file either"
        ));
    }
    let items = heap.tuple(pid).ok_or("persistent id is not a tuple")?;
    match items.first() {
        Some(Value::Str(s)) if &**s == "storage" => {}
        Some(Value::Str(s)) => return Err(format!("persistent id of kind '{s}' is not a storage")),
        _ => return Err("persistent id without a kind".into()),
    }
    let class = items
        .get(1)
        .and_then(|c| heap.global(c))
        .ok_or("storage type is not a class")?;
    let dtype = if class.name == "UntypedStorage" {
        None
    } else {
        Some(
            DType::from_storage_class(&class.name)
                .ok_or_else(|| format!("unsupported storage type {}", class.dotted()))?,
        )
    };
    let key = match items.get(2) {
        Some(Value::Str(s)) => s.to_string(),
        Some(Value::Int(i)) => i.to_string(),
        _ => return Err("storage key is not a string".into()),
    };
    let location = match items.get(3) {
        Some(Value::Str(s)) => s.to_string(),
        _ => return Err("storage location is not a string".into()),
    };
    let numel = items.get(4).and_then(uint).ok_or("storage size is not a count")?;
    let view = match items.get(5) {
        None | Some(Value::None) => None,
        Some(v) => {
            let t = heap.tuple(v).ok_or("storage view is not a tuple")?;
            match t {
                [Value::Str(k), off, size] => Some((
                    k.to_string(),
                    uint(off).ok_or("bad view offset")?,
                    uint(size).ok_or("bad view size")?,
                )),
                _ => return Err("storage view is not (key, offset, size)".into()),
            }
        }
    };
    Ok(StoragePid {
        dtype,
        key,
        location,
        numel,
        view,
    })
}

fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn uints(heap: &Heap, v: &Value) -> Option<Vec<u64>> {
    let items = match heap.obj(v)? {
        Obj::Tuple(t) | Obj::List(t) => t,
        // torch.Size(...) is pickled as a REDUCE in some writers.
        Obj::Instance(i) => return heap.tuple(&i.args).and_then(|a| a.first()).and_then(|a| uints(heap, a)),
        _ => return None,
    };
    items.iter().map(uint).collect()
}

fn str_of(v: &Value) -> Option<&str> {
    match v {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

/// The pairs whose key is a string, with the key as the name.
fn named(pairs: &[(Value, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .filter_map(|(k, v)| str_of(k).map(|name| (name.to_string(), v.clone())))
        .collect()
}

/// The pairs of a dict or an OrderedDict instance.
fn dict_pairs(heap: &Heap, v: &Value) -> Option<Vec<(Value, Value)>> {
    match heap.obj(v)? {
        Obj::Dict(pairs) => Some(pairs.clone()),
        Obj::Instance(i) => Some(i.dict_items.clone()),
        _ => None,
    }
}

/// Strings in a set: a SET object or `builtins.set([...])`.
fn set_strings<'h>(heap: &'h Heap, v: &'h Value) -> HashSet<&'h str> {
    let items: &[Value] = match heap.obj(v) {
        Some(Obj::Set(items)) | Some(Obj::FrozenSet(items)) | Some(Obj::List(items)) => items,
        Some(Obj::Instance(i)) => match heap.tuple(&i.args).and_then(|a| a.first()).and_then(|a| heap.obj(a)) {
            Some(Obj::List(items)) | Some(Obj::Tuple(items)) => items,
            _ => &[],
        },
        _ => &[],
    };
    items.iter().filter_map(str_of).collect()
}

/// The `__dict__` of an nn.Module object: BUILD state holding `_parameters` and `_modules`.
fn module_state<'h>(heap: &'h Heap, inst: &'h Instance) -> Option<Vec<(Value, Value)>> {
    let pairs = dict_pairs(heap, inst.state.as_ref()?)?;
    let has = |name: &str| pairs.iter().any(|(k, _)| str_of(k) == Some(name));
    (has("_parameters") && has("_modules")).then_some(pairs)
}

/// Real states of the objects read for a DTensor (the DTensor, its spec, mesh and placements)
/// hold a dozen fields; looking at no more than this many keeps a hostile state, shared by
/// many objects, from costing time quadratic in the pickle's size.
const MAX_FIELDS: usize = 64;
/// Items of a tuple written into a note: a mesh has a few dimensions.
const MAX_NOTE_ITEMS: usize = 16;
/// Characters of a string written into a note.
const MAX_NOTE_CHARS: usize = 64;

/// The entries of a `_rebuild_from_type_v2` state: a `__dict__`, or a pair of (`__dict__` or
/// None, slots dict) as `torch._utils._get_obj_state` makes it.
fn subclass_state<'h>(heap: &'h Heap, state: Option<&'h Value>) -> Vec<&'h [(Value, Value)]> {
    match state {
        Some(s) => match heap.tuple(s) {
            Some(parts) => parts.iter().take(2).map(|p| entries(heap, p)).collect(),
            None => vec![entries(heap, s)],
        },
        None => Vec::new(),
    }
}

/// The first `MAX_FIELDS` entries of a dict or OrderedDict.
fn entries<'h>(heap: &'h Heap, v: &'h Value) -> &'h [(Value, Value)] {
    let pairs: &[(Value, Value)] = match heap.obj(v) {
        Some(Obj::Dict(pairs)) => pairs,
        Some(Obj::Instance(i)) => &i.dict_items,
        _ => &[],
    };
    &pairs[..pairs.len().min(MAX_FIELDS)]
}

fn lookup<'h>(entries: &'h [(Value, Value)], name: &str) -> Option<&'h Value> {
    entries.iter().find(|(k, _)| str_of(k) == Some(name)).map(|(_, v)| v)
}

/// The entries of an object's BUILD state.
fn fields<'h>(heap: &'h Heap, obj: &'h Value) -> &'h [(Value, Value)] {
    match heap.instance(obj).and_then(|i| i.state.as_ref()) {
        Some(state) => entries(heap, state),
        None => &[],
    }
}

/// `DTensor(placements=(Shard(dim=0),), mesh=DeviceMesh('cpu', shape=(1,)))`, from the pickled
/// DTensorSpec: the values torch saved, written the way Python prints them ("?" where the spec
/// lacks one). Placements print as `Class(field=value, ...)` of their pickled fields, which is
/// their repr for Shard and Replicate.
fn dtensor_note(heap: &Heap, spec: Option<&Value>) -> String {
    let spec = spec.map_or(&[][..], |s| fields(heap, s));
    let placements = lookup(spec, "placements").and_then(|p| heap.tuple(p)).map_or_else(
        || "?".into(),
        |items| py_tuple(items.iter().map(|p| placement_text(heap, p))),
    );
    let mesh = lookup(spec, "mesh").map_or_else(|| "?".into(), |m| mesh_text(heap, m));
    format!("DTensor(placements={placements}, mesh={mesh})")
}

fn placement_text(heap: &Heap, p: &Value) -> String {
    let Some(class) = heap.instance(p).and_then(|i| heap.instance_global(i)) else {
        return "?".into();
    };
    let fields: Vec<String> = fields(heap, p)
        .iter()
        .filter_map(|(k, v)| str_of(k).map(|k| format!("{}={}", clip(k), py_value(heap, v))))
        .collect();
    format!("{}({})", clip(&class.name), fields.join(", "))
}

/// `DeviceMesh('cuda', shape=(2, 4), dim_names=('dp', 'tp'))`; torch 2.11 keeps the shape in
/// `_layout.shape`, torch 2.15 as `_layout.axes` (one flat layout per mesh dimension, whose size
/// is the product of its own shape); the device type is in `_device_type` (older versions:
/// `device_type`).
fn mesh_text(heap: &Heap, mesh: &Value) -> String {
    let mesh = fields(heap, mesh);
    let device = lookup(mesh, "_device_type")
        .or_else(|| lookup(mesh, "device_type"))
        .map_or_else(|| "?".into(), |d| py_value(heap, d));
    let layout = lookup(mesh, "_layout").map(|l| fields(heap, l));
    let shape = layout
        .and_then(|l| {
            lookup(l, "shape")
                .and_then(|s| uints(heap, s))
                .or_else(|| axes_sizes(heap, l))
        })
        .map_or_else(|| "?".into(), |dims| py_tuple(dims.iter().map(u64::to_string)));
    let names = match lookup(mesh, "_mesh_dim_names").or_else(|| lookup(mesh, "mesh_dim_names")) {
        Some(n @ Value::Obj(_)) => format!(", dim_names={}", py_value(heap, n)),
        _ => String::new(),
    };
    format!("DeviceMesh({device}, shape={shape}{names})")
}

/// The size of each axis of a torch 2.15 `_MeshLayout`: the product of the axis's shape (1 for
/// an empty one). Only as many axes as a note shows are looked at.
fn axes_sizes(heap: &Heap, layout: &[(Value, Value)]) -> Option<Vec<u64>> {
    let axes = heap.tuple(lookup(layout, "axes")?)?;
    axes.iter()
        .take(MAX_NOTE_ITEMS + 1)
        .map(|axis| {
            let dims = uints(heap, lookup(fields(heap, axis), "shape")?)?;
            dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
        })
        .collect()
}

/// A scalar, or a tuple of scalars, as Python's repr writes it; "?" for anything else. One
/// level only: a pickle may nest tuples without end.
fn py_value(heap: &Heap, v: &Value) -> String {
    match heap.tuple(v) {
        Some(items) => py_tuple(items.iter().map(py_scalar)),
        None => py_scalar(v),
    }
}

fn py_scalar(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Str(s) => format!("'{}'", clip(s)),
        _ => "?".into(),
    }
}

/// Python's tuple syntax, `(a,)` for one item, `(a, b)` otherwise; "..." stands for items past
/// `MAX_NOTE_ITEMS`.
fn py_tuple(items: impl Iterator<Item = String>) -> String {
    let mut shown: Vec<String> = items.take(MAX_NOTE_ITEMS + 1).collect();
    if shown.len() > MAX_NOTE_ITEMS {
        shown[MAX_NOTE_ITEMS] = "...".into();
    }
    match shown.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", shown.join(", ")),
    }
}

/// A string of the pickle cut to `MAX_NOTE_CHARS` characters.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_NOTE_CHARS) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::flatten::flatten;

    /// Puts every storage at id 0, large enough for any view.
    struct AnyStorage;

    impl StorageProvider for AnyStorage {
        fn storage(&mut self, _: &StoragePid) -> std::result::Result<StorageRef, String> {
            Ok(StorageRef {
                id: StorageId(0),
                nbytes: 1 << 20,
            })
        }
    }

    fn decode(bytes: &[u8]) -> Result<Decoded> {
        let pickle = crate::pickle::parse(bytes, &crate::pickle::Limits::default()).expect("pickle parses");
        let mut provider = AnyStorage;
        let limits = DecodeLimits::default();
        Decoder::new(
            &pickle.heap,
            &mut provider,
            Path::new("t.pth"),
            "object pickle",
            None,
            limits,
        )
        .decode(&pickle.root)
    }

    /// BINUNICODE, the string opcode of protocol 1.
    fn text(s: &str) -> Vec<u8> {
        let mut out = vec![b'X'];
        out.extend((s.len() as u32).to_le_bytes());
        out.extend(s.as_bytes());
        out
    }

    #[test]
    fn nesting_at_the_depth_limit_decodes_on_a_small_stack() {
        // The walk keeps its stack on the heap: 500 nested lists (the limit is 512) fit in a
        // 256 KiB thread stack, where recursion needed some 9 KiB a level in a debug build.
        let mut pickle = vec![0x80, 2];
        pickle.extend(std::iter::repeat_n(b']', 500)); // EMPTY_LIST
        pickle.extend(std::iter::repeat_n(b'a', 499)); // APPEND: each list into its parent
        pickle.push(b'.');
        let r = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || decode(&pickle).map(|d| matches!(d.root, Node::List(_))))
            .expect("thread")
            .join();
        assert!(matches!(r, Ok(Ok(true))), "{r:?}");
    }

    #[test]
    fn protocol_0_torch_objects_read_as_torch_prints_them() {
        // The object pickle of torch 2.11's torch.save({'shape': torch.Size([3, 4]),
        // 'dev': torch.device('cuda', 1), 'dt': torch.float16, 'layout': torch.strided}, f,
        // _use_new_zipfile_serialization=False, pickle_protocol=0), which torch.load reads back.
        let pickle = b"(dp0\nVshape\np1\nctorch\nSize\np2\n((I3\nI4\ntp3\ntp4\nRp5\nsVdev\np6\nctorch\ndevice\np7\n\
(Vcuda\np8\nI1\ntp9\nRp10\nsVdt\np11\nctorch\nfloat16\np12\nsVlayout\np13\nctorch.serialization\n_get_layout\n\
p14\n(Vtorch.strided\np15\ntp16\nRp17\ns.";
        let decoded = decode(pickle).expect("decodes");
        let meta = flatten(&decoded.root, &mut []);
        assert_eq!(meta["shape"], serde_json::json!([3, 4]));
        assert_eq!(meta["dev"], "cuda:1");
        assert_eq!(meta["dt"], "torch.float16");
        assert_eq!(meta["layout"], "torch.strided");
    }

    #[test]
    fn a_protocol_0_persistent_id_is_refused_as_torch_refuses_it() {
        // torch.save(..., pickle_protocol=0) writes the storage id as the repr of its tuple.
        let pickle = b"(dp0\nVw\np1\nctorch._utils\n_rebuild_tensor_v2\np2\n\
(P('storage', <class 'torch.FloatStorage'>, '94006775039168', 'cpu', 2, None)\n\
I0\n(I2\ntp3\n(I1\ntp4\nI00\nccollections\nOrderedDict\np5\n(tRp6\ntp7\nRp8\ns.";
        let err = decode(pickle).expect_err("refused").to_string();
        assert!(err.contains("protocol 0") && err.contains("torch.load cannot"), "{err}");
    }

    #[test]
    fn a_protocol_1_object_is_described_by_its_class_not_by_copyreg() {
        let pickle = [
            &b"}("[..],
            &text("cfg"),
            b"ccopy_reg\n_reconstructor\n(c__main__\nConfig\nc__builtin__\nobject\nNtR}(",
            &text("lr"),
            b"K\x01ubu.",
        ]
        .concat();
        let decoded = decode(&pickle).expect("decodes");
        let meta = flatten(&decoded.root, &mut []);
        assert_eq!(meta["cfg"], "<__main__.Config object>");
    }

    #[test]
    fn a_dtensor_note_stays_short_whatever_its_spec_holds() {
        // A DTensor whose spec lists one placement 1000 times (memo references) and names a
        // mesh dimension with 10 000 characters.
        let local = [
            &b"ctorch._utils\n_rebuild_tensor_v2\n(("[..],
            &text("storage"),
            b"ctorch\nFloatStorage\n",
            &text("0"),
            &text("cpu"),
            b"K\x02tQK\x00(K\x02t(K\x01tI00\nNtR",
        ]
        .concat();
        let mut placements = b"(cp\nShard\n)\x81}(".to_vec();
        placements.extend(text("dim"));
        placements.extend(b"K\x00ubq\x00");
        placements.extend(b"h\x00".repeat(999));
        placements.push(b't');
        let pickle = [
            &b"}("[..],
            &text("w"),
            b"ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_wrapper_subclass\n",
            b"ctorch.distributed.tensor\nDTensor\n(NNNNNNNI01\nt(N}(",
            &text("_local_tensor"),
            &local,
            &text("_spec"),
            b"cspec\nSpec\n)\x81}(",
            &text("placements"),
            &placements,
            &text("mesh"),
            b"cmesh\nMesh\n)\x81}(",
            &text("_mesh_dim_names"),
            b"(",
            &text(&"x".repeat(10_000)),
            b"tububuttRu.",
        ]
        .concat();
        let decoded = decode(&pickle).expect("decodes");
        let t = &decoded.tensors[0];
        assert!(t.requires_grad && !t.parameter);
        let [(0, note)] = decoded.notes.as_slice() else {
            panic!("one note expected: {:?}", decoded.notes);
        };
        assert!(
            note.starts_with("DTensor(placements=(Shard(dim=0), Shard(dim=0), "),
            "{note}"
        );
        assert!(
            note.contains("Shard(dim=0), ...), mesh=DeviceMesh(?, shape=?, dim_names=('xxx"),
            "{note}"
        );
        assert!(note.len() < 500, "{} bytes", note.len());
    }

    #[test]
    fn a_protocol_1_module_made_by_copyreg_reconstructor_reads_as_its_state_dict() {
        // torch.save(model, pickle_protocol=1): the object is copyreg._reconstructor(cls, object,
        // None) with the class in a ('module', cls, file, source) persistent id, then BUILD.
        let tensor = [
            &b"ctorch._utils\n_rebuild_parameter\n(ctorch._utils\n_rebuild_tensor_v2\n(("[..],
            &text("storage"),
            b"ctorch\nFloatStorage\n",
            &text("0"),
            &text("cpu"),
            b"K\x06tQK\x00(K\x02K\x03t(K\x03K\x01tI00\nccollections\nOrderedDict\n)RtRI00\nccollections\nOrderedDict\n)RtR",
        ]
        .concat();
        let pickle = [
            &b"ccopy_reg\n_reconstructor\n(("[..],
            &text("module"),
            b"c__main__\nNet\n",
            &text("net.py"),
            &text("class Net: ..."),
            b"tQc__builtin__\nobject\nNtR}(",
            &text("training"),
            b"I01\n",
            &text("_parameters"),
            b"ccollections\nOrderedDict\n)R(",
            &text("weight"),
            &tensor,
            b"u",
            &text("_buffers"),
            b"ccollections\nOrderedDict\n)R",
            &text("_modules"),
            b"ccollections\nOrderedDict\n)Rub.",
        ]
        .concat();
        let decoded = decode(&pickle).expect("decodes");
        assert!(decoded.saw_module);
        let Node::Dict { ordered: true, items } = &decoded.root else {
            panic!("not a state dict: {:?}", decoded.root);
        };
        assert_eq!(items, &[(Key::Str("weight".into()), Node::Tensor(0))]);
        let t = &decoded.tensors[0];
        assert!(t.parameter && !t.requires_grad);
        assert_eq!(
            (t.shape.as_slice(), t.stride.as_slice()),
            (&[2u64, 3][..], &[3u64, 1][..])
        );
    }

    #[test]
    fn a_module_keeps_its_plain_attributes_in_order_and_leaves_out_the_rest() {
        let nested = [b"(".repeat(10), b"I1\n".to_vec(), b"t".repeat(10)].concat();
        let long = [b"(".to_vec(), b"I1\n".repeat(65), b"t".to_vec()].concat();
        let child = [&b"c__main__\nLeaf\n)R}("[..], &text("_parameters"), b"}", &text("_modules"), b"}ub"].concat();
        let pickle = [
            &b"c__main__\nNet\n)R}("[..],
            &text("training"),
            b"I00\n",
            &text("_parameters"),
            b"}",
            &text("_modules"),
            b"}(",
            &text("leaf"),
            &child,
            b"u",
            &text("p"),
            b"F0.25\n",
            &text("_hidden"),
            b"I3\n",
            &text("shape"),
            b"ctorch\nSize\n((I4\nI3\nttR",
            &text("dims"),
            b"(I1\n(I2\nI3\ntl",
            &text("name"),
            &text("gate"),
            &text("none"),
            b"N",
            &text("nested"),
            &nested,
            &text("long"),
            &long,
            &text("obj"),
            b"cfoo\nBar\n)R",
            b"ub.",
        ]
        .concat();
        let decoded = decode(&pickle).expect("decodes");
        let paths: Vec<(&str, &str)> = decoded.modules.iter().map(|m| (m.path.as_str(), m.class.as_str())).collect();
        assert_eq!(paths, vec![("", "__main__.Net"), ("leaf", "__main__.Leaf")]);
        let tuple = |items: Vec<Node>| Node::Tuple(items);
        assert_eq!(
            decoded.modules[0].attributes,
            vec![
                ("training".to_string(), Node::Bool(false)),
                ("p".to_string(), Node::Float(0.25)),
                ("shape".to_string(), tuple(vec![Node::Int(4), Node::Int(3)])),
                (
                    "dims".to_string(),
                    Node::List(vec![Node::Int(1), tuple(vec![Node::Int(2), Node::Int(3)])])
                ),
                ("name".to_string(), Node::Str("gate".into())),
                ("none".to_string(), Node::None),
            ],
            "underscored names, tuples nested deeper than 8 or longer than 64, and objects are left out"
        );
        assert!(decoded.modules[1].attributes.is_empty());
    }
}
