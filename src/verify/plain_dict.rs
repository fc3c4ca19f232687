//! A copy of a state-dict .pth whose data.pkl starts with a plain dict (libtorch's unpickler
//! reads OrderedDict as None), and the zip CRC check.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::model::{Checkpoint, Format, Key, Node, Origin};

use super::report::VerifyError;

/// What the top level of a zip checkpoint is, as far as libtorch's loader cares.
pub(super) enum TopLevel {
    /// `{str: tensor}`.
    Dict,
    /// `OrderedDict{str: tensor}`.
    OrderedDict,
    Other(&'static str),
}

pub(super) fn top_level(ckpt: &Checkpoint) -> TopLevel {
    if ckpt.origin == Origin::WholeModel {
        return TopLevel::Other(
            "a pickled nn.Module (torch.save(model)); libtorch's loader reads only a dict of tensors",
        );
    }
    match &ckpt.root {
        Node::Dict { ordered, items } => {
            if !items
                .iter()
                .all(|(k, v)| matches!(k, Key::Str(_)) && matches!(v, Node::Tensor(_)))
            {
                return TopLevel::Other(
                    "not a flat dict of tensors (nested containers or non-tensor values); libtorch's loader reads only {str: tensor}",
                );
            }
            if *ordered {
                TopLevel::OrderedDict
            } else {
                TopLevel::Dict
            }
        }
        _ => TopLevel::Other("the top level is not a dict; libtorch's loader reads only {str: tensor}"),
    }
}

/// `PREFIX/data.pkl` of a zip checkpoint, read through the zip crate (a CRC mismatch is no error).
pub(super) fn read_data_pkl(path: &Path) -> Result<Vec<u8>, VerifyError> {
    let io = |what: String| VerifyError::Io {
        path: path.into(),
        what,
    };
    let f = File::open(path).map_err(|e| io(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| io(format!("zip: {e}")))?;
    let first =
        String::from_utf8_lossy(zip.by_index_raw(0).map_err(|e| io(format!("zip: {e}")))?.name_raw()).into_owned();
    let prefix = first.split_once('/').map(|(p, _)| p.to_string()).unwrap_or_default();
    let name = format!("{prefix}/data.pkl");
    let mut entry = zip.by_name(&name).map_err(|e| io(format!("{name}: {e}")))?;
    let mut out = Vec::new();
    read_record(&mut entry, &mut out).map_err(|e| io(format!("{name}: {e}")))?;
    Ok(out)
}

/// Copies a zip record's bytes to `out`, as libtorch reads them: a CRC-32 mismatch is not an
/// error (libtorch does not check); returns whether the CRC matched.
pub(super) fn read_record(entry: &mut impl Read, out: &mut impl Write) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match entry.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => out.write_all(&buf[..n])?,
            Err(e) if is_crc_error(&e) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The zip crate reports a CRC mismatch only on the read that reaches the end of the record,
/// after handing out every byte.
pub(super) fn is_crc_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidData && e.to_string().contains("checksum")
}

/// Names of the zip records whose CRC-32 does not match their bytes.
pub(super) fn zip_crc_failures(path: &Path) -> Result<Vec<String>, VerifyError> {
    let io = |what: String| VerifyError::Io {
        path: path.into(),
        what,
    };
    let f = File::open(path).map_err(|e| io(e.to_string()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| io(format!("zip: {e}")))?;
    let mut bad = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| io(format!("zip record {i}: {e}")))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        if !read_record(&mut entry, &mut std::io::sink()).map_err(|e| io(format!("{name}: {e}")))? {
            bad.push(name);
        }
    }
    Ok(bad)
}

