//! Every fixture, read by ckpt, against the values PyTorch itself computed when it wrote them
//! (fixtures/generate.py -> expected.json): names, order, dtypes, shapes, strides, offsets,
//! devices, requires_grad, Parameter-ness, sizes, SHA-256 of the elements, storage sharing and
//! metadata.

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::common::{expected, fixtures_dir};
use ckpt::tensor_data::sha256_hex;

/// Compares one fixture; returns the list of differences.
fn check_fixture(rel: &str, want: &Json) -> Vec<String> {
    check_file(&fixtures_dir().join(rel), rel, want)
}

/// Compares a file written from fixture `rel` (a conversion) with what PyTorch saw in `rel`.
fn check_fixture_at(path: &std::path::Path, rel: &str) -> Vec<String> {
    let mut want = expected()["fixtures"][rel].clone();
    want["format"] = Json::from("pth-zip");
    check_file(path, rel, &want)
}

fn check_file(path: &std::path::Path, rel: &str, want: &Json) -> Vec<String> {
    let ckpt = match ckpt::read::open(path) {
        Ok(c) => c,
        Err(e) => return vec![format!("{rel}: read failed: {e}")],
    };
    let mut diffs = Vec::new();
    let mut diff = |what: String| diffs.push(format!("{rel}: {what}"));
    if let Some(f) = want["format"].as_str() {
        if ckpt.format.name() != f {
            diff(format!("format {} != {f}", ckpt.format.name()));
        }
    }
    let want_tensors = want["tensors"].as_array().expect("tensors array");
    let got_names: Vec<&str> = ckpt.tensors.iter().map(|t| t.name.as_str()).collect();
    let want_names: Vec<&str> = want_tensors.iter().map(|t| t["name"].as_str().expect("name")).collect();
    if got_names != want_names {
        diff(format!("names differ:\n  got  {got_names:?}\n  want {want_names:?}"));
        return diffs;
    }
    // Storage sharing must induce the same partition as PyTorch's storage groups.
    let mut group_of_storage: HashMap<usize, Json> = HashMap::new();
    let mut storage_of_group: HashMap<String, usize> = HashMap::new();
    for (t, w) in ckpt.tensors.iter().zip(want_tensors) {
        let name = &t.name;
        let storage = &ckpt.storages[t.storage.0];
        let checks: [(&str, Json, Json); 7] = [
            ("dtype", Json::from(t.dtype.name()), w["dtype"].clone()),
            ("shape", Json::from(t.shape.clone()), w["shape"].clone()),
            ("device", Json::from(storage.location.clone()), w["device"].clone()),
            ("requires_grad", Json::from(t.requires_grad), w["requires_grad"].clone()),
            ("parameter", Json::from(t.parameter), w["parameter"].clone()),
            ("nbytes", Json::from(t.nbytes()), w["nbytes"].clone()),
            ("sha256", Json::from(sha256_hex(&ckpt, t)), w["sha256"].clone()),
        ];
        for (field, got, want) in checks {
            if got != want {
                diff(format!("{name}: {field} {got} != {want}"));
            }
        }
        // Strides and offsets are checked where PyTorch reports a storage (not safetensors).
        if !w["storage_offset"].is_null() {
            if Json::from(t.stride.clone()) != w["stride"] {
                diff(format!("{name}: stride {:?} != {}", t.stride, w["stride"]));
            }
            if t.offset != w["storage_offset"] {
                diff(format!(
                    "{name}: storage_offset {} != {}",
                    t.offset, w["storage_offset"]
                ));
            }
        }
        let group = w["storage_group"].clone();
        if !group.is_null() {
            if let Some(g) = group_of_storage.insert(t.storage.0, group.clone()) {
                if g != group {
                    diff(format!(
                        "{name}: shares a storage with a tensor PyTorch puts in another group"
                    ));
                }
            }
            if let Some(s) = storage_of_group.insert(group.to_string(), t.storage.0) {
                if s != t.storage.0 {
                    diff(format!(
                        "{name}: PyTorch shares its storage with another tensor, ckpt does not"
                    ));
                }
            }
        }
    }
    if let Some(meta) = want.get("metadata").and_then(Json::as_object) {
        for (k, v) in meta {
            match ckpt.metadata.get(k) {
                Some(got) if json_close(got, v) => {}
                Some(got) => diff(format!("metadata {k}: {got} != {v}")),
                None => diff(format!(
                    "metadata {k} missing (have {:?})",
                    ckpt.metadata.keys().collect::<Vec<_>>()
                )),
            }
        }
        for k in ckpt.metadata.keys() {
            if !meta.contains_key(k) {
                diff(format!("metadata {k} is not in PyTorch's view"));
            }
        }
    }
    diffs
}

/// Equality with a relative tolerance on floats (JSON printers differ in the last digit).
fn json_close(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()) || x == y
            }
            _ => x == y,
        },
        (Json::Array(x), Json::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_close(a, b)),
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn every_fixture_matches_pytorch() {
    let expected = expected();
    let fixtures = expected["fixtures"].as_object().expect("fixtures object");
    assert!(
        fixtures.len() >= 20,
        "expected.json lists only {} fixtures",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for (rel, want) in fixtures {
        failures.extend(check_fixture(rel, want));
    }
    assert!(
        failures.is_empty(),
        "{} differences from PyTorch:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn sharded_directory_reads_like_its_index() {
    for (dir, index) in [
        ("sharded_st", "model.safetensors.index.json"),
        ("sharded_bin", "pytorch_model.bin.index.json"),
    ] {
        let from_dir = ckpt::read::open(&fixtures_dir().join(dir)).expect("directory reads");
        let from_index = ckpt::read::open(&fixtures_dir().join(dir).join(index)).expect("index reads");
        let names = |c: &ckpt::Checkpoint| c.tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&from_dir), names(&from_index));
        assert!(!from_dir.tensors.is_empty());
    }
}

