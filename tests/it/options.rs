//! Every option that picks tensors, casts or retags, through the `ckpt` binary: one pattern
//! language, refusals of patterns that match nothing, and what the options write. Expected
//! names, dtypes and parameter flags come from `fixtures/expected.json` (written by PyTorch).

use std::collections::HashSet;
use std::path::Path;

use assert_cmd::Command;
use serde_json::Value as Json;

use crate::common::{expected, fixtures_dir};

fn fixture(name: &str) -> String {
    fixtures_dir().join(name).display().to_string()
}

fn run_in(dir: &Path, args: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("ckpt")
        .expect("binary builds")
        .current_dir(dir)
        .args(args)
        .assert()
}

/// Runs a command that must fail with exit 2 and write nothing named `out`; its stderr.
fn refused(dir: &Path, args: &[&str], out: &str) -> String {
    let err = run_in(dir, args).code(2).get_output().stderr.clone();
    assert!(!dir.join(out).exists(), "{out} written by a refused command");
    String::from_utf8(err).unwrap()
}

fn stdout(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(run_in(dir, args).success().get_output().stdout.clone()).unwrap()
}

fn stderr(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(run_in(dir, args).success().get_output().stderr.clone()).unwrap()
}

/// PyTorch's tensors of a fixture, as expected.json records them.
fn torch_tensors(rel: &str) -> Vec<Json> {
    expected()["fixtures"][rel]["tensors"].as_array().unwrap().clone()
}

fn numel(t: &Json) -> u64 {
    t["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .product()
}

/// `sum(p.numel() for p in model.parameters())` of a fixture saved with parameter flags: each
/// parameter once (tied names share a storage group, offset and shape).
fn torch_parameter_count(rel: &str) -> u64 {
    let mut seen = HashSet::new();
    torch_tensors(rel)
        .iter()
        .filter(|t| t["parameter"] == Json::Bool(true))
        .filter(|t| {
            seen.insert((
                t["storage_group"].to_string(),
                t["storage_offset"].to_string(),
                t["shape"].to_string(),
            ))
        })
        .map(numel)
        .sum()
}

fn dtypes_of(path: &Path) -> Vec<(String, String)> {
    let c = ckpt::read::open(path).unwrap();
    c.tensors
        .iter()
        .map(|t| (t.name.clone(), t.dtype.name().to_string()))
        .collect()
}

fn torch_dtype(rel: &str, name: &str) -> String {
    let t = torch_tensors(rel);
    let t = t
        .iter()
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("{rel}: no {name}"));
    t["dtype"].as_str().unwrap().to_string()
}

#[test]
fn keep_dtype_takes_module_names_and_globs_and_refuses_what_matches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("cnn_state_dict.pth");
    // A module name keeps every tensor of the module (BatchNorm's statistics included).
    run_in(
        dir.path(),
        &["convert", &src, "a.pth", "--dtype", "bf16", "--keep-dtype", "bn"],
    )
    .success();
    for (name, dtype) in dtypes_of(&dir.path().join("a.pth")) {
        let was = torch_dtype("cnn_state_dict.pth", &name);
        if name.starts_with("bn.") || was != "float32" {
            assert_eq!(dtype, was, "{name}");
        } else {
            assert_eq!(dtype, "bfloat16", "{name}");
        }
    }
    // A glob over the whole name, crossing dots.
    run_in(
        dir.path(),
        &[
            "convert",
            &src,
            "b.pth",
            "--dtype",
            "bf16",
            "--keep-dtype",
            "*.running_*",
        ],
    )
    .success();
    let kept: Vec<String> = dtypes_of(&dir.path().join("b.pth"))
        .into_iter()
        .filter(|(_, d)| d == "float32")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(kept, ["bn.running_mean", "bn.running_var"]);
    // Patterns the file has no tensor for are refused, each named, with the top-level names.
    for pattern in ["features.1", "*norm*"] {
        let err = refused(
            dir.path(),
            &["convert", &src, "c.pth", "--dtype", "bf16", "--keep-dtype", pattern],
            "c.pth",
        );
        assert!(
            err.contains(&format!("'{pattern}'")) && err.contains("top-level names: conv1"),
            "{err}"
        );
    }
}

