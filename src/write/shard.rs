//! Hugging Face layouts: what `save_pretrained` writes. One file (`model.safetensors`,
//! `pytorch_model.bin`) when everything fits; otherwise shards `model-00001-of-00003.safetensors`
//! (`pytorch_model-00001-of-00003.bin`) and an index `model.safetensors.index.json`
//! (`pytorch_model.bin.index.json`) of `{"metadata": {"total_size": N, ...}, "weight_map":
//! {tensor: shard}}`, written as transformers writes it: keys sorted, indented by 2, a final
//! newline. Every safetensors file of these layouts carries `{"format": "pt"}` in its metadata,
//! as `save_pretrained` writes it (transformers warns when a file lacks it).
//!
//! Where it goes ([`Layout::for_output`]):
//! - OUT a directory (existing, or written with a trailing `/`; with a shard size also a new
//!   name without a checkpoint extension): the default names inside it, created if missing.
//! - OUT `NAME.EXT` with a shard size: shards `NAME-0000i-of-0000N.EXT` and `NAME.EXT.index.json`
//!   beside it, or `NAME.EXT` alone when one shard holds everything; never a directory named
//!   `NAME.EXT`.
//! - OUT `NAME.EXT.index.json`: shards `NAME-0000i-of-0000N.EXT` and that index beside them,
//!   even when there is one shard (the index was asked for).
//!
//! Shards fill in checkpoint order up to `max_shard_size` bytes of tensor data, as
//! huggingface_hub's `split_state_dict_into_shards_factory` fills them: a unit larger than the
//! limit gets a shard of its own, placed where it is met, while the shard being filled stays
//! open; tensors sharing a storage stay in one .bin shard (so they stay tied). Every file is
//! written under a temporary name first and all are renamed together at the end, the index last;
//! an error leaves none of them.
//!
//! transformers' index metadata also has `total_parameters` (`model.num_parameters()`): ckpt
//! leaves it out, as a state dict does not tell parameters from buffers and a wrong count is
//! worse than none (transformers reads only `weight_map`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, Result};
use crate::model::{Checkpoint, Key, Node, StorageId, TensorIdx};
use crate::tensor_data::DataReader;
use crate::write::atomic::{AtomicFile, AtomicSet};
use crate::write::context::WriteCtx;
use crate::write::{check_output, pth, safetensors as st, same_file, OutFormat, WriteOptions, WriteReport};

/// Whether OUT names an index file (`*.index.json`).
pub fn is_index_name(out: &Path) -> bool {
    out.file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(".index.json"))
}

/// Whether OUT names a directory: one that exists, or a path written with a trailing separator
/// (`out/`, which may not exist yet).
pub fn is_dir_name(out: &Path) -> bool {
    out.is_dir() || out.as_os_str().to_string_lossy().ends_with(std::path::is_separator)
}

/// Where the files go, and how they are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    pub index: PathBuf,
    pub stem: String,
    pub ext: String,
    /// The one file written, without an index, when one shard holds everything; None when the
    /// index itself was asked for.
    pub single: Option<PathBuf>,
}

impl Layout {
    /// The Hugging Face layout OUT asks for (see the module docs), or None for a plain file.
    pub fn for_output(out: &Path, opts: &WriteOptions) -> Option<Layout> {
        if is_dir_name(out) {
            return Some(Layout::directory(out, opts.format));
        }
        if is_index_name(out) {
            return Some(Layout::index(out, opts.format));
        }
        opts.max_shard_size?;
        Some(match OutFormat::from_path(out) {
            Some(_) => Layout::beside(out),
            None => Layout::directory(out, opts.format),
        })
    }

    /// `save_pretrained`'s names inside `dir`.
    fn directory(dir: &Path, format: OutFormat) -> Layout {
        let (stem, ext) = default_names(format);
        Layout {
            dir: dir.to_path_buf(),
            index: dir.join(format!("{stem}.{ext}.index.json")),
            stem: stem.into(),
            ext: ext.into(),
            single: Some(dir.join(format!("{stem}.{ext}"))),
        }
    }

