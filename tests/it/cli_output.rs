//! What the binary prints and how it ends: a closed pipe, error messages, `--json` on writing
//! commands, the `--hash` column, scan's call arguments, `verify` in a build without libtorch.

use std::io::Read;
use std::process::Stdio;

use assert_cmd::Command;
use serde_json::Value as Json;

use crate::common::{expected, fixtures_dir};

fn ckpt() -> Command {
    Command::cargo_bin("ckpt").expect("binary builds")
}

fn fixture(name: &str) -> String {
    fixtures_dir().join(name).display().to_string()
}

fn stderr_of(assert: assert_cmd::assert::Assert) -> String {
    String::from_utf8(assert.get_output().stderr.clone()).unwrap()
}

fn stdout_json(args: &[&str]) -> Json {
    let out = ckpt().args(args).assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).expect("one JSON object on stdout")
}

/// A safetensors file whose `inspect --json` is far larger than a pipe's buffer (64 KiB), so the
/// writer is still writing when the reader goes away.
fn big_checkpoint(dir: &std::path::Path) -> std::path::PathBuf {
    let data = [0u8; 4];
    let views: Vec<(String, safetensors::tensor::TensorView)> = (0..4000)
        .map(|i| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &data).unwrap();
            (format!("layers.{i}.weight"), v)
        })
        .collect();
    let path = dir.join("big.safetensors");
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

#[test]
fn a_closed_stdout_ends_every_printing_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let big = big_checkpoint(dir.path());
    let big = big.to_str().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("ckpt");
    let commands: [&[&str]; 4] = [
        &["inspect", "--json", big],
        &["inspect", big],
        &["diff", "--json", big, big],
        &["scan", "--json", "--verbose", big],
    ];
    for args in commands {
        // The issue saw a panic 13 times in 20: repeat, since it depends on timing.
        for _ in 0..10 {
            let mut child = std::process::Command::new(&bin)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut first = [0u8; 16];
            child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then closed
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            let status = child.wait().unwrap();
            assert_eq!(err, "", "{args:?}: nothing on stderr");
            // 141 when the write met the closed pipe; 0 if it all fit before the close.
            assert!(matches!(status.code(), Some(141) | Some(0)), "{args:?}: {status}");
        }
    }
    // inspect --json of this file cannot fit a pipe: the closed pipe is always met.
    let mut child = std::process::Command::new(&bin)
        .args(["inspect", "--json", big])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(141));
}

#[test]
fn an_error_says_its_cause_once() {
    let err = stderr_of(ckpt().args(["inspect", "/nonexistent/x.pth"]).assert().code(2));
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.starts_with("ckpt: /nonexistent/x.pth: "), "{err}");
}

#[test]
fn a_missing_output_directory_names_the_output_not_the_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no/such/dir/out.safetensors");
    let err = stderr_of(
        ckpt()
            .args(["convert", &fixture("cnn_state_dict.pth"), out.to_str().unwrap()])
            .assert()
            .code(2),
    );
    assert!(err.contains(&format!("{}: cannot write", out.display())), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains("ckpt-tmp"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[cfg(not(feature = "tch"))]
#[test]
fn verify_without_libtorch_says_how_to_build_it() {
    for args in [
        &["verify", "x.pth"][..],
        &["verify", "--device", "cuda", "x.pth"],
        &["verify"],
    ] {
        let err = stderr_of(ckpt().args(args).assert().code(2));
        assert!(
            err.contains("--features tch") && err.contains("scripts/build-tch.sh"),
            "{err}"
        );
        assert!(!err.contains("unrecognized subcommand"), "{err}");
    }
}

#[test]
fn inspect_hash_is_its_own_aligned_column() {
    let out = ckpt()
        .args(["inspect", "--hash", &fixture("cnn_state_dict.pth")])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    let torch = &expected()["fixtures"]["cnn_state_dict.pth"]["tensors"];
    let header = text.lines().find(|l| l.starts_with("name ")).expect("a table");
    let column = header.find("sha256").expect("a sha256 column");
    for t in torch.as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap();
        let sha = t["sha256"].as_str().unwrap();
        assert_eq!(row.get(column..column + 64), Some(sha), "{row}");
    }
}

#[test]
fn inspect_filter_matching_nothing_prints_no_blank_lines() {
    for extra in [&[][..], &["--tree"]] {
        let out = ckpt()
            .args(["inspect", "--filter", "nothing.*", &fixture("training_checkpoint.pth")])
            .args(extra)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().all(|l| !l.trim().is_empty()), "{text}");
        assert!(text.contains("tensors   0 of 45 match the filter"), "{text}");
    }
}

