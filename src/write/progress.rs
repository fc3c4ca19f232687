//! A progress bar on stderr while tensor bytes are written, compared or hashed (indicatif), shown only when stderr
//! is a terminal: piped or redirected output gets nothing extra.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

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

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
