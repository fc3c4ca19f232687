//! What the writing commands share: choosing the output format, refusing to clobber, writing,
//! and warning about what a checkpoint's pickles reference.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

use crate::model::Checkpoint;
use crate::record::{Action, Record, Written};
use crate::transform::Losses;
use crate::write::{self, OutFormat, WriteOptions, WriteReport};

/// Output options every writing command takes.
#[derive(clap::Args, Debug)]
pub struct OutArgs {
    /// Output format; by default from OUT's extension (.safetensors, or .pth/.pt/.bin/.ckpt);
    /// safetensors for a directory OUT.
    #[arg(long, value_name = "pth|safetensors")]
    pub to: Option<String>,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Split into Hugging Face shards of at most SIZE (e.g. 5GB, 500MB, 2GiB) plus an index, beside
    /// OUT (x-00001-of-0000N.safetensors, x.safetensors.index.json) or in a directory OUT; one
    /// file and no index when everything fits.
    #[arg(long, value_name = "SIZE")]
    pub max_shard_size: Option<String>,
    /// safetensors: keep one name per set of tied tensors, recording the others in __metadata__.
    #[arg(long)]
    pub dedupe: bool,
    /// Flush the output to disk before renaming it into place even when it is a new file, so it
    /// survives a crash or power cut right after (an output that replaces a file always is).
    #[arg(long)]
    pub sync: bool,
    /// Print one JSON object saying what was done (renamed, cast, kept, dropped ...) and written.
    #[arg(long)]
    pub json: bool,
}

/// The resolved output: where, what format, how.
pub struct Output {
    pub path: PathBuf,
    pub options: WriteOptions,
}

impl OutArgs {
    pub fn resolve(&self, out: &Path) -> anyhow::Result<Output> {
        let format = match self.to.as_deref() {
            Some("pth" | "pt" | "bin" | "torch") => OutFormat::Pth,
            Some("safetensors" | "st") => OutFormat::Safetensors,
            Some(other) => bail!("--to {other}: expected pth or safetensors"),
            // A directory gets what save_pretrained writes by default, whatever the input.
            None if write::shard::is_dir_name(out) => OutFormat::Safetensors,
            None => OutFormat::from_path(out).ok_or_else(|| {
                anyhow!(
                    "{}: cannot tell the output format from the name; use --to pth|safetensors (or end a directory with /)",
                    out.display()
                )
            })?,
        };
        let max_shard_size = match &self.max_shard_size {
            Some(s) => Some(
                write::parse_size(s)
                    .filter(|&n| n > 0)
                    .ok_or_else(|| anyhow!("--max-shard-size {s}: expected a size such as 5GB, 500MB or 2GiB"))?,
            ),
            None => None,
        };
        let mut options = WriteOptions::new(format);
        options.force = self.force;
        options.dedupe = self.dedupe;
        options.max_shard_size = max_shard_size;
        options.on_progress = super::progress_bar::on_stderr();
        options.durable = self.sync;
        Ok(Output {
            path: out.to_path_buf(),
            options,
        })
    }
}

impl Output {
    /// Refuses before any work is done: OUT (or the one file a directory OUT gets) is one of the
    /// inputs, or exists without --force.
    pub fn check(&self, ckpt: &Checkpoint) -> anyhow::Result<()> {
        let inputs = write::input_paths(ckpt);
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        write::check_output(&inputs, &self.path, self.options.force)?;
        // A directory without a shard size gets one known file: checked now, not after the work.
        let layout = write::shard::Layout::for_output(&self.path, &self.options);
        if let Some(single) = layout
            .and_then(|l| l.single)
            .filter(|_| self.options.max_shard_size.is_none())
        {
            write::check_output(&inputs, &single, self.options.force)?;
        }
        Ok(())
    }

    /// Writes the checkpoint and adds what was written to `record`.
    pub fn write(&self, ckpt: &Checkpoint, record: &mut Record) -> anyhow::Result<()> {
        let report = write::write(ckpt, &self.path, &self.options)?;
        self.written(record, report);
        Ok(())
    }

    /// Writes `ckpt` as a cast output: `judge` gets what the cast loses, per tensor, and the
    /// output is renamed into place only if it returns Ok.
    pub fn write_judging_losses(
        &self,
        ckpt: &Checkpoint,
        record: &mut Record,
        judge: impl FnOnce(&[(String, Losses)]) -> anyhow::Result<()> + Send,
    ) -> anyhow::Result<()> {
        // Where the count cannot be taken in the writing pass it runs beside the write (a
        // safetensors write reads ahead on one thread and writes on another): on the cores
        // those leave, one at least.
        let threads = crate::pass::threads().saturating_sub(2).max(1);
        let report = write::write_judging_losses(ckpt, &self.path, &self.options, threads, judge)?;
        self.written(record, report);
        Ok(())
    }

    fn written(&self, record: &mut Record, report: WriteReport) {
        record.written = Some(Written {
            format: self.options.format,
            report,
        });
    }
}

/// Adds an action to the record and, for people, says it on stderr (stdout is kept for what a
/// script reads: the written line, or the JSON object).
pub fn did(record: &mut Record, action: impl Into<Action>, json: bool) {
    let action = action.into();
    if !json && !action.summary.is_empty() {
        super::out::note(&action.summary);
    }
    record.push(action);
}

/// Ends a writing command: with `--json` the whole record as one object, else the written line.
pub fn finish(record: &Record, json: bool, command: &str, input: &Path) -> anyhow::Result<()> {
    if json {
        return super::out::json(&record.to_json(command, &input.display().to_string()));
    }
    match &record.written {
        Some(w) => super::out::line(&w.to_text()),
        None => Ok(()),
    }
}

/// Warns on stderr when the input's pickles call something dangerous (what `ckpt scan` calls
/// dangerous: a denylisted name, or an unknown callable the pickle calls). ckpt never runs it,
/// and writers never write it. The globals and their uses were recorded when the checkpoint was
/// read, so nothing is read again; `ckpt scan` also sees calls hidden in arguments and payloads.
pub fn warn_globals(path: &Path, ckpt: &Checkpoint) {
    let torchscript = ckpt.format == crate::model::Format::TorchScript;
    let names: Vec<String> = crate::scan::dangerous_globals(&ckpt.globals, torchscript)
        .into_iter()
        .filter(|w| w.verdict == crate::scan::Verdict::Dangerous)
        .map(|w| w.name)
        .collect();
    if !names.is_empty() {
        super::out::note(&format!(
            "ckpt: warning: {}: its pickle calls {} (dangerous; ckpt did not run it). `ckpt scan` tells more.",
            path.display(),
            names.join(", ")
        ));
    }
}
