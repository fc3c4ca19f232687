//! Typed errors of the library. Every variant names the file, and where it helps the record
//! inside it and the tensor, so a user can tell what is wrong and where.

use std::path::PathBuf;

use crate::dtype::DType;
use crate::pickle::PickleError;

/// `Result` with ckpt's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ckpt, one variant per kind. New kinds may be added, so a
/// `match` needs a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading an input failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is none of the kinds ckpt reads (or an ambiguous mix of them).
    #[error("{path}: not a checkpoint ckpt can read: {why}")]
    UnknownFormat { path: PathBuf, why: String },
    /// A pickle record of the file could not be parsed (or hit a [`crate::pickle::Limits`]).
    #[error("{path}: pickle {record}: {source}")]
    Pickle {
        path: PathBuf,
        record: String,
        #[source]
        source: PickleError,
    },
    /// The file is of a known kind but its content is inconsistent (a view past its storage,
    /// a truncated record...).
    #[error("{path}: {place}: {what}")]
    Malformed {
        path: PathBuf,
        /// Where in the file: a record, a tensor name, a byte offset.
        place: String,
        what: String,
    },
    /// The safetensors crate rejected the header; the cause is boxed so that no other crate's
    /// error type is part of ckpt's API.
    #[error("{path}: invalid safetensors file: {source}")]
    Safetensors {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file is valid but uses something ckpt does not handle.
    #[error("{path}: {what}")]
    Unsupported { path: PathBuf, what: String },
    /// The output exists and overwriting was not asked for.
    #[error("{path}: already exists (pass --force to overwrite it)")]
    Exists { path: PathBuf },
    /// The output is (or would replace) one of the inputs.
    #[error("{path}: refusing to write over an input of this conversion ({input})")]
    SameFile { path: PathBuf, input: PathBuf },
    /// Writing an output failed; nothing was left at `path`.
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tensor the chosen output format cannot hold as it is.
    #[error("tensor '{tensor}': {why}")]
    Unwritable { tensor: String, why: String },
    /// A tensor's elements were asked for as another element type than the tensor has.
    #[error("tensor '{tensor}' is {found}, not {expected}")]
    DTypeMismatch {
        tensor: String,
        expected: DType,
        found: DType,
    },
    /// Data given for a tensor does not hold as many elements as its shape says.
    #[error("tensor '{tensor}': shape {shape:?} holds {expected} elements but {found} were given")]
    ShapeMismatch {
        tensor: String,
        shape: Vec<u64>,
        expected: u64,
        found: u64,
    },
    /// A name given to a second tensor of the same checkpoint.
    #[error("tensor '{tensor}': the name is already taken")]
    DuplicateName { tensor: String },
    /// Writing a tensor's bytes to a caller's writer failed.
    #[error("tensor '{tensor}': cannot write its bytes: {source}")]
    Output {
        tensor: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// An [`Error::Malformed`] for `path`.
    pub fn malformed(path: impl Into<PathBuf>, place: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            place: place.into(),
            what: what.into(),
        }
    }
}
