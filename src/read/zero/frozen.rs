//! Frozen parameters (`requires_grad=False`): ZeRO keeps them out of the optimizer's
//! partitions, and every model-states file saves its part of each in `frozen_param_fragments`.
//! As `zero_to_fp32.py` reads them: under ZeRO-2 rank 0's fragment is the whole parameter, taken
//! as saved (its dtype too); under ZeRO-3 each rank holds `ceil(numel / ranks)` elements and the
//! parameter is the fragments joined in rank order, cut to `numel`.

use crate::assembly::Piece;
use crate::dtype::DType;
use crate::model::{Checkpoint, DataRef, TensorIdx};

use super::layout::{cut, numel};
use super::states::{tensor_bytes, ModelStates, Stage};

/// A frozen parameter as 1-D pieces of its elements.
pub struct Frozen {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub pieces: Vec<Piece>,
}

/// Every frozen parameter rank 0's file names, in its order. `models`: each model-states file's
/// name (for messages), checkpoint and states, rank 0 first.
pub fn frozen(stage: Stage, models: &[(String, &Checkpoint, &ModelStates)]) -> Result<Vec<Frozen>, String> {
    let Some((_, _, first)) = models.first() else {
        return Ok(Vec::new());
    };
    first
        .frozen
        .iter()
        .map(|(name, shape)| match stage {
            Stage::Two => whole(name, &models[0]),
            Stage::Three => joined(name, shape, models),
        })
        .collect()
}

/// The fragment `file` saved of `name`, and its bytes.
fn fragment(name: &str, (file, ckpt, states): &(String, &Checkpoint, &ModelStates)) -> Result<(TensorIdx, DataRef), String> {
    let idx = states
        .fragments
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, idx)| *idx)
        .ok_or_else(|| format!("{file} saves no frozen_param_fragments entry for frozen parameter '{name}'"))?;
    let data = tensor_bytes(ckpt, idx).map_err(|why| format!("{file}: frozen_param_fragments.{name}: {why}"))?;
    Ok((idx, data))
}

fn whole(name: &str, model: &(String, &Checkpoint, &ModelStates)) -> Result<Frozen, String> {
    let (idx, data) = fragment(name, model)?;
    let t = &model.1.tensors[idx];
    Ok(Frozen {
        name: name.to_string(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        pieces: vec![Piece {
            offsets: vec![0],
            sizes: vec![t.numel()],
            data,
        }],
    })
}

fn joined(name: &str, shape: &[u64], models: &[(String, &Checkpoint, &ModelStates)]) -> Result<Frozen, String> {
    let n = numel(name, shape)?;
    let mut runs = Vec::with_capacity(models.len());
    let mut dtype = None;
    for model in models {
        let (idx, data) = fragment(name, model)?;
        let t = &model.1.tensors[idx];
        if t.shape.len() != 1 || dtype.is_some_and(|d| d != t.dtype) {
            return Err(format!(
                "{}: frozen_param_fragments.{name} is a {} tensor of shape {:?}; ZeRO-3 saves 1-D fragments of one dtype",
                model.0, t.dtype, t.shape
            ));
        }
        dtype = Some(t.dtype);
        runs.push(data);
    }
    let dtype = dtype.ok_or_else(|| format!("frozen parameter '{name}' has no fragments"))?;
    let mut pieces = Vec::new();
    let refs: Vec<&DataRef> = runs.iter().collect();
    cut(&refs, dtype.size() as u64, 0, n, 0, &mut pieces).ok_or_else(|| {
        format!("frozen parameter '{name}' ({n} elements) is longer than the ranks' fragments joined")
    })?;
    Ok(Frozen {
        name: name.to_string(),
        dtype,
        shape: shape.to_vec(),
        pieces,
    })
}
