//! ckpt's pickle machine against serde-pickle, a second reading of the same format written by
//! other people: every plain-data pickle (no globals, calls or persistent ids) that serde-pickle
//! reads, ckpt must read too, to the same value.
//!
//! serde-pickle has value semantics: a memoized object is copied wherever it is used, which is
//! what ckpt's shared heap objects look like when every reference is followed. The comparison
//! is strict about types (True is not 1, a tuple is not a list), compares floats bit for bit
//! (any NaN equals any NaN), and compares dicts and sets as serde-pickle holds them, keyed by
//! its own equality (which, like Python's, says 1 == 1.0 == True).
//!
//! Where serde-pickle departs from CPython, the case is skipped; each skip says why.
#![no_main]
use std::collections::{BTreeMap, BTreeSet, HashSet};

use ckpt::pickle::{Heap, Limits, Obj, PickleError, Value as Ours};
use libfuzzer_sys::fuzz_target;
use num_bigint::BigInt;
use num_traits::ToPrimitive;
use serde_pickle::{DeOptions, HashableValue as Key, Value as Theirs};

/// Inputs longer than this are skipped: with GET, serde-pickle's copies grow a value
/// exponentially, and the bound on GETs below only keeps that affordable for small inputs.
const MAX_LEN: usize = 4096;
/// At most this many memo reads: each one may double the size of serde-pickle's copy.
const MAX_GETS: usize = 12;
/// At most this many containers: serde-pickle converts its values recursively.
const MAX_CONTAINERS: usize = 1000;
/// Nodes of ckpt's value with every shared reference followed: beyond it, skip.
const MAX_NODES: usize = 1 << 22;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_LEN || !plain_data(data) {
        return;
    }
    // decode_strings: Python 3 reads the Python 2 strings of STRING and BINSTRING as text; ckpt
    // does when they are UTF-8, and serde-pickle refuses those that are not.
    let Ok(theirs) = serde_pickle::value_from_slice(data, DeOptions::new().decode_strings()) else {
        return;
    };
    let pickle = match ckpt::pickle::parse(data, &Limits::default()) {
        Ok(p) => p,
        Err(e) if serde_pickle_is_lenient(&e) => return,
        Err(e) => panic!("serde-pickle reads {theirs:?}; ckpt refuses: {e}"),
    };
    // serde-pickle refuses bytes after STOP.
    assert_eq!(pickle.end, data.len(), "ckpt's STOP is not the last byte");
    let mut budget = MAX_NODES;
    let ours = match convert(&pickle.heap, &pickle.root, 0, &mut budget) {
        Ok(v) => v,
        Err(Stop::TooLarge) => return,
        Err(Stop::Differs(why)) => panic!("serde-pickle reads {theirs:?}; ckpt's value {why}"),
    };
    assert!(same(&ours, &theirs), "ckpt reads {ours:?}\nserde-pickle reads {theirs:?}");
});

/// Errors of ckpt, following CPython, where serde-pickle accepts what CPython refuses.
fn serde_pickle_is_lenient(e: &PickleError) -> bool {
    match e {
        // CPython pairs DICT's and SETITEMS' items and fails on an odd one; serde-pickle
        // drops it.
        PickleError::Invalid { opcode: "DICT" | "SETITEMS", .. } => true,
        // CPython requires STRING's argument to be quoted; serde-pickle takes it unquoted too.
        PickleError::Invalid { opcode: "STRING", .. } => true,
        // CPython refuses protocols above 5; serde-pickle ignores PROTO's argument.
        PickleError::Invalid { opcode: "PROTO", .. } => true,
        // CPython reads a whole frame ahead and fails when fewer bytes remain than FRAME
        // announces; serde-pickle ignores the length.
        PickleError::Truncated { opcode: "FRAME", .. } => true,
        // serde-pickle's LONG parser (num-bigint's) takes underscores anywhere after the first
        // digit; CPython's int() only single ones between digits.
        PickleError::Invalid { opcode: "INT" | "LONG", what, .. } => what.contains('_'),
        _ => false,
    }
}

