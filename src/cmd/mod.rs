//! Subcommands of the `ckpt` binary, one module each.

mod check;
mod convert;
mod diff;
mod drop_layers;
mod freeze;
mod inspect;
pub mod out;
mod output;
mod scan;
mod stats;
#[cfg(feature = "tch")]
mod verify;

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Inspect and convert PyTorch and safetensors checkpoints without executing pickles"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a checkpoint holds: tensors, dtypes, shapes, devices, parameters, metadata.
    Inspect(inspect::Args),
    /// Convert between PyTorch (.pth/.pt/.bin) and safetensors; cast dtypes, retag devices, rename.
    Convert(convert::Args),
    /// Delete tensors by module name or glob and write the rest.
    DropLayers(drop_layers::Args),
    /// Report, set and export requires_grad flags; write them into a .pth as nn.Parameter.
    Freeze(freeze::Args),
    /// Compare two checkpoints tensor by tensor (exit 1 when they differ).
    Diff(diff::Args),
    /// List the globals every pickle references and judge each file (exit 1 when dangerous).
    Scan(scan::Args),
    /// Is it sound? Zip CRCs and headers, shard sizes, a SHA-256 manifest, NaN and inf (exit 1 on findings).
    Check(check::Args),
    /// Numbers of every tensor (min, max, mean, std, norm, zeros, NaN, inf) and what they say.
    Stats(stats::Args),
    /// Load a checkpoint with libtorch (CPU or CUDA) and compare every tensor with ckpt's reading.
    #[cfg(feature = "tch")]
    Verify(verify::Args),
    /// Load a checkpoint with libtorch (needs a build with the `tch` feature: scripts/build-tch.sh).
    #[cfg(not(feature = "tch"))]
    #[command(disable_help_flag = true)]
    Verify(NoVerify),
}

/// `ckpt verify` in a build without libtorch: whatever its arguments, it says how to get it.
#[cfg(not(feature = "tch"))]
#[derive(clap::Args)]
struct NoVerify {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _args: Vec<std::ffi::OsString>,
}

/// Parses the command line; the raw matches are kept for options whose order matters.
pub fn parse() -> (Cli, ArgMatches) {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (cli, matches)
}

pub fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Convert(args) => convert::run(args),
        Command::DropLayers(args) => drop_layers::run(args),
        Command::Freeze(args) => {
            let sub = matches.subcommand_matches("freeze").expect("freeze was parsed");
            freeze::run(args, sub)
        }
        Command::Diff(args) => diff::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Stats(args) => stats::run(args),
        Command::Check(args) => check::run(args),
        #[cfg(feature = "tch")]
        Command::Verify(args) => verify::run(args),
        #[cfg(not(feature = "tch"))]
        Command::Verify(_) => anyhow::bail!(
            "verify: this ckpt was built without libtorch. `ckpt verify` needs a build with the `tch` \
             feature: scripts/build-tch.sh build (or cargo build --release --features tch, with \
             PyTorch 2.11.0's libtorch); see README, \"Proving loads in libtorch\""
        ),
    }
}
