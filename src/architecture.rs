//! What a whole model's module objects say about its architecture, without its code: the
//! module tree, which sibling blocks are identical repeats, and the dropout the model holds.
//! Everything comes from [`Checkpoint::modules`]: the classes and plain attributes the file
//! saved. Dropout applied in `forward()` by `torch.nn.functional.dropout` leaves no trace in a
//! file, so nothing here speaks of it.

use std::collections::HashMap;

use crate::model::{Checkpoint, Module, Node};

/// The torch class a TorchScript class name stands for: `__torch__.torch.nn.modules.linear.
/// ___torch_mangle_3.Linear` is `torch.nn.modules.linear.Linear`. None for names that are not
/// TorchScript's or that do not name a torch class (a user's `__torch__.Net` does not say
/// which Python module it came from).
pub fn torch_class(class: &str) -> Option<String> {
    let rest = class.strip_prefix("__torch__.")?;
    let parts: Vec<&str> = rest.split('.').filter(|p| !p.starts_with("___torch_mangle_")).collect();
    (parts.first() == Some(&"torch")).then(|| parts.join("."))
}

/// The class a module is of, as Python names it: TorchScript's names made plain where they
/// say the torch class, the file's own name otherwise.
fn python_class(module: &Module) -> String {
    torch_class(&module.class).unwrap_or_else(|| module.class.clone())
}

fn attribute<'m>(module: &'m Module, name: &str) -> Option<&'m Node> {
    module.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

fn number(node: Option<&Node>) -> Option<f64> {
    match node? {
        Node::Float(f) => Some(*f),
        Node::Int(i) => Some(*i as f64),
        _ => None,
    }
}

/// Where a dropout rate applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropoutKind {
    /// An nn.Dropout module (Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout).
    Module,
    /// The `dropout` of a multi-layer LSTM, GRU or RNN: applied between its layers.
    BetweenLayers,
    /// The `dropout` of an nn.MultiheadAttention: applied to the attention weights.
    Attention,
}

/// A dropout rate a model holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropout {
    /// The module's path, as `named_modules()` spells it.
    pub module: String,
    /// Its class's last name: `Dropout`, `LSTM`...
    pub class: String,
    /// The rate; None where the file does not hold it (a traced TorchScript module keeps no
    /// constants).
    pub p: Option<f64>,
    pub kind: DropoutKind,
}

/// Every dropout rate the model's modules hold, in module order: each nn.Dropout-family module
/// (whatever its p, 0 included), and the `dropout` of multi-layer recurrent modules and of
/// attention modules where it is above 0. Empty for a file without module objects (a state
/// dict): the file cannot say, and [`Checkpoint::modules`] being empty tells the two apart.
pub fn dropout_rates(ckpt: &Checkpoint) -> Vec<Dropout> {
    let mut out = Vec::new();
    for m in &ckpt.modules {
        let class = python_class(m);
        let (module_path, name) = class.rsplit_once('.').unwrap_or(("", &class));
        let kind = match module_path {
            "torch.nn.modules.dropout" => DropoutKind::Module,
            "torch.nn.modules.rnn" if matches!(name, "LSTM" | "GRU" | "RNN") => DropoutKind::BetweenLayers,
            "torch.nn.modules.activation" if name == "MultiheadAttention" => DropoutKind::Attention,
            _ => continue,
        };
        let p = match kind {
            DropoutKind::Module => number(attribute(m, "p")),
            DropoutKind::BetweenLayers | DropoutKind::Attention => number(attribute(m, "dropout")),
        };
        let applies = match kind {
            DropoutKind::Module => true,
            // torch ignores an LSTM's dropout with one layer (and warns); an unknown rate is
            // still worth saying.
            DropoutKind::BetweenLayers => {
                p != Some(0.0) && number(attribute(m, "num_layers")).is_none_or(|layers| layers > 1.0)
            }
            DropoutKind::Attention => p != Some(0.0),
        };
        if applies {
            out.push(Dropout {
                module: m.path.clone(),
                class: name.to_string(),
                p,
                kind,
            });
        }
    }
    out
}

/// The modules as a tree: who is whose child, how deep each lies, and which have the same
/// structure (class, attributes and children, recursively).
pub struct ModuleTree<'a> {
    pub modules: &'a [Module],
    /// Children of each module, in file order.
    pub children: Vec<Vec<usize>>,
    /// Modules with no parent among the modules (the model; several when a file holds several).
    pub roots: Vec<usize>,
    /// Levels below its root (a root is at 0).
    pub depth: Vec<usize>,
    /// Equal for two modules exactly when their structures are equal.
    shape: Vec<usize>,
}

