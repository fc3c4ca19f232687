//! Writers: every fixture written as safetensors and as .pth reads back as the same tensors
//! (and, for .pth, the same structure, sharing, flags, device tags and metadata); sharded
//! output; failures leave nothing behind; existing outputs and inputs are protected; random
//! checkpoints (dtypes, 0-dim and empty shapes, strided views over shared storages, both byte
//! orders, nested containers of scalars) survive both formats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ckpt::dtype::DType;
use ckpt::model::{ByteOrder, Checkpoint, DataRef, Format, Key, Node, Origin, Storage, StorageId, Tensor};
use ckpt::source::Source;
use ckpt::tensor_data::{sha256_hex, try_sha256_hex};
use ckpt::write::{self, check_output, OutFormat, WriteOptions};
use ckpt::Error;
use proptest::prelude::*;

use crate::common::{expected, fixtures_dir};

fn fixture_names() -> Vec<String> {
    let e = expected();
    e["fixtures"].as_object().expect("fixtures").keys().cloned().collect()
}

fn opts(format: OutFormat) -> WriteOptions {
    WriteOptions::new(format)
}

/// (name, dtype, shape, sha256) of every tensor, in order.
fn summary(c: &Checkpoint) -> Vec<(String, DType, Vec<u64>, String)> {
    c.tensors
        .iter()
        .map(|t| (t.name.clone(), t.dtype, t.shape.clone(), sha256_hex(c, t)))
        .collect()
}

/// Which tensors share a storage, as group numbers in order of first use.
fn partition(c: &Checkpoint) -> Vec<usize> {
    let mut ids: HashMap<StorageId, usize> = HashMap::new();
    c.tensors
        .iter()
        .map(|t| {
            let n = ids.len();
            *ids.entry(t.storage).or_insert(n)
        })
        .collect()
}

