//! Judging one parsed pickle: every global with its effective usage, and the calls that do not
//! go through a named global at all.
//!
//! The machine logs each use of a global (referenced / called / instantiated / built). Some uses
//! only show in the value tree, and are added here from the heap:
//! - INST and OBJ call their class with arguments (CPython's `_instantiate`), so they count as
//!   calls even though the machine logs them as instantiations;
//! - `copyreg._reconstructor(cls, base, state)` instantiates `cls` and calls `base`'s
//!   `__new__`/`__init__`; `copyreg.__newobj__(cls, ...)` instantiates `cls`;
//! - `torch._tensor._rebuild_from_type_v2(func, type, args, state)` calls `func(*args)`, and
//!   `torch._utils._rebuild_wrapper_subclass(cls, ...)` instantiates `cls`;
//! - a legacy whole model names its classes in `('module', cls, file, source)` persistent ids;
//! - a REDUCE/NEWOBJ whose callable is not a global (memoized result of another call, a
//!   persistent id, a constant) hides what is called: dangerous;
//! - `torch.storage._load_from_bytes(b)` (and `pickle.loads(b)`) unpickle embedded bytes, which
//!   are scanned as a file of their own.

use std::collections::BTreeMap;

use crate::pickle::{Construct, Global, Heap, Obj, ObjId, Pickle, Usage, Value};

use super::container::{self, Collector};
use super::ops;
use super::policy::{self, Category};
use super::{Finding, GlobalReport, PickleReport, Verdict};

const MAX_OFFSETS: usize = 16;

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
    /// How the heap walk found extra uses ("instantiated through copyreg._reconstructor").
    via: Vec<&'static str>,
}

type Key = (String, String);

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

/// Bytes a value stands for: bytes, or `_codecs.encode(str, 'latin1')` as Python 3 pickles bytes
/// at protocol 2.
fn literal_bytes(heap: &Heap, v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Obj(id) => match heap.get(*id) {
            Obj::ByteArray(b) => Some(b.clone()),
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
                s.chars().map(|c| u8::try_from(c as u32).ok()).collect()
            }
            _ => None,
        },
        _ => None,
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
    let parsed = if data.len() as u64 > col.limits.max_pickle_bytes {
        Err(format!(
            "{} bytes, more than the limit of {} for one pickle",
            data.len(),
            col.limits.max_pickle_bytes
        ))
    } else {
        crate::pickle::parse(data, limits).map_err(|e| e.to_string())
    };
    match parsed {
        Ok(p) => {
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
            judge(col, &mut report, &p, torchscript);
            col.pickles.push(report);
            Some(p)
        }
        Err(e) if required => {
            salvage(col, record, data, file_offset, torchscript, e);
            None
        }
        Err(_) => None,
    }
}

/// A pickle the machine refused: report the error, and judge the names the opcode pass finds
/// (CPython would have run everything before the point of refusal).
fn salvage(col: &mut Collector, record: &str, data: &[u8], file_offset: Option<u64>, torchscript: bool, error: String) {
    let opscan = ops::scan(data);
    let mut uses = Uses { map: BTreeMap::new() };
    for raw in &opscan.globals {
        let e = uses.entry(&Global {
            module: raw.module.clone(),
            name: raw.name.clone(),
        });
        e.referenced = true;
        if raw.opcode == "INST" {
            e.called = true;
        }
        e.count += 1;
        if e.offsets.len() < MAX_OFFSETS {
            e.offsets.push(raw.offset);
        }
    }
    let mut report = PickleReport {
        record: record.to_string(),
        offset: file_offset,
        size: opscan.end.unwrap_or(data.len()) as u64,
        protocol: None,
        verdict: Verdict::Unreadable,
        globals: Vec::new(),
        opcodes_outside_weights_only: opscan.outside_weights_only(),
        error: Some(error.clone()),
    };
    let worst = globals_report(col, &mut report, uses, torchscript);
    report.verdict = worst.max(Verdict::Unreadable);
    col.findings.push(Finding {
        verdict: Verdict::Unreadable,
        record: record.to_string(),
        offset: None,
        global: None,
        message: format!("cannot read this pickle, so it cannot be cleared: {error}"),
    });
    col.errors.push(format!("{record}: {error}"));
    col.pickles.push(report);
}

