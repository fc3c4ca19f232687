//! `--freeze` / `--unfreeze` and the trainable-parameter report.
//!
//! Which tensors are parameters is [`super::params`]' rule, shared with `inspect`. A file with
//! real flags (a whole model, TorchScript, `keep_vars=True`) gives every parameter's
//! `requires_grad`. A plain `state_dict()` saves none: its parameters are reported as what
//! `model.load_state_dict(sd)` into a freshly built model leaves them, trainable, and the report
//! says that this is a default, not something the file holds.

use std::collections::HashMap;

use serde_json::{json, Value as Json};

use super::params::{
    can_require_grad, file_has_flags, is_known_buffer, is_training_state, role, view_key, Role, ViewKey,
};
use super::pattern::{module_hint, Pattern};
use super::{Result, TransformError};
use crate::model::{Checkpoint, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeRule {
    /// requires_grad = false
    Freeze,
    /// requires_grad = true
    Unfreeze,
}

/// Where a parameter's reported `requires_grad` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagSource {
    /// The file holds the flag (the tensor was saved as a Parameter).
    File,
    /// A rule set it.
    Pattern,
    /// The file holds no flag (a detached state_dict) and no rule set it: trainable, as
    /// `load_state_dict` into a fresh model leaves it.
    Default,
}

impl FlagSource {
    pub fn name(self) -> &'static str {
        match self {
            FlagSource::File => "file",
            FlagSource::Pattern => "pattern",
            FlagSource::Default => "default",
        }
    }
}

/// One parameter-like tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct FreezeEntry {
    pub name: String,
    pub requires_grad: bool,
    pub numel: u64,
    pub source: FlagSource,
    /// For a tensor tied to an earlier one (the same view of one storage: one Parameter in
    /// PyTorch, saved under two names), that tensor's name. Tied tensors are counted once.
    pub shared_with: Option<String>,
}

/// The trainable-parameter report, after any rules were applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FreezeReport {
    /// Whether the file holds real Parameter flags (see the module docs).
    pub file_has_flags: bool,
    /// Every parameter-like tensor, in checkpoint order.
    pub entries: Vec<FreezeEntry>,
    /// Elements of trainable / frozen parameters (tied tensors counted once).
    pub trainable_params: u64,
    pub frozen_params: u64,
    /// Parameters (tied tensors counted once) by state.
    pub trainable_tensors: usize,
    pub frozen_tensors: usize,
    /// Parameters (tied tensors counted once) whose flag is [`FlagSource::Default`].
    pub defaulted_tensors: usize,
    /// Tensors a rule matched that are not parameters (buffers, integer tensors), with why;
    /// rules leave them alone.
    pub skipped: Vec<(String, String)>,
    /// (tensor a rule matched, tensor tied to it that got the same flag): tied weights are one
    /// Parameter in PyTorch, so they cannot differ.
    pub tied: Vec<(String, String)>,
    /// Rule patterns that matched no parameter.
    pub unmatched_patterns: Vec<String>,
    /// Rule patterns that are not valid globs, with the error (such rules did nothing).
    pub invalid_patterns: Vec<(String, String)>,
}

/// Whether tensor `t` counts as a parameter (see [`super::params`]).
fn parameter_like(t: &Tensor, flags: bool) -> bool {
    role(t, flags) == Role::Parameter
}

fn not_parameter_reason(t: &Tensor, flags: bool) -> String {
    if !can_require_grad(t.dtype) {
        format!("{} tensors cannot require grad", t.dtype)
    } else if flags {
        "not a parameter in the file (a buffer or plain tensor)".into()
    } else if is_known_buffer(&t.name) {
        "a well-known buffer".into()
    } else if is_training_state(&t.name) {
        "optimizer/scheduler state".into()
    } else {
        "not model state".into()
    }
}

