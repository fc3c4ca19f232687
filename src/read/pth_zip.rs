//! PyTorch's zip format (torch >= 1.6) and TorchScript archives: `PREFIX/data.pkl` plus one
//! stored record `PREFIX/data/<key>` per storage. Storage bytes are never copied: a tensor
//! points at its record's byte range in the mapped file.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::Arc;

use zip::{CompressionMethod, ZipArchive};

use crate::error::{Error, Result};
use crate::model::{ByteOrder, Checkpoint, DataRef, Format, Origin, Storage, StorageId};
use crate::read::decode::{StoragePid, StorageProvider, StorageRef};
use crate::read::script::{module_name, ScriptClasses};
use crate::read::{finish, parse_pickle, ReadLimits};
use crate::source::Source;

/// One record of the archive, located from its central directory entry and local header.
#[derive(Debug, Clone)]
struct Record {
    index: usize,
    /// Where the record's (possibly compressed) bytes start in the file.
    data_start: u64,
    compressed_size: u64,
    size: u64,
    stored: bool,
}

/// The archive's table of contents, for ckpt's own readers and for `scan`.
pub struct ZipIndex<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    records: HashMap<String, Record>,
    /// Record names in central directory order.
    pub names: Vec<String>,
    pub prefix: String,
}

pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

