//! Zip archives read exactly as `torch.load` reads them: PyTorch's `PyTorchStreamReader` on
//! miniz. Every choice here follows miniz's reader, not the zip specification and not other
//! readers (the `zip` crate, Python's `zipfile`), because what matters is which bytes torch
//! unpickles:
//!
//! * the end-of-central-directory record (EOCD) is the *last* signature in the file's tail with
//!   at least 22 bytes after it, whatever its comment length says;
//! * a zip64 locator right before it switches to the zip64 record's fields, saturated or not;
//! * the central directory is read at the offset the EOCD states, never where it seems to sit;
//! * a record's data starts after its local header's name and extra field (the local name itself
//!   is ignored), and a stored record is `size` bytes long;
//! * names are looked up ASCII-case-insensitively; two names equal that way make the lookup
//!   depend on miniz's sort order, so [`Directory::locate`] reports them as ambiguous.
//!
//! Other readers can see other records in the same bytes; [`super::zip_readings`] finds them.

use std::borrow::Cow;
use std::collections::HashMap;

pub(crate) const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";
pub(crate) const CENTRAL_SIG: &[u8; 4] = b"PK\x01\x02";
pub(crate) const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";
pub(crate) const ZIP64_LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
pub(crate) const ZIP64_EOCD_SIG: &[u8; 4] = b"PK\x06\x06";
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
/// miniz reads the file's tail in blocks of this size when it looks for the EOCD.
const SEARCH_BLOCK: usize = 4096;
const U32_MAX: u64 = 0xffff_ffff;

/// A deflated record may inflate to this many times the file's size (plus [`INFLATE_FLOOR`]).
/// torch never compresses records, and pickles compress a few times at most; a record that
/// claims more is a bomb, refused before anything is allocated or parsed.
pub const INFLATE_RATIO: u64 = 16;
pub const INFLATE_FLOOR: u64 = 1 << 20;

/// General-purpose flags miniz refuses to extract: encrypted, strong encryption, patch data.
const FLAGS_UNEXTRACTABLE: u16 = 0x0001 | 0x0040 | 0x0020;
/// "Local header values masked": miniz refuses the whole archive.
const FLAG_MASKED: u16 = 0x2000;
/// The DOS directory attribute.
const DOS_DIRECTORY: u32 = 0x10;

/// One central directory entry, as miniz's `mz_zip_reader_file_stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name's bytes exactly as stored (not decoded: two readers may decode differently).
    pub name: Vec<u8>,
    pub method: u16,
    pub flags: u16,
    pub compressed_size: u64,
    pub size: u64,
    pub header_offset: u64,
    pub external_attr: u32,
    /// The CRC-32 of the uncompressed data, as the central directory records it (miniz checks
    /// it only when extracting to a file, which torch never does).
    pub crc32: u32,
}

impl Entry {
    /// The name for messages (lossy where it is not UTF-8).
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// miniz extracts nothing for these: a name ending in '/' or the DOS directory attribute.
    pub fn is_directory(&self) -> bool {
        self.name.last() == Some(&b'/') || self.external_attr & DOS_DIRECTORY != 0
    }

    /// Where the record's data starts: after the local header, its name and its extra field
    /// (where torch pads records to 64-byte alignment).
    pub fn data_start(&self, bytes: &[u8]) -> Option<u64> {
        let local = local_header(bytes, self.header_offset)?;
        self.header_offset.checked_add(local.header_len())
    }
}

/// An archive's central directory as miniz reads it.
#[derive(Debug, Clone)]
pub struct Directory {
    /// Entries in central directory order (torch takes the prefix from the first).
    pub entries: Vec<Entry>,
    /// Where the EOCD record used sits.
    pub eocd: u64,
    /// Where the central directory starts, as the EOCD (or zip64 record) states.
    #[cfg_attr(not(feature = "internals"), expect(dead_code, reason = "only the integration tests read it"))]
    pub cdir_offset: u64,
    #[cfg_attr(not(feature = "internals"), expect(dead_code, reason = "only the integration tests read it"))]
    pub cdir_size: u64,
    /// Entry indices by lower-cased name, for lookups without a scan.
    by_name: HashMap<Vec<u8>, Vec<usize>>,
}

/// What a name lookup finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Missing,
    Found(usize),
    /// Several entries equal the name ASCII-case-insensitively: which one torch reads depends on
    /// miniz's sort order, and other readers pick differently.
    Ambiguous(Vec<usize>),
}

