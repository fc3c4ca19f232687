//! A sharded checkpoint's index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`):
//! `{"metadata": {...}, "weight_map": {tensor: shard file}}`. One parser and one rule for shard
//! paths, shared by the reader and the scanner.

use std::path::{Component, Path, PathBuf};

/// What an index says.
#[derive(Debug, Clone)]
pub struct ShardIndex {
    /// (tensor, shard) in the order the weight map lists them.
    pub weight_map: Vec<(String, String)>,
    /// Shard names in the order the weight map first names them, each once.
    pub shards: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Why bytes are not an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexError {
    /// Not JSON at all.
    NotJson(String),
    /// JSON, but without a `weight_map` object: some other JSON file.
    NoWeightMap,
    /// An index whose entry for this tensor is not a file name.
    BadShard(String),
}

/// Parses an index (the caller bounds the size before reading it).
pub fn parse(bytes: &[u8]) -> Result<ShardIndex, IndexError> {
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| IndexError::NotJson(e.to_string()))?;
    let map = json
        .get("weight_map")
        .and_then(|w| w.as_object())
        .ok_or(IndexError::NoWeightMap)?;
    let mut weight_map = Vec::with_capacity(map.len());
    let mut shards: Vec<String> = Vec::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| IndexError::BadShard(tensor.clone()))?;
        if !shards.iter().any(|s| s == shard) {
            shards.push(shard.to_string());
        }
        weight_map.push((tensor.clone(), shard.to_string()));
    }
    let metadata = json
        .get("metadata")
        .and_then(|m| m.as_object())
        .cloned()
        .unwrap_or_default();
    Ok(ShardIndex {
        weight_map,
        shards,
        metadata,
    })
}

/// The shard's path beside the index, or None for an absolute path or one with `..`: an index
/// must not send a reader elsewhere on the machine.
pub fn shard_path(dir: &Path, shard: &str) -> Option<PathBuf> {
    let rel = Path::new(shard);
    let plain = !shard.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then(|| dir.join(rel))
}
