//! The `ckpt` command line. Arguments are turned into a resolved configuration, then run;
//! errors print as "ckpt: <file>: <what is wrong>" and exit with status 2.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use ckpt::inspect::{self, InspectOptions};

#[derive(Parser)]
#[command(name = "ckpt", version, about = "Inspect and convert PyTorch and safetensors checkpoints without executing pickles")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a checkpoint holds: tensors, dtypes, shapes, devices, parameters, metadata.
    Inspect {
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
        /// Only tensors whose names match this glob (e.g. 'layer4.*', '*.weight').
        #[arg(long, value_name = "GLOB")]
        filter: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ckpt: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect { path, json, hash, tree, filter } => {
            let filter = filter
                .map(|g| globset::Glob::new(&g).map(|g| g.compile_matcher()).with_context(|| format!("bad --filter pattern '{g}'")))
                .transpose()?;
            let opts = InspectOptions { hash, filter };
            let ckpt = ckpt::read::open(&path)?;
            let shown = path.display().to_string();
            if json {
                let value = inspect::to_json(&ckpt, &shown, &opts);
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                let size = std::fs::metadata(&path).ok().filter(|m| m.is_file()).map(|m| m.len());
                print!("{}", inspect::to_text(&ckpt, &shown, size, &opts, tree));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
