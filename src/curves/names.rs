//! What a series' name says: its split (train, validation, test), the quantity it measures, and
//! whether a higher value of that quantity is better.

use super::Split;

/// The separators that cut a name into word parts: `history.val_acc` is `history`, `val`, `acc`.
const SEPARATORS: [char; 4] = ['_', '.', '-', '/'];

/// Words a loss or metric name holds (as a part, or inside one: `top1_acc`, `eval_accuracy`).
const METRIC_WORDS: [&str; 18] = [
    "loss",
    "acc",
    "f1",
    "auc",
    "precision",
    "recall",
    "iou",
    "dice",
    "bleu",
    "rouge",
    "r2",
    "score",
    "error",
    "err",
    "perplexity",
    "ppl",
    "mse",
    "mae",
];

/// Metric words too short to be found inside another word ("gap", "heatmap"): they count only as
/// a whole part or a part's start before digits (`ap50`, `map75`).
const SHORT_METRIC_WORDS: [&str; 2] = ["ap", "map"];

/// Quantities where higher is better, found anywhere in the quantity...
const HIGHER_BETTER: [&str; 14] = [
    "acc",
    "accuracy",
    "f1",
    "auc",
    "ap",
    "map",
    "precision",
    "recall",
    "iou",
    "dice",
    "bleu",
    "rouge",
    "r2",
    "score",
];
/// ...unless it also names one of these, which are lower-better.
const LOWER_BETTER: [&str; 7] = ["loss", "error", "err", "perplexity", "ppl", "mse", "mae"];

/// Words that say how a series was kept, not what it measures: `train_loss_history`,
/// `epoch_losses` and `avg_loss` all measure "loss".
const NOISE_WORDS: [&str; 23] = [
    "history",
    "hist",
    "histories",
    "log",
    "logs",
    "list",
    "lists",
    "values",
    "per",
    "epoch",
    "epochs",
    "step",
    "steps",
    "avg",
    "average",
    "mean",
    "running",
    "total",
    "all",
    "curve",
    "curves",
    "record",
    "records",
];

/// A word made singular, so that `losses` pairs with `loss`: -sses loses its "es", -ies becomes
/// -y (accuracies), and a final s goes (accs, errors); -ss words and words of three letters or
/// fewer stay as they are.
fn singular(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    if lower.ends_with("sses") {
        word[..word.len() - 2].to_string()
    } else if lower.ends_with("ies") && lower.len() > 4 {
        format!("{}y", &word[..word.len() - 3])
    } else if lower.ends_with('s') && !lower.ends_with("ss") && lower.len() > 3 {
        word[..word.len() - 1].to_string()
    } else {
        word.to_string()
    }
}

/// What a name part measures: its words less split words, less noise words, made singular;
/// the words less split words alone if nothing else is left.
fn measured(part: &str) -> String {
    let kept: Vec<&str> = parts(part).filter(|w| split_word(w).is_none()).collect();
    let plain: Vec<String> = kept
        .iter()
        .filter(|w| !NOISE_WORDS.contains(&w.to_ascii_lowercase().as_str()))
        .map(|w| singular(w))
        .collect();
    if plain.is_empty() {
        kept.join("_")
    } else {
        plain.join("_")
    }
}

fn parts(name: &str) -> impl Iterator<Item = &str> {
    name.split(SEPARATORS).filter(|p| !p.is_empty())
}

/// The split a word names, if it names one.
fn split_word(word: &str) -> Option<Split> {
    match word.to_ascii_lowercase().as_str() {
        "train" | "training" | "trn" => Some(Split::Train),
        "val" | "valid" | "validation" | "eval" | "dev" => Some(Split::Val),
        "test" => Some(Split::Test),
        _ => None,
    }
}

/// Whether `name` names a loss or a metric: a word part is, or holds, a metric word.
pub(super) fn is_metric_name(name: &str) -> bool {
    parts(name).any(|part| {
        let part = part.to_ascii_lowercase();
        METRIC_WORDS.iter().any(|w| part.contains(w))
            || SHORT_METRIC_WORDS.iter().any(|w| {
                part.strip_prefix(w)
                    .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
            })
    })
}

