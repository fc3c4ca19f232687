//! `ckpt scan`: every global every pickle references, and a verdict per file.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::read::ReadLimits;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Files or directories (walked recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print one JSON object for tools.
    #[arg(long)]
    json: bool,
    /// Count needs-code (classes loading would import and run) as a finding too.
    #[arg(long)]
    strict: bool,
    /// List every global, not only the ones that matter.
    #[arg(long, short)]
    verbose: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let reports = crate::scan::scan_paths(&args.paths, &ReadLimits::default());
    if args.json {
        super::out::json(&crate::scan::to_json(&reports, args.strict))?;
    } else {
        super::out::print(&crate::scan::to_text(&reports, args.verbose))?;
    }
    Ok(ExitCode::from(crate::scan::exit_code(&reports, args.strict)))
}
