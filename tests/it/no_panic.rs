//! Damaged and hostile input never panics, hangs or allocates without bound: it ends in a clear
//! error (the CLI's exit 2) quickly.
//!
//! The battery takes every fixture (fixtures/, shards and fixtures/hostile/ included), truncates
//! it at many lengths and flips bits at many positions (a deterministic pseudo-random choice,
//! bounded so the test stays fast in debug builds), and runs each result through
//! `ckpt::read::open`, the scanner, and, when reading succeeds, `sha256_hex` of every tensor,
//! under `catch_unwind`, timing each input. The named tests build specific attacks in memory.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ckpt::read::ReadLimits;
use ckpt::tensor_data::sha256_hex;

use crate::common::fixtures_dir;

// ------------------------------------------------------------------------------------------
// Helpers

/// xorshift64*: deterministic, seeded per file.
struct Rng(u64);

impl Rng {
    fn new(seed: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in seed.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        Rng(h | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The committed hostile fixtures (CKPT_FIXTURES may point at a regenerated set without them).
fn hostile_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("hostile")
}

fn checkpoint_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                // fixtures/curves/ holds ~150 small torch.save files of one kind (per-epoch series,
                // synthetic histories): the four training checkpoints beside them stand for all.
                if !p.parent().is_some_and(|d| d.ends_with("curves")) {
                    walk(&p, out);
                }
                continue;
            }
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let ext = p.extension().unwrap_or_default().to_string_lossy().into_owned();
            if matches!(ext.as_str(), "pth" | "pt" | "bin" | "safetensors" | "pkl" | "tar")
                || name.ends_with(".index.json")
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&fixtures_dir(), &mut out);
    if !out.iter().any(|p| p.starts_with(hostile_dir())) {
        walk(&hostile_dir(), &mut out);
    }
    out
}

/// Everything a command could do with the file: read it, hash every tensor, scan it.
/// Returns a description of each panic.
fn exercise(path: &Path) -> Vec<String> {
    let mut panics = Vec::new();
    let read = catch_unwind(AssertUnwindSafe(|| {
        if let Ok(ckpt) = ckpt::read::open(path) {
            for t in &ckpt.tensors {
                // Hashing costs the view's logical size; an expanded view is bounded by the reader.
                let _ = sha256_hex(&ckpt, t);
            }
        }
    }));
    if let Err(e) = read {
        panics.push(format!("read/sha256 panicked: {}", panic_message(&e)));
    }
    let scan = catch_unwind(AssertUnwindSafe(|| {
        let _ = ckpt::scan::scan_path(path, &ReadLimits::default());
    }));
    if let Err(e) = scan {
        panics.push(format!("scan panicked: {}", panic_message(&e)));
    }
    panics
}

fn panic_message(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Writes `bytes` under `name` in a fresh directory (the name matters: prefixes, index shards).
fn write_tmp(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    (dir, path)
}

/// Runs one input through everything, asserting no panic and the time bound.
fn assert_survives(
    label: &str,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    slowest: &mut (Duration, String),
    failures: &mut Vec<String>,
) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    let t = Instant::now();
    for p in exercise(&path) {
        failures.push(format!("{label}: {p}"));
    }
    let took = t.elapsed();
    if took > slowest.0 {
        *slowest = (took, label.to_string());
    }
    if took > Duration::from_secs(10) {
        failures.push(format!("{label}: took {took:?}"));
    }
}

