//! Transforms: on small in-memory checkpoints (every invariant of the model checked after each
//! one), and on the fixtures PyTorch wrote (against expected.json).

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use ckpt::dtype::DType;
use ckpt::model::{ByteOrder, Checkpoint, DataRef, Format, Key, Node, Origin, Storage, StorageId, Tensor};
use ckpt::source::Source;
use ckpt::transform::freeze::FlagSource;
use ckpt::transform::{self, DeviceRule, FreezeRule, Keep, KeepReason, Losses, Pattern, TransformError};
use ckpt::write::{OutFormat, WriteOptions};
use serde_json::Value as Json;

use crate::common::{expected, fixtures_dir};

// ------------------------------------------------------------------ in-memory checkpoints

/// Builds a checkpoint over a temporary file holding the storages' bytes.
pub struct Mk {
    bytes: Vec<u8>,
    storages: Vec<(u64, u64, String)>,
    tensors: Vec<Tensor>,
}

/// A checkpoint and the file its storages live in (kept while the checkpoint is used).
pub struct Built {
    pub ckpt: Checkpoint,
    _file: tempfile::NamedTempFile,
}

impl Mk {
    pub fn new() -> Mk {
        Mk {
            bytes: Vec::new(),
            storages: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn storage(&mut self, bytes: &[u8], location: &str) -> StorageId {
        let off = self.bytes.len() as u64;
        self.bytes.extend_from_slice(bytes);
        self.storages.push((off, bytes.len() as u64, location.into()));
        StorageId(self.storages.len() - 1)
    }

    pub fn f32s(&mut self, vals: &[f32]) -> StorageId {
        let b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.storage(&b, "cpu")
    }

    /// A contiguous view of `storage` from element `offset`.
    pub fn view(&mut self, storage: StorageId, dtype: DType, shape: &[u64], offset: u64) -> Node {
        let mut stride = vec![1u64; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        self.tensors.push(Tensor {
            name: String::new(),
            dtype,
            shape: shape.to_vec(),
            stride,
            offset,
            storage,
            requires_grad: false,
            parameter: false,
        });
        Node::Tensor(self.tensors.len() - 1)
    }

    /// A float32 tensor on its own storage.
    pub fn t(&mut self, vals: &[f32]) -> Node {
        let s = self.f32s(vals);
        self.view(s, DType::F32, &[vals.len() as u64], 0)
    }

    pub fn param(&mut self, vals: &[f32], requires_grad: bool) -> Node {
        let n = self.t(vals);
        let t = self.tensors.last_mut().unwrap();
        t.parameter = true;
        t.requires_grad = requires_grad;
        n
    }

    pub fn finish(self, root: Node) -> Built {
        self.finish_as(root, Format::PthZip, Origin::Data)
    }

    pub fn finish_as(self, root: Node, format: Format, origin: Origin) -> Built {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&self.bytes).unwrap();
        file.flush().unwrap();
        let source: Arc<Source> = Source::open(file.path()).expect("source");
        let storages = self
            .storages
            .iter()
            .enumerate()
            .map(|(i, (off, len, loc))| Storage {
                key: Some(i.to_string()),
                location: loc.clone(),
                byte_order: ByteOrder::Little,
                data: DataRef {
                    source: source.clone(),
                    offset: *off,
                    len: *len,
                },
                cast: None,
            })
            .collect();
        let mut tensors = self.tensors;
        let metadata = ckpt::read::flatten::flatten(&root, &mut tensors);
        let ckpt = Checkpoint {
            format,
            root,
            tensors,
            storages,
            metadata,
            globals: Default::default(),
            origin,
            files: Vec::new(),
            module_classes: Default::default(),
            modules: Vec::new(),
            names: Default::default(),
        };
        check_consistent(&ckpt);
        Built { ckpt, _file: file }
    }
}

pub fn dict(items: Vec<(&str, Node)>) -> Node {
    Node::Dict {
        ordered: true,
        items: items.into_iter().map(|(k, v)| (Key::Str(k.into()), v)).collect(),
    }
}

pub fn names(c: &Checkpoint) -> Vec<&str> {
    c.tensors.iter().map(|t| t.name.as_str()).collect()
}

/// The model's invariants: every leaf indexes a tensor, each tensor exactly once, in tensor
/// order; names are the leaves' paths; storages exist and all are used.
pub fn check_consistent(c: &Checkpoint) {
    fn leaves(n: &Node, out: &mut Vec<usize>) {
        match n {
            Node::Tensor(i) => out.push(*i),
            Node::List(v) | Node::Tuple(v) => v.iter().for_each(|n| leaves(n, out)),
            Node::Dict { items, .. } => items.iter().for_each(|(_, n)| leaves(n, out)),
            _ => {}
        }
    }
    let mut idx = Vec::new();
    leaves(&c.root, &mut idx);
    let mut sorted = idx.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), idx.len(), "a tensor index appears twice in the tree");
    assert_eq!(
        sorted,
        (0..c.tensors.len()).collect::<Vec<_>>(),
        "tree leaves and tensors disagree"
    );
    let mut renamed = c.tensors.clone();
    ckpt::read::flatten::flatten(&c.root, &mut renamed);
    for (a, b) in c.tensors.iter().zip(&renamed) {
        assert_eq!(a.name, b.name, "a tensor's name is not its path");
    }
    for t in &c.tensors {
        assert!(t.storage.0 < c.storages.len(), "{}: storage out of range", t.name);
    }
}

