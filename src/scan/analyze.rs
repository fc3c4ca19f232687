//! Judging one parsed pickle: every global with its effective usage, and the calls that do not
//! go through a named global at all.
//!
//! The machine logs each use of a global (referenced / called / instantiated / built). Some uses
//! only show in the value tree, and are added here from the heap:
//! - INST and OBJ call their class with arguments (CPython's `_instantiate`), so they count as
//!   calls even though the machine logs them as instantiations;
//! - a global handed as an argument to a callee that may call it is called: the callee is
//!   anything outside the allowlist and the known data types (a user class's `__new__`, the lazy
//!   iterators `map`/`filter`/`itertools.starmap`, which call it when a consumer such as `set`,
//!   `tuple` or `sorted` iterates them), or a known callable-taking global
//!   ([`policy::callable_args`], which also makes a computed callable there dangerous);
//! - a REDUCE of a class-like global with one plain literal argument reads as an Enum member or
//!   a value class (`IntervalStrategy('steps')`): needs-code, unless the same global is called in
//!   any other way (see [`enum_like`] for the exact rule and its limits);
//! - `copyreg._reconstructor(cls, base, state)` instantiates `cls` and calls `base`'s
//!   `__new__`/`__init__`; `copyreg.__newobj__(cls, ...)` instantiates `cls`;
//! - `torch._tensor._rebuild_from_type_v2(func, type, args, state)` calls `func(*args)`, and
//!   `torch._utils._rebuild_wrapper_subclass(cls, ...)` instantiates `cls`;
//! - a legacy whole model names its classes in `('module', cls, file, source)` persistent ids;
//! - a REDUCE/NEWOBJ whose callable is not a global (memoized result of another call, a
//!   persistent id, a constant) hides what is called: dangerous;
//! - `torch.storage._load_from_bytes(b)` (and `pickle.loads(b)`) unpickle embedded bytes, which
//!   are scanned as a file of their own: each distinct payload once, and all nested pickles of
//!   a file (inflated zip members included) within [`NESTED_WORK_FACTOR`] times the size of the
//!   file's top-level pickles.
//!
//! A pickle the machine refuses is judged on what the machine recorded before the refusal
//! (CPython has run those calls by then), plus every name the opcode pass finds; where CPython
//! may accept what the machine refused as invalid, a name followed by a calling opcode at or
//! after the refused one counts as called.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::pickle::{Construct, Global, GlobalUse, Heap, Obj, ObjId, Partial, Pickle, PickleError, Usage, Value};

use super::collector::Collector;
use super::ops::{self, OpcodeScan};
use super::policy::{self, Category};
use super::{Finding, GlobalReport, PickleReport, Verdict};

const MAX_OFFSETS: usize = 16;
/// How many distinct "via" explanations a global's message keeps.
const MAX_VIA: usize = 4;
/// The bytes of nested pickles parsed for one file are bounded by this multiple of the size of
/// the file's top-level pickles. Distinct payloads of one pickle never add up to more than the
/// pickle (each is a distinct stretch of it), and nesting is at most three deep, so only
/// inflation (a deflated zip inside the bytes) can reach the bound.
pub(crate) const NESTED_WORK_FACTOR: u64 = 4;

#[derive(Default)]
struct Effective {
    written_as: Option<String>,
    referenced: bool,
    called: bool,
    instantiated: bool,
    built: bool,
    offsets: Vec<u64>,
    /// The first offset of each usage: referenced, called, instantiated, built.
    first: [Option<u64>; 4],
    count: usize,
    /// REDUCEs of it that read as an Enum member (one plain literal argument), and other REDUCEs.
    enum_calls: usize,
    plain_calls: usize,
    /// Called some other way than REDUCE: INST/OBJ, as an argument, through a trampoline.
    other_calls: bool,
    /// The first enum-like argument, for the message.
    enum_example: Option<String>,
    /// How the heap walk found extra uses ("instantiated through copyreg._reconstructor").
    via: Vec<String>,
    /// The arguments of its first call (REDUCE, INST, OBJ), rendered for the finding.
    call_args: Option<String>,
}

