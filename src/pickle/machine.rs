//! The pickle virtual machine. It interprets the opcode stream the way CPython's `Unpickler`
//! does, but never imports, calls or constructs anything: globals become [`Obj::Global`], calls
//! and object constructions become [`Obj::Instance`] records, and every use of a global is
//! logged in [`Pickle::globals`] for the scanner.
//!
//! Hostile input is the normal case, so: every length read from the file is checked against the
//! bytes that remain before anything is allocated; every growing structure (stack, marks, memo,
//! heap, container items, payload bytes) is bounded by [`Limits`]; the memo never allocates
//! according to a key from the file; nothing recurses (the heap is flat); and nothing panics
//! (the lints below keep indexing and unwrapping out of this file).

#![warn(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use super::error::PickleError;
use super::literal;
use super::opcode::Opcode;
use super::value::{Construct, Global, GlobalUse, Heap, Instance, Obj, Usage, Value};

type Result<T> = std::result::Result<T, PickleError>;

/// Bounds on the work one [`parse`] may do; exceeding one is [`PickleError::LimitExceeded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Values on the stack plus all open marks.
    pub max_stack: usize,
    /// Open MARK nesting.
    pub max_marks: usize,
    /// Memo entries.
    pub max_memo: usize,
    /// The working set: heap objects + items stored in containers (a dict pair counts once) +
    /// recorded global uses.
    pub max_objects: usize,
    /// Total bytes of str/bytes/bytearray/big-int payloads and global names.
    pub max_bytes: u64,
}

impl Default for Limits {
    /// Generous for real checkpoints, bounded for hostile ones.
    ///
    /// - `max_stack` 2^20: picklers batch APPENDS/SETITEMS by 1000, so the stack only grows with
    ///   tuple length and nesting depth; a million entries is ~24 MiB.
    /// - `max_marks` 100 000: CPython's pickler recurses per nesting level and stops near its
    ///   recursion limit (1000), so real pickles never nest marks that deep; 200 000 nested
    ///   MARKs are rejected after 100 000 cheap pushes.
    /// - `max_memo` 2^24: the pickler memoizes each str, tuple, list, dict, global and instance
    ///   once, about ten per tensor, so a 100k-tensor model needs ~1M; 16M entries are at most
    ///   ~0.4 GiB in order, ~0.7 GiB scattered.
    /// - `max_objects` 2^25 (33.5M): three times the 10M heap items of a large whole-model
    ///   pickle. A heap object is ~150 bytes (the size of `Obj`) and an item 24-48, so the
    ///   worst case, every unit an instance, is ~5 GiB; real pickles are mostly items.
    /// - `max_bytes` 4 GiB: payloads are copied out of the input, so they never exceed its size;
    ///   this caps memory for very large inputs (raise it for pickles that inline huge arrays).
    fn default() -> Self {
        Limits {
            max_stack: 1 << 20,
            max_marks: 100_000,
            max_memo: 1 << 24,
            max_objects: 1 << 25,
            max_bytes: 1 << 32,
        }
    }
}

/// The result of reading one pickle.
#[derive(Debug, Clone)]
pub struct Pickle {
    /// Every compound value of the pickle.
    pub heap: Heap,
    /// The value STOP returned.
    pub root: Value,
    /// Every use of a global, in stream order.
    pub globals: Vec<GlobalUse>,
    /// Offset just past STOP: where a following pickle (legacy torch format) starts.
    pub end: usize,
    /// The last PROTO opcode's argument, if any (protocol 0 and 1 pickles have none).
    pub protocol: Option<u8>,
}

/// Reads one pickle from the start of `data`, up to and including the first STOP. Bytes after
/// STOP are left alone: the legacy torch format concatenates pickles, so the caller parses
/// `data[end..]` next.
pub fn parse(data: &[u8], limits: &Limits) -> Result<Pickle> {
    parse_partial(data, limits).map_err(|partial| partial.error)
}

/// What the machine had recorded when it stopped on an error: every call and construction
/// before the failing opcode, which CPython would have performed before failing there (or
/// before going on, where it accepts what the machine refuses).
#[derive(Debug, Clone)]
pub struct Partial {
    pub heap: Heap,
    pub globals: Vec<GlobalUse>,
    pub protocol: Option<u8>,
    pub error: PickleError,
}

/// [`parse`], but on an error also returns what was recorded up to it.
pub fn parse_partial(data: &[u8], limits: &Limits) -> std::result::Result<Pickle, Box<Partial>> {
    let mut machine = Machine {
        data,
        pos: 0,
        at: 0,
        op: Opcode::Stop,
        limits,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo::default(),
        heap: Heap::new(),
        globals: Vec::new(),
        objects: 0,
        bytes: 0,
        protocol: None,
    };
    match machine.run() {
        Ok(root) => Ok(Pickle {
            heap: machine.heap,
            root,
            globals: machine.globals,
            end: machine.pos,
            protocol: machine.protocol,
        }),
        Err(error) => Err(Box::new(Partial {
            heap: machine.heap,
            globals: machine.globals,
            protocol: machine.protocol,
            error,
        })),
    }
}

