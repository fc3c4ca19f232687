//! Writers: a [`Checkpoint`] becomes a PyTorch zip file (`.pth`/`.pt`/`.bin`), a safetensors
//! file, or a sharded set of either with a huggingface index.
//!
//! Guarantees:
//! - Never lose data: outputs are written to a temporary file in the target's directory and
//!   renamed into place once complete ([`atomic`]); an error or a panic leaves no partial file.
//!   The file is flushed to disk before the rename when it replaces one, or always with
//!   `durable`. An existing output is replaced only with `force`; an output that is one of the
//!   inputs is always refused ([`check_output`]).
//! - Streaming: tensor data goes from positioned reads of the inputs, at most
//!   [`CHUNK`](crate::tensor_data::CHUNK) (1 MiB) at a time before any widening cast, through a
//!   1 MiB write buffer into the output; no tensor is ever held whole in memory.
//! - Exactness: safetensors output is byte-identical to `safetensors.torch.save_file` of the
//!   same tensors and metadata ([`safetensors`]); .pth output is what `torch.save` writes, loads
//!   with `torch.load(weights_only=True)` and with libtorch's C++ unpickler, and keeps the
//!   structure, storage sharing, views, requires_grad, Parameter-ness and device tags ([`pth`]).

mod ahead;
pub mod atomic;
mod context;
#[cfg(feature = "cli")]
mod losses;
pub mod pickler;
pub mod progress;
pub mod pth;
pub mod safetensors;
pub mod shard;
pub mod zip;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::tensor_data::{CastWatch, DataReader};

use self::atomic::AtomicFile;
use self::context::WriteCtx;
use self::progress::OnProgress;
#[cfg(feature = "cli")]
pub use losses::write_judging_losses;

/// The container to write ([`WriteOptions::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutFormat {
    /// PyTorch's zip format, as `torch.save` writes it.
    Pth,
    /// A safetensors file, as `safetensors.torch.save_file` writes it.
    Safetensors,
}

impl OutFormat {
    /// The format an output path asks for by its name: `.safetensors` (and
    /// `.safetensors.index.json`) -> Safetensors; `.pth`, `.pt`, `.bin`, `.ckpt` (Lightning's
    /// name for a torch.save file; and their `.index.json` forms) -> Pth; anything else None.
    pub fn from_path(p: &Path) -> Option<OutFormat> {
        let name = p.file_name()?.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".index.json").unwrap_or(&name);
        let ext = name.rsplit_once('.')?.1;
        match ext {
            "safetensors" => Some(OutFormat::Safetensors),
            "pth" | "pt" | "bin" | "ckpt" => Some(OutFormat::Pth),
            _ => None,
        }
    }

    /// "pth" or "safetensors".
    pub fn name(self) -> &'static str {
        match self {
            OutFormat::Pth => "pth",
            OutFormat::Safetensors => "safetensors",
        }
    }
}

/// How [`write()`] writes: [`WriteOptions::new`] gives the defaults for a format, and fields
/// are set one by one (more may be added).
///
/// ```
/// use ckpt::{OutFormat, WriteOptions};
///
/// let mut options = WriteOptions::new(OutFormat::Safetensors);
/// options.force = true;
/// options.metadata.push(("format".into(), "pt".into()));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriteOptions {
    /// The container.
    pub format: OutFormat,
    /// Replace an existing output.
    pub force: bool,
    /// safetensors: write one name per group of exactly identical views of a storage (tied
    /// weights), recording each dropped name in `__metadata__` as `dropped -> kept`, as
    /// huggingface's convert does. .pth keeps sharing anyway, so this changes nothing there.
    pub dedupe: bool,
    /// Split into huggingface-style shards of at most this many bytes of tensor data.
    pub max_shard_size: Option<u64>,
    /// Where the progress of writing tensor data is reported (nowhere by default).
    pub on_progress: OnProgress,
    /// Flush every output to disk before renaming it into place, new files too, so that it
    /// survives a crash or power cut right after. Outputs that replace a file are always
    /// flushed.
    pub durable: bool,
    /// Entries added to safetensors `__metadata__` (of every file of a sharded output), over
    /// the checkpoint's own. A .pth has no place for them: writing one with entries here fails.
    pub metadata: Vec<(String, String)>,
    /// PyTorch zip output: zip64 fields on every record and zip64 end records even for a small
    /// archive, as torch.save writes archives past 4 GiB (Python's zipfile calls this
    /// `force_zip64`): to try a reader's zip64 path without writing gigabytes. safetensors has
    /// no zip records: writing one with this set fails.
    pub force_zip64: bool,
}

