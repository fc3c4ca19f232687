//! `ckpt inspect --modules` and the dropout line: a whole model's module tree as people read it
//! (repeated blocks shown once) and as JSON (every module, and the repeats named).

use std::fmt::Write as _;

use serde_json::{json, Value as Json};

use crate::architecture::{dropout_rates, last_name, torch_class, DropoutKind, ModuleTree};
use crate::model::{Checkpoint, Module, Node};
use crate::read::flatten::to_json;

/// A value as Python's `repr` writes it: `(3, 3)`, `'zeros'`, `None`, `True`, `1e-05`.
fn python_repr(node: &Node) -> String {
    match node {
        Node::None => "None".into(),
        Node::Bool(b) => if *b { "True" } else { "False" }.into(),
        Node::Int(i) => i.to_string(),
        Node::Float(f) => python_float(*f),
        Node::Str(s) if s.contains('\'') && !s.contains('"') => format!("\"{s}\""),
        Node::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Node::Tuple(items) if items.len() == 1 => format!("({},)", python_repr(&items[0])),
        Node::Tuple(items) => format!("({})", items.iter().map(python_repr).collect::<Vec<_>>().join(", ")),
        Node::List(items) => format!("[{}]", items.iter().map(python_repr).collect::<Vec<_>>().join(", ")),
        other => to_json(other).to_string(),
    }
}

/// A float as Python prints it: the shortest text that reads back the same, `2.0` with its
/// point, and exponents below 1e-4 and from 1e16 on (`1e-05`, `1e+16`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let magnitude = f.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        let text = format!("{f:e}"); // "1e-5", "1.5e16"
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let text = f.to_string();
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

fn class_text(m: &Module) -> String {
    match torch_class(&m.class) {
        Some(torch) => format!("{} ({torch})", m.class),
        None => m.class.clone(),
    }
}

