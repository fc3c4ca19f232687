//! torch.distributed.checkpoint directories (fixtures/dcp, written by real torch on 1, 2 and 4
//! gloo ranks): reading and converting them must give what torch's own consolidation
//! (`dcp_to_torch_save` + `torch.load`, in fixtures/dcp/expected.json) gives, tensor by tensor;
//! damaged directories (fixtures/dcp/hostile) are refused with exit 2, naming file and problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value as Json;

use crate::common::fixtures_dir;

fn dcp_dir() -> PathBuf {
    fixtures_dir().join("dcp")
}

/// expected.json's checkpoints: name -> {"tensors": {fqn: {dtype, shape, sha256}}, "metadata"}.
fn expected() -> BTreeMap<String, Json> {
    let path = dcp_dir().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: Json = serde_json::from_str(&text).unwrap();
    json["checkpoints"].as_object().unwrap().clone().into_iter().collect()
}

fn ckpt() -> Command {
    Command::cargo_bin("ckpt").unwrap()
}

/// Every tensor of a checkpoint ckpt reads as {name: (dtype, shape, sha256)}.
fn read_tensors(path: &Path) -> BTreeMap<String, Json> {
    let c = ckpt::read::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    c.tensors
        .iter()
        .map(|t| {
            let sha = ckpt::tensor_data::try_sha256_hex(&c, t).unwrap();
            (
                t.name.clone(),
                serde_json::json!({"dtype": t.dtype.name(), "shape": t.shape, "sha256": sha}),
            )
        })
        .collect()
}

/// expected.json's tensors of one checkpoint, with names through `rename` (None: left out).
fn expected_tensors(checkpoint: &Json, rename: impl Fn(&str) -> Option<String>) -> BTreeMap<String, Json> {
    checkpoint["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| rename(k).map(|k| (k, v.clone())))
        .collect()
}

/// The value DCP names `fqn` (`optim.param_groups.0.lr`) in ckpt's metadata: the entry of the
/// longest dotted prefix, then list indices and dict keys into its value.
fn metadata_item<'m>(metadata: &'m serde_json::Map<String, Json>, fqn: &str) -> Option<&'m Json> {
    let parts: Vec<&str> = fqn.split('.').collect();
    (1..=parts.len()).rev().find_map(|n| {
        let mut value = metadata.get(&parts[..n].join("."))?;
        for part in &parts[n..] {
            value = match value {
                Json::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                Json::Object(map) => map.get(*part)?,
                _ => return None,
            };
        }
        Some(value)
    })
}

#[test]
fn every_global_tensor_reads_as_torch_consolidates_it() {
    let all = expected();
    assert_eq!(all.len(), 3, "ws1, ws2, ws4");
    for (name, want) in &all {
        let dir = dcp_dir().join(name);
        let c = ckpt::read::open(&dir).unwrap();
        assert_eq!(c.format(), ckpt::Format::Dcp, "{name}");
        assert_eq!(read_tensors(&dir), expected_tensors(want, |k| Some(k.into())), "{name}");
        // Non-tensor items hold the values torch restores. The state dict is nested as torch
        // rebuilds it, so a list of dicts without tensors (`optim.param_groups`) is one value,
        // as when reading torch's own consolidated file: look items up through it.
        for (k, v) in want["metadata"].as_object().unwrap() {
            assert_eq!(metadata_item(&c.metadata, k), Some(v), "{name}: metadata {k}");
        }
        // The .metadata file names the same checkpoint.
        assert_eq!(
            read_tensors(&dir.join(".metadata")).len(),
            want["tensors"].as_object().unwrap().len()
        );
    }
}

#[test]
fn converts_to_safetensors_pth_and_shards_equal_to_torch() {
    let out = tempfile::tempdir().unwrap();
    for (name, want) in &expected() {
        let want = expected_tensors(want, |k| Some(k.into()));
        for file in [format!("{name}.safetensors"), format!("{name}.pth")] {
            let target = out.path().join(&file);
            ckpt()
                .arg("convert")
                .arg(dcp_dir().join(name))
                .arg(&target)
                .assert()
                .success();
            assert_eq!(read_tensors(&target), want, "{file}");
        }
        let shards = out.path().join(format!("{name}-shards/"));
        ckpt()
            .arg("convert")
            .arg(dcp_dir().join(name))
            .arg(&shards)
            .args(["--max-shard-size", "300B"])
            .assert()
            .success();
        assert_eq!(read_tensors(&shards), want, "{name} in shards");
    }
}

