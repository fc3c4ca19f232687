//! `ckpt diff` through the binary: non-tensor leaves, tolerances, --filter, --strip-prefix and
//! dedupe aliases. Verdicts come from fixtures/diff/expected.json, which PyTorch computed
//! (torch.equal / torch.allclose) when it wrote the two training checkpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use assert_cmd::Command;
use serde_json::Value as Json;

use crate::common::fixtures_dir;

fn ckpt() -> Command {
    Command::cargo_bin("ckpt").expect("binary builds")
}

/// The committed diff fixtures (fixtures/diff/generate.py), whatever CKPT_FIXTURES says.
fn diff_fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/diff")
        .join(name)
        .display()
        .to_string()
}

fn fixture(name: &str) -> String {
    fixtures_dir().join(name).display().to_string()
}

/// Runs `ckpt diff --json ARGS`, checks the exit code, returns the report.
fn diff_json(args: &[&str], code: i32) -> Json {
    let out = ckpt()
        .arg("diff")
        .arg("--json")
        .args(args)
        .assert()
        .code(code)
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).expect("one JSON object")
}

/// name -> "identical" | "close" | "changed", tensors and metadata leaves alike.
fn verdicts(report: &Json) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut put = |list: &Json, verdict: &str| {
        for item in list.as_array().unwrap() {
            let name = item.as_str().or_else(|| item["name"].as_str()).unwrap();
            out.insert(name.to_string(), verdict.to_string());
        }
    };
    put(&report["identical"], "identical");
    put(&report["close"], "close");
    put(&report["values_changed"], "changed");
    put(&report["metadata"]["identical"], "identical");
    put(&report["metadata"]["close"], "close");
    put(&report["metadata"]["changed"], "changed");
    out
}

fn torch_expected() -> Json {
    let text = std::fs::read_to_string(diff_fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn diff_compares_tensors_and_non_tensor_leaves_as_torch_does() {
    let expected = torch_expected();
    for case in expected["tolerances"].as_array().unwrap() {
        let (rtol, atol) = (case["rtol"].as_f64().unwrap(), case["atol"].as_f64().unwrap());
        let report = diff_json(
            &[
                &format!("--rtol={rtol}"),
                &format!("--atol={atol}"),
                &diff_fixture("train_a.pth"),
                &diff_fixture("train_b.pth"),
            ],
            1,
        );
        let want: BTreeMap<String, String> = serde_json::from_value(case["verdicts"].clone()).unwrap();
        assert_eq!(verdicts(&report), want, "rtol {rtol}, atol {atol}");
        assert_eq!(report["metadata"]["only_in_a"], expected["only_in_a"]);
        assert_eq!(report["metadata"]["only_in_b"], expected["only_in_b"]);
        assert_eq!(report["rtol"].as_f64(), Some(rtol));
    }
}

#[test]
fn diff_text_names_changed_leaves_with_both_values() {
    let out = ckpt()
        .args(["diff", &diff_fixture("train_a.pth"), &diff_fixture("train_b.pth")])
        .assert()
        .code(1)
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("metadata changed (3):"), "{text}");
    assert!(text.contains("  epoch: 5 -> 6"), "{text}");
    assert!(text.contains("  config.name: \"run1\" -> \"run2\""), "{text}");
    assert!(text.contains("metadata only in a (1):\n  note\n"), "{text}");
}

#[test]
fn diff_strip_prefix_matches_dataparallel_to_plain() {
    let (plain, dp) = (fixture("cnn_state_dict.pth"), fixture("dataparallel.pth"));
    let before = diff_json(&[&plain, &dp], 1);
    assert_eq!(before["only_in_a"].as_array().unwrap().len(), 15);
    for prefix in ["module", "module."] {
        let after = diff_json(&["--strip-prefix", prefix, &plain, &dp], 0);
        assert_eq!(after["identical"].as_array().unwrap().len(), 15, "{prefix}");
        assert_eq!(after["only_in_b"], Json::Array(vec![]));
    }
    let out = ckpt()
        .args(["diff", "--strip-prefix", "_orig_mod", &plain, &dp])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(
        err.contains("--strip-prefix '_orig_mod': no name in either checkpoint"),
        "{err}"
    );
}

#[test]
fn diff_filter_narrows_tensors_and_metadata_by_pattern() {
    let (a, b) = (diff_fixture("train_a.pth"), diff_fixture("train_b.pth"));
    // A module prefix: model.w, model.b, model.steps, and no metadata.
    let model = diff_json(&["--filter", "model", &a, &b], 1);
    let names: Vec<String> = verdicts(&model).into_keys().collect();
    assert_eq!(names, ["model.b", "model.steps", "model.w"]);
    // A glob and a leaf; only what they name is compared, so these are equal (exit 0).
    let equal = diff_json(&["--filter", "config.l*", "--filter", "optimizer", &a, &b], 0);
    let names: Vec<String> = verdicts(&equal).into_keys().collect();
    assert_eq!(names, ["config.lr", "optimizer.param_groups"]);
    let out = ckpt()
        .args(["diff", "--filter", "decoder", &a, &b])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("--filter decoder: matches no name"));
}