impl Effective {
    fn add_via(&mut self, via: impl Into<String>) {
        let via = via.into();
        if self.via.len() < MAX_VIA && !self.via.contains(&via) {
            self.via.push(via);
        }
    }
    fn mark_called(&mut self, via: impl Into<String>) {
        self.called = true;
        self.other_calls = true;
        self.add_via(via);
    }
    /// Every call of it is an enum-like REDUCE.
    fn enum_only(&self) -> bool {
        self.enum_calls > 0 && self.plain_calls == 0 && !self.other_calls
    }
}

type Key = (String, String);

#[derive(Default)]
struct Uses {
    map: BTreeMap<Key, Effective>,
}

impl Uses {
    fn entry(&mut self, g: &Global) -> &mut Effective {
        let key = policy::normalize(&g.module, &g.name);
        let written = (key.0 != g.module || key.1 != g.name).then(|| g.dotted());
        let e = self.map.entry(key).or_default();
        if e.written_as.is_none() {
            e.written_as = written;
        }
        e
    }

    /// The machine's log of uses.
    fn log(&mut self, globals: &[GlobalUse]) {
        for u in globals {
            let e = self.entry(&u.global);
            let slot = match u.usage {
                Usage::Referenced => {
                    e.referenced = true;
                    0
                }
                Usage::Called => {
                    e.called = true;
                    1
                }
                Usage::Instantiated => {
                    e.instantiated = true;
                    2
                }
                Usage::Built => {
                    e.built = true;
                    3
                }
            };
            e.first[slot] = e.first[slot].or(Some(u.offset));
            e.count += 1;
            if e.offsets.len() < MAX_OFFSETS && !e.offsets.contains(&u.offset) {
                e.offsets.push(u.offset);
            }
        }
    }
}

fn norm(g: &Global) -> Key {
    policy::normalize(&g.module, &g.name)
}

fn construct_name(c: Construct) -> &'static str {
    match c {
        Construct::Reduce => "REDUCE",
        Construct::NewObj => "NEWOBJ",
        Construct::NewObjEx => "NEWOBJ_EX",
        Construct::Inst => "INST",
        Construct::Obj => "OBJ",
    }
}

fn kind(heap: &Heap, v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) | Value::BigInt(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a str",
        Value::Bytes(_) => "bytes",
        Value::Obj(id) => match heap.get(*id) {
            Obj::Tuple(_) => "a tuple",
            Obj::List(_) => "a list",
            Obj::Dict(_) => "a dict",
            Obj::Set(_) | Obj::FrozenSet(_) => "a set",
            Obj::ByteArray(_) => "a bytearray",
            Obj::Global(_) => "a global",
            Obj::Instance(_) => "the result of another call",
            Obj::PersistentId(_) => "a persistent id",
        },
    }
}

/// Where the bytes of an embedded payload come from, so that a payload memoized once and
/// loaded many times is recognised without copying it again.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PayloadSource {
    /// A bytes value (shared through the memo as one allocation).
    Bytes(usize),
    /// A bytearray object.
    Object(ObjId),
    /// The str of `_codecs.encode(str, 'latin1')`.
    Latin1(usize),
}

