//! Distributed checkpoints (`torch.distributed.checkpoint`): a `.distcp` data file is a run of
//! complete `torch.save` archives, one per stored item, at the (offset, length) ranges that
//! `.metadata`'s `storage_data` gives. torch reads each item with the policy its kind gets
//! (torch 2.11 and 2.15, `filesystem.py` and `default_planner.py`):
//!
//! * a tensor chunk: `torch.load(slice, map_location="cpu", weights_only=True)` in
//!   `FileSystemReader.read_data`: a global outside the allowlist, an opcode the weights-only
//!   unpickler lacks or a TorchScript archive make torch raise before anything runs. Such an
//!   item is unreadable (`dcp.load` fails), with what a full load would have run;
//! * any other item (lr, betas, epoch, any object): `torch.load(value, weights_only=False)` in
//!   `DefaultLoadPlanner.load_bytes`: judged as any full pickle load;
//! * bytes no loaded item covers: `dcp.load` never reads them, but DCP's writer leaves none, so
//!   something else put them there. They are at least unreadable, and the archives in them are
//!   judged as full pickle loads, as a reader walking the file would load them.
//!
//! A data file without a `.metadata` ckpt can read beside it cannot tell tensor items from byte
//! items: its archives are walked in sequence and each is judged as a full pickle load.

use std::path::Path;

use crate::container::zip;
use crate::read::dcp::{self as read_dcp, LoadedItem};
use crate::source::Source;

use super::collector::{join, Collector};
use super::container::{merge_part, scan_part};
use super::Verdict;

/// The format a scanned `.distcp` file reports.
const DATA_FORMAT: &str = "dcp-data";
/// End-of-directory signatures tried per archive when walking a run of archives: one that does
/// not end an archive miniz opens (the signature inside stored data) is passed over.
const MAX_END_TRIES: usize = 64;
/// Archives walked in one run before the rest is left unjudged (and the file unreadable).
const MAX_WALKED: usize = 1 << 16;

