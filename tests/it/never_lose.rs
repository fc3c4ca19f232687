//! No output may be one of the inputs: not the file, not a sharded checkpoint's index, not one
//! of its shards, `--force` or not. Each case runs the CLI on a copy of a fixture and checks
//! that it exits 2 and that every input file is byte-for-byte what it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

use crate::common::fixtures_dir;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs ckpt with `args` (paths relative to `dir`), expects exit 2 and an untouched `dir`.
fn refuses(dir: &Path, args: &[&str]) {
    let before = snapshot(dir);
    let out = Command::cargo_bin("ckpt")
        .unwrap()
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "ckpt {args:?} was not refused:\n{stderr}");
    assert!(stderr.contains("input"), "ckpt {args:?}: {stderr}");
    assert!(snapshot(dir) == before, "ckpt {args:?} changed its input directory");
}

#[test]
fn a_sharded_input_index_is_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    for (fixture, index, to) in [
        ("sharded_st", "model.safetensors.index.json", "safetensors"),
        ("sharded_bin", "pytorch_model.bin.index.json", "pth"),
    ] {
        let d = tmp.path().join(fixture);
        copy_dir(&fixtures_dir().join(fixture), &d);
        // A shard size that changes the shard count keeps the index's name: the case that once
        // replaced the input index.
        for size in ["100B", "1GB"] {
            refuses(
                &d,
                &["convert", index, ".", "--to", to, "--max-shard-size", size, "--force"],
            );
            refuses(
                &d,
                &["convert", ".", ".", "--to", to, "--max-shard-size", size, "--force"],
            );
        }
        refuses(&d, &["convert", index, index, "--force"]);
    }
}

#[test]
fn a_shard_of_the_input_is_never_an_output() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("st");
    copy_dir(&fixtures_dir().join("sharded_st"), &d);
    refuses(
        &d,
        &[
            "convert",
            "model.safetensors.index.json",
            "model-00001-of-00002.safetensors",
            "--force",
        ],
    );
    refuses(
        &d,
        &[
            "drop-layers",
            ".",
            "model-00002-of-00002.safetensors",
            "--pattern",
            "fc1",
            "--force",
        ],
    );
}

#[test]
fn a_file_without_tensors_is_never_its_own_output() {
    // No storage points at the file, so only the reader's record of it protects it.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("empty.safetensors");
    std::fs::write(&path, b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ").unwrap();
    refuses(
        tmp.path(),
        &["convert", "empty.safetensors", "empty.safetensors", "--force"],
    );
}

#[test]
fn a_directory_output_never_replaces_an_input_inside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("snap");
    std::fs::create_dir(&d).unwrap();
    std::fs::copy(fixtures_dir().join("model.safetensors"), d.join("model.safetensors")).unwrap();
    // save_pretrained's name inside the directory is the input itself.
    refuses(&d, &["convert", "model.safetensors", ".", "--force"]);
    refuses(&d, &["convert", ".", "./", "--force"]);
    refuses(
        &d,
        &[
            "convert",
            "model.safetensors",
            "model.safetensors",
            "--max-shard-size",
            "1GB",
            "--force",
        ],
    );
}