/// `data.pkl` with its top-level OrderedDict turned into a plain dict, for libtorch's C++
/// unpickler (which has no POP and reads `collections.OrderedDict(...)` as None):
/// - the leading `GLOBAL collections OrderedDict; BINPUT m; EMPTY_TUPLE; REDUCE` becomes
///   `EMPTY_DICT`;
/// - the first `BINGET m` (the `backward_hooks` OrderedDict() of a tensor) becomes
///   `GLOBAL collections OrderedDict; BINPUT m`, so later references still find it;
/// - a final `BUILD` of the root (state_dict's `_metadata`) is dropped with its state.
///
/// Every other opcode is copied unchanged. None when the pickle is not shaped so (only the
/// protocol 2 opcodes torch.save emits are known), or when ckpt's own parser does not read the
/// result as a plain dict with one item per tensor of the checkpoint.
pub(super) fn plain_dict_pickle(pkl: &[u8], own: &Checkpoint) -> Option<Vec<u8>> {
    let (mut pos, memo) = ordered_dict_head(pkl)?;
    let mut out = Vec::with_capacity(pkl.len() + ORDERED_DICT.len() + 8);
    out.extend_from_slice(&[0x80, 0x02, b'}']);
    let mut stack = ItemStack(vec![(2, false)]);
    let mut global_defined = false;
    let mut build_state_at: Option<usize> = None;
    loop {
        let op = *pkl.get(pos)?;
        let at = out.len();
        let whole = pkl.get(pos..pos + 1 + arg_len(pkl, pos)?)?;
        pos += whole.len();
        let get_id = match op {
            b'h' => Some(whole[1] as u32),
            b'j' => Some(u32::from_le_bytes(whole[1..5].try_into().ok()?)),
            _ => None,
        };
        if op == b'.' {
            if let Some(cut) = build_state_at {
                out.truncate(cut);
            }
            out.push(b'.');
            break;
        }
        if build_state_at.is_some() {
            return None; // BUILD of the root was not the last opcode.
        }
        if get_id == Some(memo) && !global_defined {
            out.extend_from_slice(ORDERED_DICT);
            if memo < 256 {
                out.extend_from_slice(&[b'q', memo as u8]);
            } else {
                out.push(b'r');
                out.extend_from_slice(&memo.to_le_bytes());
            }
            global_defined = true;
        } else {
            out.extend_from_slice(whole);
        }
        if op == b'b' && stack.0.len() == 2 {
            build_state_at = Some(stack.pop_n(1)?);
        } else {
            stack.follow(op, at)?;
        }
        if stack.0.is_empty() {
            return None;
        }
    }
    is_plain_dict_of(&out, own).then_some(out)
}

/// `GLOBAL collections OrderedDict`, as torch.save's pickle starts.
const ORDERED_DICT: &[u8] = b"ccollections\nOrderedDict\n";

/// Where the opcodes after the leading `PROTO 2; GLOBAL collections OrderedDict; BINPUT m;
/// EMPTY_TUPLE; REDUCE` start, and `m`; None for a pickle that does not start so.
fn ordered_dict_head(pkl: &[u8]) -> Option<(usize, u32)> {
    let rest = pkl.strip_prefix(&[0x80u8, 0x02][..])?.strip_prefix(ORDERED_DICT)?;
    let mut pos = 2 + ORDERED_DICT.len();
    let memo: u32 = match *rest.first()? {
        b'q' => {
            pos += 2;
            *pkl.get(pos - 1)? as u32
        }
        b'r' => {
            pos += 5;
            u32::from_le_bytes(pkl.get(pos - 4..pos)?.try_into().ok()?)
        }
        _ => return None,
    };
    if pkl.get(pos..pos + 2)? != b")R" {
        return None;
    }
    Some((pos + 2, memo))
}

/// The length of the argument of the opcode at `pos`; None for an opcode torch.save's
/// protocol 2 pickles do not use.
fn arg_len(pkl: &[u8], pos: usize) -> Option<usize> {
    let line = |from: usize| pkl.get(from..)?.iter().position(|&b| b == b'\n');
    Some(match *pkl.get(pos)? {
        b'K' | b'h' | b'q' | 0x80 | 0x82 => 1,
        b'M' | 0x83 => 2,
        b'J' | b'j' | b'r' | 0x84 => 4,
        b'G' => 8,
        b'X' | b'T' | b'B' | 0x8b => 4 + u32::from_le_bytes(pkl.get(pos + 1..pos + 5)?.try_into().ok()?) as usize,
        b'U' | b'C' | 0x8a => 1 + *pkl.get(pos + 1)? as usize,
        b'c' => {
            let a = line(pos + 1)?;
            let b = line(pos + 2 + a)?;
            a + b + 2
        }
        b'F' | b'I' | b'L' | b'S' | b'V' | b'g' | b'p' => line(pos + 1)? + 1,
        b'(' | b'.' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'}' | b'e' | b'l' | b']' | b's' | b't' | b')'
        | b'u' | 0x81 | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 => 0,
        _ => return None,
    })
}

/// The unpickler's stack as the copy is written: the start offset (in the output) of each
/// item, and whether it is a mark.
struct ItemStack(Vec<(usize, bool)>);

impl ItemStack {
    /// Follows opcode `op`, written at `at`; None when it takes what is not there.
    fn follow(&mut self, op: u8, at: usize) -> Option<()> {
        let replace = |stack: &mut Self, start: usize| stack.0.push((start, false));
        match op {
            b'(' => self.0.push((at, true)),
            b't' | b'l' | b'd' => {
                let start = self.pop_to_mark()?;
                replace(self, start);
            }
            b'e' | b'u' => {
                self.pop_to_mark()?;
            }
            0x85 | b'Q' => {
                let start = self.pop_n(1)?;
                replace(self, start);
            }
            0x86 | b'R' | 0x81 => {
                let start = self.pop_n(2)?;
                replace(self, start);
            }
            0x87 => {
                let start = self.pop_n(3)?;
                replace(self, start);
            }
            b'a' | b'b' => {
                self.pop_n(1)?;
            }
            b's' => {
                self.pop_n(2)?;
            }
            b'q' | b'r' | b'p' | 0x80 => {}
            _ => self.0.push((at, false)),
        }
        Some(())
    }

