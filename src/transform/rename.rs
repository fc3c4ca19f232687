//! `--strip-prefix` / `--add-prefix`: the renames that make a `DataParallel` (`module.`) or
//! `torch.compile` (`_orig_mod.`) state dict load into the bare model, and back.
//!
//! How prefixes map onto the structure tree (names are dotted paths through it):
//!
//! * **strip** works on dict keys, at any depth, that lead to tensors. A key that starts with
//!   the prefix loses it (`module.conv1.weight` -> `conv1.weight` in a flat state dict;
//!   in a training checkpoint `{"model": {"module.conv1.weight": ...}}` the inner keys lose
//!   it, so `model.module.conv1.weight` -> `model.conv1.weight`). A key that *is* the prefix
//!   without its dot, holding a dict (`{"module": {"conv1.weight": ...}}`), is replaced by that
//!   dict's entries. Prefixes are stripped repeatedly while one applies, so
//!   `_orig_mod.module.x` loses both. A prefix that strips no tensor is an error (a typo
//!   must not write an unchanged file).
//!   Keys of entries without tensors (metadata) are never touched.
//! * **add** prepends to the full names: every top-level entry holding tensors gets the
//!   prefix on its key (a flat state dict's keys; a training checkpoint's `model_state_dict`
//!   becomes `<prefix>.model_state_dict`). A root that is not a dict is wrapped into one.
//!
//! A prefix given without a trailing `.` gets one: prefixes name modules.
//! A rename that gives two tensors one name (or puts one key twice into a dict) is an error,
//! naming both; the checkpoint is then unchanged.
//!
//! `--rename` rules ([`RenameRule`], [`rename_regex()`]) and `--rename-map` ([`rename_map()`])
//! rewrite whole tensor names; the tensor's key changes in the dict that holds it, so a new name
//! must keep the path of the dicts above it. The CLI applies them after the prefixes.

use std::collections::{BTreeMap, HashMap, VecDeque};

#[cfg(feature = "internals")] // only the tests call to_json
use serde_json::{json, Value as Json};

use super::pattern::module_hint;
use super::tree::{metadata_from_tree, rebuild};
use super::{Result, TransformError};
use crate::model::{Checkpoint, Key, Node, Tensor};

/// What [`rename`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RenameReport {
    /// (old name, new name) of every tensor whose name changed, in checkpoint order.
    pub renamed: Vec<(String, String)>,
    /// Tensors whose name did not change.
    pub unchanged: usize,
    /// For each strip prefix (as normalised, with its dot), how many tensors lost it.
    pub stripped: Vec<(String, usize)>,
    /// The prefix added, as normalised.
    pub added: Option<String>,
}

impl RenameReport {
    #[cfg(feature = "internals")] // only the integration tests call it
    pub fn to_json(&self) -> Json {
        json!({
            "renamed": self.renamed.iter().map(|(a, b)| json!({"from": a, "to": b})).collect::<Vec<_>>(),
            "unchanged": self.unchanged,
            "stripped": self.stripped.iter().map(|(p, n)| json!({"prefix": p, "tensors": n})).collect::<Vec<_>>(),
            "added": self.added,
        })
    }
}

fn normalise(prefix: &str) -> Result<String> {
    let p = prefix.trim();
    if p.is_empty() || p.chars().all(|c| c == '.') {
        return Err(TransformError::BadPattern {
            pattern: prefix.into(),
            why: "an empty prefix".into(),
        });
    }
    Ok(if p.ends_with('.') {
        p.to_string()
    } else {
        format!("{p}.")
    })
}

