//! The pickle machine against real CPython pickles (protocols 0-5) and against hostile input.
//!
//! The byte strings in `vectors` were produced by CPython 3.11 with the expression in the comment
//! above each, where
//!   NESTED  = {'a': [1, 2, (3, 4.5)], 'b': {'c': None, 'd': True, 'e': False}, 'f': (), 'g': (1,),
//!              'h': (1, 2, 3, 4), 'i': [], 'j': {}}
//!   INTS    = [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31-1, 2**31, 2**63-1, -2**63, 2**63,
//!              -2**63-1, 2**100, -2**100, 10**40]
//!   FLOATS  = [0.0, -1.5, 1e300, float('inf'), float('-inf'), 3.141592653589793, 1e-310,
//!              float('nan')]
//!   STRINGS = ['', 'plain', 'quote\'s "dq"', 'back\\slash', 'nl\n tab\t cr\r', 'nul\x00 ctrl\x1a',
//!              'é ü 中文 😀', '\\u0041 not an escape']
//! The hand-written ones (Python 2 opcodes, STACK_GLOBAL from the memo, EXT) were checked with
//! `pickletools.dis`.

use std::time::{Duration, Instant};

use ckpt::pickle::{parse, Construct, Heap, Instance, Limits, Obj, ObjId, Pickle, PickleError, Usage, Value};
use vectors::*;

// ---- Helpers ----------------------------------------------------------------------------------

fn load(data: &[u8]) -> Pickle {
    parse(data, &Limits::default()).unwrap_or_else(|e| panic!("parse failed: {e}"))
}

fn load_err(data: &[u8], limits: &Limits) -> PickleError {
    match parse(data, limits) {
        Ok(p) => panic!("parse succeeded with root {:?}", p.root),
        Err(e) => e,
    }
}

fn items<'a>(heap: &'a Heap, v: &Value) -> &'a [Value] {
    match heap.obj(v) {
        Some(Obj::List(items) | Obj::Tuple(items)) => items,
        other => panic!("expected a list or tuple, got {other:?}"),
    }
}

fn instance<'a>(heap: &'a Heap, v: &Value) -> &'a Instance {
    heap.instance(v)
        .unwrap_or_else(|| panic!("expected an instance, got {:?}", heap.obj(v)))
}

fn dotted(heap: &Heap, v: &Value) -> String {
    heap.global(v)
        .unwrap_or_else(|| panic!("expected a global, got {:?}", heap.obj(v)))
        .dotted()
}

fn uses(p: &Pickle) -> Vec<(String, Usage)> {
    p.globals.iter().map(|u| (u.global.dotted(), u.usage)).collect()
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

/// Python's repr of the value tree, so CPython's own `repr(obj)` is the expected output.
/// Globals print dotted, instances as `Construct(callable, args)`, persistent ids as `pid(...)`.
fn repr(heap: &Heap, v: &Value) -> String {
    let mut out = String::new();
    repr_into(heap, v, &mut Vec::new(), &mut out);
    out
}

fn repr_seq(heap: &Heap, items: &[Value], open: &mut Vec<ObjId>, out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        repr_into(heap, item, open, out);
    }
}

fn repr_into(heap: &Heap, v: &Value, open: &mut Vec<ObjId>, out: &mut String) {
    let id = match v {
        Value::None => return out.push_str("None"),
        Value::Bool(b) => return out.push_str(if *b { "True" } else { "False" }),
        Value::Int(i) => return out.push_str(&i.to_string()),
        Value::BigInt(b) => return out.push_str(&big_decimal(b)),
        Value::Float(f) => return out.push_str(&py_float(*f)),
        Value::Str(text) => return out.push_str(&py_quote(text.chars(), text.contains('\''), text.contains('"'))),
        Value::Bytes(b) => return out.push_str(&py_bytes(b)),
        Value::Obj(id) => *id,
    };
    if open.contains(&id) {
        // Python prints a container that contains itself as [...] / {...}.
        return out.push_str(match heap.get(id) {
            Obj::Dict(_) => "{...}",
            _ => "[...]",
        });
    }
    open.push(id);
    match heap.get(id) {
        Obj::Tuple(items) => {
            out.push('(');
            repr_seq(heap, items, open, out);
            out.push_str(if items.len() == 1 { ",)" } else { ")" });
        }
        Obj::List(items) => {
            out.push('[');
            repr_seq(heap, items, open, out);
            out.push(']');
        }
        Obj::Dict(pairs) => {
            out.push('{');
            for (i, (k, v)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr_into(heap, k, open, out);
                out.push_str(": ");
                repr_into(heap, v, open, out);
            }
            out.push('}');
        }
        Obj::Set(items) if items.is_empty() => out.push_str("set()"),
        Obj::Set(items) => {
            out.push('{');
            repr_seq(heap, items, open, out);
            out.push('}');
        }
        Obj::FrozenSet(items) if items.is_empty() => out.push_str("frozenset()"),
        Obj::FrozenSet(items) => {
            out.push_str("frozenset({");
            repr_seq(heap, items, open, out);
            out.push_str("})");
        }
        Obj::ByteArray(b) => out.push_str(&format!("bytearray({})", py_bytes(b))),
        Obj::Global(g) => out.push_str(&g.dotted()),
        Obj::Instance(inst) => {
            out.push_str(&format!("{:?}(", inst.construct));
            repr_into(heap, &inst.callable, open, out);
            out.push_str(", ");
            repr_into(heap, &inst.args, open, out);
            out.push(')');
        }
        Obj::PersistentId(pid) => {
            out.push_str("pid(");
            repr_into(heap, pid, open, out);
            out.push(')');
        }
    }
    open.pop();
}

/// Python's float repr for the values used here: Rust's Debug form with Python's exponent sign.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    let text = format!("{f:?}");
    match text.split_once('e') {
        Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
        _ => text,
    }
}