fn judge(col: &mut Collector, report: &mut PickleReport, p: &Pickle, torchscript: bool) {
    let heap = &p.heap;
    let record = report.record.clone();
    let mut uses = Uses { map: BTreeMap::new() };
    for u in &p.globals {
        let e = uses.entry(&u.global);
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
    let mut extra: Vec<Finding> = Vec::new();
    let mut danger = |message: String| {
        extra.push(Finding {
            verdict: Verdict::Dangerous,
            record: record.clone(),
            offset: None,
            global: None,
            message,
        });
    };
    let mut nested: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..heap.len() {
        let Obj::Instance(inst) = heap.get(ObjId(i as u32)) else {
            continue;
        };
        let what = construct_name(inst.construct);
        let calls = matches!(inst.construct, Construct::Reduce | Construct::Inst | Construct::Obj);
        let args: &[Value] = heap.tuple(&inst.args).unwrap_or(&[]);
        let g = match heap.obj(&inst.callable) {
            Some(Obj::Global(g)) => g,
            Some(Obj::PersistentId(pid)) => {
                // Legacy whole models: ('module', cls, source_file, source) resolves to cls.
                let items = heap.tuple(pid).unwrap_or(&[]);
                let cls = match items {
                    [Value::Str(k), cls, ..] if &**k == "module" => heap.global(cls),
                    _ => None,
                };
                match cls {
                    Some(cls) => {
                        let e = uses.entry(cls);
                        if calls {
                            e.called = true;
                        } else {
                            e.instantiated = true;
                        }
                        e.via.push("a class from a legacy ('module', ...) persistent id");
                    }
                    None => danger(format!("{what} of a persistent id that is not a class: the loader's persistent_load decides what is called")),
                }
                continue;
            }
            _ => {
                danger(format!(
                    "{what} of {}, not a named global: the callable is computed inside the pickle (e.g. the result of getattr or functools.partial), hiding what is called",
                    kind(heap, &inst.callable)
                ));
                continue;
            }
        };
        let key = norm(g);
        if matches!(inst.construct, Construct::Inst | Construct::Obj) {
            let e = uses.entry(g);
            e.called = true;
            e.via.push("INST/OBJ call the class with arguments");
        }
        if inst.construct != Construct::Reduce {
            continue;
        }
        match (key.0.as_str(), key.1.as_str()) {
            ("copyreg", "_reconstructor") => {
                match args.first().and_then(|c| heap.global(c)) {
                    Some(cls) => {
                        let e = uses.entry(cls);
                        e.instantiated = true;
                        e.via.push("instantiated through copyreg._reconstructor");
                    }
                    None => danger("copyreg._reconstructor of a class that is not a named global".into()),
                }
                match args.get(1).and_then(|b| heap.global(b)) {
                    Some(base) => {
                        let (m, n) = norm(base);
                        if !policy::is_plain_base(&m, &n) {
                            let e = uses.entry(base);
                            e.called = true;
                            e.via
                                .push("the base of copyreg._reconstructor: its __new__ and __init__ run");
                        }
                    }
                    None => danger("copyreg._reconstructor with a base that is not a named global".into()),
                }
            }
            ("copyreg", "__newobj__" | "__newobj_ex__") => match args.first().and_then(|c| heap.global(c)) {
                Some(cls) => {
                    let e = uses.entry(cls);
                    e.instantiated = true;
                    e.via.push("instantiated through copyreg.__newobj__");
                }
                None => danger(format!("copyreg.{} of a class that is not a named global", key.1)),
            },
            ("torch._tensor", "_rebuild_from_type_v2") => {
                if let Some(f) = args.first() {
                    match heap.global(f) {
                        Some(f) => {
                            let e = uses.entry(f);
                            e.called = true;
                            e.via.push("called by torch._tensor._rebuild_from_type_v2");
                        }
                        None => danger(format!(
                            "torch._tensor._rebuild_from_type_v2 calls {}, not a named global",
                            kind(heap, f)
                        )),
                    }
                }
                if let Some(t) = args.get(1).and_then(|t| heap.global(t)) {
                    let e = uses.entry(t);
                    e.instantiated = true;
                    e.via.push("the tensor subclass of torch._tensor._rebuild_from_type_v2");
                }
            }
            ("torch._utils", "_rebuild_wrapper_subclass") => {
                if let Some(cls) = args.first().and_then(|c| heap.global(c)) {
                    let e = uses.entry(cls);
                    e.instantiated = true;
                    e.via.push("the class of torch._utils._rebuild_wrapper_subclass");
                }
            }
            ("torch.storage", "_load_from_bytes") | ("pickle" | "_pickle", "loads" | "_loads") => {
                match args.first().and_then(|a| literal_bytes(heap, a)) {
                    Some(bytes) => nested.push((format!("{}({} bytes)", key.1, bytes.len()), bytes)),
                    None => danger(format!(
                        "{}.{} of bytes computed inside the pickle: what it loads cannot be checked",
                        key.0, key.1
                    )),
                }
            }
            _ => {}
        }
    }
    let worst = globals_report(col, report, uses, torchscript);
    let mut worst = worst;
    for f in extra {
        worst = worst.max(f.verdict);
        col.findings.push(f);
    }
    report.verdict = worst;
    for (label, bytes) in nested {
        let before = col.pickles.len();
        container::scan_nested(col, &format!("{record} -> {label}"), &bytes);
        let nested_worst = col.pickles[before..]
            .iter()
            .map(|p| p.verdict)
            .max()
            .unwrap_or(Verdict::Safe);
        report.verdict = report.verdict.max(nested_worst);
    }
}

/// Turns effective uses into reports and findings; returns the worst verdict.
fn globals_report(col: &mut Collector, report: &mut PickleReport, uses: Uses, torchscript: bool) -> Verdict {
    let mut worst = Verdict::Safe;
    for ((module, name), e) in uses.map {
        let (category, why) = policy::classify(&module, &name, torchscript);
        let mut verdict = policy::judge(category, e.called);
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
        let action = if e.called {
            "calls"
        } else if e.instantiated || e.built {
            "instantiates"
        } else {
            "imports (without calling)"
        };
        let mut message = match category {
            Category::Allowed => String::new(),
            Category::Denylisted => format!("{action} {dotted}: {why}"),
            Category::Unknown if e.called => {
                format!("{action} {dotted}, which is not in torch's weights_only allowlist (an unknown callable is dangerous)")
            }
            Category::Unknown => format!("{action} {dotted}: loading needs this module's code (weights_only=False)"),
            Category::Archive => format!("{} {dotted}: {why}", if e.called { "builds" } else { action }),
            Category::KnownData => {
                format!("{action} {dotted}: {why}; weights_only=True refuses it, nothing dangerous runs")
            }
            Category::Reconstructor => format!("{action} {dotted}: {why}"),
            Category::NestedLoader => format!("{action} {dotted}: {why} (scanned below)"),
        };
        if category == Category::Reconstructor || category == Category::NestedLoader {
            verdict = Verdict::NeedsCode;
        }
        if !e.via.is_empty() {
            let mut via = e.via.clone();
            via.dedup();
            message.push_str(&format!(" ({})", via.join("; ")));
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
                message: message.clone(),
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
