//! The few zip structures PyTorch's format needs, written by hand: STORED records whose data
//! starts on a 64-byte boundary (padding in a local-header extra field with id "FB", as torch
//! pads it), CRC-32 computed while the data streams through and patched into the local header
//! afterwards (sizes are known up front, so no data descriptors), zip64 fields for any record,
//! offset or directory beyond 4 GiB.
//!
//! Why not the `zip` crate: aligning records through an extra field, writing zip64 only where
//! needed and patching CRCs of streamed data is a hundred lines here, and this way every byte
//! of the layout torch's reader (miniz) sees is under our control.

use std::io::{self, Seek, SeekFrom, Write};

use crate::container::zip::{CENTRAL_SIG, EOCD_SIG, LOCAL_SIG, ZIP64_EOCD_SIG, ZIP64_LOCATOR_SIG};

/// Where record data starts: torch's `.storage_alignment`.
pub const ALIGN: u64 = 64;

const U32_MAX: u64 = 0xffff_ffff;
/// 1980-01-01 00:00, the earliest DOS date: a fixed timestamp keeps outputs reproducible.
const DOS_DATE: u16 = (1 << 5) | 1;
const DOS_TIME: u16 = 0;

struct Entry {
    name: Vec<u8>,
    offset: u64,
    size: u64,
    crc: u32,
}

struct Open {
    entry: Entry,
    written: u64,
    hasher: crc32fast::Hasher,
}

pub struct ZipWriter<W: Write + Seek> {
    w: W,
    pos: u64,
    entries: Vec<Entry>,
    open: Option<Open>,
    force_zip64: bool,
}

fn put16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn sat32(v: u64, force: bool) -> u32 {
    if force || v >= U32_MAX {
        u32::MAX
    } else {
        v as u32
    }
}
fn flags(name: &[u8]) -> u16 {
    // Bit 11: the name is UTF-8.
    if name.is_ascii() {
        0
    } else {
        0x0800
    }
}

impl<W: Write + Seek> ZipWriter<W> {
    /// A writer at the start of `w` (an empty file).
    pub fn new(w: W) -> Self {
        ZipWriter {
            w,
            pos: 0,
            entries: Vec::new(),
            open: None,
            force_zip64: false,
        }
    }

    /// Writes zip64 fields for every record and the directory even when they are small (to
    /// test readers' zip64 paths without 4 GiB files).
    pub fn force_zip64(mut self, on: bool) -> Self {
        self.force_zip64 = on;
        self
    }

    /// The writer underneath.
    pub fn get_ref(&self) -> &W {
        &self.w
    }

    fn out(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Starts a record of exactly `size` bytes; its data follows through [`write`](Self::write).
    pub fn start(&mut self, name: &str, size: u64) -> io::Result<()> {
        if self.open.is_some() {
            return Err(io::Error::other(
                "zip record started before the previous one was finished",
            ));
        }
        let name = name.as_bytes().to_vec();
        if name.len() > u16::MAX as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "zip record name too long"));
        }
        let offset = self.pos;
        let zip64 = self.force_zip64 || size >= U32_MAX;
        let mut h = Vec::with_capacity(30 + name.len() + 20 + 4 + ALIGN as usize);
        h.extend_from_slice(LOCAL_SIG);
        put16(&mut h, if zip64 { 45 } else { 20 });
        put16(&mut h, flags(&name));
        put16(&mut h, 0); // STORED
        put16(&mut h, DOS_TIME);
        put16(&mut h, DOS_DATE);
        put32(&mut h, 0); // CRC-32, patched by finish_record
        put32(&mut h, sat32(size, zip64));
        put32(&mut h, sat32(size, zip64));
        put16(&mut h, name.len() as u16);
        let zip64_len = if zip64 { 20 } else { 0 };
        let unpadded = offset + 30 + name.len() as u64 + zip64_len + 4;
        let pad = (ALIGN - unpadded % ALIGN) % ALIGN;
        put16(&mut h, (zip64_len + 4 + pad) as u16);
        h.extend_from_slice(&name);
        if zip64 {
            put16(&mut h, 0x0001);
            put16(&mut h, 16);
            put64(&mut h, size);
            put64(&mut h, size);
        }
        h.extend_from_slice(b"FB");
        put16(&mut h, pad as u16);
        h.resize(h.len() + pad as usize, b'Z');
        self.out(&h)?;
        debug_assert_eq!(self.pos % ALIGN, 0);
        self.open = Some(Open {
            entry: Entry {
                name,
                offset,
                size,
                crc: 0,
            },
            written: 0,
            hasher: crc32fast::Hasher::new(),
        });
        Ok(())
    }

    /// Data of the open record.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let open = self
            .open
            .as_mut()
            .ok_or_else(|| io::Error::other("zip data written outside a record"))?;
        open.written += data.len() as u64;
        if open.written > open.entry.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "zip record {} got more than its {} bytes",
                    String::from_utf8_lossy(&open.entry.name),
                    open.entry.size
                ),
            ));
        }
        open.hasher.update(data);
        self.out(data)
    }

    /// Ends the open record: checks its size and patches its CRC into the local header, which
    /// it returns.
    pub fn finish_record(&mut self) -> io::Result<u32> {
        let open = self
            .open
            .take()
            .ok_or_else(|| io::Error::other("no zip record to finish"))?;
        let mut entry = open.entry;
        if open.written != entry.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "zip record {} got {} of its {} bytes",
                    String::from_utf8_lossy(&entry.name),
                    open.written,
                    entry.size
                ),
            ));
        }
        entry.crc = open.hasher.finalize();
        self.w.seek(SeekFrom::Start(entry.offset + 14))?;
        self.w.write_all(&entry.crc.to_le_bytes())?;
        self.w.seek(SeekFrom::Start(self.pos))?;
        let crc = entry.crc;
        self.entries.push(entry);
        Ok(crc)
    }

    /// A whole small record.
    pub fn add(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.start(name, data.len() as u64)?;
        self.write(data)?;
        self.finish_record().map(|_| ())
    }

    /// Writes the central directory and end records; returns the writer and the archive's size.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        if self.open.is_some() {
            return Err(io::Error::other("zip archive finished inside a record"));
        }
        let cd_start = self.pos;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let header = central_header(e, self.force_zip64);
            self.out(&header)?;
        }
        let end = end_records(cd_start, self.pos, entries.len() as u64, self.force_zip64);
        self.out(&end)?;
        self.w.flush()?;
        Ok((self.w, self.pos))
    }
}

