//! `ckpt diff`: tensors and metadata leaves by name, across formats. Exit 0 when equal within
//! tolerance, 1 when not, 2 when the comparison cannot be made.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::diff::DiffOptions;
use crate::transform::Pattern;

#[derive(clap::Args, Debug)]
pub struct Args {
    a: PathBuf,
    b: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Values within this absolute difference count as equal (with --rtol: |a-b| <= atol + rtol*|b|).
    #[arg(long, default_value_t = 0.0)]
    atol: f64,
    /// Values within this difference relative to B's value count as equal, as torch.allclose.
    #[arg(long, default_value_t = 0.0)]
    rtol: f64,
    /// Compare only names matching P (a module name such as `fc`, or a glob such as 'layer4.*');
    /// repeatable.
    #[arg(long, value_name = "P")]
    filter: Vec<String>,
    /// Remove this prefix from names on both sides first (e.g. module.); repeatable.
    #[arg(long, value_name = "P")]
    strip_prefix: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = args
        .filter
        .iter()
        .map(|p| Pattern::new(p).map_err(|e| anyhow::anyhow!("--filter: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let opts = DiffOptions {
        atol: args.atol,
        rtol: args.rtol,
        filter,
        strip_prefix: args.strip_prefix,
        on_progress: super::progress_bar::on_stderr(),
    };
    // Refuse bad options before reading anything: a comparison of nothing checks nothing.
    opts.check()?;
    let a = crate::read::open(&args.a)?;
    let b = crate::read::open(&args.b)?;
    let report = crate::diff::diff_with(&a, &b, &opts)?;
    if args.json {
        super::out::json(&report.to_json())?;
    } else {
        super::out::print(&report.to_text())?;
    }
    Ok(if report.is_equal() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
