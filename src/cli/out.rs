//! Everything the commands print goes through here, so that a reader that goes away (`ckpt
//! inspect x --json | head`) ends the command quietly instead of a panic in `println!`.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe fails with EPIPE. That error becomes
//! [`StdoutClosed`], which `main` turns into exit status 141 without a message: the status a shell
//! reports for `cat` or `grep` killed by SIGPIPE, so `set -o pipefail` scripts see ckpt as they
//! see those tools. Not 0: output was lost, and for `diff` 0 would claim "equal" unchecked.

use std::io::{ErrorKind, Write};

/// The reader of stdout has gone away; nothing more can be said to it.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// The exit status for [`StdoutClosed`]: 128 + SIGPIPE, as a shell reports for `cat`.
pub const CLOSED_STATUS: u8 = 141;

/// Writes `text` to stdout as it is.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::anyhow!("cannot write to stdout: {e}")),
    }
}

/// Writes `text` and a newline.
pub fn line(text: &str) -> anyhow::Result<()> {
    print(&format!("{text}\n"))
}

/// Writes one pretty-printed JSON object and a newline.
pub fn json(value: &serde_json::Value) -> anyhow::Result<()> {
    line(&serde_json::to_string_pretty(value)?)
}

/// A message on stderr. A closed stderr is ignored: messages are a courtesy, and losing one must
/// not fail (or panic) a command whose output went through.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