/// The central directory header of a record, with a zip64 extra field where its size or
/// offset needs one (or `force`).
fn central_header(e: &Entry, force: bool) -> Vec<u8> {
    let big_size = force || e.size >= U32_MAX;
    let big_offset = force || e.offset >= U32_MAX;
    let mut extra = Vec::new();
    if big_size || big_offset {
        put16(&mut extra, 0x0001);
        let n = if big_size { 16 } else { 0 } + if big_offset { 8 } else { 0 };
        put16(&mut extra, n);
        if big_size {
            put64(&mut extra, e.size);
            put64(&mut extra, e.size);
        }
        if big_offset {
            put64(&mut extra, e.offset);
        }
    }
    let version = if extra.is_empty() { 20 } else { 45 };
    let mut buf = Vec::with_capacity(46 + e.name.len() + extra.len());
    buf.extend_from_slice(CENTRAL_SIG);
    put16(&mut buf, version); // made by: MS-DOS host, as torch's writer says
    put16(&mut buf, version);
    put16(&mut buf, flags(&e.name));
    put16(&mut buf, 0);
    put16(&mut buf, DOS_TIME);
    put16(&mut buf, DOS_DATE);
    put32(&mut buf, e.crc);
    put32(&mut buf, sat32(e.size, big_size));
    put32(&mut buf, sat32(e.size, big_size));
    put16(&mut buf, e.name.len() as u16);
    put16(&mut buf, extra.len() as u16);
    put16(&mut buf, 0); // comment
    put16(&mut buf, 0); // disk
    put16(&mut buf, 0); // internal attributes
    put32(&mut buf, 0); // external attributes
    put32(&mut buf, sat32(e.offset, big_offset));
    buf.extend_from_slice(&e.name);
    buf.extend_from_slice(&extra);
    buf
}

/// The end of central directory record, after the zip64 one and its locator when the count,
/// size or start of the directory `[cd_start, cd_end)` needs them (or `force`).
fn end_records(cd_start: u64, cd_end: u64, count: u64, force: bool) -> Vec<u8> {
    let cd_size = cd_end - cd_start;
    let zip64 = force || count >= 0xffff || cd_size >= U32_MAX || cd_start >= U32_MAX;
    let mut buf = Vec::new();
    if zip64 {
        buf.extend_from_slice(ZIP64_EOCD_SIG);
        put64(&mut buf, 44);
        put16(&mut buf, 45);
        put16(&mut buf, 45);
        put32(&mut buf, 0);
        put32(&mut buf, 0);
        put64(&mut buf, count);
        put64(&mut buf, count);
        put64(&mut buf, cd_size);
        put64(&mut buf, cd_start);
        buf.extend_from_slice(ZIP64_LOCATOR_SIG);
        put32(&mut buf, 0);
        put64(&mut buf, cd_end);
        put32(&mut buf, 1);
    }
    let count16 = if zip64 { 0xffff } else { count as u16 };
    buf.extend_from_slice(EOCD_SIG);
    put16(&mut buf, 0);
    put16(&mut buf, 0);
    put16(&mut buf, count16);
    put16(&mut buf, count16);
    put32(&mut buf, sat32(cd_size, zip64));
    put32(&mut buf, sat32(cd_start, zip64));
    put16(&mut buf, 0);
    buf
}
