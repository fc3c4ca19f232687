//! What a TorchScript archive's `code/` says about its module classes: which attributes are
//! parameters and which are buffers. data.pkl alone does not tell them apart.

use std::collections::{HashMap, HashSet};

/// Parameter and buffer names of one scripted module class.
#[derive(Debug, Default, Clone)]
pub struct ScriptClass {
    pub parameters: HashSet<String>,
    pub buffers: HashSet<String>,
}

/// Scripted module classes by qualified name (`__torch__.torch.nn.modules.conv.Conv2d`).
#[derive(Debug, Default, Clone)]
pub struct ScriptClasses {
    classes: HashMap<String, ScriptClass>,
}

impl ScriptClasses {
    pub fn get(&self, qualified: &str) -> Option<&ScriptClass> {
        self.classes.get(qualified)
    }

    #[cfg(feature = "internals")] // only the integration tests call it
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    #[cfg(feature = "internals")] // only the integration tests call it
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Reads one source file, `module` being its path under `code/` as a dotted name
    /// (`code/__torch__/torch/nn/modules/conv.py` -> `__torch__.torch.nn.modules.conv`).
    /// The serializer writes each class as `class Name(Module):` followed by indented
    /// `__parameters__ = ["a", "b", ]` and `__buffers__ = [...]` lines.
    pub fn add_source(&mut self, module: &str, source: &str) {
        let mut current: Option<String> = None;
        for line in source.lines() {
            if let Some(rest) = line.strip_prefix("class ") {
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                current = Some(format!("{module}.{name}"));
                continue;
            }
            let Some(class) = &current else { continue };
            let trimmed = line.trim_start();
            let (field, rest) = if let Some(r) = trimmed.strip_prefix("__parameters__ = ") {
                (true, r)
            } else if let Some(r) = trimmed.strip_prefix("__buffers__ = ") {
                (false, r)
            } else {
                continue;
            };
            let names = quoted_names(rest);
            let entry = self.classes.entry(class.clone()).or_default();
            if field {
                entry.parameters.extend(names);
            } else {
                entry.buffers.extend(names);
            }
        }
    }
}

/// The double-quoted strings of a Python list literal.
fn quoted_names(list: &str) -> Vec<String> {
    list.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

/// `code/__torch__/a/b.py` (below the archive prefix) as the module name `__torch__.a.b`.
pub fn module_name(path_under_code: &str) -> Option<String> {
    let stem = path_under_code.strip_suffix(".py")?;
    Some(stem.replace('/', "."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_parameter_and_buffer_lists() {
        let mut classes = ScriptClasses::default();
        classes.add_source(
            "__torch__.torch.nn.modules.batchnorm",
            "class BatchNorm1d(Module):\n  __parameters__ = [\"weight\", \"bias\", ]\n  __buffers__ = [\"running_mean\", ]\n  weight : Tensor\n",
        );
        let c = classes
            .get("__torch__.torch.nn.modules.batchnorm.BatchNorm1d")
            .expect("class");
        assert!(c.parameters.contains("weight") && c.parameters.contains("bias"));
        assert_eq!(c.buffers.iter().collect::<Vec<_>>(), vec!["running_mean"]);
        assert_eq!(
            module_name("__torch__/torch/nn/modules/conv.py").as_deref(),
            Some("__torch__.torch.nn.modules.conv")
        );
    }
}
