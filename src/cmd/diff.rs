//! `ckpt diff`: tensor by tensor, across formats. Exit 0 when equal within atol, 1 when not.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    a: PathBuf,
    b: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Values within this absolute difference count as equal.
    #[arg(long, default_value_t = 0.0)]
    atol: f64,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // NaN fails this too.
    if args.atol.is_nan() || args.atol < 0.0 {
        anyhow::bail!("--atol must be a number >= 0");
    }
    let a = ckpt::read::open(&args.a)?;
    let b = ckpt::read::open(&args.b)?;
    let report = ckpt::diff::diff(&a, &b, args.atol);
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
