//! Hugging Face layouts through the CLI: directory outputs, shards beside a named file, HF
//! snapshot directories as inputs, `.ckpt`, `--metadata`, `--rename` and `--rename-map`.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value as Json;

use crate::common::fixtures_dir;

// What transformers 5.24.0 `save_pretrained` writes (huggingface_hub 2.4.0 splits the shards),
// checked by saving a small GPT-2 with max_shard_size "5GB" and "4KB": one `model.safetensors`
// and no index when everything fits; else `model-00001-of-00009.safetensors`... and
// `model.safetensors.index.json`, written as `json.dumps(index, indent=2, sort_keys=True) + "\n"`
// with `{"metadata": {"total_parameters": N, "total_size": N}, "weight_map": {name: shard}}`;
// every file's safetensors metadata is exactly {"format": "pt"}. The .bin names are the
// constants transformers still loads (`WEIGHTS_NAME`, `WEIGHTS_INDEX_NAME`); 5.x saves only
// safetensors. Checked the other way too: `ckpt convert model.bin out/ --max-shard-size 4KB` of
// that GPT-2's state dict gave the same weight_map and byte-identical shards as save_pretrained
// (the index differs only by total_parameters), and from_pretrained loads it without a warning.
const SAFE_WEIGHTS_NAME: &str = "model.safetensors";
const SAFE_WEIGHTS_INDEX_NAME: &str = "model.safetensors.index.json";
const WEIGHTS_NAME: &str = "pytorch_model.bin";
const WEIGHTS_INDEX_NAME: &str = "pytorch_model.bin.index.json";

fn shard_name(stem: &str, i: usize, n: usize, ext: &str) -> String {
    format!("{stem}-{i:05}-of-{n:05}.{ext}")
}

fn ckpt_in(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("ckpt").unwrap().current_dir(dir).args(args).assert()
}

fn fixture(name: &str) -> String {
    fixtures_dir().join(name).display().to_string()
}

fn stderr_of(a: assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A safetensors file's `__metadata__` (null when it has none).
fn st_metadata(path: &Path) -> Json {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Json = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header.get("__metadata__").cloned().unwrap_or(Json::Null)
}

fn sorted_names(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = ckpt::read::open(path)
        .unwrap()
        .tensors
        .iter()
        .map(|t| t.name.clone())
        .collect();
    v.sort();
    v
}

/// The index text as Python's `json.dumps(index, indent=2, sort_keys=True) + "\n"` prints it
/// (serde_json's pretty printer uses the same separators and indent; its keys come out sorted
/// once parsed into a sorting map).
fn as_python_dumps_it(text: &str) -> String {
    let sorted: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Json>> =
        serde_json::from_str(text).unwrap();
    serde_json::to_string_pretty(&sorted).unwrap() + "\n"
}

#[test]
fn a_directory_output_is_one_model_safetensors_when_it_fits() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("cnn_state_dict.pth");
    // A new directory, written with a trailing slash; no --to: safetensors, as save_pretrained.
    ckpt_in(tmp.path(), &["convert", &input, "out/"]).success();
    let out = tmp.path().join("out");
    assert_eq!(entries(&out), [SAFE_WEIGHTS_NAME]);
    assert_eq!(
        st_metadata(&out.join(SAFE_WEIGHTS_NAME)),
        serde_json::json!({"format": "pt"})
    );
    assert_eq!(
        sorted_names(&out.join(SAFE_WEIGHTS_NAME)),
        sorted_names(Path::new(&input))
    );
    // An existing directory, named without the slash; --to pth gives transformers' .bin name.
    std::fs::create_dir(tmp.path().join("bin")).unwrap();
    ckpt_in(tmp.path(), &["convert", &input, "bin", "--to", "pth"]).success();
    assert_eq!(entries(&tmp.path().join("bin")), [WEIGHTS_NAME]);
    // Again without --force: refused, the file kept.
    let before = std::fs::read(out.join(SAFE_WEIGHTS_NAME)).unwrap();
    let err = stderr_of(ckpt_in(tmp.path(), &["convert", &input, "out/"]).code(2));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(out.join(SAFE_WEIGHTS_NAME)).unwrap(), before);
    // Refused before any work: the overflowing cast of dtypes.pth is never looked at.
    let err = stderr_of(
        ckpt_in(
            tmp.path(),
            &["convert", &fixture("dtypes.pth"), "out/", "--dtype", "f16"],
        )
        .code(2),
    );
    assert!(err.contains("--force") && !err.contains("inf"), "{err}");
}