#[test]
fn every_fixture_truncated_and_bit_flipped_fails_cleanly() {
    let files = checkpoint_files();
    assert!(files.len() >= 40, "only {} fixture files found", files.len());
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut inputs = 0usize;
    for file in &files {
        let bytes = std::fs::read(file).expect("read fixture");
        let name = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let rel = file
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(file)
            .display()
            .to_string();
        // Shards travel with their index, so a damaged index still finds (intact) shards.
        let dir = tempfile::tempdir().expect("temp dir");
        if name.ends_with(".index.json") {
            for sib in std::fs::read_dir(file.parent().unwrap_or(Path::new(".")))
                .expect("dir")
                .flatten()
            {
                let _ = std::fs::copy(sib.path(), dir.path().join(sib.file_name()));
            }
        }
        let mut rng = Rng::new(&rel);
        let len = bytes.len();
        // Truncations: the first bytes, around the end (zip directory), and at random.
        let mut cuts: Vec<usize> = vec![0, 1, 2, 3, 7, 8, 9, 13, 14, 15, 16, 31, 64, 100];
        cuts.extend([
            len.saturating_sub(1),
            len.saturating_sub(2),
            len.saturating_sub(22),
            len.saturating_sub(23),
            len.saturating_sub(100),
            len / 2,
        ]);
        for _ in 0..10 {
            cuts.push(rng.below(len));
        }
        cuts.retain(|&c| c < len);
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            inputs += 1;
            assert_survives(
                &format!("{rel} truncated at {cut}"),
                dir.path(),
                &name,
                &bytes[..cut],
                &mut slowest,
                &mut failures,
            );
        }
        // Bit flips: in the first 64 bytes (magic, headers), the last 64 (zip directory), anywhere.
        for i in 0..36 {
            let pos = match i % 3 {
                0 => rng.below(len.min(64)),
                1 => len - 1 - rng.below(len.min(64)),
                _ => rng.below(len),
            };
            let bit = rng.below(8);
            let mut mutated = bytes.clone();
            mutated[pos] ^= 1 << bit;
            inputs += 1;
            assert_survives(
                &format!("{rel} bit {bit} of byte {pos} flipped"),
                dir.path(),
                &name,
                &mutated,
                &mut slowest,
                &mut failures,
            );
        }
        // A run of bytes overwritten with 0xff (lengths and counts at their maximum).
        for _ in 0..4 {
            let pos = rng.below(len);
            let mut mutated = bytes.clone();
            for b in mutated.iter_mut().skip(pos).take(8) {
                *b = 0xff;
            }
            inputs += 1;
            assert_survives(
                &format!("{rel} 8 bytes at {pos} set to ff"),
                dir.path(),
                &name,
                &mutated,
                &mut slowest,
                &mut failures,
            );
        }
    }
    eprintln!(
        "no_panic battery: {} files, {inputs} inputs in {:?}; slowest {:?} ({})",
        files.len(),
        started.elapsed(),
        slowest.0,
        slowest.1
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn zero_bytes_and_random_bytes_fail_cleanly() {
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = Rng::new("random");
    for name in [
        "model.pth",
        "model.safetensors",
        "x.bin",
        "data.pkl",
        "model.safetensors.index.json",
        "noext",
    ] {
        assert_survives(
            &format!("{name} empty"),
            dir.path(),
            name,
            &[],
            &mut slowest,
            &mut failures,
        );
        assert_survives(
            &format!("{name} zeros"),
            dir.path(),
            name,
            &[0u8; 4096],
            &mut slowest,
            &mut failures,
        );
        for n in [1usize, 9, 100, 4096, 70_000] {
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            assert_survives(
                &format!("{name} {n} random bytes"),
                dir.path(),
                name,
                &bytes,
                &mut slowest,
                &mut failures,
            );
            // Random bytes behind each magic: zip, legacy pickle, safetensors, PROTO 2, tar-ish.
            for magic in [
                &b"PK\x03\x04"[..],
                b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19",
                b"\x10\x00\x00\x00\x00\x00\x00\x00{",
                b"\x80\x02",
                b"{\"weight_map\":",
            ] {
                let mut b = magic.to_vec();
                b.extend(&bytes);
                assert_survives(
                    &format!("{name} magic {magic:?} + {n} random bytes"),
                    dir.path(),
                    name,
                    &b,
                    &mut slowest,
                    &mut failures,
                );
            }
        }
    }
    for name in ["model.pth", "data.pkl"] {
        let path = dir.path().join(name);
        std::fs::write(&path, []).expect("write");
        assert!(ckpt::read::open(&path).is_err(), "{name}: an empty file reads");
        assert!(
            ckpt::scan::scan_path(&path, &ReadLimits::default()).is_err(),
            "{name}: an empty file scans"
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// Builders for hostile bytes

/// A protocol-2 pickle written opcode by opcode.
struct P(Vec<u8>);

impl P {
    fn new() -> P {
        P(vec![0x80, 2])
    }
    fn raw(mut self, b: &[u8]) -> P {
        self.0.extend_from_slice(b);
        self
    }
    fn global(self, module: &str, name: &str) -> P {
        self.raw(b"c")
            .raw(module.as_bytes())
            .raw(b"\n")
            .raw(name.as_bytes())
            .raw(b"\n")
    }
    fn str(self, s: &str) -> P {
        let len = (s.len() as u32).to_le_bytes();
        self.raw(b"X").raw(&len).raw(s.as_bytes())
    }
    fn int(self, i: i64) -> P {
        if (0..=0xff).contains(&i) {
            self.raw(&[b'K', i as u8])
        } else if let Ok(v) = i32::try_from(i) {
            self.raw(b"J").raw(&v.to_le_bytes())
        } else {
            self.raw(&[0x8a, 8]).raw(&i.to_le_bytes())
        }
    }
    fn ints(self, v: &[i64]) -> P {
        let mut p = self.raw(b"(");
        for &i in v {
            p = p.int(i);
        }
        p.raw(b"t")
    }
    fn finish(self) -> Vec<u8> {
        self.raw(b".").0
    }
}

/// `{'w': _rebuild_tensor_v2(storage '0' of `numel` floats, offset, size, stride)}` as data.pkl writes it.
fn state_dict_pickle(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    P::new()
        .global("collections", "OrderedDict")
        .raw(b")R(")
        .str("w")
        .global("torch._utils", "_rebuild_tensor_v2")
        .raw(b"(")
        .raw(b"(")
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(numel)
        .raw(b"tQ")
        .int(offset)
        .ints(size)
        .ints(stride)
        .raw(b"\x89")
        .global("collections", "OrderedDict")
        .raw(b")R")
        .raw(b"tR")
        .raw(b"u")
        .finish()
}

/// A stored zip of the given records.
fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        w.start_file(*name, opts).expect("start");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

fn torch_zip(data_pkl: &[u8], storage: &[u8]) -> Vec<u8> {
    zip_of(&[
        ("archive/data.pkl", data_pkl),
        ("archive/byteorder", b"little"),
        ("archive/data/0", storage),
        ("archive/version", b"3\n"),
    ])
}

/// read::open of the bytes must fail, quickly, without panicking; returns the message.
fn read_err(name: &str, bytes: &[u8]) -> String {
    let (_dir, path) = write_tmp(name, bytes);
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| ckpt::read::open(&path).map(|c| c.tensors.len())));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(10), "{name}: reading took {took:?}");
    match r {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(n)) => panic!("{name}: read succeeded with {n} tensors"),
        Err(e) => panic!("{name}: read panicked: {}", panic_message(&e)),
    }
}

