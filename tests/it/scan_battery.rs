//! Batteries of hand-written pickles for the rules of `ckpt scan` that concern how a pickle
//! calls things: calls hidden in arguments (lazy iterators and callable-taking gadgets), dotted
//! names, calls made before a point the machine cannot read past, Enum members, opcodes that are
//! only notes, and embedded payloads loaded many times. Every payload names at most
//! `echo ckpt-hostile-fixture`; nothing is ever unpickled.

use std::time::{Duration, Instant};

use ckpt::read::ReadLimits;
use ckpt::scan::{self, ScanReport, Verdict};

const CMD: &str = "echo ckpt-hostile-fixture";

/// A pickle written opcode by opcode.
#[derive(Clone, Default)]
struct P(Vec<u8>);

impl P {
    fn proto(n: u8) -> P {
        P(vec![0x80, n])
    }
    /// Protocol 0/1: no PROTO opcode.
    fn bare() -> P {
        P(Vec::new())
    }
    fn raw(mut self, b: &[u8]) -> P {
        self.0.extend_from_slice(b);
        self
    }
    fn global(self, module: &str, name: &str) -> P {
        self.raw(format!("c{module}\n{name}\n").as_bytes())
    }
    /// SHORT_BINUNICODE module, SHORT_BINUNICODE name, STACK_GLOBAL.
    fn stack_global(self, module: &str, name: &str) -> P {
        self.short_str(module).short_str(name).raw(b"\x93")
    }
    fn short_str(self, s: &str) -> P {
        let n = u8::try_from(s.len()).expect("short");
        self.raw(&[0x8c, n]).raw(s.as_bytes())
    }
    /// BINUNICODE.
    fn str(self, s: &str) -> P {
        self.str_bytes(s.as_bytes())
    }
    fn str_bytes(self, b: &[u8]) -> P {
        self.raw(b"X").raw(&(b.len() as u32).to_le_bytes()).raw(b)
    }
    /// BINBYTES.
    fn bytes(self, b: &[u8]) -> P {
        self.raw(b"B").raw(&(b.len() as u32).to_le_bytes()).raw(b)
    }
    fn int(self, i: i32) -> P {
        self.raw(b"J").raw(&i.to_le_bytes())
    }
    fn none(self) -> P {
        self.raw(b"N")
    }
    fn mark(self) -> P {
        self.raw(b"(")
    }
    fn tuple(self) -> P {
        self.raw(b"t")
    }
    fn tuple1(self) -> P {
        self.raw(b"\x85")
    }
    fn tuple2(self) -> P {
        self.raw(b"\x86")
    }
    fn tuple3(self) -> P {
        self.raw(b"\x87")
    }
    fn empty_tuple(self) -> P {
        self.raw(b")")
    }
    fn empty_dict(self) -> P {
        self.raw(b"}")
    }
    fn list(self) -> P {
        self.raw(b"l")
    }
    fn reduce(self) -> P {
        self.raw(b"R")
    }
    fn newobj(self) -> P {
        self.raw(b"\x81")
    }
    fn newobj_ex(self) -> P {
        self.raw(b"\x92")
    }
    fn build(self) -> P {
        self.raw(b"b")
    }
    fn setitem(self) -> P {
        self.raw(b"s")
    }
    fn put(self, n: u8) -> P {
        self.raw(&[b'q', n])
    }
    fn get(self, n: u8) -> P {
        self.raw(&[b'h', n])
    }
    fn long_put(self, n: u32) -> P {
        self.raw(b"r").raw(&n.to_le_bytes())
    }
    fn long_get(self, n: u32) -> P {
        self.raw(b"j").raw(&n.to_le_bytes())
    }
    fn pop(self) -> P {
        self.raw(b"0")
    }
    /// `[CMD]`
    fn cmd_list(self) -> P {
        self.mark().str(CMD).list()
    }
    fn stop(self) -> Vec<u8> {
        self.raw(b".").0
    }
}

/// `callee.__new__(callee, f, [CMD])`: a lazy iterator holding `f` (NEWOBJ).
fn lazy(p: P, callee: (&str, &str), f: (&str, &str)) -> P {
    p.global(callee.0, callee.1)
        .global(f.0, f.1)
        .cmd_list()
        .tuple2()
        .newobj()
}

/// `consumer(inner)` by REDUCE.
fn consume(p: P, consumer: (&str, &str), inner: impl FnOnce(P) -> P) -> P {
    inner(p.global(consumer.0, consumer.1)).tuple1().reduce()
}

fn scan_bytes(name: &str, bytes: &[u8]) -> ScanReport {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    let mut reports = scan::scan_paths(&[path], &ReadLimits::default());
    reports.pop().expect("one report")
}

