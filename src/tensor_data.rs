//! A tensor's elements as PyTorch's `t.contiguous()` would hold them: row-major, little-endian,
//! in the tensor's dtype (a storage's pending cast applied), streamed in bounded chunks so no
//! tensor is ever held whole in memory.
//!
//! Bytes come from the input files through positioned reads ([`DataReader`]), not through the
//! readers' memory map: pages read through a map stay in the process's resident set until the
//! map goes away, so streaming a 10 GB checkpoint through it would grow RSS to 10 GB. The map is
//! only used where positioned reads cannot serve (non-unix targets, a file replaced since it was
//! opened). Memory stays bounded for any view: a strided view is produced in pieces of at most
//! [`CHUNK`] bytes, each read through a window of at most 16 MiB or run by run.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::assembly::{Assembly, Run};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{ByteOrder, Cast, Checkpoint, DataRef, Storage, StorageId, Tensor};
use crate::source::Source;

/// Bytes handed to the consumer at a time, at most (before a widening cast). A multiple of
/// every element size, so blocks of a storage always hold whole elements.
///
/// 1 MiB, read into a buffer that is reused for the whole run (a few, lent by a writer that
/// reads ahead, [`Sink::lend`]): it stays in the CPU's cache between the read and the write, so
/// moving bytes through it costs about what the kernel's own file-to-file copy does. Measured
/// on the 1.42 GB benchmark (bench/run.sh), writing without the flush: 1 MiB 0.42 s, 512 KiB
/// 0.46 s, 128 KiB 0.61 s (system calls), 4 MiB 1-2 s (out of cache, and larger page-cache
/// folios that this VM is slow to hand out), `copy_file_range` per tensor 0.60 s, `cp` of the
/// whole file 0.39-0.44 s.
pub const CHUNK: usize = 1 << 20;

/// A non-contiguous view (or piece of one) whose elements span at most this many bytes of its
/// storage is read into memory with one positioned read and gathered there; wider ones are read
/// run by run ([`Gather::read_compact`]).
const SPAN_LIMIT: u64 = 16 << 20;

/// Sees every block a pending cast converts, with the tensor's name: its source bytes and what
/// they became (both little-endian, whole elements), so the converting pass itself can count
/// what the cast loses instead of a second pass reading the input again.
pub type CastWatch = Arc<dyn Fn(&str, Cast, &[u8], &[u8]) + Send + Sync>;

/// What a block's cast is shown to: its source bytes and what they became.
type Seen<'a> = dyn Fn(&[u8], &[u8]) + 'a;

/// Reads storage bytes with positioned reads, keeping one open file per input.
#[derive(Default)]
pub struct DataReader {
    /// By the address of the source; the Arc keeps that address from being reused.
    files: HashMap<usize, (Arc<Source>, Option<File>)>,
    /// The block buffer, kept from one tensor to the next (see [`CHUNK`]).
    block: Vec<u8>,
    /// An assembled tensor's runs of the block being read, and its pieces' bytes for it.
    runs: Vec<Run>,
    gathered: Vec<u8>,
    /// Shown every cast block, before and after.
    watch: Option<CastWatch>,
}

