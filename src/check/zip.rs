//! A zip archive's records against what its directories say: torch reads records without
//! checking their CRC-32 (miniz checks it only when extracting to a file), so a flipped bit in
//! tensor data loads silently; and a local header that disagrees with its central entry means
//! two readers may take different bytes.

use std::borrow::Cow;
use std::fs::File;

use crate::container::zip::{justified_inflate, local_header, read_directory, record_data, Entry};
use crate::pass;

use super::{Finding, Kind};

/// Flag bit 3: CRC and sizes are in a data descriptor after the data, zero in the local header.
const DATA_DESCRIPTOR: u16 = 0x0008;

/// The findings of `bytes`, the zip archive `file` (mapped; `handle` reads its data; the
/// archive starts at byte `base` of the file: a distributed checkpoint's chunk), and how many
/// records were checked.
pub(super) fn check(file: &str, handle: &File, bytes: &[u8], base: usize) -> (Vec<Finding>, usize) {
    let dir = match read_directory(bytes) {
        Ok(dir) => dir,
        Err(e) => return (vec![Finding::new(Kind::Header, file, format!("zip directory: {e}"))], 0),
    };
    let records: Vec<&Entry> = dir.entries.iter().filter(|e| !e.is_directory()).collect();
    let per_record = pass::map(
        &records,
        |e| e.compressed_size,
        pass::threads(),
        |e| record(file, handle, bytes, base, e),
    );
    (per_record.into_iter().flatten().collect(), records.len())
}

/// What is wrong with one record: its local header, or its data's CRC-32.
fn record(file: &str, handle: &File, bytes: &[u8], base: usize, entry: &Entry) -> Vec<Finding> {
    let name = entry.display_name();
    let mut found = Vec::new();
    let Some(local) = local_header(bytes, entry.header_offset) else {
        let what = format!("record '{name}': no local header at byte {}", entry.header_offset);
        return vec![Finding::new(Kind::Header, file, what)];
    };
    let mut differs = Vec::new();
    if local.name != entry.name.as_slice() {
        differs.push(format!("name '{}'", String::from_utf8_lossy(local.name)));
    }
    if local.method != entry.method {
        differs.push(format!(
            "compression method {} (central: {})",
            local.method, entry.method
        ));
    }
    if local.flags & DATA_DESCRIPTOR == 0 {
        let (compressed, size) = local.sizes();
        if (compressed, size) != (entry.compressed_size, entry.size) {
            differs.push(format!(
                "sizes {compressed}/{size} (central: {}/{})",
                entry.compressed_size, entry.size
            ));
        }
        if local.crc32 != entry.crc32 {
            differs.push(format!("CRC-32 {:08x} (central: {:08x})", local.crc32, entry.crc32));
        }
    }
    if !differs.is_empty() {
        let what = format!("record '{name}': its local header says {}", differs.join(", "));
        found.push(Finding::new(Kind::Header, file, what));
    }
    // Stored records (all torch writes) are hashed in place; a deflated one is inflated first,
    // within the bound the readers use.
    match record_data(bytes, entry, justified_inflate(bytes.len() as u64))
        .and_then(|data| crc_of(handle, bytes, base, data))
    {
        Ok(crc) => {
            if crc != entry.crc32 {
                let what = format!(
                    "record '{name}': data CRC-32 {crc:08x}, the directory records {:08x}: the data changed after it was written",
                    entry.crc32
                );
                found.push(Finding::new(Kind::Crc, file, what));
            }
        }
        Err(e) => found.push(Finding::new(Kind::Header, file, format!("record '{name}': {e}"))),
    }
    found
}

/// The CRC-32 of a record's data. Stored data (a range of the map) is read through the file in
/// 1 MiB blocks rather than through the map, whose pages would stay resident and count against
/// the process (a 1.4 GB checkpoint would show 1.4 GB of RSS).
fn crc_of(handle: &File, bytes: &[u8], base: usize, data: Cow<'_, [u8]>) -> Result<u32, String> {
    let Cow::Borrowed(range) = data else {
        return Ok(crc32fast::hash(&data));
    };
    // Where in the map the range lies (an empty record borrows no part of it).
    let start = (range.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize);
    match start {
        #[cfg(unix)]
        Some(start) if !range.is_empty() && start + range.len() <= bytes.len() => {
            read_crc(handle, base + start, range.len())
        }
        _ => Ok(crc32fast::hash(range)),
    }
}

/// The CRC-32 of `len` bytes of `handle` from `start`, read in blocks.
#[cfg(unix)]
fn read_crc(handle: &File, start: usize, len: usize) -> Result<u32, String> {
    use std::os::unix::fs::FileExt;
    let mut hasher = crc32fast::Hasher::new();
    let mut block = vec![0u8; BLOCK.min(len)];
    let mut done = 0;
    while done < len {
        let n = BLOCK.min(len - done);
        handle
            .read_exact_at(&mut block[..n], (start + done) as u64)
            .map_err(|e| format!("reading its data at byte {}: {e}", start + done))?;
        hasher.update(&block[..n]);
        done += n;
    }
    Ok(hasher.finalize())
}

/// Bytes read at a time.
const BLOCK: usize = 1 << 20;
