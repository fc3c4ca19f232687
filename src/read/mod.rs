//! Readers: every checkpoint kind becomes one [`Checkpoint`]. The kind is decided by the
//! file's content, never its extension.

pub mod dcp;
pub mod decode;
pub mod flatten;
pub mod legacy;
pub mod pth_zip;
pub mod safetensors;
pub mod script;
pub mod sharded;
pub mod tar;
pub mod tarfile;
pub mod zero;

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::{Checkpoint, Format, Origin, Storage};
use crate::pickle::{self, GlobalUse, Pickle};
use crate::source::Source;

/// Bounds on what reading a file may cost. The defaults fit the largest real checkpoints;
/// a library user reading untrusted files can tighten them (start from `default()`; fields may
/// be added).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReadLimits {
    /// The pickle machine's bounds (memo, stack, objects); internal, like its types.
    #[doc(hidden)]
    pub pickle: pickle::Limits,
    /// Bounds of turning a parsed pickle into a checkpoint; internal, like its types.
    #[doc(hidden)]
    pub decode: decode::DecodeLimits,
    /// Largest pickle record read into memory (data.pkl of a huge model is tens of MB).
    pub max_pickle_bytes: u64,
    /// Most members of a zip archive.
    pub max_zip_entries: usize,
    /// Largest `*.index.json` of a sharded checkpoint.
    pub max_index_bytes: u64,
    /// Largest safetensors header (JSON) parsed, and how large it may be beside the tensor data
    /// it describes; internal, like its type.
    #[doc(hidden)]
    pub safetensors_header: safetensors::HeaderLimits,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits {
            pickle: pickle::Limits::default(),
            decode: decode::DecodeLimits::default(),
            max_pickle_bytes: 1 << 30,
            max_zip_entries: 1 << 20,
            max_index_bytes: 64 << 20,
            safetensors_header: safetensors::HeaderLimits::default(),
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
    let found = readings(bytes, limits).map_err(|e| Error::Unsupported {
        path: path.into(),
        what: format!("a tar archive ckpt cannot follow as Python's tarfile would: {e}"),
    })?;
    match found.as_slice() {
        [] if safetensors::looks_like(bytes) => safetensors::read(source, &limits.safetensors_header),
        [] if bytes.first() == Some(&b'{') => sharded::read_index(path, limits),
        [] => Err(Error::UnknownFormat {
            path: path.into(),
            why: describe_unknown(bytes),
        }),
        [Reading::Tar(members)] => tar::read(source.clone(), members, limits),
        [Reading::Pickle { legacy: true }] => legacy::read(source, limits),
        [Reading::Pickle { legacy: false }] if dcp::is_metadata(bytes, limits) => dcp::read(path, limits),
        [Reading::Pickle { legacy: false }] => Err(Error::UnknownFormat {
            path: path.into(),
            why: "a pickle that is neither a PyTorch legacy checkpoint nor inside a zip archive".into(),
        }),
        [Reading::Safetensors] => safetensors::read(source, &limits.safetensors_header),
        [Reading::Index] => sharded::read_index(path, limits),
        many => Err(Error::Unsupported {
            path: path.into(),
            what: format!(
                "ambiguous: the bytes are {}; torch.load takes the first reading, other loaders may take another, so ckpt refuses to pick one (run `ckpt scan` to judge every reading)",
                many.iter().map(Reading::name).collect::<Vec<_>>().join(" and also ")
            ),
        }),
    }
}

/// One way a loader can read a file that is not a zip.
#[derive(Debug)]
pub enum Reading {
    /// Python's tarfile opens it: torch.load reads the tar format of torch < 0.4.
    Tar(Vec<tarfile::Member>),
    /// A pickle from byte 0 (torch.load's legacy path unpickles it); `legacy` when its value
    /// is the legacy magic number.
    Pickle { legacy: bool },
    /// A valid safetensors header (safetensors.load_file).
    Safetensors,
    /// JSON with a weight_map (a sharded checkpoint's index).
    Index,
}

impl Reading {
    pub fn name(&self) -> &'static str {
        match self {
            Reading::Tar(_) => "a torch < 0.4 tar archive",
            Reading::Pickle { legacy: true } => "a legacy torch file (pickles from byte 0)",
            Reading::Pickle { legacy: false } => "a pickle from byte 0",
            Reading::Safetensors => "a safetensors file",
            Reading::Index => "a sharded checkpoint index",
        }
    }
}

/// Every reading that accepts `bytes` (not a zip), in the order torch.load tries them: tarfile,
/// then unpickling from byte 0; then the readings of other loaders. Err: tarfile accepts the
/// first header but does something ckpt does not mirror.
pub fn readings(bytes: &[u8], limits: &ReadLimits) -> std::result::Result<Vec<Reading>, tarfile::Unmirrored> {
    let mut found = Vec::new();
    if let tarfile::Open::Tar(members) = tarfile::open(bytes)? {
        found.push(Reading::Tar(members));
    }
    if let Ok(p) = pickle::parse(bytes, &limits.pickle) {
        found.push(Reading::Pickle {
            legacy: legacy::is_magic(&p.root),
        });
    }
    if safetensors::looks_like(bytes) && safetensors::parse_header(bytes, &limits.safetensors_header).is_ok() {
        found.push(Reading::Safetensors);
    }
    if bytes.first() == Some(&b'{') && bytes.len() as u64 <= limits.max_index_bytes && is_index(bytes) {
        found.push(Reading::Index);
    }
    Ok(found)
}

fn is_index(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|j| j.get("weight_map").is_some_and(serde_json::Value::is_object))
}

fn describe_unknown(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "the file is empty".into();
    }
    let head: String = bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    format!("unrecognised content (first bytes {head}); expected a PyTorch zip, tar or legacy file, safetensors, or an index.json")
}

/// Parses one pickle record, naming the file and record in any error.
pub(crate) fn parse_pickle(path: &Path, record: &str, bytes: &[u8], limits: &ReadLimits) -> Result<Pickle> {
    pickle::parse(bytes, &limits.pickle).map_err(|e| Error::Pickle {
        path: path.into(),
        record: record.into(),
        source: Box::new(e),
    })
}

/// Assembles a checkpoint from a decoded pickle: names tensors, collects metadata and globals.
pub(crate) fn finish(
    path: &Path,
    format: Format,
    origin: Origin,
    decoded: decode::Decoded,
    storages: Vec<Storage>,
    globals: &[GlobalUse],
) -> Checkpoint {
    let mut tensors = decoded.tensors;
    let mut metadata = flatten::flatten(&decoded.root, &mut tensors);
    flatten::add_notes(&mut metadata, &tensors, &decoded.notes);
    Checkpoint {
        format,
        root: decoded.root,
        tensors,
        storages,
        metadata,
        globals: crate::model::Globals::from_uses(globals),
        origin,
        files: vec![path.to_path_buf()],
        module_classes: decoded.module_classes,
        modules: decoded.modules,
        names: Default::default(),
    }
}