/// The fixture's expected metadata value under `key`, as PyTorch gave it.
fn torch_metadata(rel: &str, key: &str) -> Json {
    let expected = expected();
    let value = &expected["fixtures"][rel]["metadata"][key];
    assert!(!value.is_null(), "{rel}: expected.json has no metadata '{key}'");
    value.clone()
}

#[test]
fn torch_size_device_dtype_and_layout_values_read_as_torch_prints_them() {
    let rel = "torch_objects.pth";
    let ckpt = ckpt::read::open(&fixtures_dir().join(rel)).expect("reads");
    // One key per kind of object, at the top, inside a list, beside a tensor in a tuple, nested.
    for key in [
        "shape",
        "empty_shape",
        "dev",
        "cuda",
        "dt",
        "layout",
        "list",
        "with_tensor.0",
        "with_tensor.2",
        "nested.cfg.device",
        "nested.cfg.sizes",
    ] {
        assert_eq!(ckpt.metadata.get(key), Some(&torch_metadata(rel, key)), "{rel}: {key}");
    }
    assert_eq!(ckpt.metadata["dev"], "cuda:1");
    assert_eq!(ckpt.metadata["dt"], "torch.float16");
    assert_eq!(ckpt.metadata["layout"], "torch.strided");
}

#[test]
fn a_whole_model_with_torch_objects_as_attributes_reads_its_state_dict() {
    let ckpt = ckpt::read::open(&fixtures_dir().join("torch_objects_model.pth")).expect("reads");
    let names: Vec<&str> = ckpt.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["fc.weight", "fc.bias"]);
    assert_eq!(ckpt.origin, ckpt::model::Origin::WholeModel);
}

#[test]
fn complex32_reads_as_pairs_of_halves() {
    let ckpt = ckpt::read::open(&fixtures_dir().join("complex32.pth")).expect("reads");
    let dtype = ckpt::dtype::DType::parse("complex32").expect("a dtype");
    assert_eq!(ckpt::dtype::DType::parse("chalf"), Some(dtype));
    assert_eq!((dtype.size(), dtype.swap_unit()), (4, 2));
    assert_eq!(dtype.safetensors_name(), None);
    assert!(ckpt.tensors.iter().all(|t| t.dtype == dtype));
    let t = ckpt.tensors.iter().find(|t| t.name == "c32_t").expect("c32_t");
    assert_eq!(
        (t.shape.as_slice(), t.stride.as_slice()),
        (&[3u64, 2][..], &[1u64, 3][..])
    );
}

#[test]
fn a_dtensor_reads_as_its_local_shard_with_a_note_on_placements_and_mesh() {
    let rel = "dtensor.pth";
    let ckpt = ckpt::read::open(&fixtures_dir().join(rel)).expect("reads");
    let names: Vec<&str> = ckpt.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["sharded", "replicated", "named_mesh", "plain"]);
    for key in ["sharded", "replicated", "named_mesh"] {
        assert_eq!(ckpt.metadata.get(key), Some(&torch_metadata(rel, key)), "{rel}: {key}");
    }
    assert_eq!(
        ckpt.metadata["sharded"],
        "DTensor(placements=(Shard(dim=0),), mesh=DeviceMesh('cpu', shape=(1,)))"
    );
    // The mesh's own rank tensor is part of the DTensor's spec, not a tensor of the checkpoint.
    assert_eq!(ckpt.storages.len(), 4);
}

#[test]
fn distributed_parameters_keep_the_dtensors_flags() {
    let rel = "dtensor_keep_vars.pth";
    let ckpt = ckpt::read::open(&fixtures_dir().join(rel)).expect("reads");
    let want = &expected()["fixtures"][rel]["tensors"];
    for (t, w) in ckpt.tensors.iter().zip(want.as_array().expect("tensors")) {
        assert_eq!(Json::from(t.parameter), w["parameter"], "{}", t.name);
        assert_eq!(Json::from(t.requires_grad), w["requires_grad"], "{}", t.name);
    }
    let bias = ckpt.tensors.iter().find(|t| t.name == "0.bias").expect("0.bias");
    assert!(bias.parameter && !bias.requires_grad, "a frozen distributed parameter");
}

#[test]
fn complex32_converts_to_pth_as_it_is_and_is_refused_by_safetensors_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = fixtures_dir().join("complex32.pth");
    let st = dir.path().join("out.safetensors");
    let refused = assert_cmd::Command::cargo_bin("ckpt")
        .expect("binary builds")
        .arg("convert")
        .arg(&input)
        .arg(&st)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'c32'") && stderr.contains("complex32"), "{stderr}");
    assert!(!st.exists());
    // --dtype casts floating-point tensors; complex ones stay as they are, complex32 like complex64.
    let pth = dir.path().join("out.pth");
    assert_cmd::Command::cargo_bin("ckpt")
        .expect("binary builds")
        .arg("convert")
        .arg(&input)
        .arg(&pth)
        .args(["--dtype", "float16"])
        .assert()
        .success();
    let diffs = check_fixture_at(&pth, "complex32.pth");
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
