//! Small helpers shared by the integration tests.

use std::path::PathBuf;

/// The directory of fixtures written by real PyTorch: `CKPT_FIXTURES` when CI regenerates them
/// with another PyTorch version, else the committed ones.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("CKPT_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
    }
}

/// PyTorch's expected values for every fixture (fixtures/expected.json).
pub fn expected() -> serde_json::Value {
    let path = fixtures_dir().join("expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("expected.json is JSON")
}
