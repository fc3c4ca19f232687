//! The `ckpt` command line. Each subcommand turns its raw arguments into a resolved
//! configuration (globs compiled, dtypes and sizes parsed) before anything is read; errors print
//! as "ckpt: <file>: <what is wrong>" and exit with status 2.

mod cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (cli, matches) = cmd::parse();
    match cmd::run(cli, &matches) {
        Ok(code) => code,
        Err(e) if e.is::<cmd::out::StdoutClosed>() => ExitCode::from(cmd::out::CLOSED_STATUS),
        Err(e) => {
            cmd::out::note(&format!("ckpt: {}", message(&e)));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once. The library's errors already end with their cause
/// ("x.pth: No such file or directory (os error 2)"), so a cause whose text the message already
/// ends with is not repeated; a cause that adds something is appended.
fn message(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.ends_with(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
