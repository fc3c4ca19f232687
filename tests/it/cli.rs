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
    for key in [
        "path",
        "format",
        "tensors",
        "metadata",
        "globals",
        "total_params",
        "total_bytes",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    let t = &v["tensors"][0];
    for key in [
        "name",
        "dtype",
        "shape",
        "device",
        "requires_grad",
        "parameter",
        "nbytes",
        "storage",
    ] {
        assert!(t.get(key).is_some(), "tensor misses {key}");
    }
    assert!(t.get("sha256").is_none(), "sha256 only with --hash");
    assert_eq!(t["device"], "cuda:0");
    let globals: Vec<&str> = v["globals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(globals.contains(&"torch._utils._rebuild_tensor_v2"), "{globals:?}");
    let mut sorted = globals.clone();
    sorted.sort();
    assert_eq!(globals, sorted, "globals are sorted");
}

#[test]
fn inspect_filter_and_tree() {
    let text = stdout_of(&[
        "inspect",
        "--json",
        "--filter",
        "fc*.weight",
        &fixture("cnn_state_dict.pth"),
    ]);
    let v: Json = serde_json::from_str(&text).unwrap();
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fc1.weight", "fc2.weight", "fc3.weight"]);
    let tree = stdout_of(&["inspect", "--tree", &fixture("cnn_model.pth")]);
    assert!(
        tree.lines()
            .any(|l| l.starts_with("  conv1  ") && l.contains("params") && l.contains("[frozen]")),
        "{tree}"
    );
}

#[test]
fn damaged_and_missing_files_exit_2_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.pth");
    let good = std::fs::read(fixtures_dir().join("cnn_state_dict.pth")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let out = ckpt()
        .args(["inspect", bad.to_str().unwrap()])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("broken.pth"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let missing = dir.path().join("nope.pth");
    ckpt().args(["inspect", missing.to_str().unwrap()]).assert().code(2);
    let empty = dir.path().join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    let out = ckpt()
        .args(["inspect", empty.to_str().unwrap()])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("empty"));
}

#[test]
fn bad_arguments_exit_2() {
    ckpt().args(["inspect"]).assert().code(2);
    ckpt().args(["frobnicate"]).assert().code(2);
}

fn run_in(dir: &std::path::Path, args: &[&str]) -> assert_cmd::assert::Assert {
    ckpt().current_dir(dir).args(args).assert()
}

fn names(path: &std::path::Path) -> Vec<String> {
    ckpt::read::open(path)
        .unwrap()
        .tensors
        .iter()
        .map(|t| t.name.clone())
        .collect()
}

#[test]
fn convert_refuses_to_clobber_and_to_overwrite_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("cnn_state_dict.pth");
    run_in(dir.path(), &["convert", &input, "out.safetensors"]).success();
    let before = std::fs::read(dir.path().join("out.safetensors")).unwrap();
    let err = run_in(dir.path(), &["convert", &input, "out.safetensors"])
        .code(2)
        .get_output()
        .stderr
        .clone();
    assert!(
        String::from_utf8_lossy(&err).contains("--force"),
        "{}",
        String::from_utf8_lossy(&err)
    );
    assert_eq!(
        std::fs::read(dir.path().join("out.safetensors")).unwrap(),
        before,
        "refused run left the file alone"
    );
    run_in(dir.path(), &["convert", &input, "out.safetensors", "--force"]).success();
    // The input is never the output, even with --force.
    std::fs::copy(&input, dir.path().join("in.pth")).unwrap();
    run_in(dir.path(), &["convert", "in.pth", "in.pth", "--force"]).code(2);
    assert_eq!(
        std::fs::read(dir.path().join("in.pth")).unwrap(),
        std::fs::read(&input).unwrap()
    );
}

