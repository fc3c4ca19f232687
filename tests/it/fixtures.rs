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
    let path = fixtures_dir().join(rel);
    let ckpt = match ckpt::read::open(&path) {
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
        let storage = ckpt.storage(t.storage);
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
