//! Reading pickles without executing them.
//!
//! [`parse`] interprets the opcode stream of protocols 0-5 and builds a flat value tree
//! ([`value`]) in which calls and object constructions are records, never actions. Resource use
//! is bounded by [`Limits`], and no input makes it panic or recurse.

mod error;
mod literal;
mod machine;
pub mod opcode;
pub mod value;

pub use error::PickleError;
pub use machine::{parse, parse_partial, Limits, Partial, Pickle};
pub use opcode::Opcode;
pub use value::{Construct, Global, GlobalUse, Heap, Instance, Obj, ObjId, Usage, Value};