/// Applies the rules in order (later rules win) and reports. A rule's pattern works as in
/// `drop` ([`Pattern`]). A matched parameter-like tensor gets `requires_grad` and becomes a
/// Parameter (`parameter = true`); tensors tied to it (the same view of the same storage) get
/// the same flag. Matched tensors that are not parameters are listed in `skipped`; patterns
/// that match no parameter in `unmatched_patterns`, invalid ones in `invalid_patterns` (use
/// [`try_freeze`] to refuse those instead). With no rules, this is just the report.
pub fn freeze(ckpt: &mut Checkpoint, rules: &[(FreezeRule, String)]) -> FreezeReport {
    let params = Params::of(ckpt);
    let was_parameter: Vec<bool> = ckpt.tensors.iter().map(|t| t.parameter).collect();
    let mut report = FreezeReport {
        file_has_flags: params.flags,
        ..Default::default()
    };
    let set = params.apply(ckpt, rules, &mut report);
    for (t, v) in ckpt.tensors.iter_mut().zip(&set) {
        if let Some(v) = *v {
            t.requires_grad = v;
            t.parameter = true;
        }
    }
    params.tally(ckpt, &set, &was_parameter, &mut report);
    report
}

/// What freeze rules apply to: which tensors are parameter-like, and their tie groups.
struct Params {
    /// Whether the file records requires_grad flags ([`file_has_flags`]).
    flags: bool,
    param: Vec<bool>,
    /// Each tensor's tie group (identical views of one storage are one Parameter), itself
    /// alone if it has none.
    group: Vec<Vec<usize>>,
}

impl Params {
    fn of(ckpt: &Checkpoint) -> Params {
        let flags = file_has_flags(ckpt);
        let param: Vec<bool> = ckpt.tensors.iter().map(|t| parameter_like(t, flags)).collect();
        let mut groups: HashMap<ViewKey, Vec<usize>> = HashMap::new();
        for (i, t) in ckpt.tensors.iter().enumerate() {
            if param[i] {
                groups.entry(view_key(t)).or_default().push(i);
            }
        }
        let group = ckpt
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| groups.get(&view_key(t)).cloned().unwrap_or_else(|| vec![i]))
            .collect();
        Params { flags, param, group }
    }

    /// The flag the rules give each tensor (None: no rule matched it); tensors tied to a
    /// matched parameter get its flag. Invalid patterns, patterns that match no parameter,
    /// matched tensors that are not parameters and ties go into `report`.
    fn apply(&self, ckpt: &Checkpoint, rules: &[(FreezeRule, String)], report: &mut FreezeReport) -> Vec<Option<bool>> {
        let mut set: Vec<Option<bool>> = vec![None; ckpt.tensors.len()];
        let mut skipped_seen = vec![false; ckpt.tensors.len()];
        for (rule, text) in rules {
            let pattern = match Pattern::new(text) {
                Ok(p) => p,
                Err(e) => {
                    report.invalid_patterns.push((text.clone(), e.to_string()));
                    continue;
                }
            };
            let value = *rule == FreezeRule::Unfreeze;
            let mut matched_param = false;
            for (i, t) in ckpt.tensors.iter().enumerate() {
                if !pattern.matches(&t.name) {
                    continue;
                }
                if !self.param[i] {
                    if !skipped_seen[i] {
                        skipped_seen[i] = true;
                        report
                            .skipped
                            .push((t.name.clone(), not_parameter_reason(t, self.flags)));
                    }
                    continue;
                }
                matched_param = true;
                for &j in &self.group[i] {
                    if j != i && !pattern.matches(&ckpt.tensors[j].name) {
                        let pair = (t.name.clone(), ckpt.tensors[j].name.clone());
                        if !report.tied.contains(&pair) {
                            report.tied.push(pair);
                        }
                    }
                    set[j] = Some(value);
                }
            }
            if !matched_param {
                report.unmatched_patterns.push(text.clone());
            }
        }
        set
    }

    /// Adds every parameter's entry, and the totals of each tie group once, to `report`.
    fn tally(&self, ckpt: &Checkpoint, set: &[Option<bool>], was_parameter: &[bool], report: &mut FreezeReport) {
        for (i, t) in ckpt.tensors.iter().enumerate() {
            if !self.param[i] {
                continue;
            }
            let first = self.group[i][0];
            let shared_with = (first != i).then(|| ckpt.tensors[first].name.clone());
            let source = if set[i].is_some() {
                FlagSource::Pattern
            } else if was_parameter[i] {
                FlagSource::File
            } else {
                FlagSource::Default
            };
            let requires_grad = source == FlagSource::Default || t.requires_grad;
            let numel = t.numel();
            if shared_with.is_none() {
                if requires_grad {
                    report.trainable_params += numel;
                    report.trainable_tensors += 1;
                } else {
                    report.frozen_params += numel;
                    report.frozen_tensors += 1;
                }
                if source == FlagSource::Default {
                    report.defaulted_tensors += 1;
                }
            }
            report.entries.push(FreezeEntry {
                name: t.name.clone(),
                requires_grad,
                numel,
                source,
                shared_with,
            });
        }
    }
}