#[test]
fn sync_writes_the_same_bytes_with_the_same_guarantees() {
    let plain_dir = tempfile::tempdir().unwrap();
    let synced_dir = tempfile::tempdir().unwrap();
    let input = fixture("tied_state_dict.pth");
    // Same names in both directories: a .pth archive's top folder comes from its file name.
    for out in ["a.safetensors", "a.pth"] {
        run_in(plain_dir.path(), &["convert", &input, out]).success();
        run_in(synced_dir.path(), &["convert", &input, out, "--sync"]).success();
        let plain = std::fs::read(plain_dir.path().join(out)).unwrap();
        assert!(
            std::fs::read(synced_dir.path().join(out)).unwrap() == plain,
            "{out} differs"
        );
        // Still no clobbering without --force.
        run_in(synced_dir.path(), &["convert", &input, out, "--sync"]).code(2);
        run_in(synced_dir.path(), &["convert", &input, out, "--force"]).success();
    }
    let mut left = names_in(synced_dir.path());
    left.sort();
    assert_eq!(left, ["a.pth", "a.safetensors"], "no temp files left");
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn freeze_json_export_needs_force_to_replace_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flags.json"), b"precious").unwrap();
    let args = ["freeze", &fixture("cnn_model.pth"), "-o", "flags.json"];
    let err = run_in(dir.path(), &args).code(2).get_output().stderr.clone();
    assert!(
        String::from_utf8_lossy(&err).contains("--force"),
        "{}",
        String::from_utf8_lossy(&err)
    );
    assert_eq!(std::fs::read(dir.path().join("flags.json")).unwrap(), b"precious");
    run_in(dir.path(), &[&args[..], &["--force"]].concat()).success();
    let flags: Json = serde_json::from_slice(&std::fs::read(dir.path().join("flags.json")).unwrap()).unwrap();
    assert!(flags.to_string().contains("conv1.weight"), "{flags}");
    assert_eq!(names_in(dir.path()), ["flags.json"], "no temp files left");
}

#[test]
fn convert_with_unknown_output_format_or_dtype_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("cnn_state_dict.pth");
    let err = run_in(dir.path(), &["convert", &input, "out.xyz"])
        .code(2)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&err).contains("--to"));
    let err = run_in(dir.path(), &["convert", &input, "out.pth", "--dtype", "int8"])
        .code(2)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&err).contains("bf16"));
    assert!(!dir.path().join("out.pth").exists(), "a refused run writes nothing");
}

#[test]
fn convert_strips_prefixes_selects_subtrees_and_retags_devices() {
    let dir = tempfile::tempdir().unwrap();
    run_in(
        dir.path(),
        &[
            "convert",
            &fixture("dataparallel.pth"),
            "plain.pth",
            "--strip-prefix",
            "module.",
        ],
    )
    .success();
    assert!(names(&dir.path().join("plain.pth"))
        .iter()
        .all(|n| !n.starts_with("module.")));
    assert_eq!(
        names(&dir.path().join("plain.pth")),
        names(&fixtures_dir().join("cnn_state_dict.pth"))
    );
    run_in(
        dir.path(),
        &[
            "convert",
            &fixture("training_checkpoint.pth"),
            "model.safetensors",
            "--select",
            "model_state_dict",
        ],
    )
    .success();
    // safetensors orders tensors by dtype alignment, then name: compare as sets.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(names(&dir.path().join("model.safetensors"))),
        sorted(names(&fixtures_dir().join("cnn_state_dict.pth")))
    );
    run_in(
        dir.path(),
        &["convert", &fixture("gpu_tagged.pth"), "cpu.pth", "--device", "cpu"],
    )
    .success();
    let cpu = ckpt::read::open(&dir.path().join("cpu.pth")).unwrap();
    assert!(cpu.storages.iter().all(|s| s.location == "cpu"));
}

#[test]
fn convert_refuses_a_cast_that_overflows() {
    let dir = tempfile::tempdir().unwrap();
    // dtypes.pth holds float32/float64 values beyond float16's range (PyTorch wrote them).
    let out = run_in(
        dir.path(),
        &["convert", &fixture("dtypes.pth"), "half.pth", "--dtype", "f16"],
    )
    .code(2)
    .get_output()
    .stderr
    .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("inf") && err.contains("--allow-overflow"), "{err}");
    assert!(!dir.path().join("half.pth").exists());
    run_in(
        dir.path(),
        &[
            "convert",
            &fixture("dtypes.pth"),
            "half.pth",
            "--dtype",
            "f16",
            "--allow-overflow",
            "--allow-underflow",
        ],
    )
    .success();
}

#[test]
fn a_refused_cast_leaves_an_existing_output_and_the_directory_as_they_were() {
    // The loss count runs alongside the write: the refusal must still come before any rename.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("half.pth"), b"an earlier output").unwrap();
    let listing = |d: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
        v.sort();
        v
    };
    let before = listing(dir.path());
    for out in ["half.pth", "shards"] {
        run_in(
            dir.path(),
            &["convert", &fixture("dtypes.pth"), out, "--dtype", "f16", "--force"],
        )
        .code(2);
        assert_eq!(listing(dir.path()), before, "{out}: something was left or removed");
    }
    assert_eq!(
        std::fs::read(dir.path().join("half.pth")).unwrap(),
        b"an earlier output"
    );
}

