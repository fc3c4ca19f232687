//! safetensors output, byte for byte what `safetensors.torch.save_file` writes for the same
//! tensors and metadata: the header JSON lists `__metadata__` first, then the tensors ordered by
//! dtype alignment, largest first (the order of the `safetensors::Dtype` enum, reversed), then by
//! name; it is padded with spaces to a multiple of 8 bytes; the data follows in header order,
//! every tensor contiguous (views materialized).
//!
//! The one difference: the Python package writes `__metadata__` in hash-map order, which varies
//! from run to run; ckpt writes it sorted by key.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{Checkpoint, Format, TensorIdx};
use crate::tensor_data::for_each_chunk_with;
use crate::write::ahead::{read_ahead, Emitter};
use crate::write::context::{write_error, WriteCtx};

/// Blocks of tensor data at least this long are written to the file directly, not through the
/// writer's buffer.
const DIRECT: usize = 64 << 10;

/// The safetensors crate refuses headers larger than this.
const MAX_HEADER: usize = 100_000_000;

/// The safetensors dtype, whose enum order is the header order.
pub fn st_dtype(d: DType) -> Option<safetensors::Dtype> {
    use safetensors::Dtype as S;
    Some(match d {
        DType::F64 => S::F64,
        DType::F32 => S::F32,
        DType::F16 => S::F16,
        DType::BF16 => S::BF16,
        DType::F8E4M3Fn => S::F8_E4M3,
        DType::F8E5M2 => S::F8_E5M2,
        DType::F8E8M0Fnu => S::F8_E8M0,
        DType::F8E4M3Fnuz => S::F8_E4M3FNUZ,
        DType::F8E5M2Fnuz => S::F8_E5M2FNUZ,
        DType::I8 => S::I8,
        DType::I16 => S::I16,
        DType::I32 => S::I32,
        DType::I64 => S::I64,
        DType::U8 => S::U8,
        DType::U16 => S::U16,
        DType::U32 => S::U32,
        DType::U64 => S::U64,
        DType::Bool => S::BOOL,
        DType::C64 => S::C64,
        DType::C32 | DType::C128 => return None,
    })
}

/// What goes into one safetensors file.
pub(crate) struct Selection {
    /// Tensors to write, in checkpoint order.
    pub tensors: Vec<TensorIdx>,
    /// (dropped name, kept name) for exact duplicates left out by `dedupe`.
    pub dropped: Vec<(String, String)>,
}

/// The tensors to write: every tensor of the checkpoint under its name. With `dedupe`, of the
/// tensors that are exactly the same view of one storage (dtype, shape, stride and offset) only
/// the first is kept; views that differ are each written in full.
pub(crate) fn select(ckpt: &Checkpoint, dedupe: bool) -> Result<Selection> {
    let mut names: HashMap<&str, TensorIdx> = HashMap::new();
    type View<'a> = (usize, DType, &'a [u64], &'a [u64], u64);
    let mut views: HashMap<View, TensorIdx> = HashMap::new();
    let mut sel = Selection {
        tensors: Vec::new(),
        dropped: Vec::new(),
    };
    for (idx, t) in ckpt.tensors.iter().enumerate() {
        if t.dtype.safetensors_name().is_none() || st_dtype(t.dtype).is_none() {
            return Err(Error::Unwritable {
                tensor: t.name.clone(),
                why: format!(
                    "safetensors has no {} dtype; keep this checkpoint as .pth, or cast the tensor",
                    t.dtype
                ),
            });
        }
        if t.name == "__metadata__" {
            return Err(Error::Unwritable {
                tensor: t.name.clone(),
                why: "safetensors reserves this name for its metadata".into(),
            });
        }
        if names.insert(&t.name, idx).is_some() {
            return Err(Error::Unwritable {
                tensor: t.name.clone(),
                why: "two tensors have this name (safetensors names must be unique)".into(),
            });
        }
        if dedupe {
            let key = (t.storage.0, t.dtype, t.shape.as_slice(), t.stride.as_slice(), t.offset);
            if let Some(&kept) = views.get(&key) {
                sel.dropped.push((t.name.clone(), ckpt.tensors[kept].name.clone()));
                continue;
            }
            views.insert(key, idx);
        }
        sel.tensors.push(idx);
    }
    Ok(sel)
}