/// Strips each of `strip` where present and adds `add` (see the module docs for how that maps
/// onto nested checkpoints). Errors (nothing changed): an empty prefix, a strip prefix that no
/// tensor has, or two tensors (or dict keys) that would get one name.
pub fn rename(ckpt: &mut Checkpoint, strip: &[String], add: Option<&str>) -> Result<RenameReport> {
    let strip: Vec<String> = strip.iter().map(|p| normalise(p)).collect::<Result<_>>()?;
    let add = match add {
        Some(a) if !a.is_empty() => Some(normalise(a)?),
        _ => None,
    };
    let mut root = ckpt.root.clone();
    let mut counts = vec![0usize; strip.len()];
    if !strip.is_empty() {
        strip_node(&mut root, &strip, &mut counts);
    }
    let missing: Vec<String> = strip
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n == 0)
        .map(|(p, _)| p.clone())
        .collect();
    if !missing.is_empty() {
        return Err(TransformError::NoMatch {
            patterns: missing,
            hint: format!(
                "no tensor name has this prefix; {}",
                module_hint(ckpt.tensors.iter().map(|t| t.name.as_str()))
            ),
        });
    }
    if let Some(a) = &add {
        root = add_prefix(root, a);
    }
    // New names, checked for collisions before anything changes.
    let mut scratch = ckpt.tensors.clone();
    crate::read::flatten::flatten(&root, &mut scratch);
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, t) in scratch.iter().enumerate() {
        if let Some(&j) = by_name.get(t.name.as_str()) {
            return Err(TransformError::Collision {
                a: ckpt.tensors[j].name.clone(),
                b: ckpt.tensors[i].name.clone(),
                name: t.name.clone(),
            });
        }
        by_name.insert(&t.name, i);
    }
    let mut report = install_root(ckpt, root)?;
    report.stripped = strip.into_iter().zip(counts).collect();
    report.added = add;
    Ok(report)
}

/// Puts a renamed structure tree in place (its keys checked first): names, metadata and module
/// classes follow it, and the report says what changed.
fn install_root(ckpt: &mut Checkpoint, root: Node) -> Result<RenameReport> {
    check_keys(&root, &mut String::new())?;
    let old_names: Vec<String> = ckpt.tensors.iter().map(|t| t.name.clone()).collect();
    let from_tree = metadata_from_tree(ckpt);
    ckpt.root = root;
    rebuild(ckpt, from_tree);
    ckpt.module_classes = renamed_modules(&ckpt.module_classes, &old_names, &ckpt.tensors);
    // Module objects are not renamed along: writers save tensors only, and nothing reads them
    // after a transform.
    ckpt.modules.clear();
    let mut report = RenameReport::default();
    for (old, t) in old_names.into_iter().zip(&ckpt.tensors) {
        if old == t.name {
            report.unchanged += 1;
        } else {
            report.renamed.push((old, t.name.clone()));
        }
    }
    Ok(report)
}

/// The module classes under the modules' new paths: a module's new path is what its first
/// tensor's new name has in place of the old path (tensors keep their order through a rename).
/// Modules without tensors have nothing to rename by and are left out.
fn renamed_modules(classes: &BTreeMap<String, String>, old: &[String], new: &[Tensor]) -> BTreeMap<String, String> {
    classes
        .iter()
        .filter_map(|(module, class)| {
            old.iter().zip(new).find_map(|(o, n)| {
                let suffix = if module.is_empty() {
                    Some(o.as_str())
                } else {
                    o.strip_prefix(module.as_str())?.strip_prefix('.')
                }?;
                let path = n.name.strip_suffix(suffix)?.trim_end_matches('.');
                Some((path.to_string(), class.clone()))
            })
        })
        .collect()
}

fn count_tensors(node: &Node) -> usize {
    let mut n = 0;
    super::tree::for_each_leaf(node, &mut |_| n += 1);
    n
}

/// Which prefix applies to this entry, if any: the key starts with it (and keeps something),
/// or is it without the dot and holds a dict.
fn applicable(key: &str, value: &Node, strip: &[String]) -> Option<usize> {
    strip.iter().position(|p| {
        (key.len() > p.len() && key.starts_with(p.as_str()))
            || (key.len() + 1 == p.len() && p.starts_with(key) && matches!(value, Node::Dict { .. }))
    })
}

fn strip_node(node: &mut Node, strip: &[String], counts: &mut [usize]) {
    match node {
        Node::Dict { items, .. } => {
            let mut queue: VecDeque<(Key, Node)> = std::mem::take(items).into();
            while let Some((key, mut value)) = queue.pop_front() {
                if !value.has_tensor() {
                    items.push((key, value));
                    continue;
                }
                if let Key::Str(s) = &key {
                    if let Some(k) = applicable(s, &value, strip) {
                        counts[k] += count_tensors(&value);
                        let p = &strip[k];
                        if s.len() + 1 == p.len() {
                            // The key is the module: its entries take its place.
                            if let Node::Dict { items: children, .. } = value {
                                for child in children.into_iter().rev() {
                                    queue.push_front(child);
                                }
                            }
                        } else {
                            queue.push_front((Key::Str(s[p.len()..].to_string()), value));
                        }
                        continue;
                    }
                }
                strip_node(&mut value, strip, counts);
                items.push((key, value));
            }
        }
        Node::List(items) | Node::Tuple(items) => items.iter_mut().for_each(|n| strip_node(n, strip, counts)),
        _ => {}
    }
}

