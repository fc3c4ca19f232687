//! `ckpt convert`: any checkpoint to safetensors or PyTorch zip, with selection, renaming,
//! dtype casts and device-tag rewriting on the way.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use ckpt::dtype::DType;
use ckpt::transform::{self, DeviceRule};
use globset::GlobSetBuilder;

use ckpt::record::{cast_actions, Action, Record};

use super::output::{did, finish, warn_globals, OutArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input: any checkpoint ckpt reads (a file, a *.index.json, or a directory of shards).
    input: PathBuf,
    /// Output file (or index file / directory with --max-shard-size).
    output: PathBuf,
    #[command(flatten)]
    out: OutArgs,
    /// Cast floating-point tensors: bf16, f16, f32, f64 (or PyTorch names: bfloat16, float16...).
    #[arg(long, value_name = "T")]
    dtype: Option<String>,
    /// Leave tensors matching GLOB in their dtype (e.g. '*.running_var'); repeatable.
    #[arg(long, value_name = "GLOB", requires = "dtype")]
    keep_dtype: Vec<String>,
    /// Write a cast even if finite values overflow to inf.
    #[arg(long, requires = "dtype")]
    allow_overflow: bool,
    /// Rewrite storage device tags: cpu, cuda:N, or FROM=TO (e.g. cuda:1=cuda:0).
    #[arg(long, value_name = "D")]
    device: Option<String>,
    /// Remove this prefix from tensor names where present (e.g. module.); repeatable.
    #[arg(long, value_name = "P")]
    strip_prefix: Vec<String>,
    /// Add this prefix to every tensor name.
    #[arg(long, value_name = "P")]
    add_prefix: Option<String>,
    /// Write only this subtree (e.g. model_state_dict of a training checkpoint).
    #[arg(long, value_name = "PATH")]
    select: Option<String>,
    /// After writing, load the output with libtorch and compare every tensor (feature `tch`).
    #[cfg(feature = "tch")]
    #[arg(long)]
    verify: bool,
    /// Where --verify loads the output: cpu, cuda or cuda:N.
    #[cfg(feature = "tch")]
    #[arg(long, value_name = "D", default_value = "cpu", requires = "verify")]
    verify_device: String,
}

/// `--dtype` as convert accepts it: floating-point targets only.
fn parse_target(s: &str) -> anyhow::Result<DType> {
    match DType::parse(s) {
        Some(d @ (DType::BF16 | DType::F16 | DType::F32 | DType::F64)) => Ok(d),
        Some(d) => bail!("--dtype {s}: casting to {d} is not supported (use bf16, f16, f32 or f64)"),
        None => bail!("--dtype {s}: unknown dtype (use bf16, f16, f32 or f64)"),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Resolve everything the user typed before reading a byte.
    let output = args.out.resolve(&args.output)?;
    let dtype = args.dtype.as_deref().map(parse_target).transpose()?;
    let mut keep = GlobSetBuilder::new();
    for g in &args.keep_dtype {
        keep.add(super::glob("--keep-dtype", g)?);
    }
    let keep = keep.build()?;
    let device = args.device.as_deref().map(DeviceRule::parse).transpose()?;
    #[cfg(feature = "tch")]
    let verify_device = args
        .verify
        .then(|| ckpt::verify::parse_device(&args.verify_device))
        .transpose()?;

    let mut ckpt = ckpt::read::open(&args.input)?;
    output.check(&ckpt)?;
    warn_globals(&args.input, &ckpt);
    let json = args.out.json;
    let mut record = Record::default();
    if let Some(path) = &args.select {
        ckpt = transform::select(&ckpt, path)?;
        let names = ckpt.tensors.iter().map(|t| serde_json::json!(t.name)).collect();
        let summary = format!("selected '{path}': {} tensors", ckpt.tensors.len());
        did(&mut record, Action::new("selected", names, summary), json);
    }
    if !args.strip_prefix.is_empty() || args.add_prefix.is_some() {
        let report = transform::rename(&mut ckpt, &args.strip_prefix, args.add_prefix.as_deref())?;
        did(&mut record, &report, json);
    }
    if let Some(to) = dtype {
        let report = transform::cast(&mut ckpt, to, &keep);
        if !args.allow_overflow {
            let overflow = transform::try_overflow_report(&ckpt)?;
            if !overflow.is_empty() {
                let total: u64 = overflow.iter().map(|(_, n)| n).sum();
                let list: Vec<String> = overflow
                    .iter()
                    .map(|(name, n)| format!("  {name}: {n} values"))
                    .collect();
                bail!(
                    "casting to {to} would turn {total} finite values into inf in {} tensors:\n{}\nkeep them with --keep-dtype GLOB, or pass --allow-overflow",
                    overflow.len(),
                    list.join("\n")
                );
            }
        }
        for action in cast_actions(&report) {
            did(&mut record, action, json);
        }
    }
    if let Some(rule) = &device {
        let report = transform::set_device(&mut ckpt, rule);
        did(&mut record, &report, json);
    }
    output.write(&ckpt, &mut record)?;
    finish(&record, json, "convert", &args.input)?;
    #[cfg(feature = "tch")]
    if let Some(device) = verify_device {
        let check = ckpt::verify::verify_output(&output.path, device)?;
        super::out::note(check.to_text().trim_end());
        if !check.ok() {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