/// The scanner must not clear the bytes: an Err, or a report that is not safe.
fn scan_not_safe(name: &str, bytes: &[u8]) -> Result<ckpt::scan::ScanReport, String> {
    let (_dir, path) = write_tmp(name, bytes);
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| {
        ckpt::scan::scan_path(&path, &ReadLimits::default())
    }));
    let took = t.elapsed();
    assert!(took < Duration::from_secs(10), "{name}: scanning took {took:?}");
    match r {
        Ok(Ok(report)) => {
            assert_ne!(
                report.verdict,
                ckpt::scan::Verdict::Safe,
                "{name}: scanned safe: {report:#?}"
            );
            Ok(report)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => panic!("{name}: scan panicked: {}", panic_message(&e)),
    }
}

fn floats(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

fn safetensors_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(vec![0u8; data_len]);
    out
}

// ------------------------------------------------------------------------------------------
// Named attacks: the reader

#[test]
fn well_formed_builders_read() {
    // The builders above make files ckpt reads, so each attack below fails for its own reason.
    let (_d, path) = write_tmp(
        "ok.pth",
        &torch_zip(&state_dict_pickle(4, 0, &[2, 2], &[2, 1]), &floats(4)),
    );
    let ckpt = ckpt::read::open(&path).expect("a well-formed zip reads");
    assert_eq!(ckpt.tensors.len(), 1);
    assert_eq!(ckpt.tensors[0].shape, vec![2, 2]);
    let (_d, path) = write_tmp(
        "ok.safetensors",
        &safetensors_file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8),
    );
    assert_eq!(ckpt::read::open(&path).expect("safetensors reads").tensors.len(), 1);
}

#[test]
fn view_beyond_storage_is_an_error() {
    let e = read_err(
        "beyond.pth",
        &torch_zip(&state_dict_pickle(2, 0, &[100], &[1]), &floats(2)),
    );
    assert!(e.contains("storage"), "{e}");
    read_err(
        "offset.pth",
        &torch_zip(&state_dict_pickle(2, 1000, &[1], &[1]), &floats(2)),
    );
    // The storage record is shorter than numel says: the view is checked against the bytes.
    read_err(
        "short.pth",
        &torch_zip(&state_dict_pickle(100, 0, &[100], &[1]), &floats(2)),
    );
    // Strides that reach past the end.
    read_err(
        "stride.pth",
        &torch_zip(&state_dict_pickle(4, 0, &[2, 2], &[4, 1]), &floats(4)),
    );
}