fn add_prefix(root: Node, prefix: &str) -> Node {
    match root {
        Node::Dict { ordered, items } => Node::Dict {
            ordered,
            items: items
                .into_iter()
                .map(|(k, v)| {
                    if v.has_tensor() {
                        (Key::Str(format!("{prefix}{k}")), v)
                    } else {
                        (k, v)
                    }
                })
                .collect(),
        },
        other => Node::Dict {
            ordered: true,
            items: vec![(Key::Str(prefix.trim_end_matches('.').to_string()), other)],
        },
    }
}

/// Fails if any dict holds one key twice.
fn check_keys(node: &Node, path: &mut String) -> Result<()> {
    match node {
        Node::Dict { items, .. } => {
            let mut seen: HashMap<String, ()> = HashMap::new();
            for (k, v) in items {
                let key = k.to_string();
                if seen.insert(key.clone(), ()).is_some() {
                    let place = if path.is_empty() {
                        "the top-level dict".to_string()
                    } else {
                        format!("'{path}'")
                    };
                    return Err(TransformError::KeyCollision { key, place });
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key);
                check_keys(v, path)?;
                path.truncate(len);
            }
        }
        Node::List(items) | Node::Tuple(items) => {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&i.to_string());
                check_keys(v, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// One `--rename` rule, sed's substitution: `s/PAT/REP/` or `s/PAT/REP/g`.
///
/// - The delimiter is the character after `s`: any but a letter, digit, whitespace, `\` or `$`
///   (`s|^h\.|layers.|` needs no escaped dots in names). Inside PAT and REP, `\` before it
///   stands for it literally.
/// - PAT is a regex ([`regex`] syntax: no backreferences or lookaround; matching is linear).
///   Without `g` the first match in a name is replaced, with `g` every match, as in sed.
/// - REP refers to groups as `$1`, `${1}`, `${name}` (for `(?P<name>...)`), or sed's `\1`..`\9`;
///   `$0`, `&` and `${0}` are the whole match; `\&`, `$$` and `\\` are a literal `&`, `$`, `\`.
///   A reference to a group PAT does not have is an error (`$1a` means a group named `1a`;
///   write `${1}a`).
#[derive(Debug, Clone)]
pub struct RenameRule {
    text: String,
    regex: regex::Regex,
    /// REP in the regex crate's replacement syntax.
    replacement: String,
    global: bool,
}

impl RenameRule {
    pub fn parse(text: &str) -> Result<RenameRule> {
        let bad = |why: &str| TransformError::BadPattern {
            pattern: text.into(),
            why: why.into(),
        };
        let mut chars = text.chars();
        if chars.next() != Some('s') {
            return Err(bad("expected s/PATTERN/REPLACEMENT/ (sed's form)"));
        }
        let delim = chars.next().ok_or_else(|| bad("expected s/PATTERN/REPLACEMENT/"))?;
        if delim.is_alphanumeric() || delim.is_whitespace() || delim == '\\' || delim == '$' {
            return Err(bad(
                "the delimiter after 's' must not be a letter, digit, space, '\\' or '$'",
            ));
        }
        let fields = split_fields(chars.as_str(), delim);
        let [pattern, replacement, flags] = fields.as_slice() else {
            return Err(bad("expected s/PATTERN/REPLACEMENT/ with three delimiters"));
        };
        let global = match flags.as_str() {
            "" => false,
            "g" => true,
            other => return Err(bad(&format!("unknown flags '{other}' (only g is supported)"))),
        };
        let pattern = pattern.replace(&format!("\\{delim}"), &regex::escape(&delim.to_string()));
        let regex = regex::Regex::new(&pattern).map_err(|e| bad(&e.to_string()))?;
        let replacement = sed_replacement(replacement, delim).map_err(|why| bad(&why))?;
        check_groups(&regex, &replacement).map_err(|why| bad(&why))?;
        Ok(RenameRule {
            text: text.into(),
            regex,
            replacement,
            global,
        })
    }

    /// The rule as typed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn apply(&self, name: &str) -> String {
        let rep = self.replacement.as_str();
        if self.global {
            self.regex.replace_all(name, rep).into_owned()
        } else {
            self.regex.replace(name, rep).into_owned()
        }
    }
}

/// Splits at every delimiter not escaped by a backslash; escapes stay in the fields.
fn split_fields(s: &str, delim: char) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("never empty");
        if c == '\\' {
            field.push(c);
            if let Some(next) = chars.next() {
                field.push(next);
            }
        } else if c == delim {
            fields.push(String::new());
        } else {
            field.push(c);
        }
    }
    fields
}