/// The source of the bytes a value stands for: bytes, a bytearray, or `_codecs.encode(str,
/// 'latin1')` as Python 3 pickles bytes at protocol 2.
fn payload_source(heap: &Heap, v: &Value) -> Option<PayloadSource> {
    match v {
        Value::Bytes(b) => Some(PayloadSource::Bytes(Arc::as_ptr(b) as *const u8 as usize)),
        Value::Obj(id) => match heap.get(*id) {
            Obj::ByteArray(_) => Some(PayloadSource::Object(*id)),
            Obj::Instance(inst) if inst.construct == Construct::Reduce => {
                let g = heap.instance_global(inst)?;
                if !(g.module == "_codecs" && g.name == "encode") {
                    return None;
                }
                let args = heap.tuple(&inst.args)?;
                let Some(Value::Str(s)) = args.first() else { return None };
                match args.get(1) {
                    Some(Value::Str(enc)) if matches!(&**enc, "latin1" | "latin-1" | "iso-8859-1") => {}
                    _ => return None,
                }
                // Every char must be a Latin-1 byte, or CPython's encode fails.
                s.chars()
                    .all(|c| u32::from(c) <= 0xff)
                    .then_some(PayloadSource::Latin1(Arc::as_ptr(s) as *const u8 as usize))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The bytes of a payload source found in `v` (see [`payload_source`]).
fn payload_bytes(heap: &Heap, v: &Value) -> Vec<u8> {
    match v {
        Value::Bytes(b) => b.to_vec(),
        Value::Obj(id) => match heap.get(*id) {
            Obj::ByteArray(b) => b.clone(),
            Obj::Instance(inst) => match heap.tuple(&inst.args).and_then(|a| a.first()) {
                Some(Value::Str(s)) => s.chars().map(|c| c as u32 as u8).collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// The embedded payloads of one pickle, each distinct one kept once.
#[derive(Default)]
struct Payloads {
    /// Calls of a nested loader, and the loader's name.
    calls: usize,
    loader: String,
    /// Sources already seen: their bytes are not copied again.
    by_source: HashMap<PayloadSource, usize>,
    /// Distinct contents (equal bytes from different sources), sharing the copies in `distinct`.
    by_content: HashMap<Arc<[u8]>, usize>,
    /// Distinct payloads in order of first use.
    distinct: Vec<Arc<[u8]>>,
}

impl Payloads {
    fn add(&mut self, heap: &Heap, loader: &str, v: &Value, source: PayloadSource) {
        self.calls += 1;
        if self.loader.is_empty() {
            self.loader = loader.to_string();
        }
        if self.by_source.contains_key(&source) {
            return;
        }
        let bytes: Arc<[u8]> = payload_bytes(heap, v).into();
        let index = match self.by_content.get(&bytes) {
            Some(&i) => i,
            None => {
                self.distinct.push(bytes.clone());
                self.by_content.insert(bytes, self.distinct.len() - 1);
                self.distinct.len() - 1
            }
        };
        self.by_source.insert(source, index);
    }
}

/// Whether a value is a plain literal an Enum member is made from: None, a bool, a number, or a
/// short token (at most 64 ASCII letters, digits and `_ - . :`, as in `'steps'`, `'adamw_torch'`,
/// `'cuda:0'`), as str or bytes. Code, shell commands with arguments, paths and URLs need
/// spaces, slashes, quotes or brackets, which a token cannot hold.
fn plain_literal(v: &Value) -> bool {
    let token = |b: &[u8]| b.len() <= 64 && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"_-.:".contains(&c));
    match v {
        Value::None | Value::Bool(_) | Value::Int(_) | Value::BigInt(_) | Value::Float(_) => true,
        Value::Str(s) => token(s.as_bytes()),
        Value::Bytes(b) => token(b),
        Value::Obj(_) => false,
    }
}

/// A REDUCE that reads as an Enum member or a value class: `cls(literal)` where `cls` is
/// outside the allowlist, the known data types and the denylist (so `os.system('x')` stays
/// dangerous), its name is class-like ([`policy::is_class_like`]: `system`, `Popen.__init__`
/// are not), its final name is not one of the acting classes modules re-export
/// ([`policy::is_acting_class_name`]: `Popen`, `CDLL`, `FileHandler` ...), its module is not in
/// the standard library (whose capitalised callables include `subprocess.Popen`,
/// `logging.FileHandler`, `sqlite3.Connection`), it takes no callable, and the one argument is a
/// [`plain_literal`]. Limit: a third-party class whose constructor acts
/// on a short token (opening a connection to a host name, running a command) reads the same;
/// known ones are denylisted, unknown ones are needs-code, which says the class's code runs.
fn enum_like(m: &str, n: &str, args: &[Value], torchscript: bool) -> bool {
    // Cheapest tests first: this runs for every REDUCE of a large pickle.
    matches!(args, [v] if plain_literal(v))
        && policy::is_class_like(n)
        && !policy::is_acting_class_name(n)
        && !policy::is_stdlib(m)
        && policy::callable_args(m, n, args.len()).is_empty()
        && policy::classify(m, n, torchscript).0 == Category::Unknown
}

fn literal_text(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(_) => "an int".into(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => format!("'{s}'"),
        Value::Bytes(b) => format!("b'{}'", String::from_utf8_lossy(b)),
        Value::Obj(_) => "an object".into(),
    }
}

/// What the heap walk of one pickle found.
#[derive(Default)]
struct Walk {
    uses: Uses,
    /// Dangerous constructs that do not go through a named global.
    danger: Vec<String>,
    payloads: Payloads,
}

impl Walk {
    /// Parses what the machine recorded: the log of uses, then the heap's constructs.
    fn new(heap: &Heap, globals: &[GlobalUse], torchscript: bool) -> Walk {
        let mut w = Walk::default();
        w.uses.log(globals);
        for i in 0..heap.len() {
            if let Obj::Instance(inst) = heap.get(ObjId(i as u32)) {
                w.construct(heap, inst, torchscript);
            }
        }
        w
    }

    fn construct(&mut self, heap: &Heap, inst: &crate::pickle::Instance, torchscript: bool) {
        let what = construct_name(inst.construct);
        let calls = matches!(inst.construct, Construct::Reduce | Construct::Inst | Construct::Obj);
        let args: &[Value] = heap.tuple(&inst.args).unwrap_or(&[]);
        let g = match heap.obj(&inst.callable) {
            Some(Obj::Global(g)) => g,
            Some(Obj::PersistentId(pid)) => {
                self.legacy_module_class(heap, pid, calls, what);
                return;
            }
            _ => {
                self.danger.push(format!(
                    "{what} of {}, not a named global: the callable is computed inside the pickle (e.g. the result of getattr or functools.partial), hiding what is called",
                    kind(heap, &inst.callable)
                ));
                return;
            }
        };
        let key = norm(g);
        if matches!(inst.construct, Construct::Inst | Construct::Obj) {
            self.uses.entry(g).mark_called("INST/OBJ call the class with arguments");
        }
        if calls {
            let e = self.uses.entry(g);
            if e.call_args.is_none() {
                e.call_args = Some(super::args::render(heap, args));
            }
        }
        let kwargs = inst.kwargs.as_ref().and_then(|k| match heap.obj(k) {
            Some(Obj::Dict(pairs)) => Some(pairs.as_slice()),
            _ => None,
        });
        if inst.construct == Construct::Reduce {
            if enum_like(&key.0, &key.1, args, torchscript) {
                let e = self.uses.entry(g);
                e.enum_calls += 1;
                e.enum_example.get_or_insert_with(|| literal_text(&args[0]));
            } else {
                self.uses.entry(g).plain_calls += 1;
            }
            self.reduce(heap, &key, args);
        }
        self.hand_over(heap, &key, args, kwargs, torchscript);
    }

    /// Legacy whole models: ('module', cls, source_file, source) resolves to cls.
    fn legacy_module_class(&mut self, heap: &Heap, pid: &Value, calls: bool, what: &str) {
        let items = heap.tuple(pid).unwrap_or(&[]);
        let cls = match items {
            [Value::Str(k), cls, ..] if &**k == "module" => heap.global(cls),
            _ => None,
        };
        match cls {
            Some(cls) => {
                let e = self.uses.entry(cls);
                if calls {
                    e.called = true;
                    e.other_calls = true;
                } else {
                    e.instantiated = true;
                }
                e.add_via("a class from a legacy ('module', ...) persistent id");
            }
            None => self.danger.push(format!(
                "{what} of a persistent id that is not a class: the loader's persistent_load decides what is called"
            )),
        }
    }

    /// Globals passed as arguments to `callee`: called when the callee takes callables or may
    /// call what it is given. `copyreg.__newobj__(cls, *args)` hands its arguments to `cls`.
    fn hand_over(
        &mut self,
        heap: &Heap,
        callee: &Key,
        args: &[Value],
        kwargs: Option<&[(Value, Value)]>,
        torchscript: bool,
    ) {
        if callee.0 == "copyreg" && matches!(callee.1.as_str(), "__newobj__" | "__newobj_ex__") {
            let Some(cls) = args.first().and_then(|c| heap.global(c)) else {
                return;
            };
            let inner = norm(cls);
            if callee.1 == "__newobj__" {
                self.hand_over(heap, &inner, args.get(1..).unwrap_or(&[]), None, torchscript);
            } else {
                let a = args.get(1).and_then(|a| heap.tuple(a)).unwrap_or(&[]);
                let k = match args.get(2).and_then(|k| heap.obj(k)) {
                    Some(Obj::Dict(pairs)) => Some(pairs.as_slice()),
                    _ => None,
                };
                self.hand_over(heap, &inner, a, k, torchscript);
            }
            return;
        }
        let dotted = || format!("{}.{}", callee.0, callee.1);
        let positions = policy::callable_args(&callee.0, &callee.1, args.len());
        for (pos, v) in args.iter().enumerate().filter(|(pos, _)| positions.contains(pos)) {
            match heap.global(v) {
                Some(g) => self
                    .uses
                    .entry(g)
                    .mark_called(format!("{} calls the function it is given", dotted())),
                None if matches!(v, Value::Obj(_)) => self.danger.push(format!(
                    "{} is given {} as the function it calls (argument {}): what runs is computed inside the pickle",
                    dotted(),
                    kind(heap, v),
                    pos + 1
                )),
                None => {}
            }
        }
        let others: Vec<&Global> = args
            .iter()
            .enumerate()
            .filter(|(pos, _)| !positions.contains(pos))
            .map(|(_, v)| v)
            .chain(kwargs.unwrap_or(&[]).iter().map(|(_, v)| v))
            .filter_map(|v| heap.global(v))
            .collect();
        if others.is_empty() || !policy::may_call_its_arguments(policy::classify(&callee.0, &callee.1, torchscript).0) {
            return;
        }
        for g in others {
            self.uses.entry(g).mark_called(format!(
                "passed to {}, which may call it (as a class's __new__ or a lazy iterator such as map, filter or itertools.starmap does)",
                dotted()
            ));
        }
    }

    /// What the REDUCE of a known trampoline, reconstructor or loader does with its arguments.
    fn reduce(&mut self, heap: &Heap, key: &Key, args: &[Value]) {
        match (key.0.as_str(), key.1.as_str()) {
            ("copyreg", "_reconstructor") => self.reconstructor(heap, args),
            ("copyreg", "__newobj__" | "__newobj_ex__") => match args.first().and_then(|c| heap.global(c)) {
                Some(cls) => {
                    let e = self.uses.entry(cls);
                    e.instantiated = true;
                    e.add_via("instantiated through copyreg.__newobj__");
                }
                None => self
                    .danger
                    .push(format!("copyreg.{} of a class that is not a named global", key.1)),
            },
            ("torch._tensor", "_rebuild_from_type_v2") => {
                if let Some(f) = args.first() {
                    match heap.global(f) {
                        Some(f) => self
                            .uses
                            .entry(f)
                            .mark_called("called by torch._tensor._rebuild_from_type_v2"),
                        None => self.danger.push(format!(
                            "torch._tensor._rebuild_from_type_v2 calls {}, not a named global",
                            kind(heap, f)
                        )),
                    }
                }
                if let Some(t) = args.get(1).and_then(|t| heap.global(t)) {
                    let e = self.uses.entry(t);
                    e.instantiated = true;
                    e.add_via("the tensor subclass of torch._tensor._rebuild_from_type_v2");
                }
            }
            ("torch._utils", "_rebuild_wrapper_subclass") => {
                if let Some(cls) = args.first().and_then(|c| heap.global(c)) {
                    let e = self.uses.entry(cls);
                    e.instantiated = true;
                    e.add_via("the class of torch._utils._rebuild_wrapper_subclass");
                }
            }
            ("torch.storage", "_load_from_bytes") | ("pickle" | "_pickle", "loads" | "_loads") => {
                let loader = format!("{}.{}", key.0, key.1);
                match args.first().and_then(|a| Some((a, payload_source(heap, a)?))) {
                    Some((v, source)) => self.payloads.add(heap, &loader, v, source),
                    None => self.danger.push(format!(
                        "{loader} of bytes computed inside the pickle: what it loads cannot be checked"
                    )),
                }
            }
            _ => {}
        }
    }

    fn reconstructor(&mut self, heap: &Heap, args: &[Value]) {
        match args.first().and_then(|c| heap.global(c)) {
            Some(cls) => {
                let e = self.uses.entry(cls);
                e.instantiated = true;
                e.add_via("instantiated through copyreg._reconstructor");
            }
            None => self
                .danger
                .push("copyreg._reconstructor of a class that is not a named global".into()),
        }
        match args.get(1).and_then(|b| heap.global(b)) {
            Some(base) => {
                let (m, n) = norm(base);
                if !policy::is_plain_base(&m, &n) {
                    self.uses
                        .entry(base)
                        .mark_called("the base of copyreg._reconstructor: its __new__ and __init__ run");
                }
            }
            None => self
                .danger
                .push("copyreg._reconstructor with a base that is not a named global".into()),
        }
    }
}

/// Parses and judges one pickle. `required`: a failure to parse makes the file unreadable (the
/// loader would unpickle it); otherwise (a sniffed member) a failure records nothing.
/// Returns the parsed pickle for callers that need its value (legacy magic) or end.
pub(crate) fn scan_pickle(
    col: &mut Collector,
    record: &str,
    data: &[u8],
    file_offset: Option<u64>,
    torchscript: bool,
    required: bool,
) -> Option<Pickle> {
    let limits = &col.limits.pickle;
    if col.depth > 0 && data.len() as u64 > col.nested_budget {
        if required {
            over_budget(col, record);
        }
        return None;
    }
    if data.len() as u64 > col.limits.max_pickle_bytes {
        if required {
            let error = format!(
                "{} bytes, more than the limit of {} for one pickle",
                data.len(),
                col.limits.max_pickle_bytes
            );
            charge(col, data.len() as u64);
            salvage(col, record, data, file_offset, torchscript, None, error);
        }
        return None;
    }
    match crate::pickle::parse_partial(data, limits) {
        Ok(p) => {
            charge(col, p.end as u64);
            let opscan = ops::scan(data.get(..p.end).unwrap_or(data));
            let mut report = PickleReport {
                record: record.to_string(),
                offset: file_offset,
                size: p.end as u64,
                protocol: p.protocol,
                verdict: Verdict::Safe,
                globals: Vec::new(),
                opcodes_outside_weights_only: opscan.outside_weights_only(),
                error: None,
            };
            note_opcodes(col, record, &report.opcodes_outside_weights_only);
            let walk = Walk::new(&p.heap, &p.globals, torchscript);
            report.verdict = conclude(col, &mut report, walk, &opscan, torchscript);
            col.pickles.push(report);
            Some(p)
        }
        Err(partial) if required => {
            charge(col, data.len() as u64);
            let error = partial.error.to_string();
            salvage(col, record, data, file_offset, torchscript, Some(*partial), error);
            None
        }
        Err(_) => None,
    }
}

/// Opcodes torch's weights_only unpickler lacks (protocol 3+ framing, memo and string forms)
/// run nothing: they are a note, never a reason for needs-code.
fn note_opcodes(col: &mut Collector, record: &str, opcodes: &[&str]) {
    if !opcodes.is_empty() {
        col.notes.push(format!(
            "{record}: uses {}, which torch's weights_only loader does not implement; they run nothing, so they do not change the verdict",
            opcodes.join(", ")
        ));
    }
}

/// Whether CPython may accept what made the machine stop (input the machine holds invalid, such
/// as APPEND onto a global), and so go on running the rest. Not for ckpt's own limits: a pickle
/// too large to follow is unreadable, and judging its every name as called would make every huge
/// whole-model pickle dangerous.
fn cpython_may_go_on(e: &PickleError) -> bool {
    matches!(e, PickleError::Invalid { .. })
}

/// A pickle the machine refused: report the error, and judge what the machine recorded before
/// it (CPython ran those calls before reaching the same point) and the names the opcode pass
/// finds.
fn salvage(
    col: &mut Collector,
    record: &str,
    data: &[u8],
    file_offset: Option<u64>,
    torchscript: bool,
    partial: Option<Partial>,
    error: String,
) {
    let opscan = ops::scan(data);
    // Where CPython may go on past the machine's refusal: calls from there on are unseen.
    let unseen_from = partial
        .as_ref()
        .filter(|p| cpython_may_go_on(&p.error))
        .map(|p| p.error.offset());
    let mut walk = match &partial {
        Some(p) => Walk::new(&p.heap, &p.globals, torchscript),
        None => Walk::default(),
    };
    for raw in &opscan.globals {
        let e = walk.uses.entry(&Global {
            module: raw.module.clone(),
            name: raw.name.clone(),
        });
        e.referenced = true;
        if raw.opcode == "INST" {
            e.mark_called("INST calls the class with arguments");
        } else if unseen_from.is_some_and(|at| opscan.call_after(raw.offset.max(at.saturating_sub(1)))) {
            e.mark_called("named before an opcode that calls something, in a part of the pickle that ckpt cannot follow but CPython may run");
        }
        // A name the machine logged before it stopped is counted once.
        if !e.offsets.contains(&raw.offset) {
            e.count += 1;
            if e.offsets.len() < MAX_OFFSETS {
                e.offsets.push(raw.offset);
            }
        }
    }
    let mut report = PickleReport {
        record: record.to_string(),
        offset: file_offset,
        size: opscan.end.unwrap_or(data.len()) as u64,
        protocol: partial.as_ref().and_then(|p| p.protocol),
        verdict: Verdict::Unreadable,
        globals: Vec::new(),
        opcodes_outside_weights_only: opscan.outside_weights_only(),
        error: Some(error.clone()),
    };
    let worst = conclude(col, &mut report, walk, &opscan, torchscript);
    report.verdict = worst.max(Verdict::Unreadable);
    col.findings.push(Finding {
        verdict: Verdict::Unreadable,
        record: record.to_string(),
        offset: None,
        global: None,
        arguments: None,
        message: format!("cannot read this pickle, so it cannot be cleared: {error}"),
    });
    col.errors.push(format!("{record}: {error}"));
    col.pickles.push(report);
}

/// Reports the walk's globals, dangers and embedded payloads; returns the pickle's verdict.
fn conclude(
    col: &mut Collector,
    report: &mut PickleReport,
    walk: Walk,
    opscan: &OpcodeScan,
    torchscript: bool,
) -> Verdict {
    let mut worst = globals_report(col, report, walk.uses, opscan, torchscript);
    for message in walk.danger {
        worst = Verdict::Dangerous;
        col.findings.push(Finding {
            verdict: Verdict::Dangerous,
            record: report.record.clone(),
            offset: None,
            global: None,
            arguments: None,
            message,
        });
    }
    worst.max(scan_payloads(col, &report.record, walk.payloads))
}

/// Scans each distinct embedded payload once, within the file's budget; returns the worst verdict.
fn scan_payloads(col: &mut Collector, record: &str, payloads: Payloads) -> Verdict {
    if payloads.calls == 0 {
        return Verdict::Safe;
    }
    col.notes.push(format!(
        "{record}: {} calls {} times on {} distinct payload(s); each distinct payload is scanned once",
        payloads.loader,
        payloads.calls,
        payloads.distinct.len()
    ));
    let mut worst = Verdict::Safe;
    for (i, bytes) in payloads.distinct.iter().enumerate() {
        let label = format!(
            "{record} -> {} payload {} ({} bytes)",
            payloads.loader,
            i + 1,
            bytes.len()
        );
        let before = col.pickles.len();
        (col.scan_embedded)(col, &label, bytes);
        let nested = col.pickles[before..].iter().map(|p| p.verdict).max();
        worst = worst.max(nested.unwrap_or(Verdict::Safe));
    }
    worst
}

/// Charges a pickle of `len` bytes to the file's budget for embedded payloads: top-level pickles
/// add [`NESTED_WORK_FACTOR`] times their size, nested ones spend theirs (inflated zip members
/// included, since they are parsed; [`scan_pickle`] refuses one larger than what is left).
fn charge(col: &mut Collector, len: u64) {
    if col.depth == 0 {
        col.nested_budget = col.nested_budget.saturating_add(NESTED_WORK_FACTOR.saturating_mul(len));
    } else {
        col.nested_budget = col.nested_budget.saturating_sub(len);
    }
}

/// A nested pickle left unscanned because the file's budget is spent: it cannot be cleared.
fn over_budget(col: &mut Collector, record: &str) {
    let message = format!(
        "not scanned: the embedded payloads of this file add up to more than {NESTED_WORK_FACTOR} times the size of its pickles, so what they load cannot be cleared"
    );
    col.findings.push(Finding {
        verdict: Verdict::Unreadable,
        record: record.to_string(),
        offset: None,
        global: None,
        arguments: None,
        message: message.clone(),
    });
    col.errors.push(format!("{record}: {message}"));
}

/// The message and verdict of one global.
fn judge_global(
    module: &str,
    name: &str,
    e: &Effective,
    opscan: &OpcodeScan,
    torchscript: bool,
) -> (Category, Verdict, String, &'static str) {
    let (category, why) = policy::classify(module, name, torchscript);
    let enum_only = category == Category::Unknown && e.enum_only();
    let called = e.called && !enum_only;
    let mut verdict = policy::judge(category, called);
    let dotted = format!("{module}.{name}");
    let action = if called {
        "calls"
    } else if e.instantiated || e.built || enum_only {
        "instantiates"
    } else {
        "imports (without calling)"
    };
    let mut message = match category {
        Category::Allowed => String::new(),
        Category::Denylisted => format!("{action} {dotted}: {why}"),
        Category::Unknown if called => {
            format!("{action} {dotted}, which is not in torch's weights_only allowlist (an unknown callable is dangerous)")
        }
        Category::Unknown if enum_only => format!(
            "calls {dotted} with one plain literal ({}): looks like an Enum/class instantiation: needs the class's code",
            e.enum_example.as_deref().unwrap_or("a literal")
        ),
        Category::Unknown => format!("{action} {dotted}: loading needs this module's code (weights_only=False)"),
        Category::Archive => format!("{} {dotted}: {why}", if called { "builds" } else { action }),
        Category::KnownData => {
            format!("{action} {dotted}: {why}; weights_only=True refuses it, nothing dangerous runs")
        }
        Category::Reconstructor => format!("{action} {dotted}: {why}"),
        Category::NestedLoader => format!("{action} {dotted}: {why} (scanned below)"),
    };
    if category == Category::Reconstructor || category == Category::NestedLoader {
        verdict = Verdict::NeedsCode;
    }
    let at = e.first[0].or(e.offsets.first().copied()).unwrap_or(0);
    if let Some(note) = policy::dotted_note(name, opscan.protocol_at(at)) {
        message.push_str(&format!(" ({note})"));
        // Never safe: only exact names are allowlisted, so this cannot be reached, but say so.
        verdict = verdict.max(Verdict::NeedsCode);
    }
    if !e.via.is_empty() {
        message.push_str(&format!(" ({})", e.via.join("; ")));
    }
    (category, verdict, message, why)
}

/// Turns effective uses into reports and findings; returns the worst verdict.
fn globals_report(
    col: &mut Collector,
    report: &mut PickleReport,
    uses: Uses,
    opscan: &OpcodeScan,
    torchscript: bool,
) -> Verdict {
    let mut worst = Verdict::Safe;
    for ((module, name), e) in uses.map {
        let (category, verdict, message, why) = judge_global(&module, &name, &e, opscan, torchscript);
        let dotted = format!("{module}.{name}");
        let mut usage = Vec::new();
        for (flag, word) in [
            (e.referenced, "referenced"),
            (e.called, "called"),
            (e.instantiated, "instantiated"),
            (e.built, "built"),
        ] {
            if flag {
                usage.push(word);
            }
        }
        worst = worst.max(verdict);
        if verdict != Verdict::Safe {
            col.findings.push(Finding {
                verdict,
                record: report.record.clone(),
                offset: if e.called {
                    e.first[1].or(e.first[2])
                } else if e.instantiated || e.built {
                    e.first[2].or(e.first[3])
                } else {
                    None
                }
                .or(e.offsets.first().copied()),
                global: Some(dotted.clone()),
                message: match (&e.call_args, e.called) {
                    (Some(args), true) => format!("{message}; first call: {dotted}{args}"),
                    _ => message.clone(),
                },
                arguments: e.call_args.clone().filter(|_| e.called),
            });
        }
        report.globals.push(GlobalReport {
            name: dotted,
            written_as: e.written_as,
            category,
            usage,
            offsets: e.offsets,
            count: e.count,
            verdict,
            why: if message.is_empty() { why.to_string() } else { message },
        });
    }
    worst
}
