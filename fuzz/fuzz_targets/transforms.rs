//! Transform sequences: a fixture (embedded at build time) is read, up to six fuzzed
//! transforms (cast with keep patterns and --keep-norms, device rules, renames, drop_layers,
//! freeze, select) are applied to it (a transform's error is fine: it must then change nothing we rely on), and
//! the result is written as .pth and as safetensors and read back. Nothing may panic; what a
//! writer wrote must read back as the transformed checkpoint's tensors: the same names (in
//! order for .pth, as a set for safetensors), dtypes, shapes and contents.
#![no_main]
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

use ckpt::dtype::DType;
use ckpt::model::{Checkpoint, Node, Origin};
use ckpt::tensor_data::try_sha256_hex;
use ckpt::transform::{self, DeviceRule, FreezeRule};
use ckpt::write::{write, OutFormat, WriteOptions};

/// (file name under the fuzz temp dir, bytes); a name with a `/` goes into a subdirectory.
const FIXTURES: &[(&str, &[u8])] = &[
    ("views.pth", include_bytes!("../../fixtures/views.pth")),
    ("model.safetensors", include_bytes!("../../fixtures/model.safetensors")),
    ("nested_containers.pth", include_bytes!("../../fixtures/nested_containers.pth")),
    ("bigendian.pth", include_bytes!("../../fixtures/bigendian.pth")),
    ("legacy_views.pth", include_bytes!("../../fixtures/legacy_views.pth")),
    ("gpu_tagged.pth", include_bytes!("../../fixtures/gpu_tagged.pth")),
    ("dtypes.pth", include_bytes!("../../fixtures/dtypes.pth")),
    ("lstm_state_dict.pth", include_bytes!("../../fixtures/lstm_state_dict.pth")),
    ("tied_state_dict.pth", include_bytes!("../../fixtures/tied_state_dict.pth")),
    ("cnn_keep_vars.pth", include_bytes!("../../fixtures/cnn_keep_vars.pth")),
    ("cnn_model.pth", include_bytes!("../../fixtures/cnn_model.pth")),
    ("dataparallel.pth", include_bytes!("../../fixtures/dataparallel.pth")),
    ("training_checkpoint.pth", include_bytes!("../../fixtures/training_checkpoint.pth")),
    ("torchscript_cnn.pt", include_bytes!("../../fixtures/torchscript_cnn.pt")),
    ("sharded_st/model.safetensors.index.json", include_bytes!("../../fixtures/sharded_st/model.safetensors.index.json")),
    ("sharded_st/model-00001-of-00002.safetensors", include_bytes!("../../fixtures/sharded_st/model-00001-of-00002.safetensors")),
    ("sharded_st/model-00002-of-00002.safetensors", include_bytes!("../../fixtures/sharded_st/model-00002-of-00002.safetensors")),
];

/// The fixtures a `which` byte chooses from (the sharded set by its index).
const CHOICES: &[&str] = &[
    "views.pth",
    "model.safetensors",
    "nested_containers.pth",
    "bigendian.pth",
    "legacy_views.pth",
    "gpu_tagged.pth",
    "dtypes.pth",
    "lstm_state_dict.pth",
    "tied_state_dict.pth",
    "cnn_keep_vars.pth",
    "cnn_model.pth",
    "dataparallel.pth",
    "training_checkpoint.pth",
    "torchscript_cnn.pt",
    "sharded_st/model.safetensors.index.json",
];

/// The fixtures, written once per process; the outputs go next to them.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("ckpt-fuzz-transforms-{}", std::process::id()));
        for (name, bytes) in FIXTURES {
            let p = d.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).expect("fuzz temp dir");
            std::fs::write(&p, bytes).expect("write fixture");
        }
        d
    })
}

/// A pattern made from the current checkpoint's names, so that most of them match something.
#[derive(Arbitrary, Debug)]
struct PatD {
    pick: u16,
    cut: u8,
    style: u8,
}

