//! `ckpt verify` (feature `tch`): every fixture loaded by libtorch on the CPU and compared bit
//! for bit with ckpt's reading; damaged copies; devices that are not there.
//!
//! Run: `scripts/build-tch.sh test` (or, with the venv active and LIBTORCH_USE_PYTORCH=1,
//! `cargo test --release --features tch --test it verify`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ckpt::verify::{self, Device, Loader, Outcome, VerifyError, VerifyReport};

use crate::common::{expected, fixtures_dir};

/// The loader each fixture's tensors must go through (the others' tensors all go through
/// `bytes`, except TorchScript: parameters `tch-script`, buffers `bytes`).
fn expected_loader(rel: &str) -> Option<Loader> {
    Some(match rel {
        "cnn_state_dict.pth"
        | "cnn_keep_vars.pth"
        | "tied_state_dict.pth"
        | "lstm_state_dict.pth"
        | "gpu_tagged.pth"
        | "views.pth"
        | "archive_prefix.pth"
        | "dataparallel.pth"
        | "compiled.pth" => Loader::TchZipDict,
        r if r.starts_with("sharded_bin/") => Loader::TchZipDict,
        r if r.starts_with("sharded_st/") => Loader::TchSafetensors,
        "torchscript_cnn.pt" => return None,
        _ => Loader::Bytes,
    })
}

fn fixture(rel: &str) -> PathBuf {
    fixtures_dir().join(rel)
}

fn failures(r: &VerifyReport) -> Vec<String> {
    r.tensors
        .iter()
        .filter(|t| !matches!(t.outcome, Outcome::Matched | Outcome::Skipped { .. }))
        .map(|t| format!("{}: {:?}", t.name, t.outcome))
        .collect()
}