#[test]
fn keep_norms_keeps_batchnorm_and_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("cnn_state_dict.pth");
    let err = stderr(
        dir.path(),
        &["convert", &src, "n.pth", "--dtype", "f16", "--keep-norms"],
    );
    assert!(
        err.contains("kept 4 normalization tensors") && err.contains("  bn.running_var"),
        "{err}"
    );
    for (name, dtype) in dtypes_of(&dir.path().join("n.pth")) {
        let was = torch_dtype("cnn_state_dict.pth", &name);
        let want = if name.starts_with("bn.") || was != "float32" {
            was
        } else {
            "float16".into()
        };
        assert_eq!(dtype, want, "{name}");
    }
    // Whole models and TorchScript say which modules are norms by their classes, which follow
    // a rename.
    for (i, rel) in ["cnn_model.pth", "torchscript_cnn.pt"].iter().enumerate() {
        let out = format!("m{i}.pth");
        let err = stderr(
            dir.path(),
            &[
                "convert",
                &fixture(rel),
                &out,
                "--dtype",
                "f16",
                "--keep-norms",
                "--add-prefix",
                "net",
            ],
        );
        assert!(
            err.contains("kept 4 normalization tensors") && err.contains("  net.bn.running_mean"),
            "{rel}: {err}"
        );
        for (name, dtype) in dtypes_of(&dir.path().join(&out)) {
            let was = torch_dtype(rel, name.strip_prefix("net.").unwrap());
            let want = if name.starts_with("net.bn.") || was != "float32" {
                was
            } else {
                "float16".into()
            };
            assert_eq!(dtype, want, "{rel}: {name}");
        }
    }
    // A file without normalization modules: --keep-norms would do nothing, so it is refused.
    let err = refused(
        dir.path(),
        &[
            "convert",
            &fixture("lstm_state_dict.pth"),
            "l.pth",
            "--dtype",
            "f16",
            "--keep-norms",
        ],
        "l.pth",
    );
    assert!(err.contains("--keep-norms: no normalization module"), "{err}");
}

#[test]
fn cast_that_flushes_optimizer_state_to_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("training_checkpoint.pth");
    let err = refused(dir.path(), &["convert", &src, "t.pth", "--dtype", "f16"], "t.pth");
    assert!(err.contains("non-zero values into zero"), "{err}");
    assert!(err.contains("optimizer_state_dict.state.6.exp_avg_sq: "), "{err}");
    assert!(
        err.contains("--select model_state_dict") && err.contains("--allow-underflow"),
        "{err}"
    );
    // The weights alone cast cleanly; the whole file only when the loss is allowed.
    run_in(
        dir.path(),
        &[
            "convert",
            &src,
            "w.pth",
            "--dtype",
            "f16",
            "--select",
            "model_state_dict",
        ],
    )
    .success();
    run_in(
        dir.path(),
        &["convert", &src, "t.pth", "--dtype", "f16", "--allow-underflow"],
    )
    .success();
    // bfloat16 has float32's range: nothing flushes.
    run_in(dir.path(), &["convert", &src, "b.pth", "--dtype", "bf16"]).success();
}

#[test]
fn strip_prefix_refuses_a_prefix_no_name_has() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("dataparallel.pth");
    let err = refused(
        dir.path(),
        &["convert", &src, "p.safetensors", "--strip-prefix", "foo."],
        "p.safetensors",
    );
    assert!(
        err.contains("'foo.'") && err.contains("top-level names: module"),
        "{err}"
    );
    // Also when another prefix given with it applies.
    refused(
        dir.path(),
        &[
            "convert",
            &src,
            "p.safetensors",
            "--strip-prefix",
            "module.",
            "--strip-prefix",
            "_orig_mod.",
        ],
        "p.safetensors",
    );
    run_in(
        dir.path(),
        &["convert", &src, "p.safetensors", "--strip-prefix", "module."],
    )
    .success();
    let want: Vec<String> = torch_tensors("cnn_state_dict.pth")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let got: Vec<String> = dtypes_of(&dir.path().join("p.safetensors"))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(sorted(got), sorted(want));
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn inspect_filter_takes_module_names_like_the_writing_commands() {
    let dir = tempfile::tempdir().unwrap();
    let json = stdout(
        dir.path(),
        &["inspect", "--json", "--filter", "conv1", &fixture("cnn_state_dict.pth")],
    );
    let v: Json = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let want: Vec<String> = torch_tensors("cnn_state_dict.pth")
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .filter(|n| n.starts_with("conv1."))
        .collect();
    assert_eq!(names, want);
    let text = stdout(
        dir.path(),
        &["inspect", "--filter", "conv*.bias", &fixture("cnn_state_dict.pth")],
    );
    assert!(text.contains("tensors   2 of 15 match the filter"), "{text}");
}

#[test]
fn freeze_patterns_that_match_no_parameter_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused(
        dir.path(),
        &[
            "freeze",
            &fixture("cnn_state_dict.pth"),
            "--freeze",
            "features.0",
            "--write",
            "f.pth",
        ],
        "f.pth",
    );
    assert!(err.contains("'features.0'") && err.contains("top-level names"), "{err}");
}