#[test]
fn writing_commands_say_what_they_did_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let dp = fixture("dataparallel.pth");
    let torch = &expected()["fixtures"]["dataparallel.pth"]["tensors"];
    let floats = torch
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["dtype"] == "float32")
        .count();
    let out = dir.path().join("plain.safetensors");
    let r = stdout_json(&[
        "convert",
        "--json",
        "--strip-prefix",
        "module.",
        "--dtype",
        "bf16",
        &dp,
        out.to_str().unwrap(),
    ]);
    assert_eq!(r["command"], "convert");
    let action = |name: &str| {
        r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["action"] == name)
            .cloned()
    };
    let renamed = action("renamed").unwrap();
    assert_eq!(renamed["count"], 15);
    assert_eq!(
        renamed["items"][0],
        serde_json::json!({"from": "module.conv1.weight", "to": "conv1.weight"})
    );
    assert_eq!(action("cast").unwrap()["count"], floats);
    assert_eq!(action("cast").unwrap()["to"], "bfloat16");
    assert_eq!(action("kept").unwrap()["count"], 15 - floats);
    let written = &r["written"];
    assert_eq!(written["files"][0], out.display().to_string());
    assert_eq!(written["tensors"], 15);
    assert_eq!(written["bytes"], std::fs::metadata(&out).unwrap().len());

    let dropped_out = dir.path().join("headless.pth");
    let r = stdout_json(&[
        "drop-layers",
        "--json",
        "--pattern",
        "fc3",
        &fixture("cnn_state_dict.pth"),
        dropped_out.to_str().unwrap(),
    ]);
    let dropped = &r["actions"][0];
    assert_eq!(
        (dropped["action"].as_str(), dropped["count"].as_u64()),
        (Some("dropped"), Some(2))
    );
    assert_eq!(dropped["items"], serde_json::json!(["fc3.weight", "fc3.bias"]));
    assert_eq!(dropped["remaining"], 13);
    assert_eq!(r["written"]["tensors"], 13);

    let frozen_out = dir.path().join("frozen.pth");
    let r = stdout_json(&[
        "freeze",
        "--json",
        "--freeze",
        "conv1",
        &fixture("cnn_model.pth"),
        "--write",
        frozen_out.to_str().unwrap(),
    ]);
    let frozen = r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "frozen")
        .unwrap();
    assert_eq!(frozen["items"], serde_json::json!(["conv1.weight", "conv1.bias"]));
    assert_eq!(r["written"]["format"], "pth");
    // One JSON object on stdout, never two.
    let err = stderr_of(
        ckpt()
            .args(["freeze", "--json", "-o", "-", &fixture("cnn_model.pth")])
            .assert()
            .code(2),
    );
    assert!(err.contains("--json and -o -"), "{err}");
    // A dry run writes nothing and says so.
    let r = stdout_json(&[
        "drop-layers",
        "--json",
        "--dry-run",
        "--pattern",
        "fc3",
        &fixture("cnn_state_dict.pth"),
    ]);
    assert_eq!(r["written"], Json::Null);
    assert_eq!(r["actions"][0]["dry_run"], true);
}

#[test]
fn scan_shows_what_a_dangerous_call_would_run() {
    // fixtures/hostile/generate.py: os.system(CMD) and subprocess.Popen(["echo", ...]).
    let r = stdout_json_code(&["scan", "--json", &fixture("hostile/reduce_os_system.pth")], 1);
    let finding = &r["files"][0]["findings"][0];
    assert_eq!(finding["arguments"], "('echo ckpt-hostile-fixture')");
    assert!(finding["message"]
        .as_str()
        .unwrap()
        .ends_with("posix.system('echo ckpt-hostile-fixture')"));
    let out = ckpt()
        .args(["scan", &fixture("hostile/subprocess_popen.pth")])
        .assert()
        .code(1);
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("subprocess.Popen(['echo', 'ckpt-hostile-fixture'])"),
        "{text}"
    );
}

#[test]
fn scan_escapes_and_cuts_a_call_argument() {
    // os.system with an argument holding an escape sequence, a newline and 300 more characters.
    let dir = tempfile::tempdir().unwrap();
    let arg = format!("echo \u{1b}[31mred\nrm {}", "x".repeat(300));
    let mut pickle = b"\x80\x02cos\nsystem\n".to_vec();
    pickle.push(b'X');
    pickle.extend((arg.len() as u32).to_le_bytes());
    pickle.extend(arg.as_bytes());
    pickle.extend(b"\x85R.");
    let path = dir.path().join("call.pkl");
    std::fs::write(&path, pickle).unwrap();
    let r = stdout_json_code(&["scan", "--json", path.to_str().unwrap()], 1);
    let shown = r["files"][0]["findings"][0]["arguments"].as_str().unwrap().to_string();
    assert!(shown.starts_with("('echo \\x1b[31mred\\nrm xxx"), "{shown}");
    assert!(shown.ends_with("...") && shown.chars().count() == 120, "{shown}");
    assert!(!shown.contains('\u{1b}') && !shown.contains('\n'));
}

fn stdout_json_code(args: &[&str], code: i32) -> Json {
    let out = ckpt().args(args).assert().code(code).get_output().stdout.clone();
    serde_json::from_slice(&out).expect("one JSON object on stdout")
}

/// Runs ckpt with stderr on a fresh pseudo-terminal and returns what it drew there.
#[cfg(target_os = "linux")]
fn stderr_on_a_terminal(args: &[&str]) -> String {
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors into the integers it is given; the null name,
    // termios and window size pointers are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both descriptors were just opened and are owned by these files alone.
    let (mut master, slave) = unsafe { (std::fs::File::from_raw_fd(master), std::fs::File::from_raw_fd(slave)) };
    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("ckpt"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}: {status}");
    // The child is gone and our copy of the slave was moved into it: reading ends with EIO.
    let mut drawn = Vec::new();
    let _ = master.read_to_end(&mut drawn);
    String::from_utf8_lossy(&drawn).into_owned()
}

#[cfg(target_os = "linux")]
#[test]
fn progress_bars_draw_on_a_terminal_and_nowhere_else() {
    let a = fixture("cnn_state_dict.pth");
    let cases: [(&[&str], &str); 2] = [
        (&["diff", &a, &a], "comparing ["),
        (&["inspect", "--hash", &a], "hashing ["),
    ];
    for (args, bar) in cases {
        let drawn = stderr_on_a_terminal(args);
        assert!(drawn.contains(bar), "{args:?}: {drawn:?}");
        // Piped stderr: no bar, nothing at all.
        assert_eq!(stderr_of(ckpt().args(args).assert().success()), "", "{args:?}");
    }
}
