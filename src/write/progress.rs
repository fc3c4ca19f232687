//! A progress bar on stderr while tensor bytes are written, compared or hashed (indicatif), shown only when stderr
//! is a terminal: piped or redirected output gets nothing extra.

#[cfg(feature = "cli")]
use std::io::IsTerminal;

#[cfg(feature = "cli")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Without the `cli` feature (no indicatif) the bar is never drawn.
#[cfg(not(feature = "cli"))]
pub struct Progress;

#[cfg(not(feature = "cli"))]
impl Progress {
    pub fn new(_total: u64, _wanted: bool) -> Self {
        Progress
    }
    pub fn add(&mut self, _n: u64) {}
    pub fn finish(&mut self) {}
}

#[cfg(feature = "cli")]
pub struct Progress {
    bar: ProgressBar,
}

#[cfg(feature = "cli")]
impl Progress {
    /// A bar for `total` bytes written, drawn only if `wanted` and stderr is a terminal.
    pub fn new(total: u64, wanted: bool) -> Self {
        Self::labelled("writing", total, wanted)
    }

    /// A bar for `total` bytes of work named `label` ("comparing", "hashing").
    pub fn labelled(label: &str, total: u64, wanted: bool) -> Self {
        let target = if wanted && std::io::stderr().is_terminal() {
            // At most five redraws a second: drawing must not cost what the copy does.
            ProgressDrawTarget::stderr_with_hz(5)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        let template = format!("{label} [{{bar:30}}] {{percent:>3}}%  {{bytes}} / {{total_bytes}}  {{bytes_per_sec}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }

    /// `n` more bytes written.
    pub fn add(&mut self, n: u64) {
        self.bar.inc(n);
    }

    /// Clears the bar.
    pub fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(feature = "cli")]
impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
