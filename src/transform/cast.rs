//! `convert --dtype`: casts floating-point tensors by recording a pending cast on their
//! storages ([`crate::model::Storage::cast`]); writers convert the bytes while streaming them
//! out with [`crate::elem::convert`].

use std::collections::BTreeMap;
use std::fmt;

#[cfg(feature = "internals")] // only the tests call to_json
use serde_json::{json, Value as Json};

use super::norms::norm_members;
use super::pattern::Pattern;
use crate::dtype::DType;
use crate::elem::{self, Losses};
use crate::pass;
use crate::model::{Cast, Checkpoint, Node, StorageId};
use crate::tensor_data;

/// What [`cast`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CastReport {
    pub to: DType,
    /// Tensors now `to`, with the dtype they had.
    pub cast: Vec<CastEntry>,
    /// Tensors left as they were, and why.
    pub kept: Vec<KeptEntry>,
    /// Storages that got a pending cast.
    pub storages_cast: usize,
    /// Bytes of all storages before and after (what a writer will store).
    pub bytes_before: u64,
    pub bytes_after: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CastEntry {
    pub name: String,
    pub from: DType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeptEntry {
    pub name: String,
    pub dtype: DType,
    pub reason: KeepReason,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KeepReason {
    /// Integer, bool and complex tensors are never cast.
    NotFloating,
    /// The target dtype is not floating: casts go between floating types only.
    TargetNotFloating,
    /// Already the target dtype.
    AlreadyTarget,
    /// Matched a keep pattern.
    KeepPattern,
    /// Belongs to a normalization module (`--keep-norms`).
    NormModule,
    /// Shares its storage with a tensor that is not cast (kept by pattern, not floating...).
    SharesStorageWithKept { other: String },
    /// Shares its storage with a tensor of another dtype (a reinterpreting view).
    SharesStorageWithOtherDtype { other: String, dtype: DType },
    /// Its storage already has a pending cast (casts do not compose).
    PendingCast { from: DType, to: DType },
    /// The storage's size is not a whole number of elements.
    PartialElements,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::NotFloating => f.write_str("not a floating-point tensor"),
            KeepReason::TargetNotFloating => f.write_str("casts go to floating-point dtypes only"),
            KeepReason::AlreadyTarget => f.write_str("already the target dtype"),
            KeepReason::KeepPattern => f.write_str("matches a keep pattern"),
            KeepReason::NormModule => f.write_str("belongs to a normalization module"),
            KeepReason::SharesStorageWithKept { other } => {
                write!(f, "shares its storage with '{other}', which is not cast")
            }
            KeepReason::SharesStorageWithOtherDtype { other, dtype } => {
                write!(f, "shares its storage with '{other}', which views it as {dtype}")
            }
            KeepReason::PendingCast { from, to } => write!(f, "its storage is already being cast from {from} to {to}"),
            KeepReason::PartialElements => f.write_str("its storage is not a whole number of elements"),
        }
    }
}

impl KeepReason {
    /// A short machine-readable tag.
    pub fn tag(&self) -> &'static str {
        match self {
            KeepReason::NotFloating => "not_floating",
            KeepReason::TargetNotFloating => "target_not_floating",
            KeepReason::AlreadyTarget => "already_target",
            KeepReason::KeepPattern => "keep_pattern",
            KeepReason::NormModule => "norm_module",
            KeepReason::SharesStorageWithKept { .. } => "shares_storage_with_kept",
            KeepReason::SharesStorageWithOtherDtype { .. } => "shares_storage_with_other_dtype",
            KeepReason::PendingCast { .. } => "pending_cast",
            KeepReason::PartialElements => "partial_elements",
        }
    }
}

impl CastReport {
    #[cfg(feature = "internals")] // only the integration tests call it
    pub fn to_json(&self) -> Json {
        json!({
            "to": self.to.name(),
            "cast": self.cast.iter().map(|c| json!({"name": c.name, "from": c.from.name()})).collect::<Vec<_>>(),
            "kept": self.kept.iter().map(|k| json!({"name": k.name, "dtype": k.dtype.name(), "reason": k.reason.tag(), "why": k.reason.to_string()})).collect::<Vec<_>>(),
            "storages_cast": self.storages_cast,
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
        })
    }
}