/// The split and the quantity of a series called `name`. The quantity is the last dotted part
/// of the name without its split words (`history.val_acc` -> `acc`, `metrics.val.loss` ->
/// `loss`) and the words that say how it was kept, made singular (`train_loss_history`,
/// `epoch_losses` -> `loss`); a name without a split word is "other", except a bare loss, which is the training
/// loss (Keras' and the Hugging Face Trainer's `loss`).
pub(super) fn classify(name: &str) -> (Split, String) {
    let dotted: Vec<&str> = name.split('.').filter(|p| !p.is_empty()).collect();
    // The split nearest the end: `training_log.val_loss` is validation.
    let split = dotted.iter().rev().find_map(|d| parts(d).find_map(split_word));
    // The last dotted part that is more than split words: `loss.train` measures "loss".
    let quantity = dotted
        .iter()
        .rev()
        .map(|d| measured(d))
        .find(|q| !q.is_empty())
        .unwrap_or_else(|| name.to_string());
    let split = match split {
        Some(s) => s,
        None if quantity.eq_ignore_ascii_case("loss") => Split::Train,
        None => Split::Other,
    };
    (split, quantity)
}

/// Whether a higher value of `quantity` is better (accuracy, F1, AP...); losses and errors are
/// lower-better, and so is anything unknown.
pub(super) fn higher_better(quantity: &str) -> bool {
    let q = quantity.to_ascii_lowercase();
    HIGHER_BETTER.iter().any(|w| q.contains(w)) && !LOWER_BETTER.iter().any(|w| q.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_quantities_follow_the_name() {
        assert_eq!(classify("train_loss"), (Split::Train, "loss".into()));
        assert_eq!(classify("history.val_acc"), (Split::Val, "acc".into()));
        assert_eq!(classify("eval_loss"), (Split::Val, "loss".into()));
        assert_eq!(classify("history.loss"), (Split::Train, "loss".into()));
        assert_eq!(classify("metrics.val.loss"), (Split::Val, "loss".into()));
        assert_eq!(classify("training_log.val_loss"), (Split::Val, "loss".into()));
        assert_eq!(classify("scalars.train/loss"), (Split::Train, "loss".into()));
        assert_eq!(classify("Validation-Top1-Acc"), (Split::Val, "Top1_Acc".into()));
        assert_eq!(classify("test/f1"), (Split::Test, "f1".into()));
        assert_eq!(classify("accuracy"), (Split::Other, "accuracy".into()));
        assert_eq!(classify("train_loss_history"), (Split::Train, "loss".into()));
        assert_eq!(classify("stats.epoch_losses"), (Split::Train, "loss".into()));
        assert_eq!(classify("valid_losses"), (Split::Val, "loss".into()));
        assert_eq!(classify("avg_val_loss_per_epoch"), (Split::Val, "loss".into()));
        assert_eq!(classify("val_mean_accuracies"), (Split::Val, "accuracy".into()));
        assert_eq!(classify("loss_history.val"), (Split::Val, "loss".into()));
        assert_eq!(classify("history"), (Split::Other, "history".into()));
        // "trainer" is not the word "train".
        assert_eq!(classify("trainer_loss"), (Split::Other, "trainer_loss".into()));
    }

    #[test]
    fn metric_names_and_directions() {
        assert!(is_metric_name("train_loss_history"));
        assert!(is_metric_name("metrics.val_map50"));
        assert!(is_metric_name("val_AP"));
        assert!(!is_metric_name("lr_history"));
        assert!(!is_metric_name("heatmap_sizes"));
        assert!(!is_metric_name("epoch"));
        assert!(higher_better("acc"));
        assert!(higher_better("Top1_Acc"));
        assert!(higher_better("f1"));
        assert!(!higher_better("loss"));
        assert!(!higher_better("error_rate"));
        assert!(!higher_better("mae"));
        assert!(!higher_better("ppl"));
    }
}
