//! safetensors files: the `safetensors` crate validates the header (offsets tile the buffer
//! exactly, sizes match dtypes and shapes, the buffer ends at end of file) before ckpt hands
//! out a single range. Each tensor becomes its own storage.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{ByteOrder, Checkpoint, DataRef, Format, Key, Node, Origin, Storage, StorageId, Tensor};
use crate::source::Source;

/// A u64 header length followed by a JSON object: how safetensors files begin.
pub fn looks_like(bytes: &[u8]) -> bool {
    match bytes.get(..9) {
        Some(head) => {
            let n = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
            head[8] == b'{' && n >= 2 && n <= bytes.len() as u64
        }
        None => false,
    }
}

pub fn read(source: Arc<Source>) -> Result<Checkpoint> {
    let path = source.path().to_path_buf();
    let (header_len, meta) =
        safetensors::SafeTensors::read_metadata(source.bytes()).map_err(|e| Error::Safetensors {
            path: path.clone(),
            source: e,
        })?;
    let data_start = 8 + header_len as u64;
    let mut tensors = Vec::new();
    let mut storages = Vec::new();
    let mut items = Vec::new();
    // The order the data lies in the file; names break ties between empty tensors.
    for name in meta.offset_keys() {
        let Some(info) = meta.info(&name) else { continue };
        let dtype = crate::dtype::DType::from_safetensors(info.dtype).ok_or_else(|| Error::Unsupported {
            path: path.clone(),
            what: format!("tensor '{name}': dtype {:?} is not supported", info.dtype),
        })?;
        let (begin, end) = info.data_offsets;
        let shape: Vec<u64> = info.shape.iter().map(|&d| d as u64).collect();
        let stride = contiguous_strides(&shape);
        let id = StorageId(storages.len());
        storages.push(Storage {
            key: None,
            location: "cpu".into(),
            byte_order: ByteOrder::Little,
            data: DataRef {
                source: source.clone(),
                offset: data_start + begin as u64,
                len: (end - begin) as u64,
            },
            cast: None,
        });
        items.push((Key::Str(name.clone()), Node::Tensor(tensors.len())));
        tensors.push(Tensor {
            name,
            dtype,
            shape,
            stride,
            offset: 0,
            storage: id,
            requires_grad: false,
            parameter: false,
        });
    }
    let metadata = meta
        .metadata()
        .as_ref()
        .map(|m| {
            let mut pairs: Vec<_> = m.iter().collect();
            pairs.sort();
            pairs
                .into_iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Checkpoint {
        format: Format::Safetensors,
        root: Node::Dict { ordered: false, items },
        tensors,
        storages,
        metadata,
        globals: Default::default(),
        origin: Origin::Data,
        files: vec![path.to_path_buf()],
    })
}

/// Row-major strides, in elements.
pub fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}
