//! Checksum manifests in `sha256sum` format: one `<64 hex digits> <space> <space or *> <path>`
//! a line, paths relative to the manifest's directory (as `sha256sum -c` reads them there).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::source::Source;

/// A manifest's entries: (path as written, digest in lower-case hex).
pub(super) struct Manifest {
    dir: PathBuf,
    entries: Vec<(String, String)>,
}

/// The most a manifest may hold: a manifest is text of a line per file.
const MAX_MANIFEST: u64 = 64 << 20;

impl Manifest {
    /// Reads and parses the manifest at `path`.
    pub fn read(path: &Path) -> Result<Manifest> {
        let source = Source::open(path)?;
        if source.len() > MAX_MANIFEST {
            return Err(Error::malformed(
                path,
                "sha256 manifest",
                format!("{} bytes, more than a manifest holds", source.len()),
            ));
        }
        let text = std::str::from_utf8(source.bytes())
            .map_err(|e| Error::malformed(path, "sha256 manifest", format!("not UTF-8 text: {e}")))?;
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || {
                Error::malformed(
                    path,
                    format!("sha256 manifest, line {}", n + 1),
                    "expected '<64 hex digits>  <file>' (sha256sum's format)",
                )
            };
            let (digest, rest) = line.split_once(' ').ok_or_else(bad)?;
            let name = rest
                .strip_prefix(' ')
                .or_else(|| rest.strip_prefix('*'))
                .ok_or_else(bad)?;
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
                return Err(bad());
            }
            entries.push((name.to_string(), digest.to_ascii_lowercase()));
        }
        let dir = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        Ok(Manifest { dir, entries })
    }

    /// The digest listed for `file`: the entry naming the same file from the manifest's
    /// directory, else the one entry with its file name.
    pub fn digest_of(&self, file: &Path) -> Option<&str> {
        let same = |name: &str| same_file(&self.dir.join(name), file);
        if let Some((_, d)) = self.entries.iter().find(|(name, _)| same(name)) {
            return Some(d);
        }
        let base = file.file_name()?.to_str()?;
        let mut by_base = self
            .entries
            .iter()
            .filter(|(name, _)| Path::new(name).file_name().and_then(|n| n.to_str()) == Some(base));
        match (by_base.next(), by_base.next()) {
            (Some((_, d)), None) => Some(d),
            _ => None,
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The SHA-256 of a whole file, in lower-case hex.
pub(super) fn sha256_file(path: &Path) -> Result<String> {
    let source = Source::open(path)?;
    let mut hasher = Sha256::new();
    // In slices, so the map's pages are read in order and can be dropped behind.
    for chunk in source.bytes().chunks(8 << 20) {
        hasher.update(chunk);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
