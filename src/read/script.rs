//! What a TorchScript archive's `code/` says about its module classes: which attributes are
//! parameters and which are buffers (data.pkl alone does not tell them apart), and the values
//! of their constants (`in_features`, `p`, `kernel_size`...), which data.pkl does not hold.

use std::collections::{HashMap, HashSet};

use crate::model::Node;

/// Parameter and buffer names of one scripted module class, and its constants.
#[derive(Debug, Default, Clone)]
pub struct ScriptClass {
    pub parameters: HashSet<String>,
    pub buffers: HashSet<String>,
    /// `name : Final[type] = value` lines, in order, with the values ckpt can read.
    pub constants: Vec<(String, Node)>,
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
            // Class-level lines are indented two spaces; a method's body lies deeper.
            let class_level = line.len() - trimmed.len() == 2;
            if let Some((name, value)) = constant(trimmed).filter(|_| class_level) {
                self.classes.entry(class.clone()).or_default().constants.push((name, value));
                continue;
            }
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

/// A class constant as the serializer prints it: `in_features : Final[int] = 4`,
/// `kernel_size : Final[Tuple[int, int]] = (3, 3)`; None for any other line or a value that is
/// not a plain literal.
fn constant(line: &str) -> Option<(String, Node)> {
    let (name, rest) = line.split_once(" : Final[")?;
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    // The type's brackets nest (`Final[Tuple[int, int]]`): its end is the bracket that closes
    // `Final[`.
    let mut open = 1usize;
    let end = rest.char_indices().find_map(|(i, c)| {
        match c {
            '[' => open += 1,
            ']' => open -= 1,
            _ => {}
        }
        (open == 0).then_some(i)
    })?;
    let value = rest[end + 1..].strip_prefix(" = ")?;
    let mut parser = Literal { text: value.trim_end(), at: 0 };
    let node = parser.value(0)?;
    parser.skip_spaces();
    (parser.at == parser.text.len()).then(|| (name.to_string(), node))
}

/// Literals nest no deeper than this (a tuple of tuples is as deep as real constants go).
const MAX_LITERAL_DEPTH: usize = 8;

/// A reader of the Python literals TorchScript prints for constants: None, True, False, ints,
/// floats (`0.29999999999999999`, `2.`, `1e-05`), double-quoted strings, tuples and lists.
struct Literal<'t> {
    text: &'t str,
    at: usize,
}

impl Literal<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn skip_spaces(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, token: &str) -> bool {
        let found = self.rest().starts_with(token);
        if found {
            self.at += token.len();
        }
        found
    }

    fn value(&mut self, depth: usize) -> Option<Node> {
        if depth > MAX_LITERAL_DEPTH {
            return None;
        }
        self.skip_spaces();
        for (word, node) in [("None", Node::None), ("True", Node::Bool(true)), ("False", Node::Bool(false))] {
            if self.eat(word) {
                return Some(node);
            }
        }
        if self.eat("(") {
            return self.items(")", depth).map(Node::Tuple);
        }
        if self.eat("[") {
            return self.items("]", depth).map(Node::List);
        }
        if self.eat("\"") {
            return self.string();
        }
        self.number()
    }

    /// Items up to `close`: `(a, b)`, `(a,)`, `()`.
    fn items(&mut self, close: &str, depth: usize) -> Option<Vec<Node>> {
        let mut items = Vec::new();
        loop {
            self.skip_spaces();
            if self.eat(close) {
                return Some(items);
            }
            items.push(self.value(depth + 1)?);
            self.skip_spaces();
            if !self.eat(",") {
                self.skip_spaces();
                return self.eat(close).then_some(items);
            }
        }
    }

    /// The rest of a double-quoted string, its escapes undone.
    fn string(&mut self) -> Option<Node> {
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.at += i + 1;
                    return Some(Node::Str(out));
                }
                '\\' => out.push(match chars.next()?.1 {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                }),
                other => out.push(other),
            }
        }
        None
    }

    fn number(&mut self) -> Option<Node> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
            .unwrap_or(rest.len());
        let text = &rest[..len];
        let node = match text.parse::<i64>() {
            Ok(i) => Node::Int(i),
            Err(_) if text.contains(['.', 'e']) || text.ends_with("inf") || text == "nan" => Node::Float(text.parse().ok()?),
            Err(_) => return None,
        };
        self.at += len;
        Some(node)
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
        assert!(c.constants.is_empty());
        assert_eq!(
            module_name("__torch__/torch/nn/modules/conv.py").as_deref(),
            Some("__torch__.torch.nn.modules.conv")
        );
    }

    #[test]
    fn reads_constants_of_every_literal_kind() {
        let mut classes = ScriptClasses::default();
        classes.add_source(
            "__torch__.torch.nn.modules.conv",
            concat!(
                "class Conv2d(Module):\n",
                "  training : bool\n",
                "  kernel_size : Final[Tuple[int, int]] = (3, 3)\n",
                "  normalized_shape : Final[Tuple[int]] = (4,)\n",
                "  eps : Final[float] = 9.9999999999999995e-07\n",
                "  norm_type : Final[float] = 2.\n",
                "  groups : Final[int] = -2\n",
                "  padding_mode : Final[str] = \"ze\\\"ros\"\n",
                "  max_norm : Final[NoneType] = None\n",
                "  bias : Final[bool] = True\n",
                "  dims : Final[List[int]] = [1, 2]\n",
                "  odd : Final[int] = f(3)\n",
                "  def forward(self):\n",
                "    x : Final[int] = 5\n",
            ),
        );
        let c = classes.get("__torch__.torch.nn.modules.conv.Conv2d").expect("class");
        let tuple = |v: &[i64]| Node::Tuple(v.iter().map(|&i| Node::Int(i)).collect());
        assert_eq!(
            c.constants,
            vec![
                ("kernel_size".to_string(), tuple(&[3, 3])),
                ("normalized_shape".to_string(), tuple(&[4])),
                ("eps".to_string(), Node::Float(1e-6)),
                ("norm_type".to_string(), Node::Float(2.0)),
                ("groups".to_string(), Node::Int(-2)),
                ("padding_mode".to_string(), Node::Str("ze\"ros".into())),
                ("max_norm".to_string(), Node::None),
                ("bias".to_string(), Node::Bool(true)),
                ("dims".to_string(), Node::List(vec![Node::Int(1), Node::Int(2)])),
                // f(3) is no literal; `x` is a local of forward, not a class constant.
            ]
        );
    }
}
