//! Hugging Face Trainer runs: `trainer_state.json`, written beside every `checkpoint-N/` folder's
//! weights (and in the output directory by `trainer.save_state()`). Its `log_history` holds the
//! training loss every `logging_steps` and each evaluation's `eval_*` metrics, by step.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

use super::{Axis, Series};

/// The file the Trainer writes.
pub(super) const STATE_FILE: &str = "trainer_state.json";

/// What trainer_state.json says about the best model, as the file states it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HfState {
    /// The file read.
    pub state_file: PathBuf,
    /// `best_metric`: the best value of `metric_for_best_model`.
    pub best_metric: Option<f64>,
    /// `best_model_checkpoint`: the folder holding it.
    pub best_model_checkpoint: Option<String>,
}

/// Keys of a log entry that are no curve: timing, throughput, position, compute.
fn skipped(key: &str) -> bool {
    key.ends_with("_runtime") || key.ends_with("_per_second") || matches!(key, "epoch" | "step" | "total_flos")
}

/// The trainer_state.json to read for `dir`: its own, else the one in its newest
/// `checkpoint-N/` (the highest N).
pub(super) fn state_file_in(dir: &Path) -> Option<PathBuf> {
    let own = dir.join(STATE_FILE);
    if own.is_file() {
        return Some(own);
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n: u64 = name.strip_prefix("checkpoint-")?.parse().ok()?;
            let file = e.path().join(STATE_FILE);
            file.is_file().then_some((n, file))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, f)| f)
}

/// Whether `text` is a trainer state: a JSON object with a `log_history` list.
pub(super) fn is_state(text: &str) -> bool {
    text.trim_start().starts_with('{') && parse(text).is_ok_and(|v| v.get("log_history").is_some_and(Value::is_array))
}

/// The series of a trainer state and what it says about the best model.
pub(super) fn read(path: &Path, text: &str) -> Result<(Vec<Series>, HfState)> {
    let state = parse(text).map_err(|e| Error::malformed(path, "JSON", e.to_string()))?;
    let Some(log) = state.get("log_history").and_then(Value::as_array) else {
        return Err(Error::malformed(path, "log_history", "missing, or not a list"));
    };
    // (name, points) in order of first appearance.
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (i, entry) in log.iter().enumerate() {
        let Some(entry) = entry.as_object() else {
            return Err(Error::malformed(path, format!("log_history[{i}]"), "not an object"));
        };
        if entry.contains_key("train_runtime") {
            continue; // the summary of the whole run, not a point of a curve
        }
        let Some(step) = entry.get("step").and_then(number) else {
            continue;
        };
        for (key, value) in entry {
            let is_curve = key == "loss" || (key.starts_with("eval_") && !skipped(key));
            let Some(y) = number(value).filter(|_| is_curve) else {
                continue;
            };
            match series.iter_mut().find(|(n, _)| n == key) {
                Some((_, points)) => points.push((step, y)),
                None => series.push((key.clone(), vec![(step, y)])),
            }
        }
    }
    let series = series
        .into_iter()
        .map(|(name, mut points)| {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series::named(&name, Axis::Step, points)
        })
        .collect();
    let hf = HfState {
        state_file: path.to_path_buf(),
        best_metric: state.get("best_metric").and_then(number),
        best_model_checkpoint: state
            .get("best_model_checkpoint")
            .and_then(Value::as_str)
            .map(String::from),
    };
    Ok((series, hf))
}

/// A number, or one of the strings [`parse`] turns Python's NaN and infinities into.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Parses JSON as Python's `json` writes it: a NaN or infinite loss is written as the bare
/// tokens `NaN`, `Infinity`, `-Infinity`, which JSON does not allow; they become strings.
fn parse(text: &str) -> serde_json::Result<Value> {
    let mut fixed = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            in_string = c != '"' || escaped;
            escaped = c == '\\' && !escaped;
        } else if c == '"' {
            in_string = true;
        } else if let Some(token) = ["NaN", "Infinity", "-Infinity"].iter().find(|t| rest.starts_with(**t)) {
            fixed.push('"');
            fixed.push_str(token);
            fixed.push('"');
            rest = &rest[token.len()..];
            continue;
        }
        fixed.push(c);
        rest = &rest[c.len_utf8()..];
    }
    serde_json::from_str(&fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_nan_and_infinities_parse() {
        let v = parse(r#"{"a": NaN, "b": -Infinity, "c": "NaN \"x\" Infinity", "d": [Infinity]}"#).unwrap();
        assert!(number(&v["a"]).unwrap().is_nan());
        assert_eq!(number(&v["b"]), Some(f64::NEG_INFINITY));
        assert_eq!(v["c"], "NaN \"x\" Infinity");
        assert_eq!(number(&v["d"][0]), Some(f64::INFINITY));
    }

    #[test]
    fn log_history_becomes_train_and_eval_series() {
        let text = r#"{"best_metric": 0.5, "best_model_checkpoint": "out/checkpoint-20", "log_history": [
            {"loss": 2.0, "learning_rate": 1e-3, "grad_norm": 1.0, "epoch": 0.5, "step": 10},
            {"eval_loss": 1.5, "eval_accuracy": 0.4, "eval_runtime": 0.1, "eval_samples_per_second": 9, "epoch": 1, "step": 20},
            {"loss": NaN, "epoch": 1.5, "step": 30},
            {"train_runtime": 3.0, "train_loss": 1.0, "total_flos": 5, "epoch": 2, "step": 40}
        ]}"#;
        let (series, hf) = read(Path::new("trainer_state.json"), text).unwrap();
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["loss", "eval_loss", "eval_accuracy"]);
        assert_eq!(series[0].points[0], (10.0, 2.0));
        assert!(series[0].points[1].1.is_nan());
        assert!(series[2].higher_better);
        assert_eq!(hf.best_metric, Some(0.5));
        assert_eq!(hf.best_model_checkpoint.as_deref(), Some("out/checkpoint-20"));
    }
}
