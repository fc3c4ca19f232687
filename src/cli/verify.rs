//! `ckpt verify` (feature `tch`): load a checkpoint with libtorch and compare every tensor with
//! ckpt's own reading, bit for bit.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The checkpoint: .pth/.pt/.bin, .safetensors, a sharded index.json or its directory.
    file: PathBuf,
    /// Where libtorch loads the tensors: cpu, cuda (= cuda:0) or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let device = crate::verify::parse_device(&args.device)?;
    let report = crate::verify::verify(&args.file, device)?;
    if args.json {
        super::out::json(&report.to_json())?;
    } else {
        super::out::print(&report.to_text())?;
    }
    Ok(ExitCode::from(report.exit_code() as u8))
}
