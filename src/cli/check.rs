//! `ckpt check`: is each checkpoint sound? Exit 0 when every one is, 1 when any has findings,
//! 2 when any cannot be read at all.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::check::{check, CheckOptions, CheckReport, Finding, Kind};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoints: .pth/.pt/.bin/.ckpt files, safetensors files, *.index.json or shard directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Accept findings of these kinds (comma-separated): nan, inf, crc, header, total-size, sha256.
    #[arg(long, value_name = "KINDS", value_delimiter = ',', value_parser = parse_kind)]
    allow: Vec<Kind>,
    /// Compare every file with its SHA-256 in this manifest (sha256sum's format).
    #[arg(long, value_name = "FILE")]
    sha256: Option<PathBuf>,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!("no finding kind '{s}' (kinds: {})", names.join(", "))
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut options = CheckOptions::new();
    if let Some(m) = &args.sha256 {
        options = options.sha256_manifest(m);
    }
    let mut worst = 0u8;
    let mut reports = Vec::new();
    let (mut hashed, mut checked) = (0, 0);
    for path in &args.paths {
        let shown = path.display().to_string();
        match check(path, &options) {
            Ok(report) => {
                hashed += report.files_hashed();
                checked += 1;
                let (kept, allowed): (Vec<_>, Vec<_>) =
                    report.findings().iter().partition(|f| !args.allow.contains(&f.kind()));
                worst = worst.max(u8::from(!kept.is_empty()));
                if args.json {
                    reports.push(report_json(&shown, &report, &kept, &allowed));
                } else {
                    super::out::print(&report_text(&shown, &report, &kept, &allowed))?;
                }
            }
            Err(e) => {
                worst = 2;
                if args.json {
                    reports.push(json!({"path": shown, "error": e.to_string()}));
                } else {
                    super::out::note(&format!("ckpt: {e}"));
                }
            }
        }
    }
    if let Some(m) = &args.sha256 {
        if hashed == 0 && checked > 0 {
            // An option that compared nothing must not pass for a check that passed.
            anyhow::bail!(
                "{}: --sha256: the manifest lists none of the files checked",
                m.display()
            );
        }
    }
    if args.json {
        super::out::json(&json!({"checks": reports, "status": worst}))?;
    }
    Ok(ExitCode::from(worst))
}

fn report_text(path: &str, r: &CheckReport, kept: &[&Finding], allowed: &[&Finding]) -> String {
    let mut out = String::new();
    let verdict = if kept.is_empty() { "sound" } else { "FINDINGS" };
    let mut what = vec![format!("{} tensors", r.tensors_checked())];
    if r.records_checked() > 0 {
        what.push(format!("{} zip records CRC-checked", r.records_checked()));
    }
    if r.files_hashed() > 0 {
        what.push(format!("{} files against the SHA-256 manifest", r.files_hashed()));
    }
    out.push_str(&format!("{path}: {verdict} ({})\n", what.join(", ")));
    for f in kept {
        out.push_str(&format!("  {:<10} {}: {}\n", f.kind().name(), f.file(), f.what()));
    }
    for f in allowed {
        out.push_str(&format!(
            "  allowed    {} {}: {}\n",
            f.kind().name(),
            f.file(),
            f.what()
        ));
    }
    out
}

fn report_json(path: &str, r: &CheckReport, kept: &[&Finding], allowed: &[&Finding]) -> Value {
    let list = |fs: &[&Finding]| -> Vec<Value> {
        fs.iter()
            .map(|f| json!({"kind": f.kind().name(), "file": f.file(), "what": f.what()}))
            .collect()
    };
    json!({
        "path": path,
        "sound": kept.is_empty(),
        "findings": list(kept),
        "allowed": list(allowed),
        "tensors_checked": r.tensors_checked(),
        "records_checked": r.records_checked(),
        "files_hashed": r.files_hashed(),
        "files": r.files().iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
    })
}
