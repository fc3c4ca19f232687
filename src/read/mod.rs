//! Readers: every checkpoint kind becomes one [`Checkpoint`]. The kind is decided by the
//! file's content, never its extension.

pub mod decode;
pub mod flatten;
pub mod legacy;
pub mod pth_zip;
pub mod safetensors;
pub mod script;
pub mod sharded;

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::{Checkpoint, Format, Origin, Storage};
use crate::pickle::{self, GlobalUse, Pickle};
use crate::source::Source;

/// Bounds on what reading a file may cost. The defaults fit the largest real checkpoints;
/// a library user reading untrusted files can tighten them.
#[derive(Debug, Clone)]
pub struct ReadLimits {
    pub pickle: pickle::Limits,
    pub decode: decode::DecodeLimits,
    /// Largest pickle record read into memory (data.pkl of a huge model is tens of MB).
    pub max_pickle_bytes: u64,
    pub max_zip_entries: usize,
    /// Largest `*.index.json` of a sharded checkpoint.
    pub max_index_bytes: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            pickle: pickle::Limits::default(),
            decode: decode::DecodeLimits::default(),
            max_pickle_bytes: 1 << 30,
            max_zip_entries: 1 << 20,
            max_index_bytes: 64 << 20,
        }
    }
}

/// Reads any checkpoint: a file of any supported kind, a sharded index, or a directory
/// holding one.
pub fn open(path: &Path) -> Result<Checkpoint> {
    open_with(path, &ReadLimits::default())
}

pub fn open_with(path: &Path, limits: &ReadLimits) -> Result<Checkpoint> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return sharded::read_dir(path, limits);
    }
    let source = Source::open(path)?;
    let bytes = source.bytes();
    if pth_zip::is_zip(bytes) {
        return pth_zip::read(source, limits);
    }
    if legacy::looks_like(bytes) {
        return legacy::read(source, limits);
    }
    if safetensors::looks_like(bytes) {
        return safetensors::read(source);
    }
    if bytes.first() == Some(&b'{') {
        return sharded::read_index(path, limits);
    }
    Err(Error::UnknownFormat {
        path: path.into(),
        why: describe_unknown(bytes),
    })
}

fn describe_unknown(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "the file is empty".into();
    }
    if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        return "a tar archive: the format of torch < 0.4, which ckpt does not read".into();
    }
    if bytes.first() == Some(&0x80) {
        return "a pickle that is neither a PyTorch legacy checkpoint nor inside a zip archive".into();
    }
    let head: String = bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!("unrecognised content (first bytes {head}); expected a PyTorch zip or legacy file, safetensors, or an index.json")
}

/// Parses one pickle record, naming the file and record in any error.
pub(crate) fn parse_pickle(path: &Path, record: &str, bytes: &[u8], limits: &ReadLimits) -> Result<Pickle> {
    pickle::parse(bytes, &limits.pickle).map_err(|e| Error::Pickle {
        path: path.into(),
        record: record.into(),
        source: e,
    })
}

/// Assembles a checkpoint from a decoded pickle: names tensors, collects metadata and globals.
pub(crate) fn finish(
    format: Format,
    origin: Origin,
    decoded: decode::Decoded,
    storages: Vec<Storage>,
    globals: &[GlobalUse],
) -> Checkpoint {
    let mut tensors = decoded.tensors;
    let metadata = flatten::flatten(&decoded.root, &mut tensors);
    Checkpoint {
        format,
        root: decoded.root,
        tensors,
        storages,
        metadata,
        globals: crate::model::Globals::from_uses(globals),
        origin,
    }
}