/// The checkpoint's metadata as safetensors `__metadata__` (str -> str): strings as they are,
/// other JSON values as their JSON text. The `total_size` of a sharded input's index is left
/// out (it describes the old shards). When ckpt creates the metadata from a torch pickle, it
/// adds `"format": "pt"`, as huggingface's converter does: transformers refuses safetensors
/// files whose metadata lacks it. The metadata of safetensors inputs is kept exactly.
pub(crate) fn metadata(ckpt: &Checkpoint) -> BTreeMap<String, String> {
    let mut meta = BTreeMap::new();
    for (k, v) in &ckpt.metadata {
        if ckpt.format == Format::Sharded && k == "total_size" {
            continue;
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        meta.insert(k.clone(), text);
    }
    let from_pickle = matches!(ckpt.format, Format::PthZip | Format::PthLegacy | Format::TorchScript);
    if from_pickle && !meta.is_empty() {
        meta.entry("format".into()).or_insert_with(|| "pt".into());
    }
    meta
}

/// Records dropped duplicates the way huggingface's `convert.py` does: one metadata entry per
/// dropped name, whose value is the name kept (an existing entry of that name is not replaced).
pub(crate) fn record_dropped(meta: &mut BTreeMap<String, String>, dropped: &[(String, String)]) {
    if dropped.is_empty() {
        return;
    }
    for (gone, kept) in dropped {
        meta.entry(gone.clone()).or_insert_with(|| kept.clone());
    }
    meta.entry("format".into()).or_insert_with(|| "pt".into());
}

/// Adds `--metadata KEY=VALUE` entries, over any the checkpoint has: the user's word wins.
pub(crate) fn add_user_metadata(meta: &mut BTreeMap<String, String>, extra: &[(String, String)]) {
    for (k, v) in extra {
        meta.insert(k.clone(), v.clone());
    }
}

/// The header, its 8-byte length in front, and the tensors in the order their data follows.
pub(crate) fn header(
    ckpt: &Checkpoint,
    tensors: &[TensorIdx],
    meta: &BTreeMap<String, String>,
) -> Result<(Vec<u8>, Vec<TensorIdx>)> {
    let mut order: Vec<TensorIdx> = tensors.to_vec();
    let key = |i: &TensorIdx| st_dtype(ckpt.tensors[*i].dtype);
    order.sort_by(|a, b| {
        key(b)
            .cmp(&key(a))
            .then_with(|| ckpt.tensors[*a].name.cmp(&ckpt.tensors[*b].name))
    });
    let js = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut h = String::from("{");
    let mut first = true;
    if !meta.is_empty() {
        h.push_str("\"__metadata__\":{");
        for (i, (k, v)) in meta.iter().enumerate() {
            if i > 0 {
                h.push(',');
            }
            h.push_str(&js(k));
            h.push(':');
            h.push_str(&js(v));
        }
        h.push('}');
        first = false;
    }
    let mut offset = 0u64;
    for &i in &order {
        let t = &ckpt.tensors[i];
        let name = t.dtype.safetensors_name().unwrap_or_default();
        let n = t
            .numel()
            .checked_mul(t.dtype.size() as u64)
            .ok_or_else(|| Error::Unwritable {
                tensor: t.name.clone(),
                why: "size overflows".into(),
            })?;
        if !first {
            h.push(',');
        }
        first = false;
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        h.push_str(&format!(
            "{}:{{\"dtype\":\"{name}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            js(&t.name),
            shape.join(","),
            offset + n
        ));
        offset += n;
    }
    h.push('}');
    let mut bytes = h.into_bytes();
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    if bytes.len() > MAX_HEADER {
        return Err(Error::Unwritable {
            tensor: ckpt
                .tensors
                .get(order.first().copied().unwrap_or(0))
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            why: format!(
                "the safetensors header would be {} bytes, more than readers accept ({MAX_HEADER})",
                bytes.len()
            ),
        });
    }
    let mut out = (bytes.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&bytes);
    Ok((out, order))
}

/// Bytes of tensor data the file will hold.
pub(crate) fn data_bytes(ckpt: &Checkpoint, tensors: &[TensorIdx]) -> u64 {
    tensors.iter().map(|&i| ckpt.tensors[i].nbytes()).sum()
}

/// Writes one safetensors file of `tensors` and `meta` into the context's file. Returns its size.
pub(crate) fn write_file(
    ckpt: &Checkpoint,
    tensors: &[TensorIdx],
    meta: &BTreeMap<String, String>,
    ctx: WriteCtx,
) -> Result<u64> {
    let WriteCtx {
        file,
        target,
        mut behind,
        reader,
        progress,
    } = ctx;
    let werr = write_error(target);
    let (head, order) = header(ckpt, tensors, meta)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&head).map_err(werr)?;
    let mut total = head.len() as u64;
    // Tensors are read (and cast) on another thread while this one writes.
    let produce = |emit: &mut Emitter| {
        for &i in &order {
            let t = &ckpt.tensors[i];
            let before = emit.sent();
            for_each_chunk_with::<Error>(reader, ckpt, t, emit)?;
            let n = emit.sent() - before;
            if n != t.nbytes() {
                return Err(Error::Unwritable {
                    tensor: t.name.clone(),
                    why: format!("streamed {n} bytes, expected {}", t.nbytes()),
                });
            }
        }
        Ok(())
    };
    read_ahead(produce, |chunk| {
        if chunk.len() >= DIRECT {
            // Past the buffer: a cast's half-size blocks would otherwise be copied into it.
            w.flush().map_err(werr)?;
            w.get_mut().write_all(chunk).map_err(werr)?;
        } else {
            w.write_all(chunk).map_err(werr)?;
        }
        total += chunk.len() as u64;
        progress.add(chunk.len() as u64);
        behind.poll(w.get_ref());
        Ok(())
    })?;
    w.flush().map_err(werr)?;
    Ok(total)
}