// Names of the limits, as they appear in LimitExceeded::what.
const STACK: &str = "stack entries";
const MARKS: &str = "open MARKs";
const MEMO: &str = "memo entries";
const OBJECTS: &str = "objects";
const BYTES: &str = "payload bytes";

/// The highest protocol CPython 3.8+ writes (pickle.HIGHEST_PROTOCOL).
const HIGHEST_PROTOCOL: u8 = 5;

struct Machine<'a> {
    data: &'a [u8],
    /// Read position; always <= data.len().
    pos: usize,
    /// Offset of the opcode being executed, for errors and global uses.
    at: usize,
    op: Opcode,
    limits: &'a Limits,
    /// Values; the marks are positions in it (CPython's C unpickler keeps them the same way).
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Memo,
    heap: Heap,
    globals: Vec<GlobalUse>,
    /// Working set charged against max_objects.
    objects: u64,
    /// Payload bytes charged against max_bytes.
    bytes: u64,
    protocol: Option<u8>,
}

impl<'a> Machine<'a> {
    /// Runs to the first STOP and returns the pickle's value.
    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let byte = *self.data.get(at).ok_or(PickleError::NoStop { offset: at as u64 })?;
            self.pos = at + 1;
            self.at = at;
            self.op = Opcode::try_from(byte).map_err(|byte| PickleError::UnknownOpcode {
                byte,
                offset: at as u64,
            })?;
            if self.op == Opcode::Stop {
                // As CPython's load_stop: the result is the top of the innermost frame; values
                // left below it and MARKs left open are ignored. Refusing them would make ckpt
                // blind to pickles that Python loads (and runs).
                return self.pop();
            }
            self.step()?;
        }
    }

    /// Executes the opcode just read. One match dispatches every opcode to its family's helper
    /// (each `#[inline]`, so the dispatch stays one jump table in this hot loop).
    #[rustfmt::skip] // a dispatch table: one line per opcode family
    fn step(&mut self) -> Result<()> {
        use Opcode as Op;
        match self.op {
            Op::Stop => Ok(()), // run() handles STOP before dispatching
            Op::Mark => self.push_mark(),
            Op::Pop => self.pop_value_or_mark(),
            Op::PopMark => self.pop_mark().map(drop),
            Op::Dup => {
                let top = self.top()?.clone();
                self.push(top)
            }
            Op::None | Op::NewTrue | Op::NewFalse | Op::Int | Op::Long | Op::BinInt | Op::BinInt1
            | Op::BinInt2 | Op::Long1 | Op::Long4 | Op::Float | Op::BinFloat => self.number(),
            Op::String | Op::BinString | Op::ShortBinString | Op::Unicode | Op::BinUnicode
            | Op::ShortBinUnicode | Op::BinUnicode8 => self.string(),
            Op::BinBytes | Op::ShortBinBytes | Op::BinBytes8 | Op::ByteArray8 | Op::NextBuffer
            | Op::ReadonlyBuffer => self.binary(),
            Op::EmptyTuple | Op::EmptyList | Op::EmptyDict | Op::EmptySet | Op::Tuple1 | Op::Tuple2
            | Op::Tuple3 | Op::Tuple | Op::List | Op::FrozenSet | Op::Dict | Op::Append | Op::Appends
            | Op::SetItem | Op::SetItems | Op::AddItems => self.container(),
            Op::Put | Op::BinPut | Op::LongBinPut | Op::Memoize | Op::Get | Op::BinGet
            | Op::LongBinGet => self.memo_access(),
            Op::Global | Op::StackGlobal | Op::Ext1 | Op::Ext2 | Op::Ext4 | Op::PersId
            | Op::BinPersId => self.reference(),
            Op::Reduce | Op::NewObj | Op::NewObjEx | Op::Inst | Op::Obj | Op::Build => self.construct(),
            Op::Proto | Op::Frame => self.framing(),
        }
    }

    /// Numbers: the None/True/False singletons, ints, longs and floats.
    #[inline]
    fn number(&mut self) -> Result<()> {
        use Opcode as Op;
        match self.op {
            Op::None => self.push(Value::None),
            Op::NewTrue => self.push(Value::Bool(true)),
            Op::NewFalse => self.push(Value::Bool(false)),
            Op::Int => {
                let v = literal::int_arg(self.line()?).map_err(|w| self.invalid(w))?;
                self.push(v)
            }
            Op::Long => {
                let v = literal::long_arg(self.line()?).map_err(|w| self.invalid(w))?;
                self.push(v)
            }
            Op::BinInt => {
                let v = i32::from_le_bytes(self.array()?);
                self.push(Value::Int(v.into()))
            }
            Op::BinInt1 => {
                let [v] = self.array()?;
                self.push(Value::Int(v.into()))
            }
            Op::BinInt2 => {
                let v = u16::from_le_bytes(self.array()?);
                self.push(Value::Int(v.into()))
            }
            Op::Long1 => {
                let [len] = self.array()?;
                self.long(len.into())
            }
            Op::Long4 => {
                let len = self.signed_len()?;
                self.long(len)
            }
            Op::Float => {
                let v = literal::float(self.line()?).map_err(|w| self.invalid(w))?;
                self.push(Value::Float(v))
            }
            Op::BinFloat => {
                let v = f64::from_be_bytes(self.array()?);
                self.push(Value::Float(v))
            }
            _ => unreachable!("step() sends only number opcodes here"),
        }
    }

    /// Strings: protocol 0-2 `str` (Python 2 byte strings) and unicode.
    #[inline]
    fn string(&mut self) -> Result<()> {
        use Opcode as Op;
        match self.op {
            Op::String => {
                let line = self.line()?;
                let bytes = literal::python_string(line).map_err(|w| self.invalid(w))?;
                self.charge_bytes(bytes.len() as u64)?;
                self.push(py2_str(&bytes))
            }
            Op::BinString => {
                let len = self.signed_len()?;
                let payload = self.payload(len)?;
                self.push(py2_str(payload))
            }
            Op::ShortBinString => {
                let [len] = self.array()?;
                let payload = self.payload(len.into())?;
                self.push(py2_str(payload))
            }
            Op::Unicode => {
                let line = self.line()?;
                let text = literal::raw_unicode_escape(line).map_err(|w| self.invalid(w))?;
                self.charge_bytes(text.len() as u64)?;
                self.push(Value::Str(text.into()))
            }
            Op::BinUnicode => {
                let len = u32::from_le_bytes(self.array()?);
                self.unicode(len.into())
            }
            Op::ShortBinUnicode => {
                let [len] = self.array()?;
                self.unicode(len.into())
            }
            Op::BinUnicode8 => {
                let len = u64::from_le_bytes(self.array()?);
                self.unicode(len)
            }
            _ => unreachable!("step() sends only string opcodes here"),
        }
    }

    /// Bytes, bytearrays and out-of-band buffers (which a file cannot carry).
    #[inline]
    fn binary(&mut self) -> Result<()> {
        use Opcode as Op;
        match self.op {
            Op::BinBytes => {
                let len = u32::from_le_bytes(self.array()?);
                let payload = self.payload(len.into())?;
                self.push(Value::Bytes(payload.into()))
            }
            Op::ShortBinBytes => {
                let [len] = self.array()?;
                let payload = self.payload(len.into())?;
                self.push(Value::Bytes(payload.into()))
            }
            Op::BinBytes8 => {
                let len = u64::from_le_bytes(self.array()?);
                let payload = self.payload(len)?;
                self.push(Value::Bytes(payload.into()))
            }
            Op::ByteArray8 => {
                let len = u64::from_le_bytes(self.array()?);
                let payload = self.payload(len)?;
                let v = self.alloc(Obj::ByteArray(payload.to_vec()), 0)?;
                self.push(v)
            }
            Op::NextBuffer | Op::ReadonlyBuffer => Err(PickleError::Unsupported {
                opcode: self.op.name(),
                offset: self.at as u64,
            }),
            _ => unreachable!("step() sends only binary opcodes here"),
        }
    }

    /// Building tuples, lists, dicts and sets, and adding to them.
    #[inline]
    fn container(&mut self) -> Result<()> {
        use Opcode as Op;
        match self.op {
            Op::EmptyTuple => self.new_container(Obj::Tuple(Vec::new()), 0),
            Op::EmptyList => self.new_container(Obj::List(Vec::new()), 0),
            Op::EmptyDict => self.new_container(Obj::Dict(Vec::new()), 0),
            Op::EmptySet => self.new_container(Obj::Set(Vec::new()), 0),
            Op::Tuple1 => self.tuple_of(1),
            Op::Tuple2 => self.tuple_of(2),
            Op::Tuple3 => self.tuple_of(3),
            Op::Tuple => {
                let items = self.pop_mark()?;
                let n = items.len();
                self.new_container(Obj::Tuple(items), n)
            }
            Op::List => {
                let items = self.pop_mark()?;
                let n = items.len();
                self.new_container(Obj::List(items), n)
            }
            Op::FrozenSet => {
                let items = self.pop_mark()?;
                let n = items.len();
                self.new_container(Obj::FrozenSet(items), n)
            }
            Op::Dict => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                let n = pairs.len();
                self.new_container(Obj::Dict(pairs), n)
            }
            Op::Append => {
                let item = self.pop()?;
                self.append(vec![item])
            }
            Op::Appends => {
                let items = self.pop_mark()?;
                self.append(items)
            }
            Op::SetItem => {
                let value = self.pop()?;
                let key = self.pop()?;
                self.set_items(vec![(key, value)])
            }
            Op::SetItems => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.set_items(pairs)
            }
            Op::AddItems => {
                let items = self.pop_mark()?;
                self.add_items(items)
            }
            _ => unreachable!("step() sends only container opcodes here"),
        }
    }

    /// The memo: storing and fetching values by key.
    #[inline]
    fn memo_access(&mut self) -> Result<()> {
        use Opcode as Op;
        match self.op {
            Op::Put => {
                let key = literal::memo_key(self.line()?).map_err(|w| self.invalid(w))?;
                self.memo_put(key)
            }
            Op::BinPut => {
                let [key] = self.array()?;
                self.memo_put(key.into())
            }
            Op::LongBinPut => {
                let key = u32::from_le_bytes(self.array()?);
                self.memo_put(key.into())
            }
            Op::Memoize => self.memo_put(self.memo.len() as u64),
            Op::Get => {
                let key = literal::memo_key(self.line()?).map_err(|w| self.invalid(w))?;
                self.memo_get(key)
            }
            Op::BinGet => {
                let [key] = self.array()?;
                self.memo_get(key.into())
            }
            Op::LongBinGet => {
                let key = u32::from_le_bytes(self.array()?);
                self.memo_get(key.into())
            }
            _ => unreachable!("step() sends only memo_access opcodes here"),
        }
    }

    /// Names of outside objects: globals, extension codes and persistent ids. Recorded, never
    /// imported.
    #[inline]
    fn reference(&mut self) -> Result<()> {
        use Opcode as Op;
        match self.op {
            Op::Global => {
                let global = self.global_lines()?;
                let v = self.global(global)?;
                self.push(v)
            }
            Op::StackGlobal => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Value::Str(module), Value::Str(name)) = (module, name) else {
                    return Err(self.invalid("module and name must both be str".into()));
                };
                let v = self.global(Global {
                    module: module.to_string(),
                    name: name.to_string(),
                })?;
                self.push(v)
            }
            Op::Ext1 => {
                let [code] = self.array()?;
                self.extension(code.into())
            }
            Op::Ext2 => {
                let code = u16::from_le_bytes(self.array()?);
                self.extension(code.into())
            }
            Op::Ext4 => {
                let code = i32::from_le_bytes(self.array()?);
                self.extension(code.into())
            }
            Op::PersId => {
                // pickle.py: "persistent IDs in protocol 0 must be ASCII strings".
                let line = self.line()?;
                if !line.is_ascii() {
                    return Err(self.invalid("persistent id is not ASCII".into()));
                }
                let pid = String::from_utf8_lossy(line);
                self.charge_bytes(line.len() as u64)?;
                let v = self.alloc(Obj::PersistentId(Value::Str(pid.into())), 0)?;
                self.push(v)
            }
            Op::BinPersId => {
                let pid = self.pop()?;
                let v = self.alloc(Obj::PersistentId(pid), 0)?;
                self.push(v)
            }
            _ => unreachable!("step() sends only reference opcodes here"),
        }
    }

    /// Calls and object construction: recorded, never performed.
    #[inline]
    fn construct(&mut self) -> Result<()> {
        use Opcode as Op;
        match self.op {
            Op::Reduce => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.record(&callable, Usage::Called)?;
                self.instance(callable, Construct::Reduce, args, None)
            }
            Op::NewObj => {
                let args = self.pop()?;
                let class = self.pop()?;
                self.record(&class, Usage::Instantiated)?;
                self.instance(class, Construct::NewObj, args, None)
            }
            Op::NewObjEx => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let class = self.pop()?;
                self.record(&class, Usage::Instantiated)?;
                self.instance(class, Construct::NewObjEx, args, Some(kwargs))
            }
            Op::Inst => {
                // pickletools: INST, the class is named inline and its args sit above a mark.
                let global = self.global_lines()?;
                let items = self.pop_mark()?;
                let class = self.global(global)?;
                self.record(&class, Usage::Instantiated)?;
                let n = items.len();
                let args = self.alloc(Obj::Tuple(items), n)?;
                self.instance(class, Construct::Inst, args, None)
            }
            Op::Obj => {
                // pickletools: OBJ, the class is the first value above the mark.
                let mut items = self.pop_mark()?.into_iter();
                let class = items.next().ok_or_else(|| self.underflow())?;
                let items: Vec<Value> = items.collect();
                self.record(&class, Usage::Instantiated)?;
                let n = items.len();
                let args = self.alloc(Obj::Tuple(items), n)?;
                self.instance(class, Construct::Obj, args, None)
            }
            Op::Build => {
                let state = self.pop()?;
                self.build(state)
            }
            _ => unreachable!("step() sends only construct opcodes here"),
        }
    }

    /// Protocol and framing.
    #[inline]
    fn framing(&mut self) -> Result<()> {
        use Opcode as Op;
        match self.op {
            Op::Proto => {
                let [proto] = self.array()?;
                if proto > HIGHEST_PROTOCOL {
                    return Err(self.invalid(format!("unsupported pickle protocol {proto}")));
                }
                self.protocol = Some(proto);
                Ok(())
            }
            Op::Frame => {
                // pickletools: FRAME, a length hint for buffered reading; it carries no value, but
                // a frame longer than the input means the input was cut short.
                let len = u64::from_le_bytes(self.array()?);
                let remaining = self.remaining();
                if len > remaining as u64 {
                    return Err(self.truncated(len, remaining));
                }
                Ok(())
            }
            _ => unreachable!("step() sends only framing opcodes here"),
        }
    }

    // ---- Reading the input -------------------------------------------------------------------

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn truncated(&self, needed: u64, remaining: usize) -> PickleError {
        PickleError::Truncated {
            opcode: self.op.name(),
            offset: self.pos as u64,
            needed,
            remaining: remaining as u64,
        }
    }

    /// The next `len` bytes; `len` comes from the file, so it is checked before anything else.
    fn take(&mut self, len: u64) -> Result<&'a [u8]> {
        let remaining = self.remaining();
        let end = usize::try_from(len)
            .ok()
            .filter(|&n| n <= remaining)
            .and_then(|n| self.pos.checked_add(n))
            .ok_or_else(|| self.truncated(len, remaining))?;
        let data = self.data;
        let bytes = data.get(self.pos..end).ok_or_else(|| self.truncated(len, remaining))?;
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N as u64)?;
        let remaining = bytes.len();
        bytes.try_into().map_err(|_| self.truncated(N as u64, remaining))
    }

    /// A text argument: the bytes up to the next newline, which is consumed.
    fn line(&mut self) -> Result<&'a [u8]> {
        let data = self.data;
        let rest = data.get(self.pos..).unwrap_or_default();
        let unterminated = PickleError::Unterminated {
            opcode: self.op.name(),
            offset: self.pos as u64,
        };
        let newline = rest.iter().position(|&b| b == b'\n').ok_or(unterminated.clone())?;
        let line = rest.get(..newline).ok_or(unterminated)?;
        self.pos += newline + 1;
        Ok(line)
    }

    /// A signed 4-byte length (BINSTRING, LONG4); CPython rejects negative ones.
    fn signed_len(&mut self) -> Result<u64> {
        let len = i32::from_le_bytes(self.array()?);
        u64::try_from(len).map_err(|_| self.invalid(format!("negative length {len}")))
    }

    /// A str/bytes payload: checked against the input first, then charged to max_bytes.
    fn payload(&mut self, len: u64) -> Result<&'a [u8]> {
        let bytes = self.take(len)?;
        self.charge_bytes(len)?;
        Ok(bytes)
    }

    /// BINUNICODE and friends: UTF-8 with CPython's 'surrogatepass' (see [`literal::utf8_surrogatepass`]).
    fn unicode(&mut self, len: u64) -> Result<()> {
        let payload = self.payload(len)?;
        let text = literal::utf8_surrogatepass(payload).map_err(|w| self.invalid(w))?;
        let v = Value::Str(text.into());
        self.push(v)
    }

    /// LONG1/LONG4: a little-endian two's complement integer of `len` bytes.
    fn long(&mut self, len: u64) -> Result<()> {
        let payload = self.payload(len)?;
        self.push(literal::int_from_le(payload))
    }

    /// GLOBAL and INST name their global on two lines, module then name.
    fn global_lines(&mut self) -> Result<Global> {
        let module = self.line()?;
        let module = std::str::from_utf8(module)
            .map_err(|_| self.invalid("module name is not UTF-8".into()))?
            .to_owned();
        let name = self.line()?;
        let name = std::str::from_utf8(name)
            .map_err(|_| self.invalid("global name is not UTF-8".into()))?
            .to_owned();
        Ok(Global { module, name })
    }

    // ---- The stack ----------------------------------------------------------------------------

    fn invalid(&self, what: String) -> PickleError {
        PickleError::Invalid {
            opcode: self.op.name(),
            what,
            offset: self.at as u64,
        }
    }

    fn underflow(&self) -> PickleError {
        PickleError::StackUnderflow {
            opcode: self.op.name(),
            offset: self.at as u64,
        }
    }

    fn limit(&self, what: &'static str, limit: u64) -> PickleError {
        PickleError::LimitExceeded {
            what,
            limit,
            offset: self.at as u64,
        }
    }

    /// The one way values get onto the stack; enforces max_stack.
    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() + self.marks.len() >= self.limits.max_stack {
            return Err(self.limit(STACK, self.limits.max_stack as u64));
        }
        self.stack.push(v);
        Ok(())
    }

    fn push_mark(&mut self) -> Result<()> {
        if self.marks.len() >= self.limits.max_marks {
            return Err(self.limit(MARKS, self.limits.max_marks as u64));
        }
        if self.stack.len() + self.marks.len() >= self.limits.max_stack {
            return Err(self.limit(STACK, self.limits.max_stack as u64));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    /// Values below the topmost mark are out of reach, as in CPython.
    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.fence() {
            return Err(self.underflow());
        }
        self.stack.pop().ok_or_else(|| self.underflow())
    }

    fn top(&self) -> Result<&Value> {
        if self.stack.len() <= self.fence() {
            return Err(self.underflow());
        }
        self.stack.last().ok_or_else(|| self.underflow())
    }

    /// POP discards the topmost mark when nothing is above it (pickle.py's load_pop).
    fn pop_value_or_mark(&mut self) -> Result<()> {
        if self.marks.last() == Some(&self.stack.len()) {
            self.marks.pop();
            Ok(())
        } else {
            self.pop().map(drop)
        }
    }

    /// Removes the topmost mark and returns the values above it, in stack order.
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or(PickleError::NoMark {
            opcode: self.op.name(),
            offset: self.at as u64,
        })?;
        if mark > self.stack.len() {
            return Err(self.underflow());
        }
        Ok(self.stack.split_off(mark))
    }

    fn pairs(&self, items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.invalid(format!("odd number of values ({}) for key/value pairs", items.len())));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            pairs.push((k, v));
        }
        Ok(pairs)
    }

    // ---- The memo -----------------------------------------------------------------------------

    /// Stores the stack top; an object is shared, so later mutations show through every GET.
    fn memo_put(&mut self, key: u64) -> Result<()> {
        let v = self.top()?.clone();
        if self.memo.len() >= self.limits.max_memo && self.memo.get(key).is_none() {
            return Err(self.limit(MEMO, self.limits.max_memo as u64));
        }
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<()> {
        let v = self.memo.get(key).cloned().ok_or(PickleError::MemoMissing {
            key,
            offset: self.at as u64,
        })?;
        self.push(v)
    }

    // ---- The heap -----------------------------------------------------------------------------

    fn charge_objects(&mut self, n: usize) -> Result<()> {
        let total = self.objects.saturating_add(n as u64);
        if total > self.limits.max_objects as u64 {
            return Err(self.limit(OBJECTS, self.limits.max_objects as u64));
        }
        self.objects = total;
        Ok(())
    }

    fn charge_bytes(&mut self, n: u64) -> Result<()> {
        let total = self.bytes.saturating_add(n);
        if total > self.limits.max_bytes {
            return Err(self.limit(BYTES, self.limits.max_bytes));
        }
        self.bytes = total;
        Ok(())
    }

    /// The one place heap objects are made: charges the object and its `items` to max_objects.
    fn alloc(&mut self, obj: Obj, items: usize) -> Result<Value> {
        self.charge_objects(items.saturating_add(1))?;
        // ObjId is a u32.
        if self.heap.len() >= u32::MAX as usize {
            return Err(self.limit(OBJECTS, u32::MAX.into()));
        }
        Ok(Value::Obj(self.heap.alloc(obj)))
    }

    fn new_container(&mut self, obj: Obj, items: usize) -> Result<()> {
        let v = self.alloc(obj, items)?;
        self.push(v)
    }

    fn tuple_of(&mut self, n: usize) -> Result<()> {
        if self.stack.len() < self.fence().saturating_add(n) {
            return Err(self.underflow());
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.new_container(Obj::Tuple(items), n)
    }

    /// What a value is, for messages.
    fn kind(&self, v: &Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Obj(id) => match self.heap.get(*id) {
                Obj::Tuple(_) => "tuple",
                Obj::List(_) => "list",
                Obj::Dict(_) => "dict",
                Obj::Set(_) => "set",
                Obj::FrozenSet(_) => "frozenset",
                Obj::ByteArray(_) => "bytearray",
                Obj::Global(_) => "global",
                Obj::Instance(_) => "instance",
                Obj::PersistentId(_) => "persistent id",
            },
        }
    }

    /// The heap object at the stack top, which APPEND/SETITEM/ADDITEMS/BUILD modify in place.
    fn target(&mut self) -> Result<(&mut Obj, &'static str)> {
        let top = self.top()?.clone();
        let kind = self.kind(&top);
        match top {
            Value::Obj(id) => Ok((self.heap.get_mut(id), kind)),
            _ => Err(self.invalid(format!("cannot modify a {kind}"))),
        }
    }

    fn wrong_target(&self, kind: &str, expected: &str) -> PickleError {
        self.invalid(format!("target is a {kind}, expected {expected}"))
    }

    /// APPEND/APPENDS: onto a list, or into the list items of an instance (a list subclass).
    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        self.charge_objects(items.len())?;
        let kind = match self.target()? {
            (Obj::List(list), _) => {
                list.extend(items);
                return Ok(());
            }
            (Obj::Instance(inst), _) => {
                inst.list_items.extend(items);
                return Ok(());
            }
            (_, kind) => kind,
        };
        Err(self.wrong_target(kind, "a list or an instance"))
    }

    /// SETITEM/SETITEMS: into a dict, or into the dict items of an instance (OrderedDict).
    fn set_items(&mut self, pairs: Vec<(Value, Value)>) -> Result<()> {
        self.charge_objects(pairs.len())?;
        let kind = match self.target()? {
            (Obj::Dict(dict), _) => {
                dict.extend(pairs);
                return Ok(());
            }
            (Obj::Instance(inst), _) => {
                inst.dict_items.extend(pairs);
                return Ok(());
            }
            (_, kind) => kind,
        };
        Err(self.wrong_target(kind, "a dict or an instance"))
    }

    /// ADDITEMS: into a set.
    fn add_items(&mut self, items: Vec<Value>) -> Result<()> {
        self.charge_objects(items.len())?;
        let kind = match self.target()? {
            (Obj::Set(set), _) => {
                set.extend(items);
                return Ok(());
            }
            (_, kind) => kind,
        };
        Err(self.wrong_target(kind, "a set"))
    }

    /// BUILD: sets the state of the instance at the stack top (the last BUILD wins).
    fn build(&mut self, state: Value) -> Result<()> {
        let callable = match self.target()? {
            (Obj::Instance(inst), _) => {
                inst.state = Some(state);
                inst.callable.clone()
            }
            (_, kind) => {
                let e = self.wrong_target(kind, "an instance");
                return Err(e);
            }
        };
        self.record(&callable, Usage::Built)
    }

    /// Makes a global object and records that it was referenced.
    fn global(&mut self, global: Global) -> Result<Value> {
        let len = global.module.len().saturating_add(global.name.len());
        self.charge_bytes(len as u64)?;
        let v = self.alloc(Obj::Global(global), 0)?;
        self.record(&v, Usage::Referenced)?;
        Ok(v)
    }

    /// EXT1/2/4: the extension registry is unknown here, so the code is kept in the name.
    fn extension(&mut self, code: i64) -> Result<()> {
        if code <= 0 {
            // pickle.py: "EXT specifies code <= 0".
            return Err(self.invalid(format!("extension code {code} <= 0")));
        }
        let v = self.global(Global {
            module: "copyreg".into(),
            name: format!("extension_{code}"),
        })?;
        self.push(v)
    }

    /// Logs a use of `callable` if it is a global; each use counts toward max_objects, since a
    /// stream of BUILDs on one instance would otherwise grow the log without growing the heap.
    fn record(&mut self, callable: &Value, usage: Usage) -> Result<()> {
        let Some(global) = self.heap.global(callable).cloned() else {
            return Ok(());
        };
        self.charge_objects(1)?;
        self.globals.push(GlobalUse {
            global,
            usage,
            offset: self.at as u64,
        });
        Ok(())
    }

    fn instance(&mut self, callable: Value, construct: Construct, args: Value, kwargs: Option<Value>) -> Result<()> {
        let inst = Instance {
            callable,
            construct,
            args,
            kwargs,
            state: None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        };
        self.new_container(Obj::Instance(Box::new(inst)), 0)
    }
}

