//! safetensors files: the `safetensors` crate validates the header (offsets tile the buffer
//! exactly, sizes match dtypes and shapes, the buffer ends at end of file) before ckpt hands
//! out a single range. Each tensor becomes its own storage.
//!
//! Parsing a header costs about 100 ns and 15 bytes of memory per header byte (the crate builds
//! a map entry per tensor and per metadata pair), so a header is first checked against what
//! the file can justify: its length against [`HeaderLimits`], from the first 8 bytes alone.

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

/// How large a safetensors header may be. Real headers hold about 100 bytes of JSON per
/// tensor and a few pairs of metadata: a shard of thousands of tensors has a header of a
/// few hundred KiB beside gigabytes of data. A header above `free_bytes` must be at most
/// `per_data_byte` times the data it describes (past 1 MiB, that is thousands of tensors of a
/// few bytes each on average), and no header may exceed `max_bytes`. Every tensor entry takes
/// bytes of the header, so this bounds the number of tensors and metadata pairs too.
#[derive(Debug, Clone)]
pub struct HeaderLimits {
    pub max_bytes: u64,
    pub free_bytes: u64,
    pub per_data_byte: u64,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        // 100 MB is the crate's own ceiling (it refuses longer headers).
        HeaderLimits {
            max_bytes: 100_000_000,
            free_bytes: 1 << 20,
            per_data_byte: 4,
        }
    }
}

/// Refuses a header longer than `limits` allow for this file, before any of it is parsed.
pub fn check_header(bytes: &[u8], limits: &HeaderLimits) -> std::result::Result<(), String> {
    let Some(head) = bytes.get(..8) else {
        return Err("shorter than the 8-byte header length".into());
    };
    let header = u64::from_le_bytes(head.try_into().unwrap_or([0; 8]));
    let data = (bytes.len() as u64).saturating_sub(8).saturating_sub(header);
    let allowed = limits
        .max_bytes
        .min(limits.free_bytes.max(data.saturating_mul(limits.per_data_byte)));
    if header > allowed {
        return Err(format!(
            "a header of {header} bytes for {data} bytes of tensor data; ckpt parses headers of up to \
             {allowed} bytes here (larger than {} bytes only up to {} times the data, never above {} bytes)",
            limits.free_bytes, limits.per_data_byte, limits.max_bytes
        ));
    }
    Ok(())
}

/// The header, parsed by the safetensors crate once [`check_header`] allows it: the one way
/// the reader and the scanner look at a safetensors file.
pub fn parse_header(
    bytes: &[u8],
    limits: &HeaderLimits,
) -> std::result::Result<(usize, safetensors::tensor::Metadata), HeaderError> {
    check_header(bytes, limits).map_err(HeaderError::TooLarge)?;
    safetensors::SafeTensors::read_metadata(bytes).map_err(HeaderError::Invalid)
}

/// Why a safetensors header was not parsed.
#[derive(Debug)]
pub enum HeaderError {
    /// Larger than the file's data justifies ([`HeaderLimits`]).
    TooLarge(String),
    Invalid(safetensors::SafeTensorError),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::TooLarge(why) => f.write_str(why),
            HeaderError::Invalid(e) => write!(f, "invalid safetensors file: {e}"),
        }
    }
}

pub fn read(source: Arc<Source>, limits: &HeaderLimits) -> Result<Checkpoint> {
    let path = source.path().to_path_buf();
    let (header_len, meta) = parse_header(source.bytes(), limits).map_err(|e| match e {
        HeaderError::TooLarge(why) => Error::malformed(&path, "safetensors header", why),
        HeaderError::Invalid(source) => Error::Safetensors {
            path: path.clone(),
            source: Box::new(source),
        },
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
        module_classes: Default::default(),
        modules: Vec::new(),
        names: Default::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file: `empty` tensors of no data, then one U8 tensor of `data` bytes.
    fn file_with(empty: usize, data: usize) -> Vec<u8> {
        let mut header = String::from("{");
        for i in 0..empty {
            header.push_str(&format!(
                r#""t{i:07}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}},"#
            ));
        }
        header.push_str(&format!(
            r#""pad":{{"dtype":"U8","shape":[{data}],"data_offsets":[0,{data}]}}}}"#
        ));
        while header.len() % 8 != 0 {
            header.push(' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        bytes
    }

    fn read_bytes(bytes: &[u8]) -> Result<Checkpoint> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.safetensors");
        std::fs::write(&path, bytes).expect("written");
        read(Source::open(&path)?, &HeaderLimits::default())
    }

    #[test]
    fn a_header_larger_than_its_data_justifies_is_refused_before_parsing() {
        // 40 000 empty tensors: a 2.3 MB header for 16 bytes of data.
        let bytes = file_with(40_000, 16);
        let err = read_bytes(&bytes).expect_err("refused").to_string();
        assert!(
            err.contains("a header of") && err.contains("for 16 bytes of tensor data"),
            "{err}"
        );
        // The same header beside enough data to justify it reads.
        let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let justified = file_with(40_000, header / 4 + 8);
        assert_eq!(read_bytes(&justified).expect("reads").tensors.len(), 40_001);
    }

    #[test]
    fn header_limits_bound_by_data_up_to_the_absolute_ceiling() {
        let limits = HeaderLimits {
            max_bytes: 1000,
            free_bytes: 100,
            per_data_byte: 2,
        };
        let file = |header: u64, data: usize| {
            let mut bytes = header.to_le_bytes().to_vec();
            bytes.resize(8 + header as usize + data, b' ');
            bytes
        };
        assert!(check_header(&file(100, 0), &limits).is_ok(), "free below free_bytes");
        assert!(check_header(&file(101, 50), &limits).is_err(), "over twice the data");
        assert!(check_header(&file(400, 200), &limits).is_ok(), "twice the data");
        assert!(check_header(&file(1001, 10_000), &limits).is_err(), "over max_bytes");
        assert!(check_header(&[0; 4], &limits).is_err(), "no length");
    }
}
