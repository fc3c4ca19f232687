//! Sharded checkpoints: a `*.index.json` whose `weight_map` names the shard file of every
//! tensor (huggingface's layout, over safetensors or .bin shards).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::{Checkpoint, Format, Key, Node, Origin, StorageId, Tensor};
use crate::read::{open_with, ReadLimits};

/// A directory: reads the one `*.index.json` in it.
pub fn read_dir(dir: &Path, limits: &ReadLimits) -> Result<Checkpoint> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut indexes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".index.json") {
            indexes.push(entry.path());
        }
    }
    indexes.sort();
    match indexes.as_slice() {
        [one] => read_index(one, limits),
        [] => Err(Error::UnknownFormat {
            path: dir.into(),
            why: "directory without a *.index.json of a sharded checkpoint".into(),
        }),
        many => Err(Error::UnknownFormat {
            path: dir.into(),
            why: format!(
                "directory holds {} index files ({}); name the one to read",
                many.len(),
                many.iter()
                    .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

pub fn read_index(index: &Path, limits: &ReadLimits) -> Result<Checkpoint> {
    let meta = std::fs::metadata(index).map_err(|e| Error::io(index, e))?;
    if meta.len() > limits.max_index_bytes {
        return Err(Error::malformed(
            index,
            "index",
            format!(
                "{} bytes, more than the limit of {}",
                meta.len(),
                limits.max_index_bytes
            ),
        ));
    }
    let text = std::fs::read(index).map_err(|e| Error::io(index, e))?;
    let json: serde_json::Value = serde_json::from_slice(&text).map_err(|e| Error::UnknownFormat {
        path: index.into(),
        why: format!("not a checkpoint and not valid index JSON: {e}"),
    })?;
    let weight_map = json
        .get("weight_map")
        .and_then(|w| w.as_object())
        .ok_or_else(|| Error::UnknownFormat {
            path: index.into(),
            why: "JSON without a \"weight_map\" object: not a sharded checkpoint index".into(),
        })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    // Shards in the order the weight map first names them; each read once.
    let mut shard_order: Vec<String> = Vec::new();
    for (name, shard) in weight_map {
        let shard = shard
            .as_str()
            .ok_or_else(|| Error::malformed(index, format!("weight_map['{name}']"), "shard is not a file name"))?;
        if !shard_order.iter().any(|s| s == shard) {
            shard_order.push(shard.to_string());
        }
    }
    let mut shards: BTreeMap<String, (Checkpoint, usize)> = BTreeMap::new();
    let mut storages = Vec::new();
    let mut globals = crate::model::Globals::default();
    for shard in &shard_order {
        let shard_path = shard_path(dir, shard).ok_or_else(|| {
            Error::malformed(
                index,
                "weight_map",
                format!("shard '{shard}' is not a plain relative path"),
            )
        })?;
        if !shard_path.is_file() {
            return Err(Error::malformed(
                index,
                "weight_map",
                format!("shard '{shard}' is missing ({})", shard_path.display()),
            ));
        }
        // A shard that is itself an index (or names the index) would recurse without end.
        if is_json(&shard_path) {
            return Err(Error::malformed(
                index,
                "weight_map",
                format!("shard '{shard}' is itself an index"),
            ));
        }
        let ckpt = open_with(&shard_path, limits)?;
        if ckpt.format == Format::Sharded {
            return Err(Error::malformed(
                index,
                "weight_map",
                format!("shard '{shard}' is itself an index"),
            ));
        }
        let base = storages.len();
        storages.extend(ckpt.storages.iter().cloned());
        globals.merge(&ckpt.globals);
        shards.insert(shard.clone(), (ckpt, base));
    }
    let mut tensors = Vec::with_capacity(weight_map.len());
    let mut items = Vec::with_capacity(weight_map.len());
    for (name, shard) in weight_map {
        let shard = shard.as_str().unwrap_or_default();
        let Some((ckpt, base)) = shards.get(shard) else {
            continue;
        };
        let t = ckpt.tensors.iter().find(|t| &t.name == name).ok_or_else(|| {
            Error::malformed(
                index,
                "weight_map",
                format!("tensor '{name}' is not in its shard '{shard}'"),
            )
        })?;
        items.push((Key::Str(name.clone()), Node::Tensor(tensors.len())));
        tensors.push(Tensor {
            storage: StorageId(t.storage.0 + base),
            ..t.clone()
        });
    }
    let metadata = json
        .get("metadata")
        .and_then(|m| m.as_object())
        .cloned()
        .unwrap_or_default();
    Ok(Checkpoint {
        format: Format::Sharded,
        root: Node::Dict { ordered: true, items },
        tensors,
        storages,
        metadata,
        globals,
        origin: Origin::Data,
    })
}

/// The shard's path next to the index, refusing absolute paths and `..`: an index must not
/// send ckpt reading elsewhere on the machine.
fn shard_path(dir: &Path, shard: &str) -> Option<PathBuf> {
    let rel = Path::new(shard);
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Some(dir.join(rel))
    } else {
        None
    }
}

/// Whether a file starts (after whitespace) like JSON, i.e. would be read as an index.
fn is_json(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}
