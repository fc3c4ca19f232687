//! The saved items of a distributed checkpoint inside its `.distcp` files. torch's
//! FileSystemWriter (SerializationFormat.TORCH_SAVE, the default in 2.11 and 2.15) writes each
//! tensor chunk as a complete `torch.save` archive of the chunk at its offset, and each
//! non-tensor item as the bytes of a `torch.save` of the object (or a BytesIO's own bytes).

use std::path::Path;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{ByteOrder, Checkpoint, DataRef, Globals, Node};
use crate::read::{pth_zip, ReadLimits};
use crate::source::Source;

use super::metadata::StorageInfo;

/// Where a chunk lies, for messages: `chunk [0, 4] of 'model.w' (bytes 1641..3282)`.
pub fn describe(fqn: &str, offsets: Option<&[u64]>, info: &StorageInfo) -> String {
    let at = format!("bytes {}..{}", info.offset, info.offset.saturating_add(info.length));
    match offsets {
        Some(o) => format!("chunk {o:?} of '{fqn}' ({at})"),
        None => format!("item '{fqn}' ({at})"),
    }
}

/// Reads the torch.save archive at `info` in `source` and returns the bytes of the one tensor
/// it holds, which must be a contiguous little-endian `dtype` tensor of shape `sizes`, with the
/// archive's globals.
pub fn tensor_bytes(
    source: &Arc<Source>,
    info: &StorageInfo,
    place: &str,
    dtype: DType,
    sizes: &[u64],
    limits: &ReadLimits,
) -> Result<(DataRef, Globals)> {
    let path = source.path();
    let bad = |what: String| Error::malformed(path, place, what);
    let ckpt = read_archive(source, info, place, limits)?;
    let (Node::Tensor(idx), [t]) = (&ckpt.root, ckpt.tensors.as_slice()) else {
        return Err(bad("the archive does not hold exactly one tensor".into()));
    };
    debug_assert_eq!(*idx, 0);
    if t.dtype != dtype {
        return Err(bad(format!("the chunk is {} but .metadata says {dtype}", t.dtype)));
    }
    if t.shape != sizes {
        return Err(bad(format!("the chunk's shape is {:?} but .metadata says {sizes:?}", t.shape)));
    }
    if !t.is_contiguous() {
        return Err(Error::Unsupported {
            path: path.into(),
            what: format!("{place}: the saved chunk is a strided view (stride {:?}); DCP saves contiguous chunks", t.stride),
        });
    }
    let storage = &ckpt.storages[t.storage.0];
    if storage.byte_order != ByteOrder::Little {
        return Err(Error::Unsupported {
            path: path.into(),
            what: format!("{place}: a big-endian chunk"),
        });
    }
    let start = t.offset.checked_mul(dtype.size() as u64);
    let end = start.and_then(|s| s.checked_add(t.nbytes()));
    match (start, end) {
        (Some(start), Some(end)) if end <= storage.data.len => {
            let data = DataRef {
                source: source.clone(),
                offset: storage.data.offset + start,
                len: t.nbytes(),
            };
            Ok((data, ckpt.globals.clone()))
        }
        _ => Err(bad(format!(
            "the chunk's elements reach past its {}-byte storage",
            storage.data.len
        ))),
    }
}

/// A non-tensor item: the object a torch.save archive holds (if it holds no tensor), else a
/// description of the bytes; with the archive's globals.
pub fn item(source: &Arc<Source>, info: &StorageInfo, place: &str, limits: &ReadLimits) -> Result<(Node, Globals)> {
    let bytes = source
        .slice(info.offset, info.length)
        .ok_or_else(|| past_end(source.path(), place, source.len()))?;
    if !pth_zip::is_zip(bytes) {
        return Ok((Node::Opaque(format!("<{} bytes>", info.length)), Globals::default()));
    }
    let ckpt = read_archive(source, info, place, limits)?;
    let node = match ckpt.root {
        node if node.has_tensor() => Node::Opaque(format!(
            "<torch.save archive of {} bytes holding tensors>",
            info.length
        )),
        node => node,
    };
    Ok((node, ckpt.globals))
}

fn read_archive(source: &Arc<Source>, info: &StorageInfo, place: &str, limits: &ReadLimits) -> Result<Checkpoint> {
    let path = source.path();
    if crate::read::safetensors::looks_like(source.bytes()) {
        // FileSystemWriter(serialization_format=SAFETENSORS): one safetensors file per rank,
        // which torch's own FileSystemReader does not read back either.
        return Err(Error::Unsupported {
            path: path.into(),
            what: "a safetensors file (DCP's SerializationFormat.SAFETENSORS); ckpt reads DCP's default torch.save chunks".into(),
        });
    }
    if info.offset.checked_add(info.length).is_none_or(|end| end > source.len()) {
        return Err(past_end(path, place, source.len()));
    }
    let read = pth_zip::read_embedded(source.clone(), info.offset, info.length, limits);
    // The archive's headers and the end of its data were read through the map; the data itself
    // is read with positioned reads later, so the pages go (see Source::release).
    source.release(info.offset, info.length);
    read.map_err(|e| match e {
        Error::Malformed { path, place: inner, what } => Error::Malformed {
            path,
            place: format!("{place}: {inner}"),
            what,
        },
        Error::UnknownFormat { path, why } => Error::Malformed {
            path,
            place: place.into(),
            what: format!("not a torch.save archive: {why}"),
        },
        other => other,
    })
}

fn past_end(path: &Path, place: &str, len: u64) -> Error {
    Error::malformed(path, place, format!("lies past the end of the {len}-byte file"))
}
