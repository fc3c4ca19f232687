//! What a checkpoint's numbers say about its health, from every tensor's [`TensorStats`]: the
//! tensors holding NaN or infinities, the all-zero ones, the values a float16 cast would lose,
//! and tensors with identical contents that are not the same storage (a copy where a tie was
//! meant, or a layer that was never trained).

use std::collections::HashMap;

use crate::dtype::DType;
use crate::error::Result;
use crate::model::Checkpoint;
use crate::tensor_data::try_sha256_hex;
use crate::tensor_ref::TensorRef;

use super::TensorStats;

/// The findings about a checkpoint's numbers; see [`Checkpoint::stats`]. Each list names
/// tensors in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Findings {
    nan: Vec<String>,
    inf: Vec<String>,
    all_zero: Vec<String>,
    above_f16: Vec<String>,
    below_f16_normal: Vec<String>,
    identical: Vec<Vec<String>>,
}

impl Findings {
    /// Tensors holding NaN (real or imaginary parts).
    pub fn nan(&self) -> &[String] {
        &self.nan
    }

    /// Tensors holding +inf or -inf.
    pub fn inf(&self) -> &[String] {
        &self.inf
    }

    /// Tensors with at least one element, all zero.
    pub fn all_zero(&self) -> &[String] {
        &self.all_zero
    }

    /// Floating tensors (other than float16) with finite values a cast to float16 would turn
    /// into infinities.
    pub fn above_f16(&self) -> &[String] {
        &self.above_f16
    }

    /// Floating tensors (other than float16) with nonzero values below float16's smallest
    /// normal number, which a cast would round coarsely or flush to zero.
    pub fn below_f16_normal(&self) -> &[String] {
        &self.below_f16_normal
    }

    /// Groups of two or more tensors with the same dtype, shape and bytes that do not share
    /// their storage view (tied weights share one and are not listed). Constant tensors (every
    /// element equal, like a fresh norm's weights or a zero bias) are left out: they equal every
    /// other of their shape and say nothing.
    pub fn identical(&self) -> &[Vec<String>] {
        &self.identical
    }
}

/// The findings of `stats`, the statistics of `tensors` (same order).
pub(crate) fn findings(ckpt: &Checkpoint, tensors: &[TensorRef<'_>], stats: &[TensorStats]) -> Result<Findings> {
    let mut f = Findings::default();
    for (t, s) in tensors.iter().zip(stats) {
        let parts = std::iter::once(s.values()).chain(s.imag());
        let name = || t.name().to_string();
        if parts.clone().any(|m| m.nan() > 0) {
            f.nan.push(name());
        }
        if parts.clone().any(|m| m.pos_inf() + m.neg_inf() > 0) {
            f.inf.push(name());
        }
        if s.values().count() > 0 && s.zeros() == s.values().count() {
            f.all_zero.push(name());
        }
        // A float16 tensor is what a cast would make; every other float kind (bfloat16 and
        // float8_e8m0fnu included: their range is float32's) can hold what float16 cannot.
        let castable =
            (t.dtype().is_floating() || t.dtype().is_complex()) && !matches!(t.dtype(), DType::F16 | DType::C32);
        if castable {
            if parts.clone().any(|m| m.above_f16() > 0) {
                f.above_f16.push(name());
            }
            if parts.clone().any(|m| m.below_f16_normal() > 0) {
                f.below_f16_normal.push(name());
            }
        }
    }
    f.identical = identical(ckpt, tensors, stats)?;
    Ok(f)
}

/// Groups of untied tensors with equal contents. Equal contents give bit-equal statistics, so
/// only tensors whose dtype, shape and statistics all agree are hashed to confirm.
fn identical(ckpt: &Checkpoint, tensors: &[TensorRef<'_>], stats: &[TensorStats]) -> Result<Vec<Vec<String>>> {
    // Grouped by dtype, shape and the statistics' bits: a lookup per tensor, not a scan of
    // the groups so far (a checkpoint may hold 100k tensors).
    let mut candidates: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<(DType, &[u64], String), usize> = HashMap::new();
    for i in 0..tensors.len() {
        let v = stats[i].values();
        let constant =
            v.finite() == v.count() && v.min() == v.max() && stats[i].imag().is_none_or(|m| m.min() == m.max());
        if tensors[i].numel() == 0 || constant {
            continue;
        }
        // Equal statistics print equal (`{:?}` of an f64 is its exact shortest form).
        let key = (tensors[i].dtype(), tensors[i].shape(), format!("{:?}", stats[i]));
        match group_of.get(&key) {
            Some(&g) => candidates[g].push(i),
            None => {
                group_of.insert(key, candidates.len());
                candidates.push(vec![i]);
            }
        }
    }
    let mut groups = Vec::new();
    for group in candidates.into_iter().filter(|g| g.len() > 1) {
        let mut by_hash: Vec<(String, Vec<usize>)> = Vec::new();
        for i in group {
            let t = tensors[i].raw();
            let tied = |j: usize| {
                let u = tensors[j].raw();
                u.storage == t.storage && u.offset == t.offset && u.stride == t.stride
            };
            let hash = try_sha256_hex(ckpt, t)?;
            match by_hash.iter_mut().find(|(h, _)| *h == hash) {
                Some((_, members)) if members.iter().all(|&j| !tied(j)) => members.push(i),
                Some(_) => {}
                None => by_hash.push((hash, vec![i])),
            }
        }
        groups.extend(
            by_hash
                .into_iter()
                .filter(|(_, m)| m.len() > 1)
                .map(|(_, m)| m.into_iter().map(|i| tensors[i].name().to_string()).collect()),
        );
    }
    groups.sort();
    Ok(groups)
}