/// REP in the regex crate's syntax: sed's `\1`..`\9` and `&` become `${1}` and `${0}`; `\&`,
/// `\\` and `\DELIM` are literal; `$` references pass through (`$$` is a literal `$`).
fn sed_replacement(rep: &str, delim: char) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(rep.len());
    let mut chars = rep.chars();
    while let Some(c) = chars.next() {
        match c {
            '&' => out.push_str("${0}"),
            '\\' => match chars.next() {
                Some(d @ '0'..='9') => out.push_str(&format!("${{{d}}}")),
                Some('$') => out.push_str("$$"),
                Some(lit) if lit == '&' || lit == '\\' || lit == delim => out.push(lit),
                Some(other) => return Err(format!("unknown escape '\\{other}' in the replacement")),
                None => return Err("the replacement ends with a lone '\\'".into()),
            },
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Every group the replacement names exists in the regex, as the regex crate reads names:
/// `${name}`, or `$` followed by the longest run of letters, digits and `_`.
fn check_groups(regex: &regex::Regex, rep: &str) -> std::result::Result<(), String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut rest = rep;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let name = if let Some(braced) = rest.strip_prefix('{') {
            let end = braced.find('}').ok_or("an unclosed '${' in the replacement")?;
            &braced[..end]
        } else if let Some(after) = rest.strip_prefix('$') {
            rest = after;
            continue;
        } else {
            &rest[..rest.find(|c| !is_name(c)).unwrap_or(rest.len())]
        };
        let exists = match name.parse::<usize>() {
            Ok(i) => i < regex.captures_len(),
            Err(_) => name.is_empty() || regex.capture_names().flatten().any(|n| n == name),
        };
        if !exists {
            return Err(format!(
                "the replacement refers to group '{name}', which the pattern does not have (for group 1 followed by text write ${{1}}text)"
            ));
        }
    }
    Ok(())
}

/// Applies `rules` in order to every tensor name (each rule to the names the previous ones left).
/// Errors, with the checkpoint unchanged: a rule that changes no name (all such rules named),
/// two tensors ending with one name (both named), a new name outside the nested dict holding
/// the tensor.
pub fn rename_regex(ckpt: &mut Checkpoint, rules: &[RenameRule]) -> Result<RenameReport> {
    let mut names: Vec<String> = ckpt.tensors.iter().map(|t| t.name.clone()).collect();
    let mut unused = Vec::new();
    for rule in rules {
        let mut changed = false;
        for name in names.iter_mut() {
            let new = rule.apply(name);
            if new != *name {
                *name = new;
                changed = true;
            }
        }
        if !changed {
            unused.push(rule.as_str().to_string());
        }
    }
    if !unused.is_empty() {
        return Err(TransformError::RenamesNothing { rules: unused });
    }
    set_names(ckpt, names)
}