impl DataReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader that shows `watch` every cast block it streams.
    pub fn with_watch(watch: Option<CastWatch>) -> Self {
        DataReader {
            watch,
            ..Self::default()
        }
    }

    /// The input opened for positioned reads; None when it cannot be (then the map serves) or
    /// the bytes are in memory.
    #[cfg_attr(not(unix), allow(dead_code))]
    fn file(&mut self, source: &Arc<Source>) -> Option<&File> {
        if !source.is_file() {
            return None;
        }
        let key = Arc::as_ptr(source) as usize;
        let entry = self
            .files
            .entry(key)
            .or_insert_with(|| (source.clone(), open_same(source)));
        entry.1.as_ref()
    }

    /// Fills `buf` with the bytes at `offset` within the storage data `data`.
    pub fn read(&mut self, data: &DataRef, offset: u64, buf: &mut [u8]) -> Result<()> {
        let path = data.source.path();
        let len = buf.len() as u64;
        if offset.checked_add(len).is_none_or(|end| end > data.len) {
            return Err(Error::malformed(
                path,
                "storage",
                format!("read of {len} bytes at {offset} past the storage's {} bytes", data.len),
            ));
        }
        let at = data.offset + offset;
        if let Some(assembly) = data.source.assembly() {
            return self.read_assembled(path, assembly, at, buf);
        }
        #[cfg(unix)]
        if let Some(file) = self.file(&data.source) {
            use std::os::unix::fs::FileExt;
            return file.read_exact_at(buf, at).map_err(|e| Error::io(path, e));
        }
        let bytes = data.source.slice(at, len).ok_or_else(|| {
            Error::malformed(
                path,
                "storage",
                format!("bytes {at}..{} lie past the end of the file", at + len),
            )
        })?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

impl DataReader {
    /// Fills `buf` with bytes `at..` of an assembled tensor. The bytes a range of the tensor
    /// takes from one piece are one contiguous range of that piece (a box's elements come in its
    /// own row-major order), so each piece is read with one positioned read and the runs are
    /// copied into place: a block of a column-sharded tensor costs a read per chunk, not per row.
    fn read_assembled(&mut self, path: &Path, assembly: &Assembly, at: u64, buf: &mut [u8]) -> Result<()> {
        let bad = |what| Error::malformed(path, "assembled tensor", what);
        let mut runs = std::mem::take(&mut self.runs);
        runs.clear();
        assembly.runs(at, buf.len() as u64, bad, |run| {
            runs.push(run);
            Ok(())
        })?;
        // Per piece touched: (piece, first byte in it, bytes, where they go in `gathered`).
        let mut spans: Vec<(usize, u64, u64, usize)> = Vec::new();
        // Each run's span.
        let mut owner: Vec<usize> = Vec::with_capacity(runs.len());
        for r in &runs {
            match spans.iter().rposition(|s| s.0 == r.piece) {
                Some(i) => {
                    spans[i].2 = r.at + r.len - spans[i].1;
                    owner.push(i);
                }
                None => {
                    owner.push(spans.len());
                    spans.push((r.piece, r.at, r.len, 0));
                }
            }
        }
        if spans.len() == runs.len() {
            // One run from each piece (chunks of whole rows): each is read straight into place.
            let mut filled = 0usize;
            let mut done = Ok(());
            for r in &runs {
                let n = r.len as usize;
                done = self.read(&assembly.pieces()[r.piece].data, r.at, &mut buf[filled..filled + n]);
                if done.is_err() {
                    break;
                }
                filled += n;
            }
            self.runs = runs;
            return done;
        }
        let mut gathered = std::mem::take(&mut self.gathered);
        let mut pos = 0usize;
        for s in &mut spans {
            s.3 = pos;
            pos += s.2 as usize;
        }
        gathered.resize(pos, 0);
        let mut done = Ok(());
        for &(piece, start, len, at) in &spans {
            done = self.read(&assembly.pieces()[piece].data, start, &mut gathered[at..at + len as usize]);
            if done.is_err() {
                break;
            }
        }
        if done.is_ok() {
            let mut filled = 0usize;
            for (r, &i) in runs.iter().zip(&owner) {
                let s = spans[i];
                let from = s.3 + (r.at - s.1) as usize;
                buf[filled..filled + r.len as usize].copy_from_slice(&gathered[from..from + r.len as usize]);
                filled += r.len as usize;
            }
        }
        self.runs = runs;
        self.gathered = gathered;
        done
    }

    /// Lends the block buffer, at least `len` bytes long; give it back with [`Self::put_block`].
    fn take_block(&mut self, len: usize) -> Vec<u8> {
        let mut block = std::mem::take(&mut self.block);
        if block.len() < len {
            block.resize(len, 0);
        }
        block
    }

    fn put_block(&mut self, block: Vec<u8>) {
        self.block = block;
    }
}

/// Opens the source's file again, if it still is the file that was mapped: same length, same
/// first and last 4 KiB (a file replaced under the same name is read through the map instead).
fn open_same(source: &Source) -> Option<File> {
    // Only a regular file: a path swapped for a fifo since it was mapped must not block.
    let (file, meta) = crate::source::open_regular(source.path()).ok()?;
    let len = meta.len();
    if len != source.len() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        let n = len.min(4096);
        for at in [0, len - n] {
            let mut buf = vec![0u8; n as usize];
            file.read_exact_at(&mut buf, at).ok()?;
            if source.slice(at, n)? != buf.as_slice() {
                return None;
            }
        }
    }
    Some(file)
}

/// The element converter for pending casts: appends `src` (whole `from` elements,
/// little-endian) converted to `to` elements to `out`; pairs [`crate::elem`] does not
/// convert are refused with a message.
fn convert(from: DType, to: DType, src: &[u8], out: &mut Vec<u8>) -> std::result::Result<(), String> {
    if from == to {
        out.extend_from_slice(src);
        return Ok(());
    }
    if !crate::elem::supported(from, to) {
        return Err(format!("no element conversion from {from} to {to}"));
    }
    crate::elem::convert(from, to, src, out);
    Ok(())
}

/// How a storage's bytes become output bytes.
struct Plan {
    /// The element type in the file.
    src: DType,
    /// Byte-swap unit for big-endian files; 1 when nothing is swapped.
    swap_unit: usize,
    cast: Option<Cast>,
}

impl Plan {
    fn for_storage(storage: &Storage, elem: DType) -> Plan {
        let src = storage.cast.map_or(elem, |c| c.from);
        let swap_unit = match storage.byte_order {
            ByteOrder::Big => src.swap_unit(),
            ByteOrder::Little => 1,
        };
        Plan {
            src,
            swap_unit,
            cast: storage.cast.filter(|c| c.from != c.to),
        }
    }

