//! PyTorch's zip format (torch >= 1.6) and TorchScript archives: `PREFIX/data.pkl` plus one
//! stored record `PREFIX/data/<key>` per storage. Storage bytes are never copied: a tensor
//! points at its record's byte range in the mapped file.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::container::zip::{self, Directory, Entry, Lookup};
use crate::container::zip_readings;
use crate::error::{Error, Result};
use crate::model::{ByteOrder, Checkpoint, DataRef, Format, Origin, Storage, StorageId};
use crate::read::decode::{StoragePid, StorageProvider, StorageRef};
use crate::read::script::{module_name, ScriptClasses};
use crate::read::{finish, parse_pickle, ReadLimits};
use crate::source::Source;

/// The archive's table of contents as torch reads it, refused where another reader could see
/// other records.
pub struct ZipIndex<'a> {
    bytes: &'a [u8],
    dir: Directory,
    /// Record names in central directory order.
    pub names: Vec<String>,
    pub prefix: String,
}

pub use crate::container::zip::is_zip;

impl<'a> ZipIndex<'a> {
    /// The archive in `bytes` (a whole file, or an archive embedded in one at some offset);
    /// `path` names the file in errors.
    pub fn open_bytes(path: &Path, bytes: &'a [u8], limits: &ReadLimits) -> Result<ZipIndex<'a>> {
        let dir = zip::read_directory(bytes).map_err(|why| Error::malformed(path, "zip directory", why))?;
        if dir.entries.len() > limits.max_zip_entries {
            return Err(Error::malformed(
                path,
                "zip directory",
                format!(
                    "{} entries, more than the limit of {}",
                    dir.entries.len(),
                    limits.max_zip_entries
                ),
            ));
        }
        if let Some(why) = ambiguity(bytes, &dir) {
            return Err(Error::malformed(
                path,
                "zip directory",
                format!("{why}; readers disagree on what this archive holds, so ckpt does not read it (`ckpt scan` judges every reading)"),
            ));
        }
        let prefix = dir.prefix().map_err(|why| Error::UnknownFormat {
            path: path.into(),
            why: format!("zip archive: {why}"),
        })?;
        let prefix = String::from_utf8(prefix.to_vec()).map_err(|_| Error::UnknownFormat {
            path: path.into(),
            why: "zip archive whose record folder is not UTF-8: not a PyTorch checkpoint".into(),
        })?;
        // torch.load lists every record (`get_all_records`) and refuses one outside the folder.
        let folder = format!("{prefix}/");
        if let Some(stray) = dir.entries.iter().find(|e| !e.name.starts_with(folder.as_bytes())) {
            return Err(Error::malformed(
                path,
                format!("zip record {}", stray.display_name()),
                format!("not in the archive's folder '{prefix}/': torch.load refuses the archive"),
            ));
        }
        let names = dir.entries.iter().map(Entry::display_name).collect();
        Ok(ZipIndex {
            bytes,
            dir,
            names,
            prefix,
        })
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        match self.dir.locate(name.as_bytes()) {
            Lookup::Found(i) => Some(&self.dir.entries[i]),
            // Refused when the index was opened.
            Lookup::Missing | Lookup::Ambiguous(_) => None,
        }
    }

    /// Whether torch finds the record (names compare ASCII-case-insensitively, as in miniz).
    pub fn has(&self, name: &str) -> bool {
        self.entry(name).is_some()
    }

    /// Whether the exact name is listed (torch.load's `"constants.pkl" in get_all_records()`).
    pub fn lists(&self, name: &str) -> bool {
        self.dir.entries.iter().any(|e| e.name == name.as_bytes())
    }

    /// The data of a stored record, straight from the map.
    fn stored_range(&self, name: &str) -> Option<(u64, u64, bool)> {
        let e = self.entry(name)?;
        Some((e.data_start(self.bytes)?, e.size, e.method == 0))
    }

    /// A whole record's bytes (inflated if needed), refusing records larger than `max`.
    pub fn read(&self, path: &Path, name: &str, max: u64) -> Result<Cow<'a, [u8]>> {
        let entry = self
            .entry(name)
            .ok_or_else(|| Error::malformed(path, name, "record missing from the archive"))?;
        // A deflated record is first bounded by what the file can justify (a bomb's message).
        if entry.method == 0 && entry.size > max {
            return Err(Error::malformed(
                path,
                name,
                format!("record of {} bytes exceeds the limit of {max}", entry.size),
            ));
        }
        let justified = zip::justified_inflate(self.bytes.len() as u64).min(max);
        zip::record_data(self.bytes, entry, justified).map_err(|why| Error::malformed(path, name, why))
    }
}

