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
    #[arg(long, conflicts_with_all = ["json", "modules"])]
    tree: bool,
    /// The module tree of a whole model (torch.save(model)) or TorchScript archive: each
    /// module's class and the hyperparameters the file holds; identical repeated blocks shown once.
    #[arg(long)]
    modules: bool,
    /// Show N levels of modules below the model (with --modules or --tree).
    #[arg(long, value_name = "N")]
    depth: Option<usize>,
    /// Only tensors and metadata matching P: a module name ('layers.0') or a glob ('layer4.*',
    /// '*.weight').
    #[arg(long, value_name = "P")]
    filter: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.depth.is_some() && !(args.modules || args.tree) {
        anyhow::bail!("--depth applies to the module tree: add --modules or --tree");
    }
    if args.hash && args.modules && !args.json {
        anyhow::bail!("--hash adds a column to the tensor table, which --modules replaces: add --json to get both");
    }
    let filter = args.filter.map(|p| crate::transform::Pattern::new(&p)).transpose()?;
    let opts = InspectOptions {
        hash: args.hash,
        filter,
        on_progress: super::progress_bar::on_stderr(),
        modules: args.modules,
        depth: args.depth,
    };
    let ckpt = crate::read::open(&args.path)?;
    if args.modules && ckpt.modules.is_empty() {
        anyhow::bail!(
            "{}: --modules: the file holds tensors only ({}), no module objects; only a whole model saved with torch.save(model) or a TorchScript archive holds its modules",
            args.path.display(),
            ckpt.format
        );
    }
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