/// After the pickle scan of a file named `.metadata`: if it is a DCP `.metadata` that ckpt
/// reads, the format says so and its data files become shards, which `scan_paths` scans when
/// the `.metadata` was named explicitly.
pub(crate) fn recognise_metadata(col: &mut Collector, format: Option<&'static str>, path: &Path) -> Option<&'static str> {
    if format != Some("pickle") || path.file_name() != Some(read_dcp::METADATA.as_ref()) {
        return format;
    }
    let Ok(items) = read_dcp::loaded_items(path, col.limits) else {
        return format;
    };
    let mut files: Vec<String> = items.iter().map(|i| i.info.relative_path.clone()).collect();
    files.sort();
    files.dedup();
    for file in &files {
        if crate::container::index::shard_path(Path::new(""), file).is_none() {
            col.error(
                "storage_data",
                format!("data file '{file}' is not a plain file name: torch would read a file outside the checkpoint"),
            );
        }
    }
    col.notes.push(format!(
        "a torch.distributed.checkpoint .metadata naming {} stored items in {} data files (their archives are judged where the data files are scanned)",
        items.len(),
        files.len()
    ));
    files.retain(|f| crate::container::index::shard_path(Path::new(""), f).is_some());
    col.shards.extend(files);
    Some("dcp-metadata")
}

/// Scans a `.distcp` file: each item the `.metadata` beside it stores here with the policy torch
/// loads it with, then the bytes no item covers; without a readable `.metadata`, every archive
/// in sequence as a full pickle load.
///
/// Each archive's pages leave the resident set once it is judged ([`Source::release`]), so a
/// data file of thousands of chunks does not end up resident whole.
pub(crate) fn scan_data_file(col: &mut Collector, source: &Source, path: &Path) -> Option<&'static str> {
    let bytes = source.bytes();
    let metadata = path.parent().unwrap_or(Path::new("")).join(read_dcp::METADATA);
    let items = match read_dcp::loaded_items(&metadata, col.limits) {
        Ok(items) => items,
        Err(e) => {
            col.notes.push(format!(
                "no .metadata ckpt can read beside it ({e}): which archives are tensors is unknown, so each archive, walked in sequence, is judged as a full pickle load (weights_only=False)"
            ));
            walk_archives(col, source, 0..bytes.len(), "");
            return Some(DATA_FORMAT);
        }
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mine: Vec<&LoadedItem> = items.iter().filter(|i| i.info.relative_path == name).collect();
    let (tensors, others) = (mine.iter().filter(|i| i.is_tensor()).count(), mine.iter().filter(|i| !i.is_tensor()).count());
    col.notes.push(format!(
        "{tensors} tensor chunks (torch loads them with weights_only=True) and {others} other items (weights_only=False) stored here, per .metadata"
    ));
    let mut covered = Vec::new();
    for item in mine {
        judge_item(col, bytes, item);
        source.release(item.info.offset, item.info.length);
        let start = item.info.offset.min(bytes.len() as u64);
        covered.push((start, item.info.offset.saturating_add(item.info.length).min(bytes.len() as u64)));
    }
    judge_uncovered(col, source, covered);
    Some(DATA_FORMAT)
}

/// Judges one item's archive with the policy torch loads it with.
fn judge_item(col: &mut Collector, bytes: &[u8], item: &LoadedItem) {
    let label = item.describe();
    let info = &item.info;
    let end = info.offset.checked_add(info.length).filter(|&e| e <= bytes.len() as u64);
    let Some(end) = end else {
        col.error(
            &label,
            format!("lies past the end of the {}-byte file: torch cannot load it", bytes.len()),
        );
        return;
    };
    if !info.transforms.is_empty() {
        col.error(
            &label,
            format!(
                "stored through transforms {:?} (compression or an extension), which ckpt does not undo: it cannot be checked",
                info.transforms
            ),
        );
        return;
    }
    let before = col.pickles.len();
    let (mut inner, format) = scan_part(col, &bytes[info.offset as usize..end as usize], &label);
    if format.is_none() {
        inner.error(&label, "not a torch.save archive or pickle ckpt can read: torch cannot load it".into());
    }
    if item.is_tensor() {
        refused_by_weights_only(&mut inner, &label);
    }
    merge_part(col, inner, &label);
    shift_offsets(col, before, info.offset);
}

/// torch loads a tensor chunk with `torch.load(weights_only=True)`, which raises before anything
/// runs on a global outside its allowlist, an opcode it lacks, or a TorchScript archive: what a
/// full load would have done is kept in each finding, at verdict unreadable.
fn refused_by_weights_only(inner: &mut Collector, label: &str) {
    let mut reasons: Vec<String> = Vec::new();
    for p in &mut inner.pickles {
        if matches!(p.verdict, Verdict::NeedsCode | Verdict::Dangerous) {
            let names = p.globals.iter().filter(|g| g.verdict > Verdict::Safe);
            reasons.extend(names.map(|g| format!("global {}", g.name)));
            p.verdict = Verdict::Unreadable;
        }
        if !p.opcodes_outside_weights_only.is_empty() {
            reasons.extend(p.opcodes_outside_weights_only.iter().map(|o| format!("opcode {o}")));
            p.verdict = p.verdict.max(Verdict::Unreadable);
        }
    }
    for f in &mut inner.findings {
        if matches!(f.verdict, Verdict::NeedsCode | Verdict::Dangerous) {
            f.message = format!(
                "a full load would be {}: {}; torch's weights_only load refuses it first",
                f.verdict, f.message
            );
            f.verdict = Verdict::Unreadable;
            if reasons.is_empty() {
                reasons.push(f.message.clone());
            }
        }
    }
    if !reasons.is_empty() {
        reasons.sort();
        reasons.dedup();
        inner.error(
            label,
            format!(
                "torch loads tensor chunks with torch.load(weights_only=True), which refuses this archive ({}): dcp.load raises before anything in it runs",
                reasons.join(", ")
            ),
        );
    }
}

/// The bytes of the file that no loaded item covers, each run judged (see the module docs).
fn judge_uncovered(col: &mut Collector, source: &Source, mut covered: Vec<(u64, u64)>) {
    let bytes = source.bytes();
    covered.sort_unstable();
    let mut gaps = Vec::new();
    let mut pos = 0u64;
    for (start, end) in covered {
        if start > pos {
            gaps.push((pos, start));
        }
        pos = pos.max(end);
    }
    if pos < bytes.len() as u64 {
        gaps.push((pos, bytes.len() as u64));
    }
    for (start, end) in gaps {
        let label = format!("uncovered bytes {start}..{end}");
        col.error(
            &label,
            format!(
                "{} bytes that no item of .metadata covers: dcp.load never reads them, but DCP's writer leaves no such bytes, so something else put them there; the archives in them are judged as full pickle loads (weights_only=False)",
                end - start
            ),
        );
        walk_archives(col, source, start as usize..end as usize, "uncovered");
    }
}

/// Judges a run of concatenated `torch.save` archives (the file's bytes in `range`), each as a
/// full pickle load; what follows the last archive ckpt can delimit is judged as one piece.
fn walk_archives(col: &mut Collector, source: &Source, range: std::ops::Range<usize>, prefix: &str) {
    let base = range.start as u64;
    let bytes = &source.bytes()[range];
    let mut pos = 0usize;
    let mut archives = 0usize;
    while pos < bytes.len() {
        if archives == MAX_WALKED {
            col.error(
                &join(prefix, &format!("bytes {}..", base + pos as u64)),
                format!("more than {MAX_WALKED} archives in a run: the rest is not judged"),
            );
            break;
        }
        let rest = &bytes[pos..];
        let end = archive_end(rest).unwrap_or(rest.len());
        let start = base + pos as u64;
        let label = join(prefix, &format!("archive at bytes {start}..{}", start + end as u64));
        let before = col.pickles.len();
        let (mut inner, format) = scan_part(col, &rest[..end], &label);
        if format.is_none() {
            inner.error(&label, "not a torch.save archive or pickle ckpt can read".into());
        }
        merge_part(col, inner, &label);
        shift_offsets(col, before, start);
        source.release(start, end as u64);
        pos += end;
        archives += 1;
    }
    col.notes.push(format!(
        "{}{archives} pieces walked in sequence, each judged as a full pickle load",
        if prefix.is_empty() { String::new() } else { format!("{prefix}: ") }
    ));
}

/// Where the archive at the start of `bytes` ends: after the first end-of-central-directory
/// record (with its comment) up to which miniz's reading opens an archive. None when `bytes`
/// does not start with a zip local header or no such end is found.
fn archive_end(bytes: &[u8]) -> Option<usize> {
    const END: &[u8] = b"PK\x05\x06";
    if !zip::is_zip(bytes) {
        return None;
    }
    let mut from = 0;
    for _ in 0..MAX_END_TRIES {
        let at = from + bytes.get(from..)?.windows(END.len()).position(|w| w == END)?;
        let comment = bytes.get(at + 20..at + 22).map(|c| u16::from_le_bytes([c[0], c[1]]) as usize)?;
        let end = at + 22 + comment;
        if end <= bytes.len() && zip::read_directory(&bytes[..end]).is_ok() {
            return Some(end);
        }
        from = at + 1;
    }
    None
}

/// Pickles found in a part of the file report offsets inside the part: make them the file's.
fn shift_offsets(col: &mut Collector, from: usize, base: u64) {
    for p in col.pickles.iter_mut().skip(from) {
        p.offset = p.offset.map(|o| o + base);
    }
}