/// torch's `_is_zipfile`: the file starts with a local header signature.
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(LOCAL_SIG)
}

fn le16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn le64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// The lowest offset miniz's backwards EOCD search reaches: it reads 4 KiB blocks from the end,
/// each overlapping the next by 3 bytes, and gives up after a block that starts at 0 or at least
/// 64 KiB + 22 bytes before the end.
fn search_floor(len: usize) -> usize {
    let mut start = len.saturating_sub(SEARCH_BLOCK);
    while start > 0 && len - start < 0xffff + EOCD_LEN {
        start = start.saturating_sub(SEARCH_BLOCK - 3);
    }
    start
}

/// Every EOCD signature in the searched tail with room for a record after it, last first.
/// memchr's vectorised search: every chunk archive of a distributed checkpoint is searched, so a
/// byte-by-byte walk of 64 KiB each was a tenth of opening one.
pub(crate) fn eocd_candidates(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    // A signature with room for a record starts at len - EOCD_LEN at the latest.
    let floor = search_floor(bytes.len());
    let end = (bytes.len() + EOCD_SIG.len()).saturating_sub(EOCD_LEN).max(floor);
    memchr::memmem::rfind_iter(&bytes[floor..end], EOCD_SIG).map(move |i| floor + i)
}

/// Reads the central directory as miniz does (`mz_zip_reader_read_central_dir` with the checks of
/// `mz_zip_reader_file_stat`). The error says what miniz would refuse.
pub fn read_directory(bytes: &[u8]) -> Result<Directory, String> {
    let eocd = eocd_candidates(bytes)
        .next()
        .ok_or("no end-of-central-directory record in the last 64 KiB: not a complete zip archive")?;
    directory_at(bytes, eocd)
}

/// The central directory an EOCD at `eocd` describes, with miniz's checks.
pub(crate) fn directory_at(bytes: &[u8], eocd: usize) -> Result<Directory, String> {
    let len = bytes.len() as u64;
    let corrupt = |what: &str| format!("end of central directory at byte {eocd}: {what}");
    let field16 = |at: usize| le16(bytes, eocd + at).map(u64::from).unwrap_or(0);
    let field32 = |at: usize| le32(bytes, eocd + at).map(u64::from).unwrap_or(0);
    let mut total = field16(10);
    let mut on_disk = field16(8);
    let mut this_disk = field16(4);
    let mut cdir_disk = field16(6);
    let mut cdir_size = field32(12);
    let mut cdir_offset = field32(16);
    if let Some(z) = zip64_record(bytes, eocd)? {
        let disks = le32(bytes, eocd - ZIP64_LOCATOR_LEN + 16).unwrap_or(0);
        let record_size = le64(bytes, z + 4).unwrap_or(0);
        if record_size < (ZIP64_EOCD_LEN - 12) as u64 {
            return Err(corrupt("the zip64 record is too short"));
        }
        if disks != 1 {
            return Err(corrupt("a multi-disk archive (zip64 locator)"));
        }
        total = le64(bytes, z + 32).unwrap_or(0);
        on_disk = le64(bytes, z + 24).unwrap_or(0);
        let size64 = le64(bytes, z + 40).unwrap_or(0);
        if total > U32_MAX || on_disk > U32_MAX {
            return Err(corrupt("more than 2^32 entries"));
        }
        if size64 > U32_MAX {
            return Err(corrupt("a central directory of 4 GiB or more"));
        }
        cdir_size = size64;
        this_disk = u64::from(le32(bytes, z + 16).unwrap_or(0));
        cdir_disk = u64::from(le32(bytes, z + 20).unwrap_or(0));
        cdir_offset = le64(bytes, z + 48).unwrap_or(0);
    }
    if total != on_disk {
        return Err(corrupt("a multi-disk archive (entry counts differ)"));
    }
    if (this_disk | cdir_disk) != 0 && (this_disk != 1 || cdir_disk != 1) {
        return Err(corrupt("a multi-disk archive"));
    }
    // miniz multiplies in 32 bits.
    if cdir_size < u64::from((total as u32).wrapping_mul(CENTRAL_LEN as u32)) {
        return Err(corrupt("the central directory is too small for its entry count"));
    }
    if cdir_offset.checked_add(cdir_size).is_none_or(|end| end > len) {
        return Err(corrupt("the central directory runs past the end of the file"));
    }
    let start = cdir_offset as usize;
    let dir = &bytes[start..start + cdir_size as usize];
    let mut entries = Vec::with_capacity(total.min(cdir_size / CENTRAL_LEN as u64) as usize);
    let mut p = 0usize;
    for i in 0..total {
        let entry = central_entry(dir, p, this_disk, len)
            .map_err(|why| format!("central directory entry {i} (byte {}): {why}", start + p))?;
        p += entry.1;
        entries.push(entry.0);
    }
    Ok(Directory::new(entries, eocd as u64, cdir_offset, cdir_size))
}

