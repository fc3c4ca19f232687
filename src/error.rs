//! Typed errors of the library. Every variant names the file, and where it helps the record
//! inside it and the tensor, so a user can tell what is wrong and where.

use std::path::PathBuf;

use crate::pickle::PickleError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a checkpoint ckpt can read: {why}")]
    UnknownFormat { path: PathBuf, why: String },
    #[error("{path}: pickle {record}: {source}")]
    Pickle {
        path: PathBuf,
        record: String,
        #[source]
        source: PickleError,
    },
    #[error("{path}: {place}: {what}")]
    Malformed {
        path: PathBuf,
        /// Where in the file: a record, a tensor name, a byte offset.
        place: String,
        what: String,
    },
    #[error("{path}: invalid safetensors file: {source}")]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
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
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn malformed(path: impl Into<PathBuf>, place: impl Into<String>, what: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            place: place.into(),
            what: what.into(),
        }
    }
}
