//! Finding every pickle a loader could unpickle, the way `torch.load` decides: a file starting
//! with a zip local header is a zip; otherwise, if Python's tarfile opens it, the torch < 0.4 tar
//! format; otherwise it is unpickled from byte 0 (the legacy format's magic number is just the
//! first pickle). Other loaders read the same bytes as safetensors or an index. Every reading
//! that accepts the bytes is scanned (a tar header that also parses as a pickle, a safetensors
//! file whose first bytes are a pickle ...), so a polyglot is judged whichever way it is loaded.

use std::path::Path;

use crate::container::index::{self as container_index, IndexError};
use crate::read::{tarfile, ReadLimits};
use crate::source::Source;

use super::analyze::scan_pickle;
use super::collector::{join, Collector};
use super::zip::scan_zip;
use super::{dcp, ops, tar, Finding, ScanReport, Verdict};

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
    "distcp",
];

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
    let mut col = Collector::new(limits, 0, scan_nested);
    let format = if ext == "distcp" {
        dcp::scan_data_file(&mut col, &source, path)
    } else {
        let format = scan_bytes(&mut col, bytes, "", Some(path), looks_like);
        dcp::recognise_metadata(&mut col, format, path)
    };
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

/// Scans `bytes`, a part of the file (an archive inside a DCP data file) that a loader reads as
/// a file of its own, into a collector of its own that shares the file's budgets: the caller
/// judges what it found and hands it back with [`merge_part`].
pub(crate) fn scan_part<'a>(col: &mut Collector<'a>, bytes: &[u8], label: &str) -> (Collector<'a>, Option<&'static str>) {
    let mut inner = Collector::new(col.limits, col.depth, col.scan_embedded);
    inner.inflated = col.inflated;
    inner.nested_budget = col.nested_budget;
    let format = scan_bytes(&mut inner, bytes, label, None, true);
    (inner, format)
}

/// Takes back what [`scan_part`] (or a nested payload's scan) found; notes are prefixed with
/// `note_prefix`.
pub(crate) fn merge_part(col: &mut Collector, inner: Collector, note_prefix: &str) {
    col.inflated = inner.inflated;
    col.nested_budget = inner.nested_budget;
    col.pickles.extend(inner.pickles);
    col.findings.extend(inner.findings);
    col.errors.extend(inner.errors);
    col.notes.extend(inner.notes.into_iter().map(|n| match note_prefix {
        "" => n,
        prefix => format!("{prefix}: {n}"),
    }));
}

/// Scans bytes embedded in a pickle (the argument of `_load_from_bytes`), as a file of its own;
/// every [`Collector`] made here carries it as [`Collector::scan_embedded`].
fn scan_nested(col: &mut Collector, label: &str, bytes: &[u8]) {
    if col.depth >= MAX_NESTING {
        col.findings.push(Finding {
            verdict: Verdict::Dangerous,
            record: label.to_string(),
            offset: None,
            global: None,
            arguments: None,
            message: format!("payloads nested more than {MAX_NESTING} levels deep"),
        });
        return;
    }
    let mut inner = Collector::new(col.limits, col.depth + 1, scan_nested);
    // One budget for the whole file, however deep the payloads nest.
    inner.inflated = col.inflated;
    inner.nested_budget = col.nested_budget;
    let format = scan_bytes(&mut inner, bytes, label, None, true);
    if format.is_none() {
        inner.error(
            label,
            "embedded bytes are not a checkpoint or pickle ckpt can read".into(),
        );
    }
    merge_part(col, inner, label);
}

/// Detects the format and scans every pickle in it. Returns the format, or None when the bytes
/// are nothing ckpt recognises (errors explain why).
/// `expected`: the bytes are supposed to be a checkpoint (named explicitly, a checkpoint
/// extension, embedded in a pickle), so a pickle ckpt cannot read is an error, not a README.
///
/// A zip is only a zip (torch checks its magic first). Otherwise every reading is scanned that
/// accepts the bytes: tarfile's (torch's first choice), the pickles from byte 0 (torch's legacy
/// path, and `pickle.load`), safetensors, an index. A file two of them accept is judged under
/// each, whichever a loader would take.
pub(crate) fn scan_bytes(
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
    let mut formats: Vec<&'static str> = Vec::new();
    match tarfile::open(bytes) {
        Ok(tarfile::Open::Tar(members)) => formats.extend(tar::scan_tar(col, bytes, prefix, &members)),
        Ok(tarfile::Open::NotTar(_)) => {}
        Err(why) => {
            col.error(
                &join(prefix, "tar"),
                format!("tarfile reads this archive in a way ckpt does not follow: {why}"),
            );
            formats.push("pth-legacy-tar");
        }
    }
    let safetensors = crate::read::safetensors::looks_like(bytes)
        .then(|| crate::read::safetensors::parse_header(bytes, &col.limits.safetensors_header));
    let index = if bytes.first() == Some(&b'{') {
        scan_index(col, bytes, path)
    } else {
        None
    };
    let others = !formats.is_empty() || matches!(safetensors, Some(Ok(_))) || index.is_some();
    formats.extend(scan_sequence(col, bytes, prefix, expected, others));
    match safetensors {
        Some(Ok((_, meta))) => {
            col.notes
                .push(format!("{} tensors; safetensors holds no code", meta.tensors().len()));
            formats.push("safetensors");
        }
        // An invalid header is an error only when nothing else reads the file.
        Some(Err(e)) if formats.is_empty() && index.is_none() => {
            col.error(&join(prefix, "header"), e.to_string());
            formats.push("safetensors");
        }
        _ => {}
    }
    formats.extend(index);
    if formats.len() > 1 {
        col.notes.push(format!(
            "ambiguous: the bytes are read as {} by different loaders; every reading was scanned",
            formats.join(" and as ")
        ));
    }
    if formats.is_empty() && col.errors.is_empty() {
        col.errors.push(describe_unknown(bytes));
    }
    formats.first().copied()
}