    /// Shards beside `NAME.EXT`, named after it.
    fn beside(file: &Path) -> Layout {
        let name = file_name(file);
        let (stem, ext) = name.rsplit_once('.').unwrap_or((&name, ""));
        Layout {
            dir: parent(file),
            index: file.with_file_name(format!("{name}.index.json")),
            stem: stem.into(),
            ext: ext.into(),
            single: Some(file.to_path_buf()),
        }
    }

    /// Shards beside the index `NAME.EXT.index.json`.
    fn index(index: &Path, format: OutFormat) -> Layout {
        let name = file_name(index);
        let base = name.trim_end_matches(".index.json");
        let (default_stem, default_ext) = default_names(format);
        let (stem, ext) = match base.rsplit_once('.') {
            Some((s, e)) if !s.is_empty() && !e.is_empty() => (s, e),
            _ if !base.is_empty() => (base, default_ext),
            _ => (default_stem, default_ext),
        };
        Layout {
            dir: parent(index),
            index: index.to_path_buf(),
            stem: stem.into(),
            ext: ext.into(),
            single: None,
        }
    }

    pub fn shard_name(&self, i: usize, n: usize) -> String {
        format!("{}-{:05}-of-{:05}.{}", self.stem, i + 1, n, self.ext)
    }

    /// The files for `n` shards: the single file when that applies, else the shards and the index.
    fn files(&self, n: usize) -> (Vec<PathBuf>, Option<PathBuf>) {
        match &self.single {
            Some(single) if n == 1 => (vec![single.clone()], None),
            _ => (
                (0..n).map(|i| self.dir.join(self.shard_name(i, n))).collect(),
                Some(self.index.clone()),
            ),
        }
    }
}

