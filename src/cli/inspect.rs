//! `ckpt inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::inspect::{self, InspectOptions};

#[derive(clap::Args)]
pub struct Args {
    /// A .pth/.pt/.bin file, a safetensors file, a *.index.json, or a directory of shards.
    path: PathBuf,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Add each tensor's SHA-256 (of its C-contiguous little-endian bytes); reads all data.
    #[arg(long)]
    hash: bool,
    /// Group tensors by module, with parameter counts per module.
    #[arg(long, conflicts_with = "json")]
    tree: bool,
    /// Only tensors and metadata matching P: a module name ('layers.0') or a glob ('layer4.*',
    /// '*.weight').
    #[arg(long, value_name = "P")]
    filter: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let filter = args.filter.map(|p| crate::transform::Pattern::new(&p)).transpose()?;
    let opts = InspectOptions {
        hash: args.hash,
        filter,
        on_progress: super::progress_bar::on_stderr(),
    };
    let ckpt = crate::read::open(&args.path)?;
    super::output::warn_globals(&args.path, &ckpt);
    let shown = args.path.display().to_string();
    if args.json {
        let value = inspect::to_json(&ckpt, &shown, &opts);
        super::out::json(&value)?;
    } else {
        let size = std::fs::metadata(&args.path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        super::out::print(&inspect::to_text(&ckpt, &shown, size, &opts, args.tree))?;
    }
    Ok(ExitCode::SUCCESS)
}
