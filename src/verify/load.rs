//! Loading a file with libtorch by the best path it offers, and comparing tensors bit for bit.

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor as TchTensor};

use crate::dtype::DType;
use crate::model::{ByteOrder, Checkpoint, Format, Tensor};
use crate::tensor_data::for_each_chunk;

use super::device::device_name;
use super::plain_dict::{
    copy_zip_with_pickle, plain_dict_pickle, read_data_pkl, top_level, zip_crc_failures, TempCopy, TopLevel,
};
use super::report::{FileLoad, Loader, Outcome, TensorCheck, VerifyError, VerifyReport};

/// The tch kind for a dtype, where tch has one.
pub fn kind_of(dtype: DType) -> Option<Kind> {
    Some(match dtype {
        DType::F64 => Kind::Double,
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::F8E4M3Fn => Kind::Float8e4m3fn,
        DType::F8E5M2 => Kind::Float8e5m2,
        DType::F8E4M3Fnuz => Kind::Float8e4m3fnuz,
        DType::F8E5M2Fnuz => Kind::Float8e5m2fnuz,
        DType::I8 => Kind::Int8,
        DType::I16 => Kind::Int16,
        DType::I32 => Kind::Int,
        DType::I64 => Kind::Int64,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
        DType::C64 => Kind::ComplexFloat,
        DType::C32 => Kind::ComplexHalf,
        DType::C128 => Kind::ComplexDouble,
        DType::F8E8M0Fnu | DType::U16 | DType::U32 | DType::U64 => return None,
    })
}

/// Dtypes libtorch's C++ unpickler reads (the ones with a legacy typed storage class; the
/// others are pickled with `_rebuild_tensor_v3` and a dtype global it does not parse).
pub(super) fn zip_loader_dtype(d: DType) -> bool {
    d.storage_class().is_some()
}

/// Dtypes tch's `read_safetensors` (safetensors 0.3 + tch's kind table) accepts.
pub(super) fn safetensors_loader_dtype(d: DType) -> bool {
    matches!(
        d,
        DType::Bool
            | DType::U8
            | DType::I8
            | DType::I16
            | DType::I32
            | DType::I64
            | DType::BF16
            | DType::F16
            | DType::F32
            | DType::F64
    )
}

/// The first line of a libtorch error (they carry long C++ backtraces).
pub(super) fn short(e: &tch::TchError) -> String {
    let s = e.to_string();
    let line = s.lines().next().unwrap_or("").trim();
    let line = line.strip_prefix("Internal torch error: ").unwrap_or(line);
    line.chars().take(300).collect()
}

/// Loads one file with libtorch and compares its tensors with the reference's.
pub(super) fn verify_file(
    path: &Path,
    own: &Checkpoint,
    reference: &Checkpoint,
    by_name: &HashMap<&str, usize>,
    device: Device,
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let file = path.display().to_string();
    let (loader, loaded, note, partial) = load_native(path, own, device)?;
    report.files.push(FileLoad {
        path: file.clone(),
        format: own.format.name().into(),
        loader,
        note,
        warnings: crc_warnings(path, own)?,
    });
    let mut loaded: HashMap<String, TchTensor> = loaded.into_iter().collect();
    for ot in &own.tensors {
        let Some(&ri) = by_name.get(ot.name.as_str()) else {
            report.tensors.push(TensorCheck {
                name: ot.name.clone(),
                dtype: ot.dtype.name().into(),
                shape: ot.shape.clone(),
                file: file.clone(),
                loader,
                outcome: Outcome::Missing {
                    why: "in the file, not in the reference checkpoint".into(),
                },
            });
            loaded.remove(&ot.name);
            continue;
        };
        let rt = &reference.tensors[ri];
        let (used, outcome) = match loaded.remove(&ot.name) {
            Some(t) => (
                loader,
                compare(&t, reference, rt, loader != Loader::TchSafetensors, device),
            ),
            None if loader == Loader::Bytes || partial => (Loader::Bytes, from_bytes(own, ot, reference, rt, device)),
            None => (
                loader,
                Outcome::Missing {
                    why: format!("ckpt reads it, libtorch's {} loader did not return it", loader.name()),
                },
            ),
        };
        report.tensors.push(TensorCheck {
            name: rt.name.clone(),
            dtype: rt.dtype.name().into(),
            shape: rt.shape.clone(),
            file: file.clone(),
            loader: used,
            outcome,
        });
    }
    report_unread(report, loaded, &file, loader);
    Ok(())
}