/// Whether the opcodes up to STOP are ones both readers give the same meaning: plain data, and
/// none of the constructs where serde-pickle's copies differ from CPython's shared objects.
/// False also for streams serde-pickle will refuse anyway (unknown opcode, no STOP).
fn plain_data(data: &[u8]) -> bool {
    let mut at = 0;
    let mut memo: HashSet<u64> = HashSet::new();
    let (mut gets, mut containers) = (0, 0);
    let (mut floats, mut sets) = (false, false);
    // Which stack entries are memo references in serde-pickle (it stores one in place of a
    // memoized value): memoizing one copies the value where CPython names the same object.
    let mut stack: Vec<bool> = Vec::new();
    let mut marks: Vec<Vec<bool>> = Vec::new();
    while let Some(&op) = data.get(at) {
        at += 1;
        let arg = match op {
            b'.' => return true,
            // Calls, object construction, globals, persistent ids, the extension registry and
            // out-of-band buffers: not plain data (serde-pickle makes up values for some).
            b'c' | 0x93 | b'R' | b'b' | b'i' | b'o' | 0x81 | 0x92 | b'P' | b'Q' | 0x82 | 0x83 | 0x84 | 0x97
            | 0x98 => return false,
            // DUP: CPython pushes the same object again, serde-pickle a copy; a later APPEND to
            // one shows in both only in CPython.
            b'2' => return false,
            b'(' | b'0' | b'1' | b'N' | 0x88 | 0x89 | b')' | b't' | 0x85 | 0x86 | 0x87 | b']' | b'l' | b'a' | b'e'
            | b'}' | b'd' | b's' | b'u' | 0x8f | 0x91 | 0x90 | 0x94 => Arg::None,
            0x80 | b'K' | b'q' | b'h' => Arg::Fixed(1),
            b'M' => Arg::Fixed(2),
            b'J' | b'r' | b'j' => Arg::Fixed(4),
            b'G' | 0x95 => Arg::Fixed(8),
            b'I' | b'L' | b'F' | b'S' | b'V' | b'p' | b'g' => Arg::Line,
            b'C' | b'U' | 0x8c | 0x8a => Arg::Len(1),
            b'B' | b'T' | b'X' | 0x8b => Arg::Len(4),
            0x8e | 0x8d | 0x96 => Arg::Len(8),
            _ => return false,
        };
        let start = at;
        at = match arg.end(data, at) {
            Some(end) => end,
            None => return false,
        };
        let bytes = &data[start..at];
        // Memo writes: PUT (text key), BINPUT, LONG_BINPUT, MEMOIZE (the memo's size).
        let put = match op {
            b'p' => Some(text_key(bytes)),
            b'q' => Some(Some(u64::from(bytes[0]))),
            b'r' => Some(Some(u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])))),
            0x94 => Some(Some(memo.len() as u64)),
            _ => None,
        };
        if let Some(key) = put {
            let Some(key) = key else { return false };
            // A key written twice: CPython's earlier reads keep the first object, serde-pickle's
            // references all resolve to the last one at the end.
            if stack.last() != Some(&false) || !memo.insert(key) {
                return false;
            }
        }
        if matches!(op, b'I' | b'L') && base_zero_literal(op, bytes) {
            return false;
        }
        // UNICODE: serde-pickle drops a '\r' before the newline, CPython keeps it in the text.
        if op == b'V' && bytes.ends_with(b"\r\n") {
            return false;
        }
        if matches!(op, b'g' | b'h' | b'j') {
            gets += 1;
        }
        if matches!(op, b')' | b't' | 0x85 | 0x86 | 0x87 | b']' | b'l' | b'}' | b'd' | 0x8f | 0x91) {
            containers += 1;
        }
        floats |= matches!(op, b'G' | b'F');
        sets |= matches!(op, 0x8f | 0x91);
        // serde-pickle sorts a set's items by an order that is not total once a NaN is among
        // them, and the sort then panics: no floats in pickles with sets.
        if gets > MAX_GETS || containers > MAX_CONTAINERS || (floats && sets) {
            return false;
        }
        if track_refs(op, &mut stack, &mut marks).is_none() {
            return false;
        }
    }
    false
}

