//! Zip containers read as torch.load reads them (miniz), and archives that other readers see
//! differently: the reader refuses them, the scanner judges every reading. Archives are built by
//! hand here from records of fixtures PyTorch wrote; nothing is unpickled.

use std::path::{Path, PathBuf};

use ckpt::container::zip as czip;
use ckpt::read::ReadLimits;
use ckpt::scan::{self, Verdict};
use ckpt::tensor_data::sha256_hex;

use crate::common::{expected, fixtures_dir};

/// One member of a hand-built archive.
#[derive(Clone)]
struct Member {
    name: Vec<u8>,
    data: Vec<u8>,
    deflate: bool,
    /// A different name in the local header than in the central directory.
    local_name: Option<Vec<u8>>,
}

fn member(name: impl AsRef<[u8]>, data: &[u8]) -> Member {
    Member {
        name: name.as_ref().to_vec(),
        data: data.to_vec(),
        deflate: false,
        local_name: None,
    }
}

/// Local headers and data; returns the bytes and each member's central directory entry.
fn locals(out: &mut Vec<u8>, members: &[Member]) -> Vec<Vec<u8>> {
    let mut centrals = Vec::new();
    for m in members {
        let offset = out.len() as u32;
        let stored = if m.deflate {
            miniz_oxide::deflate::compress_to_vec(&m.data, 6)
        } else {
            m.data.clone()
        };
        let crc = crc32fast::hash(&m.data);
        let method: u16 = if m.deflate { 8 } else { 0 };
        let local_name = m.local_name.as_ref().unwrap_or(&m.name);
        let mut h = Vec::new();
        h.extend_from_slice(b"PK\x03\x04");
        h.extend_from_slice(&20u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&method.to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&crc.to_le_bytes());
        h.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        h.extend_from_slice(&(m.data.len() as u32).to_le_bytes());
        h.extend_from_slice(&(local_name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(local_name);
        out.extend_from_slice(&h);
        out.extend_from_slice(&stored);
        let mut c = Vec::new();
        c.extend_from_slice(b"PK\x01\x02");
        c.extend_from_slice(&20u16.to_le_bytes());
        c.extend_from_slice(&20u16.to_le_bytes());
        c.extend_from_slice(&0u16.to_le_bytes());
        c.extend_from_slice(&method.to_le_bytes());
        c.extend_from_slice(&[0; 4]);
        c.extend_from_slice(&crc.to_le_bytes());
        c.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        c.extend_from_slice(&(m.data.len() as u32).to_le_bytes());
        c.extend_from_slice(&(m.name.len() as u16).to_le_bytes());
        c.extend_from_slice(&[0; 12]);
        c.extend_from_slice(&offset.to_le_bytes());
        c.extend_from_slice(&m.name);
        centrals.push(c);
    }
    centrals
}

fn eocd(count: usize, cd_size: usize, cd_offset: usize, comment: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(b"PK\x05\x06");
    e.extend_from_slice(&[0; 4]);
    e.extend_from_slice(&(count as u16).to_le_bytes());
    e.extend_from_slice(&(count as u16).to_le_bytes());
    e.extend_from_slice(&(cd_size as u32).to_le_bytes());
    e.extend_from_slice(&(cd_offset as u32).to_le_bytes());
    e.extend_from_slice(&(comment.len() as u16).to_le_bytes());
    e.extend_from_slice(comment);
    e
}

/// A plain archive: members, their directory, an end record.
fn archive(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::new();
    let centrals = locals(&mut out, members);
    let cd_offset = out.len();
    let cd: Vec<u8> = centrals.concat();
    out.extend_from_slice(&cd);
    out.extend_from_slice(&eocd(members.len(), cd.len(), cd_offset, b""));
    out
}

/// The records of a torch-written fixture, names without their folder.
fn records_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let dir = czip::read_directory(&bytes).unwrap();
    dir.entries
        .iter()
        .map(|e| {
            let name = e.display_name();
            let rel = name.split_once('/').unwrap().1.to_string();
            (rel, czip::record_data(&bytes, e, u64::MAX).unwrap().into_owned())
        })
        .collect()
}

fn benign() -> Vec<(String, Vec<u8>)> {
    records_of(&fixtures_dir().join("cnn_state_dict.pth"))
}

/// data.pkl of a payload that calls os.system (never unpickled).
fn dangerous_pickle() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/hostile/reduce_os_system.pth");
    records_of(&path).into_iter().find(|(n, _)| n == "data.pkl").unwrap().1
}

