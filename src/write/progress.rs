//! A one-line progress display on stderr while bytes are written, only when stderr is a
//! terminal (no dependency: a carriage-return line, redrawn at most five times a second).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    total: u64,
    done: u64,
    enabled: bool,
    start: Instant,
    last: Option<Instant>,
}

impl Progress {
    /// Shows progress only if `wanted` and stderr is a terminal.
    pub fn new(total: u64, wanted: bool) -> Self {
        Progress {
            total,
            done: 0,
            enabled: wanted && std::io::stderr().is_terminal(),
            start: Instant::now(),
            last: None,
        }
    }

    pub fn hidden() -> Self {
        Progress {
            total: 0,
            done: 0,
            enabled: false,
            start: Instant::now(),
            last: None,
        }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < Duration::from_millis(200)) {
            return;
        }
        self.last = Some(now);
        let pct = (self.done.min(self.total) * 100).checked_div(self.total).unwrap_or(100) as usize;
        let width = 30;
        let filled = pct * width / 100;
        let secs = (now - self.start).as_secs_f64().max(1e-3);
        let line = format!(
            "\rwriting [{}{}] {pct:>3}%  {} / {}  {}/s ",
            "=".repeat(filled),
            " ".repeat(width - filled),
            crate::units::human_bytes(self.done),
            crate::units::human_bytes(self.total),
            crate::units::human_bytes((self.done as f64 / secs) as u64)
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            let _ = std::io::stderr().lock().write_all(b"\r\x1b[2K");
        }
        self.last = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
