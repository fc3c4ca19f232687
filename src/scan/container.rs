//! Finding every pickle a loader could unpickle, the way `torch.load` decides: a file starting
//! with a zip local header is a zip; otherwise a valid tar header makes it the torch < 0.4 tar
//! format; otherwise it is unpickled from byte 0 (the legacy format's magic number is just the
//! first pickle). Where two readings are possible (a tar header that also parses as a pickle)
//! both are scanned.

use std::path::Path;

use crate::dtype::DType;
use crate::pickle::Value;
use crate::read::ReadLimits;
use crate::source::Source;

use super::analyze::scan_pickle;
use super::zip::scan_zip;
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
    /// Decompressed bytes read so far, against a budget (zip bombs).
    pub inflated: u64,
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
        }
    }
    pub(crate) fn error(&mut self, record: &str, what: String) {
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
    let format = scan_bytes(&mut inner, bytes, label, None, true);
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

pub(crate) fn join(prefix: &str, record: &str) -> String {
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
    // walks as opcodes to a STOP is taken for one when it names globals or was expected.
    let walk = ops::scan(bytes);
    let required = bytes[0] == 0x80 || (walk.end.is_some() && (expected || !walk.globals.is_empty()));
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
