//! Finding every pickle a loader could unpickle, the way `torch.load` decides: a file starting
//! with a zip local header is a zip; otherwise a valid tar header makes it the torch < 0.4 tar
//! format; otherwise it is unpickled from byte 0 (the legacy format's magic number is just the
//! first pickle). Where two readings are possible (a tar header that also parses as a pickle)
//! both are scanned.

use std::io::{Cursor, Read};
use std::path::Path;

use zip::{CompressionMethod, ZipArchive};

use crate::dtype::DType;
use crate::pickle::Value;
use crate::read::ReadLimits;
use crate::source::Source;

use super::analyze::scan_pickle;
use super::{ops, tar, Finding, PickleReport, ScanReport, Verdict};

/// Nested payloads (`_load_from_bytes(b)` inside `_load_from_bytes(b)` ...) are followed this deep.
const MAX_NESTING: usize = 3;
/// Extensions that say "checkpoint": such a file that cannot be read is an error, not a README.
const CHECKPOINT_EXTENSIONS: &[&str] = &[
    "pt",
    "pth",
    "bin",
    "ckpt",
    "pkl",
    "pickle",
    "safetensors",
    "tar",
    "pt2",
    "model",
];

/// Legacy magic number 0x1950a86a20f9469cfc6c as LONG1 bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// What the scan of one file (or one nested payload) accumulates.
pub(crate) struct Collector<'a> {
    pub limits: &'a ReadLimits,
    pub depth: usize,
    pub pickles: Vec<PickleReport>,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
    /// Why the file could not be read completely.
    pub errors: Vec<String>,
    pub code: Vec<String>,
    pub shards: Vec<String>,
    /// Decompressed bytes read so far, against a budget (zip bombs); shared with nested payloads.
    pub inflated: u64,
    /// Bytes of embedded payloads that may still be scanned for this file (see
    /// `analyze::NESTED_WORK_FACTOR`); shared with nested payloads.
    pub nested_budget: u64,
}

impl<'a> Collector<'a> {
    fn new(limits: &'a ReadLimits, depth: usize) -> Self {
        Collector {
            limits,
            depth,
            pickles: Vec::new(),
            findings: Vec::new(),
            notes: Vec::new(),
            errors: Vec::new(),
            code: Vec::new(),
            shards: Vec::new(),
            inflated: 0,
            nested_budget: 0,
        }
    }
    fn error(&mut self, record: &str, what: String) {
        self.findings.push(Finding {
            verdict: Verdict::Unreadable,
            record: record.to_string(),
            offset: None,
            global: None,
            message: what.clone(),
        });
        self.errors.push(if record.is_empty() {
            what
        } else {
            format!("{record}: {what}")
        });
    }
}

pub(crate) fn scan_file(path: &Path, limits: &ReadLimits, explicit: bool) -> ScanReport {
    let mut report = ScanReport {
        path: path.display().to_string(),
        format: "unknown".into(),
        verdict: Verdict::Unreadable,
        size: 0,
        error: None,
        findings: Vec::new(),
        pickles: Vec::new(),
        code: Vec::new(),
        shards: Vec::new(),
        notes: Vec::new(),
    };
    let source = match Source::open(path) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let bytes = source.bytes();
    report.size = bytes.len() as u64;
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let looks_like = explicit
        || CHECKPOINT_EXTENSIONS.contains(&ext.as_str())
        || ext == "json" && path.to_string_lossy().ends_with(".index.json");
    let mut col = Collector::new(limits, 0);
    let format = scan_bytes(&mut col, bytes, "", Some(path), looks_like);
    finish(&mut report, col, format, looks_like);
    report
}

