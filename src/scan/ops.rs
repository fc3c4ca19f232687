//! A linear pass over a pickle's opcodes, independent of the pickle machine: which opcodes
//! appear (torch's weights_only unpickler implements only some) and which global names are
//! written, even when the machine refuses the pickle. CPython accepts some streams the machine
//! rejects (values left on the stack at STOP, APPEND onto a global, lone surrogates ...) and
//! runs everything before the point of refusal, so a scanner must not go blind there.
//!
//! The pass never allocates more than the names it finds (bounded by the input) and never
//! looks backwards except through a small string memo for `STACK_GLOBAL`.

use std::collections::HashMap;

use crate::pickle::Opcode;

/// Opcodes torch 2.11's weights_only unpickler implements (`_weights_only_unpickler.py`).
const WEIGHTS_ONLY_OPCODES: &[Opcode] = &[
    Opcode::Global,
    Opcode::NewObj,
    Opcode::Reduce,
    Opcode::Build,
    Opcode::Append,
    Opcode::Appends,
    Opcode::SetItem,
    Opcode::SetItems,
    Opcode::Mark,
    Opcode::Tuple,
    Opcode::Tuple1,
    Opcode::Tuple2,
    Opcode::Tuple3,
    Opcode::None,
    Opcode::NewFalse,
    Opcode::NewTrue,
    Opcode::EmptyTuple,
    Opcode::EmptyList,
    Opcode::EmptyDict,
    Opcode::EmptySet,
    Opcode::BinInt,
    Opcode::BinInt1,
    Opcode::BinInt2,
    Opcode::BinFloat,
    Opcode::BinUnicode,
    Opcode::ShortBinString,
    Opcode::BinPersId,
    Opcode::BinGet,
    Opcode::LongBinGet,
    Opcode::BinPut,
    Opcode::LongBinPut,
    Opcode::Long1,
    Opcode::Proto,
    Opcode::Stop,
];

/// A global name as written in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawGlobal {
    pub module: String,
    pub name: String,
    pub offset: u64,
    /// The opcode: GLOBAL, INST or STACK_GLOBAL (names recovered from the strings pushed before it).
    pub opcode: &'static str,
}

#[derive(Debug, Default)]
pub struct OpcodeScan {
    /// Which opcodes occur.
    pub seen: Vec<Opcode>,
    pub globals: Vec<RawGlobal>,
    /// Offset just past the first STOP, if the pass reached one.
    pub end: Option<usize>,
    /// Why the pass stopped early (an unknown opcode, a truncated argument).
    pub error: Option<String>,
    /// Each PROTO opcode: its offset and protocol. CPython's `find_class` walks dotted names
    /// only when the last PROTO seen so far says 4 or more.
    pub protos: Vec<(u64, u8)>,
    /// Offset of the last opcode that calls something: REDUCE, INST, OBJ, NEWOBJ(_EX), and
    /// BUILD, APPEND(S), SETITEM(S), ADDITEMS, which call `__setstate__`, `append`,
    /// `__setitem__` or `add` on whatever object is their target.
    pub last_call: Option<u64>,
}

impl OpcodeScan {
    /// Opcodes present that torch's weights_only unpickler does not implement.
    pub fn outside_weights_only(&self) -> Vec<&'static str> {
        self.seen
            .iter()
            .filter(|op| !WEIGHTS_ONLY_OPCODES.contains(op))
            .map(|op| op.name())
            .collect()
    }

    /// The protocol CPython's unpickler is at when it reaches `offset` (0 before any PROTO).
    pub fn protocol_at(&self, offset: u64) -> u8 {
        self.protos
            .iter()
            .take_while(|(at, _)| *at < offset)
            .last()
            .map_or(0, |(_, p)| *p)
    }

    /// Whether an opcode that calls something comes after `offset`.
    pub fn call_after(&self, offset: u64) -> bool {
        self.last_call.is_some_and(|at| at > offset)
    }
}

enum Arg {
    None,
    Fixed(usize),
    Line,
    TwoLines,
    /// A length of 1, 4 (signed or not) or 8 bytes, then that many bytes.
    Len(usize),
}

fn arg_of(op: Opcode) -> Arg {
    use Opcode as O;
    match op {
        O::BinInt | O::LongBinGet | O::LongBinPut | O::Ext4 => Arg::Fixed(4),
        O::BinInt1 | O::BinGet | O::BinPut | O::Proto | O::Ext1 => Arg::Fixed(1),
        O::BinInt2 | O::Ext2 => Arg::Fixed(2),
        O::BinFloat | O::Frame => Arg::Fixed(8),
        O::Float | O::Int | O::Long | O::PersId | O::String | O::Unicode | O::Get | O::Put => Arg::Line,
        O::Global | O::Inst => Arg::TwoLines,
        O::ShortBinString | O::ShortBinUnicode | O::ShortBinBytes | O::Long1 => Arg::Len(1),
        O::BinString | O::BinUnicode | O::BinBytes | O::Long4 => Arg::Len(4),
        O::BinUnicode8 | O::BinBytes8 | O::ByteArray8 => Arg::Len(8),
        _ => Arg::None,
    }
}