#[test]
fn a_directory_output_with_a_shard_size_is_shards_and_a_sorted_index() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("cnn_state_dict.pth");
    for (to, stem, ext, index) in [
        ("safetensors", "model", "safetensors", SAFE_WEIGHTS_INDEX_NAME),
        ("pth", "pytorch_model", "bin", WEIGHTS_INDEX_NAME),
    ] {
        let out = tmp.path().join(to);
        let out_arg = format!("{to}/");
        ckpt_in(
            tmp.path(),
            &["convert", &input, &out_arg, "--to", to, "--max-shard-size", "2KB"],
        )
        .success();
        let text = std::fs::read_to_string(out.join(index)).unwrap();
        assert_eq!(text, as_python_dumps_it(&text), "{to}: not as transformers writes it");
        let json: Json = serde_json::from_str(&text).unwrap();
        let shards: std::collections::BTreeSet<&str> = json["weight_map"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_str().unwrap())
            .collect();
        let n = shards.len();
        assert!(n > 1, "{to}: {n} shard");
        let want: Vec<String> = (1..=n).map(|i| shard_name(stem, i, n, ext)).collect();
        assert_eq!(shards.iter().map(|s| s.to_string()).collect::<Vec<_>>(), want);
        let mut files = want.clone();
        files.push(index.to_string());
        files.sort();
        assert_eq!(entries(&out), files);
        assert_eq!(
            sorted_names(&out),
            sorted_names(Path::new(&input)),
            "{to}: read back through the index"
        );
        if to == "safetensors" {
            for shard in &want {
                assert_eq!(
                    st_metadata(&out.join(shard)),
                    serde_json::json!({"format": "pt"}),
                    "{shard}"
                );
            }
        }
    }
}

#[test]
fn a_file_output_with_a_shard_size_shards_beside_it_never_into_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("cnn_state_dict.pth");
    ckpt_in(
        tmp.path(),
        &["convert", &input, "x.safetensors", "--max-shard-size", "2KB"],
    )
    .success();
    let names = entries(tmp.path());
    assert!(names.contains(&"x.safetensors.index.json".to_string()), "{names:?}");
    assert!(!tmp.path().join("x.safetensors").exists(), "{names:?}");
    let n = names.len() - 1;
    for i in 1..=n {
        assert!(names.contains(&shard_name("x", i, n, "safetensors")), "{names:?}");
    }
    let index = tmp.path().join("x.safetensors.index.json");
    assert_eq!(sorted_names(&index), sorted_names(Path::new(&input)));
    // Everything fits: the one file, no index (what save_pretrained does).
    ckpt_in(tmp.path(), &["convert", &input, "y.ckpt", "--max-shard-size", "1GB"]).success();
    assert!(tmp.path().join("y.ckpt").is_file());
    assert!(!tmp.path().join("y.ckpt.index.json").exists());
}

#[test]
fn ckpt_files_are_pth_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    ckpt_in(tmp.path(), &["convert", &fixture("model.safetensors"), "last.ckpt"]).success();
    let c = ckpt::read::open(&tmp.path().join("last.ckpt")).unwrap();
    assert_eq!(c.format, ckpt::model::Format::PthZip);
    assert_eq!(
        sorted_names(&tmp.path().join("last.ckpt")),
        sorted_names(&fixtures_dir().join("model.safetensors"))
    );
}

#[test]
fn a_layout_readers_would_take_two_ways_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("cnn_state_dict.pth");
    ckpt_in(tmp.path(), &["convert", &input, "out/", "--max-shard-size", "2KB"]).success();
    let before = entries(&tmp.path().join("out"));
    // One model.safetensors beside the old index: a loader could take either.
    let err = stderr_of(ckpt_in(tmp.path(), &["convert", &input, "out/", "--force"]).code(2));
    assert!(err.contains(SAFE_WEIGHTS_INDEX_NAME), "{err}");
    assert_eq!(entries(&tmp.path().join("out")), before);
}

#[test]
fn hf_snapshot_directories_are_read_through_their_single_file() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    std::fs::copy(fixtures_dir().join("model.safetensors"), snap.join(SAFE_WEIGHTS_NAME)).unwrap();
    std::fs::write(snap.join("config.json"), b"{}").unwrap();
    let out = ckpt_in(tmp.path(), &["inspect", "snap"]).success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("format    safetensors"), "{text}");
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy(fixtures_dir().join("cnn_state_dict.pth"), bin.join(WEIGHTS_NAME)).unwrap();
    ckpt_in(tmp.path(), &["convert", "bin", "bin.safetensors"]).success();
    assert_eq!(
        sorted_names(&tmp.path().join("bin.safetensors")),
        sorted_names(&fixtures_dir().join("cnn_state_dict.pth"))
    );
    // Both files: which one a loader takes depends on the loader; the user names it.
    std::fs::copy(fixtures_dir().join("cnn_state_dict.pth"), snap.join(WEIGHTS_NAME)).unwrap();
    let err = stderr_of(ckpt_in(tmp.path(), &["inspect", "snap"]).code(2));
    assert!(err.contains(SAFE_WEIGHTS_NAME) && err.contains(WEIGHTS_NAME), "{err}");
}

