//! Sharded checkpoints: a `*.index.json` whose `weight_map` names the shard file of every
//! tensor (huggingface's layout, over safetensors or .bin shards), and directories holding one
//! or a snapshot's single file.

use std::collections::BTreeMap;
use std::path::Path;

use crate::container::index::{self as container_index, IndexError};
use crate::error::{Error, Result};
use crate::model::{Checkpoint, Format, Key, Node, Origin, StorageId, Tensor};
use crate::read::{dcp, open_with, zero, ReadLimits};

/// The single-file names of a Hugging Face snapshot (transformers' `SAFE_WEIGHTS_NAME` and
/// `WEIGHTS_NAME`), read when a directory holds no index.
const SINGLE_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// A directory: reads the one checkpoint in it, a `*.index.json`, a Hugging Face snapshot's
/// `model.safetensors` / `pytorch_model.bin`, a distributed checkpoint's `.metadata`, or a
/// DeepSpeed ZeRO folder (its rank files, or a `latest` file naming the folder of them). Two
/// of these is an error naming them: which one a loader takes depends on the loader, so the
/// user names it.
pub fn read_dir(dir: &Path, limits: &ReadLimits) -> Result<Checkpoint> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let single = SINGLE_FILES.contains(&name.as_str()) || name == dcp::METADATA;
        if name.ends_with(".index.json") || (single && entry.path().is_file()) {
            found.push(entry.path());
        }
    }
    found.sort();
    // A DeepSpeed folder: its rank files, or (with nothing else to read) its `latest` file.
    if found.is_empty() && (zero::has_rank_files(dir) || zero::has_latest(dir)) {
        return zero::read(dir, limits);
    }
    if zero::has_rank_files(dir) {
        found.push(dir.join("*_optim_states.pt (DeepSpeed ZeRO)"));
    }
    match found.as_slice() {
        [one] if one.to_string_lossy().ends_with(".index.json") => read_index(one, limits),
        [one] => open_with(one, limits),
        [] => Err(Error::UnknownFormat {
            path: dir.into(),
            why: "directory without a *.index.json, model.safetensors, pytorch_model.bin, a distributed checkpoint's .metadata or DeepSpeed's *_optim_states.pt / latest".into(),
        }),
        many => Err(Error::UnknownFormat {
            path: dir.into(),
            why: format!(
                "directory holds {} checkpoints ({}); name the one to read",
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
    let parsed = parse_index(index, limits)?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: BTreeMap<String, (Checkpoint, usize)> = BTreeMap::new();
    let mut storages = Vec::new();
    let mut files = vec![index.to_path_buf()];
    let mut globals = crate::model::Globals::default();
    for shard in &parsed.shards {
        let ckpt = open_shard(index, dir, shard, limits)?;
        files.extend(ckpt.files.iter().cloned());
        let base = storages.len();
        storages.extend(ckpt.storages.iter().cloned());
        globals.merge(&ckpt.globals);
        shards.insert(shard.clone(), (ckpt, base));
    }
    let mut tensors = Vec::with_capacity(parsed.weight_map.len());
    let mut items = Vec::with_capacity(parsed.weight_map.len());
    for (name, shard) in &parsed.weight_map {
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
    // The index's metadata, then each shard's entries it lacks (in shard order): a shard's
    // safetensors metadata holds what its writer recorded, such as the tied aliases
    // `convert --dedupe` left out, which belong to the checkpoint as a whole.
    let mut metadata = parsed.metadata;
    for shard in &parsed.shards {
        if let Some((ckpt, _)) = shards.get(shard) {
            for (k, v) in &ckpt.metadata {
                metadata.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    Ok(Checkpoint {
        format: Format::Sharded,
        root: Node::Dict { ordered: true, items },
        tensors,
        storages,
        metadata,
        globals,
        origin: Origin::Data,
        files,
        module_classes: Default::default(),
        modules: Vec::new(),
        names: Default::default(),
    })
}

/// Reads and parses the index file, within the size limit.
fn parse_index(index: &Path, limits: &ReadLimits) -> Result<container_index::ShardIndex> {
    let (file, meta) = crate::source::open_regular(index)?;
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
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, limits.max_index_bytes), &mut text)
        .map_err(|e| Error::io(index, e))?;
    container_index::parse(&text).map_err(|e| match e {
        IndexError::NotJson(e) => Error::UnknownFormat {
            path: index.into(),
            why: format!("not a checkpoint and not valid index JSON: {e}"),
        },
        IndexError::NoWeightMap => Error::UnknownFormat {
            path: index.into(),
            why: "JSON without a \"weight_map\" object: not a sharded checkpoint index".into(),
        },
        IndexError::BadShard(name) => {
            Error::malformed(index, format!("weight_map['{name}']"), "shard is not a file name")
        }
    })
}

/// Opens one shard the index names (in `dir`, the index's directory): a plain file beside the
/// index, never another index.
fn open_shard(index: &Path, dir: &Path, shard: &str, limits: &ReadLimits) -> Result<Checkpoint> {
    let shard_path = container_index::shard_path(dir, shard).ok_or_else(|| {
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
    Ok(ckpt)
}

/// Whether a file starts (after whitespace) like JSON, i.e. would be read as an index.
fn is_json(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 64];
    let n = crate::source::open_regular(path)
        .ok()
        .and_then(|(mut f, _)| f.read(&mut head).ok())
        .unwrap_or(0);
    head[..n].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}