/// Opcodes that make CPython call something (see [`OpcodeScan::last_call`]).
fn is_call(op: Opcode) -> bool {
    use Opcode as O;
    matches!(
        op,
        O::Reduce
            | O::Inst
            | O::Obj
            | O::NewObj
            | O::NewObjEx
            | O::Build
            | O::Append
            | O::Appends
            | O::SetItem
            | O::SetItems
            | O::AddItems
    )
}

/// At most this many names are kept (each costs at most its bytes in the input).
const MAX_NAMES: usize = 1 << 20;

/// Walks the opcodes from the start of `data` to the first STOP.
pub fn scan(data: &[u8]) -> OpcodeScan {
    let mut out = OpcodeScan::default();
    let mut seen = [false; 256];
    let mut names = NameTracker::default();
    let mut pos = 0usize;
    loop {
        let Some(&byte) = data.get(pos) else {
            out.error = Some(format!("no STOP opcode before the end ({pos} bytes)"));
            break;
        };
        let at = pos;
        let Ok(op) = Opcode::try_from(byte) else {
            out.error = Some(format!("unknown opcode 0x{byte:02x} at byte {at}"));
            break;
        };
        seen[byte as usize] = true;
        pos += 1;
        let rest = data.get(pos..).unwrap_or_default();
        let arg = match read_arg(op, at, rest) {
            Ok(arg) => arg,
            Err(error) => {
                out.error = Some(error);
                break;
            }
        };
        pos += arg.len;
        if is_call(op) {
            out.last_call = Some(at as u64);
        }
        let named = match op {
            Opcode::Stop => {
                out.end = Some(pos);
                break;
            }
            Opcode::Proto => {
                if let Some(&p) = rest.first() {
                    out.protos.push((at as u64, p));
                }
                None
            }
            _ => {
                let stacked = names.track(op, rest.get(..arg.len).unwrap_or_default(), arg.text);
                arg.names.or(stacked)
            }
        };
        if let Some((module, name)) = named {
            if out.globals.len() < MAX_NAMES {
                out.globals.push(RawGlobal {
                    module,
                    name,
                    offset: at as u64,
                    opcode: op.name(),
                });
            }
        }
    }
    out.seen = Opcode::ALL.iter().copied().filter(|op| seen[*op as usize]).collect();
    out
}

/// What the pass takes from an opcode's argument.
#[derive(Default)]
struct ArgRead {
    /// Bytes the argument takes after the opcode.
    len: usize,
    /// A line or a short string payload, as text.
    text: Option<String>,
    /// GLOBAL's and INST's module and name lines.
    names: Option<(String, String)>,
}

/// Reads the argument of `op` (at byte `at`) from `rest`, the bytes after it; Err says why
/// the pass must stop there.
fn read_arg(op: Opcode, at: usize, rest: &[u8]) -> Result<ArgRead, String> {
    let truncated = || format!("{} at byte {at} is truncated", op.name());
    let line_of = |skip: usize| -> Option<(usize, String)> {
        let rest = rest.get(skip..)?;
        let n = rest.iter().position(|&b| b == b'\n')?;
        Some((n + 1, String::from_utf8_lossy(rest.get(..n)?).into_owned()))
    };
    match arg_of(op) {
        Arg::None => Ok(ArgRead::default()),
        Arg::Fixed(len) if rest.len() < len => Err(truncated()),
        Arg::Fixed(len) => Ok(ArgRead {
            len,
            ..ArgRead::default()
        }),
        Arg::Line => {
            let (len, text) = line_of(0).ok_or_else(truncated)?;
            Ok(ArgRead {
                len,
                text: Some(text),
                names: None,
            })
        }
        Arg::TwoLines => {
            let (n1, module) = line_of(0).ok_or_else(truncated)?;
            let (n2, name) = line_of(n1).ok_or_else(truncated)?;
            Ok(ArgRead {
                len: n1 + n2,
                text: None,
                names: Some((module, name)),
            })
        }
        Arg::Len(width) => read_counted(op, at, width, rest).ok_or_else(truncated)?,
    }
}

/// A length of `width` bytes, then that many bytes; None when the input ends first, Err for a
/// negative signed length.
fn read_counted(op: Opcode, at: usize, width: usize, rest: &[u8]) -> Option<Result<ArgRead, String>> {
    let head = rest.get(..width)?;
    let mut buf = [0u8; 8];
    buf[..width].copy_from_slice(head);
    let mut len = u64::from_le_bytes(buf);
    if width == 4 && matches!(op, Opcode::BinString | Opcode::Long4) && len >= 1 << 31 {
        return Some(Err(format!("{} at byte {at} has a negative length", op.name())));
    }
    if width == 4 {
        len &= 0xffff_ffff;
    }
    let payload = usize::try_from(len)
        .ok()
        .and_then(|l| rest.get(width..width.checked_add(l)?))?;
    let is_text = matches!(
        op,
        Opcode::ShortBinUnicode | Opcode::BinUnicode | Opcode::BinUnicode8 | Opcode::ShortBinString | Opcode::BinString
    );
    // Names are short; long strings cannot be module names worth reporting.
    let text = (is_text && payload.len() <= 4096).then(|| String::from_utf8_lossy(payload).into_owned());
    Some(Ok(ArgRead {
        len: width + payload.len(),
        text,
        names: None,
    }))
}