impl WriteOptions {
    /// Writes `format`, refusing to replace a file, without sharding, deduplication, progress
    /// or extra metadata; new files are not flushed to disk before their rename.
    pub fn new(format: OutFormat) -> Self {
        WriteOptions {
            format,
            force: false,
            dedupe: false,
            max_shard_size: None,
            on_progress: OnProgress::default(),
            durable: false,
            metadata: Vec::new(),
            force_zip64: false,
        }
    }
}

/// What [`write()`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteReport {
    /// The files written, in the order they were renamed into place (a shard index last).
    pub files: Vec<PathBuf>,
    /// Tensors written (after `dedupe`).
    pub tensors: usize,
    /// Total size of the files written.
    pub bytes: u64,
    /// (dropped name, kept name) of tied aliases `dedupe` left out and recorded in metadata.
    pub deduplicated: Vec<(String, String)>,
}

/// Writes a small text output (a JSON report) with the same guarantees as a checkpoint: temp
/// file, rename into place, an existing file replaced only with `force`, never one of `inputs`.
#[cfg(feature = "cli")] // only the commands use it
pub fn write_text(inputs: &[&Path], out: &Path, text: &str, force: bool, always_flush: bool) -> Result<PathBuf> {
    check_output(inputs, out, force)?;
    let mut f = AtomicFile::create(out, always_flush)?;
    std::io::Write::write_all(f.file(), text.as_bytes()).map_err(|e| Error::Write {
        path: out.into(),
        source: e,
    })?;
    f.commit(force)
}

/// Writes `ckpt` to `out` as `opts` say and reports what was written.
///
/// The output goes to a temporary file beside `out`, renamed into place once complete: an
/// error or a panic leaves no partial file. An existing output is replaced only with
/// [`WriteOptions::force`]; an output that is one of the checkpoint's inputs is always refused.
/// Tensor data is streamed from the inputs, never held whole in memory. A .pth is what
/// `torch.save` writes (structure, shared storages, views, requires_grad and devices kept); a
/// safetensors file is what `safetensors.torch.save_file` writes for the same tensors.
///
/// A directory, an `*.index.json` name, or [`WriteOptions::max_shard_size`] asks for a Hugging
/// Face layout: `save_pretrained`'s names in a directory, or shards and an index beside `out`.
///
/// ```
/// # fn main() -> ckpt::Result<()> {
/// let ckpt = ckpt::CheckpointBuilder::new().tensor("w", &[1.0f32, 2.0], &[2])?.build();
/// let out = std::env::temp_dir().join("ckpt-doc-write.safetensors");
/// let mut options = ckpt::WriteOptions::new(ckpt::OutFormat::Safetensors);
/// options.force = true;
/// let report = ckpt::write(&ckpt, &out, &options)?;
/// assert_eq!(report.tensors, 1);
/// assert_eq!(ckpt::open(&out)?.tensor("w").unwrap().to_vec::<f32>()?, [1.0, 2.0]);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Exists`] for an existing output without `force`; [`Error::SameFile`] for an output
/// that is an input; [`Error::Write`] when the output cannot be written (nothing is left at
/// `out`); [`Error::Io`] when an input cannot be read; [`Error::Unwritable`] for a tensor the
/// format cannot hold (a .pth with extra metadata, a dtype safetensors lacks).
pub fn write(ckpt: &Checkpoint, out: &Path, opts: &WriteOptions) -> Result<WriteReport> {
    write_impl(ckpt, out, opts, None, &mut || Ok(()))
}