/// A warning for a zip whose records fail their CRC-32 check; none for other formats.
fn crc_warnings(path: &Path, own: &Checkpoint) -> Result<Vec<String>, VerifyError> {
    if !matches!(own.format, Format::PthZip | Format::TorchScript) {
        return Ok(Vec::new());
    }
    let bad = zip_crc_failures(path)?;
    if bad.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![format!(
        "{} record(s) fail their CRC-32 check ({}): the file is damaged; neither libtorch nor torch.load checks CRCs, so both read the damaged bytes",
        bad.len(),
        bad.join(", ")
    )])
}

/// Reports what libtorch returned and ckpt did not read, by name.
fn report_unread(report: &mut VerifyReport, loaded: HashMap<String, TchTensor>, file: &str, loader: Loader) {
    let mut extra: Vec<(String, TchTensor)> = loaded.into_iter().collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in extra {
        report.tensors.push(TensorCheck {
            name,
            dtype: t.f_kind().map(|k| format!("{k:?}")).unwrap_or_else(|_| "?".into()),
            shape: t.size().iter().map(|&d| d as u64).collect(),
            file: file.to_string(),
            loader,
            outcome: Outcome::Missing {
                why: "libtorch returned it, ckpt did not read it".into(),
            },
        });
    }
}

type Loaded = Vec<(String, TchTensor)>;

/// Picks the loader for a file and runs it. Returns the loader, what libtorch returned, a note,
/// and whether tensors libtorch did not return go through the bytes path (TorchScript buffers).
pub(super) fn load_native(path: &Path, own: &Checkpoint, device: Device) -> Result<NativeLoad, VerifyError> {
    match own.format {
        Format::PthLegacy => {
            bytes_path("legacy format (torch < 1.6); libtorch's C++ loader reads only zip archives".into())
        }
        Format::Sharded => bytes_path("a sharded index".into()),
        Format::Built => bytes_path("built in memory, not read from a file".into()),
        Format::Dcp => bytes_path("a torch.distributed.checkpoint directory, which libtorch does not load".into()),
        Format::Zero => bytes_path("a DeepSpeed ZeRO folder, which libtorch does not load".into()),
        Format::TorchScript => match TchTensor::load_multi_with_device(path, device) {
            Ok(v) => Ok((
                Loader::TchScript,
                v,
                Some("torch::jit::load; it returns parameters only, so buffers go through the bytes path".into()),
                true,
            )),
            Err(e) => Err(VerifyError::Load {
                path: path.into(),
                loader: Loader::TchScript.name(),
                message: short(&e),
            }),
        },
        Format::Safetensors => load_safetensors(path, own, device),
        Format::PthZip => load_zip(path, own, device),
    }
}

/// What [`load_native`] returns: the loader, what libtorch returned, a note, and whether
/// tensors libtorch did not return go through the bytes path.
type NativeLoad = (Loader, Loaded, Option<String>, bool);

/// The bytes path for the whole file, for the reason `note` gives.
fn bytes_path(note: String) -> Result<NativeLoad, VerifyError> {
    Ok((Loader::Bytes, Vec::new(), Some(note), true))
}