/// Judges the collected pickles into the report.
fn finish(report: &mut ScanReport, col: Collector, format: Option<&'static str>, looks_like: bool) {
    report.pickles = col.pickles;
    report.code = col.code;
    report.shards = col.shards;
    report.notes = col.notes;
    let mut findings = col.findings;
    findings.sort_by_key(|f| std::cmp::Reverse(f.verdict));
    report.findings = findings;
    let worst = report
        .findings
        .iter()
        .map(|f| f.verdict)
        .chain(report.pickles.iter().map(|p| p.verdict))
        .max();
    match format {
        None => {
            report.format = "unknown".into();
            report.verdict = if looks_like {
                Verdict::Unreadable
            } else {
                Verdict::NotCheckpoint
            };
            report.error = Some(col.errors.first().cloned().unwrap_or_else(|| "not a checkpoint".into()));
            if report.verdict == Verdict::NotCheckpoint {
                report.findings.clear();
            }
        }
        Some(f) => {
            report.format = f.into();
            let worst = worst.unwrap_or(Verdict::Safe).max(Verdict::Safe);
            report.verdict = if worst == Verdict::Dangerous {
                Verdict::Dangerous
            } else if !col.errors.is_empty() {
                Verdict::Unreadable
            } else {
                worst
            };
            if !col.errors.is_empty() {
                report.error = Some(col.errors.join("; "));
            }
        }
    }
}

/// Scans bytes embedded in a pickle (the argument of `_load_from_bytes`), as a file of its own.
pub(crate) fn scan_nested(col: &mut Collector, label: &str, bytes: &[u8]) {
    if col.depth >= MAX_NESTING {
        col.findings.push(Finding {
            verdict: Verdict::Dangerous,
            record: label.to_string(),
            offset: None,
            global: None,
            message: format!("payloads nested more than {MAX_NESTING} levels deep"),
        });
        return;
    }
    let mut inner = Collector::new(col.limits, col.depth + 1);
    // One budget for the whole file, however deep the payloads nest.
    inner.inflated = col.inflated;
    inner.nested_budget = col.nested_budget;
    let format = scan_bytes(&mut inner, bytes, label, None, true);
    col.inflated = inner.inflated;
    col.nested_budget = inner.nested_budget;
    if format.is_none() {
        inner.error(
            label,
            "embedded bytes are not a checkpoint or pickle ckpt can read".into(),
        );
    }
    col.pickles.extend(inner.pickles);
    col.findings.extend(inner.findings);
    col.errors.extend(inner.errors);
    col.notes
        .extend(inner.notes.into_iter().map(|n| format!("{label}: {n}")));
}

fn join(prefix: &str, record: &str) -> String {
    if prefix.is_empty() {
        record.to_string()
    } else {
        format!("{prefix} -> {record}")
    }
}

/// Detects the format and scans every pickle in it. Returns the format, or None when the bytes
/// are nothing ckpt recognises (errors explain why).
/// `expected`: the bytes are supposed to be a checkpoint (named explicitly, a checkpoint
/// extension, embedded in a pickle), so a pickle ckpt cannot read is an error, not a README.
fn scan_bytes(
    col: &mut Collector,
    bytes: &[u8],
    prefix: &str,
    path: Option<&Path>,
    expected: bool,
) -> Option<&'static str> {
    if bytes.is_empty() {
        col.errors.push("the file is empty".into());
        return None;
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return scan_zip(col, bytes, prefix);
    }
    if tar::is_tar(bytes) {
        let before = col.pickles.len();
        let format = scan_tar(col, bytes, prefix);
        // If tarfile rejects a later header, torch unpickles the file instead: scan that too.
        scan_pickle_stream(col, bytes, prefix, false);
        if format.is_none() && col.pickles.len() == before {
            return None;
        }
        return Some(format.unwrap_or("pickle"));
    }
    if bytes.len() >= 14 && bytes[..4] == [0x80, 0x02, 0x8a, 0x0a] && bytes[4..14] == LEGACY_MAGIC {
        scan_legacy(col, bytes, prefix);
        return Some("pth-legacy");
    }
    if crate::read::safetensors::looks_like(bytes) {
        return match safetensors::SafeTensors::read_metadata(bytes) {
            Ok((_, meta)) => {
                col.notes
                    .push(format!("{} tensors; safetensors holds no code", meta.tensors().len()));
                Some("safetensors")
            }
            Err(e) => {
                col.error(&join(prefix, "header"), format!("invalid safetensors file: {e}"));
                Some("safetensors")
            }
        };
    }
    if bytes.first() == Some(&b'{') {
        if let Some(f) = scan_index(col, bytes, path) {
            return Some(f);
        }
    }
    let before = col.pickles.len();
    // A pickle: PROTO 2+ starts it; protocol 0/1 pickles start with any opcode, so text that
    // walks as opcodes to a STOP is taken for one when it names globals or was expected, and so
    // is an expected file that names globals before bytes the walk cannot follow (CPython has
    // run those calls by then).
    let walk = ops::scan(bytes);
    let names = !walk.globals.is_empty();
    let required = bytes[0] == 0x80 || (walk.end.is_some() && (expected || names)) || (expected && names);
    scan_pickle_stream(col, bytes, prefix, required);
    if col.pickles.len() > before {
        return Some("pickle");
    }
    if !required {
        col.errors.push(describe_unknown(bytes));
    }
    None
}