#[test]
fn select_model_leaves_the_optimizer_state_out_and_casts() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("model.safetensors");
    ckpt()
        .arg("convert")
        .arg(dcp_dir().join("ws4"))
        .arg(&target)
        .args(["--select", "model", "--rename", "s/weight$/w/"])
        .assert()
        .success();
    let want = expected_tensors(&expected()["ws4"], |k| {
        k.strip_prefix("model.").map(|k| k.replace(".weight", ".w"))
    });
    assert_eq!(read_tensors(&target), want);

    let cast = out.path().join("bf16.safetensors");
    ckpt()
        .arg("convert")
        .arg(dcp_dir().join("ws2"))
        .arg(&cast)
        .args(["--dtype", "bf16"])
        .assert()
        .success();
    let c = ckpt::read::open(&cast).unwrap();
    let dtypes: BTreeMap<&str, &str> = c.tensors.iter().map(|t| (t.name.as_str(), t.dtype.name())).collect();
    assert_eq!(dtypes["model.rows.weight"], "bfloat16");
    assert_eq!(dtypes["model.cols.weight"], "bfloat16");
    assert_eq!(dtypes["model.ids"], "int64", "integers are not cast");
}

#[test]
fn inspect_shows_chunks_files_and_the_optimizer_state_apart() {
    let out = ckpt()
        .arg("inspect")
        .arg("--json")
        .arg(dcp_dir().join("ws2"))
        .assert()
        .success();
    let json: Json = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(json["format"], "dcp");
    let cols = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "model.cols.weight")
        .unwrap();
    // Shard(1) of a 4 x 10 tensor on 2 ranks, as the .metadata fixture records it.
    assert_eq!(
        cols["chunks"],
        serde_json::json!([
            {"offsets": [0, 0], "sizes": [4, 5], "file": "__0_0.distcp"},
            {"offsets": [0, 5], "sizes": [4, 5], "file": "__1_0.distcp"},
        ])
    );
    let text = ckpt().arg("inspect").arg(dcp_dir().join("ws4")).assert().success();
    let text = String::from_utf8_lossy(&text.get_output().stdout).into_owned();
    let (model, optim) = text
        .split_once("optimizer state (optim.*)")
        .expect("an optimizer section");
    assert!(
        model.contains("model.grid.weight") && model.contains("4 on dims 0,1"),
        "{text}"
    );
    assert!(!model.contains("optim.state"), "{text}");
    assert!(optim.contains("optim.state.uneven.weight.exp_avg "), "{text}");
}

#[test]
fn damaged_directories_exit_2_naming_the_file_and_the_problem() {
    let cases = [
        ("overlap", ".metadata", "chunks at offsets [0, 0] and [3, 0] overlap"),
        ("hole", ".metadata", "they leave a hole"),
        ("past_end", "__0_0.distcp", "lies past the end of the"),
        ("missing_file", ".metadata", "__7_0.distcp of 'model.ids' is missing"),
        (
            "unknown_global",
            ".metadata",
            "is not one torch.distributed.checkpoint writes",
        ),
    ];
    let out = tempfile::tempdir().unwrap();
    for (case, file, problem) in cases {
        let dir = dcp_dir().join("hostile").join(case);
        let target = out.path().join(format!("{case}.safetensors"));
        for args in [
            vec!["inspect".into(), dir.clone()],
            vec!["convert".into(), dir.clone(), target.clone()],
        ] {
            let a = ckpt().args(&args).assert().code(2);
            let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
            assert!(err.contains(&format!("{case}/{file}")), "{case}: {err}");
            assert!(err.contains(problem), "{case}: {err}");
            assert!(!err.contains("panicked"), "{case}: {err}");
        }
        assert!(!target.exists(), "{case}: no output");
    }
}