/// The zip64 end record a locator right before the EOCD points at, when miniz would use one.
fn zip64_record(bytes: &[u8], eocd: usize) -> Result<Option<usize>, String> {
    if eocd < ZIP64_LOCATOR_LEN + ZIP64_EOCD_LEN {
        return Ok(None);
    }
    let locator = eocd - ZIP64_LOCATOR_LEN;
    if &bytes[locator..locator + 4] != ZIP64_LOCATOR_SIG {
        return Ok(None);
    }
    let at = le64(bytes, locator + 8).unwrap_or(0);
    if at > (bytes.len() - ZIP64_EOCD_LEN) as u64 {
        return Err(format!(
            "zip64 locator at byte {locator} points past the end of the file"
        ));
    }
    let at = at as usize;
    Ok((&bytes[at..at + 4] == ZIP64_EOCD_SIG).then_some(at))
}

/// One central entry at `p` of the directory bytes: the entry and its length.
fn central_entry(dir: &[u8], p: usize, this_disk: u64, file_len: u64) -> Result<(Entry, usize), String> {
    if dir.len() - p < CENTRAL_LEN || &dir[p..p + 4] != CENTRAL_SIG {
        return Err("not a central directory header".into());
    }
    let h = &dir[p..];
    let flags = le16(h, 8).unwrap_or(0);
    let method = le16(h, 10).unwrap_or(0);
    let method_and_time = le32(h, 10).unwrap_or(0);
    let mut compressed_size = u64::from(le32(h, 20).unwrap_or(0));
    let mut size = u64::from(le32(h, 24).unwrap_or(0));
    let name_len = usize::from(le16(h, 28).unwrap_or(0));
    let extra_len = usize::from(le16(h, 30).unwrap_or(0));
    let comment_len = usize::from(le16(h, 32).unwrap_or(0));
    let disk = u64::from(le16(h, 34).unwrap_or(0));
    let external_attr = le32(h, 38).unwrap_or(0);
    let crc32 = le32(h, 16).unwrap_or(0);
    let mut header_offset = u64::from(le32(h, 42).unwrap_or(0));
    if compressed_size != U32_MAX && size != U32_MAX {
        // miniz reads method and time as one 32-bit word here.
        if (method_and_time == 0 && size != compressed_size) || (size != 0 && compressed_size == 0) {
            return Err("sizes inconsistent with the method".into());
        }
    }
    if disk == 0xffff || (disk != this_disk && disk != 1) {
        return Err("a multi-disk archive".into());
    }
    if compressed_size != U32_MAX && header_offset + LOCAL_LEN as u64 + compressed_size > file_len {
        return Err("data runs past the end of the file".into());
    }
    if flags & FLAG_MASKED != 0 {
        return Err("masked local headers (central directory encryption)".into());
    }
    let total_len = CENTRAL_LEN + name_len + extra_len + comment_len;
    if total_len > dir.len() - p {
        return Err("runs past the end of the central directory".into());
    }
    let name = h[CENTRAL_LEN..CENTRAL_LEN + name_len].to_vec();
    if compressed_size.max(size).max(header_offset) == U32_MAX {
        let extra = &h[CENTRAL_LEN + name_len..CENTRAL_LEN + name_len + extra_len];
        zip64_extra(extra, &mut size, &mut compressed_size, &mut header_offset)?;
    }
    let entry = Entry {
        name,
        method,
        flags,
        compressed_size,
        size,
        header_offset,
        external_attr,
        crc32,
    };
    Ok((entry, total_len))
}