fn describe_unknown(bytes: &[u8]) -> String {
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "not a checkpoint: neither a zip, tar, legacy torch file, safetensors, index json nor pickle (first bytes {})",
        head.join(" ")
    )
}

/// Pickles one after another from byte 0 (what `pickle.load` called repeatedly reads). The first
/// must parse when `required`; later ones are followed while they parse.
fn scan_pickle_stream(col: &mut Collector, bytes: &[u8], prefix: &str, required: bool) {
    let mut pos = 0usize;
    let mut n = 0usize;
    while pos < bytes.len() {
        n += 1;
        let record = join(prefix, &format!("pickle {n} (byte {pos})"));
        let rest = &bytes[pos..];
        let Some(p) = scan_pickle(col, &record, rest, Some(pos as u64), false, required && n == 1) else {
            if n > 1 {
                col.notes.push(format!(
                    "{} bytes after pickle {} are not a pickle (a loader reads only the first)",
                    rest.len(),
                    n - 1
                ));
            }
            break;
        };
        if p.end == 0 {
            break;
        }
        pos += p.end;
        if n >= 1 << 16 {
            col.notes.push("stopped after 65536 concatenated pickles".into());
            break;
        }
    }
}

/// The legacy format: magic, protocol version, sys_info, object, storage keys; raw storage data
/// follows and is never unpickled.
fn scan_legacy(col: &mut Collector, bytes: &[u8], prefix: &str) {
    let mut pos = 0usize;
    for name in ["magic number", "protocol version", "sys_info", "object", "storage keys"] {
        let rest = bytes.get(pos..).unwrap_or_default();
        match scan_pickle(col, &join(prefix, name), rest, Some(pos as u64), false, true) {
            Some(p) => pos += p.end,
            None => return,
        }
    }
    let tail = bytes.len().saturating_sub(pos);
    col.notes.push(format!(
        "{tail} bytes of storage data follow the pickles (never unpickled)"
    ));
}

