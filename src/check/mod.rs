//! Is a checkpoint sound? [`check`] reads every byte once: each zip record against its CRC-32
//! and its local header, a sharded checkpoint against its index's `total_size`, every file
//! against a `sha256sum` manifest when given one, and every tensor's numbers for NaN and
//! infinities. Shards missing or unreadable, and safetensors headers whose offsets do not tile
//! the data exactly, already fail [`crate::open`]: `check` reports those as errors.

mod manifest;
mod zip;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::container::index;
use crate::error::Result;
use crate::model::{Checkpoint, Format};
use crate::pass;
use crate::source::Source;

/// What kind of problem a [`Finding`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// A zip record's data does not match the CRC-32 its directory records.
    Crc,
    /// A zip record's local header disagrees with its central entry, or is missing.
    Header,
    /// A sharded checkpoint's index states a `total_size` its shards do not add up to.
    TotalSize,
    /// A file's SHA-256 differs from the manifest's.
    Sha256,
    /// Tensors holding NaN.
    Nan,
    /// Tensors holding +inf or -inf.
    Inf,
}

impl Kind {
    /// The name `--allow` takes and `--json` prints.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Crc => "crc",
            Kind::Header => "header",
            Kind::TotalSize => "total-size",
            Kind::Sha256 => "sha256",
            Kind::Nan => "nan",
            Kind::Inf => "inf",
        }
    }

    /// Every kind, in report order.
    pub const ALL: [Kind; 6] = [
        Kind::Crc,
        Kind::Header,
        Kind::TotalSize,
        Kind::Sha256,
        Kind::Nan,
        Kind::Inf,
    ];

    /// The kind called `name` (see [`Kind::name`]).
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem found, in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    kind: Kind,
    file: String,
    what: String,
}

impl Finding {
    fn new(kind: Kind, file: &str, what: String) -> Finding {
        Finding {
            kind,
            file: file.to_string(),
            what,
        }
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The file it is in (a shard, for a sharded checkpoint).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// What is wrong, and where.
    pub fn what(&self) -> &str {
        &self.what
    }
}

/// What [`check`] checks beyond the default.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    sha256: Option<PathBuf>,
}

impl CheckOptions {
    /// The default checks: CRCs, headers, `total_size`, NaN and infinities.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also compare every file of the checkpoint that `manifest` (`sha256sum` format) lists with
    /// its SHA-256 there; [`CheckReport::files_hashed`] says how many it listed.
    pub fn sha256_manifest(mut self, manifest: impl Into<PathBuf>) -> Self {
        self.sha256 = Some(manifest.into());
        self
    }
}

/// What [`check`] found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    findings: Vec<Finding>,
    records: usize,
    tensors: usize,
    files: Vec<PathBuf>,
    hashed: usize,
}

impl CheckReport {
    /// Every problem found, by kind, then file.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Whether nothing was found.
    pub fn is_sound(&self) -> bool {
        self.findings.is_empty()
    }

    /// Zip records whose CRC-32 and headers were checked.
    pub fn records_checked(&self) -> usize {
        self.records
    }

    /// Tensors whose numbers were checked.
    pub fn tensors_checked(&self) -> usize {
        self.tensors
    }

    /// The files of the checkpoint (a sharded one: the index and its shards).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Files compared with the SHA-256 manifest: 0 when it lists none of them (or none was
    /// given).
    pub fn files_hashed(&self) -> usize {
        self.hashed
    }
}

