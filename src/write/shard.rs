//! Sharded output, the huggingface layout: shards `model-00001-of-00003.safetensors` (or
//! `pytorch_model-00001-of-00003.bin`) and an index `model.safetensors.index.json`
//! (`pytorch_model.bin.index.json`) of `{"metadata": {"total_size": N, ...},
//! "weight_map": {tensor: shard}}`.
//!
//! OUT names either the index file (any `NAME.EXT.index.json`: shards are `NAME-0000i-of-0000N.EXT`
//! beside it) or a directory (created if missing) that receives the default names. Shards fill
//! in checkpoint order up to `max_shard_size` bytes of tensor data; a tensor larger than that
//! gets a shard of its own; tensors sharing a storage stay in one .bin shard (so they stay tied).
//! Every file is written under a temporary name first and all are renamed together at the end,
//! the index last; an error leaves none of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::model::{Checkpoint, Key, Node, StorageId, TensorIdx};
use crate::tensor_data::DataReader;
use crate::write::atomic::{AtomicFile, AtomicSet};
use crate::write::progress::Progress;
use crate::write::{check_output, pth, safetensors as st, OutFormat, WriteOptions, WriteReport};

/// Whether OUT names an index file (`*.index.json`).
pub fn is_index_name(out: &Path) -> bool {
    out.file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".index.json"))
}

/// Where the index and shards go, and how shards are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    pub index: PathBuf,
    pub stem: String,
    pub ext: String,
}

impl Layout {
    pub fn new(out: &Path, format: OutFormat) -> Layout {
        let (default_stem, default_ext) = match format {
            OutFormat::Safetensors => ("model", "safetensors"),
            OutFormat::Pth => ("pytorch_model", "bin"),
        };
        if is_index_name(out) {
            let name = out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let base = name.trim_end_matches(".index.json");
            let (stem, ext) = match base.rsplit_once('.') {
                Some((s, e)) if !s.is_empty() && !e.is_empty() => (s.to_string(), e.to_string()),
                _ if !base.is_empty() => (base.to_string(), default_ext.to_string()),
                _ => (default_stem.to_string(), default_ext.to_string()),
            };
            let dir = match out.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            Layout {
                dir,
                index: out.to_path_buf(),
                stem,
                ext,
            }
        } else {
            let index = out.join(format!("{default_stem}.{default_ext}.index.json"));
            Layout {
                dir: out.to_path_buf(),
                index,
                stem: default_stem.into(),
                ext: default_ext.into(),
            }
        }
    }

    pub fn shard_name(&self, i: usize, n: usize) -> String {
        format!("{}-{:05}-of-{:05}.{}", self.stem, i + 1, n, self.ext)
    }
}

/// Groups units (bytes, tensors) into shards of at most `max` bytes, in order; a unit larger
/// than `max` is a shard of its own. Always at least one (possibly empty) shard.
pub fn plan(units: &[(u64, Vec<TensorIdx>)], max: Option<u64>) -> Vec<Vec<TensorIdx>> {
    let max = max.unwrap_or(u64::MAX);
    let mut shards: Vec<Vec<TensorIdx>> = vec![Vec::new()];
    let mut size = 0u64;
    for (bytes, tensors) in units {
        let cur_empty = shards.last().is_none_or(|s| s.is_empty());
        if !cur_empty && size.saturating_add(*bytes) > max {
            shards.push(Vec::new());
            size = 0;
        }
        size = size.saturating_add(*bytes);
        if let Some(s) = shards.last_mut() {
            s.extend_from_slice(tensors);
        }
    }
    shards
}

/// The units of a .bin sharding: the tensors of each storage together, in order of first use.
fn storage_units(ckpt: &Checkpoint) -> Vec<(u64, Vec<TensorIdx>)> {
    let mut units: Vec<(u64, Vec<TensorIdx>)> = Vec::new();
    let mut by_storage: HashMap<StorageId, usize> = HashMap::new();
    for (idx, t) in ckpt.tensors.iter().enumerate() {
        match by_storage.get(&t.storage) {
            Some(&u) => units[u].1.push(idx),
            None => {
                by_storage.insert(t.storage, units.len());
                let bytes = ckpt.storages.get(t.storage.0).map_or(0, |s| s.out_nbytes());
                units.push((bytes, vec![idx]));
            }
        }
    }
    units
}

fn unique_names(ckpt: &Checkpoint) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for t in &ckpt.tensors {
        if !seen.insert(t.name.as_str()) {
            return Err(Error::Unwritable {
                tensor: t.name.clone(),
                why: "two tensors have this name (a shard index maps names to files)".into(),
            });
        }
    }
    Ok(())
}