#[test]
fn every_fixture_loads_in_libtorch_on_cpu() {
    let expected = expected();
    let fixtures = expected["fixtures"].as_object().expect("fixtures object");
    let mut problems = Vec::new();
    for (rel, want) in fixtures {
        let path = fixture(rel);
        let report = match verify::verify(&path, Device::Cpu) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{rel}: {e}"));
                continue;
            }
        };
        let f = failures(&report);
        if !f.is_empty() || report.exit_code() != 0 {
            problems.push(format!("{rel}: {f:?}\n{}", report.to_text()));
        }
        let want_names: Vec<&str> = want["tensors"]
            .as_array()
            .expect("tensors")
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let got_names: Vec<&str> = report.tensors.iter().map(|t| t.name.as_str()).collect();
        let mut a = want_names.clone();
        let mut b = got_names.clone();
        a.sort();
        b.sort();
        if a != b {
            problems.push(format!("{rel}: tensors {got_names:?}, PyTorch has {want_names:?}"));
        }
        match expected_loader(rel) {
            Some(l) => {
                for t in &report.tensors {
                    if t.loader != l {
                        problems.push(format!(
                            "{rel}: {} loaded via {}, expected {}",
                            t.name,
                            t.loader.name(),
                            l.name()
                        ));
                    }
                }
            }
            None => {
                // TorchScript: libtorch returns the parameters, buffers go through the bytes.
                let script = report.tensors.iter().filter(|t| t.loader == Loader::TchScript).count();
                let bytes = report.tensors.iter().filter(|t| t.loader == Loader::Bytes).count();
                if script == 0 || bytes == 0 || script + bytes != report.tensors.len() {
                    problems.push(format!(
                        "{rel}: tch-script {script}, bytes {bytes}\n{}",
                        report.to_text()
                    ));
                }
                for t in report.tensors.iter().filter(|t| t.loader == Loader::Bytes) {
                    if !t.name.contains("running_") && !t.name.contains("num_batches_tracked") {
                        problems.push(format!("{rel}: {} is not a buffer but went through bytes", t.name));
                    }
                }
            }
        }
        // Only dtypes tch has no kind for are skipped.
        for t in &report.tensors {
            if let Outcome::Skipped { why } = &t.outcome {
                if !["uint16", "uint32", "uint64", "float8_e8m0fnu"].contains(&t.dtype.as_str()) {
                    problems.push(format!("{rel}: {} ({}) skipped: {why}", t.name, t.dtype));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn skipped_dtypes_are_listed_not_passed() {
    let r = verify::verify(&fixture("dtypes.pth"), Device::Cpu).unwrap();
    let c = r.counts();
    assert_eq!(c.skipped, 4, "{}", r.to_text());
    assert_eq!(c.matched + c.skipped, r.tensors.len());
    assert_eq!(r.exit_code(), 0);
    let text = r.to_text();
    assert!(text.contains("4 skipped (not verified)"), "{text}");
    let json = r.to_json();
    assert_eq!(json["counts"]["skipped"], 4);
    assert_eq!(json["ok"], true);
    assert_eq!(json["exit_code"], 0);
    let u16 = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["dtype"] == "uint16")
        .unwrap();
    assert_eq!(u16["status"], "skipped");
    assert_eq!(u16["loader"], "bytes");
    assert_eq!(json["files"][0]["loader"], "bytes");
}

/// A state dict whose top level is a plain dict goes straight to tch's zip loader.
#[test]
fn plain_dict_pth_loads_through_tch_zip() {
    let dir = tempfile::tempdir().unwrap();
    for rel in [
        "cnn_state_dict.pth",
        "views.pth",
        "gpu_tagged.pth",
        "tied_state_dict.pth",
    ] {
        let out = dir.path().join(rel);
        verify::write_plain_dict_copy(&fixture(rel), &out).unwrap();
        let copy = ckpt::read::open(&out).unwrap();
        assert!(
            matches!(copy.root, ckpt::model::Node::Dict { ordered: false, .. }),
            "{rel}"
        );
        // The copy is the same checkpoint: libtorch's reading of it equals ckpt's of the original.
        let original = ckpt::read::open(&fixture(rel)).unwrap();
        let r = verify::verify_against(&out, &original, Device::Cpu).unwrap();
        assert!(
            r.ok() && r.counts().matched == original.tensors.len(),
            "{rel}\n{}",
            r.to_text()
        );
        assert!(
            r.tensors.iter().all(|t| t.loader == Loader::TchZip),
            "{rel}\n{}",
            r.to_text()
        );
    }
}

/// Flips one bit of element 3 of the first contiguous tensor with 4+ elements whose storage
/// no other tensor uses; returns its name. The zip CRC is left stale.
fn corrupt_copy(src: &Path, dst: &Path) -> String {
    let ck = ckpt::read::open(src).unwrap();
    let t = ck
        .tensors
        .iter()
        .find(|t| {
            t.numel() >= 4 && t.is_contiguous() && ck.tensors.iter().filter(|o| o.storage == t.storage).count() == 1
        })
        .expect("a tensor to corrupt");
    let s = &ck.storages[t.storage.0];
    let at = s.data.offset + (t.offset + 3) * t.dtype.size() as u64;
    let mut bytes = std::fs::read(src).unwrap();
    bytes[at as usize] ^= 0x01;
    std::fs::write(dst, bytes).unwrap();
    t.name.clone()
}

#[test]
fn a_corrupted_tensor_byte_differs_from_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.pth");
    verify::write_plain_dict_copy(&fixture("cnn_state_dict.pth"), &plain).unwrap();
    let cases: [(PathBuf, Loader, bool); 5] = [
        (fixture("cnn_state_dict.pth"), Loader::TchZipDict, true),
        (plain, Loader::TchZip, true),
        (fixture("torchscript_cnn.pt"), Loader::TchScript, true),
        (
            fixture("sharded_st/model-00001-of-00002.safetensors"),
            Loader::TchSafetensors,
            false,
        ),
        (fixture("legacy_state_dict.pth"), Loader::Bytes, false),
    ];
    for (i, (src, loader, zip)) in cases.into_iter().enumerate() {
        let bad = dir
            .path()
            .join(format!("bad{i}.{}", src.extension().unwrap().to_str().unwrap()));
        let name = corrupt_copy(&src, &bad);

        // Neither libtorch nor torch.load checks zip CRCs: both read the damaged byte, so the
        // file agrees with itself, and verify warns about the CRC.
        let own = verify::verify(&bad, Device::Cpu).unwrap();
        assert_eq!(own.exit_code(), 0, "{}", own.to_text());
        let crc_warned = own.files.iter().any(|f| f.warnings.iter().any(|w| w.contains("CRC")));
        assert_eq!(crc_warned, zip, "{}", own.to_text());

        // Against ckpt's reading of the original: exactly that tensor differs, at element 3.
        let original = ckpt::read::open(&src).unwrap();
        let r = verify::verify_against(&bad, &original, Device::Cpu).unwrap();
        assert_eq!(r.exit_code(), 1, "{}", r.to_text());
        assert_eq!(verify::exit_code(&Ok(r.clone())), 1);
        for t in &r.tensors {
            if t.name == name {
                assert_eq!(t.loader, loader, "{}", r.to_text());
                match &t.outcome {
                    Outcome::Differs {
                        first_index: Some(3), ..
                    } => {}
                    other => panic!("{name}: {other:?}\n{}", r.to_text()),
                }
            } else {
                assert_eq!(t.outcome, Outcome::Matched, "{}: {}", t.name, r.to_text());
            }
        }
        assert!(r.to_text().contains("first differing element 3"));
        assert_eq!(r.to_json()["counts"]["differs"], 1);
    }
}

#[test]
fn a_file_that_cannot_be_loaded_is_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pth");
    let bytes = std::fs::read(fixture("cnn_state_dict.pth")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let r = verify::verify(&cut, Device::Cpu);
    assert!(r.is_err());
    assert_eq!(verify::exit_code(&r), 2);
    let missing = verify::verify(&dir.path().join("nope.pth"), Device::Cpu);
    assert_eq!(verify::exit_code(&missing), 2);
}

#[test]
fn tensors_missing_on_one_side_are_reported() {
    // libtorch loads tied_state_dict.pth; the reference is cnn_state_dict.pth: no names shared.
    let reference = ckpt::read::open(&fixture("cnn_state_dict.pth")).unwrap();
    let r = verify::verify_against(&fixture("tied_state_dict.pth"), &reference, Device::Cpu).unwrap();
    let c = r.counts();
    assert_eq!(c.matched, 0);
    assert!(c.missing > 0);
    assert_eq!(r.exit_code(), 1);
    let why: BTreeMap<String, usize> = r.tensors.iter().fold(BTreeMap::new(), |mut m, t| {
        if let Outcome::Missing { why } = &t.outcome {
            *m.entry(why.clone()).or_default() += 1;
        }
        m
    });
    assert!(why.keys().any(|w| w.contains("not in the file")), "{why:?}");
    assert!(why.keys().any(|w| w.contains("not in the reference")), "{why:?}");
}

#[test]
fn devices_parse_and_cuda_without_a_gpu_is_an_error() {
    assert_eq!(verify::parse_device("cpu").unwrap(), Device::Cpu);
    assert_eq!(verify::parse_device("cuda").unwrap(), Device::Cuda(0));
    assert_eq!(verify::parse_device("cuda:1").unwrap(), Device::Cuda(1));
    for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
        assert!(
            matches!(verify::parse_device(bad), Err(VerifyError::Device(_))),
            "{bad}"
        );
    }
    if tch::Cuda::is_available() {
        eprintln!("CUDA is available here: checking an out-of-range device instead");
        let n = tch::Cuda::device_count() as usize;
        let r = verify::verify(&fixture("cnn_state_dict.pth"), Device::Cuda(n));
        assert!(matches!(r, Err(VerifyError::Device(_))));
        return;
    }
    for dev in [Device::Cuda(0), Device::Cuda(1)] {
        let r = verify::verify(&fixture("cnn_state_dict.pth"), dev);
        assert_eq!(verify::exit_code(&r), 2);
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("cuda:") && (msg.contains("no CUDA device") || msg.contains("without CUDA")),
            "{msg}"
        );
    }
}

