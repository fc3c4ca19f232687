//! Finding the curves in what the paths hold, by content: a Hugging Face Trainer state, one
//! training checkpoint with histories, or a series of checkpoints (Lightning's or any others).

use std::cmp::Ordering;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::lightning::{self, LightningState};
use super::walk::{self, Content};
use super::{hf, Axis, Run, Series, SourceKind};

/// The extensions of checkpoint files in a directory.
const CHECKPOINT_EXTENSIONS: [&str; 4] = ["pth", "pt", "ckpt", "bin"];

/// The largest JSON file read as a Trainer state: a log entry is about 200 bytes, so this holds
/// a million of them; anything larger is not one.
const MAX_STATE_BYTES: u64 = 256 << 20;

/// What was looked for, for the error that says nothing was found.
const LOOKED_FOR: &str = "lists of 2 or more numbers under a loss or metric name (train_loss, history.val_acc, \
     metrics.f1), an epoch or step with scalar losses or metrics, or a Lightning ModelCheckpoint state";

/// Finds the learning curves in `paths`: one training checkpoint, a Lightning `.ckpt`, a
/// `trainer_state.json`, a directory (a Trainer output directory, or one of checkpoints), or
/// several checkpoint files. No pickle is executed.
///
/// # Errors
/// [`Error::Unsupported`] when no series is found (saying what was looked for); the errors of
/// [`crate::open()`] for a checkpoint that cannot be read; [`Error::Malformed`] for a
/// trainer_state.json that is not what the Trainer writes.
pub fn read(paths: &[PathBuf]) -> Result<Run> {
    let mut run = match paths {
        [] => return Err(none_found(Path::new("."), "no path was given")),
        [path] if path.is_dir() => read_dir(path)?,
        [path] => match trainer_state(path)? {
            Some(text) => read_hf(path, &text)?,
            None => read_one(path)?,
        },
        _ => {
            if let Some(dir) = paths.iter().find(|p| p.is_dir()) {
                return Err(Error::Unsupported {
                    path: dir.clone(),
                    what: "a directory among several paths: give the directory alone, or its files".into(),
                });
            }
            read_many(paths)?
        }
    };
    run.series.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(run)
}

fn none_found(path: &Path, why: &str) -> Error {
    Error::Unsupported {
        path: path.to_path_buf(),
        what: format!("no learning curves found ({why}); looked for {LOOKED_FOR}"),
    }
}

fn empty_run(source: SourceKind) -> Run {
    Run {
        source,
        series: Vec::new(),
        files: Vec::new(),
        history_file: None,
        hf: None,
        lightning: None,
        notes: Vec::new(),
    }
}

fn read_dir(dir: &Path) -> Result<Run> {
    if let Some(state) = hf::state_file_in(dir) {
        let text = std::fs::read_to_string(&state).map_err(|e| Error::io(&state, e))?;
        return read_hf(&state, &text);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| CHECKPOINT_EXTENSIONS.iter().any(|c| c.eq_ignore_ascii_case(e)))
        })
        .collect();
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    match files.as_slice() {
        [] => Err(none_found(
            dir,
            "the directory has no trainer_state.json, no checkpoint-N/trainer_state.json and no *.pth, *.pt, \
             *.ckpt or *.bin file",
        )),
        [one] => read_one(one),
        _ => read_many(&files),
    }
}

/// The text of `path` if it is a Trainer state (a JSON object with a `log_history`).
fn trainer_state(path: &Path) -> Result<Option<String>> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 64];
    let n = file.read(&mut head).map_err(|e| Error::io(path, e))?;
    if head[..n].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok(None);
    }
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if size > MAX_STATE_BYTES {
        return Err(Error::Unsupported {
            path: path.to_path_buf(),
            what: format!(
                "a JSON file of {size} bytes: larger than any trainer_state.json ({MAX_STATE_BYTES} at most)"
            ),
        });
    }
    let mut text = String::from_utf8_lossy(&head[..n]).into_owned();
    let mut rest = String::new();
    file.read_to_string(&mut rest).map_err(|e| Error::io(path, e))?;
    text.push_str(&rest);
    Ok(hf::is_state(&text).then_some(text))
}

fn read_hf(state: &Path, text: &str) -> Result<Run> {
    let (series, hf) = hf::read(state, text)?;
    let mut run = empty_run(SourceKind::HfTrainer);
    run.notes
        .push(format!("Hugging Face Trainer state {}", state.display()));
    run.files = checkpoint_folders(state);
    run.series = series;
    run.hf = Some(hf);
    if run.series.is_empty() {
        return Err(none_found(state, "its log_history has no loss and no eval_* metric"));
    }
    Ok(run)
}

