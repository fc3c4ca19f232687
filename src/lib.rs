//! ckpt: read, inspect, rewrite and convert deep-learning checkpoints (PyTorch zip and legacy
//! formats, whole-model pickles, TorchScript archives, safetensors, sharded checkpoints) without
//! ever executing a pickle.
//!
//! The pipeline: a reader ([`read::open`]) produces a [`model::Checkpoint`]; commands work on it;
//! tensor data stays a byte range of the input file until something needs the bytes.

pub mod container;
pub mod diff;
pub mod dtype;
pub mod error;
pub mod inspect;
pub mod model;
pub mod pickle;
pub mod read;
pub mod record;
pub mod scan;
pub mod source;
pub mod tensor_data;
pub mod transform;
pub mod units;
#[cfg(feature = "tch")]
pub mod verify;
pub mod write;

pub use error::{Error, Result};
pub use model::Checkpoint;
