//! Progress of long work (writing, comparing, hashing tensor bytes), reported to a callback that
//! the caller installs ([`OnProgress`]). The library draws nothing itself: the `ckpt` binary turns
//! the reports into a bar on stderr.

use std::fmt;
use std::sync::{Arc, Mutex};

/// How far one piece of work has come: `done` of `total` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressReport {
    /// What is being done: "writing", "comparing" or "hashing".
    pub task: &'static str,
    /// Bytes done so far.
    pub done: u64,
    /// Bytes the work comes to.
    pub total: u64,
    /// The last report of this piece of work: it completed (then `done == total`) or stopped
    /// early on an error.
    pub finished: bool,
}

type Callback = dyn FnMut(ProgressReport) + Send;

/// Where progress reports go: nowhere (the default), or to a callback. A piece of work reports
/// when it starts (`done` 0), then at most about a thousand times as it goes, then once
/// `finished`; a consumer need not throttle further unless drawing is costly.
#[derive(Clone, Default)]
pub struct OnProgress(Option<Arc<Mutex<Callback>>>);

impl OnProgress {
    /// Reports go to `callback`.
    pub fn new(callback: impl FnMut(ProgressReport) + Send + 'static) -> Self {
        OnProgress(Some(Arc::new(Mutex::new(callback))))
    }

    /// Starts reporting a piece of work of `total` bytes.
    pub(crate) fn start(&self, task: &'static str, total: u64) -> Progress {
        let mut progress = Progress {
            callback: self.0.clone(),
            task,
            done: 0,
            total,
            reported: 0,
            step: total.div_ceil(1000).max(1),
            finished: false,
        };
        progress.report();
        progress
    }
}

impl fmt::Debug for OnProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "OnProgress(callback)"
        } else {
            "OnProgress(none)"
        })
    }
}

/// One piece of work being reported: counts the bytes done and calls back once a thousandth of
/// the total has built up since the last report, so a writer can count every chunk cheaply.
/// Dropped before [`Progress::finish`] (an error), it still sends the finished report.
pub(crate) struct Progress {
    callback: Option<Arc<Mutex<Callback>>>,
    task: &'static str,
    done: u64,
    total: u64,
    /// `done` as last reported.
    reported: u64,
    /// Bytes between reports.
    step: u64,
    finished: bool,
}

impl Progress {
    /// `n` more bytes done.
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if self.done - self.reported >= self.step {
            self.report();
        }
    }

    /// The work is over: sends the finished report.
    pub fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.report();
        }
    }

    fn report(&mut self) {
        self.reported = self.done;
        let Some(callback) = &self.callback else {
            return;
        };
        let report = ProgressReport {
            task: self.task,
            done: self.done,
            total: self.total,
            finished: self.finished,
        };
        // A callback that panicked once is still called: a progress display is no reason to fail.
        let mut callback = callback.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        callback(report);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_start_a_bounded_number_of_steps_and_the_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let hook = OnProgress::new(move |r| sink.lock().unwrap().push(r));
        let total = 10_000_000;
        let mut p = hook.start("writing", total);
        for _ in 0..total / 1000 {
            p.add(1000);
        }
        p.finish();
        drop(p);
        let seen = seen.lock().unwrap();
        assert!(seen.len() <= 1002, "{} reports", seen.len());
        assert_eq!((seen[0].done, seen[0].finished), (0, false));
        assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
        let last = seen.last().unwrap();
        assert_eq!(
            (last.task, last.done, last.total, last.finished),
            ("writing", total, total, true)
        );
        assert_eq!(seen.iter().filter(|r| r.finished).count(), 1);
    }

    #[test]
    fn work_dropped_early_still_reports_its_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let hook = OnProgress::new(move |r| sink.lock().unwrap().push(r));
        let mut p = hook.start("comparing", 100);
        p.add(40);
        drop(p);
        let last = *seen.lock().unwrap().last().unwrap();
        assert_eq!((last.done, last.finished), (40, true));
    }
}