/// Renames by a table of {old name: new name}, all at once (so `a` -> `b` with `b` -> `a`
/// swaps them). Errors, with the checkpoint unchanged: entries naming no tensor (all named),
/// two tensors ending with one name, a new name outside the nested dict holding the tensor.
pub fn rename_map(ckpt: &mut Checkpoint, map: &[(String, String)]) -> Result<RenameReport> {
    let index: HashMap<&str, usize> = ckpt
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut names: Vec<String> = ckpt.tensors.iter().map(|t| t.name.clone()).collect();
    let mut unknown = Vec::new();
    for (old, new) in map {
        match index.get(old.as_str()) {
            Some(&i) => names[i] = new.clone(),
            None => unknown.push(old.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(TransformError::MapNamesNoTensor { names: unknown });
    }
    set_names(ckpt, names)
}

/// Gives every tensor its new name (`names[i]` for tensor i) by changing its key in the dict
/// that holds it; checks first that no two tensors, and no two keys of a dict, end up the same.
fn set_names(ckpt: &mut Checkpoint, names: Vec<String>) -> Result<RenameReport> {
    if let Some(i) = names.iter().position(String::is_empty) {
        return Err(TransformError::EmptyName {
            from: ckpt.tensors[i].name.clone(),
        });
    }
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        if let Some(&j) = by_name.get(name.as_str()) {
            return Err(TransformError::Collision {
                a: ckpt.tensors[j].name.clone(),
                b: ckpt.tensors[i].name.clone(),
                name: name.clone(),
            });
        }
        by_name.insert(name, i);
    }
    let mut root = ckpt.root.clone();
    rekey(&mut root, "", &ckpt.tensors, &names)?;
    install_root(ckpt, root)
}

/// Sets the key of every tensor leaf whose name changes: the new name minus the path of the
/// dicts above it (`path`, as [`crate::read::flatten`] joins it).
fn rekey(node: &mut Node, path: &str, tensors: &[crate::model::Tensor], names: &[String]) -> Result<()> {
    let child_path = |path: &str, key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match node {
        Node::Dict { items, .. } => {
            for (key, value) in items.iter_mut() {
                if let Node::Tensor(i) = value {
                    let (old, new) = (&tensors[*i].name, &names[*i]);
                    if old != new {
                        *key = Key::Str(leaf_key(path, old, new)?);
                    }
                    continue;
                }
                rekey(value, &child_path(path, &key.to_string()), tensors, names)?;
            }
        }
        Node::List(items) | Node::Tuple(items) => {
            for (k, value) in items.iter_mut().enumerate() {
                if let Node::Tensor(i) = value {
                    let (old, new) = (&tensors[*i].name, &names[*i]);
                    if old != new {
                        // A list position cannot take a name.
                        return Err(TransformError::LeavesParent {
                            from: old.clone(),
                            to: new.clone(),
                            parent: child_path(path, &k.to_string()),
                        });
                    }
                    continue;
                }
                rekey(value, &child_path(path, &k.to_string()), tensors, names)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The key a tensor under `path` takes to be named `new`.
fn leaf_key(path: &str, old: &str, new: &str) -> Result<String> {
    if path.is_empty() {
        return Ok(new.to_string());
    }
    match new.strip_prefix(path).and_then(|rest| rest.strip_prefix('.')) {
        Some(key) if !key.is_empty() => Ok(key.to_string()),
        _ => Err(TransformError::LeavesParent {
            from: old.into(),
            to: new.into(),
            parent: path.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(rule: &str, name: &str) -> String {
        RenameRule::parse(rule).unwrap().apply(name)
    }

    #[test]
    fn rules_read_as_sed_reads_them() {
        assert_eq!(apply(r"s/^h\.(\d+)\./layers.$1./", "h.12.mlp.w"), "layers.12.mlp.w");
        assert_eq!(apply(r"s/^h\.(\d+)\./layers.\1./", "h.3.w"), "layers.3.w");
        assert_eq!(apply(r"s/(?P<i>\d+)/[${i}]/", "a.7.b"), "a.[7].b");
        // First match only, unless g.
        assert_eq!(apply("s/o/0/", "foo.boo"), "f0o.boo");
        assert_eq!(apply("s/o/0/g", "foo.boo"), "f00.b00");
        // Other delimiters, and the delimiter escaped inside a field.
        assert_eq!(apply(r"s|a\|b|c|", "a|b.x"), "c.x");
        assert_eq!(apply(r"s#\##/#", "a#b"), "a/b");
        // & and $0 are the whole match; \&, $$ and \\ are literal.
        assert_eq!(apply("s/w/&&/", "w"), "ww");
        assert_eq!(apply(r"s/w/$0\&$$\\/", "w"), "w&$\\");
    }

    #[test]
    fn malformed_rules_are_refused() {
        for bad in [
            "",
            "s",
            "s/a/b",
            "s/a/b/c/",
            "s/a/b/i",
            "sab",
            "s a b ",
            r"s\a\b\",
            "s$a$b$",
            "x/a/b/",
            "s/(/b/",
            r"s/a/\q/",
            "s/(a)/$2/",
            "s/(a)/$1b/",
            "s/a/${x}/",
            "s/a/${1/",
        ] {
            assert!(
                matches!(RenameRule::parse(bad), Err(TransformError::BadPattern { .. })),
                "{bad:?} was accepted"
            );
        }
    }
}
