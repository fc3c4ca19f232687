//! The verdict on a pair of curves: overfitting, underfitting, a good fit, or too short to tell.
//!
//! V are the validation values, T the training values aligned to them (for each validation
//! point, the last finite training point at or before it). Relative changes are divided by the
//! reference's magnitude (1e-12 for a zero reference).

use serde::Serialize;

use super::Series;

/// Overfitting: validation worse than at its best by at least this fraction...
const OVERFIT_WORSENING: f64 = 0.05;
/// Underfitting: the curves end within this fraction of the larger of them...
const CLOSE_GAP: f64 = 0.10;
/// ...and training loss fell by less than this fraction of its first value (flat)...
const FLAT_TRAIN_DROP: f64 = 0.5;
/// ...or validation improved by at least this fraction over the last 3 points...
const STILL_IMPROVING: f64 = 0.03;
/// ...and ends within this fraction of its best (the curve has not turned).
const NEAR_BEST: f64 = 0.01;
/// Fewer finite points than this are too few to judge.
pub(super) const MIN_POINTS: usize = 4;

/// What the curves say, with the numbers that say it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Fewer than 4 finite points.
    TooShort {
        /// The finite points there are.
        points: usize,
    },
    /// Training curves only: nothing to judge generalization by.
    NoValidation,
    /// Validation got worse after its best point while training kept improving.
    Overfitting {
        /// The best validation point.
        best_x: f64,
        /// Its value.
        best: f64,
        /// The last finite validation point.
        last_x: f64,
        /// Its value.
        last: f64,
        /// How much worse the last value is than the best, as a fraction of the best.
        worsening: f64,
        /// How much training improved from the best point to the last, as a fraction.
        train_improvement: Option<f64>,
        /// |validation - training| at the last point.
        gap: Option<f64>,
    },
    /// The curves stay close and validation never turned: more capacity or training helps.
    Underfitting {
        /// The last finite validation point.
        last_x: f64,
        /// Its value.
        last: f64,
        /// |validation - training| at the last point.
        gap: Option<f64>,
        /// Which signs of underfitting were seen.
        signs: Underfit,
    },
    /// Neither over- nor underfitting.
    GoodFit {
        /// The best validation point.
        best_x: f64,
        /// Its value.
        best: f64,
        /// |validation - training| at the last point.
        gap: Option<f64>,
    },
}

/// The signs of underfitting seen (at least one is).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Underfit {
    /// Training loss fell by only this fraction of its first value: flat at a high level.
    pub flat_train_drop: Option<f64>,
    /// Validation improved by this fraction over the last 3 points and is at its best: still
    /// improving.
    pub still_improving: Option<f64>,
}

impl Verdict {
    /// The name the JSON report uses: `overfitting`, `underfitting`, `good-fit`, `too-short`,
    /// `no-validation`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::TooShort { .. } => "too-short",
            Verdict::NoValidation => "no-validation",
            Verdict::Overfitting { .. } => "overfitting",
            Verdict::Underfitting { .. } => "underfitting",
            Verdict::GoodFit { .. } => "good-fit",
        }
    }
}

/// |a - reference| / |reference|, with 1e-12 for a zero reference.
pub(super) fn relative(a: f64, reference: f64) -> f64 {
    let r = if reference == 0.0 { 1e-12 } else { reference.abs() };
    (a - reference).abs() / r
}

/// The index of the best finite point (lowest, or highest for a higher-better series); the
/// first on ties.
pub(super) fn best_index(s: &Series) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &(_, y)) in s.points.iter().enumerate() {
        if y.is_finite() && best.is_none_or(|b| s.better(y, s.points[b].1)) {
            best = Some(i);
        }
    }
    best
}

/// For each point of `val`, the last finite point of `train` at or before its x (none: the
/// first finite training point). None when training has no finite point.
pub(super) fn align(train: &Series, val: &Series) -> Option<Vec<f64>> {
    let finite: Vec<(f64, f64)> = train.points.iter().copied().filter(|p| p.1.is_finite()).collect();
    let first = finite.first()?.1;
    // Points are in x order: the count of points at or before x finds the last of them.
    Some(
        val.points
            .iter()
            .map(|&(x, _)| match finite.partition_point(|p| p.0 <= x) {
                0 => first,
                n => finite[n - 1].1,
            })
            .collect(),
    )
}