    /// Turns a block of file bytes (whole elements) into output bytes and hands them on.
    fn emit<E: From<Error>>(
        &self,
        path: &Path,
        bytes: &mut [u8],
        conv: &mut Vec<u8>,
        seen: &Seen<'_>,
        sink: &mut (impl Sink<E> + ?Sized),
    ) -> Result<(), E> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.swap(bytes);
        let Some(cast) = self.cast else {
            return sink.put(bytes);
        };
        conv.clear();
        cast_into(cast, path, bytes, conv, seen)?;
        sink.put(conv)
    }

    /// Puts big-endian elements into little-endian order, in place.
    fn swap(&self, bytes: &mut [u8]) {
        if self.swap_unit > 1 {
            for unit in bytes.chunks_exact_mut(self.swap_unit) {
                unit.reverse();
            }
        }
    }
}

/// Appends the elements of `bytes` (little-endian) cast as `c` says to `out`, and shows `seen`
/// both.
fn cast_into(c: Cast, path: &Path, bytes: &[u8], out: &mut Vec<u8>, seen: &Seen<'_>) -> Result<()> {
    let start = out.len();
    convert(c.from, c.to, bytes, out).map_err(|what| Error::Unsupported {
        path: path.into(),
        what,
    })?;
    seen(bytes, &out[start..]);
    Ok(())
}

/// Where streamed tensor bytes go. Any `FnMut(&[u8])` closure is one. A sink that hands its
/// blocks on whole (the writers' read-ahead queue) also lends them, so a contiguous tensor's
/// bytes are read, or cast, straight into the block that is handed on instead of being copied
/// into it: one pass over the bytes fewer on the reading thread.
pub trait Sink<E> {
    /// Takes the next piece of bytes (copying it, if it keeps it).
    fn put(&mut self, piece: &[u8]) -> Result<(), E>;

    /// A buffer to fill with the next piece, of any length and contents; None when the sink
    /// does not lend buffers.
    fn lend(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// Takes a lent buffer back holding the next piece (all of its bytes).
    fn put_lent(&mut self, block: Vec<u8>) -> Result<(), E> {
        self.put(&block)
    }
}

impl<E, F: FnMut(&[u8]) -> Result<(), E>> Sink<E> for F {
    fn put(&mut self, piece: &[u8]) -> Result<(), E> {
        self(piece)
    }
}

/// Calls `sink` with consecutive pieces of the tensor's C-contiguous little-endian bytes, in
/// its dtype (a pending cast of its storage applied). Errors: the view does not fit its
/// storage, the input cannot be read, the cast is not available, or what `sink` returns.
pub fn for_each_chunk<E: From<Error>>(
    ckpt: &Checkpoint,
    tensor: &Tensor,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    for_each_chunk_with(&mut DataReader::new(), ckpt, tensor, &mut sink)
}

/// [`for_each_chunk`] reusing `reader`'s open files (writers stream many tensors), into any
/// [`Sink`].
pub fn for_each_chunk_with<E: From<Error>>(
    reader: &mut DataReader,
    ckpt: &Checkpoint,
    tensor: &Tensor,
    sink: &mut (impl Sink<E> + ?Sized),
) -> Result<(), E> {
    stream_tensor(reader, ckpt, tensor, CHUNK, SPAN_LIMIT, sink)
}

/// The streaming, with the chunk size and window limit as parameters (tests shrink them).
fn stream_tensor<E: From<Error>>(
    reader: &mut DataReader,
    ckpt: &Checkpoint,
    tensor: &Tensor,
    chunk: usize,
    span_limit: u64,
    sink: &mut (impl Sink<E> + ?Sized),
) -> Result<(), E> {
    let storage = ckpt.storage(tensor.storage);
    let path = storage.data.source.path();
    let checked = check_view(storage, tensor)
        .map_err(|what| E::from(Error::malformed(path, format!("tensor '{}'", tensor.name), what)))?;
    let Some((plan, lo, hi)) = checked else {
        return Ok(());
    };
    let watch = reader.watch.clone();
    let seen = |src: &[u8], out: &[u8]| {
        if let (Some(watch), Some(cast)) = (&watch, plan.cast) {
            watch(&tensor.name, cast, src, out);
        }
    };
    if tensor.is_contiguous() {
        if let Some(block) = sink.lend() {
            return read_lent(reader, &storage.data, &plan, (lo, hi, chunk), block, &seen, sink);
        }
    }
    let mut conv = Vec::new();
    let mut emit = |bytes: &mut [u8]| plan.emit(path, bytes, &mut conv, &seen, sink);
    if tensor.is_contiguous() {
        // One run of bytes: read it block by block.
        let mut buf = reader.take_block(chunk.min((hi - lo) as usize));
        let done = read_blocks(reader, &storage.data, lo, hi, chunk, &mut buf, emit);
        reader.put_block(buf);
        return done;
    }
    let mut gather = Gather {
        reader,
        data: &storage.data,
        esize: plan.src.size(),
        span_limit,
        tmp: Vec::new(),
        compact: Vec::new(),
    };
    gather.stream(tensor, (lo, hi), chunk, &mut emit)
}

/// Whether the tensor's view fits its storage; if so, how its bytes become output bytes and the
/// byte range `[lo, hi)` of the storage it covers (None for an empty tensor).
fn check_view(storage: &Storage, tensor: &Tensor) -> std::result::Result<Option<(Plan, u64, u64)>, String> {
    if let Some(c) = storage.cast {
        if c.to != tensor.dtype {
            return Err(format!(
                "tensor is {} but its storage is being cast to {}",
                tensor.dtype, c.to
            ));
        }
    }
    let plan = Plan::for_storage(storage, tensor.dtype);
    if tensor.shape.len() != tensor.stride.len() {
        return Err(format!(
            "size {:?} and stride {:?} differ in length",
            tensor.shape, tensor.stride
        ));
    }
    let Some((lo, hi)) = view_span(tensor, plan.src.size() as u64)? else {
        return Ok(None);
    };
    if hi > storage.data.len {
        return Err(format!("view reaches byte {hi} of a {}-byte storage", storage.data.len));
    }
    Ok(Some((plan, lo, hi)))
}

/// Reads the elements of a strided view, tile by tile, with bounded buffers.
struct Gather<'a> {
    reader: &'a mut DataReader,
    data: &'a DataRef,
    esize: usize,
    /// Spans up to this many bytes are read with one positioned read.
    span_limit: u64,
    /// Scratch buffers, reused from tile to tile.
    tmp: Vec<u8>,
    compact: Vec<u8>,
}