/// The `checkpoint-N/` folders of the Trainer run a state file belongs to, by step N.
fn checkpoint_folders(state: &Path) -> Vec<(f64, PathBuf)> {
    let Some(mut run_dir) = state.parent() else {
        return Vec::new();
    };
    let in_checkpoint = run_dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("checkpoint-"));
    if in_checkpoint {
        run_dir = run_dir.parent().unwrap_or(Path::new("."));
    }
    let dir = if run_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        run_dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut folders: Vec<(f64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n: u64 = e.file_name().to_str()?.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().is_dir().then(|| (n as f64, run_dir.join(e.file_name())))
        })
        .collect();
    folders.sort_by(|a, b| a.0.total_cmp(&b.0));
    folders
}

/// One checkpoint file: its histories, else its Lightning state, else its scalars (one point).
fn read_one(path: &Path) -> Result<Run> {
    let ckpt = crate::open(path)?;
    let content = walk::content(&ckpt)?;
    let state = lightning::state(&ckpt)?;
    if !content.histories.is_empty() {
        return Ok(history_run(path, content, None));
    }
    let one = [(path.to_path_buf(), content, state)];
    if let Some(run) = lightning_run(&one) {
        return Ok(run);
    }
    if !one[0].1.scalars.is_empty() {
        return Ok(series_run(&one));
    }
    Err(none_found(path, "the file holds none of them"))
}

fn history_run(path: &Path, content: Content, why: Option<String>) -> Run {
    let mut run = empty_run(SourceKind::History);
    run.notes
        .push(why.unwrap_or_else(|| format!("histories in {}", path.display())));
    run.history_file = Some(path.to_path_buf());
    run.series = content
        .histories
        .into_iter()
        .map(|(name, values)| {
            let points = values
                .into_iter()
                .enumerate()
                .map(|(i, y)| ((i + 1) as f64, y))
                .collect();
            Series::named(&name, Axis::Epoch, points)
        })
        .collect();
    run
}

/// Several checkpoint files: Lightning's monitored quantity if they are Lightning's, else one
/// point per file of every scalar, else the histories of the newest file.
fn read_many(paths: &[PathBuf]) -> Result<Run> {
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let ckpt = crate::open(path)?;
        files.push((path.clone(), walk::content(&ckpt)?, lightning::state(&ckpt)?));
    }
    if let Some(run) = lightning_run(&files) {
        return Ok(run);
    }
    if files.iter().any(|(_, c, _)| !c.scalars.is_empty()) {
        return Ok(series_run(&files));
    }
    // Scripts that save the histories so far in every file: the newest file's are the longest.
    let newest = files
        .iter()
        .enumerate()
        .filter(|(_, (_, c, _))| !c.histories.is_empty())
        .max_by(|(i, (_, a, _)), (j, (_, b, _))| {
            let key = |c: &Content| {
                (
                    c.epoch.unwrap_or(f64::NEG_INFINITY),
                    c.step.unwrap_or(f64::NEG_INFINITY),
                )
            };
            let (ka, kb) = (key(a), key(b));
            ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(i.cmp(j))
        })
        .map(|(i, _)| i);
    match newest {
        Some(i) => {
            let (path, content, _) = files.swap_remove(i);
            let why = format!(
                "the files hold histories but no scalar losses or metrics: histories of the newest, {}",
                path.display()
            );
            Ok(history_run(&path, content, Some(why)))
        }
        None => Err(none_found(
            &paths[0],
            &format!("none of the {} files holds any", paths.len()),
        )),
    }
}

/// Orders files by where they lie on the run: by epoch if every file holds one, else by step,
/// else by name (numbered 1..n). Returns (x, index into `files`) in x order, the axis, and
/// notes on files passed over (a second file at an x already taken, such as Lightning's
/// `last.ckpt`).
fn order(files: &[&(PathBuf, Content, Option<LightningState>)], notes: &mut Vec<String>) -> (Vec<(f64, usize)>, Axis) {
    let mut by_name: Vec<usize> = (0..files.len()).collect();
    by_name.sort_by(|&a, &b| natural_cmp(&files[a].0.to_string_lossy(), &files[b].0.to_string_lossy()));
    let (mut xs, axis): (Vec<(f64, usize)>, Axis) = if files.iter().all(|f| f.1.epoch.is_some()) {
        (
            by_name
                .iter()
                .map(|&i| (files[i].1.epoch.unwrap_or_default(), i))
                .collect(),
            Axis::Epoch,
        )
    } else if files.iter().all(|f| f.1.step.is_some()) {
        (
            by_name
                .iter()
                .map(|&i| (files[i].1.step.unwrap_or_default(), i))
                .collect(),
            Axis::Step,
        )
    } else {
        if files.len() > 1 {
            notes.push("not every file holds an epoch or step: files numbered 1..n in name order".into());
        }
        (
            by_name.iter().enumerate().map(|(n, &i)| ((n + 1) as f64, i)).collect(),
            Axis::Epoch,
        )
    };
    xs.sort_by(|a, b| a.0.total_cmp(&b.0)); // stable: name order within one x
    let mut kept: Vec<(f64, usize)> = Vec::with_capacity(xs.len());
    for (x, i) in xs {
        match kept.last() {
            Some(&(last, j)) if last == x => notes.push(format!(
                "{} is at {} {x} like {}: passed over",
                files[i].0.display(),
                axis.name(),
                files[j].0.display()
            )),
            _ => kept.push((x, i)),
        }
    }
    (kept, axis)
}

