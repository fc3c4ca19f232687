//! Other ways to read the same zip bytes. torch reads an archive one way ([`super::zip`]); other
//! readers take other ways, and a file crafted so that they disagree can show a scanner or a
//! converter one set of records while `torch.load` unpickles another. ckpt's readers refuse such
//! files and `ckpt scan` judges the records of every reading.
//!
//! The readings besides miniz's:
//! * every other end-of-central-directory signature in the tail (a fake one in a comment, or the
//!   one whose comment length really reaches the end of the file);
//! * Python's `zipfile` (and the `zip` crate's) inference: the central directory sits right
//!   before the EOCD, and every offset shifts by the distance from where the EOCD says it is;
//! * the `zip` crate's reading, which Rust loaders of `.pth` files use;
//! * local headers walked one after another from byte 0, as a streaming reader sees them.

use super::zip::{self, directory_at, eocd_candidates, local_header, Directory, LOCAL_SIG};

/// One record as a reading sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub name: Vec<u8>,
    pub method: u16,
    pub data_start: u64,
    pub compressed_size: u64,
    pub size: u64,
}

/// A set of records and how they were found.
#[derive(Debug, Clone)]
pub struct Reading {
    pub how: String,
    pub records: Vec<Record>,
}

/// miniz's records, each with its data start from the local header.
pub fn records_of(bytes: &[u8], dir: &Directory) -> Vec<Record> {
    dir.entries
        .iter()
        .filter_map(|e| {
            Some(Record {
                name: e.name.clone(),
                method: e.method,
                data_start: e.data_start(bytes)?,
                compressed_size: e.compressed_size,
                size: e.size,
            })
        })
        .collect()
}

/// Readings of `bytes` whose records differ from miniz's reading `primary`.
pub fn other_readings(bytes: &[u8], primary: &Directory) -> Vec<Reading> {
    let mut mine = records_of(bytes, primary);
    mine.sort();
    let mut out: Vec<Reading> = Vec::new();
    let mut push = |how: String, mut records: Vec<Record>| {
        records.sort();
        if records != mine && !out.iter().any(|r| r.records == records) {
            out.push(Reading { how, records });
        }
    };
    for eocd in eocd_candidates(bytes) {
        if eocd as u64 == primary.eocd {
            continue;
        }
        if let Ok(dir) = directory_at(bytes, eocd) {
            push(
                format!("the central directory of the end record at byte {eocd}"),
                records_of(bytes, &dir),
            );
        }
    }
    if let Some(records) = inferred_reading(bytes) {
        push(
            "the central directory where it sits before the end record (Python's zipfile)".into(),
            records,
        );
    }
    if let Some(records) = zip_crate_reading(bytes) {
        push("the zip crate's reading (Rust loaders)".into(), records);
    }
    let walked = local_walk(bytes, primary);
    if !walked.is_empty() {
        push(
            "local headers in sequence from byte 0 (a streaming reader)".into(),
            walked,
        );
    }
    out
}

/// Python's zipfile: the last EOCD signature in the last 64 KiB + 22 bytes (the exact end first),
/// a zip64 end record assumed right before the locator, and offsets shifted by how far the
/// directory sits from where the EOCD says.
fn inferred_reading(bytes: &[u8]) -> Option<Vec<Record>> {
    let len = bytes.len();
    let eocd = if len >= 22 && &bytes[len - 22..len - 18] == zip::EOCD_SIG && bytes[len - 2..] == [0, 0] {
        len - 22
    } else {
        let floor = len.saturating_sub(0xffff + 22);
        (floor..=len.checked_sub(22)?)
            .rev()
            .find(|&i| &bytes[i..i + 4] == zip::EOCD_SIG)?
    };
    let dir = directory_at(bytes, eocd).ok();
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u64::from(u32::from_le_bytes(b.try_into().unwrap_or([0; 4]))))
    };
    let (mut size, mut offset) = (u32_at(eocd + 12)?, u32_at(eocd + 16)?);
    let mut concat = eocd as i128 - size as i128 - offset as i128;
    if eocd >= 76 && &bytes[eocd - 20..eocd - 16] == b"PK\x06\x07" && &bytes[eocd - 76..eocd - 72] == b"PK\x06\x06" {
        let z = eocd - 76;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        size = u64_at(z + 40);
        offset = u64_at(z + 48);
        concat = eocd as i128 - 76 - size as i128 - offset as i128;
    }
    if concat == 0 {
        // Same directory as miniz's when this is also miniz's EOCD; otherwise another EOCD
        // candidate already covers it.
        return dir.map(|d| records_of(bytes, &d));
    }
    let start = usize::try_from(offset as i128 + concat).ok()?;
    let fake_eocd = shifted_directory(bytes, start, size, eocd)?;
    Some(
        fake_eocd
            .into_iter()
            .filter_map(|mut e| {
                e.header_offset = u64::try_from(e.header_offset as i128 + concat).ok()?;
                Some(Record {
                    data_start: e.data_start(bytes)?,
                    name: e.name,
                    method: e.method,
                    compressed_size: e.compressed_size,
                    size: e.size,
                })
            })
            .collect(),
    )
}

