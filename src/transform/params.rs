//! Which tensors are parameters, counted as PyTorch counts them
//! (`sum(p.numel() for p in model.parameters())`): what `inspect` and `freeze` both report.
//!
//! A file saved with real flags (a whole model, a TorchScript archive, `state_dict(keep_vars=True)`
//! and other files holding `nn.Parameter`s) says for every tensor whether it is a parameter. A
//! plain `state_dict()` holds detached tensors and no module information, so parameters are
//! recognised by shape of the data: floating-point (or complex) tensors, except well-known
//! buffers ([`is_known_buffer`]). Either way, tensors under a top-level key naming optimizer,
//! scheduler or grad-scaler state are training state, and under an `rng` key other state.
//! Parameters tied to one another (the same view of one storage: one `nn.Parameter` saved
//! under two names) count once, as `model.parameters()` yields them once.

use std::collections::HashSet;

use crate::dtype::DType;
use crate::model::{Checkpoint, Origin, Tensor};

/// What a tensor is to PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Parameter,
    /// A module buffer (BatchNorm statistics, `inv_freq`...) or a non-parameter in a file with flags.
    Buffer,
    /// Optimizer, scheduler or grad-scaler state.
    TrainingState,
    /// Anything else (random-number-generator state...).
    Other,
}

/// Whether a tensor name ends in a well-known buffer name (BatchNorm running statistics and
/// counter, rotary `inv_freq`, `position_ids`, `relative_position_index`): the heuristic used
/// when a file has no Parameter flags.
pub fn is_known_buffer(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    matches!(
        last,
        "running_mean"
            | "running_var"
            | "num_batches_tracked"
            | "inv_freq"
            | "position_ids"
            | "relative_position_index"
    )
}

fn top_level(name: &str) -> String {
    name.split('.').next().unwrap_or(name).to_ascii_lowercase()
}

/// Optimizer, scheduler and grad-scaler state of a training checkpoint (by its top-level key).
pub(crate) fn is_training_state(name: &str) -> bool {
    let first = top_level(name);
    first.contains("optim") || first.contains("sched") || first.contains("scaler")
}

fn is_rng_state(name: &str) -> bool {
    top_level(name).contains("rng")
}

pub(crate) fn can_require_grad(d: DType) -> bool {
    d.is_floating() || d.is_complex()
}

/// Whether the file holds real Parameter flags (see the module docs).
pub fn file_has_flags(ckpt: &Checkpoint) -> bool {
    ckpt.origin != Origin::Data || ckpt.tensors.iter().any(|t| t.parameter)
}

/// What `t` is, in a file that holds flags (`flags`) or not.
pub fn role(t: &Tensor, flags: bool) -> Role {
    if t.parameter {
        Role::Parameter
    } else if is_training_state(&t.name) {
        Role::TrainingState
    } else if is_rng_state(&t.name) {
        Role::Other
    } else if flags || !can_require_grad(t.dtype) || is_known_buffer(&t.name) {
        Role::Buffer
    } else {
        Role::Parameter
    }
}

/// A view's identity: storage, offset, dtype, shape, strides. Identical views are one tensor
/// to PyTorch when they are parameters (tied weights).
pub(crate) type ViewKey = (usize, u64, DType, Vec<u64>, Vec<u64>);

pub(crate) fn view_key(t: &Tensor) -> ViewKey {
    (t.storage.0, t.offset, t.dtype, t.shape.clone(), t.stride.clone())
}

/// Tensors and elements of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub tensors: usize,
    pub elements: u64,
}

impl Count {
    fn add(&mut self, t: &Tensor) {
        self.tensors += 1;
        self.elements += t.numel();
    }
}

/// The tensors of a checkpoint by [`Role`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Whether the file says which tensors are parameters (else they were recognised).
    pub flags: bool,
    /// Parameters, tied ones counted once: `model.parameters()`'s count.
    pub parameters: Count,
    /// Parameter names that repeat an earlier parameter (tied), not counted above.
    pub tied: usize,
    pub buffers: Count,
    pub training_state: Count,
    pub other: Count,
}

/// For each of `tensors` (all of `ckpt`'s, or a filtered subset), its role, with `None` for a
/// parameter tied to an earlier one (counted there).
fn roles<'a>(ckpt: &Checkpoint, tensors: impl Iterator<Item = &'a Tensor>) -> Vec<(&'a Tensor, Option<Role>)> {
    let flags = file_has_flags(ckpt);
    let mut seen: HashSet<ViewKey> = HashSet::new();
    tensors
        .map(|t| match role(t, flags) {
            Role::Parameter if !seen.insert(view_key(t)) => (t, None),
            r => (t, Some(r)),
        })
        .collect()
}

/// For each of `tensors`, whether its elements count as parameters (tied ones once).
pub fn counted_parameters<'a>(ckpt: &Checkpoint, tensors: impl Iterator<Item = &'a Tensor>) -> Vec<bool> {
    roles(ckpt, tensors)
        .into_iter()
        .map(|(_, r)| r == Some(Role::Parameter))
        .collect()
}

/// Counts `tensors` (all of `ckpt`'s, or a filtered subset) by role.
pub fn census<'a>(ckpt: &Checkpoint, tensors: impl Iterator<Item = &'a Tensor>) -> Census {
    let mut c = Census {
        flags: file_has_flags(ckpt),
        ..Default::default()
    };
    for (t, r) in roles(ckpt, tensors) {
        match r {
            None => c.tied += 1,
            Some(Role::Parameter) => c.parameters.add(t),
            Some(Role::Buffer) => c.buffers.add(t),
            Some(Role::TrainingState) => c.training_state.add(t),
            Some(Role::Other) => c.other.add(t),
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_buffers_and_training_state() {
        assert!(is_known_buffer("bn.running_mean"));
        assert!(is_known_buffer("num_batches_tracked"));
        assert!(!is_known_buffer("bn.weight"));
        assert!(is_training_state("optimizer_state_dict.state.2.exp_avg"));
        assert!(is_training_state("lr_scheduler.x"));
        assert!(!is_training_state("model_state_dict.fc.weight"));
        assert!(is_rng_state("rng_state"));
    }
}
