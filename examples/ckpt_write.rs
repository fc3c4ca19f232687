//! Converts a checkpoint with the library's writer, for the interop tests (until `ckpt convert`
//! exists): `ckpt_write IN OUT [--to pth|safetensors] [--dedupe] [--force] [--max-shard-size N]
//! [--force-zip64]`. The format defaults to OUT's extension. Exit status 2 on errors.

use std::path::PathBuf;
use std::process::ExitCode;

use ckpt::write::{parse_size, write_with_layout, OutFormat, WriteOptions};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ckpt_write: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut format = None;
    let mut dedupe = false;
    let mut force = false;
    let mut max_shard_size = None;
    let mut layout = ckpt::write::pth::PthLayout::default();
    let mut dtype = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--to" => {
                format = Some(match args.next().as_deref() {
                    Some("pth") => OutFormat::Pth,
                    Some("safetensors") => OutFormat::Safetensors,
                    other => return Err(format!("--to: expected pth or safetensors, got {other:?}")),
                })
            }
            "--dedupe" => dedupe = true,
            "--force" => force = true,
            "--force-zip64" => layout.force_zip64 = true,
            "--dtype" => {
                let v = args.next().ok_or("--dtype needs a value")?;
                dtype = Some(ckpt::dtype::DType::parse(&v).ok_or_else(|| format!("unknown dtype {v:?}"))?);
            }
            "--max-shard-size" => {
                let v = args.next().ok_or("--max-shard-size needs a value")?;
                max_shard_size = Some(parse_size(&v).ok_or_else(|| format!("bad size {v:?}"))?);
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ => paths.push(a.into()),
        }
    }
    let [input, out] = paths.as_slice() else {
        return Err("usage: ckpt_write IN OUT [--to pth|safetensors] [--dedupe] [--force] [--max-shard-size N]".into());
    };
    let format = match format.or_else(|| OutFormat::from_path(out)) {
        Some(f) => f,
        None => {
            return Err(format!(
                "{}: cannot tell the format from the name; pass --to",
                out.display()
            ))
        }
    };
    let mut ckpt = ckpt::read::open(input).map_err(|e| e.to_string())?;
    if let Some(to) = dtype {
        ckpt::transform::cast::cast(&mut ckpt, to, &ckpt::transform::Keep::default());
    }
    ckpt::write::check_output(&[input.as_path()], out, force).map_err(|e| e.to_string())?;
    let opts = WriteOptions {
        format,
        force,
        dedupe,
        max_shard_size,
        progress: true,
        durable: true,
        metadata: Vec::new(),
    };
    let report = write_with_layout(&ckpt, out, &opts, &layout).map_err(|e| e.to_string())?;
    for f in &report.files {
        println!("{}", f.display());
    }
    eprintln!("{} tensors, {} bytes", report.tensors, report.bytes);
    Ok(())
}
