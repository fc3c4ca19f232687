//! The one pattern language of every option that picks tensors by name (`inspect --filter`,
//! `convert --keep-dtype`, `drop-layers --pattern`, `freeze --freeze/--unfreeze`): a module
//! prefix or a glob over the whole name.

use globset::{GlobBuilder, GlobMatcher};

use super::{Result, TransformError};

/// Matches a tensor name if the name equals the pattern, starts with the pattern followed by
/// `.` (a module prefix: `fc` matches `fc.weight` and `fc.0.bias`, not `fc1.weight`; `fc.`
/// works too), or the pattern, as a glob, matches the whole name (`layer4.*`,
/// `*.num_batches_tracked`, `blocks.[0-3].attn.*`; `*` also matches dots).
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    glob: Option<GlobMatcher>,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern> {
        if text.is_empty() || text == "." {
            return Err(TransformError::BadPattern {
                pattern: text.into(),
                why: "empty".into(),
            });
        }
        let is_glob = text.contains(['*', '?', '[', '{']);
        let glob = if is_glob {
            let g = GlobBuilder::new(text)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .map_err(|e| TransformError::BadPattern {
                    pattern: text.into(),
                    why: e.kind().to_string(),
                })?;
            Some(g.compile_matcher())
        } else {
            None
        };
        Ok(Pattern {
            text: text.into(),
            glob,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, name: &str) -> bool {
        if let Some(g) = &self.glob {
            if g.is_match(name) {
                return true;
            }
        }
        if name == self.text {
            return true;
        }
        match self.text.strip_suffix('.') {
            Some(_) => name.starts_with(&self.text),
            None => {
                name.len() > self.text.len() && name.starts_with(&self.text) && name.as_bytes()[self.text.len()] == b'.'
            }
        }
    }
}

/// Compiles every pattern, failing on the first invalid one.
pub fn compile(patterns: &[String]) -> Result<Vec<Pattern>> {
    patterns.iter().map(|p| Pattern::new(p)).collect()
}

/// The patterns among `patterns` that match none of `names`, as typed.
pub(crate) fn unmatched<'a>(patterns: &[Pattern], names: impl Iterator<Item = &'a str> + Clone) -> Vec<String> {
    patterns
        .iter()
        .filter(|p| !names.clone().any(|n| p.matches(n)))
        .map(|p| p.as_str().to_string())
        .collect()
}

/// Refuses patterns that match none of `names` (naming them, with the top-level names as a
/// hint): a typo in an option that writes a file must never pass silently.
pub fn require_matches<'a>(patterns: &[Pattern], names: impl Iterator<Item = &'a str> + Clone) -> Result<()> {
    let missing = unmatched(patterns, names.clone());
    if missing.is_empty() {
        return Ok(());
    }
    Err(TransformError::NoMatch {
        patterns: missing,
        hint: module_hint(names),
    })
}

/// A hint for patterns that matched nothing: the first-level module names the checkpoint has.
pub fn module_hint<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut firsts: Vec<&str> = Vec::new();
    for n in names {
        let first = n.split('.').next().unwrap_or(n);
        if !firsts.contains(&first) {
            firsts.push(first);
        }
    }
    if firsts.is_empty() {
        return "the checkpoint has no tensors".into();
    }
    const SHOW: usize = 20;
    let more = firsts.len().saturating_sub(SHOW);
    let mut s = format!(
        "top-level names: {}",
        firsts.iter().take(SHOW).copied().collect::<Vec<_>>().join(", ")
    );
    if more > 0 {
        s.push_str(&format!(", … ({more} more)"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_prefix_glob_and_exact() {
        let fc = Pattern::new("fc").unwrap();
        assert!(fc.matches("fc"));
        assert!(fc.matches("fc.weight"));
        assert!(fc.matches("fc.0.weight"));
        assert!(!fc.matches("fc1.weight"));
        assert!(!fc.matches("head.fc.weight"));
        let dotted = Pattern::new("fc.").unwrap();
        assert!(dotted.matches("fc.bias") && !dotted.matches("fc1.bias"));
        let g = Pattern::new("layer4.*").unwrap();
        assert!(g.matches("layer4.0.conv1.weight"));
        assert!(!g.matches("layer40") && !g.matches("xlayer4.a"));
        let nbt = Pattern::new("*.num_batches_tracked").unwrap();
        assert!(nbt.matches("bn.num_batches_tracked") && nbt.matches("a.b.num_batches_tracked"));
        assert!(!nbt.matches("num_batches_tracked"));
        let cls = Pattern::new("blocks.[01].*").unwrap();
        assert!(cls.matches("blocks.1.w") && !cls.matches("blocks.2.w"));
        assert!(Pattern::new("a[").is_err());
        assert!(Pattern::new("").is_err());
    }
}