/// Follows which stack entries are memo references across `op` (see [`plain_data`]); None on
/// a stack underflow, which serde-pickle refuses too.
fn track_refs(op: u8, stack: &mut Vec<bool>, marks: &mut Vec<Vec<bool>>) -> Option<()> {
    let pop_mark = |stack: &mut Vec<bool>, marks: &mut Vec<Vec<bool>>| marks.pop().map(|under| *stack = under);
    match op {
        // PROTO, FRAME, and memo writes (checked before).
        0x80 | 0x95 => {}
        b'p' | b'q' | b'r' | 0x94 => *stack.last_mut()? = true,
        b'g' | b'h' | b'j' => stack.push(true),
        b'(' => marks.push(std::mem::take(stack)),
        b'0' if stack.is_empty() => pop_mark(stack, marks)?,
        b'0' | b'a' => drop(stack.pop()?),
        b's' => {
            stack.pop()?;
            stack.pop()?;
        }
        // Pop back to the MARK, changing the object under it in place (or not at all).
        b'e' | b'u' | 0x90 | b'1' => pop_mark(stack, marks)?,
        // Pop back to the MARK and push a new object.
        b't' | b'l' | b'd' | 0x91 => {
            pop_mark(stack, marks)?;
            stack.push(false);
        }
        0x85..=0x87 => {
            for _ in 0..op - 0x84 {
                stack.pop()?;
            }
            stack.push(false);
        }
        // Everything else allowed pushes one new value.
        _ => stack.push(false),
    }
    Some(())
}

/// How an opcode's argument is laid out.
enum Arg {
    None,
    Fixed(usize),
    /// Up to and including a newline.
    Line,
    /// A little-endian length of this many bytes, then that many bytes.
    Len(usize),
}

impl Arg {
    /// Where the argument starting at `at` ends; None if the data ends first.
    fn end(&self, data: &[u8], at: usize) -> Option<usize> {
        let end = match *self {
            Arg::None => at,
            Arg::Fixed(n) => at + n,
            Arg::Line => at + data.get(at..)?.iter().position(|&b| b == b'\n')? + 1,
            Arg::Len(n) => {
                let mut len = [0u8; 8];
                len[..n].copy_from_slice(data.get(at..at + n)?);
                at.checked_add(n)?.checked_add(usize::try_from(u64::from_le_bytes(len)).ok()?)?
            }
        };
        (end <= data.len()).then_some(end)
    }
}

/// Whether an INT or LONG argument (with its newline) reads differently in base 0, as CPython
/// reads it, than in base 10, as serde-pickle does: a leading zero followed by more (octal for
/// INT, refused by LONG; INT's `00` and `01` are False and True in both), or, for INT, a signed
/// two-character argument (`+1` and `-0` are True and False to CPython).
fn base_zero_literal(op: u8, line: &[u8]) -> bool {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    if op == b'I' && (text == b"00" || text == b"01") {
        return false;
    }
    let unsigned = text.trim_ascii_start().strip_prefix(b"+").or_else(|| text.trim_ascii_start().strip_prefix(b"-"));
    let digits = unsigned.unwrap_or(text.trim_ascii_start());
    (digits.len() > 1 && digits[0] == b'0') || (op == b'I' && text.len() == 2 && unsigned.is_some())
}

/// A PUT key as serde-pickle reads it: the line without its newline, a u32 in decimal.
fn text_key(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    std::str::from_utf8(line).ok()?.parse::<u32>().ok().map(u64::from)
}