#[test]
fn truncated_and_garbled_data_files_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let src = dcp_dir().join("ws4");
    let len = std::fs::metadata(src.join("__2_0.distcp")).unwrap().len() as usize;
    for cut in [0, 1, 100, len / 2, len - 1] {
        let dir = tmp.path().join(format!("cut{cut}"));
        std::fs::create_dir(&dir).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        let bytes = std::fs::read(src.join("__2_0.distcp")).unwrap();
        std::fs::write(dir.join("__2_0.distcp"), &bytes[..cut]).unwrap();
        let a = ckpt()
            .arg("convert")
            .arg(&dir)
            .arg(dir.join("out.pth"))
            .assert()
            .code(2);
        let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
        assert!(err.contains("__2_0.distcp"), "cut at {cut}: {err}");
        // Every byte garbled in turn in a copy of the first chunk's archive is an error or a
        // clean read, never a panic.
        if cut == len - 1 {
            for at in (0..1577).step_by(37) {
                let mut bad = bytes.clone();
                bad[at] ^= 0x5a;
                std::fs::write(dir.join("__2_0.distcp"), &bad).unwrap();
                let r = ckpt::read::open(&dir).and_then(|c| {
                    c.tensors
                        .iter()
                        .try_for_each(|t| ckpt::tensor_data::try_sha256_hex(&c, t).map(drop))
                });
                if let Err(e) = r {
                    assert!(!e.to_string().is_empty());
                }
            }
        }
    }
}

#[test]
fn check_verifies_every_chunk_archive_and_names_a_flipped_one() {
    let a = ckpt().arg("check").arg(dcp_dir().join("ws4")).assert().code(0);
    let out = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(
        out.contains("sound") && out.contains("zip records CRC-checked"),
        "{out}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ws2");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(dcp_dir().join("ws2")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    // One bit of a tensor's bytes in the second chunk of model.cols.weight, where ckpt reads it.
    let c = ckpt::read::open(&dir).unwrap();
    let t = c.tensors.iter().find(|t| t.name == "model.cols.weight").unwrap();
    let piece = &c.storages[t.storage.0].data.source.assembly().unwrap().pieces()[1];
    let file = piece.data.source.path().to_path_buf();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[piece.data.offset as usize + 3] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let a = ckpt().arg("check").arg(&dir).assert().code(1);
    let out = String::from_utf8_lossy(&a.get_output().stdout).into_owned();
    assert!(out.contains("__1_0.distcp (bytes "), "{out}");
    assert!(out.contains("record 'archive/data/0': data CRC-32"), "{out}");
}

#[test]
fn scan_judges_metadata_as_torch_loads_it() {
    use ckpt::Verdict;
    // torch reads .metadata with plain pickle.load (its weights-only loader refuses protocol 4
    // and DCP's classes): instantiating DCP's own dataclasses needs torch's code, calls nothing.
    for name in ["ws1", "ws2", "ws4"] {
        let path = dcp_dir().join(name).join(".metadata");
        let report = &ckpt::scan_paths(&[path], &Default::default())[0];
        assert_eq!(report.verdict, Verdict::NeedsCode, "{name}:\n{}", report.to_text(true));
    }
    let path = dcp_dir().join("hostile/unknown_global/.metadata");
    let report = &ckpt::scan_paths(&[path], &Default::default())[0];
    assert_eq!(report.verdict, Verdict::Dangerous, "{}", report.to_text(true));
}

/// expected.json's scan_cases: what real torch's dcp.load and dcp_to_torch_save did with each
/// case of fixtures/dcp/hostile written for scan (a counter stood in for posix.getcwd).
fn torch_outcome(case: &str, how: &str) -> (String, u64) {
    let path = dcp_dir().join("expected.json");
    let json: Json = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let o = &json["scan_cases"][case][how];
    (
        o["outcome"].as_str().unwrap().to_string(),
        o["getcwd_calls"].as_u64().unwrap(),
    )
}

/// `ckpt scan --json` of the paths: (the file reports by file name, the exit code).
fn scan_json(paths: &[&Path], code: i32) -> BTreeMap<String, Json> {
    let a = ckpt().arg("scan").arg("--json").args(paths).assert().code(code);
    let json: Json = serde_json::from_slice(&a.get_output().stdout).unwrap();
    json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = PathBuf::from(f["path"].as_str().unwrap());
            (path.file_name().unwrap().to_string_lossy().into_owned(), f.clone())
        })
        .collect()
}

fn findings<'a>(report: &'a Json, verdict: &str) -> Vec<&'a Json> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["verdict"] == verdict)
        .collect()
}

