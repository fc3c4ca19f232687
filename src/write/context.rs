//! What a writer uses while it writes one output file, passed down as one value.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::Error;
use crate::tensor_data::DataReader;
use crate::write::atomic::{AtomicFile, WriteBehind};
use crate::write::progress::Progress;

/// One output file being written: the file (empty, at offset 0) and the name it will have (for
/// errors), the writeback of its finished bytes, and what every file of a write shares: the
/// reader of tensor bytes and the progress of the whole write.
pub(crate) struct WriteCtx<'a> {
    pub file: &'a mut File,
    pub target: &'a Path,
    pub behind: WriteBehind,
    pub reader: &'a mut DataReader,
    pub progress: &'a mut Progress,
}

impl<'a> WriteCtx<'a> {
    pub fn new(out: &'a mut AtomicFile, reader: &'a mut DataReader, progress: &'a mut Progress) -> Self {
        let behind = out.write_behind();
        let (file, target) = out.file_and_target();
        WriteCtx {
            file,
            target,
            behind,
            reader,
            progress,
        }
    }
}

/// The error of writing to `target`.
pub(crate) fn write_error(target: &Path) -> impl Fn(io::Error) -> Error + Copy + '_ {
    |source| Error::Write {
        path: target.into(),
        source,
    }
}