fn describe_unknown(bytes: &[u8]) -> String {
    let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "not a checkpoint: neither a zip, tar, legacy torch file, safetensors, index json nor pickle (first bytes {})",
        head.join(" ")
    )
}

/// The pickles from byte 0: what torch.load's legacy path unpickles (magic number, protocol
/// version, sys_info, object, storage keys, each before any check of its value) and what
/// `pickle.load` called repeatedly reads. Returns "pth-legacy" when the first pickle is the
/// literal magic number, "pickle" for other pickles, None when byte 0 starts no pickle.
/// A PROTO opcode, globals, or `expected` (without another reading) make a first pickle ckpt
/// cannot read an error; protocol 0/1 pickles start with any opcode, so text that does not
/// walk as opcodes to a STOP is not taken for one.
fn scan_sequence(
    col: &mut Collector,
    bytes: &[u8],
    prefix: &str,
    expected: bool,
    others: bool,
) -> Option<&'static str> {
    let walk = ops::scan(bytes);
    let names = !walk.globals.is_empty();
    // Protocol 0/1 pickles start with any opcode: text that walks as opcodes to a STOP is taken
    // for one, and so is an expected file that names globals before bytes the walk cannot
    // follow (CPython has run those calls by then).
    if bytes[0] != 0x80 && walk.end.is_none() && !(expected && names) {
        return None;
    }
    let required = !others && (bytes[0] == 0x80 || expected || names);
    let before = col.pickles.len();
    let Some(first) = scan_pickle(col, &join(prefix, "pickle 1 (byte 0)"), bytes, Some(0), false, required) else {
        // A pickle read up to where it failed is still judged (what ran before that point).
        return (col.pickles.len() > before).then_some("pickle");
    };
    if crate::read::legacy::is_magic(&first.root) {
        // Rename the first pickle now that its role is known.
        if let Some(p) = col.pickles.last_mut() {
            p.record = join(prefix, "magic number");
        }
        scan_legacy(col, bytes, prefix, first.end);
        return Some("pth-legacy");
    }
    scan_stream(col, bytes, prefix, first.end);
    Some("pickle")
}

/// Pickles after the first, followed while they parse: any of them may be the next thing a
/// loader unpickles (a magic number computed by code instead of written as a literal still
/// passes torch's check).
fn scan_stream(col: &mut Collector, bytes: &[u8], prefix: &str, mut pos: usize) {
    let mut n = 1usize;
    // Every pickle ends after its STOP opcode, so `pos` always moves forward.
    while pos < bytes.len() {
        n += 1;
        let record = join(prefix, &format!("pickle {n} (byte {pos})"));
        let rest = &bytes[pos..];
        let Some(p) = scan_pickle(col, &record, rest, Some(pos as u64), false, false) else {
            col.notes.push(format!(
                "{} bytes after pickle {} are not a pickle (a loader stops there)",
                rest.len(),
                n - 1
            ));
            return;
        };
        pos += p.end;
        if n >= 1 << 16 {
            col.notes.push("stopped after 65536 concatenated pickles".into());
            return;
        }
    }
}

/// The legacy format after its magic number: protocol version, sys_info, object, storage keys,
/// unpickled by torch whatever their values; raw storage data follows and is never unpickled.
/// Each must parse: one ckpt cannot read hides where the next starts.
fn scan_legacy(col: &mut Collector, bytes: &[u8], prefix: &str, mut pos: usize) {
    for name in ["protocol version", "sys_info", "object", "storage keys"] {
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

/// A sharded checkpoint's index: JSON, no code. Its shards are listed so `scan_paths` can scan
/// them. Returns None for JSON that is not an index.
fn scan_index(col: &mut Collector, bytes: &[u8], path: Option<&Path>) -> Option<&'static str> {
    if bytes.len() as u64 > col.limits.max_index_bytes {
        return None;
    }
    let index = match container_index::parse(bytes) {
        Ok(index) => index,
        Err(IndexError::BadShard(tensor)) => {
            col.error("weight_map", format!("the shard of '{tensor}' is not a file name"));
            return Some("index-json");
        }
        Err(IndexError::NotJson(_) | IndexError::NoWeightMap) => return None,
    };
    let dir = path.and_then(Path::parent);
    for s in &index.shards {
        match container_index::shard_path(dir.unwrap_or(Path::new("")), s) {
            None => col.findings.push(Finding {
                verdict: Verdict::Dangerous,
                record: "weight_map".into(),
                offset: None,
                global: None,
                arguments: None,
                message: format!("shard '{s}' is not a plain relative path: the index points outside its directory"),
            }),
            Some(p) => {
                if dir.is_some() && !p.is_file() {
                    col.notes.push(format!("shard '{s}' is missing"));
                }
                col.shards.push(s.clone());
            }
        }
    }
    col.notes.push(format!(
        "an index of {} tensors in {} shards; JSON holds no code (scan the shards)",
        index.weight_map.len(),
        index.shards.len()
    ));
    Some("index-json")
}