/// tch's safetensors reader, then each tensor moved to the device.
fn load_safetensors(path: &Path, own: &Checkpoint, device: Device) -> Result<NativeLoad, VerifyError> {
    let clean = own.tensors.iter().all(|t| safetensors_loader_dtype(t.dtype));
    match TchTensor::read_safetensors(path) {
        Ok(v) => {
            let mut moved = Vec::with_capacity(v.len());
            for (n, t) in v {
                let t = t.f_to_device(device).map_err(|e| VerifyError::Load {
                    path: path.into(),
                    loader: Loader::TchSafetensors.name(),
                    message: format!("moving {n} to {}: {}", device_name(device), short(&e)),
                })?;
                moved.push((n, t));
            }
            Ok((Loader::TchSafetensors, moved, None, false))
        }
        Err(e) if clean => Err(VerifyError::Load {
            path: path.into(),
            loader: Loader::TchSafetensors.name(),
            message: short(&e),
        }),
        Err(e) => bytes_path(format!(
            "tch's safetensors reader takes only bool/u8/i8/i16/i32/i64/f16/bf16/f32/f64 (libtorch: {})",
            short(&e)
        )),
    }
}

/// A zip `.pth` through libtorch's loader, when the file is one it can read (a dict of tensors
/// of dtypes it parses, little-endian, protocol 2), from a patched copy for an OrderedDict.
fn load_zip(path: &Path, own: &Checkpoint, device: Device) -> Result<NativeLoad, VerifyError> {
    let ordered = match top_level(own) {
        TopLevel::Other(why) => return bytes_path(why.into()),
        TopLevel::Dict => false,
        TopLevel::OrderedDict => true,
    };
    if let Some(t) = own.tensors.iter().find(|t| !zip_loader_dtype(t.dtype)) {
        return bytes_path(format!(
            "{} is {}, which libtorch's C++ unpickler cannot parse (_rebuild_tensor_v3)",
            t.name, t.dtype
        ));
    }
    // libtorch's C++ unpickler has no Python tensor subclasses (DTensor): it cannot
    // rebuild them, whatever the top level.
    if let Some(g) = own.globals.iter().find(|g| is_tensor_subclass_global(g)) {
        return bytes_path(format!(
            "{g}: a tensor subclass (such as DTensor), which libtorch's C++ unpickler cannot rebuild"
        ));
    }
    if own.storages.iter().any(|s| s.byte_order == ByteOrder::Big) {
        return bytes_path("big-endian storages (byteorder 'big'); libtorch's C++ loader does not swap them".into());
    }
    let pkl = read_data_pkl(path)?;
    if pkl.get(..2) != Some(&[0x80, 0x02][..]) {
        return bytes_path(format!(
            "data.pkl is pickle protocol {}; libtorch's C++ unpickler reads only protocol 2",
            pkl.get(1).map_or("?".to_string(), |p| p.to_string())
        ));
    }
    if !ordered {
        return match TchTensor::loadz_multi_with_device(path, device) {
            Ok(v) => Ok((Loader::TchZip, v, None, false)),
            Err(e) => Err(VerifyError::Load {
                path: path.into(),
                loader: Loader::TchZip.name(),
                message: short(&e),
            }),
        };
    }
    let Some(patched) = plain_dict_pickle(&pkl, own) else {
        return bytes_path(
            "an OrderedDict that libtorch's C++ unpickler cannot read, pickled in a way ckpt cannot turn into a plain dict".into(),
        );
    };
    let tmp = TempCopy::new(path)?;
    copy_zip_with_pickle(path, &tmp.path, &patched)?;
    match TchTensor::loadz_multi_with_device(&tmp.path, device) {
        Ok(v) => Ok((
            Loader::TchZipDict,
            v,
            Some("top level is an OrderedDict, which libtorch's unpickler reads as None: loaded from a temporary copy whose data.pkl starts with a plain dict".into()),
            false,
        )),
        Err(e) => Err(VerifyError::Load { path: path.into(), loader: Loader::TchZipDict.name(), message: short(&e) }),
    }
}

