//! Learning curves from checkpoints alone: the training and validation losses and metrics a run
//! saved, the verdict they support (overfitting, underfitting, a good fit, too short to tell),
//! the epoch early stopping would have stopped at, and the file holding the best epoch.
//!
//! [`read`] finds the curves by content in what the paths hold: a training checkpoint's
//! histories, a series of per-epoch checkpoints, a Hugging Face Trainer `trainer_state.json`, or
//! Lightning `.ckpt` files with their callbacks' state. [`analyze`] pairs the series (train and
//! validation of one quantity), finds the best point, runs Lightning's early-stopping rule and
//! gives the verdict; [`chart`] draws the pair for a terminal.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/curves");
//! use ckpt::curves::{analyze, read, Options};
//!
//! // A training checkpoint that saved train_loss and val_loss lists, epoch by epoch.
//! let run = read(&[dir.join("overfit.pth")])?;
//! let analysis = analyze(&run, &Options::default())?;
//! assert_eq!(analysis.verdict.name(), "overfitting");
//! assert_eq!(analysis.best_x, Some(7.0)); // the validation minimum: epoch 7
//! assert_eq!(analysis.early_stop.stop_x, Some(10.0)); // patience 3
//! println!("{}", ckpt::curves::advice(&analysis, &run, None));
//! # Ok(()) }
//! ```

mod advice;
pub mod chart;
mod early_stop;
mod files;
mod hf;
mod lightning;
mod names;
mod pairing;
mod verdict;
mod walk;

use std::fmt;
use std::path::PathBuf;

pub use advice::advice;
pub use early_stop::{early_stop, EarlyStop};
pub use files::read;
pub use hf::HfState;
pub use lightning::{EarlyStoppingState, LightningState};
pub use pairing::{Primary, SeriesChoiceError};
pub use verdict::{Underfit, Verdict};

/// Which part of the data a series was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Split {
    /// The training data.
    Train,
    /// The validation data (val, valid, eval, dev).
    Val,
    /// The test data.
    Test,
    /// The name says no split.
    Other,
}

impl Split {
    /// The name the JSON report uses.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
            Split::Other => "other",
        }
    }
}

/// What a series' x counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Epochs.
    Epoch,
    /// Optimizer steps.
    Step,
}

impl Axis {
    /// The name the JSON report uses.
    pub fn name(self) -> &'static str {
        match self {
            Axis::Epoch => "epoch",
            Axis::Step => "step",
        }
    }
}

/// Where the curves came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Lists of per-epoch values in one training checkpoint.
    History,
    /// One point per checkpoint file.
    Series,
    /// A Hugging Face Trainer `trainer_state.json`.
    HfTrainer,
    /// Lightning `.ckpt` files (the monitored quantity of their ModelCheckpoint callback).
    Lightning,
}

impl SourceKind {
    /// The name the JSON report uses.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::History => "history",
            SourceKind::Series => "series",
            SourceKind::HfTrainer => "hf-trainer",
            SourceKind::Lightning => "lightning",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One loss or metric over epochs or steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The name as found: `train_loss`, `history.val_acc`, `eval_loss`.
    pub name: String,
    /// The data it was measured on.
    pub split: Split,
    /// The name without its split words: `loss`, `acc`.
    pub quantity: String,
    /// Whether higher values are better (accuracy, F1, AP...).
    pub higher_better: bool,
    /// What x counts.
    pub axis: Axis,
    /// (x, y) in x order; y may be NaN or infinite.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series whose split, quantity and direction follow from its name.
    pub(crate) fn named(name: &str, axis: Axis, points: Vec<(f64, f64)>) -> Series {
        let (split, quantity) = names::classify(name);
        Series {
            name: name.to_string(),
            split,
            higher_better: names::higher_better(&quantity),
            quantity,
            axis,
            points,
        }
    }

    /// A series named `name` of `ys` at epochs 1, 2, ... (for the unit tests).
    #[cfg(test)]
    pub(crate) fn epochs(name: &str, ys: &[f64]) -> Series {
        let points = ys.iter().enumerate().map(|(i, &y)| ((i + 1) as f64, y)).collect();
        Series::named(name, Axis::Epoch, points)
    }

    /// Whether `a` is strictly better than `b` in this series' direction.
    pub fn better(&self, a: f64, b: f64) -> bool {
        if self.higher_better {
            a > b
        } else {
            a < b
        }
    }
}