pub(crate) fn write_sharded(
    ckpt: &Checkpoint,
    out: &Path,
    opts: &WriteOptions,
    inputs: &[&Path],
) -> Result<WriteReport> {
    let layout = Layout::new(out, opts.format);
    unique_names(ckpt)?;
    let (units, selection) = match opts.format {
        OutFormat::Safetensors => {
            let sel = st::select(ckpt, opts.dedupe)?;
            let units = sel
                .tensors
                .iter()
                .map(|&i| (ckpt.tensors[i].nbytes(), vec![i]))
                .collect::<Vec<_>>();
            (units, Some(sel))
        }
        OutFormat::Pth => (storage_units(ckpt), None),
    };
    let shards = plan(&units, opts.max_shard_size);
    let n = shards.len();
    let names: Vec<String> = (0..n).map(|i| layout.shard_name(i, n)).collect();
    let paths: Vec<PathBuf> = names.iter().map(|s| layout.dir.join(s)).collect();
    if layout.dir.exists() && !layout.dir.is_dir() {
        return Err(Error::Write {
            path: layout.dir.clone(),
            source: std::io::Error::other("not a directory"),
        });
    }
    for p in paths.iter().chain(std::iter::once(&layout.index)) {
        check_output(inputs, p, opts.force)?;
    }
    let created_dir = if layout.dir.exists() {
        false
    } else {
        std::fs::create_dir_all(&layout.dir).map_err(|e| Error::Write {
            path: layout.dir.clone(),
            source: e,
        })?;
        true
    };
    let result = write_files(ckpt, opts, &layout, &shards, &names, &paths, selection.as_ref());
    if result.is_err() && created_dir {
        let _ = std::fs::remove_dir(&layout.dir);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn write_files(
    ckpt: &Checkpoint,
    opts: &WriteOptions,
    layout: &Layout,
    shards: &[Vec<TensorIdx>],
    names: &[String],
    paths: &[PathBuf],
    selection: Option<&st::Selection>,
) -> Result<WriteReport> {
    let mut reader = DataReader::new();
    let base_meta = st::metadata(ckpt);
    let roots: Vec<Node> = shards
        .iter()
        .map(|tensors| Node::Dict {
            ordered: false,
            items: tensors
                .iter()
                .map(|&i| (Key::Str(ckpt.tensors[i].name.clone()), Node::Tensor(i)))
                .collect(),
        })
        .collect();
    let data_total: u64 = match opts.format {
        OutFormat::Safetensors => shards.iter().map(|s| st::data_bytes(ckpt, s)).sum(),
        OutFormat::Pth => roots.iter().map(|r| pth::data_bytes(ckpt, r)).sum(),
    };
    let mut progress = Progress::new(data_total, opts.progress);
    let mut set = AtomicSet::new();
    let mut bytes = 0u64;
    let mut weight_map = Map::new();
    for (k, tensors) in shards.iter().enumerate() {
        let mut f = AtomicFile::create(&paths[k], opts.durable)?;
        let mut behind = f.write_behind();
        bytes += match opts.format {
            OutFormat::Safetensors => {
                let mut meta = base_meta.clone();
                if let Some(sel) = selection {
                    let here: Vec<(String, String)> = sel
                        .dropped
                        .iter()
                        .filter(|(_, kept)| tensors.iter().any(|&i| &ckpt.tensors[i].name == kept))
                        .cloned()
                        .collect();
                    st::record_dropped(&mut meta, &here);
                }
                st::write_file(
                    ckpt,
                    tensors,
                    &meta,
                    f.file(),
                    &paths[k],
                    &mut reader,
                    &mut progress,
                    &mut behind,
                )?
            }
            OutFormat::Pth => {
                let prefix = pth::prefix_for(&paths[k]);
                pth::write_archive(
                    ckpt,
                    &roots[k],
                    &prefix,
                    f.file(),
                    &paths[k],
                    &pth::PthLayout::default(),
                    &mut reader,
                    &mut progress,
                    &mut behind,
                )?
            }
        };
        for &i in tensors {
            weight_map.insert(ckpt.tensors[i].name.clone(), Json::String(names[k].clone()));
        }
        set.add(f);
    }
    // The index: total_size first, then the checkpoint's own metadata (JSON values as read).
    let mut meta = Map::new();
    meta.insert("total_size".into(), json!(data_total));
    for (k, v) in &ckpt.metadata {
        if k == "total_size" {
            continue;
        }
        meta.insert(k.clone(), v.clone());
    }
    let index = json!({ "metadata": meta, "weight_map": weight_map });
    let mut text = serde_json::to_string_pretty(&index).map_err(|e| Error::Write {
        path: layout.index.clone(),
        source: e.into(),
    })?;
    text.push('\n');
    let mut f = AtomicFile::create(&layout.index, opts.durable)?;
    std::io::Write::write_all(f.file(), text.as_bytes()).map_err(|e| Error::Write {
        path: layout.index.clone(),
        source: e,
    })?;
    bytes += text.len() as u64;
    set.add(f);
    progress.finish();
    let files = set.commit(opts.force)?;
    let tensors = shards.iter().map(Vec::len).sum();
    let deduplicated = selection.map(|sel| sel.dropped.clone()).unwrap_or_default();
    Ok(WriteReport {
        files,
        tensors,
        bytes,
        deduplicated,
    })
}
