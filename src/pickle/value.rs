//! The value tree the pickle machine builds. Nothing here is ever executed: a call or an object
//! construction is recorded as an [`Instance`] (callable + arguments + state), so the torch layer
//! can recognise `torch._utils._rebuild_tensor_v2(...)` while anything unknown stays opaque.
//!
//! Compound values live in a [`Heap`] and are referred to by [`ObjId`], because pickles share and
//! mutate objects through the memo (an `OrderedDict` is memoized first and filled by SETITEMS
//! afterwards; a module object is memoized before BUILD sets its state). The heap is flat, so
//! deeply nested input never makes the machine recurse; consumers that walk it bound their depth.

use std::sync::Arc;

/// Index of an object in a [`Heap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjId(pub u32);

/// A pickle value. Scalars are inline; containers, globals and calls are heap objects.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in i64: little-endian two's complement bytes, as LONG1/LONG4 hold them.
    BigInt(Arc<[u8]>),
    Float(f64),
    Str(Arc<str>),
    Bytes(Arc<[u8]>),
    Obj(ObjId),
}

/// `module.name` of a GLOBAL, STACK_GLOBAL, INST or EXT opcode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Global {
    pub module: String,
    pub name: String,
}

impl Global {
    pub fn is(&self, module: &str, name: &str) -> bool {
        self.module == module && self.name == name
    }
    /// "module.name", the form users and allowlists use.
    pub fn dotted(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

/// How an [`Instance`] came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Construct {
    /// REDUCE: `callable(*args)`.
    Reduce,
    /// NEWOBJ: `cls.__new__(cls, *args)`.
    NewObj,
    /// NEWOBJ_EX: `cls.__new__(cls, *args, **kwargs)`.
    NewObjEx,
    /// INST (protocol 0): `module.name(*args)`.
    Inst,
    /// OBJ (protocol 0/1): `cls(*args)`.
    Obj,
}

/// A call or object construction the machine recorded instead of performing.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// What was called: usually a `Value::Obj` pointing at an [`Obj::Global`].
    pub callable: Value,
    pub construct: Construct,
    /// Positional arguments: a `Value::Obj` pointing at an [`Obj::Tuple`] (whatever the pickle supplied).
    pub args: Value,
    /// Keyword arguments of NEWOBJ_EX.
    pub kwargs: Option<Value>,
    /// The argument of BUILD (`__setstate__` / `__dict__` update); the last one wins if several.
    pub state: Option<Value>,
    /// Items added by APPEND/APPENDS (list subclasses).
    pub list_items: Vec<Value>,
    /// Items added by SETITEM/SETITEMS (dict subclasses such as OrderedDict).
    pub dict_items: Vec<(Value, Value)>,
}

/// A heap object.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Insertion order is kept; keys are not deduplicated (a later equal key is simply a later pair).
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    FrozenSet(Vec<Value>),
    ByteArray(Vec<u8>),
    Global(Global),
    /// Boxed: an Instance is large, and most heap objects are small containers.
    Instance(Box<Instance>),
    /// The argument of PERSID/BINPERSID: what torch's persistent_load would receive.
    PersistentId(Value),
}

/// Owner of every compound value of one pickle.
#[derive(Debug, Default, Clone)]
pub struct Heap {
    objs: Vec<Obj>,
}

impl Heap {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.objs.len()
    }
    #[cfg(feature = "internals")] // only the integration tests call it
    pub fn is_empty(&self) -> bool {
        self.objs.is_empty()
    }
    /// Adds an object; the caller (the machine) has checked its limits first.
    pub fn alloc(&mut self, obj: Obj) -> ObjId {
        let id = ObjId(self.objs.len() as u32);
        self.objs.push(obj);
        id
    }
    pub fn get(&self, id: ObjId) -> &Obj {
        &self.objs[id.0 as usize]
    }
    pub fn get_mut(&mut self, id: ObjId) -> &mut Obj {
        &mut self.objs[id.0 as usize]
    }
    /// The object a value points at, if it is a heap value.
    pub fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(id) => Some(self.get(*id)),
            _ => None,
        }
    }
    pub fn global(&self, v: &Value) -> Option<&Global> {
        match self.obj(v)? {
            Obj::Global(g) => Some(g),
            _ => None,
        }
    }
    pub fn tuple(&self, v: &Value) -> Option<&[Value]> {
        match self.obj(v)? {
            Obj::Tuple(items) => Some(items),
            _ => None,
        }
    }
    pub fn instance(&self, v: &Value) -> Option<&Instance> {
        match self.obj(v)? {
            Obj::Instance(i) => Some(i),
            _ => None,
        }
    }
    /// The global an instance was made from, if its callable is one.
    pub fn instance_global(&self, inst: &Instance) -> Option<&Global> {
        self.global(&inst.callable)
    }
}

/// What a pickle did with a global; every occurrence is recorded for the scanner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Usage {
    /// Named by GLOBAL / STACK_GLOBAL / EXT*, whatever happens to it afterwards.
    Referenced,
    /// Called by REDUCE.
    Called,
    /// Instantiated by NEWOBJ / NEWOBJ_EX / INST / OBJ.
    Instantiated,
    /// Given state by BUILD (after it was instantiated or called).
    Built,
}

/// One use of a global, with the byte offset of the opcode that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalUse {
    pub global: Global,
    pub usage: Usage,
    pub offset: u64,
}