/// The memo. Picklers number entries 0, 1, 2, ... in order, so keys that arrive in sequence go
/// to a vector that grows one entry per PUT, and any other key to a map. Nothing is ever
/// allocated according to a key's size (LONG_BINPUT 0xffffffff is one map entry), each key lives
/// in exactly one of the two, and the vector keeps a big pickle's memo cache-friendly (a map of
/// millions of random-hashed entries costs about half of the parse time).
#[derive(Default)]
struct Memo {
    dense: Vec<Value>,
    sparse: HashMap<u64, Value>,
}

impl Memo {
    fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }

    fn get(&self, key: u64) -> Option<&Value> {
        match usize::try_from(key).ok().and_then(|k| self.dense.get(k)) {
            Some(v) => Some(v),
            None => self.sparse.get(&key),
        }
    }

    fn insert(&mut self, key: u64, v: Value) {
        let dense_len = self.dense.len() as u64;
        if let Some(slot) = usize::try_from(key).ok().and_then(|k| self.dense.get_mut(k)) {
            *slot = v;
        } else if key == dense_len {
            // The key may have arrived out of order earlier; it moves to the vector.
            if !self.sparse.is_empty() {
                self.sparse.remove(&key);
            }
            self.dense.push(v);
        } else {
            self.sparse.insert(key, v);
        }
    }
}

