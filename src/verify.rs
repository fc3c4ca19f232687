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

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::{Kind, Tensor as TchTensor};

pub use tch::Device;

use crate::dtype::DType;
use crate::model::{ByteOrder, Checkpoint, Format, Key, Node, Origin, Tensor};
use crate::tensor_data::for_each_chunk;

/// Why a verification could not run: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// ckpt itself cannot read the file.
    #[error(transparent)]
    Read(#[from] crate::Error),
    /// A bad `--device` value, or a device libtorch does not have.
    #[error("{0}")]
    Device(String),
    /// libtorch refused a file it should be able to load.
    #[error("{path}: libtorch cannot load it ({loader}): {message}")]
    Load {
        path: PathBuf,
        loader: &'static str,
        message: String,
    },
    /// Making the temporary copy for `tch-zip-dict` failed.
    #[error("{path}: {what}")]
    Io { path: PathBuf, what: String },
}

impl VerifyError {
    pub fn exit_code(&self) -> i32 {
        2
    }
}

/// How libtorch got a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    TchZip,
    TchZipDict,
    TchScript,
    TchSafetensors,
    Bytes,
}

impl Loader {
    pub fn name(self) -> &'static str {
        match self {
            Loader::TchZip => "tch-zip",
            Loader::TchZipDict => "tch-zip-dict",
            Loader::TchScript => "tch-script",
            Loader::TchSafetensors => "tch-safetensors",
            Loader::Bytes => "bytes",
        }
    }
    /// Whether libtorch read the file itself (rather than being handed ckpt's bytes).
    pub fn reads_file(self) -> bool {
        self != Loader::Bytes
    }
}

/// One file libtorch was asked to load (a sharded checkpoint has several).
#[derive(Debug, Clone, Serialize)]
pub struct FileLoad {
    pub path: String,
    pub format: String,
    pub loader: Loader,
    /// Why this loader, and what libtorch said when a better one failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Damage libtorch does not notice (records whose CRC-32 does not match their bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The result for one tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Matched,
    Differs {
        /// First differing element in C-contiguous order, when the data differ.
        #[serde(skip_serializing_if = "Option::is_none")]
        first_index: Option<u64>,
        why: String,
    },
    Skipped {
        why: String,
    },
    Missing {
        why: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorCheck {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// The file the tensor was loaded from.
    pub file: String,
    pub loader: Loader,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub path: String,
    pub format: String,
    pub device: String,
    pub files: Vec<FileLoad>,
    pub tensors: Vec<TensorCheck>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub matched: usize,
    pub differs: usize,
    pub skipped: usize,
    pub missing: usize,
    /// Matched tensors that libtorch read from the file itself (not handed ckpt's bytes).
    pub matched_from_file: usize,
}

impl VerifyReport {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in &self.tensors {
            match t.outcome {
                Outcome::Matched => {
                    c.matched += 1;
                    if t.loader.reads_file() {
                        c.matched_from_file += 1;
                    }
                }
                Outcome::Differs { .. } => c.differs += 1,
                Outcome::Skipped { .. } => c.skipped += 1,
                Outcome::Missing { .. } => c.missing += 1,
            }
        }
        c
    }

    /// Nothing differs and nothing is missing (skipped tensors are listed, not passed).
    pub fn ok(&self) -> bool {
        let c = self.counts();
        c.differs == 0 && c.missing == 0
    }

    /// 0 when every tensor matched or was skipped, 1 when any differs or is missing.
    pub fn exit_code(&self) -> i32 {
        if self.ok() {
            0
        } else {
            1
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "verify {} ({}) with libtorch on {}",
            self.path, self.format, self.device
        );
        for f in &self.files {
            let _ = write!(s, "  loaded {} ({}) via {}", f.path, f.format, f.loader.name());
            match &f.note {
                Some(n) => {
                    let _ = writeln!(s, ": {n}");
                }
                None => s.push('\n'),
            }
            for w in &f.warnings {
                let _ = writeln!(s, "  warning: {w}");
            }
        }
        let name_w = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0).min(60);
        let multi = self.files.len() > 1;
        for t in &self.tensors {
            let shape = format!(
                "[{}]",
                t.shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            );
            let (status, detail) = match &t.outcome {
                Outcome::Matched => ("matched", String::new()),
                Outcome::Differs {
                    first_index: Some(i),
                    why,
                } => ("DIFFERS", format!("  first differing element {i}: {why}")),
                Outcome::Differs { first_index: None, why } => ("DIFFERS", format!("  {why}")),
                Outcome::Skipped { why } => ("skipped", format!("  {why}")),
                Outcome::Missing { why } => ("MISSING", format!("  {why}")),
            };
            let file = if multi { format!("  {}", t.file) } else { String::new() };
            let _ = writeln!(
                s,
                "  {status:<8} {:<name_w$}  {} {shape}  {}{file}{detail}",
                t.name,
                t.dtype,
                t.loader.name()
            );
        }
        let c = self.counts();
        let verdict = if self.ok() { "OK" } else { "FAILED" };
        let _ = writeln!(
            s,
            "{verdict}: {} tensors: {} matched ({} read by libtorch from the file, {} from ckpt's bytes), {} differ, {} missing, {} skipped (not verified)",
            self.tensors.len(),
            c.matched,
            c.matched_from_file,
            c.matched - c.matched_from_file,
            c.differs,
            c.missing,
            c.skipped
        );
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("counts".into(), serde_json::to_value(self.counts()).unwrap_or_default());
            o.insert("ok".into(), self.ok().into());
            o.insert("exit_code".into(), self.exit_code().into());
        }
        v
    }
}