/// The zip64 extended information field: 8-byte values replace the saturated fields, in the
/// order size, compressed size, local header offset.
fn zip64_extra(mut extra: &[u8], size: &mut u64, compressed: &mut u64, offset: &mut u64) -> Result<(), String> {
    while !extra.is_empty() {
        if extra.len() < 4 {
            return Err("a truncated extra field".into());
        }
        let id = le16(extra, 0).unwrap_or(0);
        let field_len = usize::from(le16(extra, 2).unwrap_or(0));
        if field_len + 4 > extra.len() {
            return Err("an extra field runs past its end".into());
        }
        if id == 1 {
            let mut data = &extra[4..4 + field_len];
            for field in [size, compressed, offset] {
                if *field == U32_MAX {
                    *field = le64(data, 0).ok_or("a truncated zip64 extra field")?;
                    data = &data[8..];
                }
            }
            return Ok(());
        }
        extra = &extra[4 + field_len..];
    }
    Ok(())
}

/// A local header's name and extra field length.
pub(crate) struct LocalHeader<'a> {
    pub flags: u16,
    pub method: u16,
    /// Zero where a data descriptor after the data holds it (flag bit 3).
    pub crc32: u32,
    pub compressed_size: u64,
    pub size: u64,
    /// The name, as far as the file holds it.
    pub name: &'a [u8],
    pub name_len: usize,
    pub extra_len: usize,
    /// The extra field, as far as the file holds it.
    pub extra: &'a [u8],
}

impl LocalHeader<'_> {
    /// Bytes from the header's start to its data, as the header declares them.
    pub fn header_len(&self) -> u64 {
        (LOCAL_LEN + self.name_len + self.extra_len) as u64
    }

    /// The sizes this header states, zip64 extra field included (a local zip64 field holds
    /// both sizes, size first).
    pub fn sizes(&self) -> (u64, u64) {
        let (mut compressed, mut size) = (self.compressed_size, self.size);
        if compressed == U32_MAX || size == U32_MAX {
            let mut extra = self.extra;
            while extra.len() >= 4 {
                let id = le16(extra, 0).unwrap_or(0);
                let len = usize::from(le16(extra, 2).unwrap_or(0));
                let Some(data) = extra.get(4..4 + len) else { break };
                if id == 1 {
                    size = le64(data, 0).unwrap_or(size);
                    compressed = le64(data, 8).unwrap_or(compressed);
                    break;
                }
                extra = &extra[4 + len..];
            }
        }
        (compressed, size)
    }
}

pub(crate) fn local_header(bytes: &[u8], offset: u64) -> Option<LocalHeader<'_>> {
    let at = usize::try_from(offset).ok()?;
    let head = bytes.get(at..at.checked_add(LOCAL_LEN)?)?;
    if &head[..4] != LOCAL_SIG {
        return None;
    }
    let name_len = usize::from(le16(head, 26)?);
    let name_start = at + LOCAL_LEN;
    let extra_start = (name_start + name_len).min(bytes.len());
    let extra_len = usize::from(le16(head, 28)?);
    Some(LocalHeader {
        flags: le16(head, 6)?,
        method: le16(head, 8)?,
        crc32: le32(head, 14)?,
        compressed_size: u64::from(le32(head, 18)?),
        size: u64::from(le32(head, 22)?),
        // A name cut short by the end of the file still counts towards the data offset.
        name: bytes.get(name_start..(name_start + name_len).min(bytes.len()))?,
        name_len,
        extra_len,
        extra: &bytes[extra_start..(extra_start + extra_len).min(bytes.len())],
    })
}

/// The most a deflated record of a `file_len`-byte file may inflate to.
pub fn justified_inflate(file_len: u64) -> u64 {
    file_len.saturating_mul(INFLATE_RATIO).saturating_add(INFLATE_FLOOR)
}