fn values_f32(c: &Checkpoint, name: &str) -> Vec<f32> {
    let t = c
        .tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no {name}"));
    let mut out = Vec::new();
    ckpt::tensor_data::for_each_chunk::<ckpt::Error>(c, t, |b| {
        out.extend(b.chunks_exact(4).map(|x| f32::from_le_bytes(x.try_into().unwrap())));
        Ok(())
    })
    .unwrap();
    out
}

fn keep(patterns: &[&str]) -> Keep {
    Keep {
        patterns: patterns.iter().map(|p| Pattern::new(p).unwrap()).collect(),
        norms: false,
    }
}

fn open(rel: &str) -> Checkpoint {
    ckpt::read::open(&fixtures_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn expected_names(rel: &str) -> Vec<String> {
    expected()["fixtures"][rel]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn expected_tensor(rel: &str, name: &str) -> Json {
    expected()["fixtures"][rel]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .cloned()
        .unwrap()
}

// ------------------------------------------------------------------------------------ cast

#[test]
fn cast_floats_only_and_keeps_what_it_must() {
    let mut m = Mk::new();
    let tied = m.f32s(&[1.0, 2.0, 3.0, 4.0]);
    let a = m.view(tied, DType::F32, &[4], 0);
    let b = m.view(tied, DType::F32, &[2, 2], 0);
    let ints = m.storage(&[1, 0, 0, 0, 0, 0, 0, 0], "cpu");
    let c = m.view(ints, DType::I64, &[1], 0);
    let halfs = m.storage(&[0, 0x3C], "cpu");
    let d = m.view(halfs, DType::F16, &[1], 0);
    let e = m.t(&[5.0]);
    // A storage shared with a kept tensor.
    let shared = m.f32s(&[7.0, 8.0]);
    let f = m.view(shared, DType::F32, &[2], 0);
    let g = m.view(shared, DType::F32, &[1], 1);
    let mut built = m.finish(dict(vec![
        ("a", a),
        ("b", b),
        ("c", c),
        ("d", d),
        ("keep.e", e),
        ("f", f),
        ("keep.g", g),
    ]));
    let ck = &mut built.ckpt;
    let r = transform::cast(ck, DType::F16, &keep(&["keep.*"]));
    let cast: Vec<&str> = r.cast.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(cast, ["a", "b"]);
    let kept: Vec<(&str, &KeepReason)> = r.kept.iter().map(|k| (k.name.as_str(), &k.reason)).collect();
    assert_eq!(
        kept,
        [
            ("c", &KeepReason::NotFloating),
            ("d", &KeepReason::AlreadyTarget),
            ("keep.e", &KeepReason::KeepPattern),
            ("f", &KeepReason::SharesStorageWithKept { other: "keep.g".into() }),
            ("keep.g", &KeepReason::KeepPattern),
        ]
    );
    assert_eq!(r.storages_cast, 1);
    assert_eq!(
        ck.storages[tied.0].cast,
        Some(ckpt::model::Cast {
            from: DType::F32,
            to: DType::F16
        })
    );
    assert!(ck
        .storages
        .iter()
        .enumerate()
        .all(|(i, s)| i == tied.0 || s.cast.is_none()));
    assert_eq!(ck.tensors[0].dtype, DType::F16);
    assert_eq!(ck.tensors[1].dtype, DType::F16);
    assert_eq!(ck.tensors[4].dtype, DType::F32);
    assert_eq!(r.bytes_before - r.bytes_after, 8);
    // Casting again: the pending cast is not composed.
    let r2 = transform::cast(ck, DType::BF16, &Keep::default());
    assert!(r2.kept.iter().any(|k| k.name == "a"
        && k.reason
            == KeepReason::PendingCast {
                from: DType::F32,
                to: DType::F16
            }));
    assert!(r2.cast.iter().any(|c| c.name == "keep.e"));
    assert!(r2.to_json()["kept"].is_array());
}

#[test]
fn cast_refuses_storages_viewed_as_two_dtypes() {
    let mut m = Mk::new();
    let s = m.f32s(&[1.0, 2.0]);
    let a = m.view(s, DType::F32, &[2], 0);
    let b = m.view(s, DType::F16, &[4], 0);
    let mut built = m.finish(dict(vec![("a", a), ("b", b)]));
    let r = transform::cast(&mut built.ckpt, DType::BF16, &Keep::default());
    assert!(r.cast.is_empty());
    assert_eq!(
        r.kept[0].reason,
        KeepReason::SharesStorageWithOtherDtype {
            other: "b".into(),
            dtype: DType::F16
        }
    );
    assert_eq!(
        r.kept[1].reason,
        KeepReason::SharesStorageWithOtherDtype {
            other: "a".into(),
            dtype: DType::F32
        }
    );
    // Casts go to floating dtypes only.
    let r = transform::cast(&mut built.ckpt, DType::I32, &Keep::default());
    assert!(r.cast.is_empty() && r.kept.iter().all(|k| k.reason == KeepReason::TargetNotFloating));
    assert!(built.ckpt.storages.iter().all(|s| s.cast.is_none()));
}

#[test]
fn overflow_report_counts_what_float16_cannot_hold() {
    let mut m = Mk::new();
    let a = m.t(&[1.0, 65504.0, 65519.0, 65520.0, -1e6, f32::INFINITY, f32::NAN, 3e38]);
    // A view of the middle two elements of a storage whose other elements overflow.
    let s = m.f32s(&[1e9, 2.0, 3.0, 1e9]);
    let b = m.view(s, DType::F32, &[2], 1);
    let c = m.t(&[0.5]);
    let mut built = m.finish(dict(vec![("a", a), ("b", b), ("c", c)]));
    transform::cast(&mut built.ckpt, DType::F16, &Keep::default());
    assert_eq!(
        transform::cast::loss_report(&built.ckpt),
        vec![("a".to_string(), overflow(3))]
    );
    assert_eq!(
        transform::try_loss_report(&built.ckpt, 2).unwrap(),
        vec![("a".to_string(), overflow(3))]
    );
    // bfloat16 holds all but 3e38, which rounds up past its largest value.
    let mut m = Mk::new();
    let a = m.t(&[65520.0, 3.0e38, 3.4e38]);
    let mut built = m.finish(dict(vec![("a", a)]));
    transform::cast(&mut built.ckpt, DType::BF16, &Keep::default());
    assert_eq!(
        transform::cast::loss_report(&built.ckpt),
        vec![("a".to_string(), overflow(1))]
    );
}

/// The converting pass counts what the cast loses as the separate count does, on every read
/// path: a contiguous tensor, a view inside an overflowing storage, a transposed view (read
/// by gathering) and a big-endian storage; a refusal leaves no file, for a safetensors output
/// (counted in the pass) as for .pth and sharded ones (counted beside the write).
#[test]
fn losses_counted_while_writing_are_the_separate_counts() {
    let mut m = Mk::new();
    let a = m.t(&[1.0, 65504.0, 65519.0, 65520.0, -1e6, f32::INFINITY, f32::NAN, 3e38]);
    let s = m.f32s(&[1e9, 2.0, 3.0, 1e9]);
    let inner = m.view(s, DType::F32, &[2], 1);
    // [[1e-8, 2.0], [1.0, 1e-30], [7e4, 3.0]] read column by column from a 2 x 3 storage.
    let s = m.f32s(&[1e-8, 1.0, 7e4, 2.0, 1e-30, 3.0]);
    let transposed = m.view(s, DType::F32, &[3, 2], 0);
    let big: Vec<u8> = [1e9f32, 1.0, -1e-9].iter().flat_map(|v| v.to_be_bytes()).collect();
    let s = m.storage(&big, "cpu");
    let be = m.view(s, DType::F32, &[3], 0);
    let root = dict(vec![("a", a), ("inner", inner), ("transposed", transposed), ("be", be)]);
    let mut built = m.finish(root);
    let t = built.ckpt.tensors.iter_mut().find(|t| t.name == "transposed").unwrap();
    t.stride = vec![1, 3];
    let be_storage = built.ckpt.tensors.iter().find(|t| t.name == "be").unwrap().storage;
    built.ckpt.storages[be_storage.0].byte_order = ByteOrder::Big;
    transform::cast(&mut built.ckpt, DType::F16, &Keep::default());
    // float16: |x| >= 65520 becomes inf; |x| at or below 2^-25 (about 2.98e-8) becomes 0.
    let lost = |overflow, underflow| Losses { overflow, underflow };
    let want = vec![
        ("a".to_string(), lost(3, 0)),
        ("transposed".to_string(), lost(1, 2)),
        ("be".to_string(), lost(1, 1)),
    ];
    assert_eq!(transform::try_loss_report(&built.ckpt, 2).unwrap(), want);
    let dir = tempfile::tempdir().unwrap();
    for (name, format, shard) in [
        ("o.safetensors", OutFormat::Safetensors, None),
        ("o.pth", OutFormat::Pth, None),
        ("s.safetensors", OutFormat::Safetensors, Some(16)),
    ] {
        let out = dir.path().join(name);
        let mut opts = WriteOptions::new(format);
        opts.max_shard_size = shard;
        let mut judged = Vec::new();
        let refused = ckpt::write::write_judging_losses(&built.ckpt, &out, &opts, 1, |l| {
            judged = l.to_vec();
            Err(ckpt::Error::Unsupported {
                path: out.clone(),
                what: "refused".into(),
            })
        });
        assert!(refused.is_err(), "{name}");
        assert_eq!(judged, want, "{name}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{name}: a refused write leaves nothing"
        );
        ckpt::write::write_judging_losses::<ckpt::Error>(&built.ckpt, &out, &opts, 1, |_| Ok(())).unwrap();
        assert!(std::fs::read_dir(dir.path()).unwrap().count() > 0, "{name}");
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
    }
}

fn overflow(n: u64) -> Losses {
    Losses {
        overflow: n,
        underflow: 0,
    }
}

#[test]
fn cast_fixture_to_half_then_values_are_pytorchs() {
    // Every float tensor of the CNN to float16; num_batches_tracked (int64) stays.
    let mut c = open("cnn_state_dict.pth");
    let before = c.clone();
    let r = transform::cast(&mut c, DType::F16, &Keep::default());
    assert_eq!(r.cast.len(), 14);
    assert_eq!(r.kept.len(), 1);
    assert_eq!(r.kept[0].name, "bn.num_batches_tracked");
    assert!(transform::cast::loss_report(&c).is_empty());
    // The cast values are elem::convert's; compare with half's conversion of the source.
    let t = before.tensors.iter().find(|t| t.name == "fc1.weight").unwrap();
    let mut src = Vec::new();
    ckpt::tensor_data::for_each_chunk::<ckpt::Error>(&before, t, |b| {
        src.extend_from_slice(b);
        Ok(())
    })
    .unwrap();
    let mut out = Vec::new();
    ckpt::elem::convert(DType::F32, DType::F16, &src, &mut out);
    for (x, h) in src.chunks_exact(4).zip(out.chunks_exact(2)) {
        let x = f32::from_le_bytes(x.try_into().unwrap());
        assert_eq!(u16::from_le_bytes([h[0], h[1]]), half::f16::from_f32(x).to_bits());
    }
}

// ---------------------------------------------------------------------------------- device

#[test]
fn set_device_all_and_mapped() {
    let mut m = Mk::new();
    let s0 = m.storage(&[0; 4], "cpu");
    let s1 = m.storage(&[0; 4], "cuda:0");
    let s2 = m.storage(&[0; 8], "cuda:1");
    let a = m.view(s0, DType::F32, &[1], 0);
    let b = m.view(s1, DType::F32, &[1], 0);
    let c = m.view(s2, DType::F32, &[1], 0);
    let d = m.view(s2, DType::F32, &[1], 1);
    let mut built = m.finish(dict(vec![("a", a), ("b", b), ("c", c), ("d", d)]));
    let ck = &mut built.ckpt;
    let r = transform::set_device(ck, &DeviceRule::parse("cuda:1=cuda:0").unwrap());
    assert_eq!((r.storages_changed, r.storages_unchanged, r.tensors_moved), (1, 2, 2));
    let locs: Vec<&str> = ck.storages.iter().map(|s| s.location.as_str()).collect();
    assert_eq!(locs, ["cpu", "cuda:0", "cuda:0"]);
    let r = transform::set_device(ck, &DeviceRule::parse("cpu").unwrap());
    assert_eq!((r.storages_changed, r.storages_unchanged, r.tensors_moved), (2, 1, 3));
    assert!(ck.storages.iter().all(|s| s.location == "cpu"));
}

#[test]
fn set_device_on_gpu_tagged_fixture() {
    let mut c = open("gpu_tagged.pth");
    assert!(c.storages.iter().all(|s| s.location == "cuda:0"));
    let r = transform::set_device(&mut c, &DeviceRule::parse("cuda=cpu").unwrap());
    assert_eq!(r.storages_changed, 4);
    assert!(c.storages.iter().all(|s| s.location == "cpu"));
    assert!(matches!(
        DeviceRule::parse("gpu:x"),
        Err(TransformError::BadDevice { .. })
    ));
}

// ---------------------------------------------------------------------------------- rename

#[test]
fn rename_strips_only_where_present_and_adds() {
    let mut m = Mk::new();
    let a = m.t(&[1.0]);
    let b = m.t(&[2.0]);
    let c = m.t(&[3.0]);
    let d = m.t(&[4.0]);
    let mut built = m.finish(dict(vec![
        ("module.conv.weight", a),
        ("_orig_mod.module.fc.bias", b),
        ("head.weight", c),
        ("modulex.w", d),
        ("epoch", Node::Int(3)),
    ]));
    let ck = &mut built.ckpt;
    let r = transform::rename(ck, &["module".into(), "_orig_mod.".into()], None).unwrap();
    assert_eq!(names(ck), ["conv.weight", "fc.bias", "head.weight", "modulex.w"]);
    assert_eq!(r.renamed.len(), 2);
    assert_eq!(r.unchanged, 2);
    assert_eq!(r.stripped, [("module.".to_string(), 2), ("_orig_mod.".to_string(), 1)]);
    check_consistent(ck);
    assert_eq!(ck.metadata.get("epoch"), Some(&Json::from(3)));
    let r = transform::rename(ck, &[], Some("model")).unwrap();
    assert_eq!(
        names(ck),
        [
            "model.conv.weight",
            "model.fc.bias",
            "model.head.weight",
            "model.modulex.w"
        ]
    );
    assert_eq!(r.added.as_deref(), Some("model."));
    assert_eq!(
        ck.metadata.get("epoch"),
        Some(&Json::from(3)),
        "metadata entries keep their keys"
    );
    assert_eq!(values_f32(ck, "model.fc.bias"), [2.0]);
    check_consistent(ck);
    // A prefix no tensor has is refused, naming it, and nothing changes.
    let before: Vec<String> = names(ck).iter().map(|n| n.to_string()).collect();
    let e = transform::rename(ck, &["model.".into(), "foo".into()], None).unwrap_err();
    assert!(
        matches!(e, TransformError::NoMatch { ref patterns, .. } if patterns == &["foo."]),
        "{e}"
    );
    assert!(e.to_string().contains("top-level names: model"), "{e}");
    assert_eq!(names(ck), before);
}

#[test]
fn rename_collision_names_both_and_changes_nothing() {
    let mut m = Mk::new();
    let a = m.t(&[1.0]);
    let b = m.t(&[2.0]);
    let mut built = m.finish(dict(vec![("module.fc.weight", a), ("fc.weight", b)]));
    let before = names(&built.ckpt).join(",");
    let e = transform::rename(&mut built.ckpt, &["module.".into()], None).unwrap_err();
    match &e {
        TransformError::Collision { a, b, name } => {
            assert_eq!(
                (a.as_str(), b.as_str(), name.as_str()),
                ("module.fc.weight", "fc.weight", "fc.weight")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("module.fc.weight") && e.to_string().contains("'fc.weight'"));
    assert_eq!(names(&built.ckpt).join(","), before);
    assert!(matches!(
        transform::rename(&mut built.ckpt, &[".".into()], None),
        Err(TransformError::BadPattern { .. })
    ));
}

#[test]
fn rename_in_nested_trees() {
    // A training checkpoint: the model's keys lose `module.` where they are; the module level
    // of a nested dict is dissolved; optimizer state and metadata are untouched.
    let mut m = Mk::new();
    let w = m.t(&[1.0]);
    let x = m.t(&[2.0]);
    let s = m.t(&[3.0]);
    let opt = Node::Dict {
        ordered: false,
        items: vec![(Key::Int(0), dict(vec![("exp_avg", s)]))],
    };
    let mut built = m.finish(dict(vec![
        ("model", dict(vec![("module.conv.weight", w)])),
        ("nested", dict(vec![("module", dict(vec![("fc.bias", x)]))])),
        ("optimizer", dict(vec![("state", opt), ("module.lr", Node::Float(0.1))])),
    ]));
    let ck = &mut built.ckpt;
    let r = transform::rename(ck, &["module.".into()], None).unwrap();
    assert_eq!(
        names(ck),
        ["model.conv.weight", "nested.fc.bias", "optimizer.state.0.exp_avg"]
    );
    assert_eq!(r.stripped[0].1, 2);
    assert!(ck.metadata.contains_key("optimizer.module.lr"), "{:?}", ck.metadata);
    check_consistent(ck);
    // Adding goes on top-level entries holding tensors.
    transform::rename(ck, &[], Some("x.")).unwrap();
    assert_eq!(
        names(ck),
        ["x.model.conv.weight", "x.nested.fc.bias", "x.optimizer.state.0.exp_avg"]
    );
    // A root tensor is wrapped.
    let mut m = Mk::new();
    let t = m.t(&[1.0]);
    let mut built = m.finish(t);
    assert_eq!(names(&built.ckpt), [""]);
    transform::rename(&mut built.ckpt, &[], Some("w")).unwrap();
    assert_eq!(names(&built.ckpt), ["w"]);
    check_consistent(&built.ckpt);
}

#[test]
fn rename_dataparallel_and_compiled_give_the_plain_names() {
    let want = expected_names("cnn_state_dict.pth");
    for (rel, prefix) in [("dataparallel.pth", "module."), ("compiled.pth", "_orig_mod.")] {
        let mut c = open(rel);
        let r = transform::rename(&mut c, &[prefix.into()], None).unwrap();
        assert_eq!(names(&c), want, "{rel}");
        assert_eq!(r.renamed.len(), 15);
        assert_eq!(
            r.renamed[0],
            (format!("{prefix}conv1.weight"), "conv1.weight".to_string())
        );
        check_consistent(&c);
        // Same values as the plain state dict (the fixtures share one seed).
        let d = ckpt::diff::diff(&c, &open("cnn_state_dict.pth"), 0.0);
        assert!(d.is_equal(), "{rel}:\n{}", d.to_text());
        assert_eq!(d.identical.len(), 15);
    }
}

// ---------------------------------------------------------------------------------- select

#[test]
fn select_subtrees() {
    let mut m = Mk::new();
    let a = m.t(&[1.0]);
    let b = m.t(&[2.0]);
    let c = m.t(&[3.0]);
    let e = m.t(&[4.0]);
    let built = m.finish(dict(vec![
        (
            "model",
            dict(vec![("enc.0.weight", a), ("enc.1.weight", b), ("head.bias", c)]),
        ),
        (
            "opt",
            Node::List(vec![Node::Int(1), dict(vec![("m", e), ("lr", Node::Float(0.5))])]),
        ),
        ("epoch", Node::Int(2)),
    ]));
    let ck = &built.ckpt;
    let s = transform::select(ck, "model").unwrap();
    assert_eq!(names(&s), ["enc.0.weight", "enc.1.weight", "head.bias"]);
    assert_eq!(s.storages.len(), 3);
    assert!(s.metadata.is_empty());
    check_consistent(&s);
    assert_eq!(values_f32(&s, "head.bias"), [3.0]);
    // A module inside a flat dict.
    let s = transform::select(ck, "model.enc").unwrap();
    assert_eq!(names(&s), ["0.weight", "1.weight"]);
    assert_eq!(values_f32(&s, "1.weight"), [2.0]);
    check_consistent(&s);
    // Through a list.
    let s = transform::select(ck, "opt.1").unwrap();
    assert_eq!(names(&s), ["m"]);
    assert_eq!(s.metadata.get("lr"), Some(&Json::from(0.5)));
    assert_eq!(values_f32(&s, "m"), [4.0]);
    // Errors.
    match transform::select(ck, "modle") {
        Err(TransformError::UnknownPath { keys, .. }) => assert_eq!(keys, ["model", "opt", "epoch"]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        transform::select(ck, "epoch"),
        Err(TransformError::NoTensors { .. })
    ));
    assert!(transform::select(ck, "modle")
        .unwrap_err()
        .to_string()
        .contains("model, opt, epoch"));
}

#[test]
fn select_model_state_dict_of_training_checkpoint() {
    let c = open("training_checkpoint.pth");
    let s = transform::select(&c, "model_state_dict").unwrap();
    assert_eq!(names(&s), expected_names("cnn_state_dict.pth"));
    assert!(s.metadata.is_empty());
    assert_eq!(s.storages.len(), 15);
    check_consistent(&s);
    for t in &s.tensors {
        let want = expected_tensor("training_checkpoint.pth", &format!("model_state_dict.{}", t.name));
        assert_eq!(
            ckpt::tensor_data::sha256_hex(&s, t),
            want["sha256"].as_str().unwrap(),
            "{}",
            t.name
        );
    }
    // conv1 was frozen during training: equal to the untrained CNN; the rest moved.
    let d = ckpt::diff::diff(&s, &open("cnn_state_dict.pth"), 0.0);
    assert_eq!(d.identical, ["conv1.weight", "conv1.bias"]);
    assert_eq!(d.values_changed.len(), 13, "{}", d.to_text());
    let o = transform::select(&c, "optimizer_state_dict").unwrap();
    assert_eq!(o.tensors.len(), 30);
    assert_eq!(o.tensors[0].name, "state.2.step");
    assert!(o.metadata.contains_key("param_groups"));
    let e = transform::select(&c, "model").unwrap_err().to_string();
    assert!(
        e.contains("model_state_dict") && e.contains("optimizer_state_dict") && e.contains("epoch"),
        "{e}"
    );
}

// ------------------------------------------------------------------------------------ drop

#[test]
fn drop_by_module_prefix_and_glob() {
    let mut m = Mk::new();
    let tied = m.f32s(&[1.0, 2.0]);
    let emb = m.view(tied, DType::F32, &[2], 0);
    let head = m.view(tied, DType::F32, &[2], 0);
    let fc_w = m.t(&[3.0]);
    let fc0 = m.t(&[4.0]);
    let fc1 = m.t(&[5.0]);
    let nbt = m.t(&[6.0]);
    let in_list = m.t(&[7.0]);
    let keep_list = m.t(&[8.0]);
    let sub_x = m.t(&[9.0]);
    let mut built = m.finish(dict(vec![
        ("emb.weight", emb),
        ("fc.weight", fc_w),
        ("fc.0.weight", fc0),
        ("fc1.weight", fc1),
        ("bn.num_batches_tracked", nbt),
        ("group", dict(vec![("only", Node::List(vec![in_list, keep_list]))])),
        ("sub", dict(vec![("x", sub_x)])),
        ("head.weight", head),
    ]));
    let ck = &mut built.ckpt;
    assert_eq!(ck.storages.len(), 8);
    let r = transform::drop_layers(
        ck,
        &["fc".into(), "*.num_batches_tracked".into(), "group.only.0".into()],
    )
    .unwrap();
    assert_eq!(
        r.removed,
        ["fc.weight", "fc.0.weight", "bn.num_batches_tracked", "group.only.0"]
    );
    assert_eq!(r.removed_params, 4);
    assert_eq!(
        r.per_pattern,
        [
            ("fc".to_string(), 2),
            ("*.num_batches_tracked".to_string(), 1),
            ("group.only.0".to_string(), 1)
        ]
    );
    assert_eq!(
        names(ck),
        ["emb.weight", "head.weight", "fc1.weight", "group.only.1", "sub.x"],
        "list siblings keep their index"
    );
    assert_eq!(
        ck.metadata.get("group.only.0"),
        Some(&Json::Null),
        "a dropped list element becomes None"
    );
    assert_eq!(r.storages_removed, 4);
    assert_eq!(ck.storages.len(), 4);
    check_consistent(ck);
    assert_eq!(values_f32(ck, "fc1.weight"), [5.0]);
    assert_eq!(values_f32(ck, "head.weight"), [1.0, 2.0]);
    assert_eq!(values_f32(ck, "group.only.1"), [8.0]);
    // Dropping one of two tied tensors keeps the storage.
    transform::drop_layers(ck, &["head".into()]).unwrap();
    assert_eq!(ck.storages.len(), 4);
    // A dict emptied by the drop goes away.
    transform::drop_layers(ck, &["sub".into()]).unwrap();
    assert!(!matches!(&ck.root, Node::Dict { items, .. } if items.iter().any(|(k, _)| k.to_string() == "sub")));
    assert_eq!(names(ck), ["emb.weight", "fc1.weight", "group.only.1"]);
    check_consistent(ck);
}

#[test]
fn drop_pattern_matching_nothing_is_an_error() {
    let mut c = open("cnn_state_dict.pth");
    // `fc` is no module of this CNN (it has fc1, fc2, fc3): a typo must not pass.
    let e = transform::drop_layers(&mut c, &["fc3".into(), "fc".into(), "layer4.*".into()]).unwrap_err();
    assert_eq!(
        e,
        TransformError::NoMatch {
            patterns: vec!["fc".into(), "layer4.*".into()],
            hint: "top-level names: conv1, conv2, bn, fc1, fc2, fc3".into()
        }
    );
    assert!(e.to_string().contains("'fc', 'layer4.*'"), "{e}");
    assert_eq!(c.tensors.len(), 15, "nothing dropped");
    assert!(matches!(
        transform::drop_layers(&mut c, &["a[".into()]),
        Err(TransformError::BadPattern { .. })
    ));
}

#[test]
fn drop_head_of_cnn_fixture() {
    let mut c = open("cnn_state_dict.pth");
    let params_before = c.total_params();
    let r = transform::drop_layers(&mut c, &["fc3".into(), "*.num_batches_tracked".into()]).unwrap();
    assert_eq!(r.removed, ["bn.num_batches_tracked", "fc3.weight", "fc3.bias"]);
    assert_eq!(r.removed_params, 1 + 120 + 10);
    assert_eq!(c.total_params(), params_before - 131);
    let mut want = expected_names("cnn_state_dict.pth");
    want.retain(|n| !n.starts_with("fc3.") && n != "bn.num_batches_tracked");
    assert_eq!(names(&c), want);
    assert_eq!(c.storages.len(), 12);
    check_consistent(&c);
    for t in &c.tensors {
        let w = expected_tensor("cnn_state_dict.pth", &t.name);
        assert_eq!(ckpt::tensor_data::sha256_hex(&c, t), w["sha256"].as_str().unwrap());
    }
    let mut c = open("cnn_state_dict.pth");
    let r = transform::drop_layers(&mut c, &["fc*".into()]).unwrap();
    assert_eq!(r.removed.len(), 6);
    // A training checkpoint without its optimizer.
    let mut t = open("training_checkpoint.pth");
    let r = transform::drop_layers(&mut t, &["optimizer_state_dict".into()]).unwrap();
    assert_eq!(r.removed.len(), 30);
    assert_eq!(t.tensors.len(), 15);
    assert!(t.metadata.contains_key("epoch"));
    assert!(
        t.metadata.contains_key("optimizer_state_dict.param_groups"),
        "metadata stays"
    );
    check_consistent(&t);
}

// ---------------------------------------------------------------------------------- freeze

#[test]
fn freeze_rules_later_win_and_tied_follow() {
    let mut m = Mk::new();
    let tied = m.f32s(&[1.0, 2.0]);
    let emb = m.view(tied, DType::F32, &[2], 0);
    m.tensors.last_mut().unwrap().parameter = true;
    m.tensors.last_mut().unwrap().requires_grad = true;
    let enc0 = m.param(&[1.0, 2.0, 3.0], true);
    let enc1 = m.param(&[1.0], true);
    let buf = m.t(&[0.0; 4]);
    let head = m.view(tied, DType::F32, &[2], 0);
    m.tensors.last_mut().unwrap().parameter = true;
    m.tensors.last_mut().unwrap().requires_grad = true;
    let mut built = m.finish_as(
        dict(vec![
            ("emb.weight", emb),
            ("enc.0.weight", enc0),
            ("enc.1.weight", enc1),
            ("mask", buf),
            ("head.weight", head),
        ]),
        Format::PthZip,
        Origin::WholeModel,
    );
    let ck = &mut built.ckpt;
    let rules = vec![
        (FreezeRule::Freeze, "enc".to_string()),
        (FreezeRule::Unfreeze, "enc.1".to_string()),
        (FreezeRule::Freeze, "head".to_string()),
        (FreezeRule::Freeze, "mask".to_string()),
    ];
    let r = transform::freeze::freeze(ck, &rules);
    assert!(r.file_has_flags);
    let flags: Vec<(&str, bool, FlagSource)> = r
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.requires_grad, e.source))
        .collect();
    assert_eq!(
        flags,
        [
            ("emb.weight", false, FlagSource::Pattern),
            ("enc.0.weight", false, FlagSource::Pattern),
            ("enc.1.weight", true, FlagSource::Pattern),
            ("head.weight", false, FlagSource::Pattern),
        ]
    );
    assert_eq!(r.tied, [("head.weight".to_string(), "emb.weight".to_string())]);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].0, "mask");
    assert_eq!(r.unmatched_patterns, ["mask"]);
    assert_eq!((r.trainable_params, r.frozen_params, r.defaulted_tensors), (1, 5, 0));
    assert_eq!(
        r.summary(),
        "trainable params: 1 || all params: 6 || trainable%: 16.6667"
    );
    assert!(!ck.tensors[0].requires_grad && ck.tensors[2].requires_grad);
    assert!(!ck.tensors[3].parameter, "a buffer stays a buffer");
    // The tied pair counts once, as in PyTorch's model.parameters().
    assert_eq!(r.entries[3].shared_with.as_deref(), Some("emb.weight"));
    // try_freeze refuses the unmatched pattern and changes nothing.
    let e = transform::try_freeze(
        ck,
        &[
            (FreezeRule::Unfreeze, "emb".into()),
            (FreezeRule::Freeze, "mask".into()),
        ],
    )
    .unwrap_err();
    assert!(matches!(e, TransformError::NoMatch { ref patterns, .. } if patterns == &["mask"]));
    assert!(!ck.tensors[0].requires_grad);
}

#[test]
fn freeze_without_flags_defaults_to_trainable_and_uses_the_buffer_heuristic() {
    let mut m = Mk::new();
    let w = m.t(&[1.0, 2.0]);
    let rm = m.t(&[0.0, 0.0]);
    let ints = m.storage(&[0; 8], "cpu");
    let nbt = m.view(ints, DType::I64, &[], 0);
    let b = m.t(&[1.0]);
    let exp = m.t(&[1.0]);
    let mut built = m.finish(dict(vec![
        ("bn.weight", w),
        ("bn.running_mean", rm),
        ("bn.num_batches_tracked", nbt),
        ("fc.bias", b),
        ("optimizer", dict(vec![("exp_avg", exp)])),
    ]));
    let ck = &mut built.ckpt;
    let r = transform::freeze::freeze(ck, &[]);
    assert!(!r.file_has_flags);
    assert_eq!(
        r.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["bn.weight", "fc.bias"]
    );
    assert!(r
        .entries
        .iter()
        .all(|e| e.source == FlagSource::Default && e.requires_grad));
    assert_eq!((r.trainable_params, r.frozen_params, r.defaulted_tensors), (3, 0, 2));
    assert_eq!(
        r.summary(),
        "trainable params: 3 || all params: 3 || trainable%: 100.0000"
    );
    assert!(r.note().unwrap().contains("load_state_dict"));
    assert_eq!(r.to_json()["tensors"][0]["source"], "default");
    let r = transform::freeze::freeze(ck, &[(FreezeRule::Freeze, "bn".into())]);
    assert_eq!(r.entries[0].source, FlagSource::Pattern);
    assert!(!r.entries[0].requires_grad);
    assert_eq!(r.entries[1].source, FlagSource::Default);
    assert_eq!(
        r.skipped.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["bn.running_mean", "bn.num_batches_tracked"]
    );
    assert!(ck.tensors[0].parameter && !ck.tensors[1].parameter);
    assert_eq!(
        r.summary(),
        "trainable params: 1 || all params: 3 || trainable%: 33.3333"
    );
}

/// PyTorch's trainable / frozen parameter counts of a fixture; a parameter pickled twice (tied
/// weights: one storage group, one shape) counts once, as in `model.parameters()`.
fn trainable_from_expected(rel: &str) -> (u64, u64) {
    let mut t = 0;
    let mut f = 0;
    let mut seen = HashSet::new();
    for e in expected()["fixtures"][rel]["tensors"].as_array().unwrap() {
        if e["parameter"] == Json::Bool(true)
            && seen.insert((
                e["storage_group"].to_string(),
                e["shape"].to_string(),
                e["storage_offset"].to_string(),
            ))
        {
            let n: u64 = e["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .product();
            if e["requires_grad"] == Json::Bool(true) {
                t += n
            } else {
                f += n
            }
        }
    }
    (t, f)
}

#[test]
fn freeze_report_of_fixtures_with_flags_matches_pytorch() {
    for rel in [
        "cnn_model.pth",
        "cnn_keep_vars.pth",
        "torchscript_cnn.pt",
        "legacy_model.pth",
        "tied_model.pth",
        "nested_containers.pth",
    ] {
        let mut c = open(rel);
        let r = transform::freeze::freeze(&mut c, &[]);
        assert!(r.file_has_flags, "{rel}");
        assert_eq!(
            (r.trainable_params, r.frozen_params),
            trainable_from_expected(rel),
            "{rel}"
        );
        assert_eq!(r.defaulted_tensors, 0);
        assert_eq!(r.note(), None);
        for e in &r.entries {
            let w = expected_tensor(rel, &e.name);
            assert_eq!(w["parameter"], Json::Bool(true), "{rel} {}", e.name);
            assert_eq!(
                w["requires_grad"].as_bool().unwrap(),
                e.requires_grad,
                "{rel} {}",
                e.name
            );
            assert_eq!(e.source, FlagSource::File);
        }
    }
    let mut c = open("cnn_model.pth");
    let r = transform::freeze::freeze(&mut c, &[]);
    let frozen: Vec<&str> = r
        .entries
        .iter()
        .filter(|e| !e.requires_grad)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(frozen, ["conv1.weight", "conv1.bias"]);
    assert_eq!(r.entries.len(), 12, "BN running stats and the counter are buffers");
    let (t, f) = trainable_from_expected("cnn_model.pth");
    assert_eq!(
        r.summary(),
        format!(
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            sep(t),
            sep(t + f),
            100.0 * t as f64 / (t + f) as f64
        )
    );
    let j = r.to_json();
    assert_eq!(j["flags"], "file");
    assert_eq!(j["frozen_params"], f);
    // Unfreezing conv1 makes everything trainable.
    let r = transform::freeze::freeze(&mut c, &[(FreezeRule::Unfreeze, "conv1".into())]);
    assert_eq!(r.frozen_params, 0);
    assert_eq!(r.entries.iter().filter(|e| e.source == FlagSource::Pattern).count(), 2);
    // Tied weights: freezing the head freezes the embedding (one Parameter in PyTorch).
    let mut c = open("tied_model.pth");
    let r = transform::freeze::freeze(&mut c, &[(FreezeRule::Freeze, "head".into())]);
    assert_eq!(r.tied, [("head.weight".to_string(), "emb.weight".to_string())]);
    assert!(!c.tensors.iter().find(|t| t.name == "emb.weight").unwrap().requires_grad);
}

#[test]
fn freeze_report_of_plain_state_dict_defaults_to_trainable() {
    let mut c = open("cnn_state_dict.pth");
    let r = transform::freeze::freeze(&mut c, &[]);
    assert!(!r.file_has_flags);
    let model = open("cnn_model.pth");
    let params: Vec<&str> = model
        .tensors
        .iter()
        .filter(|t| t.parameter)
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        r.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        params,
        "the heuristic finds exactly the model's parameters"
    );
    assert_eq!(r.defaulted_tensors, 12);
    let (t, f) = trainable_from_expected("cnn_model.pth");
    assert_eq!((r.trainable_params, r.frozen_params), (t + f, 0));
    assert_eq!(r.to_json()["flags"], "none");
    // The training checkpoint: optimizer state is not counted as parameters.
    let mut c = open("training_checkpoint.pth");
    let r = transform::freeze::freeze(&mut c, &[]);
    assert_eq!(r.entries.len(), 12);
    assert!(r.entries.iter().all(|e| e.name.starts_with("model_state_dict.")));
    // Setting flags on a plain state dict by pattern.
    let mut c = open("cnn_state_dict.pth");
    let r = transform::try_freeze(
        &mut c,
        &[(FreezeRule::Unfreeze, "*".into()), (FreezeRule::Freeze, "conv1".into())],
    )
    .unwrap();
    assert_eq!((r.trainable_params, r.frozen_params, r.defaulted_tensors), (t, f, 0));
    assert!(c.tensors.iter().filter(|t| t.parameter).count() == 12);
}

fn sep(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[test]
fn transforms_keep_every_fixture_consistent() {
    let fixtures = expected();
    for rel in fixtures["fixtures"].as_object().unwrap().keys() {
        let c = open(rel);
        check_consistent(&c);
        // Strip (where the prefix is there) + add + drop-all-but-first on every fixture: still
        // consistent, names as asked.
        let mut r = c.clone();
        let strip: Vec<String> = if c.tensors.iter().any(|t| t.name.starts_with("module.")) {
            vec!["module.".into()]
        } else {
            vec![]
        };
        transform::rename(&mut r, &strip, Some("p")).unwrap();
        check_consistent(&r);
        assert!(
            r.tensors.iter().all(|t| t.name.starts_with("p.") || t.name == "p"),
            "{rel}: {:?}",
            names(&r)
        );
        if c.tensors.len() > 1 {
            let mut d = c.clone();
            let rest: Vec<String> = c.tensors[1..]
                .iter()
                .map(|t| t.name.clone())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            transform::drop_layers(&mut d, &rest).unwrap();
            check_consistent(&d);
            assert!(!d.tensors.is_empty());
        }
    }
}