/// Which tensors a cast leaves alone: those matching a pattern, and with `norms` every tensor
/// of a normalization module ([`super::norms`]).
#[derive(Debug, Clone, Default)]
pub struct Keep {
    pub patterns: Vec<Pattern>,
    pub norms: bool,
}

/// Casts every floating-point tensor (float64/32/16, bfloat16, float8) to `to`, except those
/// `keep` names and those already `to`. Integer, bool and complex tensors are
/// never cast. The cast is recorded, not done: each cast storage gets `cast = {from, to}` and
/// its tensors say `to` (offsets and strides are in elements, so they stay valid).
///
/// A storage viewed by several tensors (tied weights, views) is cast only if all of them are
/// cast and share one dtype; otherwise all of them are kept, with the reason. A storage that
/// already has a pending cast is not cast again. A `to` that is not floating casts nothing
/// (every floating tensor is kept with [`KeepReason::TargetNotFloating`]).
pub fn cast(ckpt: &mut Checkpoint, to: DType, keep: &Keep) -> CastReport {
    let bytes_before = ckpt.storages.iter().map(|s| s.out_nbytes()).sum();
    let mut reason = tensor_reasons(ckpt, to, keep);
    let storages_cast = cast_storages(ckpt, to, &mut reason);
    let mut cast = Vec::new();
    let mut kept = Vec::new();
    for (i, t) in ckpt.tensors.iter_mut().enumerate() {
        match reason[i].take() {
            Some(reason) => kept.push(KeptEntry {
                name: t.name.clone(),
                dtype: t.dtype,
                reason,
            }),
            None => {
                cast.push(CastEntry {
                    name: t.name.clone(),
                    from: t.dtype,
                });
                t.dtype = to;
            }
        }
    }
    let bytes_after = ckpt.storages.iter().map(|s| s.out_nbytes()).sum();
    CastReport {
        to,
        cast,
        kept,
        storages_cast,
        bytes_before,
        bytes_after,
    }
}

/// Why each tensor, on its own, is not cast (None: it is, unless its storage says otherwise).
fn tensor_reasons(ckpt: &Checkpoint, to: DType, keep: &Keep) -> Vec<Option<KeepReason>> {
    let norm = if keep.norms {
        norm_members(ckpt)
    } else {
        vec![false; ckpt.tensors.len()]
    };
    ckpt.tensors
        .iter()
        .zip(norm)
        .map(|(t, norm)| {
            if !t.dtype.is_floating() {
                Some(KeepReason::NotFloating)
            } else if !to.is_floating() {
                Some(KeepReason::TargetNotFloating)
            } else if keep.patterns.iter().any(|p| p.matches(&t.name)) {
                Some(KeepReason::KeepPattern)
            } else if norm {
                Some(KeepReason::NormModule)
            } else if t.dtype == to {
                Some(KeepReason::AlreadyTarget)
            } else {
                None
            }
        })
        .collect()
}

/// Records a pending cast to `to` on every storage whose tensors are all to be cast; the
/// tensors of the other storages get the storage's reason. Returns the storages cast.
fn cast_storages(ckpt: &mut Checkpoint, to: DType, reason: &mut [Option<KeepReason>]) -> usize {
    let mut by_storage: BTreeMap<StorageId, Vec<usize>> = BTreeMap::new();
    for (i, t) in ckpt.tensors.iter().enumerate() {
        by_storage.entry(t.storage).or_default().push(i);
    }
    let mut storages_cast = 0;
    for (sid, members) in &by_storage {
        let selected: Vec<usize> = members.iter().copied().filter(|&i| reason[i].is_none()).collect();
        let Some(&first) = selected.first() else {
            continue;
        };
        match storage_reason(ckpt, *sid, members, &selected, reason) {
            Some(why) => {
                let first = &ckpt.tensors[first];
                for &i in &selected {
                    // Name the other tensor, not the tensor itself.
                    let why = match &why {
                        KeepReason::SharesStorageWithOtherDtype { other, .. } if *other == ckpt.tensors[i].name => {
                            KeepReason::SharesStorageWithOtherDtype {
                                other: first.name.clone(),
                                dtype: first.dtype,
                            }
                        }
                        w => w.clone(),
                    };
                    reason[i] = Some(why);
                }
            }
            None => {
                let from = ckpt.tensors[first].dtype;
                ckpt.storages[sid.0].cast = Some(Cast { from, to });
                storages_cast += 1;
            }
        }
    }
    storages_cast
}

