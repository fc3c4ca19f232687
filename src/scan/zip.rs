//! Scanning zip archives: every record of every reading ([`crate::container::zip_readings`]) that
//! a loader could unpickle, so a file crafted to show one reader harmless records and torch
//! another is judged on both.

use std::collections::BTreeSet;

use crate::container::zip::{self, Directory};
use crate::container::zip_readings::{self, Reading, Record};

use super::analyze::scan_pickle;
use super::collector::{join, Collector};
use super::{Finding, Verdict};

/// A record to judge, with where it was found.
struct Candidate {
    record: Record,
    /// The record's label in findings: its name, and the reading when it is not torch's.
    label: String,
    encrypted: bool,
}

/// Every pickle a loader could find in the archive. Returns the format ("pth-zip",
/// "torchscript", "zip"), or None when nothing in it is a checkpoint.
pub(crate) fn scan_zip(col: &mut Collector, bytes: &[u8], prefix: &str) -> Option<&'static str> {
    let primary = match zip::read_directory(bytes) {
        Ok(dir) => Some(dir),
        Err(why) => {
            col.error(
                &join(prefix, "zip directory"),
                format!("torch.load cannot open this archive: {why}"),
            );
            None
        }
    };
    if let Some(dir) = &primary {
        if dir.entries.len() > col.limits.max_zip_entries {
            col.error(
                &join(prefix, "zip directory"),
                format!(
                    "{} entries, more than the limit of {}",
                    dir.entries.len(),
                    col.limits.max_zip_entries
                ),
            );
            return Some("zip");
        }
        if let Some(why) = crate::read::pth_zip::ambiguity(bytes, dir) {
            col.error(
                &join(prefix, "zip directory"),
                format!("{why}: every reading is judged"),
            );
        }
    }
    let readings = match &primary {
        Some(dir) => zip_readings::other_readings(bytes, dir),
        None => fallback_readings(bytes),
    };
    let candidates = candidates(bytes, primary.as_ref(), &readings, prefix);
    let names: Vec<&[u8]> = candidates.iter().map(|c| c.record.name.as_slice()).collect();
    let layout = Layout::of(primary.as_ref(), &names);
    for c in &candidates {
        judge_record(col, bytes, c, &layout);
    }
    layout.finish(col, prefix)
}

/// Without miniz's directory (torch.load fails), what other readers would still find.
fn fallback_readings(bytes: &[u8]) -> Vec<Reading> {
    zip_readings::other_readings(bytes, &Directory::empty())
}

/// torch's records first, then each other reading's records not already seen (same data).
fn candidates(bytes: &[u8], primary: Option<&Directory>, readings: &[Reading], prefix: &str) -> Vec<Candidate> {
    let mut seen: BTreeSet<(u64, u64, u64, u16)> = BTreeSet::new();
    let mut out = Vec::new();
    let mut add = |record: Record, label: String, encrypted: bool, out: &mut Vec<Candidate>| {
        if seen.insert((record.data_start, record.compressed_size, record.size, record.method)) {
            out.push(Candidate {
                record,
                label,
                encrypted,
            });
        }
    };
    if let Some(dir) = primary {
        for e in &dir.entries {
            let name = e.display_name();
            match e.data_start(bytes) {
                Some(data_start) => {
                    let record = Record {
                        name: e.name.clone(),
                        method: e.method,
                        data_start,
                        compressed_size: e.compressed_size,
                        size: e.size,
                    };
                    add(record, join(prefix, &name), e.flags & 0x41 != 0, &mut out);
                }
                None => out.push(Candidate {
                    record: Record {
                        name: e.name.clone(),
                        method: e.method,
                        data_start: u64::MAX,
                        compressed_size: 0,
                        size: 0,
                    },
                    label: join(prefix, &name),
                    encrypted: false,
                }),
            }
        }
    }
    for reading in readings {
        for r in &reading.records {
            let label = join(
                prefix,
                &format!("{} (in {})", String::from_utf8_lossy(&r.name), reading.how),
            );
            add(r.clone(), label, false, &mut out);
        }
    }
    out
}

/// What the archive's names say: its folder, whether it is TorchScript.
struct Layout {
    root: Option<String>,
    torchscript: bool,
    format: &'static str,
}

