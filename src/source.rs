//! An input file, opened once and shared by every tensor that lives in it. Tensor data is read
//! from here only when a command needs it (positioned reads, or the read-only map).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};

#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    map: Option<Mmap>,
}

impl Source {
    pub fn open(path: &Path) -> Result<Arc<Source>> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::UnknownFormat {
                path: path.into(),
                why: "is a directory".into(),
            });
        }
        // An empty file cannot be mapped; it is simply a source of no bytes.
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the map is read-only and private to this process. Another process that
            // truncates or rewrites the file while we read it could change the bytes under us;
            // that is the accepted caveat of every mmap-based checkpoint reader (safetensors,
            // torch.load(mmap=True)), and every offset we derive is bounds-checked against the
            // map's length, never assumed.
            Some(unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
        };
        Ok(Arc::new(Source {
            path: path.to_path_buf(),
            map,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// `len` bytes at `offset`, or None if the range is not inside the file.
    pub fn slice(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.bytes().get(start..end)
    }
}