fn under(prefix: &str, records: &[(String, Vec<u8>)]) -> Vec<Member> {
    records
        .iter()
        .map(|(n, d)| member(format!("{prefix}/{n}"), d))
        .collect()
}

fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The ckpt reading of `path` must be PyTorch's reading of cnn_state_dict.pth.
fn assert_reads_like_cnn(path: &Path) {
    let ckpt = ckpt::read::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let want = &expected()["fixtures"]["cnn_state_dict.pth"]["tensors"];
    let want = want.as_array().unwrap();
    assert_eq!(ckpt.tensors.len(), want.len(), "{}", path.display());
    for (t, w) in ckpt.tensors.iter().zip(want) {
        assert_eq!(t.name, w["name"].as_str().unwrap());
        assert_eq!(sha256_hex(&ckpt, t), w["sha256"].as_str().unwrap(), "{}", t.name);
    }
}

fn scan_verdict(path: &Path) -> Verdict {
    match scan::scan_path(path, &ReadLimits::default()) {
        Ok(r) => r.verdict,
        Err(e) => panic!("{e}"),
    }
}

fn refused(path: &Path) -> String {
    match ckpt::read::open(path) {
        Ok(_) => panic!("{} was read; it must be refused", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn record_folders_of_every_length_read() {
    // The first central entry of a torch file is 46 bytes + the folder + "/data.pkl": a 21-byte
    // folder makes it 76 bytes, the size of a zip64 end record and locator, which fooled a
    // reader that guessed where the directory starts. Every length reads, plain and zip64.
    let tmp = tempfile::tempdir().unwrap();
    let records = benign();
    for n in 0..=300 {
        let prefix = "s".repeat(n);
        let path = write_tmp(tmp.path(), "x.pth", &archive(&under(&prefix, &records)));
        assert_reads_like_cnn(&path);
        assert_eq!(scan_verdict(&path), Verdict::Safe, "folder of {n} bytes");
    }
}

#[test]
fn zip64_archives_written_for_every_folder_length_read() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = ckpt::read::open(&fixtures_dir().join("cnn_state_dict.pth")).unwrap();
    for n in [1usize, 9, 20, 21, 22, 30, 67, 76, 100, 200] {
        let path = tmp.path().join(format!("{}.pth", "z".repeat(n)));
        let mut o = ckpt::write::WriteOptions::new(ckpt::write::OutFormat::Pth);
        o.force = true;
        o.force_zip64 = true;
        ckpt::write::write(&orig, &path, &o).unwrap();
        assert_reads_like_cnn(&path);
        let plain = tmp.path().join(format!("{}.bin", "p".repeat(n)));
        o.force_zip64 = false;
        ckpt::write::write(&orig, &plain, &o).unwrap();
        assert_reads_like_cnn(&plain);
    }
}

#[test]
fn torch_files_with_21_byte_stems_read() {
    // Written by torch.save to these very names (fixtures/zip/generate.py).
    for name in ["pytorch_model_epoch_5.bin", "checkpoint_epoch_0010.pth"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/zip")
            .join(name);
        assert_reads_like_cnn(&path);
    }
}

#[test]
fn upper_case_data_pkl_is_found_as_torch_finds_it() {
    // miniz looks names up ASCII-case-insensitively: torch reads ARCHIVE/DATA.PKL.
    let tmp = tempfile::tempdir().unwrap();
    let mut members = under("archive", &benign());
    for m in &mut members {
        if m.name.ends_with(b"data.pkl") {
            m.name = b"archive/DATA.PKL".to_vec();
        }
    }
    let path = write_tmp(tmp.path(), "upper.pth", &archive(&members));
    assert_reads_like_cnn(&path);
}

#[test]
fn deflated_records_are_inflated_as_torch_does() {
    let tmp = tempfile::tempdir().unwrap();
    let mut members = under("archive", &benign());
    for m in &mut members {
        if m.name.ends_with(b"data.pkl") {
            m.deflate = true;
        }
    }
    let path = write_tmp(tmp.path(), "deflated.pth", &archive(&members));
    assert_reads_like_cnn(&path);
}

#[test]
fn names_equal_but_for_case_are_refused_and_both_scanned() {
    let tmp = tempfile::tempdir().unwrap();
    let mut members = under("archive", &benign());
    members.push(member("archive/Data.pkl", &dangerous_pickle()));
    let path = write_tmp(tmp.path(), "case.pth", &archive(&members));
    assert!(refused(&path).contains("case"), "{}", refused(&path));
    assert_eq!(scan_verdict(&path), Verdict::Dangerous);
}

#[test]
fn repeated_names_are_refused_and_every_copy_scanned() {
    let tmp = tempfile::tempdir().unwrap();
    for dangerous_first in [true, false] {
        let mut members = under("archive", &benign());
        let evil = member("archive/data.pkl", &dangerous_pickle());
        if dangerous_first {
            members.insert(1, evil);
        } else {
            members.push(evil);
        }
        let path = write_tmp(tmp.path(), "dup.pth", &archive(&members));
        refused(&path);
        assert_eq!(
            scan_verdict(&path),
            Verdict::Dangerous,
            "dangerous first: {dangerous_first}"
        );
    }
}

#[test]
fn backslash_and_nul_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for odd in [&b"archive\\data.pkl"[..], b"archive/data.pkl\0x"] {
        let mut members = under("archive", &benign());
        members.push(member(odd, &dangerous_pickle()));
        let path = write_tmp(tmp.path(), "odd.pth", &archive(&members));
        refused(&path);
        assert_eq!(
            scan_verdict(&path),
            Verdict::Dangerous,
            "{:?}",
            String::from_utf8_lossy(odd)
        );
    }
}

#[test]
fn local_name_that_differs_from_the_central_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut members = under("archive", &benign());
    members[0].local_name = Some(b"archive/innocent.txt".to_vec());
    let path = write_tmp(tmp.path(), "local.pth", &archive(&members));
    assert!(refused(&path).contains("local header"), "{}", refused(&path));
}