/// Every member that is a pickle: `*.pkl` (and TorchScript's `*.debug_pkl`) wherever it is, and
/// members of other names that parse as pickles. TorchScript `code/` files are listed.
fn scan_zip(col: &mut Collector, bytes: &[u8], prefix: &str) -> Option<&'static str> {
    let mut archive = match ZipArchive::new(Cursor::new(bytes)) {
        Ok(a) => a,
        Err(e) => {
            col.error(&join(prefix, "zip directory"), format!("damaged zip archive: {e}"));
            return Some("zip");
        }
    };
    if archive.len() > col.limits.max_zip_entries {
        col.error(
            &join(prefix, "zip directory"),
            format!(
                "{} entries, more than the limit of {}",
                archive.len(),
                col.limits.max_zip_entries
            ),
        );
        return Some("zip");
    }
    struct Entry {
        index: usize,
        name: String,
        stored: bool,
        encrypted: bool,
        compression: CompressionMethod,
        data_start: Option<u64>,
        size: u64,
        compressed: u64,
    }
    let mut entries = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        match archive.by_index_raw(index) {
            Ok(f) => entries.push(Entry {
                index,
                name: String::from_utf8_lossy(f.name_raw()).into_owned(),
                stored: f.compression() == CompressionMethod::Stored,
                encrypted: f.encrypted(),
                compression: f.compression(),
                data_start: f.data_start(),
                size: f.size(),
                compressed: f.compressed_size(),
            }),
            Err(e) => {
                col.error(
                    &join(prefix, &format!("zip entry {index}")),
                    format!("damaged zip entry: {e}"),
                );
            }
        }
    }
    // torch takes the archive's prefix from its first record.
    let root = entries
        .first()
        .and_then(|e| e.name.split_once('/'))
        .map(|(p, _)| p.to_string());
    let has = |rel: &str| {
        root.as_ref()
            .is_some_and(|r| entries.iter().any(|e| e.name == format!("{r}/{rel}")))
    };
    let code_dir = root.as_ref().map(|r| format!("{r}/code/"));
    let torchscript = has("constants.pkl")
        || code_dir
            .as_ref()
            .is_some_and(|c| entries.iter().any(|e| e.name.starts_with(c.as_str())));
    let format = if torchscript {
        "torchscript"
    } else if has("data.pkl") {
        "pth-zip"
    } else {
        "zip"
    };
    // The zip crate keeps one entry per name. Loaders disagree on which copy of a repeated name
    // they read, so every copy is scanned (stored ones straight from the file), and the archive
    // is at least unreadable: it cannot be cleared.
    let raw = crate::read::pth_zip::raw_central_directory(bytes).unwrap_or_default();
    let mut dups: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    {
        let mut seen = std::collections::HashSet::new();
        for r in &raw {
            if !seen.insert(r.name.as_str()) {
                dups.insert(r.name.as_str());
            }
        }
    }
    for name in &dups {
        let record = join(prefix, name);
        let copies: Vec<_> = raw.iter().filter(|r| r.name == *name).collect();
        col.error(
            &record,
            format!(
                "the archive holds this name {} times: loaders disagree on which copy they read",
                copies.len()
            ),
        );
        for (k, r) in copies.iter().enumerate() {
            let label = format!("{record} (copy {})", k + 1);
            let data = r
                .data_start(bytes)
                .and_then(|s| usize::try_from(s).ok())
                .and_then(|s| bytes.get(s..s.checked_add(usize::try_from(r.compressed_size).ok()?)?));
            match data {
                Some(d) if r.method == 0 && r.flags & 1 == 0 => {
                    let named = name.to_ascii_lowercase().ends_with("pkl");
                    scan_pickle(col, &label, d, None, torchscript, named);
                }
                _ => col.error(
                    &label,
                    "a compressed or encrypted copy of a repeated name cannot be checked".into(),
                ),
            }
        }
    }
    let storage_dir = root.as_ref().map(|r| format!("{r}/data/"));
    for e in &entries {
        let lower = e.name.to_ascii_lowercase();
        if code_dir.as_ref().is_some_and(|c| e.name.starts_with(c.as_str())) && lower.ends_with(".py") {
            col.code.push(e.name.clone());
            continue;
        }
        let named_pickle = lower.ends_with("pkl") || lower.ends_with(".pickle");
        let is_storage = storage_dir.as_ref().is_some_and(|d| e.name.starts_with(d.as_str())) && !named_pickle;
        if e.name.ends_with('/') || is_storage || dups.contains(e.name.as_str()) {
            continue;
        }
        let record = join(prefix, &e.name);
        if e.encrypted {
            if named_pickle {
                col.error(&record, "the member is encrypted: it cannot be checked".into());
            }
            continue;
        }
        // Stored members are read straight from the file; others are inflated within budget.
        let data: std::borrow::Cow<[u8]> = match (e.stored, e.data_start) {
            (true, Some(start)) => {
                match usize::try_from(start)
                    .ok()
                    .and_then(|s| bytes.get(s..s.checked_add(usize::try_from(e.compressed).ok()?)?))
                {
                    Some(d) => d.into(),
                    None => {
                        col.error(&record, "member data runs past the end of the file".into());
                        continue;
                    }
                }
            }
            _ => {
                if !named_pickle && e.size > 1 << 20 {
                    continue; // too big to be sniffed; not something torch unpickles
                }
                let max = col.limits.max_pickle_bytes;
                let mut budget = max.saturating_mul(4).saturating_sub(col.inflated);
                if col.depth > 0 {
                    // Inside an embedded payload, inflation also spends the file's nested budget.
                    budget = budget.min(col.nested_budget);
                }
                if e.size > max || e.size > budget {
                    col.error(
                        &record,
                        format!(
                            "{} bytes once decompressed, more than the limit of {}",
                            e.size,
                            max.min(budget)
                        ),
                    );
                    continue;
                }
                match read_member(&mut archive, e.index, max.min(budget)) {
                    Ok(d) => {
                        col.inflated += d.len() as u64;
                        d.into()
                    }
                    Err(why) => {
                        if named_pickle {
                            col.error(&record, format!("cannot decompress ({:?}): {why}", e.compression));
                        }
                        continue;
                    }
                }
            }
        };
        let offset = if e.stored { e.data_start } else { None };
        if named_pickle {
            scan_pickle(col, &record, &data, offset, torchscript, true);
        } else if data.first() == Some(&0x80) && data.get(1).is_some_and(|&p| p <= 5) {
            // Sniffed: reported only if it is a pickle.
            let before = col.pickles.len();
            scan_pickle(col, &record, &data, offset, torchscript, false);
            if col.pickles.len() > before {
                col.notes.push(format!("'{}' is a pickle under another name", e.name));
            }
        }
    }
    if let Some(c) = &code_dir {
        if !col.code.is_empty() {
            col.findings.push(Finding {
                verdict: Verdict::NeedsCode,
                record: join(prefix, c.trim_end_matches('/')),
                offset: None,
                global: None,
                message: format!(
                    "TorchScript code ({} files): torch.jit.load compiles and runs it (__setstate__ during the load, forward later); it is not checked here",
                    col.code.len()
                ),
            });
        }
    }
    if torchscript && col.code.is_empty() {
        col.findings.push(Finding {
            verdict: Verdict::NeedsCode,
            record: join(prefix, "constants.pkl"),
            offset: None,
            global: None,
            message: "a TorchScript archive: torch.load hands it to torch.jit.load, which runs its compiled code"
                .into(),
        });
    }
    if format == "zip" && col.pickles.is_empty() && col.errors.is_empty() {
        col.errors
            .push("a zip archive without pickles: not a checkpoint".into());
        return None;
    }
    Some(format)
}

