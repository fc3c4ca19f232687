//! `ckpt curves`: the learning curves a run's checkpoints hold, the verdict they support
//! (overfitting, underfitting, good fit, too short), early stopping, and the best checkpoint.

mod plot;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::curves::{self, Options, SourceKind};

#[derive(clap::Args)]
pub struct Args {
    /// A training checkpoint with histories, several per-epoch checkpoints, a directory of them,
    /// Lightning .ckpt files, or a Hugging Face Trainer output directory or trainer_state.json.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The pair to judge, as TRAIN,VAL series names (`TRAIN,` or `,VAL` for one alone).
    #[arg(long, value_name = "TRAIN,VAL")]
    series: Option<String>,
    /// Early stopping: validation checks without improvement before stopping (Lightning's default).
    #[arg(long, value_name = "N", default_value_t = 3)]
    patience: u32,
    /// Early stopping: the least change that counts as an improvement.
    #[arg(long, value_name = "D", default_value_t = 0.0, allow_negative_numbers = true)]
    min_delta: f64,
    /// Also draw the judged curves, the best point and the early stop into FILE (.svg or .png).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Print one JSON object instead of the report.
    #[arg(long, conflicts_with = "best")]
    json: bool,
    /// Print only the path of the file holding the best point (`cp $(ckpt curves --best runs/) best.pth`).
    #[arg(long)]
    best: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let options = Options {
        series: args.series.as_deref().map(parse_series).transpose()?,
        patience: args.patience,
        min_delta: args.min_delta,
    };
    if !options.min_delta.is_finite() || options.min_delta < 0.0 {
        bail!("--min-delta {}: give a finite number of 0 or more", args.min_delta);
    }
    if options.patience == 0 {
        bail!("--patience 0: early stopping needs a patience of 1 or more");
    }
    let plot_kind = args.plot.as_deref().map(plot::kind).transpose()?;
    let shown = args
        .paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");

    let run = curves::read(&args.paths)?;
    let analysis = curves::analyze(&run, &options).with_context(|| format!("{shown}: --series"))?;

    if let (Some(path), Some(kind)) = (&args.plot, plot_kind) {
        let title = format!("{shown}: {}", analysis.verdict.name());
        plot::write(path, kind, &run, &analysis, &title)?;
    }
    let dropout = model_dropout(&run)?;
    let dropout = dropout.as_deref();
    if args.best {
        let Some(best) = best_file(&run, &analysis) else {
            bail!("{shown}: --best: {}", no_best_file(&run));
        };
        super::out::line(&best.display().to_string())?;
    } else if args.json {
        super::out::json(&report::json(&args.paths, &run, &analysis, dropout))?;
    } else {
        super::out::print(&report::text(&shown, &run, &analysis, dropout, args.plot.as_deref()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The dropout modules (path, p) of the model the run's newest checkpoint holds, for the
/// underfitting advice; None where it holds no module objects (a state dict) or the run is a
/// Trainer log. A rate the file does not hold (a traced module) is left out.
fn model_dropout(run: &curves::Run) -> anyhow::Result<Option<Vec<(String, f64)>>> {
    let Some(file) = run.history_file.as_ref().or(run.files.last().map(|(_, p)| p)) else {
        return Ok(None);
    };
    if run.source == SourceKind::HfTrainer {
        return Ok(None); // its files are checkpoint folders; the log names no model
    }
    let ckpt = crate::open(file)?;
    if ckpt.modules.is_empty() {
        return Ok(None);
    }
    let rates = crate::architecture::dropout_rates(&ckpt);
    Ok(Some(rates.into_iter().filter_map(|d| Some((d.module, d.p?))).collect()))
}

/// `--series TRAIN,VAL`; either side may be empty, not both.
fn parse_series(text: &str) -> anyhow::Result<(Option<String>, Option<String>)> {
    let Some((train, val)) = text.split_once(',') else {
        bail!("--series {text}: give TRAIN,VAL (or TRAIN, or ,VAL for one series alone)");
    };
    let name = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let (train, val) = (name(train), name(val));
    if train.is_none() && val.is_none() {
        bail!("--series {text}: name at least one series");
    }
    Ok((train, val))
}

/// What `--best` prints: the file holding the best point, or for a Trainer run the
/// `checkpoint-N` folder of the best step.
pub(super) fn best_file<'a>(run: &'a curves::Run, analysis: &'a curves::Analysis) -> Option<&'a PathBuf> {
    match run.source {
        SourceKind::HfTrainer => analysis.best_x.and_then(|x| run.file_at(x)),
        _ => analysis.best_path.as_ref(),
    }
}

/// Why a run has no file for `--best`.
fn no_best_file(run: &curves::Run) -> String {
    match run.source {
        SourceKind::History => format!(
            "the curves are histories in one file ({}), which has no per-epoch files to choose from",
            run.history_file
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string())
        ),
        SourceKind::HfTrainer => "no checkpoint-N folder holds the best step".to_string(),
        SourceKind::Series | SourceKind::Lightning => "no file holds a finite value to choose by".to_string(),
    }
}
