//! `ckpt stats`: every tensor's numbers and what they say about the checkpoint.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::stats::{CheckpointStats, Findings, Moments, TensorStats};
use crate::transform::pattern::{require_matches, Pattern};
use anyhow::Context;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// A .pth/.pt/.bin file, a safetensors file, a *.index.json, or a directory of shards.
    path: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Only tensors matching P: a module name ('layers.0') or a glob ('layer4.*', '*.weight').
    #[arg(long, value_name = "P")]
    filter: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = args.filter.as_deref().map(Pattern::new).transpose()?;
    let ckpt = crate::open(&args.path)?;
    super::output::warn_globals(&args.path, &ckpt);
    if let Some(p) = &filter {
        let names: Vec<&str> = ckpt.tensors().map(|t| t.name()).collect();
        require_matches(std::slice::from_ref(p), names.iter().copied())
            .with_context(|| format!("{}: --filter", args.path.display()))?;
    }
    let chosen = ckpt
        .tensors()
        .filter(|t| filter.as_ref().is_none_or(|p| p.matches(t.name())))
        .collect();
    let stats = ckpt.stats_of(chosen)?;
    let shown = args.path.display().to_string();
    if args.json {
        super::out::json(&to_json(&ckpt, &shown, &stats))?;
    } else {
        super::out::print(&to_text(&ckpt, &shown, &stats))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json(ckpt: &crate::Checkpoint, path: &str, stats: &CheckpointStats) -> Value {
    let tensors: Vec<Value> = stats
        .tensors()
        .map(|(name, s)| {
            let shape = ckpt.tensor(name).map(|t| t.shape().to_vec()).unwrap_or_default();
            let mut v = json!({"name": name, "dtype": s.dtype().name(), "shape": shape, "numel": s.values().count()});
            let o = v.as_object_mut().expect("an object");
            match s.imag() {
                Some(imag) => {
                    o.insert("real".into(), moments_json(s.values()));
                    o.insert("imag".into(), moments_json(imag));
                }
                None => {
                    o.insert("values".into(), moments_json(s.values()));
                }
            }
            o.insert("zeros".into(), s.zeros().into());
            o.insert("zero_fraction".into(), s.zero_fraction().into());
            if let (Some(lo), Some(hi)) = (s.int_min(), s.int_max()) {
                // i128 is beyond JSON's integers in general; every integer dtype fits in i64/u64.
                o.insert("int_min".into(), int_json(lo));
                o.insert("int_max".into(), int_json(hi));
            }
            if let Some(n) = s.true_count() {
                o.insert("true_count".into(), n.into());
            }
            v
        })
        .collect();
    let f = stats.findings();
    json!({
        "path": path,
        "tensors": tensors,
        "findings": {
            "nan": f.nan(),
            "inf": f.inf(),
            "all_zero": f.all_zero(),
            "above_f16": f.above_f16(),
            "below_f16_normal": f.below_f16_normal(),
            "identical": f.identical(),
        },
    })
}

fn int_json(v: i128) -> Value {
    i64::try_from(v)
        .map(Value::from)
        .or_else(|_| u64::try_from(v).map(Value::from))
        .unwrap_or(Value::Null)
}

fn moments_json(m: &Moments) -> Value {
    json!({
        "count": m.count(), "finite": m.finite(), "nan": m.nan(), "pos_inf": m.pos_inf(), "neg_inf": m.neg_inf(),
        "zeros": m.zeros(), "subnormal": m.subnormal(), "above_f16": m.above_f16(),
        "below_f16_normal": m.below_f16_normal(),
        "min": m.min(), "max": m.max(), "mean": m.mean(), "std": m.std(1), "absmax": m.absmax(), "norm": m.norm(),
    })
}

fn to_text(ckpt: &crate::Checkpoint, path: &str, stats: &CheckpointStats) -> String {
    let mut rows = vec![[
        "name", "dtype", "min", "max", "mean", "std", "absmax", "norm", "zeros", "nan", "inf",
    ]
    .map(String::from)
    .to_vec()];
    for (name, s) in stats.tensors() {
        rows.push(row(name, s, s.values(), ""));
        if let Some(imag) = s.imag() {
            rows.push(row(name, s, imag, ".imag"));
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "file      {path}\ntensors   {} of {}\n\n",
        stats.tensors().len(),
        ckpt.len()
    );
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i < 2 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out.push_str(&findings_text(stats.findings()));
    out
}

/// One line of the table: a real tensor, or one component of a complex one.
fn row(name: &str, s: &TensorStats, m: &Moments, part: &str) -> Vec<String> {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), num);
    let (min, max) = match (s.int_min(), s.int_max()) {
        (Some(lo), Some(hi)) => (lo.to_string(), hi.to_string()),
        _ => (opt(m.min()), opt(m.max())),
    };
    let zeros = if m.count() == 0 {
        "-".to_string()
    } else {
        percent(m.zeros(), m.count())
    };
    vec![
        format!("{name}{part}"),
        s.dtype().name().to_string(),
        min,
        max,
        opt(m.mean()),
        opt(m.std(1)),
        opt(m.absmax()),
        num(m.norm()),
        zeros,
        m.nan().to_string(),
        (m.pos_inf() + m.neg_inf()).to_string(),
    ]
}

/// Six significant digits; exponent notation outside [1e-4, 1e6).
fn num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || (1e-4..1e6).contains(&a) {
        let digits = 5usize.saturating_sub(a.log10().floor().max(0.0) as usize);
        let s = format!("{v:.digits$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s == "-0" {
            "0".into()
        } else {
            s
        }
    } else {
        format!("{v:.5e}")
    }
}

fn percent(part: u64, whole: u64) -> String {
    let p = part as f64 * 100.0 / whole as f64;
    match p {
        0.0 => "0%".into(),
        100.0 => "100%".into(),
        p if p < 0.1 => "<0.1%".into(),
        p if p > 99.9 => ">99.9%".into(),
        p => format!("{p:.1}%"),
    }
}

fn findings_text(f: &Findings) -> String {
    let mut out = String::new();
    let list = |names: &[String]| names.join(", ");
    let lines = [
        ("NaN", f.nan(), "values that are NaN"),
        ("inf", f.inf(), "values that are +inf or -inf"),
        ("all zero", f.all_zero(), "every element zero"),
        (
            "float16 overflow",
            f.above_f16(),
            "finite values a float16 cast turns into inf",
        ),
        (
            "float16 underflow",
            f.below_f16_normal(),
            "values below float16's smallest normal, which a float16 cast rounds or flushes to zero",
        ),
    ];
    for (what, names, why) in lines {
        if !names.is_empty() {
            let _ = writeln!(out, "{what:<17} {} ({why}): {}", names.len(), list(names));
        }
    }
    for group in f.identical() {
        let _ = writeln!(
            out,
            "{:<17} {} (same bytes, not tied): {}",
            "identical",
            group.len(),
            group.join(" = ")
        );
    }
    if out.is_empty() {
        "\nno NaN, no inf, no all-zero tensor, nothing a float16 cast would lose, no identical copies\n".into()
    } else {
        format!("\n{out}")
    }
}