/// A tensor of a dtype safetensors has no name for (complex32, complex128).
fn not_in_safetensors(c: &Checkpoint) -> Option<&Tensor> {
    c.tensors.iter().find(|t| t.dtype.safetensors_name().is_none())
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The structure with everything a .pth round trip may change normalized: dicts are plain,
/// opaque descriptions are strings, floats compared by bits.
fn norm(n: &Node) -> String {
    match n {
        Node::None => "None".into(),
        Node::Bool(b) => format!("{b}"),
        Node::Int(i) => format!("{i}"),
        Node::Float(f) => format!("f{:016x}", f.to_bits()),
        Node::Str(s) | Node::Opaque(s) => format!("{s:?}"),
        Node::Bytes(b) => format!("b{b:?}"),
        Node::List(items) => format!("[{}]", items.iter().map(norm).collect::<Vec<_>>().join(",")),
        Node::Tuple(items) => format!("({})", items.iter().map(norm).collect::<Vec<_>>().join(",")),
        Node::Dict { items, .. } => format!(
            "{{{}}}",
            items
                .iter()
                .map(|(k, v)| format!(
                    "{}:{}",
                    match k {
                        Key::Str(s) => format!("{s:?}"),
                        Key::Int(i) => i.to_string(),
                    },
                    norm(v)
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Node::Tensor(i) => format!("T{i}"),
    }
}

/// Everything a .pth keeps, compared; returns the differences.
fn pth_diffs(orig: &Checkpoint, back: &Checkpoint) -> Vec<String> {
    let mut d = Vec::new();
    if summary(orig) != summary(back) {
        d.push(format!("tensors differ:\n {:?}\n {:?}", summary(orig), summary(back)));
        return d;
    }
    for (a, b) in orig.tensors.iter().zip(&back.tensors) {
        if (&a.stride, a.offset, a.requires_grad, a.parameter) != (&b.stride, b.offset, b.requires_grad, b.parameter) {
            d.push(format!(
                "{}: layout/flags {:?} != {:?}",
                a.name,
                (&a.stride, a.offset, a.requires_grad, a.parameter),
                (&b.stride, b.offset, b.requires_grad, b.parameter)
            ));
        }
        if orig.storages[a.storage.0].location != back.storages[b.storage.0].location {
            d.push(format!(
                "{}: device {} != {}",
                a.name, orig.storages[a.storage.0].location, back.storages[b.storage.0].location
            ));
        }
        if back.storages[b.storage.0].byte_order != ByteOrder::Little {
            d.push(format!("{}: written big-endian", a.name));
        }
    }
    if partition(orig) != partition(back) {
        d.push(format!(
            "storage sharing {:?} != {:?}",
            partition(orig),
            partition(back)
        ));
    }
    if orig.metadata != back.metadata && norm_meta(orig) != norm_meta(back) {
        d.push(format!("metadata {:?} != {:?}", orig.metadata, back.metadata));
    }
    if norm(&orig.root) != norm(&back.root) {
        d.push(format!("structure {} != {}", norm(&orig.root), norm(&back.root)));
    }
    d
}

fn norm_meta(c: &Checkpoint) -> String {
    serde_json::to_string(&c.metadata).unwrap()
}

#[test]
fn every_fixture_round_trips_through_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for rel in fixture_names() {
        let orig = ckpt::read::open(&fixtures_dir().join(&rel)).unwrap();
        let out = tmp.path().join(format!("{}.safetensors", rel.replace('/', "_")));
        let r = write::write(&orig, &out, &opts(OutFormat::Safetensors));
        if let Some(bad) = not_in_safetensors(&orig) {
            match r {
                Err(Error::Unwritable { tensor, why }) if tensor == bad.name && why.contains(bad.dtype.name()) => {}
                other => failures.push(format!("{rel}: expected a {} error, got {other:?}", bad.dtype)),
            }
            if out.exists() {
                failures.push(format!("{rel}: failed write left {}", out.display()));
            }
            continue;
        }
        let report = r.unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(report.files, vec![out.clone()]);
        assert_eq!(report.tensors, orig.tensors.len());
        assert_eq!(report.bytes, std::fs::metadata(&out).unwrap().len());
        let back = ckpt::read::open(&out).unwrap();
        let mut a = summary(&orig);
        let mut b = summary(&back);
        a.sort();
        b.sort();
        if a != b {
            failures.push(format!("{rel}: tensors differ:\n {a:?}\n {b:?}"));
        }
        if orig.format == Format::Safetensors && orig.metadata != back.metadata {
            failures.push(format!("{rel}: metadata {:?} != {:?}", orig.metadata, back.metadata));
        }
        for (k, v) in &orig.metadata {
            let want = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if orig.format != Format::Sharded && back.metadata.get(k) != Some(&serde_json::Value::String(want.clone()))
            {
                failures.push(format!("{rel}: metadata {k}: {:?} != {want:?}", back.metadata.get(k)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(dir_entries(tmp.path()).iter().all(|n| !n.contains("ckpt-tmp")));
}

#[test]
fn every_fixture_round_trips_through_pth() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for rel in fixture_names() {
        let orig = ckpt::read::open(&fixtures_dir().join(&rel)).unwrap();
        let out = tmp.path().join(format!("{}.pth", rel.replace('/', "_")));
        let report = write::write(&orig, &out, &opts(OutFormat::Pth)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(report.bytes, std::fs::metadata(&out).unwrap().len());
        let back = ckpt::read::open(&out).unwrap_or_else(|e| panic!("{rel}: reading back: {e}"));
        assert_eq!(back.format, Format::PthZip);
        // Metadata under a tensor's own name notes how that tensor was saved (a DTensor's
        // placements); the .pth holds the plain tensor, so the note has no place in it.
        let mut plain = orig.clone();
        plain.metadata.retain(|k, _| !orig.tensors.iter().any(|t| &t.name == k));
        let mut d = pth_diffs(&plain, &back);
        // safetensors metadata has no place in a .pth (it is not part of the structure).
        if matches!(orig.format, Format::Safetensors | Format::Sharded) {
            d.retain(|s| !s.starts_with("metadata"));
        }
        failures.extend(d.into_iter().map(|s| format!("{rel}: {s}")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pth_writes_are_deterministic_and_zip64_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = ckpt::read::open(&fixtures_dir().join("views.pth")).unwrap();
    let (a, z) = (tmp.path().join("a.pth"), tmp.path().join("z.pth"));
    write::write(&orig, &a, &opts(OutFormat::Pth)).unwrap();
    let first = std::fs::read(&a).unwrap();
    let mut o = opts(OutFormat::Pth);
    o.force = true;
    o.on_progress = write::progress::OnProgress::new(|_| {}); // reporting changes no byte
    write::write(&orig, &a, &o).unwrap();
    assert!(
        std::fs::read(&a).unwrap() == first,
        "writing twice gave different bytes"
    );
    let mut zip64 = opts(OutFormat::Pth);
    zip64.force_zip64 = true;
    write::write(&orig, &z, &zip64).unwrap();
    zip64.format = OutFormat::Safetensors;
    let refused = write::write(&orig, &tmp.path().join("z.safetensors"), &zip64)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("force_zip64"), "{refused}");
    let raw = std::fs::read(&z).unwrap();
    assert!(raw.windows(4).any(|w| w == b"PK\x06\x06"), "no zip64 end record");
    let back = ckpt::read::open(&z).unwrap();
    assert!(pth_diffs(&orig, &back).is_empty(), "{:?}", pth_diffs(&orig, &back));
    // Every record's data is 64-byte aligned and its CRC right (checked by the zip crate).
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(&raw)).unwrap();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).unwrap();
        let h = f.header_start() as usize;
        let name_len = u16::from_le_bytes([raw[h + 26], raw[h + 27]]) as usize;
        let extra_len = u16::from_le_bytes([raw[h + 28], raw[h + 29]]) as usize;
        assert_eq!((h + 30 + name_len + extra_len) % 64, 0, "{:?}", f.name());
        std::io::copy(&mut f, &mut std::io::sink()).unwrap();
    }
}

#[test]
fn safetensors_bytes_equal_the_safetensors_crate() {
    // The crate's serialize() is what the Python package calls.
    struct V(safetensors::Dtype, Vec<usize>, Vec<u8>);
    impl safetensors::View for &V {
        fn dtype(&self) -> safetensors::Dtype {
            self.0
        }
        fn shape(&self) -> &[usize] {
            &self.1
        }
        fn data(&self) -> std::borrow::Cow<'_, [u8]> {
            (&self.2[..]).into()
        }
        fn data_len(&self) -> usize {
            self.2.len()
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    for rel in [
        "model.safetensors",
        "views.pth",
        "cnn_state_dict.pth",
        "nested_containers.pth",
        "tied_model.pth",
    ] {
        let mut orig = ckpt::read::open(&fixtures_dir().join(rel)).unwrap();
        // One metadata entry at most: the crate orders several in hash order.
        let keep: Vec<String> = orig.metadata.keys().take(1).cloned().collect();
        orig.metadata.retain(|k, _| keep.contains(k));
        let out = tmp.path().join(format!("{rel}.safetensors"));
        write::write(&orig, &out, &opts(OutFormat::Safetensors)).unwrap();
        let views: Vec<(String, V)> = orig
            .tensors
            .iter()
            .map(|t| {
                let mut data = Vec::new();
                ckpt::tensor_data::for_each_chunk::<Error>(&orig, t, |c| {
                    data.extend_from_slice(c);
                    Ok(())
                })
                .unwrap();
                (
                    t.name.clone(),
                    V(
                        write::safetensors::st_dtype(t.dtype).unwrap(),
                        t.shape.iter().map(|&d| d as usize).collect(),
                        data,
                    ),
                )
            })
            .collect();
        let meta: Option<HashMap<String, String>> = if orig.metadata.is_empty() {
            None
        } else {
            Some(
                orig.metadata
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect(),
            )
        };
        let meta = meta.map(|mut m| {
            if orig.format != Format::Safetensors {
                m.insert("format".into(), "pt".into());
            }
            m
        });
        if meta.as_ref().is_some_and(|m| m.len() > 1) {
            continue; // hash order again
        }
        let want = safetensors::tensor::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), meta).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == want,
            "{rel}: differs from safetensors::serialize"
        );
    }
}

#[test]
fn dedupe_keeps_one_name_per_identical_view() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = ckpt::read::open(&fixtures_dir().join("tied_state_dict.pth")).unwrap();
    let out = tmp.path().join("tied.safetensors");
    let mut o = opts(OutFormat::Safetensors);
    o.dedupe = true;
    let report = write::write(&orig, &out, &o).unwrap();
    assert_eq!(report.tensors, orig.tensors.len() - 1);
    let back = ckpt::read::open(&out).unwrap();
    assert!(back.tensors.iter().all(|t| t.name != "head.weight"));
    assert_eq!(
        back.metadata.get("head.weight").and_then(|v| v.as_str()),
        Some("emb.weight")
    );
    assert_eq!(back.metadata.get("format").and_then(|v| v.as_str()), Some("pt"));
    // Different views of one storage are all kept.
    let views = ckpt::read::open(&fixtures_dir().join("views.pth")).unwrap();
    let out = tmp.path().join("views.safetensors");
    assert_eq!(write::write(&views, &out, &o).unwrap().tensors, views.tensors.len());
}

fn shard_opts(format: OutFormat, max: u64) -> WriteOptions {
    let mut o = opts(format);
    o.max_shard_size = Some(max);
    o
}

#[test]
fn sharded_outputs_read_back_through_their_index() {
    let tmp = tempfile::tempdir().unwrap();
    for rel in [
        "tied_state_dict.pth",
        "sharded_st/model.safetensors.index.json",
        "training_checkpoint.pth",
    ] {
        let orig = ckpt::read::open(&fixtures_dir().join(rel)).unwrap();
        for format in [OutFormat::Safetensors, OutFormat::Pth] {
            let dir = tmp.path().join(format!("{}-{}", rel.replace('/', "_"), format.name()));
            let report = write::write(&orig, &dir, &shard_opts(format, 1000)).unwrap();
            let n = report.files.len() - 1;
            assert!(n > 1, "{rel}: only {n} shard");
            let index = report.files.last().unwrap();
            assert!(index.to_string_lossy().ends_with(".index.json"));
            let names = dir_entries(&dir);
            assert_eq!(names.len(), n + 1, "{names:?}");
            let back = ckpt::read::open(&dir).unwrap();
            let mut a = summary(&orig);
            let mut b = summary(&back);
            a.sort();
            b.sort();
            assert_eq!(a, b, "{rel} {format:?}");
            let json: serde_json::Value = serde_json::from_slice(&std::fs::read(index).unwrap()).unwrap();
            let total = json["metadata"]["total_size"].as_u64().unwrap();
            assert!(total > 0);
            if format == OutFormat::Pth && rel == "tied_state_dict.pth" {
                let wm = &json["weight_map"];
                assert_eq!(wm["emb.weight"], wm["head.weight"], "tied tensors split across shards");
                let e = back.tensors.iter().find(|t| t.name == "emb.weight").unwrap();
                let h = back.tensors.iter().find(|t| t.name == "head.weight").unwrap();
                assert_eq!(e.storage, h.storage, "tied tensors no longer share a storage");
            }
            if rel == "training_checkpoint.pth" {
                assert_eq!(
                    back.metadata.get("epoch"),
                    Some(&serde_json::json!(5)),
                    "{:?}",
                    back.metadata
                );
            }
            // Again without force: refused, nothing changed.
            let before = names.clone();
            assert!(matches!(
                write::write(&orig, &dir, &shard_opts(format, 1000)),
                Err(Error::Exists { .. })
            ));
            assert_eq!(dir_entries(&dir), before);
        }
    }
    // OUT naming the index.
    let orig = ckpt::read::open(&fixtures_dir().join("cnn_state_dict.pth")).unwrap();
    let index = tmp.path().join("named").join("weights.safetensors.index.json");
    std::fs::create_dir(tmp.path().join("named")).unwrap();
    let report = write::write(&orig, &index, &shard_opts(OutFormat::Safetensors, 2000)).unwrap();
    let shard = report.files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        shard.starts_with("weights-00001-of-") && shard.ends_with(".safetensors"),
        "{shard}"
    );
    assert_eq!(report.files.last().unwrap(), &index);
}

/// A copy of a fixture whose last storage's data lies past the end of its file: reading it
/// fails midway through writing.
fn broken_checkpoint() -> Checkpoint {
    let mut c = ckpt::read::open(&fixtures_dir().join("cnn_state_dict.pth")).unwrap();
    let last = c.storages.len() - 1;
    let len = c.storages[last].data.source.len();
    c.storages[last].data.offset = len - 4;
    c
}

#[test]
fn a_failed_write_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let c = broken_checkpoint();
    assert!(try_sha256_hex(&c, c.tensors.last().unwrap()).is_err());
    for format in [OutFormat::Safetensors, OutFormat::Pth] {
        let out = tmp.path().join(format!("out.{}", format.name()));
        let err = write::write(&c, &out, &opts(format)).unwrap_err();
        assert!(matches!(err, Error::Io { .. } | Error::Malformed { .. }), "{err:?}");
        assert_eq!(dir_entries(tmp.path()), Vec::<String>::new(), "{format:?}");
        // Sharded: no shard, no index, and the directory it created is gone again.
        let dir = tmp.path().join("shards");
        assert!(write::write(&c, &dir, &shard_opts(format, 100)).is_err());
        assert_eq!(dir_entries(tmp.path()), Vec::<String>::new(), "{format:?} sharded");
    }
    // An existing output survives a failed overwrite.
    let out = tmp.path().join("keep.pth");
    std::fs::write(&out, b"precious").unwrap();
    let mut o = opts(OutFormat::Pth);
    o.force = true;
    assert!(write::write(&c, &out, &o).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    assert_eq!(dir_entries(tmp.path()), vec!["keep.pth".to_string()]);
}

#[test]
fn a_panic_or_failed_rename_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("out.bin");
    let r = std::panic::catch_unwind(|| {
        let mut f = write::atomic::AtomicFile::create(&target, true).unwrap();
        std::io::Write::write_all(f.file(), &[7u8; 4096]).unwrap();
        assert!(f.temp_path().exists());
        panic!("boom");
    });
    assert!(r.is_err());
    assert_eq!(dir_entries(tmp.path()), Vec::<String>::new());
    // The rename fails: the target is a directory that is not empty.
    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("x"), b"x").unwrap();
    let mut f = write::atomic::AtomicFile::create(&sub, true).unwrap();
    std::io::Write::write_all(f.file(), b"data").unwrap();
    assert!(matches!(f.commit(true), Err(Error::Write { .. })));
    assert_eq!(dir_entries(tmp.path()), vec!["sub".to_string()]);
    assert_eq!(dir_entries(&sub), vec!["x".to_string()]);
    // A set: the second rename fails, the first target is removed again.
    let mut set = write::atomic::AtomicSet::new();
    let a = tmp.path().join("a");
    let mut fa = write::atomic::AtomicFile::create(&a, true).unwrap();
    std::io::Write::write_all(fa.file(), b"a").unwrap();
    set.add(fa);
    set.add(write::atomic::AtomicFile::create(&sub, true).unwrap());
    assert!(set.commit(true).is_err());
    assert_eq!(dir_entries(tmp.path()), vec!["sub".to_string()]);
}

#[test]
fn outputs_that_replace_a_file_are_flushed_new_ones_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new.bin");
    assert!(!write::atomic::AtomicFile::create(&new, false).unwrap().durable());
    assert!(write::atomic::AtomicFile::create(&new, true).unwrap().durable());
    let old = tmp.path().join("old.bin");
    std::fs::write(&old, b"precious").unwrap();
    assert!(write::atomic::AtomicFile::create(&old, false).unwrap().durable());
}

