//! Typed errors of the library. Every variant names the file, and where it helps the record
//! inside it and the tensor, so a user can tell what is wrong and where.

use std::path::PathBuf;

use crate::dtype::DType;

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
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is none of the kinds ckpt reads (or an ambiguous mix of them).
    #[error("{path}: not a checkpoint ckpt can read: {why}")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// What its content looked like.
        why: String,
    },
    /// A pickle record of the file could not be parsed, or it exceeded a [`crate::ReadLimits`]
    /// bound.
    #[error("{path}: pickle {record}: {source}")]
    Pickle {
        /// The file.
        path: PathBuf,
        /// The record of the file the pickle is (`archive/data.pkl`, a legacy file's object).
        record: String,
        /// What the pickle machine refused, with the opcode's offset.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file is of a known kind but its content is inconsistent (a view past its storage,
    /// a truncated record...).
    #[error("{path}: {place}: {what}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Where in the file: a record, a tensor name, a byte offset.
        place: String,
        /// What is inconsistent.
        what: String,
    },
    /// The safetensors crate rejected the header; the cause is boxed so that no other crate's
    /// error type is part of ckpt's API.
    #[error("{path}: invalid safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the safetensors crate said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file is valid but uses something ckpt does not handle.
    #[error("{path}: {what}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What ckpt does not handle.
        what: String,
    },
    /// The output exists and overwriting was not asked for.
    #[error("{path}: already exists (pass --force to overwrite it)")]
    Exists {
        /// The output.
        path: PathBuf,
    },
    /// The output is (or would replace) one of the inputs.
    #[error("{path}: refusing to write over an input of this conversion ({input})")]
    SameFile {
        /// The output.
        path: PathBuf,
        /// The input it is.
        input: PathBuf,
    },
    /// Writing an output failed; nothing was left at `path`.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The output.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A tensor the chosen output format cannot hold as it is.
    #[error("tensor '{tensor}': {why}")]
    Unwritable {
        /// The tensor's name.
        tensor: String,
        /// What the format cannot hold.
        why: String,
    },
    /// A tensor's elements were asked for as another element type than the tensor has.
    #[error("tensor '{tensor}' is {found}, not {expected}")]
    DTypeMismatch {
        /// The tensor's name.
        tensor: String,
        /// The dtype of the element type asked for.
        expected: DType,
        /// The tensor's dtype.
        found: DType,
    },
    /// Data given for a tensor does not hold as many elements as its shape says.
    #[error("tensor '{tensor}': shape {shape:?} holds {expected} elements but {found} were given")]
    ShapeMismatch {
        /// The tensor's name.
        tensor: String,
        /// The shape given.
        shape: Vec<u64>,
        /// The elements the shape holds.
        expected: u64,
        /// The elements given.
        found: u64,
    },
    /// A name given to a second tensor of the same checkpoint.
    #[error("tensor '{tensor}': the name is already taken")]
    DuplicateName {
        /// The name.
        tensor: String,
    },
    /// Writing a tensor's bytes to a caller's writer failed.
    #[error("tensor '{tensor}': cannot write its bytes: {source}")]
    Output {
        /// The tensor's name.
        tensor: String,
        /// What the writer said.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    /// An [`Error::Malformed`] for `path`.
    pub(crate) fn malformed(path: impl Into<PathBuf>, place: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            place: place.into(),
            what: what.into(),
        }
    }
}
