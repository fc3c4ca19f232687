//! `--keep-norms`: which tensors belong to normalization modules (BatchNorm, LayerNorm,
//! GroupNorm, RMSNorm...), so a cast can leave them in their dtype.
//!
//! Where the file holds the modules (a whole model, TorchScript), their classes decide: a class
//! named `...Norm` or `...Norm1d/2d/3d` (`BatchNorm2d`, `SyncBatchNorm`, `LayerNorm`, `RMSNorm`,
//! `LlamaRMSNorm`). Elsewhere, a plain state dict says nothing about modules, so the structure
//! does: a module with a `running_mean` or `running_var` (BatchNorm and InstanceNorm with
//! tracked statistics) is a norm, and so is a module whose own name reads like one (`norm`,
//! `LayerNorm`, `input_layernorm`, `ln_f`, `ln_1`, `bn1`, `gn`). Every tensor directly in such
//! a module is kept (`weight`, `bias`, the running statistics and their counter), never its
//! submodules'.

use crate::model::Checkpoint;

/// For every tensor of `ckpt` (in order), whether it belongs to a normalization module.
pub fn norm_members(ckpt: &Checkpoint) -> Vec<bool> {
    let by_structure = structural_members(ckpt.tensors.iter().map(|t| t.name.as_str()));
    ckpt.tensors
        .iter()
        .zip(by_structure)
        .map(|(t, structural)| {
            let module = t.name.rsplit_once('.').map_or("", |(m, _)| m);
            match ckpt.module_classes.get(module) {
                Some(class) => norm_class(class),
                None => structural,
            }
        })
        .collect()
}

/// Whether a module class (by its dotted name) is a normalization layer.
fn norm_class(dotted: &str) -> bool {
    let name = dotted.rsplit('.').next().unwrap_or(dotted);
    let name = ["1d", "2d", "3d"]
        .iter()
        .find_map(|d| name.strip_suffix(d))
        .unwrap_or(name);
    name.ends_with("Norm") && !name.ends_with("LocalResponseNorm")
}

/// The structural guess for tensor `names` (see the module docs).
fn structural_members<'a>(names: impl Iterator<Item = &'a str> + Clone) -> Vec<bool> {
    let with_stats: Vec<&str> = names
        .clone()
        .filter_map(|n| {
            let (module, leaf) = n.rsplit_once('.')?;
            matches!(leaf, "running_mean" | "running_var").then_some(module)
        })
        .collect();
    names
        .map(|n| match n.rsplit_once('.') {
            Some((module, _)) => with_stats.contains(&module) || norm_like(last_component(module)),
            None => false,
        })
        .collect()
}

fn last_component(module: &str) -> &str {
    module.rsplit('.').next().unwrap_or(module)
}

/// Whether a module's own name reads like a normalization layer's.
fn norm_like(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if lower.contains("norm") {
        return true;
    }
    // Short names in common use: bn, bn1, bn_2, ln, ln_f, ln_1, gn.
    ["bn", "ln", "gn"].iter().any(|short| {
        lower.strip_prefix(short).is_some_and(|rest| {
            let rest = rest.strip_prefix('_').unwrap_or(rest);
            rest.is_empty() || rest == "f" || rest.chars().all(|c| c.is_ascii_digit())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_and_names_mark_norm_modules() {
        let names = [
            "features.1.weight",
            "features.1.running_mean",
            "features.1.running_var",
            "features.1.num_batches_tracked",
            "features.0.weight",
            "h.0.ln_1.weight",
            "transformer.ln_f.bias",
            "layers.0.input_layernorm.weight",
            "encoder.LayerNorm.weight",
            "bn1.bias",
            "lnx.weight",
            "bnorm_free.weight",
            "norm",
        ];
        let got = structural_members(names.iter().copied());
        let want = [
            true, true, true, true, false, true, true, true, true, true, false, true, false,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn classes_ending_in_norm_are_norms() {
        for class in [
            "torch.nn.modules.batchnorm.BatchNorm2d",
            "torch.nn.modules.batchnorm.SyncBatchNorm",
            "__torch__.torch.nn.modules.normalization.LayerNorm",
            "torch.nn.modules.normalization.RMSNorm",
            "torch.nn.modules.instancenorm.InstanceNorm1d",
            "transformers.models.llama.modeling_llama.LlamaRMSNorm",
        ] {
            assert!(norm_class(class), "{class}");
        }
        for class in [
            "torch.nn.modules.linear.Linear",
            "torch.nn.modules.normalization.LocalResponseNorm",
            "x.Normal",
            "x.Nd",
        ] {
            assert!(!norm_class(class), "{class}");
        }
    }
}
