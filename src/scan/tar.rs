//! Scanning the tar format of torch < 0.4, which `torch.load(weights_only=False)` still reads:
//! it tries `tarfile.open` on every file that is not a zip before unpickling it. The members
//! are the ones Python's tarfile lists ([`crate::read::tarfile`]); torch unpickles, in order,
//! the records of `storages` and `tensors` (each extracted to a temporary directory first) and
//! the object in `pickle` (`extractfile`). Those bytes are scanned exactly; other members that
//! parse as pickles are scanned too (a user's own loader may read them), and the caller also
//! scans the pickles from byte 0 (torch's fallback when tarfile raises, `pickle.load`).

use std::collections::HashSet;

use crate::pickle::Pickle;
use crate::read::tar::{walk_storages, walk_tensors};
use crate::read::tarfile::{candidates, Archive, Kind, Member, Resolved};

use super::analyze::scan_pickle;
use super::collector::{join, Collector};

/// Scans a tar archive tarfile opened. Returns None for an archive without torch's members
/// and without pickles (not a checkpoint).
pub(crate) fn scan_tar(col: &mut Collector, bytes: &[u8], prefix: &str, members: &[Member]) -> Option<&'static str> {
    let archive = Archive { members };
    let before = col.pickles.len();
    let storages = archive.extract("storages", None);
    let tensors = archive.extract("tensors", Some(("storages", &storages)));
    let object = archive.extractfile("pickle");
    let torch_layout = [&storages, &tensors, &object]
        .iter()
        .any(|r| !matches!(r, Resolved::Fails(_)));
    let mut read: Vec<(usize, usize)> = Vec::new();
    for (name, resolved) in [("storages", &storages), ("tensors", &tensors), ("pickle", &object)] {
        let record = join(prefix, &format!("tar:{name}"));
        match resolved {
            Resolved::Data { offset, size } => {
                read.push((*offset, *size));
                let data = &bytes[*offset..*offset + *size];
                match name {
                    "pickle" => {
                        scan_pickle(col, &record, data, Some(*offset as u64), false, true);
                    }
                    _ => scan_records(col, &record, data, *offset, name == "storages"),
                }
            }
            Resolved::Host(why) => col.error(&record, why.clone()),
            Resolved::Fails(why) if torch_layout => col.notes.push(format!("{record}: torch.load fails here: {why}")),
            Resolved::Fails(_) => {}
        }
    }
    sniff_other_members(col, bytes, prefix, members, &read);
    if !torch_layout {
        col.notes.push(
            "a tar archive without torch's storages/tensors/pickle members: torch.load raises KeyError before unpickling anything"
                .into(),
        );
        if col.pickles.len() == before {
            return None;
        }
    }
    Some("pth-legacy-tar")
}

/// The pickles of `storages` or `tensors`, walked as torch reads them: the binary parts decide
/// where each next pickle starts, so a record ckpt cannot follow makes the member unreadable.
fn scan_records(col: &mut Collector, record: &str, data: &[u8], base: usize, storages: bool) {
    let mut scan = |label: &str, at: usize| -> Result<Pickle, String> {
        let rest = data.get(at..).unwrap_or_default();
        // scan_pickle reports its own failure; the empty message says so.
        scan_pickle(
            col,
            &format!("{record} {label}"),
            rest,
            Some((base + at) as u64),
            false,
            true,
        )
        .ok_or_else(String::new)
    };
    let walked = if storages {
        walk_storages(data, &mut scan).map(|_| ())
    } else {
        walk_tensors(data, &mut scan).map(|_| ())
    };
    if let Err(why) = walked {
        if !why.is_empty() {
            col.error(record, why);
        }
    }
}

/// Data torch does not read that starts with a pickle PROTO, reported only if it parses: other
/// members of tarfile's list, and members other tar readers would find at any header-like
/// block (inside a member's data hidden by a PAX size, after a header tarfile stops at ...).
fn sniff_other_members(col: &mut Collector, bytes: &[u8], prefix: &str, members: &[Member], read: &[(usize, usize)]) {
    let mut seen: HashSet<(usize, usize)> = read.iter().copied().collect();
    for m in members {
        if !matches!(m.kind, Kind::Regular | Kind::Unknown) || !seen.insert((m.data, m.size as usize)) {
            continue;
        }
        sniff(
            col,
            bytes,
            &join(prefix, &format!("tar:{}", m.display_name())),
            m.data,
            m.size as usize,
        );
    }
    for c in candidates(bytes) {
        if !seen.insert((c.data, c.size)) {
            continue;
        }
        let name = String::from_utf8_lossy(&c.name);
        let record = format!(
            "tar:{name} (header at byte {}, outside tarfile's member list)",
            c.header
        );
        sniff(col, bytes, &join(prefix, &record), c.data, c.size);
    }
}

fn sniff(col: &mut Collector, bytes: &[u8], record: &str, start: usize, size: usize) {
    let data = &bytes[start..start + size];
    if data.first() == Some(&0x80) {
        scan_pickle(col, record, data, Some(start as u64), false, false);
    }
}