impl PatD {
    fn text(&self, c: &Checkpoint) -> String {
        let Some(t) = c.tensors.get(self.pick as usize % c.tensors.len().max(1)) else { return "x".into() };
        let parts: Vec<&str> = t.name.split('.').collect();
        let n = 1 + self.cut as usize % parts.len();
        let prefix = parts[..n].join(".");
        match self.style % 9 {
            0 | 1 => prefix,
            2 => format!("{prefix}.*"),
            3 => format!("*.{}", parts[parts.len() - 1]),
            4 => {
                let mut p = parts.clone();
                p[self.cut as usize % parts.len()] = "*";
                p.join(".")
            }
            5 => "*".into(),
            6 => t.name.clone(),
            7 => format!("{prefix}["),
            _ => format!("{prefix}?"),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    Cast { to: u8, keep: Vec<PatD> },
    Device { rule: u8 },
    Rename { strip: Vec<PatD>, add: Option<u8> },
    DropLayers { patterns: Vec<PatD> },
    Freeze { rules: Vec<(bool, PatD)>, strict: bool },
    Select { path: PatD, raw: Option<u8> },
}

const DEVICES: &[&str] = &["cpu", "cuda:0", "cuda:1=cpu", "cuda=mps", "cpu=cuda:0", "meta", "cuda", "CPU", "cuda:x", "cpu:0", "=cpu", "xpu:3=cuda:1"];
const PREFIXES: &[&str] = &["module", "model.", "_orig_mod", "a.b", "", ".", "0", "state_dict"];
const SELECTS: &[&str] = &["model", "model_state_dict", "optimizer_state_dict.state", "", ".", "0", "nope", "lstm"];

#[derive(Arbitrary, Debug)]
struct Input {
    which: u8,
    steps: Vec<Step>,
    safetensors: bool,
}

/// Everything a transform may change, as text (Arc'd sources and NaN floats compare badly).
fn state(c: &Checkpoint) -> String {
    let storages: Vec<_> = c.storages.iter().map(|s| (&s.key, &s.location, s.byte_order, s.data.offset, s.data.len, s.cast)).collect();
    format!("{:?}\n{:?}\n{:?}\n{:?}\n{:?}", c.root, c.tensors, storages, c.metadata, c.origin)
}

/// What every transform promises to leave (transform/mod.rs): the tree's tensor leaves index
/// `tensors`, each index once (in order, for plain data); names are the leaves' dotted paths
/// (for plain data; whole models and TorchScript name by state_dict); tensors reference
/// existing storages, and no storage is an orphan; a pending cast agrees with its tensors.
fn check_consistent(c: &Checkpoint, after: &str) {
    fn leaves(n: &Node, out: &mut Vec<usize>) {
        match n {
            Node::Tensor(i) => out.push(*i),
            Node::List(items) | Node::Tuple(items) => items.iter().for_each(|c| leaves(c, out)),
            Node::Dict { items, .. } => items.iter().for_each(|(_, c)| leaves(c, out)),
            _ => {}
        }
    }
    let mut idx = Vec::new();
    leaves(&c.root, &mut idx);
    let mut sorted = idx.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..c.tensors.len()).collect::<Vec<_>>(), "after {after}: tree leaves {idx:?} vs {} tensors", c.tensors.len());
    if c.origin == Origin::Data {
        assert_eq!(idx, sorted, "after {after}: tree order differs from tensor order");
        let mut named = c.tensors.clone();
        ckpt::read::flatten::flatten(&c.root, &mut named);
        let a: Vec<&str> = c.tensors.iter().map(|t| t.name.as_str()).collect();
        let b: Vec<&str> = named.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(a, b, "after {after}: names are not the tree paths");
    }
    let mut used = vec![false; c.storages.len()];
    for t in &c.tensors {
        assert!(t.storage.0 < c.storages.len(), "after {after}: '{}' views a missing storage", t.name);
        used[t.storage.0] = true;
        if let Some(cast) = c.storages[t.storage.0].cast {
            assert_eq!(cast.to, t.dtype, "after {after}: '{}' disagrees with its storage's pending cast", t.name);
        }
    }
    assert!(used.iter().all(|&u| u), "after {after}: orphan storage");
}

fn apply(c: &mut Checkpoint, step: &Step) {
    let before = state(c);
    let ok = apply_step(c, step);
    if ok {
        check_consistent(c, &format!("{step:?}"));
    } else {
        assert_eq!(before, state(c), "{step:?} failed but changed the checkpoint");
    }
}

