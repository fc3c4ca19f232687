//! The `ckpt` command line (feature `cli`, on by default): [`main`] is the whole binary. Each
//! subcommand, one module here, turns its raw arguments into a resolved configuration (globs
//! compiled, dtypes and sizes parsed) before anything is read; errors print as
//! `ckpt: <file>: <what is wrong>` and exit with status 2.

mod check;
mod convert;
mod curves;
mod diff;
mod drop_layers;
mod freeze;
mod inspect;
mod out;
mod output;
mod progress_bar;
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
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// One value, parsed once per run: the size of its largest variant costs nothing worth boxing.
#[allow(clippy::large_enum_variant)]
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
    /// Learning curves from checkpoints: over- or underfitting, early stopping, the best checkpoint.
    Curves(curves::Args),
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

/// Runs the `ckpt` command on this process's arguments and says how it should exit: 0 on
/// success, 1 for a finding (`diff` saw differences, `scan` a dangerous file), 2 for an error,
/// which is printed to stderr. A closed stdout (`ckpt inspect x.pth | head`) ends it quietly.
///
/// `src/main.rs` is just this:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     ckpt::cli::main()
/// }
/// ```
pub fn main() -> ExitCode {
    let (cli, matches) = parse();
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) if e.is::<out::StdoutClosed>() => ExitCode::from(out::CLOSED_STATUS),
        Err(e) => {
            out::note(&format!("ckpt: {}", message(&e)));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once. The library's errors already end with their cause
/// ("x.pth: No such file or directory (os error 2)"), so a cause whose text the message already
/// ends with is not repeated; a cause that adds something is appended.
fn message(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// Parses the command line; the raw matches are kept for options whose order matters.
fn parse() -> (Cli, ArgMatches) {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (cli, matches)
}

fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
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
        Command::Curves(args) => curves::run(args),
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