impl Gather<'_> {
    /// Hands `emit` the view's elements in row-major order, in pieces of at most `chunk` bytes:
    /// read from one window when the view's span `[lo, hi)` is small enough, else tile by tile.
    fn stream<E: From<Error>>(
        &mut self,
        tensor: &Tensor,
        (lo, hi): (u64, u64),
        chunk: usize,
        emit: &mut impl FnMut(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let (es, esize) = (self.esize, self.esize as u64);
        let window = if hi - lo <= self.span_limit {
            let mut span = vec![0u8; (hi - lo) as usize];
            self.reader.read(self.data, lo, &mut span)?;
            Some(span)
        } else {
            None
        };
        let mut out = Vec::new();
        for_each_tile(
            &tensor.shape,
            &tensor.stride,
            tensor.offset,
            esize,
            chunk as u64,
            &mut |shape, stride, offset| {
                out.clear();
                match &window {
                    Some(span) => gather_into(shape, stride, offset - lo / esize, es, span, &mut out),
                    None => self.tile(shape, stride, offset, &mut out)?,
                }
                emit(&mut out)
            },
        )
    }

    /// Appends one tile's elements to `out`: its span read whole when small enough, else
    /// compactly ([`Gather::read_compact`]).
    fn tile(&mut self, shape: &[u64], stride: &[u64], offset: u64, out: &mut Vec<u8>) -> Result<()> {
        let (es, esize) = (self.esize, self.esize as u64);
        let (t_lo, t_hi) = tile_span(shape, stride, offset);
        if (t_hi - t_lo) * esize <= self.span_limit {
            self.tmp.resize(((t_hi - t_lo) * esize) as usize, 0);
            self.reader.read(self.data, t_lo * esize, &mut self.tmp)?;
            gather_into(shape, stride, offset - t_lo, es, &self.tmp, out);
        } else {
            let cstride = self.read_compact(shape, stride, offset)?;
            gather_into(shape, &cstride, 0, es, &self.compact, out);
        }
        Ok(())
    }

    /// Reads the elements of a (chunk-sized) view whose span is too wide to read whole into
    /// `self.compact`, compactly: its dimensions (those of size > 1 and stride > 0) ordered by
    /// stride, largest first, so that the runs along the smallest stride are read with one
    /// positioned read each (stride 1), one covering read each (small strides), or element by
    /// element. Returns the strides of the view's dimensions within `self.compact`.
    fn read_compact(&mut self, shape: &[u64], stride: &[u64], offset: u64) -> Result<Vec<u64>> {
        let (reader, data, esize) = (&mut *self.reader, self.data, self.esize);
        let (buf, tmp) = (&mut self.compact, &mut self.tmp);
        let n = shape.len();
        let mut dims: Vec<usize> = (0..n).filter(|&d| shape[d] > 1 && stride[d] > 0).collect();
        dims.sort_by(|&a, &b| stride[b].cmp(&stride[a]).then(a.cmp(&b)));
        let mut cstride = vec![0u64; n];
        let mut total = 1u64;
        for &d in dims.iter().rev() {
            cstride[d] = total;
            total *= shape[d];
        }
        buf.resize(total as usize * esize, 0);
        let e = esize as u64;
        let Some((&inner, outer)) = dims.split_last() else {
            reader.read(data, offset * e, &mut buf[..esize])?;
            return Ok(cstride);
        };
        let (len, step) = (shape[inner] as usize, stride[inner]);
        let mut index = vec![0u64; outer.len()];
        let mut pos = 0usize;
        loop {
            let src = offset + outer.iter().zip(&index).map(|(&d, &i)| i * stride[d]).sum::<u64>();
            let dst = &mut buf[pos * esize..(pos + len) * esize];
            if step == 1 {
                reader.read(data, src * e, dst)?;
            } else if step <= 16 {
                let covering = ((len as u64 - 1) * step + 1) as usize * esize;
                tmp.resize(covering, 0);
                reader.read(data, src * e, tmp)?;
                for k in 0..len {
                    let from = k * step as usize * esize;
                    dst[k * esize..(k + 1) * esize].copy_from_slice(&tmp[from..from + esize]);
                }
            } else {
                for k in 0..len {
                    reader.read(data, (src + k as u64 * step) * e, &mut dst[k * esize..(k + 1) * esize])?;
                }
            }
            pos += len;
            // Next outer index, the last (smallest stride) fastest: `buf` fills in order.
            let mut k = outer.len();
            loop {
                if k == 0 {
                    return Ok(cstride);
                }
                k -= 1;
                index[k] += 1;
                if index[k] < shape[outer[k]] {
                    break;
                }
                index[k] = 0;
            }
        }
    }
}