/// Checks the checkpoint at `path`; see the module docs for what is checked.
///
/// ```
/// # fn main() -> ckpt::Result<()> {
/// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
/// let report = ckpt::check::check(&path, &ckpt::check::CheckOptions::new())?;
/// assert!(report.is_sound(), "{:?}", report.findings());
/// assert!(report.records_checked() > 0);
/// # Ok(()) }
/// ```
///
/// # Errors
/// Those of [`crate::open`] (a file that cannot be read as a checkpoint at all); for a
/// manifest, [`crate::Error::Io`] or [`crate::Error::Malformed`] when it cannot be read or parsed.
pub fn check(path: &Path, options: &CheckOptions) -> Result<CheckReport> {
    let ckpt = crate::read::open(path)?;
    let mut findings = Vec::new();
    let mut records = 0;
    for (file, start, len) in archives(&ckpt)? {
        let source = Source::open(&file)?;
        let Some(bytes) = source.slice(start, len).filter(|b| crate::container::zip::is_zip(b)) else {
            continue;
        };
        let handle = std::fs::File::open(&file).map_err(|e| crate::Error::io(&file, e))?;
        let shown = match ckpt.format {
            Format::Dcp => format!("{} (bytes {start}..{})", file.display(), start + len),
            _ => file.display().to_string(),
        };
        let (found, n) = zip::check(&shown, &handle, bytes, start as usize);
        // A distributed checkpoint has an archive per chunk: the pages their headers were read
        // through go, or thousands of them would stay resident.
        source.release(start, len);
        findings.extend(found);
        records += n;
    }
    if ckpt.format == Format::Sharded {
        findings.extend(total_size(&ckpt)?);
    }
    let hashed = match &options.sha256 {
        Some(m) => {
            let (found, n) = against_manifest(m, &ckpt.files)?;
            findings.extend(found);
            n
        }
        None => 0,
    };
    let (nan, inf) = crate::stats::tensors_with_nonfinite(&ckpt)?;
    let shown = path.display().to_string();
    if !nan.is_empty() {
        let what = format!("{} tensor(s) hold NaN: {}", nan.len(), nan.join(", "));
        findings.push(Finding::new(Kind::Nan, &shown, what));
    }
    if !inf.is_empty() {
        let what = format!("{} tensor(s) hold inf: {}", inf.len(), inf.join(", "));
        findings.push(Finding::new(Kind::Inf, &shown, what));
    }
    findings.sort_by(|a, b| (a.kind, &a.file).cmp(&(b.kind, &b.file)));
    Ok(CheckReport {
        findings,
        records,
        tensors: ckpt.tensors.len(),
        files: ckpt.files.clone(),
        hashed,
    })
}

/// The zip archives to check, as (file, offset, length): every file of the checkpoint whole, or
/// for a distributed checkpoint each item its `.metadata` names (a `.distcp` file is a run of
/// `torch.save` archives, not one).
fn archives(ckpt: &Checkpoint) -> Result<Vec<(PathBuf, u64, u64)>> {
    if ckpt.format == Format::Dcp {
        return crate::read::dcp::stored_items(&ckpt.files[0], &Default::default());
    }
    ckpt.files
        .iter()
        .map(|f| {
            Ok((
                f.clone(),
                0,
                std::fs::metadata(f).map_err(|e| crate::Error::io(f, e))?.len(),
            ))
        })
        .collect()
}

/// The index's `metadata.total_size` against the bytes its tensors hold: with shared storages
/// counted once (what transformers writes) or per tensor; a finding when it is neither.
fn total_size(ckpt: &Checkpoint) -> Result<Vec<Finding>> {
    let index_path = &ckpt.files[0];
    let source = Source::open(index_path)?;
    let Ok(index) = index::parse(source.bytes()) else {
        return Ok(Vec::new());
    };
    let Some(stated) = index.metadata.get("total_size") else {
        return Ok(Vec::new());
    };
    let per_tensor: u64 = ckpt.tensors.iter().map(|t| t.nbytes()).sum();
    let mut seen = std::collections::HashSet::new();
    let per_storage: u64 = ckpt
        .tensors
        .iter()
        .filter(|t| seen.insert(t.storage))
        .map(|t| ckpt.storage(t.storage).data.len)
        .sum();
    let ok = stated.as_u64().is_some_and(|n| n == per_tensor || n == per_storage)
        || stated
            .as_f64()
            .is_some_and(|n| n == per_tensor as f64 || n == per_storage as f64);
    if ok {
        return Ok(Vec::new());
    }
    let what = format!("the index states total_size {stated}, its shards hold {per_tensor} bytes of tensors");
    Ok(vec![Finding::new(
        Kind::TotalSize,
        &index_path.display().to_string(),
        what,
    )])
}

/// Every file the manifest lists, hashed (in parallel) and compared.
fn against_manifest(path: &Path, files: &[PathBuf]) -> Result<(Vec<Finding>, usize)> {
    let m = manifest::Manifest::read(path)?;
    let listed: Vec<(&PathBuf, &str)> = files.iter().filter_map(|f| m.digest_of(f).map(|d| (f, d))).collect();
    let digests = pass::map(
        &listed,
        |(f, _)| std::fs::metadata(f).map_or(0, |m| m.len()),
        pass::threads(),
        |(f, _)| manifest::sha256_file(f),
    );
    let mut found = Vec::new();
    for ((file, want), got) in listed.iter().zip(digests) {
        let got = got?;
        if got != *want {
            let what = format!("SHA-256 {got}, the manifest {} says {want}", path.display());
            found.push(Finding::new(Kind::Sha256, &file.display().to_string(), what));
        }
    }
    Ok((found, listed.len()))
}