/// A Python 2 `str` (STRING, BINSTRING): text when it is UTF-8, bytes otherwise.
fn py2_str(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::Str(text.into()),
        Err(_) => Value::Bytes(bytes.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::super::literal::*;
    use super::*;

    fn big(v: &Value) -> Vec<u8> {
        match v {
            Value::BigInt(b) => b.to_vec(),
            other => panic!("expected a big int, got {other:?}"),
        }
    }

    #[test]
    fn decimal_ints_of_all_sizes() {
        assert_eq!(python_int(b"0"), Ok(Value::Int(0)));
        assert_eq!(python_int(b"-0"), Ok(Value::Int(0)));
        assert_eq!(python_int(b" +42 "), Ok(Value::Int(42)));
        assert_eq!(python_int(b"9223372036854775807"), Ok(Value::Int(i64::MAX)));
        assert_eq!(python_int(b"-9223372036854775808"), Ok(Value::Int(i64::MIN)));
        // 2**63 = 00 .. 80 00 (sign byte needed); -2**63-1 = ff .. 7f ff.
        assert_eq!(
            big(&python_int(b"9223372036854775808").unwrap()),
            [0, 0, 0, 0, 0, 0, 0, 0x80, 0]
        );
        assert_eq!(
            big(&python_int(b"-9223372036854775809").unwrap()),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff]
        );
        // 2**100 = 1267650600228229401496703205376
        let mut expected = vec![0u8; 12];
        expected.push(0x10);
        assert_eq!(big(&python_int(b"1267650600228229401496703205376").unwrap()), expected);
        assert!(python_int(b"12a").is_err());
        assert!(python_int(b"").is_err());
        assert!(python_int(b"-").is_err());
        assert!(python_int(&[b'9'; 4301]).is_err());
    }

    #[test]
    fn le_ints_are_trimmed_and_sign_extended() {
        assert_eq!(int_from_le(&[]), Value::Int(0));
        assert_eq!(int_from_le(&[0xff]), Value::Int(-1));
        assert_eq!(int_from_le(&[0xff, 0x00]), Value::Int(255));
        assert_eq!(int_from_le(&[0x00, 0x80]), Value::Int(-32768));
        assert_eq!(int_from_le(&[0xff; 20]), Value::Int(-1));
        assert_eq!(int_from_le(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Value::Int(1));
        assert_eq!(big(&int_from_le(&[0, 0, 0, 0, 0, 0, 0, 0, 1])).len(), 9);
    }

    #[test]
    fn python_string_escapes() {
        assert_eq!(
            python_string(br#"'a\\b\'c\"d\n\r\t\x41\101\0\q'"#).unwrap(),
            b"a\\b'c\"d\n\r\tAA\0\\q"
        );
        assert_eq!(python_string(b"\"dq\"").unwrap(), b"dq");
        assert!(python_string(b"'unterminated").is_err());
        assert!(python_string(b"'").is_err());
        assert!(python_string(b"'bad \\x4'").is_err());
        assert!(python_string(b"'trailing \\'").is_err());
    }

    #[test]
    fn raw_unicode_escape_decoding() {
        assert_eq!(raw_unicode_escape(b"a\\u00e9\\U0001f600").unwrap(), "aé😀");
        // Latin-1 bytes are code points; non-u escapes stay as written.
        assert_eq!(raw_unicode_escape(b"\xe9\\n").unwrap(), "é\\n");
        // A backslash pair is literal, so the u after it is not an escape.
        assert_eq!(raw_unicode_escape(b"\\\\u0041").unwrap(), "\\\\u0041");
        assert_eq!(raw_unicode_escape(b"\\ud83d\\ude00").unwrap(), "😀");
        // A lone surrogate, which CPython keeps, becomes U+FFFD rather than an error.
        assert_eq!(raw_unicode_escape(b"a\\ud83dz").unwrap(), "a\u{fffd}z");
        assert!(raw_unicode_escape(b"\\u12").is_err());
        assert!(raw_unicode_escape(b"\\U00110000").is_err());
    }

    #[test]
    fn memo_keeps_each_key_in_one_place_and_never_allocates_by_key() {
        let mut memo = Memo::default();
        memo.insert(0xffff_ffff, Value::Int(1));
        assert!(memo.dense.is_empty(), "a scattered key must not grow the vector");
        memo.insert(1, Value::Int(2)); // out of order: map
        memo.insert(0, Value::Int(3)); // in order: vector
        memo.insert(1, Value::Int(4)); // now in order: moves from the map to the vector
        assert_eq!(memo.len(), 3);
        assert_eq!(memo.dense.len(), 2);
        assert_eq!(memo.sparse.len(), 1);
        assert_eq!(memo.get(1), Some(&Value::Int(4)));
        assert_eq!(memo.get(0xffff_ffff), Some(&Value::Int(1)));
        assert_eq!(memo.get(2), None);
        memo.insert(0, Value::Int(5)); // overwrite in place
        assert_eq!(memo.get(0), Some(&Value::Int(5)));
        assert_eq!(memo.len(), 3);
    }

    #[test]
    fn binunicode_accepts_surrogates_as_cpython_does() {
        // 'surrogatepass': ED A0 80 is U+D800 encoded; CPython accepts it, so must the machine.
        assert_eq!(utf8_surrogatepass(b"a\xed\xa0\x80b").unwrap(), "a\u{fffd}b");
        assert_eq!(utf8_surrogatepass(b"\xed\xbf\xbf").unwrap(), "\u{fffd}");
        assert_eq!(utf8_surrogatepass("é".as_bytes()).unwrap(), "é");
        assert!(utf8_surrogatepass(b"a\xffb").is_err());
        assert!(utf8_surrogatepass(b"\xed\xa0").is_err());
        // PROTO 2, BINUNICODE of a lone surrogate, STOP.
        let p = parse(b"\x80\x02X\x03\x00\x00\x00\xed\xb2\x80.", &Limits::default()).unwrap();
        assert_eq!(p.root, Value::Str("\u{fffd}".into()));
        // SHORT_BINUNICODE and BINUNICODE8 too.
        assert!(parse(b"\x80\x04\x8c\x03\xed\xa0\x80.", &Limits::default()).is_ok());
        assert!(parse(b"\x80\x04\x8d\x03\0\0\0\0\0\0\0\xed\xa0\x80.", &Limits::default()).is_ok());
    }

    #[test]
    fn partial_parse_keeps_the_calls_before_the_error() {
        // REDUCE of mylib.fn, then an unknown opcode: the call is recorded before the failure.
        let err = parse_partial(b"\x80\x02cmylib\nfn\n)R\xff", &Limits::default()).unwrap_err();
        assert!(matches!(
            err.error,
            PickleError::UnknownOpcode { byte: 0xff, offset: 14 }
        ));
        assert!(err
            .globals
            .iter()
            .any(|u| u.usage == Usage::Called && u.global.is("mylib", "fn")));
        assert_eq!(err.protocol, Some(2));
        assert!(err.heap.len() >= 3);
    }

    #[test]
    fn memo_keys_and_floats() {
        assert_eq!(memo_key(b"12"), Ok(12));
        assert!(memo_key(b"-1").is_err());
        assert!(memo_key(b"99999999999999999999999").is_err());
        assert_eq!(float(b"1e+300"), Ok(1e300));
        assert_eq!(float(b"-inf"), Ok(f64::NEG_INFINITY));
        assert!(float(b"nan").unwrap().is_nan());
        assert!(float(b"one").is_err());
    }
}