/// The byte range `[lo, hi)` of the storage that the view's elements cover (element size
/// `esize`), or None for an empty tensor; checked arithmetic throughout.
fn view_span(tensor: &Tensor, esize: u64) -> std::result::Result<Option<(u64, u64)>, String> {
    let mut numel: u64 = 1;
    for &d in &tensor.shape {
        numel = numel.checked_mul(d).ok_or("number of elements overflows")?;
    }
    if numel == 0 {
        return Ok(None);
    }
    numel.checked_mul(esize).ok_or("size in bytes overflows")?;
    let mut last = tensor.offset;
    for (&d, &s) in tensor.shape.iter().zip(&tensor.stride) {
        last = (d - 1)
            .checked_mul(s)
            .and_then(|x| last.checked_add(x))
            .ok_or("view extent overflows")?;
    }
    let lo = tensor.offset.checked_mul(esize).ok_or("view extent overflows")?;
    let hi = last
        .checked_add(1)
        .and_then(|e| e.checked_mul(esize))
        .ok_or("view extent overflows")?;
    Ok(Some((lo, hi)))
}

/// Splits a view (element `offset`, `stride` in elements) into consecutive pieces of its
/// row-major order of at most [`CHUNK`] bytes each (a single element may exceed it only if an
/// element did): runs of whole rows of the outermost dimension, or, where one row is larger
/// than a chunk, the rows' own pieces.
fn for_each_tile<E>(
    shape: &[u64],
    stride: &[u64],
    offset: u64,
    esize: u64,
    chunk: u64,
    f: &mut impl FnMut(&[u64], &[u64], u64) -> Result<(), E>,
) -> Result<(), E> {
    let numel: u64 = shape.iter().product();
    if numel == 0 {
        return Ok(());
    }
    if shape.is_empty() || numel * esize <= chunk {
        return f(shape, stride, offset);
    }
    let row_bytes = shape[1..].iter().product::<u64>() * esize;
    if row_bytes <= chunk {
        let per = (chunk / row_bytes).max(1);
        let mut sub = shape.to_vec();
        let mut r = 0;
        while r < shape[0] {
            sub[0] = per.min(shape[0] - r);
            f(&sub, stride, offset + r * stride[0])?;
            r += sub[0];
        }
        Ok(())
    } else {
        for r in 0..shape[0] {
            for_each_tile(&shape[1..], &stride[1..], offset + r * stride[0], esize, chunk, f)?;
        }
        Ok(())
    }
}

/// The elements `[lo, hi)` a non-empty view covers.
fn tile_span(shape: &[u64], stride: &[u64], offset: u64) -> (u64, u64) {
    let last: u64 = shape.iter().zip(stride).map(|(&d, &s)| (d - 1) * s).sum();
    (offset, offset + last + 1)
}