fn read_member(archive: &mut ZipArchive<Cursor<&[u8]>>, index: usize, max: u64) -> Result<Vec<u8>, String> {
    let mut f = archive.by_index(index).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    f.by_ref()
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() as u64 > max {
        return Err(format!("more than {max} bytes once decompressed"));
    }
    Ok(out)
}

/// The tar format: `storages`, `tensors` and `pickle` are unpickled by torch; other members are
/// scanned when they parse as pickles.
fn scan_tar(col: &mut Collector, bytes: &[u8], prefix: &str) -> Option<&'static str> {
    let members = match tar::members(bytes) {
        Ok(m) => m,
        Err(e) => {
            col.notes.push(format!(
                "not a readable tar archive ({e}); torch would unpickle the file instead"
            ));
            return None;
        }
    };
    let torch_layout = ["storages", "tensors", "pickle"]
        .iter()
        .all(|n| members.iter().any(|m| m.name == *n));
    for m in &members {
        let data = &bytes[m.offset..m.offset + m.size];
        let record = join(prefix, &format!("tar:{}", m.name));
        match m.name.as_str() {
            "storages" => tar_storages(col, &record, data, m.offset),
            "tensors" => tar_tensors(col, &record, data, m.offset),
            "pickle" | "sys_info" => {
                scan_pickle(col, &record, data, Some(m.offset as u64), false, true);
            }
            _ => {
                if data.first() == Some(&0x80) {
                    scan_pickle(col, &record, data, Some(m.offset as u64), false, false);
                }
            }
        }
    }
    if !torch_layout {
        col.notes
            .push("a tar archive without torch's storages/tensors/pickle members".into());
        if col.pickles.is_empty() {
            return None;
        }
    }
    Some("pth-legacy-tar")
}

fn int_root(p: &crate::pickle::Pickle) -> Option<u64> {
    match p.root {
        Value::Int(i) => u64::try_from(i).ok(),
        _ => None,
    }
}