/// Judges the pair (either may be missing, not both).
pub(super) fn judge(train: Option<&Series>, val: Option<&Series>) -> Verdict {
    let Some(main) = val.or(train) else {
        return Verdict::TooShort { points: 0 };
    };
    let finite: Vec<usize> = (0..main.points.len())
        .filter(|&i| main.points[i].1.is_finite())
        .collect();
    if finite.len() < MIN_POINTS {
        return Verdict::TooShort { points: finite.len() };
    }
    let (Some(val), Some(k), Some(&last)) = (val, best_index(main), finite.last()) else {
        return Verdict::NoValidation;
    };
    let v = |i: usize| val.points[i].1;
    let aligned = train.and_then(|t| Some((t, align(t, val)?)));
    let gap = aligned.as_ref().map(|(_, t)| (v(last) - t[last]).abs());

    let worse_at_end = k < last && val.better(v(k), v(last)) && relative(v(last), v(k)) >= OVERFIT_WORSENING;
    let train_kept_improving = aligned.as_ref().is_none_or(|(t, tv)| t.better(tv[last], tv[k]));
    if worse_at_end && train_kept_improving {
        return Verdict::Overfitting {
            best_x: val.points[k].0,
            best: v(k),
            last_x: val.points[last].0,
            last: v(last),
            worsening: relative(v(last), v(k)),
            train_improvement: aligned.as_ref().map(|(_, tv)| relative(tv[last], tv[k])),
            gap,
        };
    }

    let close = aligned
        .as_ref()
        .is_none_or(|(_, tv)| (v(last) - tv[last]).abs() <= CLOSE_GAP * v(last).abs().max(tv[last].abs()));
    let flat_train_drop = aligned.as_ref().and_then(|(t, tv)| {
        let (first, end) = (tv[finite[0]], tv[last]);
        let drop = (first - end) / if first == 0.0 { 1e-12 } else { first.abs() };
        (!t.higher_better && drop < FLAT_TRAIN_DROP).then_some(drop)
    });
    let still_improving = last.checked_sub(3).and_then(|back| {
        let gain = relative(v(last), v(back));
        (val.better(v(last), v(back)) && gain >= STILL_IMPROVING && relative(v(last), v(k)) <= NEAR_BEST)
            .then_some(gain)
    });
    if close && (flat_train_drop.is_some() || still_improving.is_some()) {
        return Verdict::Underfitting {
            last_x: val.points[last].0,
            last: v(last),
            gap,
            signs: Underfit {
                flat_train_drop,
                still_improving,
            },
        };
    }
    Verdict::GoodFit {
        best_x: val.points[k].0,
        best: v(k),
        gap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curves::Axis;

    fn series(name: &str, ys: &[f64]) -> Series {
        Series::epochs(name, ys)
    }

    #[test]
    fn validation_turning_up_while_training_falls_is_overfitting() {
        let t = series("train_loss", &[2.0, 1.5, 1.0, 0.6, 0.3, 0.1]);
        let v = series("val_loss", &[2.1, 1.6, 1.2, 1.25, 1.4, 1.6]);
        let Verdict::Overfitting {
            best_x,
            worsening,
            train_improvement,
            gap,
            ..
        } = judge(Some(&t), Some(&v))
        else {
            panic!("not overfitting");
        };
        assert_eq!(best_x, 3.0);
        assert!((worsening - 0.4 / 1.2).abs() < 1e-12);
        assert!((train_improvement.unwrap() - 0.9).abs() < 1e-12);
        assert!((gap.unwrap() - 1.5).abs() < 1e-12);
    }

    #[test]
    fn higher_better_metrics_turn_the_other_way() {
        let t = series("train_acc", &[0.5, 0.7, 0.8, 0.9, 0.95, 0.99]);
        let v = series("val_acc", &[0.5, 0.65, 0.7, 0.66, 0.62, 0.6]);
        assert_eq!(judge(Some(&t), Some(&v)).name(), "overfitting");
        assert_eq!(best_index(&v), Some(2));
    }

    #[test]
    fn close_curves_still_falling_are_underfitting() {
        let t = series("train_loss", &[2.0, 1.8, 1.6, 1.45, 1.3]);
        let v = series("val_loss", &[2.05, 1.85, 1.65, 1.5, 1.35]);
        let Verdict::Underfitting { signs, .. } = judge(Some(&t), Some(&v)) else {
            panic!("not underfitting");
        };
        assert!(signs.flat_train_drop.is_some() && signs.still_improving.is_some());
    }

    #[test]
    fn short_nan_and_train_only_runs() {
        let v = series("val_loss", &[1.0, f64::NAN, 0.8, 0.7]);
        assert_eq!(judge(None, Some(&v)), Verdict::TooShort { points: 3 });
        let t = series("loss", &[1.0, 0.5, 0.3, 0.2]);
        assert_eq!(judge(Some(&t), None), Verdict::NoValidation);
    }

    #[test]
    fn training_aligns_to_validation_steps() {
        let t = Series::named("loss", Axis::Step, vec![(10.0, 3.0), (20.0, f64::NAN), (30.0, 2.0)]);
        let v = Series::named("eval_loss", Axis::Step, vec![(5.0, 9.0), (20.0, 9.0), (40.0, 9.0)]);
        assert_eq!(align(&t, &v), Some(vec![3.0, 3.0, 2.0]));
    }
}