/// Two directories over one set of local records: `torch_cd` is where the end record points,
/// `other_cd` where another reader would look.
fn two_directories(torch_pkl: &[u8], other_pkl: &[u8], layout: &str) -> Vec<u8> {
    let records = benign();
    let mut torch_members = under("archive", &records);
    let mut other_members = torch_members.clone();
    for (m, pkl) in [(&mut torch_members, torch_pkl), (&mut other_members, other_pkl)] {
        for x in m.iter_mut() {
            if x.name.ends_with(b"data.pkl") {
                x.data = pkl.to_vec();
            }
        }
    }
    let mut out = Vec::new();
    let torch_c = locals(&mut out, &torch_members);
    let other_c = locals(&mut out, &other_members);
    let (torch_cd, other_cd) = (torch_c.concat(), other_c.concat());
    let n = torch_members.len();
    match layout {
        // The end record states the first directory's offset; the second sits right before it.
        "stated-offset" => {
            let torch_at = out.len();
            out.extend_from_slice(&torch_cd);
            out.extend_from_slice(&other_cd);
            out.extend_from_slice(&eocd(n, other_cd.len(), torch_at, b""));
        }
        // A fake end record in the comment of the real one: miniz takes the last signature.
        "comment-eocd" => {
            let torch_at = out.len();
            out.extend_from_slice(&torch_cd);
            let other_at = out.len();
            out.extend_from_slice(&other_cd);
            let fake = eocd(n, torch_cd.len(), torch_at, b"");
            out.extend_from_slice(&eocd(n, other_cd.len(), other_at, &fake));
        }
        // A zip64 locator before an end record whose fields are not saturated: miniz still uses
        // the zip64 record.
        "zip64-override" => {
            let torch_at = out.len();
            out.extend_from_slice(&torch_cd);
            let other_at = out.len();
            out.extend_from_slice(&other_cd);
            let z = out.len();
            out.extend_from_slice(b"PK\x06\x06");
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0]);
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&(n as u64).to_le_bytes());
            out.extend_from_slice(&(n as u64).to_le_bytes());
            out.extend_from_slice(&(torch_cd.len() as u64).to_le_bytes());
            out.extend_from_slice(&(torch_at as u64).to_le_bytes());
            out.extend_from_slice(b"PK\x06\x07");
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(z as u64).to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&eocd(n, other_cd.len(), other_at, b""));
        }
        _ => unreachable!(),
    }
    out
}