#[test]
fn metadata_entries_go_into_safetensors_and_are_refused_for_pth() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("model.safetensors");
    let args = ["--metadata", "license=mit", "--metadata", "note=a=b"];
    ckpt_in(tmp.path(), &[&["convert", &input, "m.safetensors"][..], &args].concat()).success();
    let meta = st_metadata(&tmp.path().join("m.safetensors"));
    assert_eq!(meta["license"], "mit");
    assert_eq!(meta["note"], "a=b", "the value is everything after the first '='");
    // Sharded: every shard carries them beside {"format": "pt"}.
    ckpt_in(
        tmp.path(),
        &[&["convert", &input, "out/", "--max-shard-size", "100B"][..], &args].concat(),
    )
    .success();
    let shards: Vec<String> = entries(&tmp.path().join("out"))
        .into_iter()
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert!(shards.len() > 1, "{shards:?}");
    for s in &shards {
        let meta = st_metadata(&tmp.path().join("out").join(s));
        assert_eq!(
            (&meta["format"], &meta["license"]),
            (&Json::from("pt"), &Json::from("mit")),
            "{s}"
        );
    }
    // A .pth cannot hold it; bad forms and repeated keys are refused; nothing is written.
    let err = stderr_of(ckpt_in(tmp.path(), &["convert", &input, "m.pth", "--metadata", "a=b"]).code(2));
    assert!(err.contains("--metadata a=b") && err.contains(".pth"), "{err}");
    for bad in [
        &["--metadata", "novalue"][..],
        &["--metadata", "=x"],
        &["--metadata", "a=1", "--metadata", "a=2"],
    ] {
        let err = stderr_of(ckpt_in(tmp.path(), &[&["convert", &input, "n.safetensors"][..], bad].concat()).code(2));
        assert!(err.contains("--metadata"), "{err}");
    }
    assert!(!tmp.path().join("m.pth").exists() && !tmp.path().join("n.safetensors").exists());
}

/// The tensor names of the cnn fixtures, as PyTorch's state_dict() lists them (expected.json).
fn cnn_names() -> Vec<String> {
    crate::common::expected()["fixtures"]["cnn_state_dict.pth"]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn renamed(names: &[String], f: impl Fn(&str) -> String) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|n| f(n)).collect();
    v.sort();
    v
}

#[test]
fn rename_rules_apply_in_order_with_sed_and_dollar_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = [
        "--rename",
        r"s/^fc(\d)\./classifier.$1./",
        "--rename",
        r"s|^classifier\.3\.|head.|",
        "--rename",
        r"s/^conv(?P<n>\d)/c${n}/",
        "--rename",
        r"s/^bn\.running_(\w+)/bn.\1_stat/",
    ];
    for out in ["r.safetensors", "r.pth"] {
        let input = fixture("cnn_state_dict.pth");
        ckpt_in(tmp.path(), &[&["convert", &input, out][..], &rules].concat()).success();
        let want = renamed(&cnn_names(), |n| {
            let n = n.replacen("fc", "classifier.", 1);
            let n = n.replace("classifier.3.", "head.");
            let n = n.replacen("conv", "c", 1);
            n.replace("bn.running_mean", "bn.mean_stat")
                .replace("bn.running_var", "bn.var_stat")
        });
        assert_eq!(sorted_names(&tmp.path().join(out)), want, "{out}");
    }
    // After --strip-prefix: the rules see the stripped names.
    ckpt_in(
        tmp.path(),
        &[
            "convert",
            &fixture("dataparallel.pth"),
            "dp.safetensors",
            "--strip-prefix",
            "module.",
            "--rename",
            "s/^fc/dense/",
        ],
    )
    .success();
    assert_eq!(
        sorted_names(&tmp.path().join("dp.safetensors")),
        renamed(&cnn_names(), |n| n.replacen("fc", "dense", 1).to_string())
    );
}