fn mentions(r: &ScanReport) -> String {
    r.findings
        .iter()
        .map(|f| format!("{} {}", f.global.clone().unwrap_or_default(), f.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// (name, pickle, verdict, text a finding must contain)
type Case = (String, Vec<u8>, Verdict, &'static str);

fn run(cases: Vec<Case>) {
    assert!(cases.len() >= 10, "a battery, not an example: {} cases", cases.len());
    let mut failures = Vec::new();
    for (name, bytes, want, mention) in &cases {
        let r = scan_bytes("case.pkl", bytes);
        if r.verdict != *want {
            failures.push(format!("{name}: {} != {want}\n{}", r.verdict, r.to_text(true)));
        } else if !mentions(&r).contains(mention) {
            failures.push(format!(
                "{name}: findings do not mention {mention:?}\n{}",
                r.to_text(true)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

fn case(name: impl Into<String>, bytes: Vec<u8>, verdict: Verdict, mention: &'static str) -> Case {
    (name.into(), bytes, verdict, mention)
}

// ---------------------------------------------------------------------------------------------
// 1. Hidden calls: a global handed to something that calls it.

#[test]
fn hidden_calls_through_lazy_iterators_and_gadgets_are_dangerous() {
    let f = ("mylib", "fn");
    let mut cases = Vec::new();
    // A lazy iterator made by NEWOBJ, consumed by every kind of consumer.
    for consumer in [
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "tuple"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
        ("builtins", "sorted"),
        ("builtins", "min"),
        ("builtins", "max"),
        ("builtins", "sum"),
        ("builtins", "any"),
        ("builtins", "all"),
        ("builtins", "enumerate"),
        ("builtins", "zip"),
        ("builtins", "reversed"),
        ("builtins", "iter"),
        ("collections", "OrderedDict"),
        ("collections", "Counter"),
        ("collections", "deque"),
        ("torch", "Size"),
    ] {
        for gadget in [("builtins", "map"), ("builtins", "filter"), ("itertools", "starmap")] {
            let bytes = consume(P::proto(2), consumer, |p| lazy(p, gadget, f)).stop();
            cases.push(case(
                format!(
                    "{}.{}({}.{}(mylib.fn, ...))",
                    consumer.0, consumer.1, gadget.0, gadget.1
                ),
                bytes,
                Verdict::Dangerous,
                "mylib.fn",
            ));
        }
    }
    // tuple.__new__(tuple, map(...)) via NEWOBJ: the consumer is itself a NEWOBJ.
    let bytes = P::proto(2)
        .global("builtins", "tuple")
        .global("builtins", "map")
        .global("mylib", "fn")
        .cmd_list()
        .tuple2()
        .newobj()
        .tuple1()
        .newobj()
        .stop();
    cases.push(case(
        "tuple.__new__(tuple, map(f, ...))",
        bytes,
        Verdict::Dangerous,
        "mylib.fn",
    ));
    // Other itertools iterators with the callable first or second.
    for gadget in ["filterfalse", "takewhile", "dropwhile"] {
        let bytes = consume(P::proto(2), ("builtins", "list"), |p| lazy(p, ("itertools", gadget), f)).stop();
        cases.push(case(
            format!("itertools.{gadget}"),
            bytes,
            Verdict::Dangerous,
            "mylib.fn",
        ));
    }
    for gadget in ["accumulate", "groupby"] {
        let bytes = P::proto(2)
            .global("builtins", "list")
            .global("itertools", gadget)
            .cmd_list()
            .global("mylib", "fn")
            .tuple2()
            .newobj()
            .tuple1()
            .reduce()
            .stop();
        cases.push(case(
            format!("itertools.{gadget}"),
            bytes,
            Verdict::Dangerous,
            "mylib.fn",
        ));
    }
    // Called at once: REDUCE of the gadget itself.
    for (m, n) in [
        ("builtins", "map"),
        ("builtins", "filter"),
        ("builtins", "iter"),
        ("functools", "reduce"),
        ("itertools", "starmap"),
    ] {
        let bytes = P::proto(2)
            .global(m, n)
            .global("mylib", "fn")
            .cmd_list()
            .tuple2()
            .reduce()
            .stop();
        cases.push(case(
            format!("REDUCE {m}.{n}(mylib.fn, ...)"),
            bytes,
            Verdict::Dangerous,
            "mylib.fn",
        ));
    }
    // Python 2 spellings that CPython renames.
    for (m, n) in [("itertools", "imap"), ("itertools", "ifilter"), ("__builtin__", "map")] {
        let bytes = consume(P::proto(2), ("__builtin__", "set"), |p| lazy(p, (m, n), f)).stop();
        cases.push(case(format!("{m}.{n}"), bytes, Verdict::Dangerous, "mylib.fn"));
    }
    // The function memoized, fetched back by BINGET.
    let bytes = P::proto(2)
        .global("mylib", "fn")
        .put(0)
        .pop()
        .global("builtins", "set")
        .global("builtins", "map")
        .get(0)
        .cmd_list()
        .tuple2()
        .newobj()
        .tuple1()
        .reduce()
        .stop();
    cases.push(case("memoized function", bytes, Verdict::Dangerous, "mylib.fn"));
    // Protocol 4: STACK_GLOBAL names.
    let bytes = P::proto(4)
        .stack_global("builtins", "set")
        .stack_global("builtins", "map")
        .stack_global("mylib", "fn")
        .cmd_list()
        .tuple2()
        .newobj()
        .tuple1()
        .reduce()
        .stop();
    cases.push(case("protocol 4 map", bytes, Verdict::Dangerous, "mylib.fn"));
    // copyreg.__newobj__(map, f, [CMD]) hands f to map.
    let bytes = P::proto(2)
        .global("builtins", "set")
        .mark()
        .global("copyreg", "__newobj__")
        .mark()
        .global("builtins", "map")
        .global("mylib", "fn")
        .cmd_list()
        .tuple()
        .reduce()
        .tuple1()
        .reduce()
        .stop();
    cases.push(case(
        "copyreg.__newobj__(map, f, ...)",
        bytes,
        Verdict::Dangerous,
        "mylib.fn",
    ));
    // NEWOBJ_EX: positional and keyword.
    let bytes = P::proto(4)
        .global("builtins", "filter")
        .global("mylib", "fn")
        .cmd_list()
        .tuple2()
        .empty_dict()
        .newobj_ex()
        .stop();
    cases.push(case("NEWOBJ_EX filter", bytes, Verdict::Dangerous, "mylib.fn"));
    let bytes = P::proto(4)
        .global("mylib", "Lazy")
        .empty_tuple()
        .empty_dict()
        .str("key")
        .global("mylib", "fn")
        .setitem()
        .newobj_ex()
        .stop();
    cases.push(case(
        "NEWOBJ_EX keyword callable",
        bytes,
        Verdict::Dangerous,
        "mylib.fn",
    ));
    // An unknown class given a function: its __new__ may call it.
    let bytes = P::proto(2)
        .global("mylib", "Lazy")
        .global("mylib", "fn")
        .tuple1()
        .newobj()
        .stop();
    cases.push(case(
        "unknown class given a function",
        bytes,
        Verdict::Dangerous,
        "mylib.fn",
    ));
    // defaultdict calls its factory on every missing key.
    let bytes = P::proto(2)
        .global("collections", "defaultdict")
        .global("mylib", "fn")
        .tuple1()
        .reduce()
        .stop();
    cases.push(case("defaultdict factory", bytes, Verdict::Dangerous, "mylib.fn"));
    // Other callable-takers: built by NEWOBJ (defaultdict, property) or called (weakref,
    // atexit), each holding a function it calls later.
    for (m, n) in [
        ("collections", "defaultdict"),
        ("builtins", "property"),
        ("builtins", "staticmethod"),
    ] {
        let bytes = P::proto(2).global(m, n).global("mylib", "fn").tuple1().newobj().stop();
        cases.push(case(
            format!("NEWOBJ {m}.{n}(mylib.fn)"),
            bytes,
            Verdict::Dangerous,
            "mylib.fn",
        ));
    }
    for (m, n) in [
        ("weakref", "finalize"),
        ("atexit", "register"),
        ("functools", "cmp_to_key"),
    ] {
        let bytes = P::proto(2)
            .global(m, n)
            .global("builtins", "object")
            .global("mylib", "fn")
            .tuple2()
            .reduce()
            .stop();
        cases.push(case(format!("REDUCE {m}.{n}"), bytes, Verdict::Dangerous, "mylib.fn"));
    }
    // iter(callable, sentinel) calls; a map through INST and through OBJ.
    let bytes = P::proto(2)
        .global("builtins", "iter")
        .global("mylib", "fn")
        .str("")
        .tuple2()
        .reduce()
        .stop();
    cases.push(case("iter(f, sentinel)", bytes, Verdict::Dangerous, "mylib.fn"));
    let bytes = P::bare()
        .mark()
        .global("mylib", "fn")
        .cmd_list()
        .raw(b"ibuiltins\nmap\n")
        .stop();
    cases.push(case("INST map", bytes, Verdict::Dangerous, "mylib.fn"));
    let bytes = P::proto(1)
        .mark()
        .global("builtins", "map")
        .global("mylib", "fn")
        .cmd_list()
        .raw(b"o")
        .stop();
    cases.push(case("OBJ map", bytes, Verdict::Dangerous, "mylib.fn"));
    // Denylisted functions through a gadget.
    let bytes = consume(P::proto(2), ("builtins", "set"), |p| {
        lazy(p, ("builtins", "map"), ("posix", "system"))
    })
    .stop();
    cases.push(case("map(posix.system)", bytes, Verdict::Dangerous, "posix.system"));
    let bytes = consume(P::proto(2), ("builtins", "list"), |p| {
        lazy(p, ("builtins", "map"), ("builtins", "eval"))
    })
    .stop();
    cases.push(case("map(eval)", bytes, Verdict::Dangerous, "builtins.eval"));
    // A computed callable given to a gadget.
    let bytes = P::proto(2)
        .global("builtins", "map")
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .cmd_list()
        .tuple2()
        .newobj()
        .stop();
    cases.push(case(
        "map of a computed callable",
        bytes,
        Verdict::Dangerous,
        "result of another call",
    ));
    // The trampoline torch allows, given a function through a lazy iterator.
    let bytes = P::proto(2)
        .global("torch._tensor", "_rebuild_from_type_v2")
        .mark()
        .global("builtins", "set")
        .global("torch", "Tensor")
        .mark()
        .global("builtins", "map")
        .global("mylib", "fn")
        .cmd_list()
        .tuple2()
        .newobj()
        .tuple1()
        .empty_dict()
        .tuple()
        .reduce()
        .stop();
    cases.push(case(
        "trampoline of set over map",
        bytes,
        Verdict::Dangerous,
        "mylib.fn",
    ));
    run(cases);
}

#[test]
fn data_passed_as_arguments_keeps_its_verdict() {
    let mut cases = Vec::new();
    // map over an allowlisted callable: map itself needs code, nothing unknown is called.
    let bytes = consume(P::proto(2), ("builtins", "set"), |p| {
        lazy(p, ("builtins", "map"), ("torch", "Size"))
    })
    .stop();
    cases.push(case("map(torch.Size)", bytes, Verdict::NeedsCode, "builtins.map"));
    for factory in ["list", "int", "dict", "float"] {
        let bytes = P::proto(2)
            .global("collections", "defaultdict")
            .global("builtins", factory)
            .tuple1()
            .reduce()
            .stop();
        cases.push(case(
            format!("defaultdict({factory})"),
            bytes,
            Verdict::NeedsCode,
            "collections.defaultdict",
        ));
    }
    let bytes = P::proto(2)
        .global("collections", "defaultdict")
        .global("builtins", "set")
        .tuple1()
        .reduce()
        .stop();
    cases.push(case(
        "defaultdict(set)",
        bytes,
        Verdict::NeedsCode,
        "collections.defaultdict",
    ));
    // A whole model whose state holds a function: referenced, not called.
    let bytes = P::proto(2)
        .global("__main__", "Net")
        .empty_tuple()
        .newobj()
        .empty_dict()
        .str("act")
        .global("torch.nn.functional", "relu")
        .setitem()
        .build()
        .stop();
    cases.push(case(
        "model state holding a function",
        bytes,
        Verdict::NeedsCode,
        "torch.nn.functional.relu",
    ));
    // A namedtuple: NEWOBJ with plain values.
    let bytes = P::proto(2)
        .global("__main__", "Point")
        .int(1)
        .int(2)
        .tuple2()
        .newobj()
        .stop();
    cases.push(case("namedtuple", bytes, Verdict::NeedsCode, "__main__.Point"));
    // An unknown class given an allowlisted dtype.
    let bytes = P::proto(2)
        .global("mylib", "Holder")
        .global("torch", "float32")
        .tuple1()
        .newobj()
        .stop();
    cases.push(case("class given a dtype", bytes, Verdict::NeedsCode, "mylib.Holder"));
    // Allowlisted calls that take globals as data.
    let bytes = P::proto(2)
        .global("torch._utils", "_rebuild_meta_tensor_no_storage")
        .mark()
        .global("torch", "float32")
        .mark()
        .int(2)
        .tuple()
        .mark()
        .int(1)
        .tuple()
        .raw(b"\x89")
        .tuple()
        .reduce()
        .stop();
    cases.push(case("meta tensor with a dtype", bytes, Verdict::Safe, ""));
    // numpy's reconstruct takes the array class.
    let bytes = P::proto(2)
        .global("numpy.core.multiarray", "_reconstruct")
        .global("numpy", "ndarray")
        .int(0)
        .tuple1()
        .bytes(b"b")
        .tuple3()
        .reduce()
        .stop();
    cases.push(case("numpy _reconstruct", bytes, Verdict::NeedsCode, "numpy"));
    // A set of functions is data: nothing iterates a function.
    let bytes = P::proto(2)
        .global("builtins", "set")
        .mark()
        .global("torch.nn.functional", "relu")
        .list()
        .tuple1()
        .reduce()
        .stop();
    cases.push(case(
        "set of a function list",
        bytes,
        Verdict::NeedsCode,
        "torch.nn.functional.relu",
    ));
    // copyreg.__newobj__ of a class with plain arguments.
    let bytes = P::proto(2)
        .global("copyreg", "__newobj__")
        .global("__main__", "Net")
        .int(3)
        .tuple2()
        .reduce()
        .stop();
    cases.push(case(
        "__newobj__ with plain args",
        bytes,
        Verdict::NeedsCode,
        "__main__.Net",
    ));
    // A plain OrderedDict state dict.
    let bytes = P::proto(2)
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .stop();
    cases.push(case("OrderedDict()", bytes, Verdict::Safe, ""));
    run(cases);
}

// ---------------------------------------------------------------------------------------------
// 2. Dotted names: every reading counts.

#[test]
fn dotted_names_are_judged_by_their_most_severe_reading() {
    let mut cases = Vec::new();
    let walks: &[(&str, &str, &str)] = &[
        ("torch.serialization", "os.system", "os.system"),
        ("torch", "serialization.os.system", "serialization.os.system"),
        ("torch", "serialization.os", "serialization.os"),
        ("torch.serialization", "pickle.loads", "pickle.loads"),
        ("torch", "nn.modules.module.torch.load", "torch.load"),
        ("builtins", "getattr.__self__", "getattr.__self__"),
        ("builtins", "getattr.x", "builtins.getattr"),
        ("collections", "OrderedDict.__init__.__globals__", "dunder"),
        ("torch._utils", "_rebuild_tensor_v2.__globals__", "dunder"),
        ("mylib", "Outer.subprocess.Popen", "subprocess.Popen"),
        ("numpy", "testing.run", "numpy.testing"),
        ("torch", "hub.load", "torch.hub"),
        ("torch.serialization", "sys.modules", "sys.modules"),
        ("__main__", "Net.__reduce__", "dunder"),
    ];
    for &(m, n, mention) in walks {
        for proto in [4u8, 5] {
            let called = P::proto(proto).stack_global(m, n).str(CMD).tuple1().reduce().stop();
            cases.push(case(
                format!("p{proto} {m} {n} called"),
                called,
                Verdict::Dangerous,
                mention,
            ));
            let referenced = P::proto(proto).stack_global(m, n).stop();
            cases.push(case(
                format!("p{proto} {m} {n} referenced"),
                referenced,
                Verdict::Dangerous,
                mention,
            ));
        }
        // Below protocol 4 CPython fails the lookup, but such a name is never cleared.
        let p2 = P::proto(2).global(m, n).str(CMD).tuple1().reduce().stop();
        cases.push(case(format!("p2 {m} {n}"), p2, Verdict::Dangerous, mention));
        let p0 = P::bare().global(m, n).stop();
        cases.push(case(format!("p0 {m} {n}"), p0, Verdict::Dangerous, mention));
    }
    // A protocol that changes mid-stream: the reading at the opcode is what counts.
    let bytes = P::proto(2)
        .raw(b"\x80\x04")
        .global("torch.serialization", "os.system")
        .str(CMD)
        .tuple1()
        .reduce()
        .stop();
    cases.push(case("PROTO 2 then 4", bytes, Verdict::Dangerous, "protocol 4"));
    let bytes = P::proto(4)
        .raw(b"\x80\x02")
        .stack_global("torch.serialization", "os.system")
        .stop();
    cases.push(case("PROTO 4 then 2", bytes, Verdict::Dangerous, "protocol 2"));
    // INST with a dotted name.
    let bytes = P::bare()
        .mark()
        .str(CMD)
        .raw(b"itorch.serialization\nos.system\n")
        .stop();
    cases.push(case("INST dotted", bytes, Verdict::Dangerous, "os.system"));
    // Dotted names that reach nothing denylisted are never safe, even below an allowlisted name.
    for (m, n) in [
        ("collections", "OrderedDict.fromkeys"),
        ("torch", "Size.count"),
        ("torch._utils", "_rebuild_tensor_v2.x"),
        ("builtins", "set.union"),
        ("mylib", "Outer.Inner"),
    ] {
        let referenced = P::proto(4).stack_global(m, n).stop();
        cases.push(case(
            format!("{m} {n} referenced"),
            referenced,
            Verdict::NeedsCode,
            "dotted name",
        ));
        let referenced = P::proto(2).global(m, n).stop();
        cases.push(case(
            format!("p2 {m} {n} referenced"),
            referenced,
            Verdict::NeedsCode,
            "protocol 2",
        ));
        let called = P::proto(4).stack_global(m, n).str(CMD).tuple1().reduce().stop();
        cases.push(case(
            format!("{m} {n} called"),
            called,
            Verdict::Dangerous,
            "dotted name",
        ));
    }
    run(cases);
}

// ---------------------------------------------------------------------------------------------
// 3. Calls made before the point where the machine stops.

#[test]
fn calls_before_unreadable_bytes_are_dangerous() {
    let call = || P::proto(2).global("mylib", "fn").str(CMD).tuple1().reduce();
    let mut cases = Vec::new();
    let tails: Vec<(&str, Vec<u8>)> = vec![
        ("unknown opcode", b"\xff".to_vec()),
        ("truncated BINUNICODE", b"X\x10\x00\x00\x00ab".to_vec()),
        ("truncated BINBYTES", b"B\xff\xff\x00\x00".to_vec()),
        ("memo missing", b"h\x09.".to_vec()),
        ("stack underflow", b"0000.".to_vec()),
        ("no STOP", Vec::new()),
        ("invalid UTF-8", b"X\x01\x00\x00\x00\xff.".to_vec()),
        ("bad protocol", b"\x80\x09.".to_vec()),
        ("APPEND onto a str", b"X\x01\x00\x00\x00aNa.".to_vec()),
        ("odd SETITEMS", b"}(Nu.".to_vec()),
        ("bad INT", b"I12x\n.".to_vec()),
        ("no MARK", b"t.".to_vec()),
        ("STACK_GLOBAL of ints", b"K\x01K\x02\x93.".to_vec()),
        ("out-of-band buffer", b"\x97.".to_vec()),
    ];
    for (name, tail) in &tails {
        let bytes = call().raw(tail).0;
        cases.push(case(
            format!("REDUCE then {name}"),
            bytes,
            Verdict::Dangerous,
            "mylib.fn",
        ));
    }
    // INST and OBJ call too; so does a memoized call reused after the failure point.
    let bytes = P::bare().mark().str(CMD).raw(b"imylib\nfn\n\xff").0;
    cases.push(case("INST then garbage", bytes, Verdict::Dangerous, "mylib.fn"));
    let bytes = P::proto(1).mark().global("mylib", "Thing").str(CMD).raw(b"o\xff").0;
    cases.push(case("OBJ then garbage", bytes, Verdict::Dangerous, "mylib.Thing"));
    // A REDUCE hidden in a lone surrogate string's neighbourhood: CPython reads surrogates, and
    // so does the machine now, so the call is seen in a pickle that parses.
    let bytes = P::proto(2)
        .global("mylib", "fn")
        .str_bytes(b"a\xed\xa0\x80")
        .tuple1()
        .reduce()
        .stop();
    cases.push(case(
        "REDUCE with a surrogate argument",
        bytes,
        Verdict::Dangerous,
        "mylib.fn",
    ));
    let bytes = call().str_bytes(b"\xed\xb2\x80").raw(b"\xff").0;
    cases.push(case(
        "REDUCE, surrogate, garbage",
        bytes,
        Verdict::Dangerous,
        "mylib.fn",
    ));
    let bytes = P::proto(4)
        .global("mylib", "fn")
        .raw(b"\x8c\x03\xed\xa0\x80")
        .tuple1()
        .reduce()
        .stop();
    cases.push(case(
        "SHORT_BINUNICODE surrogate",
        bytes,
        Verdict::Dangerous,
        "mylib.fn",
    ));
    let bytes = P::bare().global("mylib", "fn").raw(b"(V\\ud800\ntR.").0;
    cases.push(case(
        "UNICODE lone surrogate escape",
        bytes,
        Verdict::Dangerous,
        "mylib.fn",
    ));
    // The trampoline and the reconstructor base run before garbage too.
    let bytes = P::proto(2)
        .global("torch._tensor", "_rebuild_from_type_v2")
        .mark()
        .global("mylib", "fn")
        .global("torch", "Tensor")
        .str(CMD)
        .tuple1()
        .empty_dict()
        .tuple()
        .reduce()
        .raw(b"\xff")
        .0;
    cases.push(case("trampoline then garbage", bytes, Verdict::Dangerous, "mylib.fn"));
    // Mutations CPython performs through a method of the target (append, __setitem__,
    // __setstate__ on a class): the machine refuses them, CPython goes on.
    let bytes = P::proto(2)
        .global("torch.serialization", "_package_registry")
        .mark()
        .int(1)
        .global("mylib", "tagger")
        .global("mylib", "loader")
        .tuple()
        .raw(b"a")
        .stop();
    cases.push(case(
        "APPEND a hook onto a registry",
        bytes,
        Verdict::Dangerous,
        "mylib.tagger",
    ));
    let bytes = P::proto(2)
        .global("collections", "OrderedDict")
        .none()
        .empty_dict()
        .str("__setitem__")
        .global("mylib", "fn")
        .setitem()
        .tuple2()
        .build()
        .stop();
    cases.push(case("BUILD onto a class", bytes, Verdict::Dangerous, "mylib.fn"));
    let bytes = P::proto(2)
        .global("mylib", "REGISTRY")
        .str("k")
        .global("mylib", "fn")
        .setitem()
        .stop();
    cases.push(case("SETITEM onto a global", bytes, Verdict::Dangerous, "mylib.fn"));
    run(cases);
}

#[test]
fn damage_without_a_call_before_it_is_unreadable_not_dangerous() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated state dict",
            P::proto(2).global("collections", "OrderedDict").empty_tuple().0,
        ),
        (
            "class then garbage",
            P::proto(2)
                .global("__main__", "Net")
                .empty_tuple()
                .newobj()
                .raw(b"\xff")
                .0,
        ),
        (
            "referenced then truncated",
            P::proto(2).global("mylib", "fn").raw(b"X\x10").0,
        ),
        ("empty", Vec::new()),
        ("dict then unknown opcode", P::proto(2).empty_dict().raw(b"\xfe").0),
        (
            "model, then bytes CPython may accept but nothing called after them",
            P::proto(2)
                .global("__main__", "Net")
                .empty_tuple()
                .newobj()
                .empty_dict()
                .build()
                .str_bytes(b"\xff")
                .stop(),
        ),
        (
            "model then truncation",
            P::proto(2)
                .global("__main__", "Net")
                .empty_tuple()
                .newobj()
                .empty_dict()
                .str("training")
                .raw(b"\x88s")
                .0,
        ),
    ];
    for (name, bytes) in cases {
        let r = scan_bytes("damaged.pkl", &bytes);
        assert_eq!(r.verdict, Verdict::Unreadable, "{name}:\n{}", r.to_text(true));
        assert!(r.error.is_some(), "{name}: the error is reported");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Enum members and value classes.

/// `module.Cls(value)` by REDUCE, at protocol 2 (GLOBAL) or 4 (STACK_GLOBAL + MEMOIZE).
fn enum_member(proto: u8, module: &str, cls: &str, value: impl FnOnce(P) -> P) -> Vec<u8> {
    let p = if proto >= 4 {
        P::proto(proto).stack_global(module, cls).raw(b"\x94")
    } else {
        P::proto(proto).global(module, cls)
    };
    value(p).tuple1().reduce().stop()
}

#[test]
fn enum_members_need_code_but_calls_stay_dangerous() {
    let mut cases = Vec::new();
    let enums: &[(&str, &str)] = &[
        ("transformers.trainer_utils", "IntervalStrategy"),
        ("transformers.trainer_utils", "SchedulerType"),
        ("transformers.trainer_utils", "HubStrategy"),
        ("transformers.training_args", "OptimizerNames"),
        ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"),
        ("__main__", "Color"),
        ("mylib.enums", "Outer.Mode"),
    ];
    for &(m, c) in enums {
        for proto in [2u8, 4] {
            cases.push(case(
                format!("{m}.{c}('steps') p{proto}"),
                enum_member(proto, m, c, |p| p.str("steps")),
                Verdict::NeedsCode,
                "looks like an Enum",
            ));
            cases.push(case(
                format!("{m}.{c}(1) p{proto}"),
                enum_member(proto, m, c, |p| p.int(1)),
                Verdict::NeedsCode,
                "Enum",
            ));
        }
        for (what, value) in [
            ("None", P::default().none()),
            ("True", P::default().raw(b"\x88")),
            ("float", P::default().raw(b"G\x3f\xf0\0\0\0\0\0\0")),
            ("bytes token", P::default().bytes(b"no")),
            ("cuda:0", P::default().str("cuda:0")),
            ("dotted token", P::default().str("torch.float16")),
        ] {
            cases.push(case(
                format!("{m}.{c}({what})"),
                enum_member(2, m, c, |p| p.raw(&value.0)),
                Verdict::NeedsCode,
                "Enum",
            ));
        }
    }
    // Not enum-like: stay dangerous.
    let dangerous: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "os.system",
            enum_member(2, "os", "system", |p| p.str("id")),
            "os.system",
        ),
        (
            "posix.system",
            enum_member(2, "posix", "system", |p| p.str("id")),
            "posix.system",
        ),
        (
            "subprocess.Popen",
            enum_member(2, "subprocess", "Popen", |p| p.str("id")),
            "subprocess.Popen",
        ),
        (
            "logging.FileHandler",
            enum_member(2, "logging", "FileHandler", |p| p.str("x")),
            "logging.FileHandler",
        ),
        (
            "sqlite3.Connection",
            enum_member(2, "sqlite3", "Connection", |p| p.str("x")),
            "sqlite3.Connection",
        ),
        (
            "imaplib.IMAP4",
            enum_member(2, "imaplib", "IMAP4", |p| p.str("host")),
            "imaplib.IMAP4",
        ),
        (
            "builtins.Exception",
            enum_member(2, "builtins", "Exception", |p| p.str("x")),
            "builtins.Exception",
        ),
        (
            "re.RegexFlag",
            enum_member(2, "re", "RegexFlag", |p| p.int(2)),
            "re.RegexFlag",
        ),
        (
            "pexpect PopenSpawn",
            enum_member(2, "pexpect.popen_spawn", "PopenSpawn", |p| p.str("reboot")),
            "pexpect",
        ),
        (
            "sh.Command",
            enum_member(2, "sh", "Command", |p| p.str("ls")),
            "sh.Command",
        ),
        (
            "lowercase function",
            enum_member(2, "mylib", "fn", |p| p.str("steps")),
            "mylib.fn",
        ),
        (
            "code-like argument",
            enum_member(2, "mylib", "Template", |p| p.str("<%! import os %>")),
            "mylib.Template",
        ),
        (
            "command with spaces",
            enum_member(2, "mylib", "Runner", |p| p.str(CMD)),
            "mylib.Runner",
        ),
        (
            "path argument",
            enum_member(2, "mylib", "Loader", |p| p.str("/tmp/x")),
            "mylib.Loader",
        ),
        (
            "call syntax",
            enum_member(2, "mylib", "Expr", |p| p.str("f(x)")),
            "mylib.Expr",
        ),
        (
            "long token",
            enum_member(2, "mylib", "Key", |p| p.str(&"a".repeat(65))),
            "mylib.Key",
        ),
        (
            "tuple argument",
            enum_member(2, "mylib", "Color", |p| p.str("a").tuple1()),
            "mylib.Color",
        ),
        (
            "global argument",
            enum_member(2, "mylib", "Color", |p| p.global("mylib", "fn")),
            "mylib",
        ),
        (
            "two arguments",
            P::proto(2)
                .global("mylib", "Color")
                .str("a")
                .str("b")
                .tuple2()
                .reduce()
                .stop(),
            "mylib.Color",
        ),
        (
            "no argument",
            P::proto(2).global("mylib", "Color").empty_tuple().reduce().stop(),
            "mylib.Color",
        ),
        (
            "dunder name",
            enum_member(4, "__main__", "Color.__new__", |p| p.str("a")),
            "dunder",
        ),
        (
            "dotted walk",
            enum_member(4, "torch.serialization", "os.Popen", |p| p.str("a")),
            "os",
        ),
        (
            "denylisted torch",
            enum_member(2, "torch.hub", "Loader", |p| p.str("a")),
            "torch.hub",
        ),
        (
            "gadget class",
            enum_member(2, "builtins", "map", |p| p.str("a")),
            "builtins.map",
        ),
        (
            "enum class also called with code",
            P::proto(2)
                .global("mylib", "Color")
                .put(0)
                .str("red")
                .tuple1()
                .reduce()
                .pop()
                .get(0)
                .str(CMD)
                .tuple1()
                .reduce()
                .stop(),
            "mylib.Color",
        ),
        (
            "enum class also handed to map",
            P::proto(2)
                .global("mylib", "Color")
                .put(0)
                .str("red")
                .tuple1()
                .reduce()
                .pop()
                .global("builtins", "map")
                .get(0)
                .cmd_list()
                .tuple2()
                .newobj()
                .stop(),
            "mylib.Color",
        ),
        (
            "enum class also INST",
            P::bare()
                .mark()
                .str("red")
                .raw(b"imylib\nColor\n")
                .pop()
                .global("mylib", "Color")
                .str("x")
                .raw(b"\x85R.")
                .0,
            "mylib.Color",
        ),
    ];
    for (name, bytes, mention) in dangerous {
        cases.push(case(name, bytes, Verdict::Dangerous, mention));
    }
    run(cases);
}

/// A look-alike of what `torch.save(TrainingArguments(...))` writes to `training_args.bin`:
/// the dataclass by `copyreg.__newobj__`-style NEWOBJ, its `__dict__` by BUILD, Enum fields by
/// REDUCE of their class with the value.
fn training_args() -> Vec<u8> {
    let mut p = P::proto(2)
        .global("transformers.training_args", "TrainingArguments")
        .put(0)
        .empty_tuple()
        .newobj()
        .empty_dict()
        .mark();
    let fields: &[(&str, &str, &str, &str)] = &[
        (
            "eval_strategy",
            "transformers.trainer_utils",
            "IntervalStrategy",
            "steps",
        ),
        (
            "logging_strategy",
            "transformers.trainer_utils",
            "IntervalStrategy",
            "steps",
        ),
        ("save_strategy", "transformers.trainer_utils", "SaveStrategy", "epoch"),
        (
            "lr_scheduler_type",
            "transformers.trainer_utils",
            "SchedulerType",
            "linear",
        ),
        ("optim", "transformers.training_args", "OptimizerNames", "adamw_torch"),
        (
            "hub_strategy",
            "transformers.trainer_utils",
            "HubStrategy",
            "every_save",
        ),
        (
            "parallel_mode",
            "transformers.training_args",
            "ParallelMode",
            "not_parallel",
        ),
    ];
    for (field, m, c, v) in fields {
        p = p.str(field).global(m, c).str(v).tuple1().reduce();
    }
    p = p
        .str("output_dir")
        .str("/tmp/out")
        .str("learning_rate")
        .raw(b"G\x3f\x1a\x36\xe2\xeb\x1c\x43\x2d")
        .str("report_to")
        .mark()
        .str("tensorboard")
        .list()
        .str("fsdp")
        .mark()
        .list()
        .str("torch_dtype")
        .global("torch", "bfloat16")
        .raw(b"u");
    p.build().stop()
}

/// A look-alike of a DCP `.metadata` (plain `pickle.dump`, protocol 4): Metadata with one
/// tensor whose TensorProperties state holds dtype, layout and the `_MEM_FORMAT_ENCODING` Enum.
fn dcp_metadata() -> Vec<u8> {
    let m = "torch.distributed.checkpoint.metadata";
    let mut p = P::default();
    p = p
        .stack_global(m, "Metadata")
        .raw(b"\x94")
        .empty_tuple()
        .newobj()
        .raw(b"\x94");
    p = p
        .empty_dict()
        .raw(b"\x94")
        .mark()
        .short_str("state_dict_metadata")
        .raw(b"\x94");
    p = p.empty_dict().raw(b"\x94").short_str("w").raw(b"\x94");
    p = p
        .stack_global(m, "TensorStorageMetadata")
        .raw(b"\x94")
        .empty_tuple()
        .newobj()
        .raw(b"\x94");
    p = p.empty_dict().mark().short_str("properties");
    p = p
        .stack_global(m, "TensorProperties")
        .raw(b"\x94")
        .empty_tuple()
        .newobj();
    p = p
        .mark()
        .stack_global("torch", "float32")
        .stack_global("torch", "strided")
        .raw(b"\x89")
        .stack_global(m, "_MEM_FORMAT_ENCODING")
        .raw(b"K\x01\x85R")
        .raw(b"\x89")
        .tuple()
        .build();
    p = p
        .short_str("size")
        .stack_global("torch", "Size")
        .mark()
        .raw(b"K\x02K\x02")
        .tuple()
        .tuple1()
        .reduce();
    p = p.short_str("chunks").raw(b"]").mark();
    p = p
        .stack_global(m, "ChunkStorageMetadata")
        .empty_tuple()
        .newobj()
        .empty_dict()
        .mark();
    p = p
        .short_str("offsets")
        .stack_global("torch", "Size")
        .mark()
        .raw(b"K\x00K\x00")
        .tuple()
        .tuple1()
        .reduce();
    p = p
        .short_str("sizes")
        .stack_global("torch", "Size")
        .mark()
        .raw(b"K\x02K\x02")
        .tuple()
        .tuple1()
        .reduce();
    p = p.raw(b"u").build().raw(b"e");
    p = p.raw(b"u").build().raw(b"s");
    p = p
        .short_str("planner_data")
        .none()
        .short_str("storage_data")
        .empty_dict();
    let body = p.raw(b"u").build().stop();
    // One FRAME around the body, as pickle.dump writes at protocol 4.
    P::proto(4)
        .raw(b"\x95")
        .raw(&(body.len() as u64).to_le_bytes())
        .raw(&body)
        .0
}

#[test]
fn training_args_and_dcp_metadata_need_code_not_dangerous() {
    let r = scan_bytes("training_args.bin", &training_args());
    assert_eq!(r.verdict, Verdict::NeedsCode, "{}", r.to_text(true));
    let said = mentions(&r);
    for name in [
        "transformers.training_args.TrainingArguments",
        "transformers.trainer_utils.IntervalStrategy",
        "transformers.training_args.OptimizerNames",
        "looks like an Enum/class instantiation",
    ] {
        assert!(said.contains(name), "{name}:\n{said}");
    }
    let r = scan_bytes(".metadata", &dcp_metadata());
    assert_eq!(r.verdict, Verdict::NeedsCode, "{}", r.to_text(true));
    let said = mentions(&r);
    assert!(said.contains("_MEM_FORMAT_ENCODING") && said.contains("Enum"), "{said}");
    assert!(
        said.contains("torch.distributed.checkpoint.metadata.Metadata"),
        "{said}"
    );
    // The same file followed by an Enum class called with a command is dangerous.
    let bad = P::proto(2)
        .raw(&training_args()[2..training_args().len() - 1])
        .pop()
        .global("transformers.trainer_utils", "IntervalStrategy")
        .str(CMD)
        .tuple1()
        .reduce()
        .stop();
    let r = scan_bytes("training_args.bin", &bad);
    assert_eq!(r.verdict, Verdict::Dangerous, "{}", r.to_text(true));
}

// ---------------------------------------------------------------------------------------------
// 5. What weights_only refuses for reasons other than code: notes.

#[test]
fn opcodes_outside_weights_only_are_notes_not_needs_code() {
    let sd = |p: P| p.global("collections", "OrderedDict").empty_tuple().reduce();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "protocol 4 STACK_GLOBAL",
            P::proto(4)
                .stack_global("collections", "OrderedDict")
                .empty_tuple()
                .reduce()
                .stop(),
            "STACK_GLOBAL",
        ),
        ("MEMOIZE", sd(P::proto(4)).raw(b"\x94").stop(), "MEMOIZE"),
        ("FRAME", P::proto(4).raw(b"\x95\x02\0\0\0\0\0\0\0}\x94.").0, "FRAME"),
        (
            "BINBYTES",
            P::proto(3).empty_dict().str("k").bytes(b"v").setitem().stop(),
            "BINBYTES",
        ),
        ("SHORT_BINBYTES", P::proto(3).raw(b"C\x01v").stop(), "SHORT_BINBYTES"),
        (
            "SHORT_BINUNICODE",
            P::proto(4).short_str("k").stop(),
            "SHORT_BINUNICODE",
        ),
        (
            "BINUNICODE8",
            P::proto(4).raw(b"\x8d\x01\0\0\0\0\0\0\0k").stop(),
            "BINUNICODE8",
        ),
        (
            "BYTEARRAY8",
            P::proto(5).raw(b"\x96\x01\0\0\0\0\0\0\0k").stop(),
            "BYTEARRAY8",
        ),
        (
            "EMPTY_SET ADDITEMS",
            P::proto(4).raw(b"\x8f(K\x01\x90").stop(),
            "ADDITEMS",
        ),
        ("FROZENSET", P::proto(4).raw(b"(K\x01\x91").stop(), "FROZENSET"),
        ("LONG4", P::proto(2).raw(b"\x8b\x01\0\0\0\x05").stop(), "LONG4"),
        ("protocol 0 dict", b"(dp0\nS'a'\np1\nI1\ns.".to_vec(), "DICT"),
        ("protocol 1 LIST", b"(K\x01K\x02l.".to_vec(), "LIST"),
        (
            "protocol 5 allowlisted rebuild",
            P::proto(5)
                .stack_global("torch._utils", "_rebuild_tensor_v2")
                .pop()
                .empty_dict()
                .stop(),
            "STACK_GLOBAL",
        ),
        (
            "STACK_GLOBAL of a dtype",
            P::proto(4).stack_global("torch", "float16").stop(),
            "STACK_GLOBAL",
        ),
        ("DUP and POP_MARK", P::proto(2).raw(b"K\x012(1}").stop(), "DUP"),
    ];
    assert!(cases.len() >= 10);
    for (name, bytes, opcode) in cases {
        let r = scan_bytes("notes.pkl", &bytes);
        assert_eq!(r.verdict, Verdict::Safe, "{name}:\n{}", r.to_text(true));
        assert!(r.findings.is_empty(), "{name}: {:?}", r.findings);
        let listed = r
            .pickles
            .iter()
            .any(|p| p.opcodes_outside_weights_only.contains(&opcode));
        let noted = r
            .notes
            .iter()
            .any(|n| n.contains(opcode) && n.contains("do not change the verdict"));
        assert!(
            listed && noted,
            "{name}: {opcode} is listed and noted:\n{}",
            r.to_text(true)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Embedded payloads loaded many times.

/// A pickle of `n` calls of `_load_from_bytes` on one memoized payload, kept in a list.
fn fan_out(payload: &[u8], n: u32) -> Vec<u8> {
    let mut p = P::proto(2)
        .global("torch.storage", "_load_from_bytes")
        .long_put(0)
        .bytes(payload)
        .long_put(1)
        .pop()
        .pop()
        .raw(b"]")
        .mark();
    for _ in 0..n {
        p = p.long_get(0).long_get(1).tuple1().reduce();
    }
    p.raw(b"e").stop()
}

/// A benign payload of about `size` bytes: a long string popped, then an empty dict.
fn padded_payload(size: usize) -> Vec<u8> {
    P::proto(2).str(&"x".repeat(size)).pop().empty_dict().stop()
}

fn scan_timed(name: &str, bytes: &[u8]) -> ScanReport {
    let t = Instant::now();
    let r = scan_bytes(name, bytes);
    // A hang guard, not a benchmark: the quadratic scan took tens of seconds.
    assert!(t.elapsed() < Duration::from_secs(20), "{name}: {:?}", t.elapsed());
    r
}

fn payload_note(r: &ScanReport) -> String {
    r.notes
        .iter()
        .filter(|n| n.contains("distinct payload"))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_memoized_payload_loaded_thousands_of_times_is_scanned_once() {
    let r = scan_timed("fan.pkl", &fan_out(&padded_payload(40_000), 5000));
    assert_eq!(r.verdict, Verdict::NeedsCode, "{}", r.to_text(false));
    let note = payload_note(&r);
    assert!(note.contains("5000 times on 1 distinct payload"), "{note}");
    assert_eq!(r.pickles.len(), 2, "the outer pickle and the payload once");
    // A small file with many calls, the shape of the 3.3 KB attack.
    let r = scan_timed("small.pkl", &fan_out(&padded_payload(100), 600));
    assert!(
        payload_note(&r).contains("600 times on 1 distinct payload"),
        "{}",
        payload_note(&r)
    );
    // The payload is dangerous: every call of it is the same danger, reported once.
    let evil = P::proto(2).global("posix", "system").str(CMD).tuple1().reduce().stop();
    let r = scan_timed("evil_fan.pkl", &fan_out(&evil, 3000));
    assert_eq!(r.verdict, Verdict::Dangerous);
    assert_eq!(
        r.findings
            .iter()
            .filter(|f| f.global.as_deref() == Some("posix.system"))
            .count(),
        1
    );
}

#[test]
fn nested_fan_out_is_linear() {
    // Each level memoizes the next level's payload once and loads it hundreds of times.
    let mut payload = padded_payload(2000);
    for _ in 0..3 {
        payload = fan_out(&payload, 400);
    }
    let r = scan_timed("nested_fan.pkl", &payload);
    assert_ne!(r.verdict, Verdict::Safe);
    // One pickle per level, each scanned once: 4 levels (the innermost beyond the depth limit
    // is reported, not scanned).
    assert!(
        r.pickles.len() <= 4,
        "{:?}",
        r.pickles.iter().map(|p| &p.record).collect::<Vec<_>>()
    );
    let notes = payload_note(&r);
    assert!(notes.matches("400 times on 1 distinct payload").count() >= 2, "{notes}");
    // The same payload under distinct copies (no memo): scanned once by content.
    let inner = padded_payload(500);
    let mut p = P::proto(2).raw(b"]").mark();
    for _ in 0..200 {
        p = p
            .global("torch.storage", "_load_from_bytes")
            .bytes(&inner)
            .tuple1()
            .reduce();
    }
    let r = scan_timed("copies.pkl", &p.raw(b"e").stop());
    assert!(
        payload_note(&r).contains("200 times on 1 distinct payload"),
        "{}",
        payload_note(&r)
    );
    // _codecs.encode(str, 'latin1') payloads, memoized str: keyed by the str.
    let text: String = inner.iter().map(|&b| char::from(b)).collect();
    let mut p = P::proto(2).str(&text).put(0).pop().raw(b"]").mark();
    for _ in 0..200 {
        p = p
            .global("torch.storage", "_load_from_bytes")
            .global("_codecs", "encode")
            .get(0)
            .str("latin1")
            .tuple2()
            .reduce()
            .tuple1()
            .reduce();
    }
    let r = scan_timed("latin1.pkl", &p.raw(b"e").stop());
    assert!(
        payload_note(&r).contains("200 times on 1 distinct payload"),
        "{}",
        payload_note(&r)
    );
}

#[test]
fn inflated_payloads_are_bounded_by_the_file_size() {
    use std::io::Write;
    // A payload that is a zip whose data.pkl deflates from ~2 KB to 2 MB, loaded by a pickle
    // of under 3 KB: its parse alone exceeds 4x the file's pickles, so it is not scanned.
    let big = padded_payload(2 << 20);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    w.start_file("archive/data.pkl", opts).expect("start");
    w.write_all(&big).expect("write");
    w.start_file("archive/version", opts).expect("start");
    w.write_all(b"3\n").expect("write");
    let zip = w.finish().expect("finish").into_inner();
    assert!(zip.len() < 16 << 10, "{}", zip.len());
    let outer = P::proto(2)
        .global("torch.storage", "_load_from_bytes")
        .bytes(&zip)
        .tuple1()
        .reduce()
        .stop();
    let r = scan_timed("inflate.pkl", &outer);
    assert_eq!(r.verdict, Verdict::Unreadable, "{}", r.to_text(true));
    assert!(
        r.pickles.iter().all(|p| p.size < 1 << 20),
        "the inflated pickle is not parsed: {:?}",
        r.pickles.iter().map(|p| (&p.record, p.size)).collect::<Vec<_>>()
    );
    // Many distinct payloads, each within the limits, share one budget: past it, the rest is
    // reported unscanned.
    let mut p = P::proto(2).raw(b"]").mark();
    for i in 0..40u8 {
        let mut member = big.clone();
        member[10] = i; // distinct contents, same inflation
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("archive/data.pkl", opts).expect("start");
        w.write_all(&member).expect("write");
        let z = w.finish().expect("finish").into_inner();
        p = p
            .global("torch.storage", "_load_from_bytes")
            .bytes(&z)
            .tuple1()
            .reduce();
    }
    let r = scan_timed("inflate_many.pkl", &p.raw(b"e").stop());
    assert_eq!(r.verdict, Verdict::Unreadable, "{}", r.to_text(false));
    assert!(
        mentions(&r).contains("limit") || mentions(&r).contains("times the size"),
        "{}",
        mentions(&r)
    );
    // Within the budget (a payload that does not inflate), it is scanned.
    let small = P::proto(2)
        .global("torch.storage", "_load_from_bytes")
        .bytes(&padded_payload(1000))
        .tuple1()
        .reduce()
        .stop();
    assert_eq!(scan_bytes("ok.pkl", &small).verdict, Verdict::NeedsCode);
}

#[test]
fn a_pickle_past_a_limit_is_unreadable_not_dangerous() {
    // A whole model whose pickle exceeds ckpt's own object limit: the class is followed by BUILD,
    // but past a limit nothing is assumed called, or every huge model would be dangerous.
    let mut p = P::proto(2)
        .global("__main__", "Net")
        .empty_tuple()
        .newobj()
        .empty_dict()
        .mark();
    for i in 0..64 {
        p = p.str(&format!("k{i}")).int(i);
    }
    let bytes = p.raw(b"u").build().stop();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big_model.pkl");
    std::fs::write(&path, &bytes).expect("write");
    let mut limits = ReadLimits::default();
    limits.pickle.max_objects = 32;
    let r = scan::scan_paths(std::slice::from_ref(&path), &limits)
        .pop()
        .expect("report");
    assert_eq!(r.verdict, Verdict::Unreadable, "{}", r.to_text(true));
    // The same bytes within the limits: needs-code.
    let r = scan::scan_paths(&[path], &ReadLimits::default()).pop().expect("report");
    assert_eq!(r.verdict, Verdict::NeedsCode, "{}", r.to_text(true));
}
