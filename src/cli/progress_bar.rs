//! The progress bar on stderr while tensor bytes are written, compared or hashed (indicatif), drawn
//! from the library's progress reports, and only when stderr is a terminal: piped or redirected
//! output gets nothing extra.

use std::io::IsTerminal;

use crate::write::progress::{OnProgress, ProgressReport};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports drawn as a bar on stderr when it is a terminal; otherwise reports go nowhere.
pub fn on_stderr() -> OnProgress {
    if !std::io::stderr().is_terminal() {
        return OnProgress::default();
    }
    let mut bar = Bar(None);
    OnProgress::new(move |report| bar.show(report))
}

/// The bar of the work being reported, if any.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn show(&mut self, report: ProgressReport) {
        let bar = self.0.get_or_insert_with(|| new_bar(report.task, report.total));
        bar.set_position(report.done);
        if report.finished {
            self.clear();
        }
    }

    fn clear(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// A command that ends while work is being reported (an error) leaves no bar behind.
impl Drop for Bar {
    fn drop(&mut self) {
        self.clear();
    }
}

fn new_bar(task: &str, total: u64) -> ProgressBar {
    // At most five redraws a second: drawing must not cost what the copy does.
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(5));
    let template = format!("{task} [{{bar:30}}] {{percent:>3}}%  {{bytes}} / {{total_bytes}}  {{bytes_per_sec}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