#[test]
fn verify_output_is_verify() {
    let a = verify::verify_output(&fixture("views.pth"), Device::Cpu).unwrap();
    let b = verify::verify(&fixture("views.pth"), Device::Cpu).unwrap();
    assert_eq!(a.to_json(), b.to_json());
}

// ---------------------------------------------------------------------------------------------
// CONVERTED OUTPUTS. What ckpt writes (src/write) must load in libtorch to the tensors ckpt
// read from the input. Through the library, and at the end through the CLI (`ckpt convert ...
// --device cpu`, then `ckpt verify`).
// ---------------------------------------------------------------------------------------------

/// Every tensor of `out` as libtorch loads it equals ckpt's reading of `input`, and `out` agrees
/// with itself; returns the report on `out`.
fn check_converted(input: &Path, out: &Path) -> VerifyReport {
    let own = verify::verify_output(out, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    assert_eq!(own.exit_code(), 0, "{}", own.to_text());
    let reference = ckpt::read::open(input).unwrap();
    let r = verify::verify_against(out, &reference, Device::Cpu).unwrap();
    assert_eq!(
        r.exit_code(),
        0,
        "{} -> {}\n{}",
        input.display(),
        out.display(),
        r.to_text()
    );
    own
}

fn write_as(input: &Path, out: &Path, format: ckpt::write::OutFormat) {
    let ck = ckpt::read::open(input).unwrap();
    ckpt::write::write(&ck, out, &ckpt::write::WriteOptions::new(format))
        .unwrap_or_else(|e| panic!("{} -> {}: {e}", input.display(), out.display()));
}

#[test]
fn written_pth_outputs_load_in_libtorch() {
    let dir = tempfile::tempdir().unwrap();
    // State dicts keep their OrderedDict (tch-zip-dict); the others say which path they took.
    for rel in [
        "cnn_state_dict.pth",
        "views.pth",
        "tied_state_dict.pth",
        "gpu_tagged.pth",
        "legacy_state_dict.pth",
        "bigendian.pth",
        "model.safetensors",
        "dtypes.pth",
        "training_checkpoint.pth",
    ] {
        let out = dir.path().join(format!("{}.pth", rel.replace('/', "_")));
        write_as(&fixture(rel), &out, ckpt::write::OutFormat::Pth);
        let r = check_converted(&fixture(rel), &out);
        eprintln!(
            "{rel} -> pth: {}",
            r.files.iter().map(|f| f.loader.name()).collect::<Vec<_>>().join(",")
        );
    }
}

#[test]
fn written_safetensors_outputs_load_in_libtorch() {
    let dir = tempfile::tempdir().unwrap();
    for rel in [
        "cnn_state_dict.pth",
        "lstm_state_dict.pth",
        "legacy_state_dict.pth",
        "views.pth",
        "model.safetensors",
    ] {
        let out = dir.path().join(format!("{}.safetensors", rel.replace('/', "_")));
        write_as(&fixture(rel), &out, ckpt::write::OutFormat::Safetensors);
        let r = check_converted(&fixture(rel), &out);
        let all_safetensors_dtypes = r.tensors.iter().all(|t| {
            [
                "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64",
            ]
            .contains(&t.dtype.as_str())
        });
        if all_safetensors_dtypes {
            assert!(
                r.tensors.iter().all(|t| t.loader == Loader::TchSafetensors),
                "{rel}\n{}",
                r.to_text()
            );
        }
    }
}

/// A checkpoint saved on the GPU, retagged as cpu and written: libtorch loads it, tags say cpu.
#[test]
fn gpu_tagged_written_for_cpu_loads_in_libtorch() {
    use ckpt::transform::device::{set_device, DeviceRule};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cpu.pth");
    let mut ck = ckpt::read::open(&fixture("gpu_tagged.pth")).unwrap();
    assert!(ck.storages.iter().all(|s| s.location == "cuda:0"));
    set_device(&mut ck, &DeviceRule::parse("cpu").unwrap());
    ckpt::write::write(&ck, &out, &ckpt::write::WriteOptions::new(ckpt::write::OutFormat::Pth)).unwrap();
    let back = ckpt::read::open(&out).unwrap();
    assert!(back.storages.iter().all(|s| s.location == "cpu"));
    check_converted(&fixture("gpu_tagged.pth"), &out);
}

#[test]
fn cli_convert_then_verify() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cpu.pth");
    let mut cmd = assert_cmd::Command::cargo_bin("ckpt").unwrap();
    cmd.arg("convert")
        .arg(fixture("gpu_tagged.pth"))
        .arg(&out)
        .args(["--device", "cpu"]);
    cmd.assert().success();
    check_converted(&fixture("gpu_tagged.pth"), &out);
    let mut cmd = assert_cmd::Command::cargo_bin("ckpt").unwrap();
    cmd.arg("verify").arg(&out).args(["--device", "cpu", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&cmd.assert().success().get_output().stdout).unwrap();
    assert_eq!(json["ok"], true);
    let mut cmd = assert_cmd::Command::cargo_bin("ckpt").unwrap();
    cmd.arg("verify").arg(&out).args(["--device", "cuda:99"]);
    cmd.assert().code(2);
}
