//! What `ckpt curves` prints: the report (sources, series, pairing, a table per point, the
//! chart, the verdict in words, advice, early stopping, the best file) and its JSON form.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::curves::chart::{chart, format_value, format_x};
use crate::curves::{advice, Analysis, Run, Series, Verdict};

const CHART_WIDTH: usize = 64;
const CHART_HEIGHT: usize = 14;
/// Past this many rows the table keeps only the rows of the judged series' points, and past
/// that many of those, evenly spaced ones with the first, the last, the best and the early stop.
const MAX_TABLE_ROWS: usize = 60;

/// A number for JSON: whole numbers as integers, NaN and infinities as null.
fn num(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

fn opt_num(v: Option<f64>) -> Value {
    v.map_or(Value::Null, num)
}

fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// The verdict in plain words, with its numbers.
pub fn verdict_text(run: &Run, analysis: &Analysis) -> String {
    let name = |i: Option<usize>| i.map_or("", |i| run.series[i].name.as_str());
    let (train, val) = (name(analysis.primary.train), name(analysis.primary.val));
    let main = analysis.primary.main(&run.series);
    let axis = main.axis.name();
    let (best_word, worse_word, better_word) = if main.higher_better {
        ("highest", "fell", "rose")
    } else {
        ("lowest", "rose", "fell")
    };
    match &analysis.verdict {
        Verdict::TooShort { points } => format!(
            "too short to tell: {} has {points} finite point{}; at least 4 are needed",
            main.name,
            if *points == 1 { "" } else { "s" }
        ),
        Verdict::NoValidation => format!(
            "no validation series: {} alone cannot tell overfitting from underfitting{}",
            main.name,
            analysis
                .best_x
                .map_or(String::new(), |x| format!(" (its best {axis} is {})", format_x(x)))
        ),
        Verdict::Overfitting {
            best_x,
            best,
            last_x,
            last,
            worsening,
            train_improvement,
            gap,
        } => {
            let mut s = format!(
                "overfitting: {val} was {best_word} at {axis} {} ({}), then {worse_word} {} to {} by {axis} {}",
                format_x(*best_x),
                format_value(*best),
                percent(*worsening),
                format_value(*last),
                format_x(*last_x)
            );
            if let Some(t) = train_improvement {
                let _ = write!(s, " while {train} {better_word} {}", percent(*t));
            }
            if let Some(g) = gap {
                let _ = write!(s, "; the gap between them at the end is {}", format_value(*g));
            }
            s
        }
        Verdict::Underfitting {
            last_x,
            last,
            gap,
            signs,
        } => {
            let mut s = match gap {
                Some(g) => format!(
                    "underfitting: {train} and {val} stay close (gap {} at {axis} {}, within 10%) and {val} never turned",
                    format_value(*g),
                    format_x(*last_x)
                ),
                None => format!("underfitting: {val} never turned (last {})", format_value(*last)),
            };
            if let Some(gain) = signs.still_improving {
                let _ = write!(s, "; still improving: {} better over the last 3 points", percent(gain));
            }
            if let Some(drop) = signs.flat_train_drop {
                let _ = write!(
                    s,
                    "; flat at a high level: {train} fell only {} from its first value",
                    percent(drop)
                );
            }
            s
        }
        Verdict::GoodFit { best_x, best, gap } => {
            let mut s = format!(
                "good fit: {val} is {best_word} at {axis} {} ({}) and did not turn worse by 5% or more",
                format_x(*best_x),
                format_value(*best)
            );
            if let Some(g) = gap {
                let _ = write!(s, "; the gap at the end is {}", format_value(*g));
            }
            s
        }
    }
}

fn early_stop_text(run: &Run, analysis: &Analysis) -> String {
    let e = &analysis.early_stop;
    let main = analysis.primary.main(&run.series);
    let axis = main.axis.name();
    let rule = format!("patience {}, min_delta {}", e.patience, e.min_delta);
    let restore = |x: Option<f64>| match x {
        Some(x) => {
            let file = run.file_at(x).map_or(String::new(), |p| format!(", {}", p.display()));
            format!("restore {axis} {}{file}", format_x(x))
        }
        None => "no point to restore".to_string(),
    };
    match (e.stop_x, e.reason) {
        (Some(x), Some("not finite")) => format!(
            "early stopping ({rule}): stops at {axis} {}, where {} is not finite; {}",
            format_x(x),
            main.name,
            restore(e.best_x)
        ),
        (Some(x), _) => format!(
            "early stopping ({rule}): stops at {axis} {} after {} checks without improvement; {}",
            format_x(x),
            e.patience,
            restore(e.best_x)
        ),
        (None, _) => format!("early stopping ({rule}): would not have stopped; {}", restore(e.best_x)),
    }
}

fn series_lines(run: &Run, out: &mut String) {
    let width = run.series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0);
    let _ = writeln!(out, "series found:");
    for s in &run.series {
        let finite = s.points.iter().filter(|p| p.1.is_finite()).count();
        let range = match (s.points.first(), s.points.last()) {
            (Some(a), Some(b)) => format!("{} {}..{}", s.axis.name(), format_x(a.0), format_x(b.0)),
            _ => String::new(),
        };
        let nonfinite = s.points.len() - finite;
        let _ = writeln!(
            out,
            "  {:<width$}  {:<5}  {:<10}  {:<16}  {} points{}  {range}",
            s.name,
            s.split.name(),
            s.quantity,
            if s.higher_better {
                "higher is better"
            } else {
                "lower is better"
            },
            s.points.len(),
            if nonfinite > 0 {
                format!(" ({nonfinite} not finite)")
            } else {
                String::new()
            },
        );
    }
}