#[test]
fn device_accepts_only_tags_torch_restores_and_never_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("gpu_tagged.pth");
    for bad in ["gpu", "banana", "cuda0", "cpu:0", "cuda:0=gpu"] {
        let err = refused(dir.path(), &["convert", &src, "d.pth", "--device", bad], "d.pth");
        assert!(err.contains("invalid device rule"), "{bad}: {err}");
    }
    for good in ["meta", "mps", "xpu:1", "cuda", "cuda:0=cuda:1", "cuda=cpu"] {
        run_in(dir.path(), &["convert", &src, "d.pth", "--device", good, "--force"]).success();
    }
    // A FROM=TO rule no storage is on would change nothing.
    let err = refused(
        dir.path(),
        &["convert", &src, "d2.pth", "--device", "mps=cpu"],
        "d2.pth",
    );
    assert!(err.contains("no storage is on mps") && err.contains("cuda:0"), "{err}");
    let err = refused(
        dir.path(),
        &["convert", &src, "d.safetensors", "--device", "cpu"],
        "d.safetensors",
    );
    assert!(err.contains("safetensors files hold no device tags"), "{err}");
}

#[test]
fn params_count_as_pytorch_counts_them_in_inspect_and_freeze() {
    let dir = tempfile::tempdir().unwrap();
    // The CNN's model.parameters() (from the whole-model fixture, which has the flags) ...
    let want = torch_parameter_count("cnn_model.pth");
    let buffers: u64 = torch_tensors("cnn_model.pth")
        .iter()
        .filter(|t| t["parameter"] == Json::Bool(false))
        .map(numel)
        .sum();
    let grouped = ckpt::inspect::grouped;
    // ... is what inspect and freeze report for the model, its state_dict and a training
    // checkpoint holding it with optimizer state.
    for rel in ["cnn_model.pth", "cnn_state_dict.pth", "training_checkpoint.pth"] {
        let text = stdout(dir.path(), &["inspect", &fixture(rel)]);
        assert!(
            text.contains(&format!("params    {} (", grouped(want))),
            "{rel}:\n{text}"
        );
        assert!(
            text.contains(&format!("buffers   {} in 3 tensors", grouped(buffers))),
            "{rel}:\n{text}"
        );
        let json: Json = serde_json::from_str(&stdout(dir.path(), &["inspect", "--json", &fixture(rel)])).unwrap();
        assert_eq!(json["total_params"], want, "{rel}");
        let freeze = stdout(dir.path(), &["freeze", &fixture(rel)]);
        assert!(
            freeze.contains(&format!("all params: {} ", grouped(want))),
            "{rel}: {freeze}"
        );
    }
    let training = stdout(dir.path(), &["inspect", &fixture("training_checkpoint.pth")]);
    assert!(training.contains("optim     "), "{training}");
    // The module tree counts the same way.
    let tree = stdout(dir.path(), &["inspect", "--tree", &fixture("cnn_state_dict.pth")]);
    assert!(tree.contains(&format!("(all)  {} params", grouped(want))), "{tree}");
    // Tied weights count once.
    let tied = stdout(dir.path(), &["inspect", &fixture("tied_model.pth")]);
    let want = torch_parameter_count("tied_model.pth");
    assert!(
        tied.contains(&format!("params    {} (", grouped(want))) && tied.contains("1 tied"),
        "{tied}"
    );
    let tree = stdout(dir.path(), &["inspect", "--tree", &fixture("tied_model.pth")]);
    assert!(tree.contains(&format!("(all)  {} params", grouped(want))), "{tree}");
}

#[test]
fn freeze_on_a_plain_state_dict_defaults_to_trainable_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let all = ckpt::inspect::grouped(torch_parameter_count("cnn_model.pth"));
    let out = stdout(
        dir.path(),
        &["freeze", &fixture("cnn_state_dict.pth"), "--freeze", "conv1"],
    );
    let conv1: u64 = torch_tensors("cnn_model.pth")
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with("conv1."))
        .map(numel)
        .sum();
    let trainable = torch_parameter_count("cnn_model.pth") - conv1;
    assert!(
        out.contains(&format!(
            "trainable params: {} || all params: {all}",
            ckpt::inspect::grouped(trainable)
        )),
        "{out}"
    );
    assert!(
        out.contains("note: the file saves no requires_grad flags") && out.contains("load_state_dict"),
        "{out}"
    );
}

#[test]
fn freeze_has_no_options_it_would_ignore_or_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let help = stdout(dir.path(), &["freeze", "--help"]);
    assert!(
        !help.contains("--to") && !help.contains("--max-shard-size") && !help.contains("--dedupe"),
        "{help}"
    );
    assert!(
        help.contains("load_state_dict"),
        "the help says what --write's flags do not do: {help}"
    );
    let src = fixture("cnn_model.pth");
    refused(
        dir.path(),
        &["freeze", &src, "--write", "f.pth", "--max-shard-size", "1MB"],
        "f.pth",
    );
    refused(
        dir.path(),
        &["freeze", &src, "--write", "f.pth", "--to", "safetensors"],
        "f.pth",
    );
    let err = refused(
        dir.path(),
        &["freeze", &src, "--write", "f.safetensors"],
        "f.safetensors",
    );
    assert!(err.contains("safetensors has no requires_grad"), "{err}");
}