    /// Pops down to the topmost mark; returns where the mark starts.
    fn pop_to_mark(&mut self) -> Option<usize> {
        let m = self.0.iter().rposition(|&(_, mark)| mark)?;
        let start = self.0[m].0;
        self.0.truncate(m);
        Some(start)
    }

    /// Pops `n` items (none a mark); returns where the lowest starts.
    fn pop_n(&mut self, n: usize) -> Option<usize> {
        let len = self.0.len();
        if len < n || self.0[len - n..].iter().any(|&(_, mark)| mark) {
            return None;
        }
        let start = self.0[len - n].0;
        self.0.truncate(len - n);
        Some(start)
    }
}

/// Whether ckpt's own parser reads `pkl` as a plain dict with one item per tensor of `own`.
fn is_plain_dict_of(pkl: &[u8], own: &Checkpoint) -> bool {
    let Ok(parsed) = crate::pickle::parse(pkl, &crate::pickle::Limits::default()) else {
        return false;
    };
    let crate::pickle::Value::Obj(id) = parsed.root else {
        return false;
    };
    matches!(parsed.heap.get(id), crate::pickle::Obj::Dict(items) if items.len() == own.tensors.len())
}

/// Writes a copy of a zip `.pth` whose top level is an `OrderedDict` of tensors (what
/// `torch.save(model.state_dict())` writes) that libtorch's C++ loader (tch's
/// `Tensor::loadz_multi`, `torch::jit::_load_parameters`) can read: only `data.pkl` changes
/// (see [`plain_dict_pickle`]); the other records are copied byte for byte.
pub fn write_plain_dict_copy(src: &Path, dst: &Path) -> Result<(), VerifyError> {
    let own = crate::read::open(src)?;
    let unsupported = |what: &str| VerifyError::Io {
        path: src.into(),
        what: what.into(),
    };
    if own.format != Format::PthZip || !matches!(top_level(&own), TopLevel::OrderedDict) {
        return Err(unsupported(
            "not a zip .pth whose top level is an OrderedDict of tensors",
        ));
    }
    let pkl = read_data_pkl(src)?;
    let patched = plain_dict_pickle(&pkl, &own)
        .ok_or_else(|| unsupported("data.pkl is not pickled the way torch.save pickles a state_dict"))?;
    copy_zip_with_pickle(src, dst, &patched)
}

/// A temporary file next to nothing the user owns (in the temp dir), removed on drop.
pub(super) struct TempCopy {
    pub(super) path: PathBuf,
}

impl TempCopy {
    pub(super) fn new(orig: &Path) -> Result<TempCopy, VerifyError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let stem = orig.file_stem().and_then(|s| s.to_str()).unwrap_or("ckpt");
        let n = N.fetch_add(1, Ordering::Relaxed);
        // The archive's basename does not matter to libtorch: it takes the prefix from the records.
        let path = std::env::temp_dir().join(format!("ckpt-verify-{}-{n}-{stem}.pth", std::process::id()));
        Ok(TempCopy { path })
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies a zip checkpoint record by record, with `data.pkl` replaced. Records are copied as
/// libtorch would read them, damaged or not (a CRC mismatch is reported by the caller).
pub(super) fn copy_zip_with_pickle(src: &Path, dst: &Path, pkl: &[u8]) -> Result<(), VerifyError> {
    let io = |p: &Path, what: String| VerifyError::Io { path: p.into(), what };
    let f = File::open(src).map_err(|e| io(src, e.to_string()))?;
    let mut zin = zip::ZipArchive::new(f).map_err(|e| io(src, format!("zip: {e}")))?;
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| io(dst, e.to_string()))?;
    let mut zout = zip::ZipWriter::new(std::io::BufWriter::new(out));
    for i in 0..zin.len() {
        let mut entry = zin.by_index(i).map_err(|e| io(src, format!("zip record {i}: {e}")))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let size = if name.ends_with("/data.pkl") {
            pkl.len() as u64
        } else {
            entry.size()
        };
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .with_alignment(64)
            .large_file(size >= u32::MAX as u64);
        zout.start_file(name.as_str(), opts)
            .map_err(|e| io(dst, format!("zip: {e}")))?;
        if name.ends_with("/data.pkl") {
            zout.write_all(pkl).map_err(|e| io(dst, e.to_string()))?;
        } else {
            read_record(&mut entry, &mut zout).map_err(|e| io(src, format!("record {name}: {e}")))?;
        }
    }
    let w = zout.finish().map_err(|e| io(dst, format!("zip: {e}")))?;
    w.into_inner().map_err(|e| io(dst, e.to_string()))?.sync_all().ok();
    Ok(())
}