/// Appends the view's elements in row-major order to `out`, copying from `window`, in which
/// the view's first element is at element `offset`.
fn gather_into(shape: &[u64], stride: &[u64], offset: u64, esize: usize, window: &[u8], out: &mut Vec<u8>) {
    let ndim = shape.len();
    if shape.contains(&0) {
        return;
    }
    // Runs along the last dimension are contiguous in the source when its stride is 1.
    let (run_len, run_stride) = match ndim {
        0 => (1usize, 1u64),
        _ => (shape[ndim - 1] as usize, stride[ndim - 1]),
    };
    let outer_dims = ndim.saturating_sub(1);
    let mut index = vec![0u64; outer_dims];
    loop {
        let mut at = offset;
        for (i, s) in index.iter().zip(stride) {
            at += i * s;
        }
        if run_stride == 1 || run_len == 1 {
            let from = at as usize * esize;
            out.extend_from_slice(&window[from..from + run_len * esize]);
        } else {
            for i in 0..run_len as u64 {
                let from = (at + i * run_stride) as usize * esize;
                out.extend_from_slice(&window[from..from + esize]);
            }
        }
        // Advance the outer index, last dimension fastest.
        let mut d = outer_dims;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// Calls `sink` with consecutive pieces of a whole storage's bytes, little-endian and with its
/// pending cast applied: what a writer stores for it. A big-endian storage is swapped using the
/// element size of the tensors that view it (an error when they disagree or none does).
#[cfg(feature = "internals")] // only the integration tests call it
pub fn for_each_storage_chunk<E: From<Error>>(
    ckpt: &Checkpoint,
    id: StorageId,
    sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    for_each_storage_chunk_with(&mut DataReader::new(), ckpt, id, sink)
}

/// [`for_each_storage_chunk`] reusing `reader`'s open files.
pub fn for_each_storage_chunk_with<E: From<Error>>(
    reader: &mut DataReader,
    ckpt: &Checkpoint,
    id: StorageId,
    mut sink: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let storage = ckpt.storage(id);
    let path = storage.data.source.path();
    let place = storage
        .key
        .as_ref()
        .map_or_else(|| format!("storage #{}", id.0), |k| format!("storage '{k}'"));
    let bad = |what: String| E::from(Error::malformed(path, &place, what));
    let elem = storage_elem(ckpt, id).map_err(&bad)?;
    let plan = match elem {
        Some(d) => Plan::for_storage(storage, d),
        None if storage.data.len == 0 => return Ok(()),
        // Nothing says how wide its elements are; fine as long as nothing needs it.
        None if storage.byte_order == ByteOrder::Little && storage.cast.is_none() => {
            Plan::for_storage(storage, DType::U8)
        }
        None => {
            return Err(bad(
                "no tensor views it, so its element size (for byte order or cast) is unknown".into(),
            ))
        }
    };
    let esize = plan.src.size() as u64;
    let len = storage.data.len;
    if !len.is_multiple_of(esize) && (plan.swap_unit > 1 || plan.cast.is_some()) {
        return Err(bad(format!(
            "{len} bytes is not a whole number of {}-byte elements",
            esize
        )));
    }
    let mut buf = reader.take_block(CHUNK.min(len as usize));
    let mut conv = Vec::new();
    // Storages are written whole only to .pth files, whose writes show no cast blocks.
    let done = read_blocks(reader, &storage.data, 0, len, CHUNK, &mut buf, |block| {
        plan.emit(path, block, &mut conv, &|_, _| {}, &mut sink)
    });
    reader.put_block(buf);
    done
}

/// Reads bytes `lo..hi` of `data` block by block (at most `chunk` bytes each) into `buf` and
/// hands each block to `each`.
fn read_blocks<E: From<Error>>(
    reader: &mut DataReader,
    data: &DataRef,
    lo: u64,
    hi: u64,
    chunk: usize,
    buf: &mut [u8],
    mut each: impl FnMut(&mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut pos = lo;
    while pos < hi {
        let n = (chunk as u64).min(hi - pos) as usize;
        reader.read(data, pos, &mut buf[..n])?;
        each(&mut buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

/// [`read_blocks`] (bytes `lo..hi` in blocks of at most `chunk`) into the sink's own buffers:
/// each block is read into a lent buffer and handed back, or, when cast, read into the
/// reader's block and cast into a lent buffer.
fn read_lent<E: From<Error>>(
    reader: &mut DataReader,
    data: &DataRef,
    plan: &Plan,
    (lo, hi, chunk): (u64, u64, usize),
    first: Vec<u8>,
    seen: &Seen<'_>,
    sink: &mut (impl Sink<E> + ?Sized),
) -> Result<(), E> {
    let path = data.source.path();
    let mut lent = Some(first);
    let mut pos = lo;
    while pos < hi {
        let n = (chunk as u64).min(hi - pos) as usize;
        let mut block = lent.take().or_else(|| sink.lend()).unwrap_or_default();
        match plan.cast {
            None => {
                // Shortening a reused block costs nothing; only a new one is zeroed once.
                block.resize(n, 0);
                reader.read(data, pos, &mut block)?;
                plan.swap(&mut block);
            }
            Some(cast) => {
                let mut buf = reader.take_block(n);
                let read = reader.read(data, pos, &mut buf[..n]);
                plan.swap(&mut buf[..n]);
                block.clear();
                let done = read.and_then(|()| cast_into(cast, path, &buf[..n], &mut block, seen));
                reader.put_block(buf);
                done?;
            }
        }
        sink.put_lent(block)?;
        pos += n as u64;
    }
    Ok(())
}

/// The element type the storage's tensors agree on, by byte layout: the same size and swap
/// unit (a float32 and an int32 view agree). None when no tensor views it.
pub fn storage_elem(ckpt: &Checkpoint, id: StorageId) -> std::result::Result<Option<DType>, String> {
    let mut found: Option<DType> = None;
    for t in ckpt.tensors.iter().filter(|t| t.storage == id) {
        match found {
            None => found = Some(t.dtype),
            Some(d) if d.size() == t.dtype.size() && d.swap_unit() == t.dtype.swap_unit() => {}
            Some(d) => {
                let storage = ckpt.storage(id);
                if storage.byte_order == ByteOrder::Big || storage.cast.is_some() {
                    return Err(format!(
                        "viewed as both {d} and {} (tensor '{}'): its element size is ambiguous",
                        t.dtype, t.name
                    ));
                }
            }
        }
    }
    Ok(found)
}

#[cfg(feature = "cli")]
/// SHA-256 of the tensor's contiguous little-endian bytes, hex; for an unreadable tensor the
/// reason, in angle brackets (see [`try_sha256_hex`]).
pub fn sha256_hex(ckpt: &Checkpoint, tensor: &Tensor) -> String {
    try_sha256_hex(ckpt, tensor).unwrap_or_else(|e| format!("<unreadable: {e}>"))
}

/// SHA-256 of the tensor's contiguous little-endian bytes, hex.
pub fn try_sha256_hex(ckpt: &Checkpoint, tensor: &Tensor) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for_each_chunk::<Error>(ckpt, tensor, |b| {
        h.update(b);
        Ok(())
    })?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Format, Node, Origin};
    use proptest::prelude::*;

    /// The view's elements the obvious way, from the map.
    fn naive(data: &[u8], t: &Tensor, swap: bool) -> Vec<u8> {
        let e = t.dtype.size();
        let mut out = Vec::new();
        let n = t.numel();
        for flat in 0..n {
            let mut rem = flat;
            let mut at = t.offset;
            for d in (0..t.shape.len()).rev() {
                at += (rem % t.shape[d]) * t.stride[d];
                rem /= t.shape[d];
            }
            let mut el = data[at as usize * e..(at as usize + 1) * e].to_vec();
            if swap {
                for u in el.chunks_mut(t.dtype.swap_unit()) {
                    u.reverse();
                }
            }
            out.extend_from_slice(&el);
        }
        out
    }

    fn checkpoint(path: &std::path::Path, t: Tensor, big: bool) -> Checkpoint {
        let source = Source::open(path).unwrap();
        let len = source.len();
        Checkpoint {
            format: Format::PthZip,
            root: Node::Tensor(0),
            tensors: vec![t],
            storages: vec![Storage {
                key: None,
                location: "cpu".into(),
                byte_order: if big { ByteOrder::Big } else { ByteOrder::Little },
                data: DataRef { source, offset: 0, len },
                cast: None,
            }],
            metadata: Default::default(),
            globals: Default::default(),
            module_classes: Default::default(),
            modules: Vec::new(),
            names: Default::default(),
            origin: Origin::Data,
            files: vec![path.to_path_buf()],
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Tiles, windows and compact run-by-run reads (limits shrunk to a few bytes, so every
        /// path is taken) give exactly the view's elements in row-major order.
        #[test]
        fn every_read_path_gives_the_elements(
            dims in proptest::collection::vec((1u64..6, 0u64..40), 0..4),
            offset in 0u64..7,
            dtype in proptest::sample::select(vec![DType::U8, DType::F16, DType::F32, DType::C64, DType::C128]),
            big in any::<bool>(),
            chunk_elems in 1usize..20,
            span_elems in 1u64..40,
        ) {
            let shape: Vec<u64> = dims.iter().map(|d| d.0).collect();
            let stride: Vec<u64> = dims.iter().map(|d| d.1).collect();
            let e = dtype.size();
            let last = offset + shape.iter().zip(&stride).map(|(&d, &s)| (d - 1) * s).sum::<u64>();
            let bytes: Vec<u8> = (0..(last + 1) as usize * e).map(|i| (i * 7 + i / 251) as u8).collect();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("d");
            std::fs::write(&path, &bytes).unwrap();
            let t = Tensor { name: "t".into(), dtype, shape, stride, offset, storage: StorageId(0), requires_grad: false, parameter: false };
            let ckpt = checkpoint(&path, t.clone(), big);
            let mut got = Vec::new();
            let mut pieces = 0;
            stream_tensor::<Error>(&mut DataReader::new(), &ckpt, &t, chunk_elems * e, span_elems * e as u64, &mut |c: &[u8]| {
                assert!(c.len() <= (chunk_elems * e).max(e), "piece of {} bytes", c.len());
                got.extend_from_slice(c);
                pieces += 1;
                Ok(())
            }).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, naive(&bytes, &t, big && dtype.swap_unit() > 1));
        }
    }

    /// A sink that lends blocks, as the writers' read-ahead queue does: lent blocks come with
    /// stale bytes and lengths that must not leak into the output.
    struct Lending {
        got: Vec<u8>,
        pieces: Vec<usize>,
        lent: usize,
    }

    impl Sink<Error> for Lending {
        fn put(&mut self, piece: &[u8]) -> Result<()> {
            self.got.extend_from_slice(piece);
            self.pieces.push(piece.len());
            Ok(())
        }

        fn lend(&mut self) -> Option<Vec<u8>> {
            self.lent += 1;
            Some(vec![0xAB; 3 + 5 * (self.lent % 4)])
        }
    }

    /// Contiguous tensors read into lent blocks, with big-endian swaps and pending casts, give
    /// the bytes the copying path gives, in pieces no larger than the chunk (a cast's scaled).
    #[test]
    fn lent_blocks_give_the_copying_paths_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let bytes: Vec<u8> = (0..4000u32).map(|i| (i * 37 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let cases = [
            (DType::U8, false, None),
            (DType::F32, true, None),
            (DType::F16, true, Some(DType::F32)),
            (DType::F32, false, Some(DType::BF16)),
            (DType::F64, true, Some(DType::F16)),
        ];
        for (dtype, big, cast_to) in cases {
            let n = bytes.len() as u64 / dtype.size() as u64 - 3;
            let mut t = Tensor { name: "t".into(), dtype, shape: vec![n], stride: vec![1], offset: 2, storage: StorageId(0), requires_grad: false, parameter: false };
            let mut ckpt = checkpoint(&path, t.clone(), big);
            if let Some(to) = cast_to {
                ckpt.storages[0].cast = Some(Cast { from: dtype, to });
                t.dtype = to;
                ckpt.tensors[0].dtype = to;
            }
            for chunk_elems in [1usize, 7, 64, 5000] {
                let chunk = chunk_elems * dtype.size();
                let mut copied = Vec::new();
                stream_tensor::<Error>(&mut DataReader::new(), &ckpt, &t, chunk, 1 << 20, &mut |c: &[u8]| {
                    copied.extend_from_slice(c);
                    Ok(())
                })
                .unwrap();
                let mut lending = Lending { got: Vec::new(), pieces: Vec::new(), lent: 0 };
                stream_tensor::<Error>(&mut DataReader::new(), &ckpt, &t, chunk, 1 << 20, &mut lending).unwrap();
                let what = format!("{dtype} big={big} cast={cast_to:?} chunk={chunk}");
                assert_eq!(lending.got, copied, "{what}");
                assert_eq!(lending.lent, lending.pieces.len(), "{what}: every block lent and handed back");
                let limit = chunk / dtype.size() * t.dtype.size();
                assert!(lending.pieces.iter().all(|&p| p <= limit), "{what}: {:?}", lending.pieces);
                if cast_to.is_none() {
                    assert_eq!(copied, naive(&bytes, &t, big && dtype.swap_unit() > 1), "{what}");
                }
            }
        }
    }

    /// A 7 x 5 u16 tensor (element (i, j) = 100 i + j) cut into an uneven grid of pieces held
    /// in memory, streamed in blocks of every size: each block cuts rows at another place.
    #[test]
    fn assembled_tensors_stream_in_blocks_of_any_size() {
        use crate::assembly::{Assembly, Piece};
        let cuts: [([u64; 2], [u64; 2]); 4] = [([0, 0], [4, 2]), ([0, 2], [4, 3]), ([4, 0], [3, 4]), ([4, 4], [3, 1])];
        let pieces = cuts
            .iter()
            .map(|(o, sz)| {
                let mut bytes = Vec::new();
                for i in o[0]..o[0] + sz[0] {
                    for j in o[1]..o[1] + sz[1] {
                        bytes.extend_from_slice(&((100 * i + j) as u16).to_le_bytes());
                    }
                }
                let len = bytes.len() as u64;
                let source = Source::from_memory("chunk", bytes);
                Piece { offsets: o.to_vec(), sizes: sz.to_vec(), data: DataRef { source, offset: 0, len } }
            })
            .collect();
        let assembly = Assembly::new(vec![7, 5], 2, pieces).unwrap();
        let want: Vec<u8> = (0..7u16).flat_map(|i| (0..5u16).flat_map(move |j| (100 * i + j).to_le_bytes())).collect();
        let t = Tensor {
            name: "t".into(),
            dtype: DType::U16,
            shape: vec![7, 5],
            stride: vec![5, 1],
            offset: 0,
            storage: StorageId(0),
            requires_grad: false,
            parameter: false,
        };
        let mut ckpt = checkpoint(&std::env::current_exe().unwrap(), t.clone(), false);
        ckpt.storages[0].data = DataRef { source: Source::assembled("x/.metadata", assembly), offset: 0, len: 70 };
        for elems in 1..=36 {
            let mut got = Vec::new();
            stream_tensor::<Error>(&mut DataReader::new(), &ckpt, &t, elems * 2, 1 << 20, &mut |c: &[u8]| {
                got.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, want, "blocks of {elems} elements");
        }
    }

    #[test]
    fn wide_transposed_view_is_read_in_runs_with_bounded_buffers() {
        // 64 x 48 u16 matrix, transposed: with 16-element chunks and an 8-element window every
        // tile goes through read_compact.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let bytes: Vec<u8> = (0..64 * 48 * 2).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let t = Tensor {
            name: "t".into(),
            dtype: DType::U16,
            shape: vec![48, 64],
            stride: vec![1, 48],
            offset: 0,
            storage: StorageId(0),
            requires_grad: false,
            parameter: false,
        };
        let ckpt = checkpoint(&path, t.clone(), false);
        let mut got = Vec::new();
        stream_tensor::<Error>(&mut DataReader::new(), &ckpt, &t, 32, 16, &mut |c: &[u8]| {
            assert!(c.len() <= 32);
            got.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, naive(&bytes, &t, false));
    }
}