#[test]
fn diff_a_dedupe_alias_equals_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tied.safetensors");
    let tied = fixture("tied_state_dict.pth");
    ckpt()
        .args(["convert", "--dedupe", &tied, out.to_str().unwrap()])
        .assert()
        .success();
    // The alias is gone from the tensors and recorded in metadata (as huggingface's convert.py).
    let file = ckpt::read::open(&out).unwrap();
    let (gone, kept) = ("head.weight", "emb.weight");
    assert!(file.tensors.iter().all(|t| t.name != gone));
    assert_eq!(file.metadata[gone], kept);
    let report = diff_json(&[&tied, out.to_str().unwrap()], 0);
    assert!(
        report["identical"].as_array().unwrap().iter().any(|n| n == gone),
        "{report}"
    );
    assert_eq!(report["metadata"]["only_in_b"], Json::Array(vec![]));
}

#[test]
fn diff_a_dedupe_alias_in_sharded_output_equals_its_source() {
    // Each shard records the aliases it left out; the sharded reader gathers them.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let tied = fixture("tied_state_dict.pth");
    ckpt()
        .args(["convert", "--dedupe", "--max-shard-size", "2KB", &tied])
        .arg(format!("{}/", out.display()))
        .assert()
        .success();
    assert!(out.join("model.safetensors.index.json").is_file());
    let report = diff_json(&[&tied, out.to_str().unwrap()], 0);
    assert!(
        report["identical"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "head.weight"),
        "{report}"
    );
    assert_eq!(report["only_in_a"], Json::Array(vec![]), "{report}");
}

#[test]
fn diff_a_training_checkpoint_equals_its_safetensors_conversion() {
    // safetensors metadata is text ("5", "[0.5,0.25]"): compared as the values it encodes.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.safetensors");
    let src = fixture("training_checkpoint.pth");
    ckpt().args(["convert", &src, out.to_str().unwrap()]).assert().success();
    let report = diff_json(&[&src, out.to_str().unwrap()], 0);
    let leaves = report["metadata"]["identical"].as_array().unwrap().len();
    assert_eq!(
        leaves,
        ckpt::read::open(std::path::Path::new(&src)).unwrap().metadata.len()
    );
}

#[test]
fn diff_refuses_negative_or_nan_tolerances() {
    let a = fixture("cnn_state_dict.pth");
    for bad in ["--rtol=-1", "--atol=-0.5", "--rtol=NaN"] {
        let out = ckpt()
            .args(["diff", bad, &a, &a])
            .assert()
            .code(2)
            .get_output()
            .stderr
            .clone();
        assert!(String::from_utf8_lossy(&out).contains("must be a number >= 0"), "{bad}");
    }
}
