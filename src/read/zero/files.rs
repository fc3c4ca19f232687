//! Finding a DeepSpeed checkpoint's files: the tag folder (`global_step10/`, given directly or
//! named by the `latest` file beside it) and the per-rank `*_model_states.pt` and
//! `*_optim_states.pt` files in it, in the order DeepSpeed's `zero_to_fp32.py` takes them
//! (file names sorted "naturally": runs of digits compare as numbers, so rank 10 follows
//! rank 9).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::container::index::shard_path;
use crate::error::{Error, Result};

/// The file in a checkpoint folder naming the tag folder of the last save.
pub const LATEST: &str = "latest";
const MODEL_STATES: &str = "_model_states.pt";
const OPTIM_STATES: &str = "_optim_states.pt";

/// Largest `latest` file read: it holds one folder name.
const MAX_LATEST_BYTES: u64 = 4096;

/// Whether `dir` is a DeepSpeed tag folder: it holds `*_optim_states.pt` files.
pub fn has_rank_files(dir: &Path) -> bool {
    !list(dir, OPTIM_STATES).unwrap_or_default().is_empty()
}

/// Whether `dir` holds a `latest` file (which should name a tag folder beside it).
pub fn has_latest(dir: &Path) -> bool {
    dir.join(LATEST).is_file()
}

/// The tag folder: `dir` itself when it holds optimizer-state files, else the folder its
/// `latest` file names.
pub fn tag_dir(dir: &Path) -> Result<PathBuf> {
    if has_rank_files(dir) {
        return Ok(dir.to_path_buf());
    }
    let tag = read_tag(&dir.join(LATEST))?;
    if !tag.is_dir() {
        return Err(Error::malformed(
            dir.join(LATEST),
            "tag",
            format!("names {}, which is not a folder", tag.display()),
        ));
    }
    Ok(tag)
}

/// The folder a `latest` file names (its text, stripped), which must be a plain name beside it.
fn read_tag(latest: &Path) -> Result<PathBuf> {
    let (file, meta) = crate::source::open_regular(latest)?;
    if meta.len() > MAX_LATEST_BYTES {
        return Err(Error::malformed(
            latest,
            "tag",
            format!("{} bytes, more than a folder name's {MAX_LATEST_BYTES}", meta.len()),
        ));
    }
    let text = std::io::read_to_string(file).map_err(|e| Error::io(latest, e))?;
    let tag = text.trim();
    let dir = latest.parent().unwrap_or(Path::new("."));
    shard_path(dir, tag)
        .ok_or_else(|| Error::malformed(latest, "tag", format!("'{tag}' is not a plain folder name beside it")))
}

/// The `*_model_states.pt` files of a tag folder, naturally sorted.
pub fn model_states(dir: &Path) -> Result<Vec<PathBuf>> {
    nonempty(dir, MODEL_STATES)
}

/// The `*_optim_states.pt` files of a tag folder (one per data-parallel rank), naturally sorted.
pub fn optim_states(dir: &Path) -> Result<Vec<PathBuf>> {
    nonempty(dir, OPTIM_STATES)
}

fn nonempty(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let files = list(dir, suffix)?;
    if files.is_empty() {
        return Err(Error::malformed(dir, "files", format!("no *{suffix} file in the folder")));
    }
    Ok(files)
}

/// The files of `dir` whose names end with `suffix` (after a non-empty stem), naturally sorted.
fn list(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() > suffix.len() && name.ends_with(suffix) {
            names.push(name);
        }
    }
    names.sort_by(|a, b| natural_cmp(a, b));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// Compares names as lists of alternating text and numbers (each run of ASCII digits one
/// number), as `zero_to_fp32.py`'s sort key does.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (ka, kb) = (natural_key(a), natural_key(b));
    for (x, y) in ka.iter().zip(&kb) {
        let order = match (x, y) {
            (Part::Number(x), Part::Number(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
            (Part::Text(x), Part::Text(y)) => x.cmp(y),
            // Both lists alternate from text, so kinds meet only their own kind.
            (Part::Text(_), Part::Number(_)) => Ordering::Less,
            (Part::Number(_), Part::Text(_)) => Ordering::Greater,
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    ka.len().cmp(&kb.len())
}

enum Part<'a> {
    Text(&'a str),
    /// The digits without leading zeros.
    Number(&'a str),
}

/// Text, number, text, ... (the first and last text may be empty).
fn natural_key(s: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let text = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        parts.push(Part::Text(&rest[..text]));
        rest = &rest[text..];
        if rest.is_empty() {
            return parts;
        }
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        parts.push(Part::Number(rest[..digits].trim_start_matches('0')));
        rest = &rest[digits..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_sort_by_number() {
        let mut names = [
            "zero_pp_rank_10_mp_rank_00_optim_states.pt",
            "zero_pp_rank_2_mp_rank_00_optim_states.pt",
            "zero_pp_rank_1_mp_rank_00_optim_states.pt",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names[0], "zero_pp_rank_1_mp_rank_00_optim_states.pt");
        assert_eq!(names[1], "zero_pp_rank_2_mp_rank_00_optim_states.pt");
        assert_eq!(names[2], "zero_pp_rank_10_mp_rank_00_optim_states.pt");
        // Python compares the text "a." with "a" before any number.
        assert_eq!(natural_cmp("a.1", "a1"), Ordering::Greater);
        assert_eq!(natural_cmp("a01b", "a1a"), Ordering::Greater);
    }
}
