//! Which series are judged together: a training and a validation series of the same quantity
//! form a pair; the loss pair is the one judged unless the user names another.

use std::fmt;

use super::{Series, Split};

/// The series judged, as indices into [`super::Run::series`], and every pair found.
#[derive(Debug, Clone, PartialEq)]
pub struct Primary {
    /// The training series, if any.
    pub train: Option<usize>,
    /// The validation series, if any.
    pub val: Option<usize>,
    /// Every (train, validation) pair of one quantity, in name order.
    pub pairs: Vec<(usize, usize)>,
    /// Why these series were chosen.
    pub reason: &'static str,
}

impl Primary {
    /// The series the best point and early stopping are read from: validation, else training.
    pub fn main<'a>(&self, series: &'a [Series]) -> &'a Series {
        &series[self.val.or(self.train).expect("a primary holds a series")]
    }
}

/// `--series` named a series the run does not have, or the run has none to judge.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesChoiceError {
    /// The name asked for (empty: no series at all).
    pub name: String,
    /// The names the run has.
    pub available: Vec<String>,
}

impl fmt::Display for SeriesChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            return f.write_str("no series to judge");
        }
        write!(
            f,
            "no series named '{}'; the series are: {}",
            self.name,
            self.available.join(", ")
        )
    }
}

impl std::error::Error for SeriesChoiceError {}

/// Every (train, validation) pair of one quantity, in name order (the series are sorted by
/// name).
fn pairs(series: &[Series]) -> Vec<(usize, usize)> {
    let of = |split| series.iter().enumerate().filter(move |(_, s)| s.split == split);
    of(Split::Train)
        .flat_map(|(t, ts)| {
            of(Split::Val)
                .filter(move |(_, vs)| vs.quantity.eq_ignore_ascii_case(&ts.quantity))
                .map(move |(v, _)| (t, v))
        })
        .collect()
}

/// Chooses the series to judge: `chosen` (train and validation names) if given, else the loss
/// pair, else the first pair, else the first validation (or test) series alone, else the first
/// training series (or one naming no split) alone.
pub(super) fn primary(
    series: &[Series],
    chosen: Option<&(Option<String>, Option<String>)>,
) -> Result<Primary, SeriesChoiceError> {
    let pairs = pairs(series);
    let find = |name: &str| {
        series
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| SeriesChoiceError {
                name: name.to_string(),
                available: series.iter().map(|s| s.name.clone()).collect(),
            })
    };
    let first = |split: Split| series.iter().position(|s| s.split == split);
    let (train, val, reason) = if let Some((train, val)) = chosen {
        let train = train.as_deref().map(find).transpose()?;
        let val = val.as_deref().map(find).transpose()?;
        (train, val, "chosen with --series")
    } else if let Some(&(t, v)) = pairs
        .iter()
        .find(|(t, _)| series[*t].quantity.eq_ignore_ascii_case("loss"))
    {
        (Some(t), Some(v), "the loss pair")
    } else if let Some(&(t, v)) = pairs.first() {
        (Some(t), Some(v), "the first pair by name")
    } else if let Some(v) = first(Split::Val).or_else(|| first(Split::Test)) {
        (
            None,
            Some(v),
            "no training series of the same quantity: validation alone",
        )
    } else if let Some(t) = first(Split::Train).or_else(|| first(Split::Other)) {
        (Some(t), None, "no validation series: training alone")
    } else {
        (None, None, "")
    };
    if train.is_none() && val.is_none() {
        return Err(SeriesChoiceError {
            name: String::new(),
            available: series.iter().map(|s| s.name.clone()).collect(),
        });
    }
    Ok(Primary {
        train,
        val,
        pairs,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curves::Axis;

    fn named(names: &[&str]) -> Vec<Series> {
        let mut s: Vec<Series> = names.iter().map(|n| Series::named(n, Axis::Epoch, vec![])).collect();
        s.sort_by(|a, b| a.name.cmp(&b.name));
        s
    }

    fn chosen(series: &[Series], p: &Primary) -> (Option<String>, Option<String>) {
        (
            p.train.map(|i| series[i].name.clone()),
            p.val.map(|i| series[i].name.clone()),
        )
    }

    #[test]
    fn the_loss_pair_wins_over_earlier_pairs() {
        let s = named(&["train_acc", "val_acc", "train_loss", "val_loss"]);
        let p = primary(&s, None).unwrap();
        assert_eq!(chosen(&s, &p), (Some("train_loss".into()), Some("val_loss".into())));
        assert_eq!(p.pairs.len(), 2);
    }

    #[test]
    fn without_a_loss_pair_the_first_pair_then_validation_alone() {
        let s = named(&["train_f1", "val_f1", "train_acc", "val_acc"]);
        let p = primary(&s, None).unwrap();
        assert_eq!(chosen(&s, &p), (Some("train_acc".into()), Some("val_acc".into())));
        let s = named(&["val_loss", "train_acc"]);
        let p = primary(&s, None).unwrap();
        assert_eq!(chosen(&s, &p), (None, Some("val_loss".into())));
        let s = named(&["loss"]);
        let p = primary(&s, None).unwrap();
        assert_eq!(chosen(&s, &p), (Some("loss".into()), None));
    }

    #[test]
    fn a_chosen_pair_must_exist() {
        let s = named(&["train_loss", "val_loss", "val_acc"]);
        let p = primary(&s, Some(&(Some("train_loss".into()), Some("val_acc".into())))).unwrap();
        assert_eq!(chosen(&s, &p), (Some("train_loss".into()), Some("val_acc".into())));
        let e = primary(&s, Some(&(None, Some("val_f1".into())))).unwrap_err();
        assert!(
            e.to_string().contains("val_f1") && e.to_string().contains("val_acc"),
            "{e}"
        );
    }
}
