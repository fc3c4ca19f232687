//! `ckpt curves --plot FILE.svg|FILE.png`: the judged pair of curves with axes, a legend, the
//! best point and the early-stopping point, drawn by plotters (no system library: text is laid
//! out with the embedded DejaVu Sans).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::curves::chart::format_x;
use crate::curves::{Analysis, Run, Series};
use crate::write::atomic::AtomicFile;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOR: RGBColor = RGBColor(255, 127, 14);
const BEST_COLOR: RGBColor = RGBColor(44, 160, 44);
const STOP_COLOR: RGBColor = RGBColor(214, 39, 40);
/// The family every text of the chart asks for; registered once with the embedded font.
const FONT: &str = "sans-serif";

/// The kind of file `--plot` writes, from its extension.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Svg,
    Png,
}

/// The kind of picture `path` asks for; an error for any extension but .svg and .png.
pub fn kind(path: &Path) -> anyhow::Result<Kind> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => Ok(Kind::Svg),
        Some("png") => Ok(Kind::Png),
        _ => bail!(
            "{}: --plot writes .svg or .png files; the extension says which",
            path.display()
        ),
    }
}

/// Draws the primary pair of `run` and writes it to `path` (replacing an existing file) through
/// a temporary file, so a failure leaves nothing behind.
pub fn write(path: &Path, kind: Kind, run: &Run, analysis: &Analysis, title: &str) -> anyhow::Result<PathBuf> {
    let bytes = match kind {
        Kind::Svg => {
            let mut svg = String::new();
            draw(
                SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area(),
                run,
                analysis,
                title,
            )
            .with_context(|| format!("{}: cannot draw", path.display()))?;
            svg.into_bytes()
        }
        Kind::Png => {
            let mut pixels = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
            draw(
                BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area(),
                run,
                analysis,
                title,
            )
            .with_context(|| format!("{}: cannot draw", path.display()))?;
            encode_png(&pixels)?
        }
    };
    let mut out = AtomicFile::create(path, false)?;
    out.file()
        .write_all(&bytes)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(out.commit(true)?)
}

fn encode_png(rgb: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().context("PNG header")?;
    writer.write_image_data(rgb).context("PNG data")?;
    writer.finish().context("PNG end")?;
    Ok(bytes)
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; a failure would leave text unavailable,
        // which drawing then reports.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// The finite points of `series`, in runs between non-finite values (a NaN breaks the line).
fn segments(series: &Series) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for &(x, y) in &series.points {
        if y.is_finite() {
            out.last_mut().expect("never empty").push((x, y));
        } else if !out.last().expect("never empty").is_empty() {
            out.push(Vec::new());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn padded(lo: f64, hi: f64, fraction: f64) -> (f64, f64) {
    if hi > lo {
        let pad = (hi - lo) * fraction;
        (lo - pad, hi + pad)
    } else {
        (lo - 0.5, hi + 0.5)
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    run: &Run,
    analysis: &Analysis,
    title: &str,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    register_font();
    let curves: Vec<(&Series, RGBColor)> = [(analysis.primary.train, TRAIN_COLOR), (analysis.primary.val, VAL_COLOR)]
        .into_iter()
        .filter_map(|(i, c)| Some((&run.series[i?], c)))
        .collect();
    let finite: Vec<(f64, f64)> = curves.iter().flat_map(|(s, _)| segments(s).concat()).collect();
    if finite.is_empty() {
        bail!("no finite value to plot");
    }
    let fold = |f: fn(&(f64, f64)) -> f64| {
        finite
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (x0, x1) = fold(|p| p.0);
    let (x0, x1) = padded(x0, x1, 0.02);
    let (y0, y1) = fold(|p| p.1);
    let (y0, y1) = padded(y0, y1, 0.05);
    let main = analysis.primary.main(&run.series);

    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(main.axis.name())
        .x_label_formatter(&|x| format_x(*x))
        .y_desc(main.quantity.as_str())
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    for (series, color) in &curves {
        let color = *color;
        for (n, segment) in segments(series).into_iter().enumerate() {
            let line = chart
                .draw_series(LineSeries::new(segment.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if n == 0 {
                line.label(series.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            }
            chart
                .draw_series(segment.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let axis = main.axis.name();
    let markers = [
        (analysis.best_x, BEST_COLOR, format!("best {axis}"), false),
        (
            analysis.early_stop.stop_x,
            STOP_COLOR,
            format!("early stop (patience {})", analysis.early_stop.patience),
            true,
        ),
    ];
    for (x, color, label, dashed) in markers {
        let Some(x) = x else { continue };
        let label = format!("{label} {}", format_x(x));
        let ends = vec![(x, y0), (x, y1)];
        let drawn = if dashed {
            chart.draw_series(DashedLineSeries::new(ends, 8, 6, color.stroke_width(2)))
        } else {
            chart.draw_series(LineSeries::new(ends, color.stroke_width(2)))
        }
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        drawn
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x + 10, y - 6), (x + 10, y + 6)], color.stroke_width(2)));
    }
    // Where the curves are not: losses start high on the left, metrics low.
    let legend_corner = if main.higher_better {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::LowerLeft
    };
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend_corner)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