#[test]
fn shape_product_overflow() {
    read_err(
        "overflow.pth",
        &torch_zip(&state_dict_pickle(4, 0, &[1 << 40, 1 << 40], &[1, 1]), &floats(4)),
    );
    read_err(
        "bytes_overflow.pth",
        &torch_zip(&state_dict_pickle(4, 0, &[1 << 62], &[0]), &floats(4)),
    );
    read_err(
        "stride_overflow.pth",
        &torch_zip(&state_dict_pickle(4, 0, &[3], &[i64::MAX]), &floats(4)),
    );
    read_err(
        "negative.pth",
        &torch_zip(&state_dict_pickle(4, 0, &[-1], &[1]), &floats(4)),
    );
    read_err(
        "negative_stride.pth",
        &torch_zip(&state_dict_pickle(4, 0, &[2], &[-1]), &floats(4)),
    );
    read_err(
        "negative_offset.pth",
        &torch_zip(&state_dict_pickle(4, -1, &[1], &[1]), &floats(4)),
    );
    read_err(
        "dims.pth",
        &torch_zip(&state_dict_pickle(4, 0, &[2, 2], &[1]), &floats(4)),
    );
    let st = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#;
    read_err("overflow.safetensors", &safetensors_file(st, 8));
}

#[test]
fn expanded_view_of_absurd_size_is_an_error() {
    // A stride-0 view (expand) of one float claiming 2^40 elements: valid arithmetic, 4 TiB of
    // logical data. Hashing or converting it could never finish; the reader must refuse it.
    read_err(
        "expand.pth",
        &torch_zip(&state_dict_pickle(1, 0, &[1 << 40], &[0]), &floats(1)),
    );
}

#[test]
fn safetensors_offsets_overlap_is_an_error() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    read_err("overlap.safetensors", &safetensors_file(h, 12));
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    read_err("same.safetensors", &safetensors_file(h, 8));
}

#[test]
fn safetensors_offsets_out_of_range_are_an_error() {
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,1000]}}"#;
    read_err("range.safetensors", &safetensors_file(h, 8));
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#;
    read_err("reversed.safetensors", &safetensors_file(h, 8));
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}}"#;
    read_err("huge.safetensors", &safetensors_file(h, 8));
    // A hole: data beyond the last tensor.
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    read_err("hole.safetensors", &safetensors_file(h, 16));
    // Size that does not match shape x dtype.
    let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    read_err("size.safetensors", &safetensors_file(h, 8));
}

#[test]
fn safetensors_header_length_absurd() {
    let mut b = u64::MAX.to_le_bytes().to_vec();
    b.extend(b"{}");
    read_err("len.safetensors", &b);
    let mut b = (200u64 << 20).to_le_bytes().to_vec();
    b.extend(b"{\"a\":1}");
    read_err("len2.safetensors", &b);
    read_err("nojson.safetensors", &safetensors_file("{not json", 0));
    read_err(
        "dtype.safetensors",
        &safetensors_file(r#"{"a":{"dtype":"X99","shape":[1],"data_offsets":[0,1]}}"#, 1),
    );
}

#[test]
fn nested_marks_200k_rejected_fast() {
    let mut pkl = vec![0x80, 2];
    pkl.extend(std::iter::repeat_n(b'(', 200_000));
    pkl.push(b'.');
    let t = Instant::now();
    assert!(ckpt::pickle::parse(&pkl, &ckpt::pickle::Limits::default()).is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "parse took {:?}", t.elapsed());
    read_err("marks.pth", &torch_zip(&pkl, &floats(1)));
    assert!(scan_not_safe("marks.pth", &torch_zip(&pkl, &floats(1))).is_err());
    assert!(scan_not_safe("marks.pkl", &pkl).is_err());
}

#[test]
fn nested_lists_deeper_than_the_limit_are_an_error_not_a_stack_overflow() {
    // 100 000 nested lists: the machine builds them flat; the decoder must stop at its depth
    // limit (512) without exhausting a 2 MiB test-thread stack.
    for depth in [600usize, 100_000] {
        let mut p = vec![0x80, 2];
        for _ in 0..depth {
            p.extend(b"]q\x00"); // EMPTY_LIST, BINPUT (keeps real-world shape)
        }
        p.extend(std::iter::repeat_n(b'a', depth - 1)); // APPEND: each list into its parent
        p.push(b'.');
        read_err(&format!("deep{depth}.pth"), &torch_zip(&p, &floats(1)));
    }
    // Dicts nested just below the limit read fine on a test thread.
    let depth = 500;
    let mut p = vec![0x80, 2];
    for _ in 0..depth {
        p.extend(b"}X\x01\x00\x00\x00k");
    }
    p.extend(b"N");
    p.extend(std::iter::repeat_n(b's', depth));
    p.push(b'.');
    let (_d, path) = write_tmp("deep_ok.pth", &torch_zip(&p, &floats(1)));
    let r = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || ckpt::read::open(&path).map(|_| ()))
        .expect("thread")
        .join();
    assert!(
        matches!(r, Ok(Ok(()))),
        "reading 500 nested dicts on a 2 MiB stack: {r:?}"
    );
}