/// One point per file of every scalar loss or metric.
fn series_run(all: &[(PathBuf, Content, Option<LightningState>)]) -> Run {
    let mut run = empty_run(SourceKind::Series);
    let mut files = Vec::with_capacity(all.len());
    for file in all {
        if file.1.scalars.is_empty() {
            run.notes
                .push(format!("{}: no scalar loss or metric: passed over", file.0.display()));
        } else {
            files.push(file);
        }
    }
    let (xs, axis) = order(&files, &mut run.notes);
    run.notes
        .insert(0, format!("a series of {} checkpoints, one point per file", xs.len()));
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for &(x, i) in &xs {
        for (name, y) in &files[i].1.scalars {
            match series.iter_mut().find(|(n, _)| n == name) {
                Some((_, points)) => points.push((x, *y)),
                None => series.push((name.clone(), vec![(x, *y)])),
            }
        }
        run.files.push((x, files[i].0.clone()));
    }
    run.series = series.into_iter().map(|(n, p)| Series::named(&n, axis, p)).collect();
    run
}

/// One point per Lightning file: the ModelCheckpoint's monitored value, at the file's epoch as
/// Lightning stores it (0-based). None unless some file has a monitored quantity.
fn lightning_run(files: &[(PathBuf, Content, Option<LightningState>)]) -> Option<Run> {
    let newest = files
        .iter()
        .filter(|f| f.2.as_ref().is_some_and(|s| s.monitor.is_some()))
        .max_by(|a, b| {
            let key = |c: &Content| {
                (
                    c.epoch.unwrap_or(f64::NEG_INFINITY),
                    c.step.unwrap_or(f64::NEG_INFINITY),
                )
            };
            let (ka, kb) = (key(&a.1), key(&b.1));
            ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        })?;
    let state = newest.2.clone()?;
    let monitor = state.monitor.clone()?;
    let mut run = empty_run(SourceKind::Lightning);
    let (xs, _) = order(&files.iter().collect::<Vec<_>>(), &mut run.notes);
    run.notes.insert(
        0,
        format!("Lightning checkpoints: ModelCheckpoint's monitored {monitor}, one point per file"),
    );
    let mut points = Vec::new();
    for (x, i) in xs {
        let (path, _, s) = &files[i];
        match s
            .as_ref()
            .filter(|s| s.monitor.as_deref() == Some(&monitor))
            .and_then(|s| s.current_score)
        {
            Some(y) => {
                points.push((x, y));
                run.files.push((x, path.clone()));
            }
            None => run.notes.push(format!(
                "{}: no current score of {monitor}: passed over",
                path.display()
            )),
        }
    }
    let mut series = Series::named(&monitor, Axis::Epoch, points);
    if let Some(mode) = &state.mode {
        // The callback's mode says the direction; it outranks the name.
        series.higher_better = mode == "max";
    }
    run.series = vec![series];
    run.lightning = Some(state);
    Some(run)
}

/// Compares names with runs of digits as numbers: `ckpt_2.pth` before `ckpt_10.pth`.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.len() - a.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let db = b.len() - b.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let (na, nb) = (a[..da].trim_start_matches('0'), b[..db].trim_start_matches('0'));
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(&y);
                }
                a = &a[x.len_utf8()..];
                b = &b[y.len_utf8()..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;
    use std::cmp::Ordering;

    #[test]
    fn numbers_in_names_sort_as_numbers() {
        assert_eq!(natural_cmp("ckpt_2.pth", "ckpt_10.pth"), Ordering::Less);
        assert_eq!(natural_cmp("epoch=9.ckpt", "epoch=10.ckpt"), Ordering::Less);
        assert_eq!(natural_cmp("a", "b"), Ordering::Less);
        assert_eq!(natural_cmp("x01", "x1"), Ordering::Equal);
    }
}
