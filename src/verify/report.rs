//! What a verification found: per-tensor outcomes, counts, exit codes, errors.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

/// Why a verification could not run: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// ckpt itself cannot read the file.
    #[error(transparent)]
    Read(#[from] crate::Error),
    /// A bad `--device` value, or a device libtorch does not have.
    #[error("{0}")]
    Device(String),
    /// libtorch refused a file it should be able to load.
    #[error("{path}: libtorch cannot load it ({loader}): {message}")]
    Load {
        path: PathBuf,
        loader: &'static str,
        message: String,
    },
    /// Making the temporary copy for `tch-zip-dict` failed.
    #[error("{path}: {what}")]
    Io { path: PathBuf, what: String },
}

impl VerifyError {
    pub fn exit_code(&self) -> i32 {
        2
    }
}

/// How libtorch got a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loader {
    TchZip,
    TchZipDict,
    TchScript,
    TchSafetensors,
    Bytes,
}

impl Loader {
    pub fn name(self) -> &'static str {
        match self {
            Loader::TchZip => "tch-zip",
            Loader::TchZipDict => "tch-zip-dict",
            Loader::TchScript => "tch-script",
            Loader::TchSafetensors => "tch-safetensors",
            Loader::Bytes => "bytes",
        }
    }
    /// Whether libtorch read the file itself (rather than being handed ckpt's bytes).
    pub fn reads_file(self) -> bool {
        self != Loader::Bytes
    }
}

/// One file libtorch was asked to load (a sharded checkpoint has several).
#[derive(Debug, Clone, Serialize)]
pub struct FileLoad {
    pub path: String,
    pub format: String,
    pub loader: Loader,
    /// Why this loader, and what libtorch said when a better one failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Damage libtorch does not notice (records whose CRC-32 does not match their bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The result for one tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Matched,
    Differs {
        /// First differing element in C-contiguous order, when the data differ.
        #[serde(skip_serializing_if = "Option::is_none")]
        first_index: Option<u64>,
        why: String,
    },
    Skipped {
        why: String,
    },
    Missing {
        why: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorCheck {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// The file the tensor was loaded from.
    pub file: String,
    pub loader: Loader,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub path: String,
    pub format: String,
    pub device: String,
    pub files: Vec<FileLoad>,
    pub tensors: Vec<TensorCheck>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub matched: usize,
    pub differs: usize,
    pub skipped: usize,
    pub missing: usize,
    /// Matched tensors that libtorch read from the file itself (not handed ckpt's bytes).
    pub matched_from_file: usize,
}

impl VerifyReport {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in &self.tensors {
            match t.outcome {
                Outcome::Matched => {
                    c.matched += 1;
                    if t.loader.reads_file() {
                        c.matched_from_file += 1;
                    }
                }
                Outcome::Differs { .. } => c.differs += 1,
                Outcome::Skipped { .. } => c.skipped += 1,
                Outcome::Missing { .. } => c.missing += 1,
            }
        }
        c
    }

    /// Nothing differs and nothing is missing (skipped tensors are listed, not passed).
    pub fn ok(&self) -> bool {
        let c = self.counts();
        c.differs == 0 && c.missing == 0
    }

    /// 0 when every tensor matched or was skipped, 1 when any differs or is missing.
    pub fn exit_code(&self) -> i32 {
        if self.ok() {
            0
        } else {
            1
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "verify {} ({}) with libtorch on {}",
            self.path, self.format, self.device
        );
        for f in &self.files {
            let _ = write!(s, "  loaded {} ({}) via {}", f.path, f.format, f.loader.name());
            match &f.note {
                Some(n) => {
                    let _ = writeln!(s, ": {n}");
                }
                None => s.push('\n'),
            }
            for w in &f.warnings {
                let _ = writeln!(s, "  warning: {w}");
            }
        }
        let name_w = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(0).min(60);
        let multi = self.files.len() > 1;
        for t in &self.tensors {
            let shape = format!(
                "[{}]",
                t.shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            );
            let (status, detail) = match &t.outcome {
                Outcome::Matched => ("matched", String::new()),
                Outcome::Differs {
                    first_index: Some(i),
                    why,
                } => ("DIFFERS", format!("  first differing element {i}: {why}")),
                Outcome::Differs { first_index: None, why } => ("DIFFERS", format!("  {why}")),
                Outcome::Skipped { why } => ("skipped", format!("  {why}")),
                Outcome::Missing { why } => ("MISSING", format!("  {why}")),
            };
            let file = if multi { format!("  {}", t.file) } else { String::new() };
            let _ = writeln!(
                s,
                "  {status:<8} {:<name_w$}  {} {shape}  {}{file}{detail}",
                t.name,
                t.dtype,
                t.loader.name()
            );
        }
        let c = self.counts();
        let verdict = if self.ok() { "OK" } else { "FAILED" };
        let _ = writeln!(
            s,
            "{verdict}: {} tensors: {} matched ({} read by libtorch from the file, {} from ckpt's bytes), {} differ, {} missing, {} skipped (not verified)",
            self.tensors.len(),
            c.matched,
            c.matched_from_file,
            c.matched - c.matched_from_file,
            c.differs,
            c.missing,
            c.skipped
        );
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("counts".into(), serde_json::to_value(self.counts()).unwrap_or_default());
            o.insert("ok".into(), self.ok().into());
            o.insert("exit_code".into(), self.exit_code().into());
        }
        v
    }
}

/// The exit code for a verification's result: 0 all matched, 1 something differs, 2 cannot load.
pub fn exit_code(result: &Result<VerifyReport, VerifyError>) -> i32 {
    match result {
        Ok(r) => r.exit_code(),
        Err(e) => e.exit_code(),
    }
}
