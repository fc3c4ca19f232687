//! `ckpt convert`: any checkpoint to safetensors or PyTorch zip, with selection, renaming,
//! dtype casts and device-tag rewriting on the way.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};

use crate::dtype::DType;
use crate::record::{cast_actions, Action, Record};
use crate::transform::{self, DeviceRule, RenameRule};
use crate::transform::{CastReport, Keep, Losses};
use crate::write::OutFormat;

use super::output::{did, finish, warn_globals, OutArgs};

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
    /// Leave tensors matching P (a module name or a glob, e.g. 'bn1' or '*.running_var') in
    /// their dtype; repeatable. A pattern that matches nothing is an error.
    #[arg(long, value_name = "P", requires = "dtype")]
    keep_dtype: Vec<String>,
    /// Leave every tensor of normalization modules (BatchNorm, LayerNorm, GroupNorm, RMSNorm...)
    /// in its dtype: by module class where the file has them (whole models, TorchScript), else
    /// modules with running statistics or a norm-like name (norm, ln_f, bn1).
    #[arg(long, requires = "dtype")]
    keep_norms: bool,
    /// Write a cast even if finite values overflow to inf.
    #[arg(long, requires = "dtype")]
    allow_overflow: bool,
    /// Write a cast even if non-zero values flush to zero.
    #[arg(long, requires = "dtype")]
    allow_underflow: bool,
    /// Rewrite storage device tags (.pth output only): cpu, cuda[:N], mps, xpu[:N], meta... or
    /// FROM=TO (e.g. cuda:1=cuda:0). Only tags torch.load restores are accepted.
    #[arg(long, value_name = "D")]
    device: Option<String>,
    /// Remove this prefix from tensor names (e.g. module.); repeatable. A prefix no name has is
    /// an error.
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
    let keep = Keep {
        patterns: transform::pattern::compile(&args.keep_dtype)?,
        norms: args.keep_norms,
    };
    let device = args.device.as_deref().map(DeviceRule::parse).transpose()?;
    if device.is_some() && output.options.format == OutFormat::Safetensors {
        bail!("--device: safetensors files hold no device tags (tensors load where load_file's device= says); write a .pth to retag devices");
    }
    let rename_map = args.rename_map.as_deref().map(read_rename_map).transpose()?;
    let rename_rules = args
        .rename
        .iter()
        .map(|r| RenameRule::parse(r).map_err(|e| anyhow!("--rename: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    #[cfg(feature = "tch")]
    let verify_device = args
        .verify
        .then(|| crate::verify::parse_device(&args.verify_device))
        .transpose()?;

    let mut ckpt = crate::read::open(&args.input)?;
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
    if let (Some(map), Some(path)) = (&rename_map, &args.rename_map) {
        let report =
            transform::rename_map(&mut ckpt, map).map_err(|e| anyhow!("--rename-map {}: {e}", path.display()))?;
        did(&mut record, &report, json);
    }
    if !rename_rules.is_empty() {
        let report = transform::rename_regex(&mut ckpt, &rename_rules).map_err(|e| anyhow!("--rename: {e}"))?;
        did(&mut record, &report, json);
    }
    let mut cast_to = None;
    if let Some(to) = dtype {
        let names = ckpt.tensors.iter().map(|t| t.name.as_str());
        transform::pattern::require_matches(&keep.patterns, names.clone())?;
        if keep.norms && !transform::norms::norm_members(&ckpt).contains(&true) {
            bail!(
                "--keep-norms: no normalization module found (no running_mean/running_var, no norm-like module name); {}",
                transform::pattern::module_hint(names)
            );
        }
        let report = transform::cast(&mut ckpt, to, &keep);
        cast_to = Some(to);
        for action in cast_actions(&report) {
            did(&mut record, action, json);
        }
        list_norms_kept(&report);
    }
    if let Some(rule) = &device {
        transform::require_device_match(&ckpt, rule)?;
        let report = transform::set_device(&mut ckpt, rule);
        did(&mut record, &report, json);
    }
    // What the cast loses is counted while the output is written; a refused cast renames
    // nothing into place.
    let (allow_overflow, allow_underflow) = (args.allow_overflow, args.allow_underflow);
    match cast_to {
        Some(to) if !(allow_overflow && allow_underflow) => {
            output.write_judging_losses(&ckpt, &mut record, |losses| {
                judge_losses(losses, to, allow_overflow, allow_underflow)
            })?
        }
        _ => output.write(&ckpt, &mut record)?,
    }
    finish(&record, json, "convert", &args.input)?;
    #[cfg(feature = "tch")]
    if let Some(device) = verify_device {
        // The file a loader opens: the one written, or the index of a sharded output (last).
        let written_path = record
            .written
            .as_ref()
            .and_then(|w| w.report.files.last())
            .unwrap_or(&output.path);
        let check = crate::verify::verify_output(written_path, device)?;
        super::out::note(check.to_text().trim_end());
        if !check.ok() {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a cast that turns finite values into inf or non-zero values into zero, unless
/// allowed: the file would be written without a word about the damage.
fn judge_losses(
    losses: &[(String, Losses)],
    to: DType,
    allow_overflow: bool,
    allow_underflow: bool,
) -> anyhow::Result<()> {
    let refuse = |what: &str, count: fn(&Losses) -> u64, advice: &str| -> anyhow::Result<()> {
        let hit: Vec<(&str, u64)> = losses
            .iter()
            .map(|(name, l)| (name.as_str(), count(l)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if hit.is_empty() {
            return Ok(());
        }
        let total: u64 = hit.iter().map(|(_, n)| n).sum();
        let list: Vec<String> = hit.iter().map(|(name, n)| format!("  {name}: {n} values")).collect();
        bail!(
            "casting to {to} would turn {total} {what} in {} tensors:\n{}\n{advice}",
            hit.len(),
            list.join("\n")
        )
    };
    if !allow_overflow {
        refuse(
            "finite values into inf",
            |l| l.overflow,
            "keep them with --keep-dtype P, or pass --allow-overflow",
        )?;
    }
    if !allow_underflow {
        refuse(
            "non-zero values into zero",
            |l| l.underflow,
            "keep them with --keep-dtype P; for a training checkpoint, write only the weights with --select model_state_dict (optimizer state such as exp_avg_sq holds values this small); or pass --allow-underflow",
        )?;
    }
    Ok(())
}

/// Says which tensors `--keep-norms` kept, so the user can check the structural guess.
fn list_norms_kept(report: &CastReport) {
    let names: Vec<&str> = report
        .kept
        .iter()
        .filter(|k| k.reason == transform::KeepReason::NormModule)
        .map(|k| k.name.as_str())
        .collect();
    if !names.is_empty() {
        eprintln!("kept {} normalization tensors in their dtype:", names.len());
        for name in names {
            eprintln!("  {name}");
        }
    }
}