#[test]
fn write_behind_leaves_a_growing_file_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("big.bin");
    let mut f = write::atomic::AtomicFile::create(&target, true).unwrap();
    let mut behind = f.write_behind();
    let mut expected = Vec::new();
    // 80 MiB in odd-sized pieces: several write-behind windows, none on a page boundary.
    for i in 0..97u32 {
        let piece: Vec<u8> = (0..(1 << 20) - 13 * i)
            .map(|j| (i.wrapping_mul(31) ^ j) as u8)
            .collect();
        std::io::Write::write_all(f.file(), &piece).unwrap();
        expected.extend_from_slice(&piece);
        behind.poll(f.file());
    }
    f.commit(false).unwrap();
    assert!(std::fs::read(&target).unwrap() == expected, "bytes differ");
}

#[test]
fn existing_outputs_need_force_and_inputs_are_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model.safetensors");
    std::fs::copy(fixtures_dir().join("model.safetensors"), &src).unwrap();
    let c = ckpt::read::open(&src).unwrap();
    let out = tmp.path().join("out.safetensors");
    std::fs::write(&out, b"precious").unwrap();
    assert!(matches!(
        write::write(&c, &out, &opts(OutFormat::Safetensors)),
        Err(Error::Exists { .. })
    ));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let mut forced = opts(OutFormat::Safetensors);
    forced.force = true;
    write::write(&c, &out, &forced).unwrap();
    assert_eq!(ckpt::read::open(&out).unwrap().tensors.len(), c.tensors.len());
    // OUT == IN: refused with or without force, also through another path or a hard link.
    let before = std::fs::read(&src).unwrap();
    for o in [opts(OutFormat::Safetensors), forced.clone()] {
        assert!(matches!(write::write(&c, &src, &o), Err(Error::SameFile { .. })));
    }
    let other_path = tmp.path().join(".").join("model.safetensors");
    assert!(matches!(
        write::write(&c, &other_path, &forced),
        Err(Error::SameFile { .. })
    ));
    let link = tmp.path().join("link.safetensors");
    std::fs::hard_link(&src, &link).unwrap();
    assert!(matches!(write::write(&c, &link, &forced), Err(Error::SameFile { .. })));
    assert!(matches!(
        check_output(&[src.as_path()], &link, true),
        Err(Error::SameFile { .. })
    ));
    assert_eq!(std::fs::read(&src).unwrap(), before);
    // A directory is where a Hugging Face layout goes: here its model.safetensors is the input.
    assert!(check_output(&[], tmp.path(), false).is_ok());
    assert!(matches!(
        write::write(&c, tmp.path(), &forced),
        Err(Error::SameFile { .. })
    ));
    assert_eq!(std::fs::read(&src).unwrap(), before);
    assert!(check_output(&[src.as_path()], &tmp.path().join("new.pth"), false).is_ok());
}