/// [`write()`], with `gate` run on another thread while the output is written: the output is
/// renamed into place only if the gate returns Ok, else the gate's error is returned and nothing
/// is left. For a check that reads every byte, which then costs no time of its own.
#[cfg(feature = "cli")]
pub(crate) fn write_gated<E>(
    ckpt: &Checkpoint,
    out: &Path,
    opts: &WriteOptions,
    gate: impl FnOnce() -> std::result::Result<(), E> + Send,
) -> std::result::Result<WriteReport, E>
where
    E: From<Error> + Send,
{
    std::thread::scope(|scope| {
        let verdict = scope.spawn(gate);
        write_checked(ckpt, out, opts, None, || {
            verdict.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    })
}

/// [`write()`] through a reader that shows `watch` every cast block, with `check` run just
/// before the rename: the output is renamed into place only if it returns Ok, else its error is
/// returned and nothing is left.
#[cfg(feature = "cli")]
fn write_checked<E: From<Error>>(
    ckpt: &Checkpoint,
    out: &Path,
    opts: &WriteOptions,
    watch: Option<CastWatch>,
    check: impl FnOnce() -> std::result::Result<(), E>,
) -> std::result::Result<WriteReport, E> {
    let mut check = Some(check);
    let mut refused = None;
    let written = write_impl(ckpt, out, opts, watch, &mut || {
        let Some(check) = check.take() else { return Ok(()) };
        check().map_err(|e| {
            refused = Some(e);
            // Stops the write before its rename; the check's own error is returned.
            Error::Write {
                path: out.into(),
                source: std::io::Error::other("refused by a check"),
            }
        })
    });
    match (written, refused) {
        (_, Some(e)) => Err(e),
        (r, None) => r.map_err(E::from),
    }
}

/// Whether writing to `out` streams each tensor once, in one pass through one reader, so a
/// [`CastWatch`] given to [`write_impl`] sees every cast element once: one safetensors file
/// without `dedupe` (shards and .pth files read in their own ways).
fn streams_each_tensor_once(out: &Path, opts: &WriteOptions) -> bool {
    opts.format == OutFormat::Safetensors && !opts.dedupe && shard::Layout::for_output(out, opts).is_none()
}

/// The writing, with `ready` called just before outputs are renamed into place: its error
/// stops the write and leaves nothing. `watch` sees the cast blocks of a write for which
/// [`streams_each_tensor_once`] holds; other writes do not show it any.
fn write_impl(
    ckpt: &Checkpoint,
    out: &Path,
    opts: &WriteOptions,
    watch: Option<CastWatch>,
    ready: &mut dyn FnMut() -> Result<()>,
) -> Result<WriteReport> {
    let inputs = input_paths(ckpt);
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    if opts.format == OutFormat::Pth && !opts.metadata.is_empty() {
        let why = "a .pth file has no place for metadata entries; write safetensors to keep them";
        return Err(Error::Write {
            path: out.into(),
            source: std::io::Error::other(why),
        });
    }
    if opts.format == OutFormat::Safetensors && opts.force_zip64 {
        let why = "force_zip64 applies to PyTorch zip output: a safetensors file has no zip records";
        return Err(Error::Write {
            path: out.into(),
            source: std::io::Error::other(why),
        });
    }
    let layout = &pth::PthLayout { force_zip64: opts.force_zip64 };
    if let Some(layout) = shard::Layout::for_output(out, opts) {
        return shard::write_sharded(ckpt, &layout, opts, &inputs, ready);
    }
    check_output(&inputs, out, opts.force)?;
    let mut reader = DataReader::with_watch(watch.filter(|_| streams_each_tensor_once(out, opts)));
    match opts.format {
        OutFormat::Safetensors => {
            let sel = safetensors::select(ckpt, opts.dedupe)?;
            let mut meta = safetensors::metadata(ckpt);
            safetensors::record_dropped(&mut meta, &sel.dropped);
            safetensors::add_user_metadata(&mut meta, &opts.metadata);
            let mut progress = opts
                .on_progress
                .start("writing", safetensors::data_bytes(ckpt, &sel.tensors));
            let mut f = AtomicFile::create(out, opts.durable)?;
            let ctx = WriteCtx::new(&mut f, &mut reader, &mut progress);
            let bytes = safetensors::write_file(ckpt, &sel.tensors, &meta, ctx)?;
            progress.finish();
            ready()?;
            let path = f.commit(opts.force)?;
            Ok(WriteReport {
                files: vec![path],
                tensors: sel.tensors.len(),
                bytes,
                deduplicated: sel.dropped,
            })
        }
        OutFormat::Pth => {
            let root = &ckpt.root;
            let mut progress = opts.on_progress.start("writing", pth::data_bytes(ckpt, root));
            let mut f = AtomicFile::create(out, opts.durable)?;
            let ctx = WriteCtx::new(&mut f, &mut reader, &mut progress);
            let bytes = pth::write_archive(ckpt, root, &pth::prefix_for(out), layout, ctx)?;
            progress.finish();
            ready()?;
            let path = f.commit(opts.force)?;
            Ok(WriteReport {
                files: vec![path],
                tensors: pth::tensors_in(root).len(),
                bytes,
                deduplicated: Vec::new(),
            })
        }
    }
}

/// The files the checkpoint was read from (a sharded checkpoint's index too) and every file its
/// tensor data is read from: no output may be one of them.
pub fn input_paths(ckpt: &Checkpoint) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = Vec::new();
    let sources = ckpt
        .storages
        .iter()
        .filter(|s| s.data.source.is_file())
        .map(|s| s.data.source.path());
    for p in ckpt.files.iter().map(PathBuf::as_path).chain(sources) {
        if !paths.iter().any(|q| q == p) {
            paths.push(p.to_path_buf());
        }
    }
    paths
}

/// Whether writing `out` is allowed: an output that is one of `inputs` (the same file, by
/// device and inode, or by canonical path) is always refused; an existing file needs `force`.
/// An existing directory passes: it is where a Hugging Face layout goes ([`write()`] checks every
/// file it will write in it the same way, before writing anything).
pub fn check_output(inputs: &[&Path], out: &Path, force: bool) -> Result<()> {
    let meta = match std::fs::metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Write {
                path: out.into(),
                source: e,
            })
        }
    };
    for input in inputs {
        if same_file(input, out, &meta) {
            return Err(Error::SameFile {
                path: out.into(),
                input: input.to_path_buf(),
            });
        }
    }
    if meta.is_dir() {
        return Ok(());
    }
    if !force {
        return Err(Error::Exists { path: out.into() });
    }
    Ok(())
}