/// transformers' names: `WEIGHTS_NAME` / `SAFE_WEIGHTS_NAME` without their extension, and it.
fn default_names(format: OutFormat) -> (&'static str, &'static str) {
    match format {
        OutFormat::Safetensors => ("model", "safetensors"),
        OutFormat::Pth => ("pytorch_model", "bin"),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Groups units (bytes, tensors) into shards of at most `max` bytes, in order; a unit larger
/// than `max` becomes a shard of its own where it is met, and the shard being filled continues
/// after it (huggingface_hub's order). Always at least one (possibly empty) shard.
pub fn plan(units: &[(u64, Vec<TensorIdx>)], max: Option<u64>) -> Vec<Vec<TensorIdx>> {
    let max = max.unwrap_or(u64::MAX);
    let mut shards: Vec<Vec<TensorIdx>> = Vec::new();
    let mut current: Vec<TensorIdx> = Vec::new();
    let mut size = 0u64;
    for (bytes, tensors) in units {
        if *bytes > max {
            shards.push(tensors.clone());
            continue;
        }
        if size.saturating_add(*bytes) > max {
            shards.push(std::mem::take(&mut current));
            size = 0;
        }
        size += bytes;
        current.extend_from_slice(tensors);
    }
    if !current.is_empty() || shards.is_empty() {
        shards.push(current);
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

/// Refuses to leave a layout readers would take two ways: the single file beside an index of
/// the same name that is not rewritten, or an index beside such a single file. ckpt never
/// deletes a file it was not asked to replace, so the user removes it.
fn check_companion(layout: &Layout, index: Option<&PathBuf>, inputs: &[&Path]) -> Result<()> {
    let Some(single) = &layout.single else {
        return Ok(());
    };
    let (written, other) = match index {
        Some(index) => (index, single),
        None => (single, &layout.index),
    };
    let Some(meta) = std::fs::metadata(other).ok().filter(|m| m.is_file()) else {
        return Ok(());
    };
    let whose = if inputs.iter().any(|p| same_file(p, other, &meta)) {
        "an input of this conversion"
    } else {
        "from an earlier write"
    };
    Err(Error::Unsupported {
        path: layout.dir.clone(),
        what: format!(
            "{} is there ({whose}); readers would find both it and {}: remove it or choose another output",
            other.display(),
            file_name(written)
        ),
    })
}

pub(crate) fn write_sharded(
    ckpt: &Checkpoint,
    layout: &Layout,
    opts: &WriteOptions,
    inputs: &[&Path],
    ready: &mut dyn FnMut() -> Result<()>,
) -> Result<WriteReport> {
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
    let (paths, index) = layout.files(shards.len());
    if layout.dir.exists() && !layout.dir.is_dir() {
        return Err(Error::Write {
            path: layout.dir.clone(),
            source: std::io::Error::other("not a directory"),
        });
    }
    for p in paths.iter().chain(index.as_ref()) {
        check_output(inputs, p, opts.force)?;
    }
    check_companion(layout, index.as_ref(), inputs)?;
    let created_dir = if layout.dir.exists() {
        false
    } else {
        std::fs::create_dir_all(&layout.dir).map_err(|e| Error::Write {
            path: layout.dir.clone(),
            source: e,
        })?;
        true
    };
    let planned = Planned {
        shards: &shards,
        paths: &paths,
        index: index.as_deref(),
        selection: selection.as_ref(),
    };
    let result = write_files(ckpt, opts, &planned, ready);
    if result.is_err() && created_dir {
        let _ = std::fs::remove_dir(&layout.dir);
    }
    result
}

/// What [`write_files`] writes: the tensors of each file, the files, the index if any.
struct Planned<'a> {
    shards: &'a [Vec<TensorIdx>],
    paths: &'a [PathBuf],
    index: Option<&'a Path>,
    selection: Option<&'a st::Selection>,
}

/// The safetensors metadata of one file of the layout: the checkpoint's, the duplicates dropped
/// into this file, `{"format": "pt"}` unless the checkpoint says otherwise, then `--metadata`.
fn shard_metadata(
    ckpt: &Checkpoint,
    opts: &WriteOptions,
    tensors: &[TensorIdx],
    selection: Option<&st::Selection>,
) -> std::collections::BTreeMap<String, String> {
    let mut meta = st::metadata(ckpt);
    if let Some(sel) = selection {
        let here: Vec<(String, String)> = sel
            .dropped
            .iter()
            .filter(|(_, kept)| tensors.iter().any(|&i| &ckpt.tensors[i].name == kept))
            .cloned()
            .collect();
        st::record_dropped(&mut meta, &here);
    }
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    st::add_user_metadata(&mut meta, &opts.metadata);
    meta
}

fn write_files(
    ckpt: &Checkpoint,
    opts: &WriteOptions,
    planned: &Planned,
    ready: &mut dyn FnMut() -> Result<()>,
) -> Result<WriteReport> {
    let mut reader = DataReader::new();
    let roots: Vec<Node> = planned
        .shards
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
        OutFormat::Safetensors => planned.shards.iter().map(|s| st::data_bytes(ckpt, s)).sum(),
        OutFormat::Pth => roots.iter().map(|r| pth::data_bytes(ckpt, r)).sum(),
    };
    let mut progress = opts.on_progress.start("writing", data_total);
    let mut set = AtomicSet::new();
    let mut bytes = 0u64;
    let mut weight_map: Vec<(String, String)> = Vec::new();
    for (k, tensors) in planned.shards.iter().enumerate() {
        let path = &planned.paths[k];
        let mut f = AtomicFile::create(path, opts.durable)?;
        let ctx = WriteCtx::new(&mut f, &mut reader, &mut progress);
        bytes += match opts.format {
            OutFormat::Safetensors => {
                let meta = shard_metadata(ckpt, opts, tensors, planned.selection);
                st::write_file(ckpt, tensors, &meta, ctx)?
            }
            OutFormat::Pth => {
                pth::write_archive(ckpt, &roots[k], &pth::prefix_for(path), &pth::PthLayout { force_zip64: opts.force_zip64 }, ctx)?
            }
        };
        let shard = file_name(path);
        weight_map.extend(tensors.iter().map(|&i| (ckpt.tensors[i].name.clone(), shard.clone())));
        set.add(f);
    }
    if let Some(index) = planned.index {
        let text = index_text(ckpt, data_total, weight_map);
        let mut f = AtomicFile::create(index, opts.durable)?;
        std::io::Write::write_all(f.file(), text.as_bytes()).map_err(|e| Error::Write {
            path: index.into(),
            source: e,
        })?;
        bytes += text.len() as u64;
        set.add(f);
    }
    progress.finish();
    ready()?;
    let files = set.commit(opts.force)?;
    let tensors = planned.shards.iter().map(Vec::len).sum();
    let deduplicated = planned.selection.map(|sel| sel.dropped.clone()).unwrap_or_default();
    Ok(WriteReport {
        files,
        tensors,
        bytes,
        deduplicated,
    })
}

/// The index as transformers writes it, `json.dumps(index, indent=2, sort_keys=True) + "\n"`:
/// `metadata` (`total_size` and the checkpoint's own metadata, JSON values as read) and
/// `weight_map`, keys sorted at every level, non-ASCII characters escaped as Python's
/// `ensure_ascii` does.
fn index_text(ckpt: &Checkpoint, data_total: u64, weight_map: Vec<(String, String)>) -> String {
    let mut meta: Map<String, Json> = ckpt
        .metadata
        .iter()
        .filter(|(k, _)| *k != "total_size")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    meta.insert("total_size".into(), json!(data_total));
    let weight_map: Map<String, Json> = weight_map.into_iter().map(|(k, v)| (k, Json::String(v))).collect();
    let index = sort_keys(json!({ "metadata": meta, "weight_map": weight_map }));
    let text = serde_json::to_string_pretty(&index).unwrap_or_default();
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            // Only inside strings (JSON syntax is ASCII), so an escape means the same text.
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out.push('\n');
    out
}

/// The value with every object's keys in sorted order (by code point, as Python sorts str).
fn sort_keys(value: Json) -> Json {
    match value {
        Json::Object(map) => {
            let mut entries: Vec<(String, Json)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        Json::Array(items) => Json::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(sizes: &[u64]) -> Vec<(u64, Vec<TensorIdx>)> {
        sizes.iter().enumerate().map(|(i, &s)| (s, vec![i])).collect()
    }

    #[test]
    fn shards_fill_as_huggingface_hub_fills_them() {
        // Expected: huggingface_hub 2.4.0 split_state_dict_into_shards_factory on these sizes.
        assert_eq!(
            plan(&units(&[6, 6, 2, 6, 2, 2]), Some(10)),
            [vec![0], vec![1, 2], vec![3, 4, 5]]
        );
        // A unit over the limit is a shard of its own, placed first; the open shard continues.
        assert_eq!(plan(&units(&[1, 10, 1, 1]), Some(5)), [vec![1], vec![0, 2, 3]]);
        assert_eq!(plan(&units(&[3, 3]), Some(10)), [vec![0, 1]]);
        assert_eq!(plan(&units(&[3, 3]), None), [vec![0, 1]]);
        assert_eq!(plan(&[], Some(10)), [Vec::<TensorIdx>::new()]);
    }

    #[test]
    fn layouts_follow_the_output_name() {
        let sharded = |max: Option<u64>| {
            let mut o = WriteOptions::new(OutFormat::Safetensors);
            o.max_shard_size = max;
            o
        };
        let plain = sharded(None);
        assert_eq!(Layout::for_output(Path::new("x.safetensors"), &plain), None);
        let beside = Layout::for_output(Path::new("w/x.safetensors"), &sharded(Some(9))).unwrap();
        assert_eq!(beside.dir, Path::new("w"));
        assert_eq!(beside.index, Path::new("w/x.safetensors.index.json"));
        assert_eq!(beside.shard_name(0, 3), "x-00001-of-00003.safetensors");
        assert_eq!(beside.single.as_deref(), Some(Path::new("w/x.safetensors")));
        let dir = Layout::for_output(Path::new("out/"), &plain).unwrap();
        assert_eq!(dir.index, Path::new("out/model.safetensors.index.json"));
        assert_eq!(dir.single.as_deref(), Some(Path::new("out/model.safetensors")));
        let bin = Layout::for_output(Path::new("out/"), &WriteOptions::new(OutFormat::Pth)).unwrap();
        assert_eq!(bin.shard_name(1, 2), "pytorch_model-00002-of-00002.bin");
        let index = Layout::for_output(Path::new("m.bin.index.json"), &plain).unwrap();
        assert_eq!((index.dir.as_path(), index.single), (Path::new("."), None));
        // A new name without a checkpoint extension, with a shard size: a directory, as before.
        let legacy = Layout::for_output(Path::new("shards"), &sharded(Some(9))).unwrap();
        assert_eq!(legacy.dir, Path::new("shards"));
    }
}