/// Globals through which a pickle rebuilds a Python tensor subclass.
fn is_tensor_subclass_global(dotted: &str) -> bool {
    matches!(
        dotted,
        "torch._tensor._rebuild_from_type_v2" | "torch._utils._rebuild_wrapper_subclass"
    ) || dotted.starts_with("torch.distributed.")
}

/// The bytes path: ckpt's contiguous bytes of `ot` (from the file being verified) into libtorch,
/// onto the device and back, compared with the reference tensor.
pub(super) fn from_bytes(
    own: &Checkpoint,
    ot: &Tensor,
    reference: &Checkpoint,
    rt: &Tensor,
    device: Device,
) -> Outcome {
    let Some(kind) = kind_of(ot.dtype) else {
        return Outcome::Skipped {
            why: format!("tch has no kind for {}, so libtorch cannot be handed it", ot.dtype),
        };
    };
    let Ok(cap) = usize::try_from(ot.nbytes()) else {
        return Outcome::Skipped {
            why: "larger than this machine's address space".into(),
        };
    };
    let mut data = Vec::with_capacity(cap);
    let read = for_each_chunk::<crate::Error>(own, ot, |b| {
        data.extend_from_slice(b);
        Ok(())
    });
    if let Err(e) = read {
        return Outcome::Differs {
            first_index: None,
            why: format!("ckpt cannot read its bytes: {e}"),
        };
    }
    let size: Vec<i64> = ot.shape.iter().map(|&d| d as i64).collect();
    let t = match TchTensor::f_from_data_size(&data, &size, kind).and_then(|t| t.f_to_device(device)) {
        Ok(t) => t,
        Err(e) => {
            return Outcome::Differs {
                first_index: None,
                why: format!("libtorch refused the bytes: {}", short(&e)),
            }
        }
    };
    drop(data);
    compare(&t, reference, rt, false, device)
}

/// Compares a libtorch tensor with a tensor ckpt read: dtype, shape, (strides), device, bits.
pub(super) fn compare(
    t: &TchTensor,
    reference: &Checkpoint,
    rt: &Tensor,
    check_strides: bool,
    device: Device,
) -> Outcome {
    let differs = |why: String| Outcome::Differs { first_index: None, why };
    let kind = match t.f_kind() {
        Ok(k) => k,
        Err(_) => {
            return Outcome::Skipped {
                why: format!("libtorch loaded it with a dtype tch cannot name (ckpt: {})", rt.dtype),
            };
        }
    };
    let Some(want_kind) = kind_of(rt.dtype) else {
        return Outcome::Skipped {
            why: format!("tch has no kind for {}", rt.dtype),
        };
    };
    if kind != want_kind {
        return differs(format!("dtype: libtorch {kind:?}, ckpt {}", rt.dtype));
    }
    if let Some(why) = layout_difference(t, rt, check_strides, device) {
        return differs(why);
    }
    if rt.numel() == 0 {
        return Outcome::Matched;
    }
    let cpu = match t.f_to_device(Device::Cpu).and_then(|c| c.f_contiguous()) {
        Ok(c) => c,
        Err(e) => return differs(format!("cannot bring it back to the CPU: {}", short(&e))),
    };
    compare_bytes(&cpu, kind, reference, rt)
}

/// How the tensor's shape, strides (when `check_strides`) or device differ from ckpt's; None
/// when they agree.
fn layout_difference(t: &TchTensor, rt: &Tensor, check_strides: bool, device: Device) -> Option<String> {
    let size: Vec<u64> = t.size().iter().map(|&d| d as u64).collect();
    if size != rt.shape {
        return Some(format!("shape: libtorch {size:?}, ckpt {:?}", rt.shape));
    }
    if check_strides && rt.numel() > 1 {
        let stride: Vec<u64> = t.stride().iter().map(|&s| s as u64).collect();
        // A dimension of size 1 can have any stride; torch may normalize it.
        let same = stride.len() == rt.stride.len()
            && stride
                .iter()
                .zip(&rt.stride)
                .zip(&rt.shape)
                .all(|((a, b), &d)| d <= 1 || a == b);
        if !same {
            return Some(format!("strides: libtorch {stride:?}, ckpt {:?}", rt.stride));
        }
    }
    if t.device() != device {
        return Some(format!(
            "libtorch put it on {}, not {}",
            device_name(t.device()),
            device_name(device)
        ));
    }
    None
}