/// The exit code for a verification's result: 0 all matched, 1 something differs, 2 cannot load.
pub fn exit_code(result: &Result<VerifyReport, VerifyError>) -> i32 {
    match result {
        Ok(r) => r.exit_code(),
        Err(e) => e.exit_code(),
    }
}

/// Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:N`. Does not check that the device exists.
pub fn parse_device(s: &str) -> Result<Device, VerifyError> {
    let s = s.trim();
    match s {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => return Ok(Device::Cuda(0)),
        _ => {}
    }
    if let Some(n) = s.strip_prefix("cuda:") {
        if let Ok(n) = n.parse::<usize>() {
            return Ok(Device::Cuda(n));
        }
    }
    Err(VerifyError::Device(format!(
        "unknown device '{s}': expected cpu, cuda or cuda:N"
    )))
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// Whether this build's libtorch has CUDA (libtorch_cuda.so was linked), as build.rs found it.
pub fn built_with_cuda() -> bool {
    env!("CKPT_LIBTORCH_CUDA") == "1"
}

/// The libtorch lib dir this binary was linked against (its rpath), if build.rs knew it.
pub fn built_libtorch_dir() -> &'static str {
    env!("CKPT_LIBTORCH_LIB")
}

/// Checks that libtorch can use the device: a clear error where there is no CUDA device.
pub fn check_device(device: Device) -> Result<(), VerifyError> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(n) => {
            let count = tch::Cuda::device_count();
            if !tch::Cuda::is_available() || count <= 0 {
                let why = if built_with_cuda() {
                    "libtorch finds no CUDA device (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)"
                } else {
                    "this ckpt was built against a libtorch without CUDA (no libtorch_cuda.so)"
                };
                return Err(VerifyError::Device(format!("--device {}: {why}", device_name(device))));
            }
            if n as i64 >= count {
                return Err(VerifyError::Device(format!(
                    "--device cuda:{n}: libtorch sees {count} CUDA device(s), numbered 0 to {}",
                    count - 1
                )));
            }
            Ok(())
        }
        other => Err(VerifyError::Device(format!(
            "--device {}: ckpt verify supports cpu and cuda",
            device_name(other)
        ))),
    }
}

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
fn run(path: &Path, own: &Checkpoint, reference: &Checkpoint, device: Device) -> Result<VerifyReport, VerifyError> {
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
fn missing_from_file(reference: &Checkpoint, seen: &HashSet<String>, path: &Path, report: &mut VerifyReport) {
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
        DType::C128 => Kind::ComplexDouble,
        DType::F8E8M0Fnu | DType::U16 | DType::U32 | DType::U64 => return None,
    })
}

