//! Subcommands of the `ckpt` binary, one module each.

mod inspect;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ckpt", version, about = "Inspect and convert PyTorch and safetensors checkpoints without executing pickles")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a checkpoint holds: tensors, dtypes, shapes, devices, parameters, metadata.
    Inspect(inspect::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
    }
}

/// Compiles a glob given on the command line, naming the option in the error.
pub fn glob(option: &str, pattern: &str) -> anyhow::Result<globset::Glob> {
    globset::Glob::new(pattern).map_err(|e| anyhow::anyhow!("bad {option} pattern '{pattern}': {e}"))
}