/// Applies one step; false when it refused (an invalid glob/rule counts as a refusal).
fn apply_step(c: &mut Checkpoint, step: &Step) -> bool {
    match step {
        Step::Cast { to, keep } => {
            let to = [DType::BF16, DType::F16, DType::F32, DType::F64][*to as usize % 4];
            let texts: Vec<String> = keep.iter().take(3).map(|p| p.text(c)).collect();
            match transform::pattern::compile(&texts) {
                Ok(patterns) => {
                    let norms = texts.len() % 2 == 1;
                    let _ = transform::cast(c, to, &transform::Keep { patterns, norms });
                    true
                }
                Err(_) => false,
            }
        }
        Step::Device { rule } => {
            match DeviceRule::parse(DEVICES[*rule as usize % DEVICES.len()]) {
                Ok(r) => {
                    let _ = transform::set_device(c, &r);
                    true
                }
                Err(_) => false,
            }
        }
        Step::Rename { strip, add } => {
            let strip: Vec<String> = strip.iter().take(3).map(|p| p.text(c)).collect();
            let add = add.map(|a| PREFIXES[a as usize % PREFIXES.len()]);
            transform::rename(c, &strip, add).is_ok()
        }
        Step::DropLayers { patterns } => {
            let pats: Vec<String> = patterns.iter().take(3).map(|p| p.text(c)).collect();
            transform::drop_layers(c, &pats).is_ok()
        }
        Step::Freeze { rules, strict } => {
            let rules: Vec<(FreezeRule, String)> =
                rules.iter().take(3).map(|(f, p)| (if *f { FreezeRule::Freeze } else { FreezeRule::Unfreeze }, p.text(c))).collect();
            if *strict {
                transform::try_freeze(c, &rules).is_ok()
            } else {
                let _ = transform::freeze::freeze(c, &rules);
                true
            }
        }
        Step::Select { path, raw } => {
            let p = match raw {
                Some(r) => SELECTS[*r as usize % SELECTS.len()].to_string(),
                None => path.text(c),
            };
            match transform::select(c, &p) {
                Ok(s) => {
                    *c = s;
                    true
                }
                Err(_) => false,
            }
        }
    }
}

type Summary = Vec<(String, DType, Vec<u64>, Option<String>)>;

fn summary(c: &Checkpoint) -> Summary {
    c.tensors.iter().map(|t| (t.name.clone(), t.dtype, t.shape.clone(), try_sha256_hex(c, t).ok())).collect()
}

fn opts(format: OutFormat) -> WriteOptions {
    WriteOptions::new(format)
}

fuzz_target!(|input: Input| {
    let d = dir();
    let Ok(mut c) = ckpt::read::open(&d.join(CHOICES[input.which as usize % CHOICES.len()])) else {
        panic!("fixture {} does not read", CHOICES[input.which as usize % CHOICES.len()]);
    };
    for step in input.steps.iter().take(6) {
        apply(&mut c, step);
    }
    let _ = ckpt::inspect::to_json(&c, "x", &Default::default());
    let want = summary(&c);

    // .pth: every tensor, in order.
    let out = d.join("out.pth");
    // A new file each time: an output that replaces a file is flushed to disk, which is slow.
    let _ = std::fs::remove_file(&out);
    if write(&c, &out, &opts(OutFormat::Pth)).is_ok() {
        let back = ckpt::read::open(&out).unwrap_or_else(|e| panic!("reading back the .pth: {e}"));
        assert_eq!(want, summary(&back), ".pth read back differs from the transformed checkpoint");
    }

    // safetensors: the same set of tensors (the order is data-offset order).
    if input.safetensors {
        let out = d.join("out.safetensors");
        let _ = std::fs::remove_file(&out);
        if write(&c, &out, &opts(OutFormat::Safetensors)).is_ok() {
            let back = ckpt::read::open(&out).unwrap_or_else(|e| panic!("reading back the safetensors: {e}"));
            let mut a = want.clone();
            let mut b = summary(&back);
            a.sort();
            b.sort();
            assert_eq!(a, b, "safetensors read back differs from the transformed checkpoint");
            let names: HashSet<&str> = c.tensors.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names.len(), back.tensors.len());
        }
    }
});