/// Why two readers could see different records in this archive, if they could.
pub(crate) fn ambiguity(bytes: &[u8], dir: &Directory) -> Option<String> {
    if let Some(group) = dir.colliding_names().first() {
        let names: Vec<String> = group.iter().map(|&i| dir.entries[i].display_name()).collect();
        return Some(format!(
            "records {} have names equal but for case: which one torch reads depends on miniz's sort order",
            names.join(", ")
        ));
    }
    for e in &dir.entries {
        if e.name.contains(&0) || e.name.contains(&b'\\') {
            return Some(format!(
                "record name {:?} holds a NUL or backslash, which readers treat differently",
                e.display_name()
            ));
        }
        if e.method == 0 && e.compressed_size != e.size && !e.is_directory() {
            return Some(format!(
                "stored record {} says {} bytes compressed but {} bytes long",
                e.display_name(),
                e.compressed_size,
                e.size
            ));
        }
        if let Some(local) = zip::local_header(bytes, e.header_offset) {
            if local.name != e.name.as_slice() {
                return Some(format!(
                    "record {}: its local header names it {:?}",
                    e.display_name(),
                    String::from_utf8_lossy(local.name)
                ));
            }
        }
    }
    zip_readings::other_readings(bytes, dir)
        .first()
        .map(|r| format!("{} lists other records than torch reads", r.how))
}

struct ZipStorages<'a> {
    index: &'a ZipIndex<'a>,
    source: &'a Arc<Source>,
    /// Where the archive starts in the source (an archive embedded in a larger file).
    base: u64,
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
                offset: self.base + offset,
                len,
            },
            cast: None,
        });
        self.by_key.insert(pid.key.clone(), r);
        Ok(r)
    }
}

pub fn read(source: Arc<Source>, limits: &ReadLimits) -> Result<Checkpoint> {
    let len = source.len();
    read_embedded(source, 0, len, limits)
}

/// Reads the archive that lies in bytes `base .. base + len` of the source (a distributed
/// checkpoint's chunk inside its `.distcp` file); storages point into the source itself.
pub fn read_embedded(source: Arc<Source>, base: u64, len: u64, limits: &ReadLimits) -> Result<Checkpoint> {
    let path = source.path().to_path_buf();
    let bytes = source.slice(base, len).ok_or_else(|| {
        Error::malformed(
            &path,
            format!("bytes {base}..{}", base.saturating_add(len)),
            format!("past the end of the {}-byte file", source.len()),
        )
    })?;
    let index = ZipIndex::open_bytes(&path, bytes, limits)?;
    let prefix = index.prefix.clone();
    let data_pkl = format!("{prefix}/data.pkl");
    if !index.has(&data_pkl) {
        return Err(Error::UnknownFormat {
            path,
            why: format!("zip archive without {data_pkl}: not a PyTorch checkpoint"),
        });
    }
    // PyTorchStreamReader refuses an archive without a version record before anything is read.
    if !index.has(&format!("{prefix}/.data/version")) && !index.has(&format!("{prefix}/version")) {
        return Err(Error::malformed(
            &path,
            format!("{prefix}/version"),
            "record missing: torch.load refuses an archive without it",
        ));
    }
    let code_dir = format!("{prefix}/code/");
    // torch.load hands the archive to torch.jit.load exactly when this name is listed.
    let scripted = index.lists(&format!("{prefix}/constants.pkl"));
    let byte_order = match index.has(&format!("{prefix}/byteorder")) {
        false => ByteOrder::Little,
        true => match index.read(&path, &format!("{prefix}/byteorder"), 16)?.as_ref() {
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
        Some(script_classes(&index, &path, &code_dir, limits)?)
    } else {
        None
    };
    let pkl = index.read(&path, &data_pkl, limits.max_pickle_bytes)?;
    let pickle = parse_pickle(&path, &data_pkl, &pkl, limits)?;
    let mut provider = ZipStorages {
        index: &index,
        source: &source,
        base,
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
    Ok(finish(&path, format, origin, decoded, storages, &pickle.globals))
}

fn script_classes(index: &ZipIndex, path: &Path, code_dir: &str, limits: &ReadLimits) -> Result<ScriptClasses> {
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