/// [`freeze`], but refusing (and changing nothing) when a pattern is invalid or matches no
/// parameter: a typo never passes silently.
pub fn try_freeze(ckpt: &mut Checkpoint, rules: &[(FreezeRule, String)]) -> Result<FreezeReport> {
    let flags = file_has_flags(ckpt);
    let mut unmatched = Vec::new();
    for (_, text) in rules {
        let p = Pattern::new(text)?;
        if !ckpt
            .tensors
            .iter()
            .any(|t| parameter_like(t, flags) && p.matches(&t.name))
        {
            unmatched.push(text.clone());
        }
    }
    if !unmatched.is_empty() {
        let params = ckpt.tensors.iter().filter(|t| parameter_like(t, flags));
        let hint = format!("no parameter matches; {}", module_hint(params.map(|t| t.name.as_str())));
        return Err(TransformError::NoMatch {
            patterns: unmatched,
            hint,
        });
    }
    Ok(freeze(ckpt, rules))
}

impl FreezeReport {
    pub fn all_params(&self) -> u64 {
        self.trainable_params + self.frozen_params
    }

    /// One line, like PEFT's `print_trainable_parameters()`:
    /// `trainable params: 1,234 || all params: 5,678 || trainable%: 21.7330`.
    pub fn summary(&self) -> String {
        if self.entries.is_empty() {
            return "no parameters".into();
        }
        let all = self.all_params();
        let pct = if all == 0 {
            0.0
        } else {
            100.0 * self.trainable_params as f64 / all as f64
        };
        format!(
            "trainable params: {} || all params: {} || trainable%: {pct:.4}",
            crate::units::grouped(self.trainable_params),
            crate::units::grouped(all),
        )
    }

    /// What the counts assume when the file saves no flags.
    pub fn note(&self) -> Option<String> {
        let n = self.defaulted_tensors;
        (n > 0).then(|| {
            format!(
                "the file saves no requires_grad flags (a plain state_dict): {n} parameter{} no rule matched count{} as trainable, as load_state_dict into a freshly built model leaves {}",
                if n == 1 { "" } else { "s" },
                if n == 1 { "s" } else { "" },
                if n == 1 { "it" } else { "them" },
            )
        })
    }

    pub fn to_json(&self) -> Json {
        let all = self.all_params();
        json!({
            "flags": if self.file_has_flags { "file" } else { "none" },
            "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params,
            "all_params": all,
            "trainable_percent": if all == 0 { Json::Null } else { json!(100.0 * self.trainable_params as f64 / all as f64) },
            "trainable_tensors": self.trainable_tensors,
            "frozen_tensors": self.frozen_tensors,
            "defaulted_tensors": self.defaulted_tensors,
            "tensors": self.entries.iter().map(|e| json!({
                "name": e.name,
                "requires_grad": e.requires_grad,
                "numel": e.numel,
                "source": e.source.name(),
                "shared_with": e.shared_with,
            })).collect::<Vec<_>>(),
            "skipped": self.skipped.iter().map(|(n, w)| json!({"name": n, "why": w})).collect::<Vec<_>>(),
            "tied": self.tied.iter().map(|(a, b)| json!({"matched": a, "tied": b})).collect::<Vec<_>>(),
            "unmatched_patterns": self.unmatched_patterns,
            "invalid_patterns": self.invalid_patterns.iter().map(|(p, w)| json!({"pattern": p, "why": w})).collect::<Vec<_>>(),
            "summary": self.summary(),
            "note": self.note(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(crate::units::grouped(0), "0");
        assert_eq!(crate::units::grouped(999), "999");
        assert_eq!(crate::units::grouped(1000), "1,000");
        assert_eq!(crate::units::grouped(1234567), "1,234,567");
    }
}
