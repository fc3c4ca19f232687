//! `ckpt convert`: any checkpoint to safetensors or PyTorch zip, with selection, renaming,
//! dtype casts and device-tag rewriting on the way.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use ckpt::dtype::DType;
use ckpt::transform::{self, DeviceRule, RenameRule};
use ckpt::write::OutFormat;
use globset::GlobSetBuilder;

use super::output::{warn_globals, written, OutArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input: any checkpoint ckpt reads (a file, a *.index.json, or a directory of shards).
    input: PathBuf,
    /// Output file, *.index.json, or a directory (existing, or ending in /) for the Hugging Face
    /// layout: model.safetensors, or shards and an index with --max-shard-size.
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
    /// Rename tensors by a JSON object {"old name": "new name"} (names as after the prefix
    /// options); an entry naming no tensor is an error.
    #[arg(long, value_name = "FILE.json")]
    rename_map: Option<PathBuf>,
    /// Rename tensors by a sed rule s/REGEX/REPLACEMENT/[g] ($1, ${name} or \1 for groups);
    /// repeatable, applied in order, after --rename-map. A rule that renames nothing is an error.
    #[arg(long, value_name = "s/PAT/REP/")]
    rename: Vec<String>,
    /// Write only this subtree (e.g. model_state_dict of a training checkpoint).
    #[arg(long, value_name = "PATH")]
    select: Option<String>,
    /// safetensors output: add KEY=VALUE to the file's __metadata__ (to every shard's), over the
    /// input's entries; repeatable. A .pth cannot hold it.
    #[arg(long, value_name = "KEY=VALUE")]
    metadata: Vec<String>,
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

/// `--metadata KEY=VALUE` entries, in order; a key given twice is refused (which would win is
/// a guess), as is metadata for a .pth output, which has no place for it.
fn parse_metadata(entries: &[String], format: OutFormat) -> anyhow::Result<Vec<(String, String)>> {
    if let Some(first) = entries.first() {
        if format == OutFormat::Pth {
            bail!("--metadata {first}: a .pth output cannot hold metadata entries (only safetensors has a place for them)");
        }
    }
    let mut parsed: Vec<(String, String)> = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some((key, value)) = entry.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("--metadata {entry}: expected KEY=VALUE");
        };
        if parsed.iter().any(|(k, _)| k == key) {
            bail!("--metadata {entry}: the key '{key}' is given twice");
        }
        parsed.push((key.to_string(), value.to_string()));
    }
    Ok(parsed)
}

/// The `--rename-map` file: one JSON object whose values are strings, in the file's order.
fn read_rename_map(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--rename-map {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("--rename-map {}: not JSON", path.display()))?;
    let Some(map) = json.as_object() else {
        bail!(
            "--rename-map {}: expected an object {{\"old name\": \"new name\"}}",
            path.display()
        );
    };
    map.iter()
        .map(|(old, new)| match new.as_str() {
            Some(new) => Ok((old.clone(), new.to_string())),
            None => bail!(
                "--rename-map {}: the new name of '{old}' is not a string",
                path.display()
            ),
        })
        .collect()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Resolve everything the user typed before reading a byte.
    let mut output = args.out.resolve(&args.output)?;
    output.options.metadata = parse_metadata(&args.metadata, output.options.format)?;
    let dtype = args.dtype.as_deref().map(parse_target).transpose()?;
    let mut keep = GlobSetBuilder::new();
    for g in &args.keep_dtype {
        keep.add(super::glob("--keep-dtype", g)?);
    }
    let keep = keep.build()?;
    let device = args.device.as_deref().map(DeviceRule::parse).transpose()?;
    let rename_map = args.rename_map.as_deref().map(read_rename_map).transpose()?;
    let rename_rules = args
        .rename
        .iter()
        .map(|r| RenameRule::parse(r).map_err(|e| anyhow!("--rename: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    #[cfg(feature = "tch")]
    let verify_device = args
        .verify
        .then(|| ckpt::verify::parse_device(&args.verify_device))
        .transpose()?;

    let mut ckpt = ckpt::read::open(&args.input)?;
    output.check(&ckpt)?;
    warn_globals(&args.input, &ckpt);
    if let Some(path) = &args.select {
        ckpt = transform::select(&ckpt, path)?;
    }
    if !args.strip_prefix.is_empty() || args.add_prefix.is_some() {
        let report = transform::rename(&mut ckpt, &args.strip_prefix, args.add_prefix.as_deref())?;
        eprintln!("renamed {} tensors", report.renamed.len());
    }
    if let (Some(map), Some(path)) = (&rename_map, &args.rename_map) {
        let report =
            transform::rename_map(&mut ckpt, map).map_err(|e| anyhow!("--rename-map {}: {e}", path.display()))?;
        eprintln!("--rename-map: renamed {} tensors", report.renamed.len());
    }
    if !rename_rules.is_empty() {
        let report = transform::rename_regex(&mut ckpt, &rename_rules).map_err(|e| anyhow!("--rename: {e}"))?;
        eprintln!("--rename: renamed {} tensors", report.renamed.len());
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
        eprintln!("cast {} tensors to {to}; {} kept", report.cast.len(), report.kept.len());
    }
    if let Some(rule) = &device {
        let report = transform::set_device(&mut ckpt, rule);
        eprintln!("device tags: {} storages changed", report.storages_changed);
    }
    let report = output.write(&ckpt)?;
    println!("{}", written(&report, output.options.format));
    #[cfg(feature = "tch")]
    if let Some(device) = verify_device {
        // The file a loader opens: the one written, or the index of a sharded output (last).
        let written_path = report.files.last().unwrap_or(&output.path);
        let check = ckpt::verify::verify_output(written_path, device)?;
        eprint!("{}", check.to_text());
        if !check.ok() {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}