fn attributes_text(m: &Module) -> String {
    m.attributes
        .iter()
        .map(|(name, v)| format!("{name}={}", python_repr(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The module tree, one module a line, indented by depth, down to `depth` levels below the
/// model (all without); consecutive identical numbered blocks on one line (`0..5 ×6`), their
/// inside shown once.
pub fn modules_text(ckpt: &Checkpoint, depth: Option<usize>) -> String {
    let tree = ModuleTree::new(&ckpt.modules);
    let mut out = String::new();
    let repeats: usize = tree
        .modules
        .iter()
        .enumerate()
        .map(|(i, _)| tree.runs(i).iter().filter(|r| r.len() > 1).count())
        .sum();
    let _ = writeln!(
        out,
        "modules   {}{}",
        tree.modules.len(),
        match repeats {
            0 => String::new(),
            1 => " (1 run of identical blocks shown once)".to_string(),
            n => format!(" ({n} runs of identical blocks, each shown once)"),
        }
    );
    // An explicit stack (module run, indentation): models nest as deep as the reader allows.
    let mut stack: Vec<(Vec<usize>, usize)> = tree.roots.iter().rev().map(|&r| (vec![r], 0)).collect();
    while let Some((run, level)) = stack.pop() {
        let first = run[0];
        let m = &tree.modules[first];
        let name = match run.as_slice() {
            [_] if level == 0 && m.path.is_empty() => "(root)".to_string(),
            [_] if level == 0 => m.path.clone(),
            [_] => last_name(&m.path).to_string(),
            [.., last] => format!(
                "{}..{} ×{}",
                last_name(&m.path),
                last_name(&tree.modules[*last].path),
                run.len()
            ),
            [] => continue,
        };
        let attrs = attributes_text(m);
        let _ = writeln!(
            out,
            "{:indent$}{name}  {}{}{attrs}",
            "",
            class_text(m),
            if attrs.is_empty() { "" } else { "  " },
            indent = level * 2
        );
        if depth.is_some_and(|d| tree.depth[first] >= d) {
            continue;
        }
        for child_run in tree.runs(first).into_iter().rev() {
            stack.push((child_run, level + 1));
        }
    }
    out
}

/// Every module down to `depth` (all without), with its attributes, and the runs of identical
/// blocks the text shows once.
pub fn modules_json(ckpt: &Checkpoint, depth: Option<usize>) -> (Json, Json) {
    let tree = ModuleTree::new(&ckpt.modules);
    let shown = |i: usize| depth.is_none_or(|d| tree.depth[i] <= d);
    let modules: Vec<Json> = tree
        .modules
        .iter()
        .enumerate()
        .filter(|&(i, _)| shown(i))
        .map(|(i, m)| {
            let mut o = json!({
                "path": m.path,
                "class": m.class,
                "depth": tree.depth[i],
                "attributes": m.attributes.iter().map(|(n, v)| (n.clone(), to_json(v))).collect::<serde_json::Map<_, _>>(),
            });
            if let Some(torch) = torch_class(&m.class) {
                o["torch_class"] = json!(torch);
            }
            o
        })
        .collect();
    let mut repeats = Vec::new();
    for parent in 0..tree.modules.len() {
        for run in tree.runs(parent) {
            if let [first, .., last] = run.as_slice() {
                if shown(*first) {
                    repeats.push(json!({
                        "parent": tree.modules[parent].path,
                        "first": tree.modules[*first].path,
                        "last": tree.modules[*last].path,
                        "count": run.len(),
                    }));
                }
            }
        }
    }
    (Json::Array(modules), Json::Array(repeats))
}

/// Rates in order, three or more equal ones in a row as "0.1 ×6".
fn compressed(texts: impl Iterator<Item = String>) -> String {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for text in texts {
        match runs.last_mut() {
            Some((last, n)) if *last == text => *n += 1,
            _ => runs.push((text, 1)),
        }
    }
    let mut shown: Vec<String> = Vec::new();
    for (text, n) in runs {
        if n >= 3 {
            shown.push(format!("{text} ×{n}"));
        } else {
            shown.extend(std::iter::repeat_n(text, n));
        }
    }
    shown.join(", ")
}

/// "3 modules, p = 0.5, 0.5, 0.1" for a file of module objects, then the rates recurrent and
/// attention modules apply inside themselves, and how many rates the file does not hold; None
/// for a file of tensors, which cannot say.
pub fn dropout_line(ckpt: &Checkpoint) -> Option<String> {
    if ckpt.modules.is_empty() {
        return None;
    }
    let rates = dropout_rates(ckpt);
    let of = |kind: DropoutKind| rates.iter().filter(move |d| d.kind == kind);
    let modules = of(DropoutKind::Module).count();
    let mut line = match modules {
        0 => "no dropout modules".to_string(),
        1 => "1 module".to_string(),
        n => format!("{n} modules"),
    };
    let known = |kind| of(kind).filter_map(|d| d.p).map(python_float);
    if known(DropoutKind::Module).next().is_some() {
        line.push_str(&format!(", p = {}", compressed(known(DropoutKind::Module))));
    }
    let between: Vec<String> = of(DropoutKind::BetweenLayers)
        .filter_map(|d| d.p.map(|p| format!("{} ({} {})", python_float(p), d.class, d.module)))
        .collect();
    if !between.is_empty() {
        line.push_str(&format!("; between recurrent layers: {}", between.join(", ")));
    }
    if known(DropoutKind::Attention).next().is_some() {
        line.push_str(&format!("; on attention weights: {}", compressed(known(DropoutKind::Attention))));
    }
    let unknown = rates.iter().filter(|d| d.p.is_none()).count();
    if unknown > 0 {
        line.push_str(&format!(
            "; {unknown} without p in the file (a traced TorchScript module keeps no constants)"
        ));
    }
    Some(line)
}

/// The dropout rates as JSON: a list for a file of module objects, null for a file of tensors.
pub fn dropout_json(ckpt: &Checkpoint) -> Json {
    if ckpt.modules.is_empty() {
        return Json::Null;
    }
    let kind = |k: DropoutKind| match k {
        DropoutKind::Module => "module",
        DropoutKind::BetweenLayers => "between_layers",
        DropoutKind::Attention => "attention",
    };
    Json::Array(
        dropout_rates(ckpt)
            .iter()
            .map(|d| json!({"module": d.module, "class": d.class, "p": d.p, "kind": kind(d.kind)}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_prints_them() {
        for (f, text) in [
            (1e-5, "1e-05"),
            (0.1, "0.1"),
            (2.0, "2.0"),
            (0.0001, "0.0001"),
            (1.5e16, "1.5e+16"),
            (-3e-7, "-3e-07"),
            (0.0, "0.0"),
        ] {
            assert_eq!(python_float(f), text);
        }
        assert_eq!(python_repr(&Node::Tuple(vec![Node::Int(4)])), "(4,)");
        assert_eq!(python_repr(&Node::Str("it's".into())), "\"it's\"");
        assert_eq!(python_repr(&Node::Str("zeros".into())), "'zeros'");
    }
}