/// Dtypes libtorch's C++ unpickler reads (the ones with a legacy typed storage class; the
/// others are pickled with `_rebuild_tensor_v3` and a dtype global it does not parse).
fn zip_loader_dtype(d: DType) -> bool {
    d.storage_class().is_some()
}

/// Dtypes tch's `read_safetensors` (safetensors 0.3 + tch's kind table) accepts.
fn safetensors_loader_dtype(d: DType) -> bool {
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

/// What the top level of a zip checkpoint is, as far as libtorch's loader cares.
enum TopLevel {
    /// `{str: tensor}`.
    Dict,
    /// `OrderedDict{str: tensor}`.
    OrderedDict,
    Other(&'static str),
}

fn top_level(ckpt: &Checkpoint) -> TopLevel {
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

/// The first line of a libtorch error (they carry long C++ backtraces).
fn short(e: &tch::TchError) -> String {
    let s = e.to_string();
    let line = s.lines().next().unwrap_or("").trim();
    let line = line.strip_prefix("Internal torch error: ").unwrap_or(line);
    line.chars().take(300).collect()
}

/// Loads one file with libtorch and compares its tensors with the reference's.
fn verify_file(
    path: &Path,
    own: &Checkpoint,
    reference: &Checkpoint,
    by_name: &HashMap<&str, usize>,
    device: Device,
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let file = path.display().to_string();
    let (loader, loaded, note, partial) = load_native(path, own, device)?;
    let mut warnings = Vec::new();
    if matches!(own.format, Format::PthZip | Format::TorchScript) {
        let bad = zip_crc_failures(path)?;
        if !bad.is_empty() {
            warnings.push(format!(
                "{} record(s) fail their CRC-32 check ({}): the file is damaged; neither libtorch nor torch.load checks CRCs, so both read the damaged bytes",
                bad.len(),
                bad.join(", ")
            ));
        }
    }
    report.files.push(FileLoad {
        path: file.clone(),
        format: own.format.name().into(),
        loader,
        note,
        warnings,
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
    // What libtorch returned and ckpt did not read.
    let mut extra: Vec<(String, TchTensor)> = loaded.into_iter().collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in extra {
        report.tensors.push(TensorCheck {
            name,
            dtype: t.f_kind().map(|k| format!("{k:?}")).unwrap_or_else(|_| "?".into()),
            shape: t.size().iter().map(|&d| d as u64).collect(),
            file: file.clone(),
            loader,
            outcome: Outcome::Missing {
                why: "libtorch returned it, ckpt did not read it".into(),
            },
        });
    }
    Ok(())
}

type Loaded = Vec<(String, TchTensor)>;

/// Picks the loader for a file and runs it. Returns the loader, what libtorch returned, a note,
/// and whether tensors libtorch did not return go through the bytes path (TorchScript buffers).
fn load_native(
    path: &Path,
    own: &Checkpoint,
    device: Device,
) -> Result<(Loader, Loaded, Option<String>, bool), VerifyError> {
    let bytes = |note: String| Ok((Loader::Bytes, Vec::new(), Some(note), true));
    match own.format {
        Format::PthLegacy => bytes("legacy format (torch < 1.6); libtorch's C++ loader reads only zip archives".into()),
        Format::Sharded => bytes("a sharded index".into()),
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
        Format::Safetensors => {
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
                Err(e) => bytes(format!(
                    "tch's safetensors reader takes only bool/u8/i8/i16/i32/i64/f16/bf16/f32/f64 (libtorch: {})",
                    short(&e)
                )),
            }
        }
        Format::PthZip => {
            let ordered = match top_level(own) {
                TopLevel::Other(why) => return bytes(why.into()),
                TopLevel::Dict => false,
                TopLevel::OrderedDict => true,
            };
            if let Some(t) = own.tensors.iter().find(|t| !zip_loader_dtype(t.dtype)) {
                return bytes(format!(
                    "{} is {}, which libtorch's C++ unpickler cannot parse (_rebuild_tensor_v3)",
                    t.name, t.dtype
                ));
            }
            if own.storages.iter().any(|s| s.byte_order == ByteOrder::Big) {
                return bytes("big-endian storages (byteorder 'big'); libtorch's C++ loader does not swap them".into());
            }
            let pkl = read_data_pkl(path)?;
            if pkl.get(..2) != Some(&[0x80, 0x02][..]) {
                return bytes(format!(
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
                return bytes(
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
    }
}

/// The bytes path: ckpt's contiguous bytes of `ot` (from the file being verified) into libtorch,
/// onto the device and back, compared with the reference tensor.
fn from_bytes(own: &Checkpoint, ot: &Tensor, reference: &Checkpoint, rt: &Tensor, device: Device) -> Outcome {
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
fn compare(t: &TchTensor, reference: &Checkpoint, rt: &Tensor, check_strides: bool, device: Device) -> Outcome {
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
    let size: Vec<u64> = t.size().iter().map(|&d| d as u64).collect();
    if size != rt.shape {
        return differs(format!("shape: libtorch {size:?}, ckpt {:?}", rt.shape));
    }
    let numel = rt.numel();
    if check_strides && numel > 1 {
        let stride: Vec<u64> = t.stride().iter().map(|&s| s as u64).collect();
        // A dimension of size 1 can have any stride; torch may normalize it.
        let same = stride.len() == rt.stride.len()
            && stride
                .iter()
                .zip(&rt.stride)
                .zip(&rt.shape)
                .all(|((a, b), &d)| d <= 1 || a == b);
        if !same {
            return differs(format!("strides: libtorch {stride:?}, ckpt {:?}", rt.stride));
        }
    }
    if t.device() != device {
        return differs(format!(
            "libtorch put it on {}, not {}",
            device_name(t.device()),
            device_name(device)
        ));
    }
    if numel == 0 {
        return Outcome::Matched;
    }
    let cpu = match t.f_to_device(Device::Cpu).and_then(|c| c.f_contiguous()) {
        Ok(c) => c,
        Err(e) => return differs(format!("cannot bring it back to the CPU: {}", short(&e))),
    };
    let esize = rt.dtype.size();
    let nbytes = numel as usize * esize;
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
    // (kind and shape checked above) and outlives `got`; nothing writes to it meanwhile.
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
    let elem = first / esize;
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
enum Stop {
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

/// `PREFIX/data.pkl` of a zip checkpoint, read through the zip crate (a CRC mismatch is no error).
fn read_data_pkl(path: &Path) -> Result<Vec<u8>, VerifyError> {
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
fn read_record(entry: &mut impl Read, out: &mut impl Write) -> std::io::Result<bool> {
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
fn is_crc_error(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidData && e.to_string().contains("checksum")
}

/// Names of the zip records whose CRC-32 does not match their bytes.
fn zip_crc_failures(path: &Path) -> Result<Vec<String>, VerifyError> {
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
fn plain_dict_pickle(pkl: &[u8], own: &Checkpoint) -> Option<Vec<u8>> {
    const GLOBAL: &[u8] = b"ccollections\nOrderedDict\n";
    let mut head = vec![0x80u8, 0x02];
    head.extend_from_slice(GLOBAL);
    if !pkl.starts_with(&head) {
        return None;
    }
    let mut pos = head.len();
    let memo: u32 = match *pkl.get(pos)? {
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
    pos += 2;
    let mut out = Vec::with_capacity(pkl.len() + GLOBAL.len() + 8);
    out.extend_from_slice(&[0x80, 0x02, b'}']);
    // Start offset (in `out`) of each stack item; marks are items too.
    let mut stack: Vec<(usize, bool)> = vec![(2, false)];
    let mut global_defined = false;
    let mut build_state_at: Option<usize> = None;
    loop {
        let op = *pkl.get(pos)?;
        let at = out.len();
        let arg_len = match op {
            b'K' | b'h' | b'q' | 0x80 | 0x82 => 1,
            b'M' | 0x83 => 2,
            b'J' | b'j' | b'r' | 0x84 => 4,
            b'G' => 8,
            b'X' | b'T' | b'B' | 0x8b => 4 + u32::from_le_bytes(pkl.get(pos + 1..pos + 5)?.try_into().ok()?) as usize,
            b'U' | b'C' | 0x8a => 1 + *pkl.get(pos + 1)? as usize,
            b'c' => {
                let a = pkl.get(pos + 1..)?.iter().position(|&b| b == b'\n')?;
                let b = pkl.get(pos + 2 + a..)?.iter().position(|&b| b == b'\n')?;
                a + b + 2
            }
            b'F' | b'I' | b'L' | b'S' | b'V' | b'g' | b'p' => pkl.get(pos + 1..)?.iter().position(|&b| b == b'\n')? + 1,
            b'(' | b'.' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'}' | b'e' | b'l' | b']' | b's' | b't' | b')'
            | b'u' | 0x81 | 0x85 | 0x86 | 0x87 | 0x88 | 0x89 => 0,
            _ => return None,
        };
        let whole = pkl.get(pos..pos + 1 + arg_len)?;
        pos += 1 + arg_len;
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
            out.extend_from_slice(GLOBAL);
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
        let pop_to_mark = |stack: &mut Vec<(usize, bool)>| -> Option<usize> {
            let m = stack.iter().rposition(|&(_, mark)| mark)?;
            let start = stack[m].0;
            stack.truncate(m);
            Some(start)
        };
        let pop_n = |stack: &mut Vec<(usize, bool)>, n: usize| -> Option<usize> {
            if stack.len() < n || stack[stack.len() - n..].iter().any(|&(_, mark)| mark) {
                return None;
            }
            let start = stack[stack.len() - n].0;
            stack.truncate(stack.len() - n);
            Some(start)
        };
        match op {
            b'(' => stack.push((at, true)),
            b't' | b'l' | b'd' => {
                let start = pop_to_mark(&mut stack)?;
                stack.push((start, false));
            }
            b'e' | b'u' => {
                pop_to_mark(&mut stack)?;
            }
            0x85 | b'Q' => {
                let start = pop_n(&mut stack, 1)?;
                stack.push((start, false));
            }
            0x86 | b'R' | 0x81 => {
                let start = pop_n(&mut stack, 2)?;
                stack.push((start, false));
            }
            0x87 => {
                let start = pop_n(&mut stack, 3)?;
                stack.push((start, false));
            }
            b'a' => {
                pop_n(&mut stack, 1)?;
            }
            b's' => {
                pop_n(&mut stack, 2)?;
            }
            b'b' => {
                if stack.len() == 2 {
                    build_state_at = Some(pop_n(&mut stack, 1)?);
                } else {
                    pop_n(&mut stack, 1)?;
                }
            }
            b'q' | b'r' | b'p' | 0x80 => {}
            _ => stack.push((at, false)),
        }
        if stack.is_empty() {
            return None;
        }
    }
    let parsed = crate::pickle::parse(&out, &crate::pickle::Limits::default()).ok()?;
    let crate::pickle::Value::Obj(id) = parsed.root else {
        return None;
    };
    match parsed.heap.get(id) {
        crate::pickle::Obj::Dict(items) if items.len() == own.tensors.len() => Some(out),
        _ => None,
    }
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
struct TempCopy {
    path: PathBuf,
}

impl TempCopy {
    fn new(orig: &Path) -> Result<TempCopy, VerifyError> {
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
fn copy_zip_with_pickle(src: &Path, dst: &Path, pkl: &[u8]) -> Result<(), VerifyError> {
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