#[test]
fn scan_judges_every_stored_item_of_real_checkpoints() {
    // Every .distcp of real DCP saves is covered by its items, each a plain torch.save archive.
    for name in ["ws1", "ws2", "ws4"] {
        let files = scan_json(&[&dcp_dir().join(name)], 0);
        assert_eq!(files[".metadata"]["format"], "dcp-metadata", "{name}");
        assert_eq!(files[".metadata"]["verdict"], "needs-code", "{name}");
        let data: Vec<&Json> = files
            .iter()
            .filter(|(n, _)| n.ends_with(".distcp"))
            .map(|(_, r)| r)
            .collect();
        assert!(!data.is_empty(), "{name}");
        for r in data {
            assert_eq!(r["format"], "dcp-data", "{name}: {r}");
            assert_eq!(r["verdict"], "safe", "{name}: {r}");
            assert!(!r["pickles"].as_array().unwrap().is_empty(), "{name}: {r}");
        }
    }
    // ws1 holds non-tensor items (lr, betas, epoch): torch.save archives of plain values.
    let files = scan_json(&[&dcp_dir().join("ws1")], 0);
    let notes = files["__0_0.distcp"]["notes"].to_string();
    assert!(notes.contains("other items (weights_only=False)"), "{notes}");
    // Named explicitly, .metadata brings its data files, as an index brings its shards.
    let files = scan_json(&[&dcp_dir().join("ws2/.metadata")], 0);
    assert_eq!(files.len(), 3, "{files:?}");
}

#[test]
fn scan_calls_a_byte_item_that_runs_code_dangerous() {
    // dcp.load and dcp_to_torch_save unpickle byte items with weights_only=False: the planted
    // object's os.getcwd ran once in each.
    for how in ["dcp_load", "dcp_to_torch_save"] {
        assert_eq!(torch_outcome("byte_item_call", how), ("loads".to_string(), 1), "{how}");
    }
    let dir = dcp_dir().join("hostile/byte_item_call");
    for path in [dir.clone(), dir.join(".metadata"), dir.join("__0_0.distcp")] {
        let files = scan_json(&[&path], 1);
        let data = &files["__0_0.distcp"];
        assert_eq!(data["verdict"], "dangerous", "{data}");
        let dangerous = findings(data, "dangerous");
        assert_eq!(dangerous.len(), 1, "{data}");
        assert_eq!(dangerous[0]["global"], "posix.getcwd", "{data}");
        let record = dangerous[0]["record"].as_str().unwrap();
        assert!(record.starts_with("item 'extra' (bytes "), "{record}");
        // The tensor chunk beside it is judged too, and is clean.
        assert!(
            data["pickles"].to_string().contains("chunk [0, 0] of 'model.w'"),
            "{data}"
        );
    }
}

#[test]
fn scan_says_torch_refuses_a_tensor_chunk_naming_a_global_and_runs_nothing() {
    // Tensor chunks are loaded with weights_only=True: torch raised before calling os.getcwd.
    for how in ["dcp_load", "dcp_to_torch_save"] {
        let (outcome, calls) = torch_outcome("tensor_item_global", how);
        assert!(outcome.starts_with("refuses: weights_only"), "{how}: {outcome}");
        assert_eq!(calls, 0, "{how}");
    }
    let files = scan_json(&[&dcp_dir().join("hostile/tensor_item_global")], 2);
    let data = &files["__0_0.distcp"];
    assert_eq!(data["verdict"], "unreadable", "{data}");
    assert!(findings(data, "dangerous").is_empty(), "{data}");
    let refused = findings(data, "unreadable");
    let global = refused
        .iter()
        .find(|f| f["global"] == "os.getcwd")
        .expect("the global is named");
    assert!(
        global["record"]
            .as_str()
            .unwrap()
            .starts_with("chunk [0, 0] of 'model.w' (bytes 0.."),
        "{global}"
    );
    assert!(
        global["message"]
            .as_str()
            .unwrap()
            .contains("a full load would be dangerous"),
        "{global}"
    );
    assert!(data["error"].as_str().unwrap().contains("weights_only=True"), "{data}");
}