impl<'a> ModuleTree<'a> {
    pub fn new(modules: &'a [Module]) -> ModuleTree<'a> {
        let index: HashMap<&str, usize> = modules
            .iter()
            .enumerate()
            .rev() // a path twice (never in a real file): the first one wins
            .map(|(i, m)| (m.path.as_str(), i))
            .collect();
        let mut children = vec![Vec::new(); modules.len()];
        let mut roots = Vec::new();
        let mut parent = vec![None; modules.len()];
        for (i, m) in modules.iter().enumerate() {
            // The parent is the nearest module whose path is a prefix of this one's; files
            // enter a parent before its children, so it comes earlier.
            let mut path = m.path.as_str();
            let found = loop {
                let Some((up, _)) = path.rsplit_once('.') else {
                    break (!m.path.is_empty()).then(|| index.get("").copied()).flatten();
                };
                if let Some(&p) = index.get(up) {
                    break Some(p);
                }
                path = up;
            };
            match found.filter(|&p| p < i) {
                Some(p) => {
                    children[p].push(i);
                    parent[i] = Some(p);
                }
                None => roots.push(i),
            }
        }
        let mut depth = vec![0; modules.len()];
        for i in 0..modules.len() {
            if let Some(p) = parent[i] {
                depth[i] = depth[p] + 1;
            }
        }
        // Structures are interned bottom-up (children come after their parent in file order),
        // so equal ids mean equal structures without comparing whole subtrees.
        let mut shape = vec![0; modules.len()];
        let mut interned: HashMap<(String, Vec<(String, usize)>), usize> = HashMap::new();
        for i in (0..modules.len()).rev() {
            let m = &modules[i];
            let own = format!("{}|{:?}", m.class, m.attributes);
            let kids = children[i]
                .iter()
                .map(|&c| (last_name(&modules[c].path).to_string(), shape[c]))
                .collect();
            let next = interned.len();
            shape[i] = *interned.entry((own, kids)).or_insert(next);
        }
        ModuleTree {
            modules,
            children,
            roots,
            depth,
            shape,
        }
    }

    /// The children of `parent` grouped into runs: consecutive children named by consecutive
    /// integers (a ModuleList's or Sequential's `0`, `1`...) with equal structures form one run;
    /// every other child is a run of one.
    pub fn runs(&self, parent: usize) -> Vec<Vec<usize>> {
        let mut runs: Vec<Vec<usize>> = Vec::new();
        for &c in &self.children[parent] {
            let index = last_name(&self.modules[c].path).parse::<u64>().ok();
            let joins = runs.last().and_then(|run| run.last()).is_some_and(|&prev| {
                let prev_index = last_name(&self.modules[prev].path).parse::<u64>().ok();
                self.shape[prev] == self.shape[c]
                    && matches!((prev_index, index), (Some(a), Some(b)) if a.checked_add(1) == Some(b))
            });
            match runs.last_mut() {
                Some(run) if joins => run.push(c),
                _ => runs.push(vec![c]),
            }
        }
        runs
    }
}

/// The last part of a dotted path ("" for the root).
pub fn last_name(path: &str) -> &str {
    path.rsplit_once('.').map_or(path, |(_, last)| last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(path: &str, class: &str, attributes: Vec<(&str, Node)>) -> Module {
        Module {
            path: path.into(),
            class: class.into(),
            attributes: attributes.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        }
    }

    #[test]
    fn torchscript_names_say_the_torch_class_only_where_they_can() {
        assert_eq!(
            torch_class("__torch__.torch.nn.modules.linear.___torch_mangle_3.Linear").as_deref(),
            Some("torch.nn.modules.linear.Linear")
        );
        assert_eq!(torch_class("__torch__.___torch_mangle_8.Net"), None);
        assert_eq!(torch_class("torch.nn.modules.linear.Linear"), None);
    }

    #[test]
    fn runs_join_equal_numbered_siblings_only() {
        let block = |path: &str, width: i64| module(path, "m.Block", vec![("width", Node::Int(width))]);
        let modules = vec![
            module("", "m.Net", vec![]),
            block("layers", 0),
            block("layers.0", 4),
            block("layers.1", 4),
            block("layers.2", 4),
            block("layers.3", 8),
            block("layers.5", 8),
            block("head", 4),
        ];
        let tree = ModuleTree::new(&modules);
        assert_eq!(tree.roots, vec![0]);
        assert_eq!(tree.depth, vec![0, 1, 2, 2, 2, 2, 2, 1]);
        assert_eq!(tree.runs(1), vec![vec![2, 3, 4], vec![5], vec![6]]);
        assert_eq!(tree.runs(0), vec![vec![1], vec![7]]);
    }
}