impl<'a> ZipIndex<'a> {
    pub fn open(source: &'a Source, limits: &ReadLimits) -> Result<ZipIndex<'a>> {
        let path = source.path();
        let zip_err = |e| Error::Zip {
            path: path.into(),
            source: e,
        };
        let bytes = source.bytes();
        let mut archive = ZipArchive::new(Cursor::new(bytes)).map_err(zip_err)?;
        // The zip crate keeps one entry per name; loaders disagree on which copy of a repeated
        // name they read (miniz, Python's zipfile), so an archive that repeats one is refused.
        if let Some(raw) = raw_central_directory(bytes) {
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = raw.iter().find(|e| !seen.insert(e.name.as_str())) {
                return Err(Error::malformed(
                    path,
                    format!("zip record {}", dup.name),
                    "the archive holds this record more than once",
                ));
            }
        }
        if archive.len() > limits.max_zip_entries {
            return Err(Error::malformed(
                path,
                "zip directory",
                format!(
                    "{} entries, more than the limit of {}",
                    archive.len(),
                    limits.max_zip_entries
                ),
            ));
        }
        let mut records = HashMap::new();
        let mut names = Vec::with_capacity(archive.len());
        for index in 0..archive.len() {
            let entry = archive.by_index_raw(index).map_err(zip_err)?;
            let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
            let header = entry.header_start();
            let data_start = local_data_start(bytes, header).ok_or_else(|| {
                Error::malformed(
                    path,
                    format!("zip record {name}"),
                    format!("bad local header at byte {header}"),
                )
            })?;
            let record = Record {
                index,
                data_start,
                compressed_size: entry.compressed_size(),
                size: entry.size(),
                stored: entry.compression() == CompressionMethod::Stored,
            };
            if data_start
                .checked_add(record.compressed_size)
                .is_none_or(|end| end > bytes.len() as u64)
            {
                return Err(Error::malformed(
                    path,
                    format!("zip record {name}"),
                    "data runs past the end of the file",
                ));
            }
            names.push(name.clone());
            // Loaders disagree on which of two equal names they read (miniz, Python's zipfile).
            if records.insert(name.clone(), record).is_some() {
                return Err(Error::malformed(
                    path,
                    format!("zip record {name}"),
                    "the archive holds this record twice",
                ));
            }
        }
        // torch takes the archive's prefix from its first record, whatever it is called.
        let prefix = names
            .first()
            .and_then(|n| n.split_once('/'))
            .map(|(p, _)| p.to_string())
            .ok_or_else(|| Error::UnknownFormat {
                path: path.into(),
                why: "zip archive without a top-level folder: not a PyTorch checkpoint".into(),
            })?;
        Ok(ZipIndex {
            archive,
            records,
            names,
            prefix,
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.records.contains_key(name)
    }

    /// The bytes of a stored record, straight from the map.
    fn stored_range(&self, name: &str) -> Option<(u64, u64, bool)> {
        self.records
            .get(name)
            .map(|r| (r.data_start, r.compressed_size, r.stored))
    }

    /// A whole record's bytes (decompressed if needed), refusing records larger than `max`.
    pub fn read(&mut self, path: &Path, name: &str, max: u64) -> Result<Vec<u8>> {
        let record = self
            .records
            .get(name)
            .cloned()
            .ok_or_else(|| Error::malformed(path, name, "record missing from the archive"))?;
        if record.size > max {
            return Err(Error::malformed(
                path,
                name,
                format!("record of {} bytes exceeds the limit of {max}", record.size),
            ));
        }
        let mut entry = self.archive.by_index(record.index).map_err(|e| Error::Zip {
            path: path.into(),
            source: e,
        })?;
        let mut out = Vec::with_capacity(record.size as usize);
        entry
            .by_ref()
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::malformed(path, name, format!("cannot read record: {e}")))?;
        if out.len() as u64 > max {
            return Err(Error::malformed(
                path,
                name,
                format!("record exceeds the limit of {max} bytes"),
            ));
        }
        Ok(out)
    }
}

/// One entry of a zip's central directory as the file holds it, repeated names included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: String,
    pub method: u16,
    pub flags: u16,
    pub compressed_size: u64,
    pub size: u64,
    pub header_offset: u64,
}

impl RawEntry {
    /// Where the entry's data starts, from its local header.
    pub fn data_start(&self, bytes: &[u8]) -> Option<u64> {
        local_data_start(bytes, self.header_offset)
    }
}

/// Walks the central directory (zip64 included) without deduplicating names. None when the
/// directory cannot be walked (the zip crate's view is then all there is).
pub fn raw_central_directory(bytes: &[u8]) -> Option<Vec<RawEntry>> {
    let u16_at = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    };
    let lowest = bytes.len().saturating_sub(22 + 0xffff);
    let eocd = (lowest..=bytes.len().checked_sub(22)?)
        .rev()
        .find(|&i| bytes.get(i..i + 4) == Some(b"PK\x05\x06"))?;
    let mut count = u64::from(u16_at(eocd + 10)?);
    let mut cd_size = u64::from(u32_at(eocd + 12)?);
    let mut cd_offset = u64::from(u32_at(eocd + 16)?);
    if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        let locator = eocd.checked_sub(20)?;
        if bytes.get(locator..locator + 4) != Some(b"PK\x06\x07") {
            return None;
        }
        let rec = usize::try_from(u64_at(locator + 8)?).ok()?;
        if bytes.get(rec..rec + 4) != Some(b"PK\x06\x06") {
            return None;
        }
        count = u64_at(rec + 32)?;
        cd_size = u64_at(rec + 40)?;
        cd_offset = u64_at(rec + 48)?;
    }
    let mut pos = usize::try_from(cd_offset).ok()?;
    let end = pos.checked_add(usize::try_from(cd_size).ok()?)?;
    if end > bytes.len() || count > (cd_size / 46) + 1 {
        return None;
    }
    let mut out = Vec::new();
    for _ in 0..count {
        if bytes.get(pos..pos + 4) != Some(b"PK\x01\x02") {
            return None;
        }
        let flags = u16_at(pos + 8)?;
        let method = u16_at(pos + 10)?;
        let mut compressed_size = u64::from(u32_at(pos + 20)?);
        let mut size = u64::from(u32_at(pos + 24)?);
        let name_len = usize::from(u16_at(pos + 28)?);
        let extra_len = usize::from(u16_at(pos + 30)?);
        let comment_len = usize::from(u16_at(pos + 32)?);
        let mut header_offset = u64::from(u32_at(pos + 42)?);
        let name = String::from_utf8_lossy(bytes.get(pos + 46..pos + 46 + name_len)?).into_owned();
        // Zip64 extra field: the 8-byte values of the fields saturated above, in this order.
        let mut extra = bytes.get(pos + 46 + name_len..pos + 46 + name_len + extra_len)?;
        while extra.len() >= 4 {
            let id = u16::from_le_bytes([extra[0], extra[1]]);
            let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
            let data = extra.get(4..4 + len)?;
            if id == 1 {
                let mut fields = data
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
                for field in [&mut size, &mut compressed_size, &mut header_offset] {
                    if *field == 0xffff_ffff {
                        *field = fields.next()?;
                    }
                }
            }
            extra = &extra[4 + len..];
        }
        out.push(RawEntry {
            name,
            method,
            flags,
            compressed_size,
            size,
            header_offset,
        });
        pos = pos.checked_add(46 + name_len + extra_len + comment_len)?;
        if pos > end {
            return None;
        }
    }
    Some(out)
}