/// The checkpoint with every float32 storage cast to `to` (pending), as `convert --dtype` does.
fn cast_f32(mut c: Checkpoint, to: DType) -> Checkpoint {
    for (i, s) in c.storages.iter_mut().enumerate() {
        if c.tensors
            .iter()
            .filter(|t| t.storage.0 == i)
            .all(|t| t.dtype == DType::F32)
        {
            s.cast = Some(ckpt::model::Cast { from: DType::F32, to });
        }
    }
    for t in &mut c.tensors {
        if c.storages[t.storage.0].cast.is_some() {
            t.dtype = to;
        }
    }
    c
}

#[test]
fn pending_casts_are_applied_while_writing() {
    let tmp = tempfile::tempdir().unwrap();
    for rel in ["views.pth", "bigendian.pth", "tied_state_dict.pth"] {
        let orig = ckpt::read::open(&fixtures_dir().join(rel)).unwrap();
        for to in [DType::F16, DType::BF16] {
            let cast = cast_f32(orig.clone(), to);
            // What each tensor must hold: its float32 elements converted.
            let want: Vec<String> = orig
                .tensors
                .iter()
                .map(|t| {
                    let mut bytes = Vec::new();
                    ckpt::tensor_data::for_each_chunk::<Error>(&orig, t, |c| {
                        bytes.extend_from_slice(c);
                        Ok(())
                    })
                    .unwrap();
                    if t.dtype == DType::F32 && cast.storages[t.storage.0].cast.is_some() {
                        let mut out = Vec::new();
                        ckpt::elem::convert(DType::F32, to, &bytes, &mut out);
                        bytes = out;
                    }
                    use sha2::Digest;
                    sha2::Sha256::digest(&bytes)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                })
                .collect();
            let got: Vec<String> = cast.tensors.iter().map(|t| try_sha256_hex(&cast, t).unwrap()).collect();
            assert_eq!(got, want, "{rel}: streamed cast");
            let out = tmp.path().join(format!("{rel}.{to}.pth"));
            write::write(&cast, &out, &opts(OutFormat::Pth)).unwrap();
            let back = ckpt::read::open(&out).unwrap();
            assert!(back.storages.iter().all(|s| s.cast.is_none()));
            let d = pth_diffs(&cast, &back);
            assert!(d.is_empty(), "{rel} {to}: {d:?}");
            if not_in_safetensors(&cast).is_none() {
                let out = tmp.path().join(format!("{rel}.{to}.safetensors"));
                write::write(&cast, &out, &opts(OutFormat::Safetensors)).unwrap();
                let back = ckpt::read::open(&out).unwrap();
                let (mut a, mut b) = (summary(&cast), summary(&back));
                a.sort();
                b.sort();
                assert_eq!(a, b, "{rel} {to}");
            }
        }
    }
    // A cast the converter does not do fails cleanly and leaves nothing.
    let mut c = ckpt::read::open(&fixtures_dir().join("cnn_state_dict.pth")).unwrap();
    let i = c.tensors.iter().position(|t| t.dtype == DType::I64).unwrap();
    let sid = c.tensors[i].storage;
    c.storages[sid.0].cast = Some(ckpt::model::Cast {
        from: DType::I64,
        to: DType::F16,
    });
    c.tensors[i].dtype = DType::F16;
    let dir = tmp.path().join("bad");
    std::fs::create_dir(&dir).unwrap();
    for format in [OutFormat::Pth, OutFormat::Safetensors] {
        let err = write::write(&c, &dir.join("x"), &opts(format)).unwrap_err();
        assert!(err.to_string().contains("int64"), "{err}");
        assert_eq!(dir_entries(&dir), Vec::<String>::new());
    }
}