/// Python's str/bytes quoting: single quotes unless the text has ' and no ".
fn py_quote(chars: impl Iterator<Item = char>, has_single: bool, has_double: bool) -> String {
    let quote = if has_single && !has_double { '"' } else { '\'' };
    let mut out = String::from(quote);
    for c in chars {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn py_bytes(b: &[u8]) -> String {
    let chars = b.iter().map(|&b| char::from(b));
    let escaped = py_quote(chars, b.contains(&b'\''), b.contains(&b'"'));
    // Bytes above 0x7f print as \x escapes.
    let escaped: String = escaped
        .chars()
        .map(|c| {
            if (c as u32) > 0x7f {
                format!("\\x{:02x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect();
    format!("b{escaped}")
}

/// Decimal text of a little-endian two's complement integer.
fn big_decimal(bytes: &[u8]) -> String {
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut mag: Vec<u8> = bytes.to_vec();
    if negative {
        let mut carry = true;
        for b in &mut mag {
            let (sum, overflow) = (!*b).overflowing_add(u8::from(carry));
            *b = sum;
            carry = overflow;
        }
    }
    // Repeated division by 10 of the big-endian magnitude.
    let mut be: Vec<u8> = mag.into_iter().rev().collect();
    let mut digits = Vec::new();
    while be.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in &mut be {
            let cur = rem * 256 + u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(char::from(b'0' + rem as u8));
    }
    if digits.is_empty() {
        digits.push('0');
    }
    if negative {
        digits.push('-');
    }
    digits.into_iter().rev().collect()
}

/// Every CPython-produced vector (all end in their single STOP).
const REAL: &[&[u8]] = &[
    NESTED_P0,
    NESTED_P1,
    NESTED_P2,
    NESTED_P3,
    NESTED_P4,
    NESTED_P5,
    INTS_P0,
    INTS_P1,
    INTS_P2,
    INTS_P3,
    INTS_P4,
    INTS_P5,
    FLOATS_P0,
    FLOATS_P1,
    FLOATS_P2,
    FLOATS_P3,
    FLOATS_P4,
    FLOATS_P5,
    STRINGS_P0,
    STRINGS_P1,
    STRINGS_P2,
    STRINGS_P3,
    STRINGS_P4,
    STRINGS_P5,
    BYTES_P0,
    BYTES_P2,
    BYTES_P3,
    BYTES_P5,
    SETS_P2,
    SETS_P4,
    SETS_P5,
    SHARED_P0,
    SHARED_P2,
    RECURSIVE_P0,
    RECURSIVE_P2,
    RECURSIVE_P4,
    ORDERED_P0,
    ORDERED_P2,
    POINT_P0,
    POINT_P1,
    POINT_P2,
    POINT_P4,
    EVIL_P0,
    EVIL_P4,
    NEWOBJ_EX_P4,
    PERSID_P0,
    PERSID_P2,
    BYTEARRAY_P5,
    PY2_STRINGS,
    INST_P0,
    OBJ_P1,
    EXT_P2,
    STACK_GLOBAL_MEMO_P4,
];

// ---- Real pickles -----------------------------------------------------------------------------

#[test]
fn nested_containers_match_python_repr_in_every_protocol() {
    let expected = "{'a': [1, 2, (3, 4.5)], 'b': {'c': None, 'd': True, 'e': False}, 'f': (), \
                    'g': (1,), 'h': (1, 2, 3, 4), 'i': [], 'j': {}}";
    let all = [NESTED_P0, NESTED_P1, NESTED_P2, NESTED_P3, NESTED_P4, NESTED_P5];
    for (proto, data) in all.into_iter().enumerate() {
        let p = load(data);
        assert_eq!(repr(&p.heap, &p.root), expected, "protocol {proto}");
        assert_eq!(p.end, data.len());
        let want = (proto >= 2).then_some(proto as u8);
        assert_eq!(p.protocol, want, "protocol {proto}");
        assert!(p.globals.is_empty());
    }
}

#[test]
fn ints_of_all_sizes_match_python_repr_in_every_protocol() {
    let expected = "[0, 1, -1, 255, 256, 65535, 65536, -2147483648, 2147483647, 2147483648, \
                    9223372036854775807, -9223372036854775808, 9223372036854775808, \
                    -9223372036854775809, 1267650600228229401496703205376, \
                    -1267650600228229401496703205376, 10000000000000000000000000000000000000000]";
    let all = [INTS_P0, INTS_P1, INTS_P2, INTS_P3, INTS_P4, INTS_P5];
    for (proto, data) in all.into_iter().enumerate() {
        let p = load(data);
        assert_eq!(repr(&p.heap, &p.root), expected, "protocol {proto}");
        let list = items(&p.heap, &p.root);
        assert_eq!(list[11], Value::Int(i64::MIN));
        // 2**63 does not fit in i64: little-endian two's complement with a zero sign byte.
        assert_eq!(list[12], Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0].into()));
    }
}

/// INT and LONG text as CPython 3.11's unpickler reads it (`pickle.loads(b"I" + text + b"\n.")`
/// and the same with `L`): INT tries C's strtol in base 0 first (so `010` is octal, and a
/// two-character 0 or 1 is a bool), then both fall back to `int(text, 0)`, which takes
/// `0x`/`0o`/`0b` prefixes and single underscores between digits. Found by the
/// pickle_differential fuzz target: ckpt read these as plain decimals only.
#[test]
fn int_and_long_literals_read_as_cpython_reads_them() {
    // (text, INT's repr, LONG's repr); None: CPython refuses.
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        ("010", Some("8"), None),
        ("0o10", Some("8"), Some("8")),
        ("0O10", Some("8"), Some("8")),
        ("0b11", Some("3"), Some("3")),
        ("0x1f", Some("31"), Some("31")),
        ("0X1F", Some("31"), Some("31")),
        ("0x_1f", Some("31"), Some("31")),
        ("1_0", Some("10"), Some("10")),
        ("1__0", None, None),
        ("_1", None, None),
        ("1_", None, None),
        (" 1", Some("True"), Some("1")),
        ("+1", Some("True"), Some("1")),
        ("-0", Some("False"), Some("0")),
        ("-1", Some("-1"), Some("-1")),
        (" 0x10 ", Some("16"), Some("16")),
        ("0x", None, None),
        ("00", Some("False"), Some("0")),
        ("01", Some("True"), None),
        ("000", Some("0"), Some("0")),
        ("0_0", Some("0"), Some("0")),
        ("08", None, None),
        ("0777", Some("511"), None),
        (
            "9223372036854775807",
            Some("9223372036854775807"),
            Some("9223372036854775807"),
        ),
        (
            "9223372036854775808",
            Some("9223372036854775808"),
            Some("9223372036854775808"),
        ),
        (
            "-9223372036854775809",
            Some("-9223372036854775809"),
            Some("-9223372036854775809"),
        ),
        ("0100000000000000000000000", None, None),
        ("1 ", Some("1"), Some("1")),
        ("\t7", Some("7"), Some("7")),
        ("1\r", Some("1"), Some("1")),
        ("1.0", None, None),
        ("0b", None, None),
        ("0o8", None, None),
        ("0x1g", None, None),
        ("+-1", None, None),
        ("- 1", None, None),
        ("0_7", None, None),
        ("00_1", None, None),
        ("1e3", None, None),
        (
            "0x10000000000000000",
            Some("18446744073709551616"),
            Some("18446744073709551616"),
        ),
        ("-0b1_0000_0000", Some("-256"), Some("-256")),
    ];
    for &(text, int, long) in cases {
        for (op, expected) in [('I', int), ('L', long)] {
            let data = format!("{op}{text}\n.");
            let got = ckpt::pickle::parse(data.as_bytes(), &Limits::default()).map(|p| repr(&p.heap, &p.root));
            assert_eq!(got.ok().as_deref(), expected, "{data:?}");
        }
    }
}

#[test]
fn floats_are_bit_exact_in_every_protocol() {
    let expected = [
        0.0,
        -1.5,
        1e300,
        f64::INFINITY,
        f64::NEG_INFINITY,
        std::f64::consts::PI, // 3.141592653589793
        1e-310,
    ];
    let all = [FLOATS_P0, FLOATS_P1, FLOATS_P2, FLOATS_P3, FLOATS_P4, FLOATS_P5];
    for (proto, data) in all.into_iter().enumerate() {
        let p = load(data);
        let list = items(&p.heap, &p.root);
        assert_eq!(list.len(), 8);
        for (got, want) in list.iter().zip(expected) {
            match got {
                Value::Float(f) => assert_eq!(f.to_bits(), want.to_bits(), "protocol {proto}"),
                other => panic!("protocol {proto}: expected a float, got {other:?}"),
            }
        }
        assert!(matches!(list[7], Value::Float(f) if f.is_nan()));
    }
}

#[test]
fn strings_with_escapes_and_unicode_decode_exactly_in_every_protocol() {
    let expected = [
        "",
        "plain",
        "quote's \"dq\"",
        "back\\slash",
        "nl\n tab\t cr\r",
        "nul\0 ctrl\x1a",
        "é ü 中文 😀",
        "\\u0041 not an escape",
    ];
    let all = [STRINGS_P0, STRINGS_P1, STRINGS_P2, STRINGS_P3, STRINGS_P4, STRINGS_P5];
    for (proto, data) in all.into_iter().enumerate() {
        let p = load(data);
        let got = items(&p.heap, &p.root);
        let want: Vec<Value> = expected.iter().map(|t| s(t)).collect();
        assert_eq!(got, want.as_slice(), "protocol {proto}");
    }
}

#[test]
fn bytes_are_bytes_from_protocol_3() {
    let all_bytes: Vec<u8> = (0..=255).collect();
    for data in [BYTES_P3, BYTES_P5] {
        let p = load(data);
        let want = [
            Value::Bytes(b"".as_slice().into()),
            Value::Bytes(b"\x00\xff abc".as_slice().into()),
            Value::Bytes(all_bytes.as_slice().into()),
        ];
        assert_eq!(items(&p.heap, &p.root), want.as_slice());
    }
}

#[test]
fn bytes_before_protocol_3_are_recorded_codecs_encode_calls() {
    for data in [BYTES_P0, BYTES_P2] {
        let p = load(data);
        let inst = instance(&p.heap, &p.root);
        assert_eq!(inst.construct, Construct::Reduce);
        assert_eq!(dotted(&p.heap, &inst.callable), "_codecs.encode");
        assert_eq!(items(&p.heap, &inst.args), [s("\0\u{ff} abc"), s("latin1")]);
        assert!(uses(&p).contains(&("_codecs.encode".into(), Usage::Called)));
    }
}

#[test]
fn sets_and_frozensets() {
    for data in [SETS_P4, SETS_P5] {
        let p = load(data);
        assert_eq!(repr(&p.heap, &p.root), "[set(), {1, 2, 3}, frozenset({4, 5})]");
    }
    // Protocol 2 has no set opcodes: set([1, 2, 3]) is a call of the Python 2 name.
    let p = load(SETS_P2);
    assert_eq!(
        repr(&p.heap, &p.root),
        "[Reduce(__builtin__.set, ([],)), Reduce(__builtin__.set, ([1, 2, 3],)), \
         Reduce(__builtin__.frozenset, ([4, 5],))]"
    );
}

#[test]
fn shared_references_share_one_heap_object() {
    for data in [SHARED_P0, SHARED_P2] {
        let mut p = load(data);
        let list = items(&p.heap, &p.root).to_vec();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], list[1], "both elements must be the same object");
        let Value::Obj(inner) = list[0] else {
            panic!("expected an object")
        };
        // A mutation through one reference is seen through the other.
        match p.heap.get_mut(inner) {
            Obj::List(items) => items.push(Value::Int(2)),
            other => panic!("expected a list, got {other:?}"),
        }
        assert_eq!(repr(&p.heap, &p.root), "[[1, 2], [1, 2]]");
    }
}

#[test]
fn recursive_list_contains_itself() {
    for data in [RECURSIVE_P0, RECURSIVE_P2, RECURSIVE_P4] {
        let p = load(data);
        assert_eq!(items(&p.heap, &p.root), std::slice::from_ref(&p.root));
        assert_eq!(repr(&p.heap, &p.root), "[[...]]");
    }
}

#[test]
fn ordered_dict_is_a_reduce_filled_by_setitems() {
    for data in [ORDERED_P0, ORDERED_P2] {
        let p = load(data);
        let inst = instance(&p.heap, &p.root);
        assert_eq!(inst.construct, Construct::Reduce);
        assert_eq!(dotted(&p.heap, &inst.callable), "collections.OrderedDict");
        assert!(items(&p.heap, &inst.args).is_empty());
        assert_eq!(inst.dict_items, [(s("x"), Value::Int(1)), (s("y"), Value::Int(2))]);
        assert_eq!(inst.state, None);
        assert_eq!(
            uses(&p),
            [
                ("collections.OrderedDict".into(), Usage::Referenced),
                ("collections.OrderedDict".into(), Usage::Called)
            ]
        );
    }
}

#[test]
fn class_instance_via_copyreg_reconstructor_and_build() {
    for data in [POINT_P0, POINT_P1] {
        let p = load(data);
        let inst = instance(&p.heap, &p.root);
        assert_eq!(inst.construct, Construct::Reduce);
        assert_eq!(dotted(&p.heap, &inst.callable), "copy_reg._reconstructor");
        assert_eq!(repr(&p.heap, &inst.args), "(__main__.Point, __builtin__.object, None)");
        let state = inst.state.as_ref().expect("BUILD state");
        assert_eq!(repr(&p.heap, state), "{'x': 1, 'y': 2}");
        let got = uses(&p);
        assert!(got.contains(&("copy_reg._reconstructor".into(), Usage::Called)));
        assert!(got.contains(&("copy_reg._reconstructor".into(), Usage::Built)));
        assert!(got.contains(&("__main__.Point".into(), Usage::Referenced)));
    }
}

#[test]
fn class_instance_via_newobj_and_build() {
    for data in [POINT_P2, POINT_P4] {
        let p = load(data);
        let inst = instance(&p.heap, &p.root);
        assert_eq!(inst.construct, Construct::NewObj);
        assert_eq!(dotted(&p.heap, &inst.callable), "__main__.Point");
        assert!(items(&p.heap, &inst.args).is_empty());
        assert_eq!(repr(&p.heap, inst.state.as_ref().unwrap()), "{'x': 1, 'y': 2}");
        let point = "__main__.Point".to_string();
        assert_eq!(
            uses(&p),
            [
                (point.clone(), Usage::Referenced),
                (point.clone(), Usage::Instantiated),
                (point, Usage::Built)
            ]
        );
    }
}

#[test]
fn os_system_reduce_is_recorded_as_called_never_executed() {
    for data in [EVIL_P0, EVIL_P4] {
        let p = load(data);
        let inst = instance(&p.heap, &p.root);
        assert_eq!(inst.construct, Construct::Reduce);
        // os.system lives in the posix module on Linux, and that is what the pickle names.
        assert_eq!(dotted(&p.heap, &inst.callable), "posix.system");
        assert_eq!(items(&p.heap, &inst.args), [s("echo pwned")]);
        assert_eq!(
            uses(&p),
            [
                ("posix.system".into(), Usage::Referenced),
                ("posix.system".into(), Usage::Called)
            ]
        );
        // The Called use points at the REDUCE opcode.
        let at = p.globals.last().unwrap().offset as usize;
        assert_eq!(data[at], b'R');
    }
}

#[test]
fn newobj_ex_keeps_args_and_kwargs() {
    let p = load(NEWOBJ_EX_P4);
    let inst = instance(&p.heap, &p.root);
    assert_eq!(inst.construct, Construct::NewObjEx);
    assert_eq!(dotted(&p.heap, &inst.callable), "__main__.Kw");
    assert_eq!(repr(&p.heap, &inst.args), "(1,)");
    assert_eq!(repr(&p.heap, inst.kwargs.as_ref().unwrap()), "{'k': 2}");
    assert!(uses(&p).contains(&("__main__.Kw".into(), Usage::Instantiated)));
}

#[test]
fn stack_global_from_memoized_strings() {
    let p = load(STACK_GLOBAL_MEMO_P4);
    let list = items(&p.heap, &p.root);
    assert_eq!(list.len(), 2);
    assert_ne!(list[0], list[1], "each STACK_GLOBAL makes its own global object");
    assert_eq!(dotted(&p.heap, &list[0]), "posix.system");
    assert_eq!(dotted(&p.heap, &list[1]), "posix.system");
    assert_eq!(uses(&p), vec![("posix.system".to_string(), Usage::Referenced); 2]);
}

#[test]
fn persistent_ids_in_protocol_0_and_2() {
    let p = load(PERSID_P0);
    assert_eq!(repr(&p.heap, &p.root), "{'w': pid('storage_0')}");
    let p = load(PERSID_P2);
    assert_eq!(
        repr(&p.heap, &p.root),
        "{'w': pid(('storage', 'FloatStorage', '0', 'cpu', 4))}"
    );
}

#[test]
fn bytearray_in_protocol_5() {
    let p = load(BYTEARRAY_P5);
    assert_eq!(p.heap.obj(&p.root), Some(&Obj::ByteArray(b"abc".to_vec())));
    assert_eq!(p.protocol, Some(5));
}

#[test]
fn out_of_band_buffers_are_unsupported() {
    let e = load_err(OUT_OF_BAND_P5, &Limits::default());
    assert_eq!(
        e,
        PickleError::Unsupported {
            opcode: "NEXT_BUFFER",
            offset: 2
        }
    );
}

#[test]
fn concatenated_pickles_are_read_one_at_a_time() {
    let first = load(CONCAT_P2);
    assert_eq!(first.root, Value::Int(1));
    assert_eq!(first.end, 5);
    let rest = &CONCAT_P2[first.end..];
    let second = load(rest);
    assert_eq!(second.root, s("x"));
    assert_eq!(second.end, rest.len());
}

#[test]
fn python2_strings_are_str_when_utf8_else_bytes() {
    let p = load(PY2_STRINGS);
    let want = [
        s("it's A\nA"),
        Value::Bytes(b"\xff\xfe\x00".as_slice().into()),
        s("ok"),
        s("dq"),
    ];
    assert_eq!(items(&p.heap, &p.root), want.as_slice());
}

#[test]
fn inst_and_obj_record_instantiation() {
    for (data, construct) in [(INST_P0, Construct::Inst), (OBJ_P1, Construct::Obj)] {
        let p = load(data);
        let inst = instance(&p.heap, &p.root);
        assert_eq!(inst.construct, construct);
        assert_eq!(dotted(&p.heap, &inst.callable), "__main__.Point");
        assert_eq!(repr(&p.heap, &inst.args), "(1, 2)");
        assert_eq!(repr(&p.heap, inst.state.as_ref().unwrap()), "{'x': 1}");
        let point = "__main__.Point".to_string();
        assert_eq!(
            uses(&p),
            [
                (point.clone(), Usage::Referenced),
                (point.clone(), Usage::Instantiated),
                (point, Usage::Built)
            ]
        );
    }
}

#[test]
fn extension_codes_become_copyreg_globals() {
    let p = load(EXT_P2);
    assert_eq!(
        repr(&p.heap, &p.root),
        "(copyreg.extension_5, copyreg.extension_256, copyreg.extension_16777216)"
    );
    assert_eq!(p.globals.len(), 3);
    assert!(p.globals.iter().all(|u| u.usage == Usage::Referenced));
    // Code 0 is forbidden by the extension registry.
    let e = load_err(b"\x80\x02\x82\x00.", &Limits::default());
    assert!(
        matches!(
            e,
            PickleError::Invalid {
                opcode: "EXT1",
                offset: 2,
                ..
            }
        ),
        "{e}"
    );
}

// ---- Scale ------------------------------------------------------------------------------------

fn binunicode(out: &mut Vec<u8>, text: &str) {
    out.push(b'X');
    out.extend((text.len() as u32).to_le_bytes());
    out.extend(text.as_bytes());
}

/// What torch.save(model.state_dict()) writes (protocol 2): an OrderedDict filled by SETITEMS in
/// batches of 1000, each value `_rebuild_tensor_v2((storage pid), offset, size, stride, False,
/// OrderedDict())`, the storage behind a BINPERSID.
fn torch_like_state_dict(tensors: usize) -> Vec<u8> {
    let mut d = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01".to_vec();
    d.extend(b"ctorch._utils\n_rebuild_tensor_v2\nq\x020");
    for start in (0..tensors).step_by(1000) {
        d.push(b'(');
        for i in start..tensors.min(start + 1000) {
            binunicode(&mut d, &format!("layers.{i}.weight"));
            d.extend(b"h\x02("); // the rebuild function, then its arguments
            d.push(b'(');
            for part in ["storage", "FloatStorage", &i.to_string(), "cpu"] {
                binunicode(&mut d, part);
            }
            d.extend(b"K\x0ctQ"); // numel, TUPLE, BINPERSID
            d.extend(b"K\x00K\x03K\x04\x86K\x04K\x01\x86\x89h\x00)Rt"); // offset .. hooks
            d.push(b'R');
        }
        d.push(b'u');
    }
    d.push(b'.');
    d
}

#[test]
fn torch_like_state_dict_of_100k_tensors_passes_the_default_limits() {
    let data = torch_like_state_dict(100_000);
    let p = load(&data);
    let dict = instance(&p.heap, &p.root);
    assert_eq!(dotted(&p.heap, &dict.callable), "collections.OrderedDict");
    assert_eq!(dict.dict_items.len(), 100_000);
    let (key, tensor) = &dict.dict_items[99_999];
    assert_eq!(key, &s("layers.99999.weight"));
    let tensor = instance(&p.heap, tensor);
    assert_eq!(dotted(&p.heap, &tensor.callable), "torch._utils._rebuild_tensor_v2");
    assert_eq!(
        repr(&p.heap, &tensor.args),
        "(pid(('storage', 'FloatStorage', '99999', 'cpu', 12)), 0, (3, 4), (4, 1), False, \
         Reduce(collections.OrderedDict, ()))"
    );
    let called = p.globals.iter().filter(|u| u.usage == Usage::Called);
    assert_eq!(called.count(), 1 + 2 * 100_000);
}

#[test]
fn ten_million_list_items_pass_the_default_limits() {
    // One list, APPENDS of 1000 Nones ten thousand times, as the pickler batches them.
    let mut batch = b"(".to_vec();
    batch.extend([b'N'; 1000]);
    batch.push(b'e');
    let mut data = b"\x80\x02]".to_vec();
    for _ in 0..10_000 {
        data.extend(&batch);
    }
    data.push(b'.');
    let p = load(&data);
    assert_eq!(items(&p.heap, &p.root).len(), 10_000_000);
}

// ---- Hostile and malformed input --------------------------------------------------------------

#[test]
fn nested_marks_200k_are_rejected_by_max_marks_quickly() {
    let mut data = vec![b'('; 200_000];
    data.push(b'.');
    let start = Instant::now();
    let e = load_err(&data, &Limits::default());
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    // The 100 001st MARK (at offset 100 000) is the one refused.
    assert_eq!(
        e,
        PickleError::LimitExceeded {
            what: "open MARKs",
            limit: 100_000,
            offset: 100_000
        }
    );
}

#[test]
fn memo_bomb_long_binput_max_key_allocates_nothing() {
    // NONE, LONG_BINPUT 0xffffffff, POP, LONG_BINGET 0xffffffff, STOP.
    let p = load(b"Nr\xff\xff\xff\xff0j\xff\xff\xff\xff.");
    assert_eq!(p.root, Value::None);
}

#[test]
fn memo_bomb_of_distinct_puts_is_bounded_by_max_memo() {
    let mut data = b"N".to_vec();
    for key in 0u32..2000 {
        data.push(b'r');
        data.extend(key.to_le_bytes());
    }
    data.push(b'.');
    let limits = Limits {
        max_memo: 1000,
        ..Limits::default()
    };
    let e = load_err(&data, &limits);
    // The 1001st PUT (key 1000) is the one refused.
    assert_eq!(
        e,
        PickleError::LimitExceeded {
            what: "memo entries",
            limit: 1000,
            offset: 5001
        }
    );
    // Overwriting one key forever is fine: the memo does not grow.
    let mut data = b"N".to_vec();
    for _ in 0..5000 {
        data.extend(b"q\x07");
    }
    data.push(b'.');
    assert_eq!(parse(&data, &limits).unwrap().root, Value::None);
}

#[test]
fn memo_keys_out_of_order_resolve_to_their_values() {
    // NONE, BINPUT 5, POP, BININT1 1, BINPUT 0, POP, BINGET 5, BINGET 0, TUPLE2.
    let p = load(b"\x80\x02Nq\x050K\x01q\x000h\x05h\x00\x86.");
    assert_eq!(repr(&p.heap, &p.root), "(None, 1)");
}

#[test]
fn memo_get_of_a_missing_key_names_the_key() {
    let e = load_err(b"\x80\x02N0h\x05.", &Limits::default());
    assert_eq!(e, PickleError::MemoMissing { key: 5, offset: 4 });
    let e = load_err(b"g12\n.", &Limits::default());
    assert_eq!(e, PickleError::MemoMissing { key: 12, offset: 0 });
}

#[test]
fn binunicode8_claiming_2_pow_60_bytes_is_truncated_without_allocating() {
    let mut data = b"\x80\x04\x8d".to_vec();
    data.extend((1u64 << 60).to_le_bytes());
    data.extend(b"abc");
    let e = load_err(&data, &Limits::default());
    assert_eq!(
        e,
        PickleError::Truncated {
            opcode: "BINUNICODE8",
            offset: 11,
            needed: 1 << 60,
            remaining: 3
        }
    );
    assert_eq!(
        e.to_string(),
        "pickle truncated at byte 11: BINUNICODE8 needs 1152921504606846976 bytes, 3 remain"
    );
}

#[test]
fn huge_and_negative_lengths_are_rejected_before_allocation() {
    let limits = Limits::default();
    let mut bytes8 = b"\x8e".to_vec();
    bytes8.extend(u64::MAX.to_le_bytes());
    assert!(matches!(
        load_err(&bytes8, &limits),
        PickleError::Truncated {
            opcode: "BINBYTES8",
            needed: u64::MAX,
            remaining: 0,
            ..
        }
    ));
    let mut bytearray8 = b"\x96".to_vec();
    bytearray8.extend((1u64 << 40).to_le_bytes());
    assert!(matches!(load_err(&bytearray8, &limits), PickleError::Truncated { .. }));
    assert!(matches!(
        load_err(b"X\xff\xff\xff\xffab.", &limits),
        PickleError::Truncated {
            opcode: "BINUNICODE",
            needed: 0xffff_ffff,
            remaining: 3,
            ..
        }
    ));
    assert!(matches!(
        load_err(b"\x8b\xff\xff\xff\xff.", &limits),
        PickleError::Invalid { opcode: "LONG4", .. }
    ));
    assert!(matches!(
        load_err(b"T\x00\x00\x00\x80.", &limits),
        PickleError::Invalid {
            opcode: "BINSTRING",
            ..
        }
    ));
    let mut frame = b"\x80\x04\x95".to_vec();
    frame.extend(u64::MAX.to_le_bytes());
    frame.extend(b"N.");
    assert!(matches!(
        load_err(&frame, &limits),
        PickleError::Truncated { opcode: "FRAME", .. }
    ));
}

#[test]
fn every_prefix_of_every_real_pickle_fails_cleanly() {
    for data in REAL {
        for len in 0..data.len() {
            match parse(&data[..len], &Limits::default()) {
                Err(PickleError::Truncated { .. } | PickleError::Unterminated { .. } | PickleError::NoStop { .. }) => {}
                other => panic!("prefix {len} of {data:?}: {other:?}"),
            }
        }
        assert!(parse(data, &Limits::default()).is_ok());
    }
}

#[test]
fn a_million_nested_lists_are_built_without_recursion() {
    // EMPTY_LIST a million times, then APPEND each list into the one below it.
    pub const N: usize = 1_000_000;
    let mut data = vec![b']'; N];
    data.extend(std::iter::repeat_n(b'a', N - 1));
    data.push(b'.');
    let p = load(&data);
    assert_eq!(p.heap.len(), N);
    // Walk down iteratively: every level holds exactly the next one.
    let mut depth = 1;
    let mut v = p.root.clone();
    while let [inner] = items(&p.heap, &v) {
        v = inner.clone();
        depth += 1;
    }
    assert_eq!(depth, N);
    assert!(items(&p.heap, &v).is_empty());
}

#[test]
fn deep_nesting_is_bounded_by_max_objects() {
    let mut data = vec![b']'; 10_000];
    data.extend(vec![b'a'; 9_999]);
    data.push(b'.');
    let limits = Limits {
        max_objects: 5_000,
        ..Limits::default()
    };
    let e = load_err(&data, &limits);
    assert_eq!(
        e,
        PickleError::LimitExceeded {
            what: "objects",
            limit: 5_000,
            offset: 5_000
        }
    );
}

#[test]
fn dup_bomb_is_bounded_by_max_stack() {
    let mut data = b"N".to_vec();
    data.extend(vec![b'2'; 2_000_000]);
    data.push(b'.');
    let e = load_err(&data, &Limits::default());
    // After NONE and 2^20 - 1 DUPs the stack is full; the next DUP is refused.
    assert_eq!(
        e,
        PickleError::LimitExceeded {
            what: "stack entries",
            limit: 1 << 20,
            offset: 1 << 20
        }
    );
}

#[test]
fn dup_and_appends_bomb_is_bounded_by_max_objects() {
    // One list, then batches of 1000 DUPed Nones appended to it, forever.
    let mut data = b"]".to_vec();
    for _ in 0..200 {
        data.extend(b"(N");
        data.extend(vec![b'2'; 999]);
        data.push(b'e');
    }
    data.push(b'.');
    let limits = Limits {
        max_objects: 100_000,
        ..Limits::default()
    };
    let e = load_err(&data, &limits);
    assert!(
        matches!(
            e,
            PickleError::LimitExceeded {
                what: "objects",
                limit: 100_000,
                ..
            }
        ),
        "{e}"
    );
    assert!(parse(&data, &Limits::default()).is_ok());
}

#[test]
fn build_stream_on_one_instance_is_bounded_by_max_objects() {
    // An instance, then BUILD with None over and over: each BUILD logs a global use.
    let mut data = b"cm\nC\n)\x81".to_vec();
    for _ in 0..10_000 {
        data.extend(b"Nb");
    }
    data.push(b'.');
    let limits = Limits {
        max_objects: 1_000,
        ..Limits::default()
    };
    let e = load_err(&data, &limits);
    assert!(matches!(e, PickleError::LimitExceeded { what: "objects", .. }), "{e}");
    let p = parse(&data, &Limits::default()).unwrap();
    assert_eq!(p.globals.len(), 2 + 10_000);
}

#[test]
fn max_bytes_bounds_payloads() {
    let limits = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    let e = load_err(b"(C\x06abcdefC\x06ghijkll.", &limits);
    assert_eq!(
        e,
        PickleError::LimitExceeded {
            what: "payload bytes",
            limit: 10,
            offset: 9
        }
    );
}

#[test]
fn unknown_opcode_reports_byte_and_offset() {
    let e = load_err(b"\x80\x02\xff.", &Limits::default());
    assert_eq!(e, PickleError::UnknownOpcode { byte: 0xff, offset: 2 });
    assert_eq!(e.to_string(), "unknown pickle opcode 0xff at byte 2");
}

#[test]
fn input_without_stop_is_reported() {
    assert_eq!(load_err(b"", &Limits::default()), PickleError::NoStop { offset: 0 });
    assert_eq!(
        load_err(b"\x80\x02N", &Limits::default()),
        PickleError::NoStop { offset: 3 }
    );
    assert!(matches!(
        load_err(b"I12", &Limits::default()),
        PickleError::Unterminated {
            opcode: "INT",
            offset: 1
        }
    ));
}

#[test]
fn protocol_above_5_is_invalid() {
    let e = load_err(b"\x80\x06N.", &Limits::default());
    assert!(
        matches!(
            e,
            PickleError::Invalid {
                opcode: "PROTO",
                offset: 0,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn stop_returns_the_top_of_the_innermost_frame_as_cpython_does() {
    let limits = Limits::default();
    // pickle.loads(b"NI1\n.") == 1: values left below the result are ignored.
    assert_eq!(load(b"NI1\n.").root, Value::Int(1));
    // pickle.loads(b"N(I2\n.") == 2: an open MARK is ignored too.
    assert_eq!(load(b"N(I2\n.").root, Value::Int(2));
    // pickle.loads(b"N(.") raises: the innermost frame is empty.
    assert!(matches!(
        load_err(b"N(.", &limits),
        PickleError::StackUnderflow { opcode: "STOP", .. }
    ));
    assert_eq!(
        load_err(b".", &limits),
        PickleError::StackUnderflow {
            opcode: "STOP",
            offset: 0
        }
    );
}

#[test]
fn wrong_operand_types_are_invalid_not_panics() {
    let limits = Limits::default();
    let cases: [(&[u8], &str); 8] = [
        (b")(NNu.", "SETITEMS"),              // SETITEMS on a tuple
        (b"]NNs.", "SETITEM"),                // SETITEM on a list
        (b"]Nb.", "BUILD"),                   // BUILD on a list
        (b"NNa.", "APPEND"),                  // APPEND onto None
        (b"}(Ne.", "APPENDS"),                // APPENDS onto a dict
        (b"](N\x90.", "ADDITEMS"),            // ADDITEMS onto a list
        (b"K\x01K\x02\x93.", "STACK_GLOBAL"), // STACK_GLOBAL of ints
        (b"(Nd.", "DICT"),                    // odd number of values for DICT
    ];
    for (data, opcode) in cases {
        match load_err(data, &limits) {
            PickleError::Invalid { opcode: got, .. } => assert_eq!(got, opcode),
            other => panic!("{opcode}: {other}"),
        }
    }
    let e = load_err(b"X\x02\x00\x00\x00\xc3\x28.", &limits);
    assert!(
        matches!(
            e,
            PickleError::Invalid {
                opcode: "BINUNICODE",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn values_below_a_mark_are_out_of_reach() {
    let limits = Limits::default();
    assert_eq!(
        load_err(b"N(\x85.", &limits),
        PickleError::StackUnderflow {
            opcode: "TUPLE1",
            offset: 2
        }
    );
    // POP with nothing above the mark discards the mark, as CPython's load_pop does.
    assert_eq!(load(b"N(0.").root, Value::None);
    assert_eq!(
        load_err(b"e", &limits),
        PickleError::NoMark {
            opcode: "APPENDS",
            offset: 0
        }
    );
    assert_eq!(
        load_err(b"0", &limits),
        PickleError::StackUnderflow {
            opcode: "POP",
            offset: 0
        }
    );
}

#[test]
fn protocol_0_int_literals() {
    let p = load(b"(I01\nI00\nI-7\nL12345678901234567890L\nl.");
    assert_eq!(repr(&p.heap, &p.root), "[True, False, -7, 12345678901234567890]");
    assert!(matches!(
        load_err(b"Iabc\n.", &Limits::default()),
        PickleError::Invalid { opcode: "INT", .. }
    ));
}

/// xorshift64*: a fixed, dependency-free source of pseudo-random mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_real_pickles_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let limits = Limits {
        max_objects: 100_000,
        max_stack: 10_000,
        ..Limits::default()
    };
    let mut parsed = 0;
    for data in REAL {
        for _ in 0..1_000 {
            let mut m = data.to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(m.len().max(1));
                match rng.below(4) {
                    0 if !m.is_empty() => m[at] = rng.next() as u8,
                    1 if !m.is_empty() => m[at] ^= 1 << rng.below(8),
                    2 => m.insert(at.min(m.len()), rng.next() as u8),
                    _ if !m.is_empty() => {
                        m.remove(at);
                    }
                    _ => {}
                }
            }
            if let Ok(p) = parse(&m, &limits) {
                assert!(p.end <= m.len());
                parsed += 1;
            }
        }
    }
    // Some mutations leave a valid pickle; the point is that none of them panicked.
    assert!(parsed > 0);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    let limits = Limits {
        max_objects: 100_000,
        max_stack: 10_000,
        ..Limits::default()
    };
    let alphabet: Vec<u8> = ckpt::pickle::Opcode::ALL.iter().map(|&op| op as u8).collect();
    for _ in 0..20_000 {
        let len = rng.below(64);
        // Mostly opcode bytes, so the machine gets past the first byte.
        let data: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            })
            .collect();
        if let Ok(p) = parse(&data, &limits) {
            assert!(p.end <= data.len());
        }
    }
}

// ---- Vectors ----------------------------------------------------------------------------------

#[rustfmt::skip]
mod vectors {
    /// `pickle.dumps(NESTED, protocol=0)`
    pub const NESTED_P0: &[u8] = b"(dp0\nVa\np1\n(lp2\nI1\naI2\na(I3\nF4.5\ntp3\nasVb\np4\n(dp5\nVc\np6\nNsVd\np7\nI01\ns\
          Ve\np8\nI00\nssVf\np9\n(tsVg\np10\n(I1\ntp11\nsVh\np12\n(I1\nI2\nI3\nI4\ntp13\nsVi\np1\
          4\n(lp15\nsVj\np16\n(dp17\ns.";

    /// `pickle.dumps(NESTED, protocol=1)`
    pub const NESTED_P1: &[u8] = b"}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02(K\x03G@\x12\x00\x00\x00\x00\x00\x00tq\
          \x03eX\x01\x00\x00\x00bq\x04}q\x05(X\x01\x00\x00\x00cq\x06NX\x01\x00\x00\x00dq\x07I01\
          \nX\x01\x00\x00\x00eq\x08I00\nuX\x01\x00\x00\x00fq\t)X\x01\x00\x00\x00gq\n(K\x01tq\x0b\
          X\x01\x00\x00\x00hq\x0c(K\x01K\x02K\x03K\x04tq\rX\x01\x00\x00\x00iq\x0e]q\x0fX\x01\x00\
          \x00\x00jq\x10}q\x11u.";

    /// `pickle.dumps(NESTED, protocol=2)`
    pub const NESTED_P2: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02K\x03G@\x12\x00\x00\x00\x00\x00\
          \x00\x86q\x03eX\x01\x00\x00\x00bq\x04}q\x05(X\x01\x00\x00\x00cq\x06NX\x01\x00\x00\x00d\
          q\x07\x88X\x01\x00\x00\x00eq\x08\x89uX\x01\x00\x00\x00fq\t)X\x01\x00\x00\x00gq\nK\x01\
          \x85q\x0bX\x01\x00\x00\x00hq\x0c(K\x01K\x02K\x03K\x04tq\rX\x01\x00\x00\x00iq\x0e]q\x0f\
          X\x01\x00\x00\x00jq\x10}q\x11u.";

    /// `pickle.dumps(NESTED, protocol=3)`
    pub const NESTED_P3: &[u8] = b"\x80\x03}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02K\x03G@\x12\x00\x00\x00\x00\x00\
          \x00\x86q\x03eX\x01\x00\x00\x00bq\x04}q\x05(X\x01\x00\x00\x00cq\x06NX\x01\x00\x00\x00d\
          q\x07\x88X\x01\x00\x00\x00eq\x08\x89uX\x01\x00\x00\x00fq\t)X\x01\x00\x00\x00gq\nK\x01\
          \x85q\x0bX\x01\x00\x00\x00hq\x0c(K\x01K\x02K\x03K\x04tq\rX\x01\x00\x00\x00iq\x0e]q\x0f\
          X\x01\x00\x00\x00jq\x10}q\x11u.";

    /// `pickle.dumps(NESTED, protocol=4)`
    pub const NESTED_P4: &[u8] = b"\x80\x04\x95]\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01K\x02K\x03G@\
          \x12\x00\x00\x00\x00\x00\x00\x86\x94e\x8c\x01b\x94}\x94(\x8c\x01c\x94N\x8c\x01d\x94\
          \x88\x8c\x01e\x94\x89u\x8c\x01f\x94)\x8c\x01g\x94K\x01\x85\x94\x8c\x01h\x94(K\x01K\x02\
          K\x03K\x04t\x94\x8c\x01i\x94]\x94\x8c\x01j\x94}\x94u.";

    /// `pickle.dumps(NESTED, protocol=5)`
    pub const NESTED_P5: &[u8] = b"\x80\x05\x95]\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01K\x02K\x03G@\
          \x12\x00\x00\x00\x00\x00\x00\x86\x94e\x8c\x01b\x94}\x94(\x8c\x01c\x94N\x8c\x01d\x94\
          \x88\x8c\x01e\x94\x89u\x8c\x01f\x94)\x8c\x01g\x94K\x01\x85\x94\x8c\x01h\x94(K\x01K\x02\
          K\x03K\x04t\x94\x8c\x01i\x94]\x94\x8c\x01j\x94}\x94u.";

    /// `pickle.dumps(INTS, protocol=0)`
    pub const INTS_P0: &[u8] = b"(lp0\nI0\naI1\naI-1\naI255\naI256\naI65535\naI65536\naI-2147483648\naI2147483647\naL21\
          47483648L\naL9223372036854775807L\naL-9223372036854775808L\naL9223372036854775808L\naL\
          -9223372036854775809L\naL1267650600228229401496703205376L\naL-126765060022822940149670\
          3205376L\naL10000000000000000000000000000000000000000L\na.";

    /// `pickle.dumps(INTS, protocol=1)`
    pub const INTS_P1: &[u8] = b"]q\x00(K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\
          \x00\x80J\xff\xff\xff\x7fL2147483648L\nL9223372036854775807L\nL-9223372036854775808L\n\
          L9223372036854775808L\nL-9223372036854775809L\nL1267650600228229401496703205376L\nL-12\
          67650600228229401496703205376L\nL10000000000000000000000000000000000000000L\ne.";

    /// `pickle.dumps(INTS, protocol=2)`
    pub const INTS_P2: &[u8] = b"\x80\x02]q\x00(K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\
          \x00\x00\x00\x80J\xff\xff\xff\x7f\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\
          \xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\t\x00\x00\x00\x00\x00\x00\
          \x00\x80\x00\x8a\t\xff\xff\xff\xff\xff\xff\xff\x7f\xff\x8a\r\x00\x00\x00\x00\x00\x00\
          \x00\x00\x00\x00\x00\x00\x10\x8a\r\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf0\
          \x8a\x11\x00\x00\x00\x00\x00a\xf5\xb9\xab\xbf\xa4\\\xc3\xf1)c\x1de.";

    /// `pickle.dumps(INTS, protocol=3)`
    pub const INTS_P3: &[u8] = b"\x80\x03]q\x00(K\x00K\x01J\xff\xff\xff\xffK\xffM\x00\x01M\xff\xffJ\x00\x00\x01\x00J\
          \x00\x00\x00\x80J\xff\xff\xff\x7f\x8a\x05\x00\x00\x00\x80\x00\x8a\x08\xff\xff\xff\xff\
          \xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\t\x00\x00\x00\x00\x00\x00\
          \x00\x80\x00\x8a\t\xff\xff\xff\xff\xff\xff\xff\x7f\xff\x8a\r\x00\x00\x00\x00\x00\x00\
          \x00\x00\x00\x00\x00\x00\x10\x8a\r\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xf0\
          \x8a\x11\x00\x00\x00\x00\x00a\xf5\xb9\xab\xbf\xa4\\\xc3\xf1)c\x1de.";

    /// `pickle.dumps(INTS, protocol=4)`
    pub const INTS_P4: &[u8] = b"\x80\x04\x95\x87\x00\x00\x00\x00\x00\x00\x00]\x94(K\x00K\x01J\xff\xff\xff\xffK\xffM\
          \x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\x00\x80J\xff\xff\xff\x7f\x8a\x05\x00\x00\
          \x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\
          \x00\x80\x8a\t\x00\x00\x00\x00\x00\x00\x00\x80\x00\x8a\t\xff\xff\xff\xff\xff\xff\xff\
          \x7f\xff\x8a\r\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x8a\r\x00\x00\x00\
          \x00\x00\x00\x00\x00\x00\x00\x00\x00\xf0\x8a\x11\x00\x00\x00\x00\x00a\xf5\xb9\xab\xbf\
          \xa4\\\xc3\xf1)c\x1de.";

    /// `pickle.dumps(INTS, protocol=5)`
    pub const INTS_P5: &[u8] = b"\x80\x05\x95\x87\x00\x00\x00\x00\x00\x00\x00]\x94(K\x00K\x01J\xff\xff\xff\xffK\xffM\
          \x00\x01M\xff\xffJ\x00\x00\x01\x00J\x00\x00\x00\x80J\xff\xff\xff\x7f\x8a\x05\x00\x00\
          \x00\x80\x00\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\
          \x00\x80\x8a\t\x00\x00\x00\x00\x00\x00\x00\x80\x00\x8a\t\xff\xff\xff\xff\xff\xff\xff\
          \x7f\xff\x8a\r\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x10\x8a\r\x00\x00\x00\
          \x00\x00\x00\x00\x00\x00\x00\x00\x00\xf0\x8a\x11\x00\x00\x00\x00\x00a\xf5\xb9\xab\xbf\
          \xa4\\\xc3\xf1)c\x1de.";

    /// `pickle.dumps(FLOATS, protocol=0)`
    pub const FLOATS_P0: &[u8] = b"(lp0\nF0.0\naF-1.5\naF1e+300\naFinf\naF-inf\naF3.141592653589793\naF1e-310\naFnan\na.";

    /// `pickle.dumps(FLOATS, protocol=1)`
    pub const FLOATS_P1: &[u8] = b"]q\x00(G\x00\x00\x00\x00\x00\x00\x00\x00G\xbf\xf8\x00\x00\x00\x00\x00\x00G~7\xe4<\x88\
          \x00u\x9cG\x7f\xf0\x00\x00\x00\x00\x00\x00G\xff\xf0\x00\x00\x00\x00\x00\x00G@\t!\xfbTD\
          -\x18G\x00\x00\x12h\x8bp\xe6+G\x7f\xf8\x00\x00\x00\x00\x00\x00e.";

    /// `pickle.dumps(FLOATS, protocol=2)`
    pub const FLOATS_P2: &[u8] = b"\x80\x02]q\x00(G\x00\x00\x00\x00\x00\x00\x00\x00G\xbf\xf8\x00\x00\x00\x00\x00\x00G~7\
          \xe4<\x88\x00u\x9cG\x7f\xf0\x00\x00\x00\x00\x00\x00G\xff\xf0\x00\x00\x00\x00\x00\x00G@\
          \t!\xfbTD-\x18G\x00\x00\x12h\x8bp\xe6+G\x7f\xf8\x00\x00\x00\x00\x00\x00e.";

    /// `pickle.dumps(FLOATS, protocol=3)`
    pub const FLOATS_P3: &[u8] = b"\x80\x03]q\x00(G\x00\x00\x00\x00\x00\x00\x00\x00G\xbf\xf8\x00\x00\x00\x00\x00\x00G~7\
          \xe4<\x88\x00u\x9cG\x7f\xf0\x00\x00\x00\x00\x00\x00G\xff\xf0\x00\x00\x00\x00\x00\x00G@\
          \t!\xfbTD-\x18G\x00\x00\x12h\x8bp\xe6+G\x7f\xf8\x00\x00\x00\x00\x00\x00e.";

    /// `pickle.dumps(FLOATS, protocol=4)`
    pub const FLOATS_P4: &[u8] = b"\x80\x04\x95M\x00\x00\x00\x00\x00\x00\x00]\x94(G\x00\x00\x00\x00\x00\x00\x00\x00G\xbf\
          \xf8\x00\x00\x00\x00\x00\x00G~7\xe4<\x88\x00u\x9cG\x7f\xf0\x00\x00\x00\x00\x00\x00G\
          \xff\xf0\x00\x00\x00\x00\x00\x00G@\t!\xfbTD-\x18G\x00\x00\x12h\x8bp\xe6+G\x7f\xf8\x00\
          \x00\x00\x00\x00\x00e.";

    /// `pickle.dumps(FLOATS, protocol=5)`
    pub const FLOATS_P5: &[u8] = b"\x80\x05\x95M\x00\x00\x00\x00\x00\x00\x00]\x94(G\x00\x00\x00\x00\x00\x00\x00\x00G\xbf\
          \xf8\x00\x00\x00\x00\x00\x00G~7\xe4<\x88\x00u\x9cG\x7f\xf0\x00\x00\x00\x00\x00\x00G\
          \xff\xf0\x00\x00\x00\x00\x00\x00G@\t!\xfbTD-\x18G\x00\x00\x12h\x8bp\xe6+G\x7f\xf8\x00\
          \x00\x00\x00\x00\x00e.";

    /// `pickle.dumps(STRINGS, protocol=0)`
    pub const STRINGS_P0: &[u8] = b"(lp0\nV\np1\naVplain\np2\naVquote's \"dq\"\np3\naVback\\u005cslash\np4\naVnl\\u000a ta\
          b\t cr\\u000d\np5\naVnul\\u0000 ctrl\\u001a\np6\naV\xe9 \xfc \\u4e2d\\u6587 \\U0001f60\
          0\np7\naV\\u005cu0041 not an escape\np8\na.";

    /// `pickle.dumps(STRINGS, protocol=1)`
    pub const STRINGS_P1: &[u8] = b"]q\x00(X\x00\x00\x00\x00q\x01X\x05\x00\x00\x00plainq\x02X\x0c\x00\x00\x00quote's \"dq\
          \"q\x03X\n\x00\x00\x00back\\slashq\x04X\x0c\x00\x00\x00nl\n tab\t cr\rq\x05X\n\x00\x00\
          \x00nul\x00 ctrl\x1aq\x06X\x11\x00\x00\x00\xc3\xa9 \xc3\xbc \xe4\xb8\xad\xe6\x96\x87 \
          \xf0\x9f\x98\x80q\x07X\x14\x00\x00\x00\\u0041 not an escapeq\x08e.";

    /// `pickle.dumps(STRINGS, protocol=2)`
    pub const STRINGS_P2: &[u8] = b"\x80\x02]q\x00(X\x00\x00\x00\x00q\x01X\x05\x00\x00\x00plainq\x02X\x0c\x00\x00\x00quote\
          's \"dq\"q\x03X\n\x00\x00\x00back\\slashq\x04X\x0c\x00\x00\x00nl\n tab\t cr\rq\x05X\n\
          \x00\x00\x00nul\x00 ctrl\x1aq\x06X\x11\x00\x00\x00\xc3\xa9 \xc3\xbc \xe4\xb8\xad\xe6\
          \x96\x87 \xf0\x9f\x98\x80q\x07X\x14\x00\x00\x00\\u0041 not an escapeq\x08e.";

    /// `pickle.dumps(STRINGS, protocol=3)`
    pub const STRINGS_P3: &[u8] = b"\x80\x03]q\x00(X\x00\x00\x00\x00q\x01X\x05\x00\x00\x00plainq\x02X\x0c\x00\x00\x00quote\
          's \"dq\"q\x03X\n\x00\x00\x00back\\slashq\x04X\x0c\x00\x00\x00nl\n tab\t cr\rq\x05X\n\
          \x00\x00\x00nul\x00 ctrl\x1aq\x06X\x11\x00\x00\x00\xc3\xa9 \xc3\xbc \xe4\xb8\xad\xe6\
          \x96\x87 \xf0\x9f\x98\x80q\x07X\x14\x00\x00\x00\\u0041 not an escapeq\x08e.";

    /// `pickle.dumps(STRINGS, protocol=4)`
    pub const STRINGS_P4: &[u8] = b"\x80\x04\x95s\x00\x00\x00\x00\x00\x00\x00]\x94(\x8c\x00\x94\x8c\x05plain\x94\x8c\x0cqu\
          ote's \"dq\"\x94\x8c\nback\\slash\x94\x8c\x0cnl\n tab\t cr\r\x94\x8c\nnul\x00 ctrl\x1a\
          \x94\x8c\x11\xc3\xa9 \xc3\xbc \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\x94\x8c\x14\\u\
          0041 not an escape\x94e.";

    /// `pickle.dumps(STRINGS, protocol=5)`
    pub const STRINGS_P5: &[u8] = b"\x80\x05\x95s\x00\x00\x00\x00\x00\x00\x00]\x94(\x8c\x00\x94\x8c\x05plain\x94\x8c\x0cqu\
          ote's \"dq\"\x94\x8c\nback\\slash\x94\x8c\x0cnl\n tab\t cr\r\x94\x8c\nnul\x00 ctrl\x1a\
          \x94\x8c\x11\xc3\xa9 \xc3\xbc \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\x94\x8c\x14\\u\
          0041 not an escape\x94e.";

    /// `pickle.dumps([b'', b'\x00\xff abc', bytes(range(256))], protocol=3)`
    pub const BYTES_P3: &[u8] = b"\x80\x03]q\x00(C\x00q\x01C\x06\x00\xff abcq\x02B\x00\x01\x00\x00\x00\x01\x02\x03\x04\
          \x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\
          \x1c\x1d\x1e\x1f !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abc\
          defghijklmnopqrstuvwxyz{|}~\x7f\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\
          \x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98\x99\x9a\x9b\x9c\x9d\x9e\x9f\xa0\xa1\
          \xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xab\xac\xad\xae\xaf\xb0\xb1\xb2\xb3\xb4\xb5\xb6\
          \xb7\xb8\xb9\xba\xbb\xbc\xbd\xbe\xbf\xc0\xc1\xc2\xc3\xc4\xc5\xc6\xc7\xc8\xc9\xca\xcb\
          \xcc\xcd\xce\xcf\xd0\xd1\xd2\xd3\xd4\xd5\xd6\xd7\xd8\xd9\xda\xdb\xdc\xdd\xde\xdf\xe0\
          \xe1\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xeb\xec\xed\xee\xef\xf0\xf1\xf2\xf3\xf4\xf5\
          \xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xffq\x03e.";

    /// `pickle.dumps([b'', b'\x00\xff abc', bytes(range(256))], protocol=5)`
    pub const BYTES_P5: &[u8] = b"\x80\x05\x95\x17\x01\x00\x00\x00\x00\x00\x00]\x94(C\x00\x94C\x06\x00\xff abc\x94B\x00\
          \x01\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\
          \x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f !\"#$%&'()*+,-./0123456789:;<=>?@ABCD\
          EFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~\x7f\x80\x81\x82\x83\x84\
          \x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98\x99\
          \x9a\x9b\x9c\x9d\x9e\x9f\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7\xa8\xa9\xaa\xab\xac\xad\xae\
          \xaf\xb0\xb1\xb2\xb3\xb4\xb5\xb6\xb7\xb8\xb9\xba\xbb\xbc\xbd\xbe\xbf\xc0\xc1\xc2\xc3\
          \xc4\xc5\xc6\xc7\xc8\xc9\xca\xcb\xcc\xcd\xce\xcf\xd0\xd1\xd2\xd3\xd4\xd5\xd6\xd7\xd8\
          \xd9\xda\xdb\xdc\xdd\xde\xdf\xe0\xe1\xe2\xe3\xe4\xe5\xe6\xe7\xe8\xe9\xea\xeb\xec\xed\
          \xee\xef\xf0\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8\xf9\xfa\xfb\xfc\xfd\xfe\xff\x94e.";

    /// `pickle.dumps(b'\x00\xff abc', protocol=0)`
    pub const BYTES_P0: &[u8] = b"c_codecs\nencode\np0\n(V\\u0000\xff abc\np1\nVlatin1\np2\ntp3\nRp4\n.";

    /// `pickle.dumps(b'\x00\xff abc', protocol=2)`
    pub const BYTES_P2: &[u8] = b"\x80\x02c_codecs\nencode\nq\x00X\x07\x00\x00\x00\x00\xc3\xbf abcq\x01X\x06\x00\x00\x00\
          latin1q\x02\x86q\x03Rq\x04.";

    /// `pickle.dumps([set(), {1, 2, 3}, frozenset({4, 5})], protocol=2)`
    pub const SETS_P2: &[u8] = b"\x80\x02]q\x00(c__builtin__\nset\nq\x01]q\x02\x85q\x03Rq\x04h\x01]q\x05(K\x01K\x02K\
          \x03e\x85q\x06Rq\x07c__builtin__\nfrozenset\nq\x08]q\t(K\x04K\x05e\x85q\nRq\x0be.";

    /// `pickle.dumps([set(), {1, 2, 3}, frozenset({4, 5})], protocol=4)`
    pub const SETS_P4: &[u8] = b"\x80\x04\x95\x18\x00\x00\x00\x00\x00\x00\x00]\x94(\x8f\x94\x8f\x94(K\x01K\x02K\x03\x90\
          (K\x04K\x05\x91\x94e.";

    /// `pickle.dumps([set(), {1, 2, 3}, frozenset({4, 5})], protocol=5)`
    pub const SETS_P5: &[u8] = b"\x80\x05\x95\x18\x00\x00\x00\x00\x00\x00\x00]\x94(\x8f\x94\x8f\x94(K\x01K\x02K\x03\x90\
          (K\x04K\x05\x91\x94e.";

    /// `a = [1]; pickle.dumps([a, a], protocol=0)`
    pub const SHARED_P0: &[u8] = b"(lp0\n(lp1\nI1\naag1\na.";

    /// `a = [1]; pickle.dumps([a, a], protocol=2)`
    pub const SHARED_P2: &[u8] = b"\x80\x02]q\x00(]q\x01K\x01ah\x01e.";

    /// `l = []; l.append(l); pickle.dumps(l, protocol=0)`
    pub const RECURSIVE_P0: &[u8] = b"(lp0\ng0\na.";

    /// `l = []; l.append(l); pickle.dumps(l, protocol=2)`
    pub const RECURSIVE_P2: &[u8] = b"\x80\x02]q\x00h\x00a.";

    /// `l = []; l.append(l); pickle.dumps(l, protocol=4)`
    pub const RECURSIVE_P4: &[u8] = b"\x80\x04\x95\x06\x00\x00\x00\x00\x00\x00\x00]\x94h\x00a.";

    /// `pickle.dumps(collections.OrderedDict([('x', 1), ('y', 2)]), protocol=0)`
    pub const ORDERED_P0: &[u8] = b"ccollections\nOrderedDict\np0\n(tRp1\nVx\np2\nI1\nsVy\np3\nI2\ns.";

    /// `pickle.dumps(collections.OrderedDict([('x', 1), ('y', 2)]), protocol=2)`
    pub const ORDERED_P2: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00xq\x02K\x01X\x01\x00\
          \x00\x00yq\x03K\x02u.";

    /// `pickle.dumps(Point(1, 2), protocol=0)  # class Point in __main__ with attributes x, y`
    pub const POINT_P0: &[u8] = b"ccopy_reg\n_reconstructor\np0\n(c__main__\nPoint\np1\nc__builtin__\nobject\np2\nNtp3\n\
          Rp4\n(dp5\nVx\np6\nI1\nsVy\np7\nI2\nsb.";

    /// `pickle.dumps(Point(1, 2), protocol=1)  # class Point in __main__ with attributes x, y`
    pub const POINT_P1: &[u8] = b"ccopy_reg\n_reconstructor\nq\x00(c__main__\nPoint\nq\x01c__builtin__\nobject\nq\x02Ntq\
          \x03Rq\x04}q\x05(X\x01\x00\x00\x00xq\x06K\x01X\x01\x00\x00\x00yq\x07K\x02ub.";

    /// `pickle.dumps(Point(1, 2), protocol=2)  # class Point in __main__ with attributes x, y`
    pub const POINT_P2: &[u8] = b"\x80\x02c__main__\nPoint\nq\x00)\x81q\x01}q\x02(X\x01\x00\x00\x00xq\x03K\x01X\x01\x00\
          \x00\x00yq\x04K\x02ub.";

    /// `pickle.dumps(Point(1, 2), protocol=4)  # class Point in __main__ with attributes x, y`
    pub const POINT_P4: &[u8] = b"\x80\x04\x95*\x00\x00\x00\x00\x00\x00\x00\x8c\x08__main__\x94\x8c\x05Point\x94\x93\x94\
          )\x81\x94}\x94(\x8c\x01x\x94K\x01\x8c\x01y\x94K\x02ub.";

    /// `pickle.dumps(Evil(), protocol=0)  # Evil.__reduce__ returns (os.system, ('echo pwned',))`
    pub const EVIL_P0: &[u8] = b"cposix\nsystem\np0\n(Vecho pwned\np1\ntp2\nRp3\n.";

    /// `pickle.dumps(Evil(), protocol=4)  # Evil.__reduce__ returns (os.system, ('echo pwned',))`
    pub const EVIL_P4: &[u8] = b"\x80\x04\x95%\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\
          \x8c\necho pwned\x94\x85\x94R\x94.";

    /// `pickle.dumps(Kw(), protocol=4)  # Kw.__getnewargs_ex__ returns ((1,), {'k': 2})`
    pub const NEWOBJ_EX_P4: &[u8] = b"\x80\x04\x95\"\x00\x00\x00\x00\x00\x00\x00\x8c\x08__main__\x94\x8c\x02Kw\x94\x93\x94K\
          \x01\x85\x94}\x94\x8c\x01k\x94K\x02s\x92\x94.";

    /// `{'w': <object with persistent_id 'storage_0'>} pickled with protocol 0`
    pub const PERSID_P0: &[u8] = b"(dp0\nVw\np1\nPstorage_0\ns.";

    /// `{'w': <object with persistent_id ('storage', 'FloatStorage', '0', 'cpu', 4)>} pickled with protocol 2`
    pub const PERSID_P2: &[u8] = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01(X\x07\x00\x00\x00storageq\x02X\x0c\x00\x00\x00Fl\
          oatStorageq\x03X\x01\x00\x00\x000q\x04X\x03\x00\x00\x00cpuq\x05K\x04tq\x06Qs.";

    /// `pickle.dumps(bytearray(b'abc'), protocol=5)`
    pub const BYTEARRAY_P5: &[u8] = b"\x80\x05\x95\x0e\x00\x00\x00\x00\x00\x00\x00\x96\x03\x00\x00\x00\x00\x00\x00\x00abc\
          \x94.";

    /// `pickle.dumps(pickle.PickleBuffer(b'abc'), protocol=5, buffer_callback=lambda b: None)`
    pub const OUT_OF_BAND_P5: &[u8] = b"\x80\x05\x97\x98.";

    /// `pickle.dumps(1, protocol=2) + pickle.dumps('x', protocol=2)  # legacy torch files chain pickles`
    pub const CONCAT_P2: &[u8] = b"\x80\x02K\x01.\x80\x02X\x01\x00\x00\x00xq\x00.";

    /// Hand-written Python 2 string opcodes: pickle.loads(.., encoding='bytes') gives
    /// [b"it's A\nA", b'\xff\xfe\x00', b'ok', b'dq'].
    pub const PY2_STRINGS: &[u8] = b"(S'it\\'s \\x41\\n\\101'\nT\x03\x00\x00\x00\xff\xfe\x00U\x02okS\"dq\"\nl.";

    /// Hand-written protocol 0 INST: Point(1, 2) with BUILD {'x': 1}, as Python 2 wrote
    /// old-style class instances.
    pub const INST_P0: &[u8] = b"(I1\nI2\ni__main__\nPoint\np0\n(dp1\nVx\np2\nI1\nsb.";

    /// Hand-written protocol 1 OBJ: Point(1, 2) with BUILD {'x': 1}.
    pub const OBJ_P1: &[u8] = b"(c__main__\nPoint\nK\x01K\x02o}Vx\nK\x01sb.";

    /// Hand-written EXT1 5, EXT2 256, EXT4 16777216, TUPLE3.
    pub const EXT_P2: &[u8] = b"\x80\x02\x82\x05\x83\x00\x01\x84\x00\x00\x00\x01\x87.";

    /// Hand-written: two STACK_GLOBALs, the second built from the memoized 'posix' and 'system'
    /// strings (BINGET 0, BINGET 1); pickle.loads gives [os.system, os.system].
    pub const STACK_GLOBAL_MEMO_P4: &[u8] = b"\x80\x04(\x8c\x05posix\x94\x8c\x06system\x94\x93\x94h\x00h\x01\x93l.";
}