/// miniz's name comparison: ASCII letters fold to lower case, nothing else changes.
pub fn names_equal(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Directory {
    fn new(entries: Vec<Entry>, eocd: u64, cdir_offset: u64, cdir_size: u64) -> Directory {
        let mut by_name: HashMap<Vec<u8>, Vec<usize>> = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            by_name.entry(e.name.to_ascii_lowercase()).or_default().push(i);
        }
        Directory {
            entries,
            eocd,
            cdir_offset,
            cdir_size,
            by_name,
        }
    }

    /// A directory with no entries (what is left when miniz cannot read one).
    pub fn empty() -> Directory {
        Directory::new(Vec::new(), u64::MAX, 0, 0)
    }

    /// The record prefix torch uses: the first entry's name up to its first '/'.
    pub fn prefix(&self) -> Result<&[u8], String> {
        let first = self.entries.first().ok_or("the archive holds no records")?;
        let slash = first.name.iter().position(|&c| c == b'/').ok_or_else(|| {
            format!(
                "the first record '{}' is not in a folder: torch.load refuses the archive",
                first.display_name()
            )
        })?;
        Ok(&first.name[..slash])
    }

    /// Finds a record by its full name, as miniz's `mz_zip_reader_locate_file` does.
    pub fn locate(&self, name: &[u8]) -> Lookup {
        match self.by_name.get(&name.to_ascii_lowercase()).map(Vec::as_slice) {
            None | Some([]) => Lookup::Missing,
            Some([one]) => Lookup::Found(*one),
            Some(many) => Lookup::Ambiguous(many.to_vec()),
        }
    }

    /// Names that equal each other ASCII-case-insensitively, each group in directory order,
    /// groups in the order of their first entry.
    pub fn colliding_names(&self) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = self.by_name.values().filter(|g| g.len() > 1).cloned().collect();
        groups.sort();
        groups
    }
}

/// A record's bytes as miniz's `mz_zip_reader_extract_to_mem` gives them: stored data straight
/// from the file, deflated data inflated to exactly the recorded size. `max_inflated` bounds what
/// a compressed record may inflate to (checked before allocating).
pub fn record_data<'a>(bytes: &'a [u8], entry: &Entry, max_inflated: u64) -> Result<Cow<'a, [u8]>, String> {
    if entry.is_directory() || entry.compressed_size == 0 {
        if entry.size == 0 {
            return Ok(Cow::Borrowed(&[]));
        }
        return Err(format!(
            "a {}-byte record that miniz would not extract (marked as a directory or with no compressed data): torch reads uninitialised memory for it",
            entry.size
        ));
    }
    if entry.flags & FLAGS_UNEXTRACTABLE != 0 {
        return Err("the record is encrypted or patch data: torch cannot extract it".into());
    }
    let start = entry
        .data_start(bytes)
        .ok_or_else(|| format!("no local header at byte {}", entry.header_offset))?;
    extract(
        bytes,
        entry.method,
        start,
        entry.compressed_size,
        entry.size,
        max_inflated,
    )
}

/// The bytes of a record whose data starts at `start`: `size` bytes straight from the file when
/// stored (method 0), else `compressed` bytes inflated to exactly `size`, which must not exceed
/// `max_inflated`.
pub fn extract(
    bytes: &[u8],
    method: u16,
    start: u64,
    compressed: u64,
    size: u64,
    max_inflated: u64,
) -> Result<Cow<'_, [u8]>, String> {
    let in_file = |n: u64| start.checked_add(n).is_some_and(|end| end <= bytes.len() as u64);
    let stored = method == 0;
    if !in_file(compressed) || (stored && !in_file(size)) {
        return Err(format!("data at byte {start} runs past the end of the file"));
    }
    let start = start as usize;
    if stored {
        return Ok(Cow::Borrowed(&bytes[start..start + size as usize]));
    }
    if method != 8 {
        return Err(format!(
            "compression method {method} (torch reads only stored and deflated records)"
        ));
    }
    if size > max_inflated {
        return Err(format!(
            "inflates to {size} bytes, more than this file can justify ({max_inflated} bytes: {INFLATE_RATIO} times the file's size plus 1 MiB, within the pickle limit); refusing a likely zip bomb"
        ));
    }
    let input = &bytes[start..start + compressed as usize];
    inflate_exact(input, size as usize).map(Cow::Owned)
}

/// Raw deflate into a buffer of exactly `size` bytes, as miniz does: the stream must end inside
/// the compressed data and produce exactly `size` bytes.
fn inflate_exact(input: &[u8], size: usize) -> Result<Vec<u8>, String> {
    use miniz_oxide::inflate::core::{decompress, inflate_flags, DecompressorOxide};
    use miniz_oxide::inflate::TINFLStatus;
    let mut out = vec![0u8; size];
    let mut state = DecompressorOxide::new();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, _, written) = decompress(&mut state, input, &mut out, 0, flags);
    match status {
        TINFLStatus::Done if written == size => Ok(out),
        TINFLStatus::Done => Err(format!("inflates to {written} bytes, not the recorded {size}")),
        TINFLStatus::HasMoreOutput => Err(format!("inflates to more than the recorded {size} bytes")),
        other => Err(format!("damaged deflate data ({other:?})")),
    }
}