impl Layout {
    fn of(primary: Option<&Directory>, names: &[&[u8]]) -> Layout {
        // torch takes the folder from the first record of its own reading.
        let first = primary
            .and_then(|d| d.entries.first().map(|e| e.name.as_slice()))
            .or_else(|| names.first().copied());
        let root = first
            .and_then(|n| n.iter().position(|&c| c == b'/').map(|i| &n[..i]))
            .map(|r| String::from_utf8_lossy(r).into_owned());
        let has = |rel: &str| {
            root.as_ref().is_some_and(|r| {
                let full = format!("{r}/{rel}");
                names.iter().any(|n| zip::names_equal(n, full.as_bytes()))
            })
        };
        let code_dir = root.as_ref().map(|r| format!("{r}/code/"));
        let torchscript = has("constants.pkl")
            || code_dir
                .as_ref()
                .is_some_and(|c| names.iter().any(|n| n.starts_with(c.as_bytes())));
        let format = if torchscript {
            "torchscript"
        } else if has("data.pkl") {
            "pth-zip"
        } else {
            "zip"
        };
        Layout {
            root,
            torchscript,
            format,
        }
    }

    fn is_code(&self, name: &str) -> bool {
        self.root
            .as_ref()
            .is_some_and(|r| name.starts_with(&format!("{r}/code/")) && name.to_ascii_lowercase().ends_with(".py"))
    }

    fn is_storage(&self, name: &str) -> bool {
        self.root
            .as_ref()
            .is_some_and(|r| name.starts_with(&format!("{r}/data/")))
    }

    /// The TorchScript findings, and the format (None when no pickle was found in a plain zip).
    fn finish(&self, col: &mut Collector, prefix: &str) -> Option<&'static str> {
        if let Some(r) = &self.root {
            if !col.code.is_empty() {
                col.findings.push(Finding {
                    verdict: Verdict::NeedsCode,
                    record: join(prefix, &format!("{r}/code")),
                    offset: None,
                    global: None,
                    arguments: None,
                    message: format!(
                        "TorchScript code ({} files): torch.jit.load compiles and runs it (__setstate__ during the load, forward later); it is not checked here",
                        col.code.len()
                    ),
                });
            }
        }
        if self.torchscript && col.code.is_empty() {
            col.findings.push(Finding {
                verdict: Verdict::NeedsCode,
                record: join(prefix, "constants.pkl"),
                offset: None,
                global: None,
                arguments: None,
                message: "a TorchScript archive: torch.load hands it to torch.jit.load, which runs its compiled code"
                    .into(),
            });
        }
        if self.format == "zip" && col.pickles.is_empty() && col.errors.is_empty() {
            col.errors
                .push("a zip archive without pickles: not a checkpoint".into());
            return None;
        }
        Some(self.format)
    }
}

/// Judges one record: code files are listed, pickles scanned, storages skipped.
fn judge_record(col: &mut Collector, bytes: &[u8], c: &Candidate, layout: &Layout) {
    let name = String::from_utf8_lossy(&c.record.name).into_owned();
    let lower = name.to_ascii_lowercase();
    if layout.is_code(&name) {
        if !col.code.contains(&name) {
            col.code.push(name);
        }
        return;
    }
    let named_pickle = lower.ends_with("pkl") || lower.ends_with(".pickle");
    if name.ends_with('/') || (layout.is_storage(&name) && !named_pickle) {
        return;
    }
    if c.encrypted {
        if named_pickle {
            col.error(&c.label, "the member is encrypted: it cannot be checked".into());
        }
        return;
    }
    if c.record.data_start == u64::MAX {
        if named_pickle {
            col.error(&c.label, "no local header where the directory says".into());
        }
        return;
    }
    if !named_pickle && c.record.method != 0 && c.record.size > 1 << 20 {
        return; // too big to be sniffed; not something torch unpickles
    }
    let max = col.limits.max_pickle_bytes;
    let mut budget = zip::justified_inflate(bytes.len() as u64)
        .min(max.saturating_mul(4))
        .saturating_sub(col.inflated);
    if col.depth > 0 {
        // Inside an embedded payload, inflation also spends the file's nested budget.
        budget = budget.min(col.nested_budget);
    }
    let r = &c.record;
    let data = match zip::extract(
        bytes,
        r.method,
        r.data_start,
        r.compressed_size,
        r.size,
        max.min(budget),
    ) {
        Ok(d) => d,
        Err(why) => {
            if named_pickle {
                col.error(&c.label, why);
            }
            return;
        }
    };
    if r.method != 0 {
        col.inflated += data.len() as u64;
    }
    let offset = (r.method == 0).then_some(r.data_start);
    if named_pickle {
        scan_pickle(col, &c.label, &data, offset, layout.torchscript, true);
    } else if data.first() == Some(&0x80) && data.get(1).is_some_and(|&p| p <= 5) {
        // Sniffed: reported only if it is a pickle.
        let before = col.pickles.len();
        scan_pickle(col, &c.label, &data, offset, layout.torchscript, false);
        if col.pickles.len() > before {
            col.notes.push(format!("'{name}' is a pickle under another name"));
        }
    }
}