/// The records the `zip` crate lists, or None where it refuses the archive.
fn zip_crate_reading(bytes: &[u8]) -> Option<Vec<Record>> {
    let mut archive = ::zip::ZipArchive::new(std::io::Cursor::new(bytes)).ok()?;
    let mut out = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let f = archive.by_index_raw(i).ok()?;
        out.push(Record {
            name: f.name_raw().to_vec(),
            method: match f.compression() {
                ::zip::CompressionMethod::Stored => 0,
                ::zip::CompressionMethod::Deflated => 8,
                _ => u16::MAX,
            },
            data_start: f.data_start()?,
            compressed_size: f.compressed_size(),
            size: f.size(),
        });
    }
    Some(out)
}

/// Central entries read at `start` (for the inference reading), up to `size` bytes.
fn shifted_directory(bytes: &[u8], start: usize, size: u64, eocd: usize) -> Option<Vec<zip::Entry>> {
    let end = start.checked_add(usize::try_from(size).ok()?)?.min(eocd);
    let dir = bytes.get(start..end)?;
    let mut out = Vec::new();
    let mut p = 0usize;
    while p + 46 <= dir.len() && &dir[p..p + 4] == b"PK\x01\x02" && out.len() < 1 << 20 {
        let h = &dir[p..];
        let le16 = |at: usize| usize::from(u16::from_le_bytes([h[at], h[at + 1]]));
        let le32 = |at: usize| u64::from(u32::from_le_bytes(h[at..at + 4].try_into().unwrap_or([0; 4])));
        let (name_len, extra_len, comment_len) = (le16(28), le16(30), le16(32));
        let name = h.get(46..46 + name_len)?.to_vec();
        out.push(zip::Entry {
            name,
            method: le16(10) as u16,
            flags: le16(8) as u16,
            compressed_size: le32(20),
            size: le32(24),
            header_offset: le32(42),
            external_attr: 0,
            crc32: le32(16) as u32,
        });
        p += 46 + name_len + extra_len + comment_len;
    }
    Some(out)
}

/// Local headers one after another from byte 0. Sizes a header leaves to a data descriptor
/// (torch's writer does) come from the central entry at the same offset.
fn local_walk(bytes: &[u8], primary: &Directory) -> Vec<Record> {
    let at: std::collections::HashMap<u64, &zip::Entry> =
        primary.entries.iter().map(|e| (e.header_offset, e)).collect();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while out.len() < 1 << 20 {
        let Some(local) = local_header(bytes, pos) else { break };
        let data_start = pos + local.header_len();
        let central = at.get(&pos);
        let descriptor = local.flags & 8 != 0;
        let (compressed_size, size) = match central {
            Some(e) if descriptor => (e.compressed_size, e.size),
            _ => local.sizes(),
        };
        out.push(Record {
            name: local.name.to_vec(),
            method: local.method,
            data_start,
            compressed_size,
            size,
        });
        let Some(mut next) = data_start.checked_add(compressed_size) else {
            break;
        };
        if descriptor {
            next = skip_descriptor(bytes, next);
        }
        if next <= pos {
            break;
        }
        pos = next;
    }
    out
}

/// Skips a data descriptor (optional signature, CRC, sizes of 4 or 8 bytes) up to the next
/// local header.
fn skip_descriptor(bytes: &[u8], at: u64) -> u64 {
    for len in [16u64, 24, 12, 20] {
        let next = at + len;
        let header = usize::try_from(next).ok().and_then(|n| bytes.get(n..n.checked_add(4)?));
        if header == Some(LOCAL_SIG) || header == Some(b"PK\x01\x02") {
            return next;
        }
    }
    at + 16
}