#[test]
fn memo_bomb_of_shared_lists_is_bounded() {
    // l0 = [x]; l1 = [l0, l0]; l2 = [l1, l1] ... 64 levels: 2^64 leaves as a tree.
    let mut p = P::new().raw(b"]").raw(b"N").raw(b"a").raw(b"q\x000").0;
    for i in 0..64u8 {
        p.extend([b']', b'h', i, b'a', b'h', i, b'a', b'q', i + 1, b'0']);
    }
    p.extend([b'h', 64, b'.']);
    let e = read_err("memo.pth", &torch_zip(&p, &floats(1)));
    assert!(e.contains("more than"), "{e}");
}

#[test]
fn module_graph_shared_submodules_are_bounded() {
    // A whole-model pickle in which each module's _modules names the same child twice, 60
    // levels deep: state_dict() semantics repeat shared children, 2^60 visits.
    let levels = 60u8;
    let mut p = P::new();
    // The innermost module: Leaf with empty _parameters/_buffers/_modules.
    let module = |p: P| p.global("__main__", "M").raw(b")\x81");
    p = module(p)
        .raw(b"}(")
        .str("_parameters")
        .raw(b"}")
        .str("_buffers")
        .raw(b"}")
        .str("_modules")
        .raw(b"}ub")
        .raw(b"q\x000");
    for i in 0..levels {
        p = module(p)
            .raw(b"}(")
            .str("_parameters")
            .raw(b"}")
            .str("_buffers")
            .raw(b"}")
            .str("_modules")
            .raw(b"}(");
        p = p
            .str("a")
            .raw(&[b'h', i])
            .str("b")
            .raw(&[b'h', i])
            .raw(b"u")
            .raw(b"ub")
            .raw(&[b'q', i + 1, b'0']);
    }
    let pkl = p.raw(&[b'h', levels]).finish();
    // The same graph without sharing reads (a sanity check of the builder).
    assert!(ckpt::pickle::parse(&pkl, &ckpt::pickle::Limits::default()).is_ok());
    let t = Instant::now();
    let (_d, path) = write_tmp("dag.pth", &torch_zip(&pkl, &floats(1)));
    let r = ckpt::read::open(&path);
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    assert!(r.is_err(), "a 2^60-visit module graph read");
}

#[test]
fn zip_with_absurd_entry_count() {
    // An end-of-central-directory record claiming 65535 entries and a directory past the end.
    let mut eocd = b"PK\x05\x06\0\0\0\0\xff\xff\xff\xff".to_vec();
    eocd.extend(0xffff_fff0u32.to_le_bytes()); // directory size
    eocd.extend(0u32.to_le_bytes()); // directory offset
    eocd.extend(0u16.to_le_bytes());
    let mut file = b"PK\x03\x04".to_vec();
    file.extend(vec![0u8; 26]);
    file.extend(&eocd);
    read_err("entries.pth", &file);
    assert!(scan_not_safe("entries.pth", &file).is_err());
    // A real directory whose count says 65535 but holds one entry.
    let mut z = torch_zip(&state_dict_pickle(1, 0, &[1], &[1]), &floats(1));
    let n = z.len();
    z[n - 22 + 8..n - 22 + 12].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    read_err("count.pth", &z);
    // Zip64 locator pointing at a zip64 record claiming 2^62 entries.
    let mut z64 = b"PK\x03\x04".to_vec();
    z64.extend(vec![0u8; 26]);
    let rec_at = z64.len() as u64;
    z64.extend(b"PK\x06\x06");
    z64.extend(44u64.to_le_bytes());
    z64.extend([45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    z64.extend((1u64 << 62).to_le_bytes());
    z64.extend((1u64 << 62).to_le_bytes());
    z64.extend(1000u64.to_le_bytes());
    z64.extend(0u64.to_le_bytes());
    z64.extend(b"PK\x06\x07\0\0\0\0");
    z64.extend(rec_at.to_le_bytes());
    z64.extend(1u32.to_le_bytes());
    z64.extend(b"PK\x05\x06\0\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\0\0");
    read_err("zip64.pth", &z64);
    assert!(scan_not_safe("zip64.pth", &z64).is_err());
}

#[test]
fn zip_entry_sizes_that_lie_are_an_error() {
    let z = torch_zip(&state_dict_pickle(1, 0, &[1], &[1]), &floats(1));
    // Patch the central directory's compressed/uncompressed sizes of every entry to 2^32-2.
    let mut bad = z.clone();
    let mut i = 0;
    while let Some(at) = bad[i..].windows(4).position(|w| w == b"PK\x01\x02") {
        let at = i + at;
        bad[at + 20..at + 28].copy_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff]);
        i = at + 4;
    }
    read_err("sizes.pth", &bad);
    assert!(scan_not_safe("sizes.pth", &bad).is_err());
}