#[test]
fn scan_judges_bytes_no_stored_item_covers() {
    // dcp.load reads only the ranges .metadata names: the appended archive's call never ran.
    for how in ["dcp_load", "dcp_to_torch_save"] {
        assert_eq!(torch_outcome("hidden_archive", how), ("loads".to_string(), 0), "{how}");
    }
    let dir = dcp_dir().join("hostile/hidden_archive");
    let files = scan_json(&[&dir], 1);
    let data = &files["__0_0.distcp"];
    assert_eq!(data["verdict"], "dangerous", "{data}");
    let size = std::fs::metadata(dir.join("__0_0.distcp")).unwrap().len();
    let uncovered = findings(data, "unreadable");
    assert_eq!(uncovered.len(), 1, "{data}");
    let record = uncovered[0]["record"].as_str().unwrap();
    assert!(
        record.starts_with("uncovered bytes ") && record.ends_with(&format!("..{size}")),
        "{record}"
    );
    let dangerous = findings(data, "dangerous");
    assert_eq!(dangerous.len(), 1, "{data}");
    assert_eq!(dangerous[0]["global"], "posix.getcwd");
    assert!(dangerous[0]["record"]
        .as_str()
        .unwrap()
        .starts_with("uncovered -> archive at bytes "));
}

#[test]
fn scan_walks_a_data_file_without_its_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    // Without .metadata, every archive is judged as a full load: the byte item's call counts.
    let lone = tmp.path().join("__0_0.distcp");
    std::fs::copy(dcp_dir().join("hostile/byte_item_call/__0_0.distcp"), &lone).unwrap();
    let files = scan_json(&[&lone], 1);
    let data = &files["__0_0.distcp"];
    assert_eq!(data["verdict"], "dangerous", "{data}");
    assert!(
        data["notes"]
            .to_string()
            .contains("no .metadata ckpt can read beside it"),
        "{data}"
    );
    // ws2's rank 0 file alone: every archive is a clean tensor chunk.
    std::fs::copy(dcp_dir().join("ws2/__0_0.distcp"), &lone).unwrap();
    let files = scan_json(&[&lone], 0);
    let data = &files["__0_0.distcp"];
    assert_eq!(data["verdict"], "safe", "{data}");
    let walked = ckpt::read::dcp::loaded_items(&dcp_dir().join("ws2/.metadata"), &Default::default())
        .unwrap()
        .iter()
        .filter(|i| i.info.relative_path == "__0_0.distcp")
        .count();
    assert!(
        data["notes"].to_string().contains(&format!("{walked} pieces walked")),
        "{data}"
    );
    // A .metadata that torch's layout reading refuses (a global DCP never writes) leaves its data
    // files walked the same way.
    let files = scan_json(&[&dcp_dir().join("hostile/unknown_global")], 1);
    assert_eq!(files[".metadata"]["verdict"], "dangerous");
    assert_eq!(files["__0_0.distcp"]["verdict"], "safe");
}

#[test]
fn scan_calls_a_data_file_metadata_names_no_item_in_unreadable() {
    // A rank file left from an earlier save into the same directory: dcp.load never reads it,
    // and DCP never writes one, so it is not cleared; its archives are still judged.
    let tmp = tempfile::tempdir().unwrap();
    for name in [".metadata", "__0_0.distcp", "__1_0.distcp"] {
        std::fs::copy(dcp_dir().join("ws2").join(name), tmp.path().join(name)).unwrap();
    }
    std::fs::copy(dcp_dir().join("ws2/__1_0.distcp"), tmp.path().join("__2_0.distcp")).unwrap();
    let files = scan_json(&[tmp.path()], 2);
    assert_eq!(files["__1_0.distcp"]["verdict"], "safe");
    let stale = &files["__2_0.distcp"];
    assert_eq!(stale["verdict"], "unreadable", "{stale}");
    let size = std::fs::metadata(tmp.path().join("__2_0.distcp")).unwrap().len();
    let uncovered = findings(stale, "unreadable");
    assert_eq!(uncovered.len(), 1, "{stale}");
    assert_eq!(uncovered[0]["record"], format!("uncovered bytes 0..{size}"), "{stale}");
    let count = |r: &Json| r["pickles"].as_array().unwrap().len();
    assert_eq!(count(stale), count(&files["__1_0.distcp"]), "{stale}");
}