/// Why ckpt's value was not converted.
enum Stop {
    /// Larger than [`MAX_NODES`] with shared references followed: skipped.
    TooLarge,
    /// Something serde-pickle's reading cannot be: a disagreement.
    Differs(String),
}

/// ckpt's value as serde-pickle's: shared objects copied, bytearray as bytes (serde-pickle
/// has no bytearray), big integers that fit in i64 as i64 (as serde-pickle makes them).
fn convert(heap: &Heap, v: &Ours, depth: usize, budget: &mut usize) -> Result<Theirs, Stop> {
    *budget = budget.checked_sub(1).ok_or(Stop::TooLarge)?;
    // Deeper than the containers the walk allowed: only a cycle, which serde-pickle refuses.
    if depth > MAX_CONTAINERS {
        return Err(Stop::Differs("is cyclic".into()));
    }
    let items = |items: &[Ours], budget: &mut usize| -> Result<Vec<Theirs>, Stop> {
        items.iter().map(|i| convert(heap, i, depth + 1, budget)).collect()
    };
    Ok(match v {
        Ours::None => Theirs::None,
        Ours::Bool(b) => Theirs::Bool(*b),
        Ours::Int(i) => Theirs::I64(*i),
        Ours::BigInt(bytes) => {
            let n = BigInt::from_signed_bytes_le(bytes);
            match n.to_i64() {
                Some(i) => Theirs::I64(i),
                None => Theirs::Int(n),
            }
        }
        Ours::Float(f) => Theirs::F64(*f),
        Ours::Str(s) => Theirs::String(s.to_string()),
        Ours::Bytes(b) => Theirs::Bytes(b.to_vec()),
        Ours::Obj(id) => match heap.get(*id) {
            Obj::Tuple(v) => Theirs::Tuple(items(v, budget)?),
            Obj::List(v) => Theirs::List(items(v, budget)?),
            Obj::ByteArray(b) => Theirs::Bytes(b.clone()),
            Obj::Set(v) => Theirs::Set(keys(items(v, budget)?)?),
            Obj::FrozenSet(v) => Theirs::FrozenSet(keys(items(v, budget)?)?),
            Obj::Dict(pairs) => {
                let mut map = BTreeMap::new();
                for (k, v) in pairs {
                    let k = key(convert(heap, k, depth + 1, budget)?)?;
                    map.insert(k, convert(heap, v, depth + 1, budget)?);
                }
                Theirs::Dict(map)
            }
            other => return Err(Stop::Differs(format!("holds {other:?}"))),
        },
    })
}

fn key(v: Theirs) -> Result<Key, Stop> {
    v.into_hashable()
        .map_err(|_| Stop::Differs("has an unhashable key or set item".into()))
}

fn keys(items: Vec<Theirs>) -> Result<BTreeSet<Key>, Stop> {
    items.into_iter().map(key).collect()
}

fn same_float(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

/// Equal, strictly: same types, floats bit for bit (NaN-aware).
fn same(a: &Theirs, b: &Theirs) -> bool {
    use Theirs as T;
    match (a, b) {
        (T::None, T::None) => true,
        (T::Bool(x), T::Bool(y)) => x == y,
        (T::I64(x), T::I64(y)) => x == y,
        (T::Int(x), T::Int(y)) => x == y,
        (T::F64(x), T::F64(y)) => same_float(*x, *y),
        (T::Bytes(x), T::Bytes(y)) => x == y,
        (T::String(x), T::String(y)) => x == y,
        (T::List(x), T::List(y)) | (T::Tuple(x), T::Tuple(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (T::Set(x), T::Set(y)) | (T::FrozenSet(x), T::FrozenSet(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_key(a, b))
        }
        (T::Dict(x), T::Dict(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((ka, va), (kb, vb))| same_key(ka, kb) && same(va, vb))
        }
        _ => false,
    }
}

fn same_key(a: &Key, b: &Key) -> bool {
    same(&a.clone().into_value(), &b.clone().into_value())
}
