//! What the scan of one file accumulates ([`Collector`]), shared by the scanners of each
//! container format and the pickle analysis below them.

use crate::read::ReadLimits;

use super::{Finding, PickleReport, Verdict};

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
    /// Scans embedded bytes as a file of their own. The pickle analysis meets such bytes, but
    /// telling their format apart is the container scanner's job, which sits above it and
    /// calls it: the scanner passes itself in here, so that the analysis need not call up.
    pub scan_embedded: fn(&mut Collector, &str, &[u8]),
}

impl<'a> Collector<'a> {
    pub(crate) fn new(limits: &'a ReadLimits, depth: usize, scan_embedded: fn(&mut Collector, &str, &[u8])) -> Self {
        Collector {
            limits,
            depth,
            scan_embedded,
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
    pub(crate) fn error(&mut self, record: &str, what: String) {
        self.findings.push(Finding {
            verdict: Verdict::Unreadable,
            record: record.to_string(),
            offset: None,
            global: None,
            arguments: None,
            message: what.clone(),
        });
        self.errors.push(if record.is_empty() {
            what
        } else {
            format!("{record}: {what}")
        });
    }
}

/// The label of `record` found inside `prefix` (a container, or an embedded payload).
pub(crate) fn join(prefix: &str, record: &str) -> String {
    if prefix.is_empty() {
        record.to_string()
    } else {
        format!("{prefix} -> {record}")
    }
}