/// A raw deflate stream that inflates to `n * 258 + 1` zero bytes in a few bits per 258 bytes
/// (fixed Huffman: literal 0, then length 258 / distance 1 repeated).
fn deflate_bomb(n: usize) -> Vec<u8> {
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        nbits: u32,
    }
    impl Bits {
        fn put(&mut self, value: u64, n: u32) {
            self.acc |= value << self.nbits;
            self.nbits += n;
            while self.nbits >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.nbits -= 8;
            }
        }
        /// Huffman codes are written most significant bit first.
        fn code(&mut self, code: u64, n: u32) {
            let mut rev = 0;
            for i in 0..n {
                rev |= ((code >> i) & 1) << (n - 1 - i);
            }
            self.put(rev, n);
        }
    }
    let mut b = Bits {
        out: Vec::new(),
        acc: 0,
        nbits: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE = fixed Huffman
    b.code(0b0011_0000, 8); // literal 0
    for _ in 0..n {
        b.code(0b1100_0101, 8); // length code 285 = 258
        b.code(0, 5); // distance code 0 = 1
    }
    b.code(0, 7); // end of block (256)
    b.put(0, 7);
    b.out
}

#[test]
fn zip_pickle_decompression_bomb_is_bounded() {
    // data.pkl deflated: declares 100 bytes, inflates to ~300 MiB of zeros.
    let stream = deflate_bomb(300 << 20 >> 8);
    let z = torch_zip(&state_dict_pickle(1, 0, &[1], &[1]), &floats(1));
    // Rebuild the archive by hand with data.pkl as method 8 and the lying sizes.
    let name = b"archive/data.pkl";
    let mut out = Vec::new();
    let local_at = out.len() as u32;
    out.extend(b"PK\x03\x04\x14\0\0\0\x08\0\0\0\0\0");
    out.extend(0u32.to_le_bytes()); // crc
    out.extend((stream.len() as u32).to_le_bytes());
    out.extend(100u32.to_le_bytes());
    out.extend((name.len() as u16).to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out.extend(name);
    out.extend(&stream);
    let cd_at = out.len() as u32;
    out.extend(b"PK\x01\x02\x14\0\x14\0\0\0\x08\0\0\0\0\0");
    out.extend(0u32.to_le_bytes());
    out.extend((stream.len() as u32).to_le_bytes());
    out.extend(100u32.to_le_bytes());
    out.extend((name.len() as u16).to_le_bytes());
    out.extend([0u8; 12]);
    out.extend(local_at.to_le_bytes());
    out.extend(name);
    let cd_len = out.len() as u32 - cd_at;
    out.extend(b"PK\x05\x06\0\0\0\0\x01\0\x01\0");
    out.extend(cd_len.to_le_bytes());
    out.extend(cd_at.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    drop(z);
    let t = Instant::now();
    read_err("bomb.pth", &out);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(scan_not_safe("bomb.pth", &out).is_err());
}

#[test]
fn legacy_storage_sizes_that_lie_are_an_error() {
    // Read the committed legacy fixture and set each storage's element count to u64::MAX.
    let bytes = std::fs::read(fixtures_dir().join("legacy_state_dict.pth")).expect("fixture");
    let mut pos = 0;
    for _ in 0..5 {
        let p = ckpt::pickle::parse(&bytes[pos..], &ckpt::pickle::Limits::default()).expect("pickle");
        pos += p.end;
    }
    let mut bad = bytes.clone();
    bad[pos..pos + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    read_err("legacy_huge.pth", &bad);
    let mut bad = bytes.clone();
    bad[pos..pos + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    read_err("legacy_big.pth", &bad);
}

#[test]
fn sharded_index_cannot_escape_its_directory_or_recurse() {
    let dir = tempfile::tempdir().expect("dir");
    let idx = dir.path().join("model.safetensors.index.json");
    std::fs::write(&idx, r#"{"weight_map":{"a":"../../etc/passwd"}}"#).expect("write");
    assert!(ckpt::read::open(&idx).is_err());
    std::fs::write(&idx, r#"{"weight_map":{"a":"/etc/passwd"}}"#).expect("write");
    assert!(ckpt::read::open(&idx).is_err());
    // An index naming itself as a shard.
    std::fs::write(&idx, r#"{"weight_map":{"a":"model.safetensors.index.json"}}"#).expect("write");
    let t = Instant::now();
    assert!(ckpt::read::open(&idx).is_err());
    assert!(t.elapsed() < Duration::from_secs(10));
    let report = ckpt::scan::scan_paths(std::slice::from_ref(&idx), &ReadLimits::default());
    assert!(report.iter().all(|r| r.verdict != ckpt::scan::Verdict::Dangerous));
    std::fs::write(&idx, r#"{"weight_map":{"a":"../x.bin"}}"#).expect("write");
    let r = ckpt::scan::scan_path(&idx, &ReadLimits::default()).expect("scans");
    assert_eq!(r.verdict, ckpt::scan::Verdict::Dangerous, "{r:#?}");
}

// ------------------------------------------------------------------------------------------
// Named attacks: the scanner

#[test]
fn scanner_is_not_blinded_by_pickles_the_machine_refuses() {
    // CPython returns the stack top at STOP and ignores what is below; the machine refuses the
    // pickle. The os.system call before STOP still runs in Python: it must not scan as safe.
    let leftover = b"cos\nsystem\n(S'echo x'\ntRN.".to_vec();
    let r = scan_not_safe("leftover.pkl", &leftover);
    assert!(
        matches!(&r, Ok(r) if r.verdict == ckpt::scan::Verdict::Dangerous),
        "{r:?}"
    );
    // APPEND onto a global (sys.path) is a side effect CPython performs; the machine refuses it.
    let append = b"\x80\x02csys\npath\nX\x08\x00\x00\x00/tmp/evila.".to_vec();
    let r = scan_not_safe("append.pkl", &append);
    assert!(
        matches!(&r, Ok(r) if r.verdict == ckpt::scan::Verdict::Dangerous),
        "{r:?}"
    );
    // SETITEM into os.environ.
    let setitem = b"\x80\x02cos\nenviron\nX\x0a\x00\x00\x00LD_PRELOADX\x08\x00\x00\x00/tmp/x.ss.".to_vec();
    let r = scan_not_safe("setitem.pkl", &setitem);
    assert!(
        matches!(&r, Ok(r) if r.verdict == ckpt::scan::Verdict::Dangerous),
        "{r:?}"
    );
    // A truncated pickle of an unknown call: unreadable (Err), never safe.
    assert!(scan_not_safe("trunc.pkl", b"\x80\x02cmymodule\nhelper\n)").is_err());
}

#[test]
fn scanner_reads_tar_headers_that_also_parse_as_pickles() {
    // A block whose name field is a benign pickle (N.) and whose checksum is valid: torch reads
    // the file as the tar format; the 'pickle' member carries the payload.
    let payload = b"\x80\x02cposix\nsystem\nX\x06\x00\x00\x00echo x\x85R.";
    let member = |name: &str, data: &[u8]| {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[156] = b'0';
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut out = h.to_vec();
        out.extend(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    };
    let mut file = member("N.", b"");
    file.extend(member("pickle", payload));
    file.extend([0u8; 1024]);
    let r = scan_not_safe("poly.pt", &file).expect("scans");
    assert_eq!(r.verdict, ckpt::scan::Verdict::Dangerous, "{r:#?}");
}

#[test]
fn scanner_does_not_clear_duplicate_zip_members() {
    let evil = b"\x80\x02cposix\nsystem\nX\x06\x00\x00\x00echo x\x85R.";
    let good = state_dict_pickle(1, 0, &[1], &[1]);
    // Two records named archive/data.pkl: loaders disagree on which one they read.
    let mut z = zip_of(&[
        ("archive/data.pkl", &good),
        ("archive/data/0", &floats(1)),
        ("archive/data.pkX", evil),
    ]);
    let mut i = 0;
    while let Some(at) = z[i..].windows(16).position(|w| w == b"archive/data.pkX") {
        z[i + at + 15] = b'l';
        i += at + 16;
    }
    let r = scan_not_safe("dup.pth", &z);
    // The zip crate itself refuses duplicate names; either way the file is not cleared.
    if let Ok(r) = r {
        assert_eq!(r.verdict, ckpt::scan::Verdict::Dangerous);
    }
    // And the reader does not pick one of the copies silently.
    let (_d, path) = write_tmp("dup.pth", &z);
    assert!(ckpt::read::open(&path).is_err());
}

#[test]
fn scanner_does_not_clear_members_it_cannot_inflate() {
    let evil = b"\x80\x02cposix\nsystem\nX\x06\x00\x00\x00echo x\x85R.";
    let good = state_dict_pickle(1, 0, &[1], &[1]);
    // A .pkl member compressed with a method ckpt cannot inflate (bzip2: 12) is unreadable.
    let mut z = zip_of(&[
        ("archive/data.pkl", &good),
        ("archive/data/0", &floats(1)),
        ("archive/x.pkl", evil),
    ]);
    let mut i = 0;
    while let Some(at) = z[i..].windows(4).position(|w| w == b"PK\x01\x02" || w == b"PK\x03\x04") {
        let at = i + at;
        let name_at = if &z[at..at + 4] == b"PK\x01\x02" {
            at + 46
        } else {
            at + 30
        };
        let method_at = if &z[at..at + 4] == b"PK\x01\x02" {
            at + 10
        } else {
            at + 8
        };
        if z[name_at..].starts_with(b"archive/x.pkl") {
            z[method_at] = 12;
        }
        i = at + 4;
    }
    assert!(scan_not_safe("bzip.pth", &z).is_err());
}

#[test]
fn scanner_follows_nested_payloads_to_a_bounded_depth() {
    // _load_from_bytes(_load_from_bytes(... (os.system) ...)) nested 10 deep.
    let mut inner = b"\x80\x02cposix\nsystem\nX\x06\x00\x00\x00echo x\x85R.".to_vec();
    for _ in 0..10 {
        let mut p = b"\x80\x02ctorch.storage\n_load_from_bytes\nB".to_vec();
        p.extend((inner.len() as u32).to_le_bytes());
        p.extend(&inner);
        p.extend(b"\x85R.");
        inner = p;
    }
    let r = scan_not_safe("nested.pkl", &inner).expect("scans");
    assert_eq!(r.verdict, ckpt::scan::Verdict::Dangerous);
}

// ------------------------------------------------------------------------------------------
// Memory: the attacks above, in a child process limited to 256 MiB of address space.

/// Runs the attacks of this file in a child test process under `ulimit -v 262144` (256 MiB of
/// address space, which also holds the test binary and its thread stacks).
/// Not with the `tch` feature: the test binary then links libtorch (~900 MB of shared
/// libraries), which cannot even be mapped under that limit.
#[test]
#[cfg(all(target_os = "linux", not(feature = "tch")))]
fn attacks_fit_in_256_mib() {
    if std::env::var_os("CKPT_NO_PANIC_CHILD").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let tests = [
        "no_panic::nested_marks_200k_rejected_fast",
        "no_panic::memo_bomb_of_shared_lists_is_bounded",
        "no_panic::zip_with_absurd_entry_count",
        "no_panic::zip_entry_sizes_that_lie_are_an_error",
        "no_panic::zip_pickle_decompression_bomb_is_bounded",
        "no_panic::legacy_storage_sizes_that_lie_are_an_error",
        "no_panic::shape_product_overflow",
        "no_panic::safetensors_header_length_absurd",
        "no_panic::scanner_is_not_blinded_by_pickles_the_machine_refuses",
        "no_panic::zero_bytes_and_random_bytes_fail_cleanly",
    ];
    let mut failed = Vec::new();
    for t in tests {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -v 262144 && exec \"$0\" --exact {t} --test-threads=1 -q"
            ))
            .arg(&exe)
            .env("CKPT_NO_PANIC_CHILD", "1")
            // glibc reserves 64 MiB of address space per thread arena; count memory, not arenas.
            .env("MALLOC_ARENA_MAX", "1")
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("spawn");
        if !out.status.success() {
            failed.push(format!("{t}: {}\n{}", out.status, String::from_utf8_lossy(&out.stdout)));
        }
    }
    assert!(failed.is_empty(), "over 256 MiB (or failing):\n{}", failed.join("\n"));
}