#[test]
fn directory_tricks_are_refused_and_every_reading_is_scanned() {
    let tmp = tempfile::tempdir().unwrap();
    let benign_pkl = benign().into_iter().find(|(n, _)| n == "data.pkl").unwrap().1;
    let evil = dangerous_pickle();
    for layout in ["stated-offset", "comment-eocd", "zip64-override"] {
        for (torch_pkl, other_pkl) in [(&evil, &benign_pkl), (&benign_pkl, &evil)] {
            let bytes = two_directories(torch_pkl, other_pkl, layout);
            // miniz's reading is the one holding torch_pkl.
            let dir = czip::read_directory(&bytes).unwrap();
            let Some(czip::Lookup::Found(i)) = Some(dir.locate(b"archive/data.pkl")) else {
                panic!("{layout}: data.pkl not found")
            };
            let data = czip::record_data(&bytes, &dir.entries[i], u64::MAX).unwrap();
            assert_eq!(&data[..], &torch_pkl[..], "{layout}: miniz reads another data.pkl");
            let path = write_tmp(tmp.path(), "trick.pth", &bytes);
            refused(&path);
            assert_eq!(scan_verdict(&path), Verdict::Dangerous, "{layout}");
        }
    }
}

#[test]
fn zip_bombs_are_refused_before_inflating() {
    // 64 MiB of one repeated byte deflates to ~64 KiB: far more than the file can justify.
    let tmp = tempfile::tempdir().unwrap();
    let mut members = under("archive", &benign());
    let mut pkl = vec![0x80, 0x02, b'B'];
    pkl.extend_from_slice(&((64u32 << 20) - 8).to_le_bytes());
    pkl.resize((64 << 20) - 2, b'a');
    pkl.extend_from_slice(b"0.");
    for m in &mut members {
        if m.name.ends_with(b"data.pkl") {
            m.data = pkl.clone();
            m.deflate = true;
        }
    }
    let bytes = archive(&members);
    assert!(bytes.len() < 1 << 20, "{} bytes", bytes.len());
    let path = write_tmp(tmp.path(), "bomb.pth", &bytes);
    let start = std::time::Instant::now();
    assert!(refused(&path).contains("justify"), "{}", refused(&path));
    // Unreadable, so scan_path reports it as an error (exit 2), saying why.
    let err = scan::scan_path(&path, &ReadLimits::default()).unwrap_err().to_string();
    assert!(err.contains("justify"), "{err}");
    assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
}

#[test]
fn archives_torch_load_refuses_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let records = benign();
    // A record outside the folder: get_all_records throws.
    let mut stray = under("archive", &records);
    stray.push(member("elsewhere/notes.txt", b"hi"));
    let path = write_tmp(tmp.path(), "stray.pth", &archive(&stray));
    assert!(refused(&path).contains("folder"), "{}", refused(&path));
    // No version record: PyTorchStreamReader refuses before reading anything.
    let no_version: Vec<Member> = under("archive", &records)
        .into_iter()
        .filter(|m| !m.name.ends_with(b"version"))
        .collect();
    let path = write_tmp(tmp.path(), "noversion.pth", &archive(&no_version));
    assert!(refused(&path).contains("version"), "{}", refused(&path));
    // A stored record whose two sizes disagree: readers differ on its length.
    let mut bytes = archive(&under("archive", &records));
    let dir = czip::read_directory(&bytes).unwrap();
    let cd = dir.cdir_offset as usize;
    bytes[cd + 20] ^= 1; // compressed size of the first entry
    bytes[cd + 12] = 1; // a non-zero time, so miniz's own check lets it through
    let path = write_tmp(tmp.path(), "sizes.pth", &bytes);
    refused(&path);
}

#[test]
fn truncated_and_bit_flipped_archives_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = two_directories(&dangerous_pickle(), &benign()[0].1, "comment-eocd");
    let path = tmp.path().join("f.pth");
    let step = (bytes.len() / 200).max(1);
    for cut in (0..bytes.len()).step_by(step) {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let _ = ckpt::read::open(&path);
        let _ = scan::scan_path(&path, &ReadLimits::default());
    }
    for at in (0..bytes.len()).step_by(step) {
        let mut b = bytes.clone();
        b[at] ^= 0xff;
        std::fs::write(&path, &b).unwrap();
        let _ = ckpt::read::open(&path);
        let _ = scan::scan_path(&path, &ReadLimits::default());
    }
}