/// Compares the bytes of `cpu` (a contiguous CPU tensor of `kind`, shape checked) with the
/// bytes ckpt reads for `rt`.
fn compare_bytes(cpu: &TchTensor, kind: Kind, reference: &Checkpoint, rt: &Tensor) -> Outcome {
    let differs = |why: String| Outcome::Differs { first_index: None, why };
    let esize = rt.dtype.size();
    let nbytes = rt.numel() as usize * esize;
    if kind.elt_size_in_bytes() != esize {
        return differs(format!(
            "element size: libtorch {}, ckpt {esize}",
            kind.elt_size_in_bytes()
        ));
    }
    let ptr = cpu.data_ptr() as *const u8;
    if ptr.is_null() {
        return differs("libtorch returned no data".into());
    }
    // SAFETY: `cpu` is a contiguous, dense CPU tensor of `numel` elements of `esize` bytes
    // (kind and shape checked by the caller) and outlives `got`; nothing writes to it meanwhile.
    let got: &[u8] = unsafe { std::slice::from_raw_parts(ptr, nbytes) };
    let mut at = 0usize;
    let r = for_each_chunk::<Stop>(reference, rt, |want| {
        let end = (at + want.len()).min(got.len());
        let have = &got[at..end];
        if let Some(i) = have.iter().zip(want).position(|(a, b)| a != b) {
            return Err(Stop::At(at + i));
        }
        if have.len() < want.len() {
            return Err(Stop::At(end));
        }
        at += want.len();
        Ok(())
    });
    let first = match r {
        Ok(()) if at == got.len() => return Outcome::Matched,
        Ok(()) => at,
        Err(Stop::At(b)) => b,
        Err(Stop::Read(e)) => return differs(format!("ckpt cannot read its bytes: {e}")),
        Err(Stop::Done) => unreachable!("only the second pass stops early"),
    };
    first_difference(reference, rt, got, first / esize)
}

/// The element `elem`, the first that differs: libtorch's bytes of it and the reference's.
fn first_difference(reference: &Checkpoint, rt: &Tensor, got: &[u8], elem: usize) -> Outcome {
    let esize = rt.dtype.size();
    let lo = elem * esize;
    // The reference's bytes of that element (a second pass: they may straddle two chunks).
    let mut want_el = Vec::with_capacity(esize);
    let mut pos = 0usize;
    let _ = for_each_chunk::<Stop>(reference, rt, |c| {
        let (from, to) = (lo.max(pos), (lo + esize).min(pos + c.len()));
        if from < to {
            want_el.extend_from_slice(&c[from - pos..to - pos]);
        }
        pos += c.len();
        if pos >= lo + esize {
            Err(Stop::Done)
        } else {
            Ok(())
        }
    });
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let have_el = got.get(lo..lo + esize).unwrap_or(&[]);
    Outcome::Differs {
        first_index: Some(elem as u64),
        why: format!(
            "libtorch bytes {}, ckpt bytes {} (little-endian)",
            hex(have_el),
            hex(&want_el)
        ),
    }
}

/// Why a pass over a tensor's bytes stopped.
pub(super) enum Stop {
    Read(crate::Error),
    /// The first differing byte.
    At(usize),
    Done,
}

impl From<crate::Error> for Stop {
    fn from(e: crate::Error) -> Self {
        Stop::Read(e)
    }
}
