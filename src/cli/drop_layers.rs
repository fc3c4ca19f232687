//! `ckpt drop-layers`: delete tensors by module name or glob (a new classifier head, ...).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::record::{Action, Record};
use crate::transform;

use super::out;
use super::output::{finish, warn_globals, OutArgs};

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
    let mut ckpt = crate::read::open(&args.input)?;
    if let Some(output) = &output {
        if !args.dry_run {
            output.check(&ckpt)?;
        }
    }
    warn_globals(&args.input, &ckpt);
    let report = transform::drop_layers(&mut ckpt, &args.pattern)?;
    let mut record = Record::default();
    let mut dropped = Action::from(&report);
    if args.dry_run {
        dropped.summary = dropped.summary.replacen("removed", "would remove", 1);
        dropped = dropped.with("dry_run", serde_json::json!(true));
    }
    if !args.out.json {
        out::line(&format!("{}:", dropped.summary))?;
        for name in &report.removed {
            out::line(&format!("  {name}"))?;
        }
        out::line(&format!("{} tensors remain", report.remaining))?;
    }
    record.push(dropped);
    if let (Some(output), false) = (&output, args.dry_run) {
        output.write(&ckpt, &mut record)?;
    }
    finish(&record, args.out.json, "drop-layers", &args.input)?;
    Ok(ExitCode::SUCCESS)
}