/// What [`read`] found: the series, where they came from, and what the files said beside them.
#[derive(Debug, Clone)]
pub struct Run {
    /// The kind of source.
    pub source: SourceKind,
    /// Every series found, in name order.
    pub series: Vec<Series>,
    /// Series and Lightning sources: the file each x came from; Trainer runs: the checkpoint-N
    /// folder of each step N saved; in x order.
    pub files: Vec<(f64, PathBuf)>,
    /// History sources: the checkpoint the histories were read from.
    pub history_file: Option<PathBuf>,
    /// Hugging Face Trainer sources: what trainer_state.json says about the best model.
    pub hf: Option<HfState>,
    /// Lightning sources: the callbacks' state in the newest file.
    pub lightning: Option<LightningState>,
    /// How the source was found, and what was passed over and why, one sentence each.
    pub notes: Vec<String>,
}

impl Run {
    /// The file holding the point at `x`, for sources with one point per file.
    pub fn file_at(&self, x: f64) -> Option<&PathBuf> {
        self.files.iter().find(|(fx, _)| *fx == x).map(|(_, p)| p)
    }
}

/// How to analyze a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `--series TRAIN,VAL`: the names of the pair to judge; None to pair by name.
    pub series: Option<(Option<String>, Option<String>)>,
    /// Early stopping: points without improvement before stopping (Lightning's default is 3).
    pub patience: u32,
    /// Early stopping: the least change that counts as an improvement.
    pub min_delta: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            series: None,
            patience: 3,
            min_delta: 0.0,
        }
    }
}

/// The judgement of a run: the pair judged, its best point, the verdict and early stopping.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The series judged.
    pub primary: Primary,
    /// The x of the best point of the main series (validation, else training); None when it
    /// has no finite point.
    pub best_x: Option<f64>,
    /// The verdict, with its numbers.
    pub verdict: Verdict,
    /// Where Lightning's EarlyStopping would have stopped.
    pub early_stop: EarlyStop,
    /// The file holding the best point, for sources with one point per file (for a Trainer
    /// run, see [`Run::file_at`] with `best_x`: its `checkpoint-N` folder, if one was saved).
    pub best_path: Option<PathBuf>,
}

/// Pairs the run's series, judges the primary pair and runs early stopping on it.
///
/// # Errors
/// [`SeriesChoiceError`] when `options.series` names a series the run does not have, or the run
/// has no series to judge.
pub fn analyze(run: &Run, options: &Options) -> Result<Analysis, SeriesChoiceError> {
    let primary = pairing::primary(&run.series, options.series.as_ref())?;
    let main = primary.main(&run.series);
    let train = primary.train.map(|i| &run.series[i]);
    let val = primary.val.map(|i| &run.series[i]);
    let best_x = verdict::best_index(main).map(|k| main.points[k].0);
    let verdict = verdict::judge(train, val);
    // EarlyStopping monitors a validation quantity; a training curve alone never stops it.
    let early_stop = match val {
        Some(val) => early_stop(val, options.patience, options.min_delta),
        None => EarlyStop {
            patience: options.patience,
            min_delta: options.min_delta,
            stop_x: None,
            best_x: None,
            reason: None,
        },
    };
    // Histories lie in one file, and a Trainer's state file names its own best checkpoint
    // (`HfState`); the other sources keep a file per point.
    let best_path = match (&run.source, &run.lightning) {
        (SourceKind::History | SourceKind::HfTrainer, _) => None,
        // One Lightning file is one point: its ModelCheckpoint knows the best file better.
        (SourceKind::Lightning, Some(state)) if run.files.len() == 1 && state.best_model_path.is_some() => state
            .best_model_path
            .as_deref()
            .map(|stated| moved_beside(stated, &run.files[0].1)),
        (SourceKind::Series | SourceKind::Lightning, _) => best_x.and_then(|x| run.file_at(x)).cloned(),
    };
    Ok(Analysis {
        primary,
        best_x,
        verdict,
        early_stop,
        best_path,
    })
}

/// A path a checkpoint states (absolute, from the machine that trained), or the file of the same
/// name beside `beside` when the stated one is not there and that one is: the run's directory
/// was moved or copied.
fn moved_beside(stated: &str, beside: &std::path::Path) -> PathBuf {
    let stated = PathBuf::from(stated);
    if stated.exists() {
        return stated;
    }
    let moved = stated.file_name().and_then(|name| Some(beside.parent()?.join(name)));
    match moved {
        Some(moved) if moved.is_file() => moved,
        _ => stated,
    }
}
