//! What to try next, one line per verdict, after the notes the method comes from: stop early
//! and regularize an overfitting model, give an underfitting one capacity or time.

use super::chart::format_x;
use super::{Analysis, Run, Verdict};

/// The advice for `analysis` of `run`, one line. Overfitting names the point to restore (and
/// its file, for a series of checkpoints).
///
/// `dropout` is what the run's model says about its dropout, where the files hold the model
/// itself (`torch.save({"model": model, ...})`): each dropout module's path and rate. With it,
/// underfitting advice names the modules whose p is above 0.5 (too much dropout itself
/// underfits) or leaves dropout out; None (a state dict, a Trainer log) keeps the general
/// rule.
pub fn advice(analysis: &Analysis, run: &Run, dropout: Option<&[(String, f64)]>) -> String {
    let axis = analysis.primary.main(&run.series).axis.name();
    match &analysis.verdict {
        Verdict::Overfitting { best_x, .. } => {
            let restore = match &analysis.best_path {
                Some(path) => format!("restore {}", path.display()),
                None => "restore that checkpoint".to_string(),
            };
            format!(
                "stop early at the best {axis}, {} ({restore}); add dropout 0.3-0.5 or weight decay; use fewer \
                 units; get more data",
                format_x(*best_x)
            )
        }
        Verdict::Underfitting { signs, .. } => {
            let longer = if signs.still_improving.is_some() {
                "train longer: validation is still improving; "
            } else {
                ""
            };
            let capacity = "add capacity: wider layers for near-linear relations, deeper for non-linear ones";
            format!("{longer}{capacity}{}", dropout_advice(dropout))
        }
        Verdict::GoodFit { best_x, .. } => match &analysis.best_path {
            Some(path) => format!("keep the best checkpoint: {}", path.display()),
            None => format!("keep the checkpoint of the best {axis}, {}", format_x(*best_x)),
        },
        Verdict::TooShort { .. } => "need at least 4 validation points to judge".to_string(),
        Verdict::NoValidation => "log a validation loss per epoch to judge over- and underfitting".to_string(),
    }
}

/// The dropout clause of underfitting advice: the modules with p above 0.5 where the model is
/// known, the general rule where it is not.
fn dropout_advice(dropout: Option<&[(String, f64)]>) -> String {
    let Some(dropout) = dropout else {
        return "; if dropout p > 0.5, lower it".to_string();
    };
    let high: Vec<String> = dropout
        .iter()
        .filter(|(_, p)| *p > 0.5)
        .map(|(module, p)| format!("{module} (p = {p})"))
        .collect();
    if high.is_empty() {
        return String::new();
    }
    format!(
        "; lower the dropout of {} to 0.3-0.5: a rate above 0.5 itself underfits",
        high.join(", ")
    )
}
