//! The `ckpt` command line. Each subcommand turns its raw arguments into a resolved
//! configuration (globs compiled, dtypes and sizes parsed) before anything is read; errors print
//! as "ckpt: <file>: <what is wrong>" and exit with status 2.

mod cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (cli, matches) = cmd::parse();
    match cmd::run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ckpt: {e:#}");
            ExitCode::from(2)
        }
    }
}
