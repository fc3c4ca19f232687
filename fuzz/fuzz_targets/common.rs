#![allow(dead_code)] // each target uses some of these
//! Shared by the targets: ckpt reads files, so each input is written to one file per process
//! (named so that format detection and the zip prefix behave as for a real checkpoint).

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Writes `bytes` to `<tmp>/ckpt-fuzz-<pid>/<name>` and returns the path.
pub fn write_input(name: &str, bytes: &[u8]) -> PathBuf {
    let path = fuzz_dir().join(name);
    std::fs::write(&path, bytes).expect("write fuzz input");
    path
}

/// This process's scratch directory.
fn fuzz_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("ckpt-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("fuzz temp dir");
        d
    })
}

/// Where to write an output named `name`: the path of a file that does not exist (a new output
/// is not flushed to disk; one that replaces a file would be, which would slow the runs).
pub fn fresh_output(name: &str) -> PathBuf {
    let path = fuzz_dir().join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// A torch zip around a fuzzed data.pkl and storages, as `torch.save` lays it out.
pub fn torch_zip(prefix: &str, pickle: &[u8], storages: &[Vec<u8>], byteorder: Option<&[u8]>, extra: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut put = |name: String, data: &[u8]| {
        if w.start_file(name, opts).is_ok() {
            let _ = w.write_all(data);
        }
    };
    put(format!("{prefix}/data.pkl"), pickle);
    if let Some(b) = byteorder {
        put(format!("{prefix}/byteorder"), b);
    }
    for (i, s) in storages.iter().enumerate() {
        put(format!("{prefix}/data/{i}"), s);
    }
    for (name, data) in extra {
        put(format!("{prefix}/{name}"), data);
    }
    put(format!("{prefix}/version"), b"3\n");
    w.finish().map(|c| c.into_inner()).unwrap_or_default()
}

/// Reads the file and hashes every tensor, as `inspect --hash` / `verify` would. Views larger
/// than 64 MiB are skipped: hashing costs the view's logical size (an expanded view of one
/// element may claim up to the reader's 1 TiB limit), which is slow, not a bug.
pub fn read_and_hash(path: &std::path::Path) {
    if let Ok(ckpt) = ckpt::read::open(path) {
        for t in &ckpt.tensors {
            if t.nbytes() <= 64 << 20 {
                let _ = ckpt::tensor_data::sha256_hex(&ckpt, t);
            }
        }
        let _ = ckpt::inspect::to_json(&ckpt, "x", &Default::default());
    }
}
