//! The `ckpt` binary as a user runs it: output, exit codes, error messages.

use assert_cmd::Command;
use serde_json::Value as Json;

use crate::common::fixtures_dir;

fn ckpt() -> Command {
    Command::cargo_bin("ckpt").expect("binary builds")
}

fn fixture(name: &str) -> String {
    fixtures_dir().join(name).display().to_string()
}

fn stdout_of(args: &[&str]) -> String {
    let out = ckpt().args(args).assert().success().get_output().stdout.clone();
    String::from_utf8(out).expect("utf-8 output")
}

#[test]
fn inspect_summary_names_format_counts_and_flags() {
    let text = stdout_of(&["inspect", &fixture("cnn_model.pth")]);
    assert!(text.contains("format    pth-zip, whole model"), "{text}");
    assert!(text.contains("conv1.weight"), "{text}");
    assert!(text.contains("frozen"), "conv1 is frozen in the fixture:\n{text}");
    assert!(text.contains("requires_grad is real"), "{text}");
    let detached = stdout_of(&["inspect", &fixture("cnn_state_dict.pth")]);
    assert!(detached.contains("requires_grad flags are absent"), "{detached}");
}

#[test]
fn inspect_notes_prefixes_and_tied_weights() {
    let dp = stdout_of(&["inspect", &fixture("dataparallel.pth")]);
    assert!(dp.contains("every key starts with 'module.'"), "{dp}");
    let compiled = stdout_of(&["inspect", &fixture("compiled.pth")]);
    assert!(compiled.contains("'_orig_mod.'"), "{compiled}");
    let tied = stdout_of(&["inspect", &fixture("tied_state_dict.pth")]);
    assert!(tied.contains("shared by several tensors"), "{tied}");
}

#[test]
fn inspect_json_has_the_documented_fields() {
    let text = stdout_of(&["inspect", "--json", &fixture("gpu_tagged.pth")]);
    let v: Json = serde_json::from_str(&text).expect("one JSON object");
    for key in ["path", "format", "tensors", "metadata", "globals", "total_params", "total_bytes"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let t = &v["tensors"][0];
    for key in ["name", "dtype", "shape", "device", "requires_grad", "parameter", "nbytes", "storage"] {
        assert!(t.get(key).is_some(), "tensor misses {key}");
    }
    assert!(t.get("sha256").is_none(), "sha256 only with --hash");
    assert_eq!(t["device"], "cuda:0");
    let globals: Vec<&str> = v["globals"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    assert!(globals.contains(&"torch._utils._rebuild_tensor_v2"), "{globals:?}");
    let mut sorted = globals.clone();
    sorted.sort();
    assert_eq!(globals, sorted, "globals are sorted");
}

#[test]
fn inspect_filter_and_tree() {
    let text = stdout_of(&["inspect", "--json", "--filter", "fc*.weight", &fixture("cnn_state_dict.pth")]);
    let v: Json = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = v["tensors"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["fc1.weight", "fc2.weight", "fc3.weight"]);
    let tree = stdout_of(&["inspect", "--tree", &fixture("cnn_model.pth")]);
    assert!(tree.lines().any(|l| l.starts_with("  conv1  ") && l.contains("params") && l.contains("[frozen]")), "{tree}");
}

#[test]
fn damaged_and_missing_files_exit_2_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.pth");
    let good = std::fs::read(fixtures_dir().join("cnn_state_dict.pth")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let out = ckpt().args(["inspect", bad.to_str().unwrap()]).assert().code(2).get_output().stderr.clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("broken.pth"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let missing = dir.path().join("nope.pth");
    ckpt().args(["inspect", missing.to_str().unwrap()]).assert().code(2);
    let empty = dir.path().join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    let out = ckpt().args(["inspect", empty.to_str().unwrap()]).assert().code(2).get_output().stderr.clone();
    assert!(String::from_utf8_lossy(&out).contains("empty"));
}

#[test]
fn bad_arguments_exit_2() {
    ckpt().args(["inspect"]).assert().code(2);
    ckpt().args(["frobnicate"]).assert().code(2);
}
