//! `ckpt freeze`: report or set requires_grad flags, export them as JSON, or write a pth whose
//! parameters carry them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValuesRef;

use crate::record::{freeze_actions, Record};
use crate::transform::{self, FreezeRule};

use super::out;
use super::output::{finish, warn_globals, OutArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    input: PathBuf,
    /// Set requires_grad=False on parameters matching P (module name or glob); repeatable.
    #[arg(long, value_name = "P")]
    freeze: Vec<String>,
    /// Set requires_grad=True on parameters matching P; repeatable. Later rules win.
    #[arg(long, value_name = "P")]
    unfreeze: Vec<String>,
    /// Write the flags as JSON to this file ('-' for stdout); apply them with
    /// `p.requires_grad_(flags[name])` over `model.named_parameters()` (see the README).
    #[arg(short = 'o', long = "output", value_name = "FLAGS.json")]
    flags: Option<PathBuf>,
    /// Write a .pth whose parameters are saved as nn.Parameter with these flags. torch.load
    /// gives them back, but `model.load_state_dict` copies values only and ignores the flags:
    /// to apply flags to a model, use the JSON of -o.
    #[arg(long, value_name = "OUT")]
    write: Option<PathBuf>,
    /// Replace an existing OUT or FLAGS.json.
    #[arg(long)]
    force: bool,
    /// Flush the outputs to disk before renaming them into place even when they are new files.
    #[arg(long)]
    sync: bool,
    /// Print one JSON object saying what was frozen, unfrozen and written.
    #[arg(long)]
    json: bool,
}

/// The freeze/unfreeze rules in the order they were typed: later ones win.
fn rules_in_order(matches: &clap::ArgMatches) -> Vec<(FreezeRule, String)> {
    let mut rules: Vec<(usize, FreezeRule, String)> = Vec::new();
    for (id, rule) in [("freeze", FreezeRule::Freeze), ("unfreeze", FreezeRule::Unfreeze)] {
        let values: Option<ValuesRef<String>> = matches.get_many(id);
        let indices = matches.indices_of(id);
        if let (Some(values), Some(indices)) = (values, indices) {
            for (v, i) in values.zip(indices) {
                rules.push((i, rule, v.clone()));
            }
        }
    }
    rules.sort_by_key(|r| r.0);
    rules.into_iter().map(|(_, r, p)| (r, p)).collect()
}

pub fn run(args: Args, matches: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
    let rules = rules_in_order(matches);
    if args.json && args.flags.as_deref().is_some_and(|p| p.as_os_str() == "-") {
        anyhow::bail!("--json and -o - would both print JSON on stdout; write the flags to a file, or drop one");
    }
    let out = OutArgs {
        to: Some("pth".into()),
        force: args.force,
        max_shard_size: None,
        dedupe: false,
        sync: args.sync,
        json: args.json,
    };
    let output = args.write.as_deref().map(|o| out.resolve(o)).transpose()?;
    if let Some(o) = &args.write {
        if crate::write::OutFormat::from_path(o) == Some(crate::write::OutFormat::Safetensors) {
            anyhow::bail!(
                "--write: flags live in .pth files (safetensors has no requires_grad); name a .pth/.pt/.bin output"
            );
        }
    }
    let mut ckpt = crate::read::open(&args.input)?;
    if let Some(output) = &output {
        output.check(&ckpt)?;
    }
    let inputs = crate::write::input_paths(&ckpt);
    let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    if let Some(p) = args.flags.as_deref().filter(|p| p.as_os_str() != "-") {
        crate::write::check_output(&inputs, p, args.force)?;
    }
    warn_globals(&args.input, &ckpt);
    let report = transform::try_freeze(&mut ckpt, &rules)?;
    let json = args.json;
    match args.flags.as_deref() {
        Some(p) if p.as_os_str() == "-" => out::json(&report.to_json())?,
        Some(p) => {
            let text = serde_json::to_string_pretty(&report.to_json())? + "\n";
            crate::write::write_text(&inputs, p, &text, args.force, args.sync)?;
        }
        None => {}
    }
    // The summary is the command's answer, so it stays on stdout (unless stdout holds JSON).
    let stdout_is_flags = args.flags.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if !json && !stdout_is_flags {
        out::line(&report.summary())?;
        if let Some(note) = report.note() {
            out::line(&format!("note: {note}"))?;
        }
    }
    let mut record = Record::default();
    for action in freeze_actions(&report) {
        record.push(action);
    }
    if let Some(output) = &output {
        output.write(&ckpt, &mut record)?;
    }
    finish(&record, json, "freeze", &args.input)?;
    Ok(ExitCode::SUCCESS)
}