fn pairing_lines(run: &Run, analysis: &Analysis, out: &mut String) {
    let p = &analysis.primary;
    for &(t, v) in &p.pairs {
        let judged = Some(t) == p.train && Some(v) == p.val;
        let _ = writeln!(
            out,
            "paired: {} ~ {} ({}){}",
            run.series[t].name,
            run.series[v].name,
            run.series[t].quantity,
            if judged { "  <- judged" } else { "" }
        );
    }
    let name = |i: Option<usize>| i.map_or("-".to_string(), |i| run.series[i].name.clone());
    let _ = writeln!(out, "judged: {} / {} ({})", name(p.train), name(p.val), p.reason);
}

fn table(run: &Run, analysis: &Analysis, out: &mut String) {
    let main = analysis.primary.main(&run.series);
    let mut xs: Vec<f64> = run.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let all = xs.len();
    if all > MAX_TABLE_ROWS {
        // Both in x order: one pass.
        let main_xs: Vec<f64> = main.points.iter().map(|p| p.0).collect();
        let mut j = 0;
        xs.retain(|x| {
            while j < main_xs.len() && main_xs[j] < *x {
                j += 1;
            }
            main_xs.get(j) == Some(x)
        });
    }
    if xs.len() > MAX_TABLE_ROWS {
        let stride = xs.len().div_ceil(MAX_TABLE_ROWS - 4);
        let last = xs.len() - 1;
        let marked = [analysis.best_x, analysis.early_stop.stop_x];
        xs = xs
            .iter()
            .enumerate()
            .filter(|&(i, x)| i % stride == 0 || i == last || marked.contains(&Some(*x)))
            .map(|(_, &x)| x)
            .collect();
    }
    let value = |s: &Series, x: f64| {
        s.points
            .iter()
            .find(|p| p.0 == x)
            .map_or("-".into(), |p| format_value(p.1))
    };
    let has_files = !run.files.is_empty();
    let mut rows: Vec<Vec<String>> = vec![std::iter::once(main.axis.name().to_string())
        .chain(run.series.iter().map(|s| s.name.clone()))
        .chain(has_files.then(|| "file".to_string()))
        .chain(std::iter::once(String::new()))
        .collect()];
    for &x in &xs {
        let mut marks = Vec::new();
        if analysis.best_x == Some(x) {
            marks.push("best");
        }
        if analysis.early_stop.stop_x == Some(x) {
            marks.push("early stop");
        }
        rows.push(
            std::iter::once(format_x(x))
                .chain(run.series.iter().map(|s| value(s, x)))
                .chain(has_files.then(|| run.file_at(x).map_or("-".into(), |p| p.display().to_string())))
                .chain(std::iter::once(if marks.is_empty() {
                    String::new()
                } else {
                    format!("<- {}", marks.join(", "))
                }))
                .collect(),
        );
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let w = widths[c];
            // Numbers right-aligned, the file and marks left-aligned.
            if c + 1 < columns && (c == 0 || c <= run.series.len()) {
                let _ = write!(line, "{cell:>w$}  ");
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if xs.len() < all {
        let _ = writeln!(
            out,
            "({} of {all} rows left out; --json has every point)",
            all - xs.len()
        );
    }
}

/// The report.
pub fn text(
    shown: &str,
    run: &Run,
    analysis: &Analysis,
    dropout: Option<&[(String, f64)]>,
    plot: Option<&Path>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{shown}: {}", run.notes.first().map_or("", String::as_str));
    for note in run.notes.iter().skip(1) {
        let _ = writeln!(out, "  note: {note}");
    }
    series_lines(run, &mut out);
    pairing_lines(run, analysis, &mut out);
    out.push('\n');
    table(run, analysis, &mut out);
    out.push('\n');
    let series = |i: Option<usize>| i.map(|i| &run.series[i]);
    out.push_str(&chart(
        series(analysis.primary.train),
        series(analysis.primary.val),
        analysis.best_x,
        analysis.early_stop.stop_x,
        CHART_WIDTH,
        CHART_HEIGHT,
    ));
    out.push('\n');
    let _ = writeln!(out, "verdict: {}", verdict_text(run, analysis));
    let _ = writeln!(out, "advice: {}", advice(analysis, run, dropout));
    let _ = writeln!(out, "{}", early_stop_text(run, analysis));
    if let Some(path) = super::best_file(run, analysis) {
        let _ = writeln!(out, "best file: {}", path.display());
    }
    if let Some(hf) = &run.hf {
        let _ = writeln!(
            out,
            "trainer_state.json says: best_metric {}, best_model_checkpoint {}",
            hf.best_metric.map_or("none".into(), format_value),
            hf.best_model_checkpoint.as_deref().unwrap_or("none")
        );
    }
    if let Some(l) = &run.lightning {
        let _ = writeln!(
            out,
            "ModelCheckpoint says: monitor {} ({}), best_model_score {}, best_model_path {}",
            l.monitor.as_deref().unwrap_or("none"),
            l.mode.as_deref().unwrap_or("mode not stated"),
            l.best_model_score.map_or("none".into(), format_value),
            l.best_model_path.as_deref().unwrap_or("none")
        );
        if let Some(e) = &l.early_stopping {
            let _ = writeln!(
                out,
                "EarlyStopping says: wait_count {}, stopped_epoch {}, best_score {}, patience {}",
                e.wait_count.map_or("none".into(), format_x),
                e.stopped_epoch.map_or("none".into(), format_x),
                e.best_score.map_or("none".into(), format_value),
                e.patience.map_or("none".into(), format_x)
            );
        }
    }
    if let Some(path) = plot {
        let _ = writeln!(out, "plot: {}", path.display());
    }
    out
}

fn series_json(s: &Series) -> Value {
    json!({
        "name": s.name,
        "split": s.split.name(),
        "quantity": s.quantity,
        "higher_better": s.higher_better,
        "axis": s.axis.name(),
        "x": s.points.iter().map(|p| num(p.0)).collect::<Vec<_>>(),
        "y": s.points.iter().map(|p| if p.1.is_finite() { Value::from(p.1) } else { Value::Null }).collect::<Vec<_>>(),
    })
}

fn path_json(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

/// The JSON report: the keys of fixtures/curves/expected.json and more.
pub fn json(paths: &[PathBuf], run: &Run, analysis: &Analysis, dropout: Option<&[(String, f64)]>) -> Value {
    let name = |i: Option<usize>| i.map_or(Value::Null, |i| Value::String(run.series[i].name.clone()));
    let e = &analysis.early_stop;
    let mut out = json!({
        "paths": paths.iter().map(|p| path_json(p)).collect::<Vec<_>>(),
        "source": run.source.name(),
        "notes": run.notes,
        "series": run.series.iter().map(series_json).collect::<Vec<_>>(),
        "pairs": analysis.primary.pairs.iter().map(|&(t, v)| json!({
            "train": run.series[t].name, "val": run.series[v].name, "quantity": run.series[t].quantity,
        })).collect::<Vec<_>>(),
        "primary": {"train": name(analysis.primary.train), "val": name(analysis.primary.val)},
        "primary_reason": analysis.primary.reason,
        "best_x": opt_num(analysis.best_x),
        "verdict": analysis.verdict.name(),
        "verdict_numbers": serde_json::to_value(&analysis.verdict).unwrap_or(Value::Null),
        "summary": verdict_text(run, analysis),
        "advice": advice(analysis, run, dropout),
        "dropout": dropout.map_or(Value::Null, |d| {
            d.iter().map(|(module, p)| json!({"module": module, "p": p})).collect()
        }),
        "early_stop": {
            "patience": e.patience, "min_delta": e.min_delta, "stop_x": opt_num(e.stop_x),
            "best_x": opt_num(e.best_x), "reason": e.reason,
        },
        "best_path": analysis.best_path.as_deref().map_or(Value::Null, path_json),
        "files": run.files.iter().map(|(x, p)| json!({"x": num(*x), "path": path_json(p)})).collect::<Vec<_>>(),
        "history_file": run.history_file.as_deref().map_or(Value::Null, path_json),
    });
    let o = out.as_object_mut().expect("an object");
    if let Some(hf) = &run.hf {
        o.insert("best_metric".into(), hf.best_metric.map_or(Value::Null, Value::from));
        o.insert(
            "best_model_checkpoint".into(),
            hf.best_model_checkpoint.clone().map_or(Value::Null, Value::String),
        );
        o.insert("state_file".into(), path_json(&hf.state_file));
        // What --best prints: the checkpoint-N folder of the best step, by this analysis.
        o.insert(
            "best_checkpoint".into(),
            super::best_file(run, analysis).map_or(Value::Null, |p| path_json(p)),
        );
    }
    if let Some(l) = &run.lightning {
        o.insert("lightning".into(), serde_json::to_value(l).unwrap_or(Value::Null));
    }
    out
}