/// The strings STACK_GLOBAL may take its module and name from: the last two pushed, and the
/// ones memoized.
#[derive(Default)]
struct NameTracker {
    recent: [Option<String>; 2],
    memo: HashMap<u64, String>,
    /// Memo entries made so far: the key MEMOIZE uses next.
    memo_len: u64,
}

impl NameTracker {
    /// Follows `op` (its argument `arg`, as text `text` where it has one); returns the module
    /// and name a STACK_GLOBAL takes.
    fn track(&mut self, op: Opcode, arg: &[u8], text: Option<String>) -> Option<(String, String)> {
        let key_of = |arg: &[u8]| {
            let mut buf = [0u8; 8];
            buf[..arg.len()].copy_from_slice(arg);
            u64::from_le_bytes(buf)
        };
        match op {
            Opcode::ShortBinUnicode
            | Opcode::BinUnicode
            | Opcode::BinUnicode8
            | Opcode::ShortBinString
            | Opcode::BinString
            | Opcode::Unicode => self.push(text),
            Opcode::String => self.push(text.map(|t| t.trim_matches(|c| c == '\'' || c == '"').to_string())),
            Opcode::Memoize => self.memoize(Some(self.memo_len)),
            Opcode::Put => self.memoize(text.as_deref().and_then(|t| t.trim().parse().ok())),
            Opcode::BinPut | Opcode::LongBinPut => self.memoize(Some(key_of(arg))),
            Opcode::Get => {
                let key = text.as_deref().and_then(|t| t.trim().parse::<u64>().ok());
                self.push(key.and_then(|k| self.memo.get(&k).cloned()));
            }
            Opcode::BinGet | Opcode::LongBinGet => self.push(self.memo.get(&key_of(arg)).cloned()),
            Opcode::StackGlobal => {
                let names = match &self.recent {
                    [Some(module), Some(name)] => Some((module.clone(), name.clone())),
                    _ => None,
                };
                self.push(None);
                return names;
            }
            Opcode::Frame | Opcode::Pop | Opcode::Mark => {}
            _ => self.push(None),
        }
        None
    }

    fn push(&mut self, s: Option<String>) {
        self.recent[0] = self.recent[1].take();
        self.recent[1] = s;
    }

    fn memoize(&mut self, key: Option<u64>) {
        self.memo_len += 1;
        // Only short strings can be module or global names worth remembering.
        if let (Some(key), Some(s)) = (key, self.recent[1].clone().filter(|s| s.len() <= 256)) {
            if self.memo.len() < MAX_NAMES {
                self.memo.insert(key, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_global_and_memoized_stack_global() {
        let s = scan(b"cos\nsystem\n(S'echo'\ntR.");
        assert_eq!(s.globals[0].module, "os");
        assert_eq!(s.end, Some(23));
        // PROTO 4, 'os' MEMOIZE, 'system' MEMOIZE, POP POP, BINGET 0, BINGET 1, STACK_GLOBAL
        let mut p = vec![0x80, 4, 0x8c, 2];
        p.extend(b"os");
        p.push(0x94);
        p.extend([0x8c, 6]);
        p.extend(b"system");
        p.extend([0x94, b'0', b'0', b'h', 0, b'h', 1, 0x93, b'N', b'.']);
        let s = scan(&p);
        assert_eq!(
            (s.globals[0].module.as_str(), s.globals[0].name.as_str()),
            ("os", "system")
        );
        assert!(s.outside_weights_only().contains(&"STACK_GLOBAL"));
        assert_eq!(s.protocol_at(0), 0);
        assert_eq!(s.protocol_at(20), 4);
        assert!(!s.call_after(0), "no call opcode");
    }

    #[test]
    fn tracks_protocol_changes_and_calls() {
        // PROTO 2, GLOBAL, PROTO 4, EMPTY_TUPLE, REDUCE, STOP.
        let s = scan(b"\x80\x02cmylib\nfn\n\x80\x04)R.");
        assert_eq!(s.protos, [(0, 2), (12, 4)]);
        assert_eq!(s.protocol_at(s.globals[0].offset), 2);
        assert_eq!(s.protocol_at(15), 4);
        assert_eq!(s.last_call, Some(15));
        assert!(s.call_after(s.globals[0].offset));
    }

    #[test]
    fn stops_on_garbage_without_panicking() {
        for data in [
            &b""[..],
            b"\xff",
            b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
            b"T\xff\xff\xff\xff",
            b"c\n",
            b"q",
        ] {
            let s = scan(data);
            assert!(s.error.is_some() && s.end.is_none());
        }
    }
}