#[test]
fn drop_layers_removes_a_module_and_refuses_typos() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &[
            "drop-layers",
            &fixture("cnn_state_dict.pth"),
            "head.pth",
            "--pattern",
            "fc3",
        ],
    )
    .success()
    .get_output()
    .stdout
    .clone();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("fc3.weight") && text.contains("fc3.bias"), "{text}");
    let left = names(&dir.path().join("head.pth"));
    assert!(left.iter().all(|n| !n.starts_with("fc3.")) && left.iter().any(|n| n.starts_with("fc2.")));
    run_in(
        dir.path(),
        &[
            "drop-layers",
            &fixture("cnn_state_dict.pth"),
            "typo.pth",
            "--pattern",
            "fc9",
        ],
    )
    .code(2);
    assert!(!dir.path().join("typo.pth").exists());
    run_in(
        dir.path(),
        &[
            "drop-layers",
            &fixture("cnn_state_dict.pth"),
            "--pattern",
            "fc3",
            "--dry-run",
        ],
    )
    .success();
}

#[test]
fn freeze_reports_real_flags_default_flags_and_writes_them() {
    let dir = tempfile::tempdir().unwrap();
    let real = stdout_of(&["freeze", &fixture("cnn_model.pth")]);
    assert!(real.contains("trainable params:") && !real.contains("note:"), "{real}");
    let default = stdout_of(&["freeze", &fixture("cnn_state_dict.pth")]);
    assert!(
        default.contains("note: the file saves no requires_grad flags"),
        "a detached state_dict has no flags: {default}"
    );
    run_in(
        dir.path(),
        &[
            "freeze",
            &fixture("cnn_state_dict.pth"),
            "--freeze",
            "conv1",
            "--unfreeze",
            "conv1.bias",
            "-o",
            "flags.json",
            "--write",
            "frozen.pth",
        ],
    )
    .success();
    let flags: Json = serde_json::from_slice(&std::fs::read(dir.path().join("flags.json")).unwrap()).unwrap();
    let text = flags.to_string();
    assert!(text.contains("conv1.weight"), "{text}");
    let frozen = ckpt::read::open(&dir.path().join("frozen.pth")).unwrap();
    let flag = |n: &str| {
        frozen
            .tensors
            .iter()
            .find(|t| t.name == n)
            .map(|t| (t.parameter, t.requires_grad))
    };
    assert_eq!(flag("conv1.weight"), Some((true, false)));
    assert_eq!(flag("conv1.bias"), Some((true, true)), "the later --unfreeze wins");
}

#[test]
fn diff_exit_codes_follow_equality() {
    let dir = tempfile::tempdir().unwrap();
    run_in(
        dir.path(),
        &["convert", &fixture("cnn_state_dict.pth"), "same.safetensors"],
    )
    .success();
    run_in(
        dir.path(),
        &["diff", &fixture("cnn_state_dict.pth"), "same.safetensors"],
    )
    .code(0);
    run_in(
        dir.path(),
        &["diff", &fixture("cnn_state_dict.pth"), &fixture("lstm_state_dict.pth")],
    )
    .code(1);
    run_in(dir.path(), &["diff", &fixture("cnn_state_dict.pth"), "missing.pth"]).code(2);
}

#[test]
fn scan_judges_whole_models_as_needing_code() {
    let out = ckpt()
        .args(["scan", "--json", &fixture("cnn_model.pth")])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("needs-code"), "{text}");
    ckpt()
        .args(["scan", "--strict", &fixture("cnn_model.pth")])
        .assert()
        .code(1);
    ckpt().args(["scan", &fixture("cnn_state_dict.pth")]).assert().code(0);
}

#[test]
fn inspect_and_convert_warn_about_dangerous_calls_and_never_write_them() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = fixture("hostile/reduce_os_system.pth");
    let out = ckpt()
        .args(["inspect", &hostile])
        .assert()
        .success()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("warning") && err.contains("system"), "{err}");
    let out = run_in(dir.path(), &["convert", &hostile, "rescued.pth"])
        .success()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("warning"));
    let scan = ckpt()
        .args(["scan", dir.path().join("rescued.pth").to_str().unwrap()])
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    assert!(
        String::from_utf8_lossy(&scan).contains("SAFE"),
        "{}",
        String::from_utf8_lossy(&scan)
    );
    // Clean files get no warning.
    let out = ckpt()
        .args(["inspect", &fixture("cnn_state_dict.pth")])
        .assert()
        .success()
        .get_output()
        .stderr
        .clone();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}
