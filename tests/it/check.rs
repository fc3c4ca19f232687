//! `ckpt check` and `ckpt::check::check` on fixtures/check (generate.py's `check_fixtures`):
//! what must be found comes from check/expected.json, written by Python alongside the damage.

use serde_json::Value as Json;

use crate::common::fixtures_dir;

fn expected() -> Json {
    let path = fixtures_dir().join("check/expected.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("check/expected.json")).expect("JSON")
}

fn ckpt_cmd() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("ckpt").expect("binary builds")
}

#[test]
fn a_flipped_data_byte_is_a_crc_finding_naming_the_record() {
    let want = expected();
    let report = ckpt::check::check(
        &fixtures_dir().join("check/flipped.pth"),
        &ckpt::check::CheckOptions::new(),
    )
    .expect("readable");
    let crc: Vec<_> = report
        .findings()
        .iter()
        .filter(|f| f.kind() == ckpt::check::Kind::Crc)
        .collect();
    let records: Vec<&str> = want["flipped.pth"]["crc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(crc.len(), records.len(), "{:?}", report.findings());
    for (f, record) in crc.iter().zip(&records) {
        assert!(f.what().contains(&format!("'{record}'")), "{}", f.what());
    }
    assert!(!report.is_sound());
    assert!(report.records_checked() >= 3);
}

#[test]
fn fixtures_torch_wrote_are_sound() {
    for rel in [
        "cnn_state_dict.pth",
        "tied_model.pth",
        "sharded_st",
        "sharded_bin",
        "legacy_state_dict.pth",
        "torchscript_cnn.pt",
    ] {
        let report = ckpt::check::check(&fixtures_dir().join(rel), &ckpt::check::CheckOptions::new()).expect(rel);
        assert!(report.is_sound(), "{rel}: {:?}", report.findings());
    }
}

#[test]
fn a_misstated_total_size_is_a_finding() {
    let want = &expected()["bad_total"];
    let report = ckpt::check::check(
        &fixtures_dir().join("check/bad_total"),
        &ckpt::check::CheckOptions::new(),
    )
    .expect("readable");
    let [f] = report.findings() else {
        panic!("{:?}", report.findings())
    };
    assert_eq!(f.kind(), ckpt::check::Kind::TotalSize);
    assert!(
        f.what().contains(&want["stated_total_size"].to_string()),
        "{}",
        f.what()
    );
    assert!(f.what().contains(&want["true_total_size"].to_string()), "{}", f.what());
}

#[test]
fn the_manifest_catches_a_changed_file_and_passes_an_unchanged_one() {
    let manifest = fixtures_dir().join("check/SHA256SUMS");
    let options = ckpt::check::CheckOptions::new().sha256_manifest(&manifest);
    let flipped = ckpt::check::check(&fixtures_dir().join("check/flipped.pth"), &options).expect("readable");
    let sha: Vec<_> = flipped
        .findings()
        .iter()
        .filter(|f| f.kind() == ckpt::check::Kind::Sha256)
        .collect();
    let want = &expected()["flipped.pth"];
    assert_eq!(sha.len(), 1);
    assert!(sha[0].what().contains(want["sha256"].as_str().unwrap()));
    assert!(sha[0].what().contains(want["original_sha256"].as_str().unwrap()));
    let good = ckpt::check::check(&fixtures_dir().join("cnn_state_dict.pth"), &options).expect("readable");
    assert_eq!((good.is_sound(), good.files_hashed()), (true, 1));
}

#[test]
fn exit_codes_0_sound_1_findings_2_unreadable() {
    let dir = fixtures_dir();
    ckpt_cmd()
        .arg("check")
        .arg(dir.join("cnn_state_dict.pth"))
        .assert()
        .code(0);
    ckpt_cmd()
        .arg("check")
        .arg(dir.join("check/flipped.pth"))
        .assert()
        .code(1);
    ckpt_cmd()
        .arg("check")
        .arg(dir.join("stats/planted.pth"))
        .assert()
        .code(1);
    ckpt_cmd()
        .args(["check", "--allow", "nan,inf"])
        .arg(dir.join("stats/planted.pth"))
        .assert()
        .code(0);
    // one unreadable among sound ones: 2, and the sound one is still reported
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("garbage.pth");
    std::fs::write(&bad, b"not a checkpoint at all").unwrap();
    let out = ckpt_cmd()
        .arg("check")
        .arg(dir.join("cnn_state_dict.pth"))
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cnn_state_dict.pth: sound"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("garbage.pth"));
    // unknown kinds and a manifest listing none of the files are errors, not passes
    ckpt_cmd()
        .args(["check", "--allow", "nonsense"])
        .arg(dir.join("cnn_state_dict.pth"))
        .assert()
        .code(2);
    let out = ckpt_cmd()
        .arg("check")
        .arg(dir.join("model.safetensors"))
        .arg("--sha256")
        .arg(dir.join("check/SHA256SUMS"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn json_lists_findings_by_kind() {
    let out = ckpt_cmd()
        .args(["check", "--json"])
        .arg(fixtures_dir().join("check/flipped.pth"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Json = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["status"], 1);
    let kinds: Vec<&str> = v["checks"][0]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["crc"]);
    assert_eq!(v["checks"][0]["sound"], false);
}