/// Why the `selected` tensors of a storage (of its `members`, all its tensors) cannot be cast
/// together, if they cannot.
fn storage_reason(
    ckpt: &Checkpoint,
    sid: StorageId,
    members: &[usize],
    selected: &[usize],
    reason: &[Option<KeepReason>],
) -> Option<KeepReason> {
    let storage = &ckpt.storages[sid.0];
    let first = &ckpt.tensors[selected[0]];
    if let Some(c) = storage.cast.filter(|c| c.from != c.to) {
        Some(KeepReason::PendingCast { from: c.from, to: c.to })
    } else if let Some(&other) = members.iter().find(|&&i| reason[i].is_some()) {
        Some(KeepReason::SharesStorageWithKept {
            other: ckpt.tensors[other].name.clone(),
        })
    } else if let Some(&other) = selected.iter().find(|&&i| ckpt.tensors[i].dtype != first.dtype) {
        let o = &ckpt.tensors[other];
        Some(KeepReason::SharesStorageWithOtherDtype {
            other: o.name.clone(),
            dtype: o.dtype,
        })
    } else if !storage.data.len.is_multiple_of(first.dtype.size() as u64) {
        Some(KeepReason::PartialElements)
    } else {
        None
    }
}

/// For every tensor on a storage with a pending cast, what the cast loses ([`Losses`]: finite
/// values that become inf, non-zero values that become ±0). Only tensors that lose something
/// are listed, in tensor order. Counts are over the tensor's elements (a tensor that repeats an
/// element, as an expanded view does, counts it each time). Tensors whose bytes cannot be read
/// are skipped here (the writer reports them); [`try_loss_report`] fails on them instead.
#[cfg(feature = "internals")] // only the integration tests call it
pub fn loss_report(ckpt: &Checkpoint) -> Vec<(String, Losses)> {
    loss_impl(ckpt, false, pass::threads()).unwrap_or_default()
}

/// [`loss_report`] on up to `threads` threads (fewer than the cores where it runs beside a
/// write), failing on the first tensor whose bytes cannot be read.
pub fn try_loss_report(ckpt: &Checkpoint, threads: usize) -> crate::Result<Vec<(String, Losses)>> {
    loss_impl(ckpt, true, threads)
}

fn loss_impl(ckpt: &Checkpoint, strict: bool, threads: usize) -> crate::Result<Vec<(String, Losses)>> {
    // A copy of the checkpoint's storages without their casts, and each tensor as a view of
    // the source elements: streaming it gives the bytes the cast will convert.
    let mut source = Checkpoint {
        format: ckpt.format,
        root: Node::None,
        tensors: Vec::new(),
        storages: ckpt
            .storages
            .iter()
            .map(|s| crate::model::Storage {
                cast: None,
                ..s.clone()
            })
            .collect(),
        metadata: Default::default(),
        globals: Default::default(),
        origin: ckpt.origin,
        files: ckpt.files.clone(),
        module_classes: Default::default(),
        modules: Vec::new(),
        names: Default::default(),
    };
    // The tensors a cast applies to, each as a view of its source elements.
    let mut casts = Vec::new();
    for t in &ckpt.tensors {
        let Some(c) = ckpt.storage(t.storage).cast.filter(|c| c.from != c.to && elem::supported(c.from, c.to)) else {
            continue;
        };
        let mut view = t.clone();
        view.dtype = c.from;
        source.tensors.push(view);
        casts.push((t.name.clone(), c));
    }
    // Every byte is read: a tensor per thread at a time.
    let tasks: Vec<usize> = (0..casts.len()).collect();
    let counted = pass::map(&tasks, |&i| source.tensors[i].nbytes(), threads, |&i| {
        let c = casts[i].1;
        let mut lost = Losses::default();
        tensor_data::for_each_chunk::<crate::Error>(&source, &source.tensors[i], |bytes| {
            let l = elem::losses(c.from, c.to, bytes);
            lost.overflow += l.overflow;
            lost.underflow += l.underflow;
            Ok(())
        })
        .map(|()| lost)
    });
    let mut out = Vec::new();
    for ((name, _), r) in casts.into_iter().zip(counted) {
        match r {
            Ok(lost) if lost != Losses::default() => out.push((name, lost)),
            Ok(_) => {}
            Err(e) if strict => return Err(e),
            Err(_) => {}
        }
    }
    Ok(out)
}