pub(crate) fn same_file(input: &Path, out: &Path, out_meta: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(input) {
            return m.dev() == out_meta.dev() && m.ino() == out_meta.ino();
        }
    }
    let _ = out_meta;
    match (std::fs::canonicalize(input), std::fs::canonicalize(out)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Parses a size: a number with an optional unit, case-insensitive: B, KB/MB/GB/TB (powers of
/// 1000, as huggingface counts), KiB/MiB/GiB/TiB (powers of 1024), K/M/G/T (= KB...). "1.5GB"
/// is allowed. None for anything else, zero, or overflow.
#[cfg(feature = "cli")] // only the commands use it
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    if num.is_empty() || num.starts_with('.') && num.len() == 1 {
        return None;
    }
    let value = match num.split_once('.') {
        None => num.parse::<u64>().ok()?.checked_mul(mult)?,
        Some((int, frac)) => {
            if frac.contains('.') || (int.is_empty() && frac.is_empty()) {
                return None;
            }
            let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
            let whole = int.checked_mul(mult)?;
            // The fraction, exactly in integers: frac / 10^len * mult, rounded down.
            let frac = frac.trim_end_matches('0');
            if frac.len() > 18 {
                return None;
            }
            let f: u128 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
            let part = f * mult as u128 / 10u128.pow(frac.len() as u32);
            whole.checked_add(u64::try_from(part).ok()?)?
        }
    };
    (value > 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5GB"), Some(5_000_000_000));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size(" 10 kb "), Some(10_000));
        assert_eq!(parse_size("1.5GB"), Some(1_500_000_000));
        assert_eq!(parse_size("0.5KiB"), Some(512));
        assert_eq!(parse_size("3M"), Some(3_000_000));
        assert_eq!(parse_size("0"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("GB"), None);
        assert_eq!(parse_size("."), None);
        assert_eq!(parse_size("1.2.3"), None);
        assert_eq!(parse_size("5XB"), None);
        assert_eq!(parse_size("-5"), None);
        assert_eq!(parse_size("99999999999TB"), None);
    }

    #[test]
    fn formats_from_paths() {
        let f = |p: &str| OutFormat::from_path(Path::new(p));
        assert_eq!(f("a/model.safetensors"), Some(OutFormat::Safetensors));
        assert_eq!(f("model.SafeTensors"), Some(OutFormat::Safetensors));
        assert_eq!(f("x.pth"), Some(OutFormat::Pth));
        assert_eq!(f("x.pt"), Some(OutFormat::Pth));
        assert_eq!(f("pytorch_model.bin"), Some(OutFormat::Pth));
        assert_eq!(f("epoch=3-step=100.ckpt"), Some(OutFormat::Pth));
        assert_eq!(f("model.safetensors.index.json"), Some(OutFormat::Safetensors));
        assert_eq!(f("pytorch_model.bin.index.json"), Some(OutFormat::Pth));
        assert_eq!(f("x.json"), None);
        assert_eq!(f("x"), None);
    }
}
