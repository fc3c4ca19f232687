//! `ckpt drop-layers`: delete tensors by module name or glob (a new classifier head, ...).

use std::path::PathBuf;
use std::process::ExitCode;

use ckpt::inspect::grouped;
use ckpt::transform;

use super::output::{warn_globals, written, OutArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    input: PathBuf,
    /// Output file; not needed with --dry-run.
    #[arg(required_unless_present = "dry_run")]
    output: Option<PathBuf>,
    /// A module name (`fc` removes fc.weight and fc.bias, not fc1.weight) or a glob on names
    /// (`layer4.*`, `*.num_batches_tracked`); repeatable. A pattern that matches nothing is an error.
    #[arg(long, short, value_name = "P", required = true)]
    pattern: Vec<String>,
    /// Only print what would be removed.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    out: OutArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let output = args.output.as_deref().map(|o| args.out.resolve(o)).transpose()?;
    let mut ckpt = ckpt::read::open(&args.input)?;
    if let Some(output) = &output {
        if !args.dry_run {
            output.check(&ckpt)?;
        }
    }
    warn_globals(&args.input, &ckpt);
    let report = transform::drop_layers(&mut ckpt, &args.pattern)?;
    let verb = if args.dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {} tensors ({} parameters):",
        report.removed.len(),
        grouped(report.removed_params)
    );
    for name in &report.removed {
        println!("  {name}");
    }
    println!("{} tensors remain", report.remaining);
    if let (Some(output), false) = (&output, args.dry_run) {
        let written_report = output.write(&ckpt)?;
        println!("{}", written(&written_report, output.options.format));
    }
    Ok(ExitCode::SUCCESS)
}