// --- random checkpoints ---------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ViewP {
    shape: Vec<u64>,
    stride: Vec<u64>,
    offset: u64,
    alt_dtype: bool,
    grad: bool,
    parameter: bool,
    placement: u8,
}

#[derive(Debug, Clone)]
struct StorageP {
    dtype: DType,
    big: bool,
    cuda: bool,
    slack: u64,
    at: u16,
    views: Vec<ViewP>,
}

#[derive(Debug, Clone)]
enum LeafP {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

fn leaf_node(l: &LeafP) -> Node {
    match l {
        LeafP::None => Node::None,
        LeafP::Bool(b) => Node::Bool(*b),
        LeafP::Int(i) => Node::Int(*i),
        LeafP::Float(f) => Node::Float(*f),
        LeafP::Str(s) => Node::Str(s.clone()),
        LeafP::Bytes(b) => Node::Bytes(b.clone()),
    }
}

fn view_strategy() -> impl Strategy<Value = ViewP> {
    (0usize..4)
        .prop_flat_map(|ndim| {
            (
                proptest::collection::vec(0u64..4, ndim),
                proptest::collection::vec(0u64..7, ndim),
                0u64..9,
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                0u8..4,
            )
        })
        .prop_map(|(shape, stride, offset, alt_dtype, grad, parameter, placement)| ViewP {
            shape,
            stride,
            offset,
            alt_dtype,
            grad,
            parameter,
            placement,
        })
}

fn storage_strategy() -> impl Strategy<Value = StorageP> {
    (
        proptest::sample::select(DType::ALL.to_vec()),
        any::<bool>(),
        proptest::bool::weighted(0.2),
        0u64..5,
        any::<u16>(),
        proptest::collection::vec(view_strategy(), 1..4),
    )
        .prop_map(|(dtype, big, cuda, slack, at, views)| StorageP {
            dtype,
            big,
            cuda,
            slack,
            at,
            views,
        })
}

fn leaf_strategy() -> impl Strategy<Value = LeafP> {
    prop_oneof![
        Just(LeafP::None),
        any::<bool>().prop_map(LeafP::Bool),
        any::<i64>().prop_map(LeafP::Int),
        (-300i32..300).prop_map(|i| LeafP::Int(i as i64)),
        any::<f64>().prop_map(LeafP::Float),
        "[a-zé✓ ._]{0,8}".prop_map(LeafP::Str),
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(LeafP::Bytes),
    ]
}

/// A dtype with the same element size and byte-swap unit (a second view type of one storage).
fn alt_of(d: DType) -> DType {
    match d {
        DType::F32 => DType::I32,
        DType::I32 | DType::U32 => DType::F32,
        DType::F16 => DType::BF16,
        DType::BF16 | DType::I16 | DType::U16 => DType::F16,
        DType::F64 => DType::I64,
        DType::I64 | DType::U64 => DType::F64,
        DType::U8 => DType::I8,
        DType::I8 | DType::Bool => DType::U8,
        DType::F8E4M3Fn | DType::F8E5M2 | DType::F8E4M3Fnuz | DType::F8E5M2Fnuz | DType::F8E8M0Fnu => DType::U8,
        DType::C32 | DType::C64 | DType::C128 => d,
    }
}

/// Builds the checkpoint over `data` (a file of random bytes). Tensors are numbered in the
/// order the structure holds them, as a reader numbers them.
fn build(path: &Path, storages: &[StorageP], leaves: &[(String, LeafP)], ordered: bool) -> Checkpoint {
    let source: Arc<Source> = Source::open(path).unwrap();
    let file_len = source.len();
    let mut model_storages = Vec::new();
    // (placement, tensor) in generation order.
    let mut pending: Vec<(u8, Tensor)> = Vec::new();
    for (si, s) in storages.iter().enumerate() {
        let esize = s.dtype.size() as u64;
        let mut need = 0u64;
        for v in &s.views {
            if v.shape.iter().all(|&d| d > 0) {
                let last = v.offset + v.shape.iter().zip(&v.stride).map(|(&d, &st)| (d - 1) * st).sum::<u64>();
                need = need.max(last + 1);
            }
        }
        let len = (need + s.slack) * esize;
        let offset = (s.at as u64) % (file_len - len + 1);
        model_storages.push(Storage {
            key: Some(si.to_string()),
            location: if s.cuda { "cuda:0".into() } else { "cpu".into() },
            byte_order: if s.big { ByteOrder::Big } else { ByteOrder::Little },
            data: DataRef {
                source: source.clone(),
                offset,
                len,
            },
            cast: None,
        });
        for v in &s.views {
            let dtype = if v.alt_dtype { alt_of(s.dtype) } else { s.dtype };
            let grad_ok = dtype.is_floating() || dtype.is_complex();
            pending.push((
                v.placement,
                Tensor {
                    name: String::new(),
                    dtype,
                    shape: v.shape.clone(),
                    stride: v.stride.clone(),
                    offset: if v.shape.iter().all(|&d| d > 0) { v.offset } else { 0 },
                    storage: StorageId(si),
                    requires_grad: grad_ok && v.grad,
                    parameter: dtype.is_floating() && v.parameter,
                },
            ));
        }
    }
    // The structure: tensors at the top, in a list, in a tuple with scalars, in an int-keyed
    // dict; scalars in a nested dict and a list.
    let mut tensors = Vec::new();
    let mut top = Vec::new();
    let mut list = Vec::new();
    let mut tuple = vec![Node::Int(1)];
    let mut int_dict = Vec::new();
    let mut slots: Vec<(u8, usize)> = Vec::new();
    for (i, (placement, _)) in pending.iter().enumerate() {
        slots.push((*placement, i));
    }
    // Placeholders, renumbered below.
    let node_for = |i: usize| Node::Tensor(usize::MAX - i);
    for &(p, i) in &slots {
        match p {
            0 => top.push((Key::Str(format!("t{i}")), node_for(i))),
            1 => list.push(node_for(i)),
            2 => tuple.push(node_for(i)),
            _ => int_dict.push((Key::Int(i as i64 * 7 - 3), node_for(i))),
        }
    }
    let meta_items: Vec<(Key, Node)> = leaves
        .iter()
        .map(|(k, l)| (Key::Str(k.clone()), leaf_node(l)))
        .collect();
    let mut items = top;
    items.push((Key::Str("list".into()), Node::List(list)));
    items.push((Key::Str("tuple".into()), Node::Tuple(tuple)));
    items.push((
        Key::Str("by_int".into()),
        Node::Dict {
            ordered: false,
            items: int_dict,
        },
    ));
    items.push((
        Key::Str("meta".into()),
        Node::Dict {
            ordered,
            items: meta_items,
        },
    ));
    items.push((
        Key::Str("seq".into()),
        Node::List(leaves.iter().map(|(_, l)| leaf_node(l)).collect()),
    ));
    let mut root = Node::Dict { ordered, items };
    // Renumber tensors in depth-first order.
    fn renumber(n: &mut Node, pending: &mut [(u8, Tensor)], tensors: &mut Vec<Tensor>) {
        match n {
            Node::Tensor(i) => {
                let gen = usize::MAX - *i;
                *i = tensors.len();
                tensors.push(pending[gen].1.clone());
            }
            Node::List(items) | Node::Tuple(items) => items.iter_mut().for_each(|c| renumber(c, pending, tensors)),
            Node::Dict { items, .. } => items.iter_mut().for_each(|(_, c)| renumber(c, pending, tensors)),
            _ => {}
        }
    }
    renumber(&mut root, &mut pending, &mut tensors);
    let metadata = ckpt::read::flatten::flatten(&root, &mut tensors);
    Checkpoint {
        format: Format::PthZip,
        root,
        tensors,
        storages: model_storages,
        metadata,
        globals: Default::default(),
        origin: Origin::Data,
        files: vec![path.to_path_buf()],
        module_classes: Default::default(),
        modules: Vec::new(),
        names: Default::default(),
    }
}

fn random_file(dir: &Path, seed: u64) -> PathBuf {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let path = dir.join("data.bin");
    std::fs::write(&path, bytes).unwrap();
    path
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_checkpoints_round_trip(
        storages in proptest::collection::vec(storage_strategy(), 0..4),
        leaves in proptest::collection::vec(("[a-z]{1,4}", leaf_strategy()), 0..5),
        ordered in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let data = random_file(tmp.path(), seed);
        // Unique metadata keys.
        let mut seen = std::collections::HashSet::new();
        let leaves: Vec<(String, LeafP)> = leaves.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
        let ckpt = build(&data, &storages, &leaves, ordered);

        // .pth: everything kept.
        let out = tmp.path().join("out.pth");
        write::write(&ckpt, &out, &opts(OutFormat::Pth)).unwrap();
        let back = ckpt::read::open(&out).unwrap();
        let d = pth_diffs(&ckpt, &back);
        prop_assert!(d.is_empty(), "{}", d.join("\n"));

        // safetensors: the tensors, materialized; the metadata as strings.
        let out = tmp.path().join("out.safetensors");
        let r = write::write(&ckpt, &out, &opts(OutFormat::Safetensors));
        if let Some(bad) = not_in_safetensors(&ckpt) {
            prop_assert!(matches!(&r, Err(Error::Unwritable { tensor, .. }) if tensor == &bad.name), "{r:?}");
            prop_assert!(!out.exists());
        } else {
            r.unwrap();
            let back = ckpt::read::open(&out).unwrap();
            let mut a = summary(&ckpt);
            let mut b = summary(&back);
            a.sort();
            b.sort();
            prop_assert_eq!(a, b);
            for (k, v) in &ckpt.metadata {
                let want = match v { serde_json::Value::String(s) => s.clone(), other => other.to_string() };
                prop_assert_eq!(back.metadata.get(k), Some(&serde_json::Value::String(want)));
            }
        }
        // Sharded .pth: storages stay whole within a shard.
        let dir = tmp.path().join("shards");
        write::write(&ckpt, &dir, &shard_opts(OutFormat::Pth, 64)).unwrap();
        let back = ckpt::read::open(&dir).unwrap();
        let mut a = summary(&ckpt);
        let mut b = summary(&back);
        a.sort();
        b.sort();
        prop_assert_eq!(a, b);
    }
}