#[test]
fn a_rename_rule_that_renames_nothing_or_collides_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("cnn_state_dict.pth");
    let refused = |args: &[&str]| {
        let err = stderr_of(
            ckpt_in(
                tmp.path(),
                &[&["convert", &input, "out.safetensors"][..], args].concat(),
            )
            .code(2),
        );
        assert!(!tmp.path().join("out.safetensors").exists(), "{args:?} wrote output");
        err
    };
    let err = refused(&[
        "--rename",
        r"s/^fc1\./dense./",
        "--rename",
        r"s/^transformer\.h\./layers./",
    ]);
    assert!(
        err.contains(r"s/^transformer\.h\./layers./") && !err.contains("s/^fc1"),
        "{err}"
    );
    // Matching without changing a name is renaming nothing too.
    let err = refused(&["--rename", "s/^(fc1)/$1/"]);
    assert!(err.contains("s/^(fc1)/$1/"), "{err}");
    let err = refused(&["--rename", r"s/^fc\d\./fc./"]);
    assert!(
        err.contains("fc1.weight") && err.contains("fc2.weight") && err.contains("fc.weight"),
        "{err}"
    );
    for bad in [r"s/^fc(\d)/$1a/", "s/(/x/", "s/a/b", "s/a/b/x", "y/a/b/", "s/.*//"] {
        let err = refused(&["--rename", bad]);
        assert!(err.contains("--rename"), "{bad}: {err}");
    }
}

#[test]
fn rename_maps_rename_at_once_and_refuse_unknown_names() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("cnn_state_dict.pth");
    let map = tmp.path().join("map.json");
    // A swap: applied at once, so no collision.
    std::fs::write(
        &map,
        r#"{"fc1.weight": "fc2.weight", "fc2.weight": "fc1.weight", "fc3.bias": "head.bias"}"#,
    )
    .unwrap();
    ckpt_in(tmp.path(), &["convert", &input, "m.pth", "--rename-map", "map.json"]).success();
    let back = ckpt::read::open(&tmp.path().join("m.pth")).unwrap();
    let shape = |n: &str| back.tensors.iter().find(|t| t.name == n).map(|t| t.shape.clone());
    let want = crate::common::expected()["fixtures"]["cnn_state_dict.pth"]["tensors"].clone();
    let want_shape = |n: &str| -> Vec<u64> {
        let t = want.as_array().unwrap().iter().find(|t| t["name"] == n).unwrap();
        serde_json::from_value(t["shape"].clone()).unwrap()
    };
    assert_eq!(shape("fc2.weight"), Some(want_shape("fc1.weight")));
    assert_eq!(shape("fc1.weight"), Some(want_shape("fc2.weight")));
    assert_eq!(shape("head.bias"), Some(want_shape("fc3.bias")));
    // Entries naming no tensor: all named, nothing written.
    std::fs::write(&map, r#"{"fc1.weight": "a", "nope": "b", "fc9.bias": "c"}"#).unwrap();
    let err = stderr_of(ckpt_in(tmp.path(), &["convert", &input, "n.pth", "--rename-map", "map.json"]).code(2));
    assert!(
        err.contains("'nope'") && err.contains("'fc9.bias'") && !err.contains("'fc1.weight'"),
        "{err}"
    );
    std::fs::write(&map, r#"{"fc1.weight": "x", "fc2.weight": "x"}"#).unwrap();
    let err = stderr_of(ckpt_in(tmp.path(), &["convert", &input, "n.pth", "--rename-map", "map.json"]).code(2));
    assert!(err.contains("fc1.weight") && err.contains("fc2.weight"), "{err}");
    for text in ["[1]", r#"{"fc1.weight": 3}"#, "not json"] {
        std::fs::write(&map, text).unwrap();
        let err = stderr_of(ckpt_in(tmp.path(), &["convert", &input, "n.pth", "--rename-map", "map.json"]).code(2));
        assert!(err.contains("--rename-map"), "{text}: {err}");
    }
    assert!(!tmp.path().join("n.pth").exists());
}

#[test]
fn renames_in_a_training_checkpoint_stay_inside_its_nesting() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixture("training_checkpoint.pth");
    ckpt_in(
        tmp.path(),
        &[
            "convert",
            &input,
            "t.pth",
            "--rename",
            r"s/^model_state_dict\.fc/model_state_dict.dense/",
        ],
    )
    .success();
    let back = ckpt::read::open(&tmp.path().join("t.pth")).unwrap();
    assert!(back.tensors.iter().any(|t| t.name == "model_state_dict.dense1.weight"));
    assert_eq!(back.metadata.get("epoch"), Some(&serde_json::json!(5)), "metadata kept");
    let err = stderr_of(
        ckpt_in(
            tmp.path(),
            &["convert", &input, "u.pth", "--rename", r"s/^model_state_dict\./m./"],
        )
        .code(2),
    );
    assert!(err.contains("model_state_dict"), "{err}");
}