/// `storages`: count, then (key, location, storage_type) + int64 count + bytes each, then views.
fn tar_storages(col: &mut Collector, record: &str, data: &[u8], base: usize) {
    let mut pos = 0usize;
    let Some(count) = scan_pickle(col, &format!("{record} count"), data, Some(base as u64), false, true) else {
        return;
    };
    pos += count.end;
    let Some(n) = int_root(&count) else {
        col.error(record, "the storage count is not a non-negative int".into());
        return;
    };
    for i in 0..n {
        let rest = data.get(pos..).unwrap_or_default();
        let Some(p) = scan_pickle(
            col,
            &format!("{record} #{i}"),
            rest,
            Some((base + pos) as u64),
            false,
            true,
        ) else {
            return;
        };
        pos += p.end;
        // (key, location, storage_type): the element size comes from the storage type's name.
        let esize = p
            .heap
            .tuple(&p.root)
            .and_then(|t| t.get(2))
            .and_then(|t| p.heap.global(t))
            .and_then(|g| DType::from_storage_class(&g.name))
            .map(|d| d.size() as u64);
        let Some(esize) = esize else {
            col.error(
                record,
                format!("storage #{i} has no known storage type: the data after it cannot be located"),
            );
            return;
        };
        let len = data
            .get(pos..pos + 8)
            .map(|h| u64::from_le_bytes(h.try_into().unwrap_or([0; 8])))
            .and_then(|numel| numel.checked_mul(esize))
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| pos.checked_add(8)?.checked_add(n))
            .filter(|&end| end <= data.len());
        match len {
            Some(end) => pos = end,
            None => {
                col.error(record, format!("storage #{i} runs past the end of the member"));
                return;
            }
        }
    }
    let rest = data.get(pos..).unwrap_or_default();
    scan_pickle(
        col,
        &format!("{record} views"),
        rest,
        Some((base + pos) as u64),
        false,
        true,
    );
}

/// `tensors`: count, then (key, storage_id, type) + ndim, sizes, strides, offset each.
fn tar_tensors(col: &mut Collector, record: &str, data: &[u8], base: usize) {
    let mut pos = 0usize;
    let Some(count) = scan_pickle(col, &format!("{record} count"), data, Some(base as u64), false, true) else {
        return;
    };
    pos += count.end;
    let Some(n) = int_root(&count) else {
        col.error(record, "the tensor count is not a non-negative int".into());
        return;
    };
    for i in 0..n {
        let rest = data.get(pos..).unwrap_or_default();
        let Some(p) = scan_pickle(
            col,
            &format!("{record} #{i}"),
            rest,
            Some((base + pos) as u64),
            false,
            true,
        ) else {
            return;
        };
        pos += p.end;
        let ndim = data
            .get(pos..pos + 4)
            .map(|h| i32::from_le_bytes(h.try_into().unwrap_or([0; 4])));
        let end = ndim
            .and_then(|d| u64::try_from(d).ok())
            .and_then(|d| d.checked_mul(16)?.checked_add(16))
            .and_then(|n| usize::try_from(n).ok())
            .and_then(|n| pos.checked_add(n))
            .filter(|&e| e <= data.len());
        match end {
            Some(e) => pos = e,
            None => {
                col.error(record, format!("tensor #{i} runs past the end of the member"));
                return;
            }
        }
    }
}

/// A sharded checkpoint's index: JSON, no code. Its shards are listed so `scan_paths` can scan
/// them. Returns None for JSON that is not an index.
fn scan_index(col: &mut Collector, bytes: &[u8], path: Option<&Path>) -> Option<&'static str> {
    if bytes.len() as u64 > col.limits.max_index_bytes {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let map = json.get("weight_map")?.as_object()?;
    let mut shards: Vec<String> = Vec::new();
    for v in map.values() {
        match v.as_str() {
            Some(s) if !shards.iter().any(|x| x == s) => shards.push(s.to_string()),
            Some(_) => {}
            None => {
                col.error("weight_map", "a shard name is not a string".into());
            }
        }
    }
    let dir = path.and_then(Path::parent);
    for s in &shards {
        let plain = Path::new(s)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            col.findings.push(Finding {
                verdict: Verdict::Dangerous,
                record: "weight_map".into(),
                offset: None,
                global: None,
                message: format!("shard '{s}' is not a plain relative path: the index points outside its directory"),
            });
        } else if let Some(d) = dir {
            if !d.join(s).is_file() {
                col.notes.push(format!("shard '{s}' is missing"));
            }
        }
    }
    col.shards = shards
        .into_iter()
        .filter(|s| {
            Path::new(s)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
        })
        .collect();
    col.notes.push(format!(
        "an index of {} tensors in {} shards; JSON holds no code (scan the shards)",
        map.len(),
        col.shards.len()
    ));
    Some("index-json")
}
