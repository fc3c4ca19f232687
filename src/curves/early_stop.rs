//! Where Lightning's `EarlyStopping` (check_finite=True) would have stopped: after `patience`
//! checks in a row without an improvement of more than `min_delta`, or at the first value that
//! is not finite.

use serde::Serialize;

use super::Series;

/// Where early stopping would have stopped, and the point to restore.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EarlyStop {
    /// The patience used.
    pub patience: u32,
    /// The least improvement that counts.
    pub min_delta: f64,
    /// The x it stops at; None if it never stops.
    pub stop_x: Option<f64>,
    /// The best x seen up to the stop (the checkpoint to restore); None if no point improved.
    pub best_x: Option<f64>,
    /// Why it stopped: "not finite" or "patience".
    pub reason: Option<&'static str>,
}

/// Runs Lightning's rule over `series` in x order, in the series' direction: an improvement is
/// a value below `best - min_delta` (above `best + min_delta` when higher is better).
///
/// ```
/// # use ckpt::curves::{early_stop, Axis, Series, Split};
/// let val = Series {
///     name: "val_loss".into(), split: Split::Val, quantity: "loss".into(), higher_better: false,
///     axis: Axis::Epoch,
///     points: vec![(1.0, 1.0), (2.0, 0.8), (3.0, 0.9), (4.0, 0.85), (5.0, 0.81), (6.0, 0.7)],
/// };
/// let stop = early_stop(&val, 3, 0.0);
/// assert_eq!((stop.stop_x, stop.best_x), (Some(5.0), Some(2.0)));
/// ```
pub fn early_stop(series: &Series, patience: u32, min_delta: f64) -> EarlyStop {
    let mut best = if series.higher_better {
        f64::NEG_INFINITY
    } else {
        f64::INFINITY
    };
    let mut best_x = None;
    let mut wait = 0u32;
    let stop = |stop_x: f64, reason, best_x| EarlyStop {
        patience,
        min_delta,
        stop_x: Some(stop_x),
        best_x,
        reason: Some(reason),
    };
    for &(x, y) in &series.points {
        if !y.is_finite() {
            return stop(x, "not finite", best_x);
        }
        let improved = if series.higher_better {
            y > best + min_delta
        } else {
            y < best - min_delta
        };
        if improved {
            best = y;
            best_x = Some(x);
            wait = 0;
        } else {
            wait += 1;
            if wait >= patience {
                return stop(x, "patience", best_x);
            }
        }
    }
    EarlyStop {
        patience,
        min_delta,
        stop_x: None,
        best_x,
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, ys: &[f64]) -> Series {
        Series::epochs(name, ys)
    }

    #[test]
    fn min_delta_and_direction() {
        // 0.79 improves on 0.8 only without a min_delta of 0.05.
        let v = series("val_loss", &[1.0, 0.8, 0.79, 0.78, 0.77]);
        assert_eq!(early_stop(&v, 3, 0.0).stop_x, None);
        let s = early_stop(&v, 3, 0.05);
        assert_eq!((s.stop_x, s.best_x), (Some(5.0), Some(2.0)));
        let acc = series("val_acc", &[0.5, 0.6, 0.55, 0.58, 0.7]);
        assert_eq!(early_stop(&acc, 2, 0.0).stop_x, Some(4.0));
    }

    #[test]
    fn a_nan_stops_at_once() {
        let v = series("val_loss", &[f64::NAN, 0.8]);
        let s = early_stop(&v, 3, 0.0);
        assert_eq!((s.stop_x, s.best_x, s.reason), (Some(1.0), None, Some("not finite")));
    }
}