/// Where a record's data starts: after the 30-byte local header, its name and its extra field
/// (the extra field is where torch pads records to 64-byte alignment).
fn local_data_start(bytes: &[u8], header: u64) -> Option<u64> {
    let h = usize::try_from(header).ok()?;
    let head = bytes.get(h..h.checked_add(30)?)?;
    if head[0..4] != [0x50, 0x4b, 0x03, 0x04] {
        return None;
    }
    let name_len = u16::from_le_bytes([head[26], head[27]]) as u64;
    let extra_len = u16::from_le_bytes([head[28], head[29]]) as u64;
    header.checked_add(30 + name_len + extra_len)
}

struct ZipStorages<'a> {
    index: &'a ZipIndex<'a>,
    source: &'a Arc<Source>,
    byte_order: ByteOrder,
    by_key: HashMap<String, StorageRef>,
    storages: Vec<Storage>,
}

impl StorageProvider for ZipStorages<'_> {
    fn storage(&mut self, pid: &StoragePid) -> std::result::Result<StorageRef, String> {
        if let Some(r) = self.by_key.get(&pid.key) {
            return Ok(*r);
        }
        let name = format!("{}/data/{}", self.index.prefix, pid.key);
        let (offset, len, stored) = self
            .index
            .stored_range(&name)
            .ok_or_else(|| format!("storage record {name} is missing"))?;
        if !stored {
            return Err(format!(
                "storage record {name} is compressed; PyTorch stores storages uncompressed"
            ));
        }
        let r = StorageRef {
            id: StorageId(self.storages.len()),
            nbytes: len,
        };
        self.storages.push(Storage {
            key: Some(pid.key.clone()),
            location: pid.location.clone(),
            byte_order: self.byte_order,
            data: DataRef {
                source: self.source.clone(),
                offset,
                len,
            },
            cast: None,
        });
        self.by_key.insert(pid.key.clone(), r);
        Ok(r)
    }
}

pub fn read(source: Arc<Source>, limits: &ReadLimits) -> Result<Checkpoint> {
    let path = source.path().to_path_buf();
    let mut index = ZipIndex::open(&source, limits)?;
    let prefix = index.prefix.clone();
    let data_pkl = format!("{prefix}/data.pkl");
    if !index.has(&data_pkl) {
        return Err(Error::UnknownFormat {
            path,
            why: format!("zip archive without {data_pkl}: not a PyTorch checkpoint"),
        });
    }
    let code_dir = format!("{prefix}/code/");
    let scripted =
        index.has(&format!("{prefix}/constants.pkl")) || index.names.iter().any(|n| n.starts_with(&code_dir));
    let byte_order = match index.has(&format!("{prefix}/byteorder")) {
        false => ByteOrder::Little,
        true => match index.read(&path, &format!("{prefix}/byteorder"), 16)?.as_slice() {
            b"little" => ByteOrder::Little,
            b"big" => ByteOrder::Big,
            other => {
                return Err(Error::malformed(
                    &path,
                    format!("{prefix}/byteorder"),
                    format!("unknown byte order {:?}", String::from_utf8_lossy(other)),
                ))
            }
        },
    };
    let script = if scripted {
        Some(script_classes(&mut index, &path, &code_dir, limits)?)
    } else {
        None
    };
    let pkl = index.read(&path, &data_pkl, limits.max_pickle_bytes)?;
    let pickle = parse_pickle(&path, &data_pkl, &pkl, limits)?;
    let mut provider = ZipStorages {
        index: &index,
        source: &source,
        byte_order,
        by_key: HashMap::new(),
        storages: Vec::new(),
    };
    let decoded = crate::read::decode::Decoder::new(
        &pickle.heap,
        &mut provider,
        &path,
        &data_pkl,
        script.as_ref(),
        limits.decode.clone(),
    )
    .decode(&pickle.root)?;
    let storages = provider.storages;
    let (format, origin) = if scripted {
        (Format::TorchScript, Origin::Scripted)
    } else if decoded.saw_module {
        (Format::PthZip, Origin::WholeModel)
    } else {
        (Format::PthZip, Origin::Data)
    };
    Ok(finish(format, origin, decoded, storages, &pickle.globals))
}

fn script_classes(index: &mut ZipIndex, path: &Path, code_dir: &str, limits: &ReadLimits) -> Result<ScriptClasses> {
    let mut classes = ScriptClasses::default();
    let files: Vec<String> = index
        .names
        .iter()
        .filter(|n| n.starts_with(code_dir) && n.ends_with(".py"))
        .cloned()
        .collect();
    for name in files {
        let source = index.read(path, &name, limits.max_pickle_bytes)?;
        if let Some(module) = module_name(&name[code_dir.len()..]) {
            classes.add_source(&module, &String::from_utf8_lossy(&source));
        }
    }
    Ok(classes)
}
