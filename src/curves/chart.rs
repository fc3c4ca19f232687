//! A learning-curve chart for the terminal, in Unicode: the training curve in `·` with `○` at
//! its points, the validation curve in `•` with `●` (point marks only when there are fewer
//! points than columns), the best point's column marked `┃` and
//! early stopping's `┆`, the y range on the left and the x range below.

use super::Series;

/// The marks of one curve: its line between points, and its points.
struct Marks {
    line: char,
    point: char,
}

const TRAIN: Marks = Marks {
    line: '·', point: '○'
};
const VAL: Marks = Marks {
    line: '•', point: '●'
};
const BEST: char = '┃';
const STOP: char = '┆';

/// Draws `train` and `val` (either may be missing) on a grid of `width` × `height` cells,
/// marking the columns of `best_x` and `stop_x`. Returns the lines, each ending in a newline,
/// with a legend last; empty when neither series has a finite point.
pub fn chart(
    train: Option<&Series>,
    val: Option<&Series>,
    best_x: Option<f64>,
    stop_x: Option<f64>,
    width: usize,
    height: usize,
) -> String {
    let (width, height) = (width.max(10), height.max(4));
    let curves: Vec<(&Series, &Marks)> = [(train, &TRAIN), (val, &VAL)]
        .into_iter()
        .filter_map(|(s, m)| Some((s?, m)))
        .collect();
    let finite: Vec<(f64, f64)> = curves
        .iter()
        .flat_map(|(s, _)| s.points.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if finite.is_empty() {
        return String::new();
    }
    let range = |values: &mut dyn Iterator<Item = f64>| {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if hi > lo {
            (lo, hi)
        } else {
            (lo - 0.5, hi + 0.5)
        }
    };
    let (x0, x1) = range(&mut finite.iter().map(|p| p.0));
    let (y0, y1) = range(&mut finite.iter().map(|p| p.1));
    let col = |x: f64| {
        (((x - x0) / (x1 - x0)) * (width - 1) as f64)
            .round()
            .clamp(0.0, (width - 1) as f64) as usize
    };
    let row = |y: f64| {
        (((y1 - y) / (y1 - y0)) * (height - 1) as f64)
            .round()
            .clamp(0.0, (height - 1) as f64) as usize
    };

    let mut grid = vec![vec![' '; width]; height];
    for (x, mark) in [(stop_x, STOP), (best_x, BEST)] {
        if let Some(x) = x.filter(|x| x.is_finite()) {
            for line in grid.iter_mut() {
                line[col(x)] = mark;
            }
        }
    }
    for (series, marks) in &curves {
        let points: Vec<(f64, f64)> = series.points.iter().copied().filter(|p| p.1.is_finite()).collect();
        for pair in points.windows(2) {
            let ((xa, ya), (xb, yb)) = (pair[0], pair[1]);
            let (ca, cb) = (col(xa), col(xb));
            for c in ca..=cb {
                let t = if cb > ca {
                    (c - ca) as f64 / (cb - ca) as f64
                } else {
                    0.0
                };
                if let Some(cell) = grid.get_mut(row(ya + t * (yb - ya))).and_then(|line| line.get_mut(c)) {
                    *cell = marks.line;
                }
            }
        }
        // Point marks only where there are columns enough to tell points apart.
        if points.len() <= width {
            for &(x, y) in &points {
                grid[row(y)][col(x)] = marks.point;
            }
        }
    }

    let labels = [format_value(y1), format_value((y0 + y1) / 2.0), format_value(y0)];
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (r, line) in grid.iter().enumerate() {
        let label = match r {
            0 => &labels[0],
            r if r == (height - 1) / 2 && height > 2 => &labels[1],
            r if r == height - 1 => &labels[2],
            _ => "",
        };
        out.push_str(&format!("{label:>label_width$} ┤{}\n", line.iter().collect::<String>()));
    }
    out.push_str(&format!("{:>label_width$} └{}\n", "", "─".repeat(width)));
    let (left, right) = (format_x(x0), format_x(x1));
    let gap = width.saturating_sub(left.chars().count() + right.chars().count());
    out.push_str(&format!("{:>label_width$}  {left}{}{right}\n", "", " ".repeat(gap)));

    let mut legend = Vec::new();
    for (series, marks) in &curves {
        legend.push(format!("{}{} {}", marks.point, marks.line, series.name));
    }
    if let Some(x) = best_x {
        legend.push(format!("{BEST} best {}", format_x(x)));
    }
    if let Some(x) = stop_x {
        legend.push(format!("{STOP} early stop {}", format_x(x)));
    }
    out.push_str(&format!("{:>label_width$}  {}\n", "", legend.join("   ")));
    out
}

/// An x (an epoch, a step) as the user counts it: whole numbers without a fraction.
pub fn format_x(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A value as the chart and the reports print it: 4 significant digits, exponent notation for
/// very large or small magnitudes, `nan`/`inf` as such.
pub fn format_value(y: f64) -> String {
    if !y.is_finite() {
        format!("{y}").to_lowercase()
    } else if y != 0.0 && (y.abs() >= 1e5 || y.abs() < 1e-3) {
        format!("{y:.3e}")
    } else {
        let digits = (3 - y.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{y:.digits$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curves::Axis;

    #[test]
    fn both_curves_and_the_markers_are_drawn() {
        let t = Series::named(
            "train_loss",
            Axis::Epoch,
            vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5), (4.0, 0.2)],
        );
        let v = Series::named(
            "val_loss",
            Axis::Epoch,
            vec![(1.0, 2.1), (2.0, 1.2), (3.0, 1.3), (4.0, f64::NAN)],
        );
        let text = chart(Some(&t), Some(&v), Some(2.0), Some(4.0), 31, 8);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8 + 3);
        let plot: String = lines[..8].concat();
        // Validation is drawn last: all 3 finite points show; training's first point is under
        // validation's.
        assert_eq!(plot.matches('●').count(), 3);
        assert_eq!(plot.matches('○').count(), 3);
        assert!(lines[0].trim_start().starts_with("2.100 ┤"), "{}", lines[0]);
        assert!(lines[7].trim_start().starts_with("0.2000 ┤"), "{}", lines[7]);
        assert!(lines[10].contains("train_loss") && lines[10].contains("val_loss"));
        assert!(lines[10].contains("best 2") && lines[10].contains("early stop 4"));
        // The best column (x = 2 of 1..4 over 31 columns is column 10) is marked where no curve is.
        assert!(lines
            .iter()
            .take(8)
            .any(|l| l.chars().nth(l.find('┤').map_or(0, |b| l[..b].chars().count()) + 11) == Some(BEST)));
    }

    #[test]
    fn nothing_finite_draws_nothing() {
        let v = Series::named("val_loss", Axis::Epoch, vec![(1.0, f64::NAN)]);
        assert_eq!(chart(None, Some(&v), None, None, 40, 10), "");
    }
}
