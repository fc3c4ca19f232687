//! How a distributed checkpoint's global tensor is split: its chunks, the dimensions they cut,
//! the files they lie in; and which tensors are optimizer state (DCP saves them beside the
//! model under `optim.`, as `torch.distributed.checkpoint.state_dict.get_state_dict` names them).

use serde_json::{json, Value as Json};

use crate::model::{Checkpoint, Tensor};

/// The prefix of optimizer state in a DCP state dict (`optim.state.<fqn>.exp_avg`,
/// `optim.param_groups.0.lr`).
pub const OPTIMIZER_PREFIX: &str = "optim.";

/// Whether the tensor is optimizer state of a distributed checkpoint.
pub fn is_optimizer_state(ckpt: &Checkpoint, t: &Tensor) -> bool {
    ckpt.format == crate::Format::Dcp && t.name.starts_with(OPTIMIZER_PREFIX)
}

/// Each chunk of an assembled tensor as JSON (offsets, sizes, file name); None for a tensor
/// stored in one piece.
pub fn chunks_json(ckpt: &Checkpoint, t: &Tensor) -> Option<Json> {
    let assembly = ckpt.storage(t.storage).data.source.assembly()?;
    Some(
        assembly
            .pieces()
            .iter()
            .map(|p| json!({"offsets": p.offsets, "sizes": p.sizes, "file": file_name(p.data.source.path())}))
            .collect(),
    )
}

/// One line of the inspect table: `4 on dims 0, 1` (or `3 flat ranges` of a tensor assembled
/// flat, as DeepSpeed ZeRO partitions it) and the files (`__0_0 __1_0 ...`).
pub fn summary(ckpt: &Checkpoint, t: &Tensor) -> Option<(String, String)> {
    let assembly = ckpt.storage(t.storage).data.source.assembly()?;
    let pieces = assembly.pieces();
    let shape = assembly.shape();
    let cut: Vec<String> = (0..shape.len())
        .filter(|&d| pieces.iter().any(|p| p.sizes[d] != shape[d]))
        .map(|d| d.to_string())
        .collect();
    let chunks = match cut.as_slice() {
        [] => format!("{} whole", pieces.len()),
        [_] if shape != t.shape => format!("{} flat ranges", pieces.len()),
        [d] => format!("{} on dim {d}", pieces.len()),
        many => format!("{} on dims {}", pieces.len(), many.join(",")),
    };
    let mut files: Vec<String> = pieces
        .iter()
        .map(|p| {
            let name = file_name(p.data.source.path());
            let stem = name.strip_suffix(".distcp").or_else(|| name.strip_suffix("_optim_states.pt"));
            stem.map(str::to_string).unwrap_or(name)
        })
        .collect();
    files.sort();
    files.dedup();
    let shown = if files.len() > 4 {
        format!("{} .. {} ({} files)", files[0], files[files.len() - 1], files.len())
    } else {
        files.join(" ")
    };
    Some((chunks, shown))
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name().unwrap_or_default().to_string_lossy().into_owned()
}
