//! PyTorch's zip format, as `torch.save` writes it: `PREFIX/data.pkl`, `.format_version` ("1"),
//! `.storage_alignment` ("64"), `byteorder` ("little"), one `data/<key>` record per storage
//! (keys "0", "1"... in order of first use, data little-endian with any pending cast applied,
//! 64-byte aligned), `version` ("3\n") and `.data/serialization_id`.
//!
//! The structure tree is written as it is (see [`super::pickler`]); each storage once,
//! so tied weights stay tied and views stay views of one storage.

use std::collections::HashMap;
use std::io::BufWriter;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{Checkpoint, Node, StorageId, TensorIdx};
use crate::tensor_data::for_each_storage_chunk_with;
use crate::write::context::{write_error, WriteCtx};
use crate::write::pickler::{self, StorageSpec};
use crate::write::zip::ZipWriter;

/// Knobs of the archive layout, for tests.
#[derive(Debug, Clone, Default)]
pub struct PthLayout {
    /// Zip64 fields on every record even when small.
    pub force_zip64: bool,
}

/// The record prefix torch would use when saving to `out`: the file name without its
/// extension, or "archive" when that is empty.
pub fn prefix_for(out: &Path) -> String {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if stem.is_empty() || stem.contains(['/', '\\']) {
        "archive".into()
    } else {
        stem
    }
}

/// Every tensor below `root`, in pickling order (depth first), each once.
pub(crate) fn tensors_in(root: &Node) -> Vec<TensorIdx> {
    fn walk(n: &Node, out: &mut Vec<TensorIdx>, seen: &mut std::collections::HashSet<TensorIdx>) {
        match n {
            Node::Tensor(i) if seen.insert(*i) => out.push(*i),
            Node::List(items) | Node::Tuple(items) => items.iter().for_each(|c| walk(c, out, seen)),
            Node::Dict { items, .. } => items.iter().for_each(|(_, c)| walk(c, out, seen)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out, &mut Default::default());
    out
}

/// Keys and storage classes for the storages the tensors use, in order of first use.
pub(crate) fn plan_storages(
    ckpt: &Checkpoint,
    tensors: &[TensorIdx],
) -> Result<(Vec<StorageId>, HashMap<StorageId, StorageSpec>)> {
    let mut order = Vec::new();
    let mut specs: HashMap<StorageId, StorageSpec> = HashMap::new();
    let mut dtypes: HashMap<StorageId, Vec<crate::dtype::DType>> = HashMap::new();
    for &idx in tensors {
        let t = ckpt.tensors.get(idx).ok_or_else(|| Error::Unwritable {
            tensor: format!("#{idx}"),
            why: "the structure names a tensor that does not exist".into(),
        })?;
        if t.storage.0 >= ckpt.storages.len() {
            return Err(Error::Unwritable {
                tensor: t.name.clone(),
                why: "its storage does not exist".into(),
            });
        }
        let ds = dtypes.entry(t.storage).or_default();
        if !ds.contains(&t.dtype) {
            ds.push(t.dtype);
        }
        if let std::collections::hash_map::Entry::Vacant(e) = specs.entry(t.storage) {
            let s = ckpt.storage(t.storage);
            e.insert(StorageSpec {
                key: order.len().to_string(),
                location: s.location.clone(),
                typed: None,
                numel: 0,
            });
            order.push(t.storage);
        }
    }
    for (id, spec) in specs.iter_mut() {
        let nbytes = ckpt.storage(*id).out_nbytes();
        // A typed storage class when every tensor on it agrees on a dtype that has one, as
        // torch writes it; else UntypedStorage and _rebuild_tensor_v3 (torch itself refuses
        // to save one storage under two dtypes; its loader handles it through v3).
        spec.typed = match dtypes[id].as_slice() {
            [d] if d.storage_class().is_some() && nbytes.is_multiple_of(d.size() as u64) => Some(*d),
            _ => None,
        };
        spec.numel = match spec.typed {
            Some(d) => nbytes / d.size() as u64,
            None => nbytes,
        };
    }
    Ok((order, specs))
}

/// Writes the archive of `root`, its records named `prefix/...`, into the context's file.
/// Returns its size.
pub(crate) fn write_archive(
    ckpt: &Checkpoint,
    root: &Node,
    prefix: &str,
    layout: &PthLayout,
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
    let tensors = tensors_in(root);
    let (order, specs) = plan_storages(ckpt, &tensors)?;
    let pkl = pickler::pickle(ckpt, root, &specs)?;
    let mut zip = ZipWriter::new(BufWriter::with_capacity(1 << 20, file)).force_zip64(layout.force_zip64);
    let mut id_hash = Sha256::new();
    id_hash.update(&pkl);
    zip.add(&format!("{prefix}/data.pkl"), &pkl).map_err(werr)?;
    zip.add(&format!("{prefix}/.format_version"), b"1").map_err(werr)?;
    zip.add(&format!("{prefix}/.storage_alignment"), b"64").map_err(werr)?;
    zip.add(&format!("{prefix}/byteorder"), b"little").map_err(werr)?;
    for id in &order {
        let spec = &specs[id];
        let size = ckpt.storage(*id).out_nbytes();
        zip.start(&format!("{prefix}/data/{}", spec.key), size).map_err(werr)?;
        for_each_storage_chunk_with::<Error>(reader, ckpt, *id, |chunk| {
            zip.write(chunk).map_err(werr)?;
            progress.add(chunk.len() as u64);
            Ok(())
        })?;
        let crc = zip.finish_record().map_err(werr)?;
        behind.poll(zip.get_ref().get_ref());
        id_hash.update(size.to_le_bytes());
        id_hash.update(crc.to_le_bytes());
    }
    zip.add(&format!("{prefix}/version"), b"3\n").map_err(werr)?;
    // torch writes 40 random digits; these are derived from the content, so writing the same
    // checkpoint twice gives the same bytes.
    let digest = id_hash.finalize();
    let n = u128::from_le_bytes(digest[..16].try_into().unwrap_or([0; 16]));
    zip.add(
        &format!("{prefix}/.data/serialization_id"),
        format!("{n:040}").as_bytes(),
    )
    .map_err(werr)?;
    let (_, size) = zip.finish().map_err(werr)?;
    Ok(size)
}

/// Bytes of storage data the archive of `root` will hold.
pub(crate) fn data_bytes(ckpt: &Checkpoint, root: &Node) -> u64 {
    let mut seen = std::collections::HashSet::new();
    tensors_in(root)
        .into_iter()
        .filter_map(|i| ckpt.tensors.get(i))
        .filter(|t| t.storage.0 < ckpt.storages.len() && seen.insert(t.storage))
        .map(|t| ckpt.storage(t.storage).out_nbytes())
        .sum()
}
