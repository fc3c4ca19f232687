//! An input file, opened once and shared by every tensor that lives in it. Tensor data is read
//! from here only when a command needs it (positioned reads, or the read-only map). A source
//! can also be a buffer in memory: the tensors of a checkpoint built in a program
//! ([`crate::CheckpointBuilder`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::assembly::Assembly;
use crate::error::{Error, Result};

/// Opens `path` for reading only if it is a regular file (after following symlinks). A fifo
/// would block `open` until a writer comes, a device could stream forever, a directory has no
/// bytes: each is refused. The type is checked before opening and again on the opened
/// descriptor, which is opened non-blocking, so a path swapped for a fifo in between neither
/// hangs nor gets read.
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata)> {
    let before = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    not_regular(path, &before)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    not_regular(path, &meta)?;
    Ok((file, meta))
}

fn not_regular(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "is a directory"
    } else {
        "is not a regular file (a fifo, socket or device)"
    };
    Err(Error::UnknownFormat {
        path: path.into(),
        why: what.into(),
    })
}

/// Where tensor bytes come from: a file (mapped read-only), a buffer in memory, or a tensor
/// assembled from pieces of other sources (a distributed checkpoint's chunks).
#[derive(Debug)]
pub struct Source {
    /// The file's path, or for a buffer the name errors give it.
    path: PathBuf,
    bytes: Backing,
}

#[derive(Debug)]
enum Backing {
    /// An empty file, which cannot be mapped.
    Empty,
    File(Mmap),
    Memory(Vec<u8>),
    /// No bytes of its own: reads are served by the pieces ([`crate::tensor_data::DataReader`]).
    Assembled(Assembly),
}

impl Source {
    /// Opens and maps a regular file ([`open_regular`]).
    pub fn open(path: &Path) -> Result<Arc<Source>> {
        let (file, meta) = open_regular(path)?;
        // An empty file cannot be mapped; it is simply a source of no bytes.
        let bytes = if meta.len() == 0 {
            Backing::Empty
        } else {
            // SAFETY: the map is read-only; Rust's rule that the bytes behind a `&[u8]` do not
            // change holds only while no other process writes the file. The real hazard is
            // truncation: if another process shortens the file while it is mapped, touching a
            // mapped page past the new end raises SIGBUS, which kills the process (ckpt installs
            // no handler; a rewrite in place only changes the bytes we see). What ckpt does
            // about it: tensor data, the bulk of every read, goes through positioned reads on
            // the file opened again ([`crate::tensor_data::DataReader`]), where a truncated file
            // is a short read and an error, not a signal. The map itself serves headers,
            // pickles and scans, which touch it briefly, and the zero-copy views a library
            // user asks for (`TensorRef::view_ndarray`), which last as long as the user keeps
            // them; those stay exposed. Every offset taken from the bytes is bounds-checked
            // against the map's length, never assumed. Memory-mapping readers (safetensors,
            // torch.load(mmap=True)) share the caveat.
            Backing::File(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
        };
        Ok(Arc::new(Source {
            path: path.to_path_buf(),
            bytes,
        }))
    }

    /// A source of bytes held in memory; `name` stands for a path in error messages.
    pub fn from_memory(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Arc<Source> {
        Arc::new(Source {
            path: name.into(),
            bytes: Backing::Memory(bytes),
        })
    }

    /// A source whose bytes are the global tensor `assembly` puts together; `name` (the
    /// checkpoint's metadata file) stands for a path in error messages.
    pub fn assembled(name: impl Into<PathBuf>, assembly: Assembly) -> Arc<Source> {
        Arc::new(Source {
            path: name.into(),
            bytes: Backing::Assembled(assembly),
        })
    }

    /// The pieces of an assembled source.
    pub fn assembly(&self) -> Option<&Assembly> {
        match &self.bytes {
            Backing::Assembled(a) => Some(a),
            _ => None,
        }
    }

    /// The file's path, or a buffer's name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the bytes come from the file at [`Self::path`] (not from memory).
    pub fn is_file(&self) -> bool {
        matches!(self.bytes, Backing::File(_) | Backing::Empty)
    }

    /// The whole file's bytes (none for an assembled source, whose bytes are read through its
    /// pieces).
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Backing::Empty | Backing::Assembled(_) => &[],
            Backing::File(map) => map,
            Backing::Memory(bytes) => bytes,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match &self.bytes {
            Backing::Assembled(a) => a.nbytes(),
            _ => self.bytes().len() as u64,
        }
    }

    /// Whether there are no bytes.
    #[cfg(feature = "internals")] // only the integration tests call it
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// Lets the pages of the map that hold bytes `offset .. offset + len` go from the process's
    /// resident set, after a reader looked at them through [`Self::bytes`] (a distributed
    /// checkpoint's chunk archives: their headers are read through the map, a few pages each,
    /// and thousands of chunks would otherwise add up). The bytes stay readable: the pages are
    /// read from the file again if touched. Does nothing where the system cannot.
    pub fn release(&self, offset: u64, len: u64) {
        #[cfg(unix)]
        if let Backing::File(map) = &self.bytes {
            const PAGE: u64 = 4096; // a multiple of it is page-aligned on every unix system
            let start = offset / PAGE * PAGE;
            let end = offset.saturating_add(len).min(map.len() as u64);
            if start < end {
                // SAFETY: the map is a read-only shared mapping of a file; MADV_DONTNEED drops
                // the pages from this process, and the next access reads them from the file
                // again (the page cache), with the same bytes: nothing written is lost, since
                // nothing is written. No slice of the map is used across this call by ckpt's
                // readers (they call it once done with the range); a slice still held elsewhere
                // would see the file's bytes again on its next access, as it would anyway.
                let _ = unsafe {
                    map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start as usize, (end - start) as usize)
                };
            }
        }
        #[cfg(not(unix))]
        let _ = (offset, len);
    }

    /// `len` bytes at `offset`, or None if the range is not inside the file.
    pub fn slice(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.bytes().get(start..end)
    }
}
