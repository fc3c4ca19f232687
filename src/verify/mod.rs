//! `ckpt verify`: proves that libtorch loads a checkpoint to the same tensors ckpt reads.
//!
//! Only with the `tch` feature. libtorch (through tch) loads the file onto a device, every
//! tensor is brought back to the CPU and compared bit for bit with ckpt's own reading
//! ([`crate::read::open`] + [`crate::tensor_data::for_each_chunk`]).
//!
//! How libtorch gets the tensors, per file ([`Loader`]):
//! - `tch-zip`: a zip `.pth` whose top level is a plain dict of tensors, through tch's
//!   `Tensor::loadz_multi_with_device` (`torch::jit::_load_parameters`, libtorch's own
//!   unpickler, storages mapped straight to the device).
//! - `tch-zip-dict`: a zip `.pth` whose top level is an `OrderedDict` of tensors (what
//!   `torch.save(model.state_dict())` writes). libtorch's C++ unpickler turns `OrderedDict` into
//!   None, so a temporary copy is made whose `data.pkl` starts with a plain dict instead (see
//!   `plain_dict_pickle`: the OrderedDict call becomes EMPTY_DICT, the trailing BUILD of
//!   `_metadata` is dropped, nothing else changes); every other record is copied as is.
//!   libtorch then reads that copy as for `tch-zip`: storages, dtypes, offsets, shapes
//!   and strides are still decoded by libtorch from the file's own pickle.
//! - `tch-script`: a TorchScript archive through `Tensor::load_multi_with_device`
//!   (`torch::jit::load`), which returns parameters only; buffers go through `bytes`.
//! - `tch-safetensors`: `Tensor::read_safetensors` (tch's safetensors parser, libtorch tensors),
//!   then moved to the device.
//! - `bytes`: for what libtorch cannot open (legacy files, whole-model pickles, nested
//!   containers, protocol > 2, big-endian storages, dtypes its loaders lack): ckpt's contiguous bytes are handed to
//!   libtorch (`Tensor::f_from_data_size`) and moved to the device and back. That proves
//!   libtorch accepts them as that dtype and shape and that the device round trip keeps every
//!   bit; it is not an independent reading of the file, and the report says so.
//!
//! A tensor is `matched`, `differs` (dtype, shape, strides, device or the first differing
//! element), `skipped` (a dtype tch cannot hand to libtorch: uint16/32/64, float8_e8m0fnu;
//! not counted as passed) or `missing` (one side has it, the other not).
//! Exit codes: [`VerifyReport::exit_code`] is 0 when nothing differs or is missing, else 1;
//! [`VerifyError::exit_code`] is 2 (cannot load, no such device).

mod device;
mod load;
mod plain_dict;
mod report;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

pub use tch::Device;

use crate::model::{Checkpoint, Format};

use load::verify_file;

pub use device::{built_libtorch_dir, built_with_cuda, check_device, device_name, parse_device};
pub use plain_dict::write_plain_dict_copy;
pub use report::{exit_code, Counts, FileLoad, Loader, Outcome, TensorCheck, VerifyError, VerifyReport};

/// Loads FILE with libtorch onto `device` and compares every tensor with ckpt's own reading.
pub fn verify(path: &Path, device: Device) -> Result<VerifyReport, VerifyError> {
    check_device(device)?;
    let own = crate::read::open(path)?;
    run(path, &own, &own, device)
}

/// What `convert --verify` calls on the file it wrote: the same proof as [`verify`], on the
/// output file (libtorch loads it; ckpt reads it back; every tensor must match bit for bit).
pub fn verify_output(path: &Path, device: Device) -> Result<VerifyReport, VerifyError> {
    verify(path, device)
}

/// Loads FILE with libtorch and compares each tensor with the tensor of the same name in
/// `reference` (which need not come from FILE: e.g. the checkpoint a writer was given).
pub fn verify_against(path: &Path, reference: &Checkpoint, device: Device) -> Result<VerifyReport, VerifyError> {
    check_device(device)?;
    let own = crate::read::open(path)?;
    run(path, &own, reference, device)
}

/// `own` is ckpt's reading of `path`; `reference` what libtorch's tensors are compared with.
pub(super) fn run(
    path: &Path,
    own: &Checkpoint,
    reference: &Checkpoint,
    device: Device,
) -> Result<VerifyReport, VerifyError> {
    let mut report = VerifyReport {
        path: path.display().to_string(),
        format: own.format.name().to_string(),
        device: device_name(device),
        files: Vec::new(),
        tensors: Vec::new(),
    };
    let by_name: HashMap<&str, usize> = reference
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    if own.format == Format::Sharded {
        // Each shard is a file of its own; libtorch loads them one by one.
        let mut shards: Vec<PathBuf> = Vec::new();
        for s in &own.storages {
            let p = s.data.source.path().to_path_buf();
            if !shards.contains(&p) {
                shards.push(p);
            }
        }
        let mut seen = HashSet::new();
        for shard in shards {
            let shard_ckpt = crate::read::open(&shard)?;
            for t in &shard_ckpt.tensors {
                seen.insert(t.name.clone());
            }
            verify_file(&shard, &shard_ckpt, reference, &by_name, device, &mut report)?;
        }
        missing_from_file(reference, &seen, path, &mut report);
    } else {
        let seen: HashSet<String> = own.tensors.iter().map(|t| t.name.clone()).collect();
        verify_file(path, own, reference, &by_name, device, &mut report)?;
        missing_from_file(reference, &seen, path, &mut report);
    }
    Ok(report)
}

/// Reference tensors that ckpt does not find in the file at all.
pub(super) fn missing_from_file(
    reference: &Checkpoint,
    seen: &HashSet<String>,
    path: &Path,
    report: &mut VerifyReport,
) {
    for t in &reference.tensors {
        if !seen.contains(&t.name) {
            report.tensors.push(TensorCheck {
                name: t.name.clone(),
                dtype: t.dtype.name().into(),
                shape: t.shape.clone(),
                file: path.display().to_string(),
                loader: Loader::Bytes,
                outcome: Outcome::Missing {
                    why: "not in the file".into(),
                },
            });
        }
    }
}
