//! `ckpt scan`: what loading a checkpoint with Python would run, decided without running it.
//!
//! Every pickle a loader could unpickle is read by ckpt's own pickle machine ([`crate::pickle`]):
//! all `*.pkl` members of a zip whatever their directory (plus members that parse as pickles
//! under another name), in every reading of the archive ([`crate::container::zip_readings`]):
//! miniz's, which torch uses (the last end record in the tail, the directory at the offset it
//! states, names looked up ignoring ASCII case), and those of other end records, Python's
//! zipfile, the zip crate and a streaming reader; an archive whose readings differ is at least
//! unreadable, since ckpt's readers refuse it. For a file that is not a zip, every reading that
//! accepts its bytes:
//!
//! * the torch < 0.4 tar format, with members as CPython's tarfile lists them
//!   ([`crate::read::tarfile`]: PAX and GNU headers, links, the last member of a name, a quiet
//!   end at a later bad header): the records of `storages` and `tensors` and the object in
//!   `pickle`, exactly the bytes torch unpickles; other members and header-like blocks other tar
//!   readers could take for members are scanned when they parse as pickles; a link leading out
//!   of the archive (torch would read a file of the loading machine) is unreadable;
//! * the pickles from byte 0, which torch unpickles when tarfile rejects the first header: the
//!   legacy format (magic number, protocol version, sys_info, object, storage keys, each
//!   unpickled before its value is checked, whatever the pickle protocol) or any sequence of
//!   pickles (all of them, while they parse: a magic number computed by code passes torch's check);
//! * safetensors and index JSON, which hold no code.
//!
//! A `torch.distributed.checkpoint` data file (`*.distcp`) is a run of `torch.save` archives:
//! each item its `.metadata` names is judged at its byte range with the policy torch loads it
//! with (tensor chunks `weights_only=True`, so a global outside the allowlist is a refusal,
//! unreadable; other items a full load), bytes no item covers are at least unreadable and their
//! archives judged as full loads, and without a readable `.metadata` every archive in sequence
//! is judged as a full load (`scan/dcp.rs`).
//!
//! A polyglot (bytes two of these accept) is judged under every reading and noted as ambiguous.
//! For each pickle, every global and how it is used is judged:
//!
//! * **safe**: only what `torch.load(weights_only=True)` (torch 2.11) allows: storages, dtypes,
//!   `torch._utils._rebuild_*`, OrderedDict, set, torch.Size, torch.device, Parameter,
//!   `_codecs.encode` ... ([`policy::is_allowed`]). safetensors and index files are safe.
//!   Opcodes that weights_only does not implement but that run nothing (protocol 3-5 framing,
//!   MEMOIZE, BINBYTES, SHORT_BINUNICODE, STACK_GLOBAL of an allowlisted name ...) are listed
//!   and noted; they never make a pickle needs-code.
//! * **needs-code**: objects are instantiated the way `torch.save(model)` does (NEWOBJ/BUILD of
//!   `__main__.Net`, `torch.nn.modules.conv.Conv2d`, or `copyreg._reconstructor(cls, object,
//!   state)` at protocol 0/1), or a global is only referenced, or a known plain-data type outside
//!   the allowlist is built (numpy arrays, datetime): loading needs `weights_only=False` and the
//!   classes' code, but the pickle itself calls nothing dangerous. TorchScript archives are at
//!   least needs-code: `torch.jit.load` compiles their `code/` and runs it (`__setstate__` methods
//!   run during the load itself, `forward` later); TorchScript cannot import Python modules, so
//!   the archive is not judged dangerous for having code, but that code is not checked here.
//!   Inside a TorchScript archive (constants.pkl or code/ present), torch reads the pickles with
//!   its C++ unpickler, which resolves `__torch__.*` names to the archive's compiled classes and
//!   enums (instantiated or REDUCEd: needs-code) and `torch.jit._pickle.build_*` helpers
//!   (allowed); elsewhere those names follow the general rules.
//! * **needs-code, Enum members**: a REDUCE that reads as an Enum member or a value class,
//!   `cls(literal)` as every HF `training_args.bin` (`IntervalStrategy('steps')`) and DCP
//!   `.metadata` (`_MEM_FORMAT_ENCODING(0)`) holds, is needs-code ("looks like an Enum/class
//!   instantiation"). All must hold: `cls` is outside the allowlist, the known data types and
//!   the denylist; every component of its name is CamelCase or CONSTANT_CASE and none is a
//!   dunder; its final name is not one of the acting classes that modules re-export (`Popen`,
//!   `CDLL`, `Process`, `FileHandler`, `Template` ..., [`policy::is_acting_class_name`]); its
//!   module is not in the standard library (`subprocess.Popen`, `logging.FileHandler`,
//!   `sqlite3.Connection`, `imaplib.IMAP4` are capitalised too); it takes no callable; the
//!   REDUCE has exactly one argument, None, a bool, a number, or a token of at most 64 letters,
//!   digits and `_-.:` (no spaces, slashes, quotes or brackets, so no command line, path, URL or
//!   code); and the pickle calls `cls` in no other way (another REDUCE, INST/OBJ, handed to
//!   something that calls it). Limit: a third-party class whose constructor
//!   acts on such a token (runs a command by name, connects to a host) reads the same; the
//!   denylist names the known ones (pexpect, sh, plumbum, fabric, paramiko, mako ...), and the
//!   verdict still says the class's code runs. Standard-library enums (`re.RegexFlag(2)`) stay
//!   dangerous.
//! * **dangerous**: anything *called* (REDUCE, INST, OBJ, or the function argument of an
//!   allowlisted trampoline such as `_rebuild_from_type_v2`) that is not allowlisted; any use of
//!   a denylisted name (os/posix/nt, subprocess, builtins.eval/exec/getattr/__import__/open,
//!   runpy, importlib, pickle.loads, functools.partial/reduce, operator.*, torch.load,
//!   torch.hub, torch.jit, ...); a REDUCE or NEWOBJ whose callable is not a named global (a
//!   memoized or computed callable); `copyreg._reconstructor` with a base class that is not a
//!   builtin type. Unknown callables are dangerous, so a name missing from the denylist is never
//!   a bypass: the denylist only sharpens messages.
//! * **dangerous, hidden calls**: a call is a call however it is spelled. A global handed as an
//!   argument (positional, keyword, or through `copyreg.__newobj__`) to a REDUCE, NEWOBJ,
//!   NEWOBJ_EX, INST or OBJ counts as called when the callee may call what it is given: any
//!   callee outside the allowlist and the known data types (a user class's `__new__`; the lazy
//!   iterators `map`, `filter`, `itertools.starmap`/`filterfalse`/`takewhile`/..., which call
//!   their function when a consumer iterates them, and `set`, `tuple`, `list`, `dict`, `bytes`,
//!   `sorted`, `min`, `max`, `enumerate`, `zip`, `OrderedDict`, `torch.Size` ... all iterate),
//!   and the known callable-takers ([`policy::callable_args`]: `functools.reduce`, `iter(f,
//!   sentinel)`, `defaultdict`'s factory, `weakref.finalize`, properties ...). Such a call of an
//!   unknown global is dangerous; a computed callable given to a known callable-taker is
//!   dangerous. Arguments of allowlisted functions (dtypes, storage classes) and of the known
//!   data types are data, so whole models, state dicts and numpy arrays keep their verdicts.
//! * **dotted names**: a name with dots is resolved by protocol 4+ unpicklers attribute by
//!   attribute (`torch.serialization` + `os.system` reaches `os.system`). It is judged by its
//!   most severe reading: the whole path and its prefixes, every suffix of the name's
//!   components, and any dunder component, against the denylist; only an exact name is ever
//!   allowlisted, so it is at least needs-code. Below protocol 4 (the last PROTO before the
//!   opcode), CPython imports the module and then looks the dotted name up as one attribute,
//!   which fails; the finding says so, but such a name is judged the same and never cleared.
//!
//! A pickle ckpt cannot read is never reported safe: the file is `unreadable` (exit 2), or
//! `dangerous` if something dangerous comes before the point where reading failed. CPython runs
//! every opcode up to there, so what the machine recorded before the failure is judged as in a
//! readable pickle (a REDUCE of an unknown callable followed by garbage is dangerous), and every
//! name the opcode pass finds anywhere is judged too. Where the machine refused what CPython may
//! accept (APPEND, SETITEM or BUILD on a global, which call `append`, `__setitem__` or set
//! attributes on it), a name followed by a calling opcode at or after the refused one counts as
//! called; past one of ckpt's own limits the rest is simply unread (unreadable, never cleared). The machine accepts
//! lone surrogates in strings as CPython does ('surrogatepass'), and a file with a checkpoint
//! extension that names globals before bytes the opcode pass cannot follow is judged as a pickle.
//!
//! Embedded payloads (`torch.storage._load_from_bytes(b)`, `pickle.loads(b)`) are scanned as
//! files of their own, each distinct payload once however many times it is loaded (by its
//! object in the pickle, then by its bytes), at most three levels deep, and all nested pickles of
//! a file together (inflated zip members included) within four times the size of the file's
//! top-level pickles; a payload past that budget is reported unscanned (unreadable). A note
//! says how many calls and distinct payloads there were.
//!
//! Commands that read a checkpoint for another purpose (inspect, convert) do not scan it: they
//! judge the globals and uses the reader recorded ([`dangerous_globals`]) by the same policy.
//!
//! Exit codes ([`exit_code`]): 0 nothing dangerous; 1 something dangerous (with `strict`,
//! needs-code too); 2 a file that looks like a checkpoint cannot be read. 1 wins over 2, so a
//! dangerous file is never hidden by a damaged one. When a directory is walked, files that are
//! not checkpoints at all (README, config.json, tokenizer files) are listed as `not-a-checkpoint`
//! and do not change the exit code, unless their extension says checkpoint (`.pt`, `.pth`,
//! `.bin`, `.ckpt`, `.pkl`, `.pickle`, `.safetensors`, `.tar`) or their first bytes do (a zip,
//! a tar header, a pickle PROTO): then an unreadable file is exit 2. Every regular file that
//! parses as a pickle is judged, whatever its name. A file named explicitly must be a
//! checkpoint. Only regular files are opened ([`crate::source::open_regular`]): a fifo, device or
//! directory given as a path or a shard is unreadable, never waited on; a walk skips them.

mod analyze;
mod args;
mod collector;
mod container;
mod dcp;
mod ops;
pub mod policy;
mod tar;
mod text;
mod zip;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::read::ReadLimits;

pub use policy::Category;

/// The judgement of a pickle or a file. Ordered from least to most severe (`max` combines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Not a checkpoint at all (a README next to the weights); ignored by the exit code.
    NotCheckpoint,
    /// Only what `torch.load(weights_only=True)` allows; safetensors and index files.
    Safe,
    /// Loading needs `weights_only=False` and the classes' code (a pickled whole model, a
    /// TorchScript archive), but the pickles call nothing dangerous.
    NeedsCode,
    /// Could not be read, so could not be cleared.
    Unreadable,
    /// A pickle calls a global outside torch's weights_only allowlist or uses a denylisted one
    /// (`os.system`, `builtins.exec`...): loading it runs what the file chose.
    Dangerous,
}

impl Verdict {
    /// The name `ckpt scan` prints: "safe", "needs-code", "dangerous"...
    pub fn name(self) -> &'static str {
        match self {
            Verdict::NotCheckpoint => "not-a-checkpoint",
            Verdict::Safe => "safe",
            Verdict::NeedsCode => "needs-code",
            Verdict::Unreadable => "unreadable",
            Verdict::Dangerous => "dangerous",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

internal_fields! {
/// One reason for a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// How severe it is.
    pub verdict: Verdict,
    /// The record (zip member, legacy pickle name, "pickle 2") it was found in.
    pub record: String,
    /// Byte offset of the opcode inside the record's pickle, as `python -m pickletools` counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The global concerned, as `module.name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<String>,
    /// What was found, in a sentence.
    pub message: String,
    /// The arguments of the first call of `global`, as Python would write the tuple (strings,
    /// bytes, numbers; containers one level deep), control and invisible characters escaped,
    /// cut at 120 characters: what `os.system` would have run. Never evaluated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}
}

impl Finding {
    /// How severe it is: the file's verdict is the most severe of its findings.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
    /// The record (zip member, legacy pickle name, "pickle 2") it was found in.
    pub fn record(&self) -> &str {
        &self.record
    }
    /// The byte offset of the opcode inside the record's pickle, as `python -m pickletools`
    /// counts, where there is one.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }
    /// The global concerned, as `module.name`, where there is one.
    pub fn global(&self) -> Option<&str> {
        self.global.as_deref()
    }
    /// What was found, in a sentence.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The arguments of the first call of [`Self::global`], as Python would write the tuple,
    /// escaped and cut at 120 characters: what `os.system` would have run. Never evaluated.
    pub fn arguments(&self) -> Option<&str> {
        self.arguments.as_deref()
    }
}

/// One global of one pickle, with everything the pickle does with it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalReport {
    /// `module.name` after Python 2 renames (`__builtin__.set` -> `builtins.set`).
    pub name: String,
    /// The name as the pickle writes it, where it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_as: Option<String>,
    pub category: Category,
    /// "referenced", "called", "instantiated", "built".
    pub usage: Vec<&'static str>,
    /// Opcode offsets inside the pickle (the first 16).
    pub offsets: Vec<u64>,
    /// How many times the pickle uses it.
    pub count: usize,
    pub verdict: Verdict,
    pub why: String,
}

/// One pickle of a file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PickleReport {
    pub record: String,
    /// Where the pickle starts in the file, when it lies there uncompressed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Bytes of the pickle (up to and including STOP, when it was read).
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    pub verdict: Verdict,
    pub globals: Vec<GlobalReport>,
    /// Opcodes present that torch's weights_only unpickler does not implement: even a pickle
    /// with only allowlisted globals then needs `weights_only=False`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub opcodes_outside_weights_only: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

internal_fields! {
/// The scan of one file ([`scan_path`]): its verdict and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScanReport {
    /// The file, as given or found.
    pub path: String,
    /// pth-zip, torchscript, pth-legacy, pth-legacy-tar, pickle, zip, safetensors, index-json,
    /// dcp-metadata, dcp-data, unknown.
    pub format: String,
    /// The most severe verdict of its findings (safe without any).
    pub verdict: Verdict,
    /// Bytes of the file.
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Why the file could not be read to its end, when it could not.
    pub error: Option<String>,
    /// Everything that is not safe, most severe first.
    pub findings: Vec<Finding>,
    /// Every pickle of the file, with the globals it uses.
    pub pickles: Vec<PickleReport>,
    /// TorchScript source files (`code/**.py`) inside the archive.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub code: Vec<String>,
    /// Shard files an index names, or data files a DCP `.metadata` names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<String>,
    /// Remarks that change no verdict.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}
}

impl ScanReport {
    /// The file, as given to [`scan_path`].
    pub fn path(&self) -> &str {
        &self.path
    }
    /// What the file is: pth-zip, torchscript, pth-legacy, pth-legacy-tar, pickle, zip,
    /// safetensors, index-json, dcp-metadata (a DCP `.metadata`), dcp-data (a `.distcp` file)
    /// or unknown.
    pub fn format(&self) -> &str {
        &self.format
    }
    /// The judgement of the whole file: the most severe of its findings.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }
    /// Bytes of the file.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Why the file could not be read to its end, when it could not (something dangerous found
    /// before the damage still makes it dangerous).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    /// Everything that is not safe, most severe first; empty for a safe file.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }
    /// TorchScript source files (`code/**.py`) inside the archive.
    pub fn code(&self) -> &[String] {
        &self.code
    }
    /// The shard files a sharded checkpoint's index names, or the data files a DCP `.metadata`
    /// names.
    pub fn shards(&self) -> &[String] {
        &self.shards
    }
    /// Remarks that change no verdict.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
    /// The report as `ckpt scan --json` prints it for one file.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
    /// A few lines for a terminal.
    pub fn to_text(&self, verbose: bool) -> String {
        text::report(self, verbose)
    }
}

/// Judges what loading the file at `path` with Python (`torch.load`, `torch.jit.load`) would
/// run, without running anything: every pickle a loader could read is parsed by ckpt's own
/// pickle machine and every global it uses is judged. A file in which something dangerous was
/// found before damage is `Ok`, with verdict [`Verdict::Dangerous`] and [`ScanReport::error`] set.
///
/// ```
/// # fn main() -> ckpt::Result<()> {
/// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
/// let limits = ckpt::ReadLimits::default();
/// let report = ckpt::scan_path(&dir.join("fixtures/cnn_state_dict.pth"), &limits)?;
/// assert_eq!(report.verdict(), ckpt::Verdict::Safe);
/// for finding in report.findings() {
///     println!("{}: {}", finding.verdict(), finding.message());
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened; [`Error::UnknownFormat`] when it is not a
/// checkpoint; [`Error::Unsupported`] when it cannot be read far enough to clear it.
pub fn scan_path(path: &Path, limits: &ReadLimits) -> Result<ScanReport> {
    let report = scan_file(path, limits, true);
    match report.verdict {
        Verdict::Unreadable => Err(report_error(path, &report)),
        _ => Ok(report),
    }
}

fn report_error(path: &Path, report: &ScanReport) -> Error {
    let why = report.error.clone().unwrap_or_else(|| "cannot be read".into());
    if report.format == "unknown" {
        Error::UnknownFormat { path: path.into(), why }
    } else {
        Error::Unsupported {
            path: path.into(),
            what: format!("cannot be scanned: {why}"),
        }
    }
}

/// Scans files and directories (recursively, in name order, not following symlinked
/// directories). An index json named explicitly brings its shards along. Never fails: a file
/// that cannot be read is a report with verdict [`Verdict::Unreadable`].
///
/// ```
/// # let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
/// let reports = ckpt::scan_paths(&[dir.join("fixtures/hostile")], &ckpt::ReadLimits::default());
/// assert!(reports.iter().any(|r| r.verdict() == ckpt::Verdict::Dangerous));
/// ```
pub fn scan_paths(paths: &[PathBuf], limits: &ReadLimits) -> Vec<ScanReport> {
    let mut files: Vec<(PathBuf, bool)> = Vec::new();
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, &mut files),
            _ => files.push((p.clone(), true)),
        }
    }
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    let mut reports = Vec::new();
    let mut i = 0;
    while i < files.len() {
        let (path, explicit) = files[i].clone();
        i += 1;
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !done.insert(key) {
            continue;
        }
        let report = scan_file(&path, limits, explicit);
        if explicit && (report.format == "index-json" || report.format == "dcp-metadata") {
            let dir = path.parent().unwrap_or(Path::new("."));
            for shard in &report.shards {
                files.push((dir.join(shard), true));
            }
        }
        reports.push(report);
    }
    reports
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, bool)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        out.push((dir.to_path_buf(), true));
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, out),
            Ok(m) if m.file_type().is_symlink() && std::fs::metadata(&p).is_ok_and(|t| t.is_file()) => {
                out.push((p, false))
            }
            Ok(m) if m.is_file() => out.push((p, false)),
            _ => {}
        }
    }
}

/// The process exit status for a scan: 1 if anything is dangerous (or, with `strict`, needs
/// code), else 2 if a checkpoint could not be read, else 0.
#[cfg(feature = "cli")] // only the commands use it
pub fn exit_code(reports: &[ScanReport], strict: bool) -> u8 {
    let worst = |v: Verdict| reports.iter().any(|r| r.verdict == v);
    if worst(Verdict::Dangerous) || (strict && worst(Verdict::NeedsCode)) {
        1
    } else if worst(Verdict::Unreadable) {
        2
    } else {
        0
    }
}

/// JSON of a whole scan: `{"files": [...], "summary": {verdict: count}, "exit_code": n}`.
#[cfg(feature = "cli")] // only the commands use it
pub fn to_json(reports: &[ScanReport], strict: bool) -> serde_json::Value {
    let mut summary = serde_json::Map::new();
    for v in [
        Verdict::Safe,
        Verdict::NeedsCode,
        Verdict::Dangerous,
        Verdict::Unreadable,
        Verdict::NotCheckpoint,
    ] {
        summary.insert(
            v.name().into(),
            reports.iter().filter(|r| r.verdict == v).count().into(),
        );
    }
    serde_json::json!({
        "files": reports.iter().map(ScanReport::to_json).collect::<Vec<_>>(),
        "summary": summary,
        "exit_code": exit_code(reports, strict),
    })
}

/// The human summary of a whole scan.
#[cfg(feature = "cli")] // only the commands use it
pub fn to_text(reports: &[ScanReport], verbose: bool) -> String {
    text::summary(reports, verbose)
}

/// A warning about one global, for commands that have read a checkpoint
/// ([`crate::Checkpoint::globals`]) and do not scan it.
#[cfg(feature = "cli")] // only the commands use it
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalWarning {
    /// "module.name" after Python 2 renames (`commands.Popen` is `subprocess.Popen`), as
    /// `ckpt scan` names it.
    pub name: String,
    /// Dangerous for denylisted names and for unknown callables the pickle calls; needs-code for
    /// every other name outside the allowlist.
    pub verdict: Verdict,
    pub why: String,
}

/// Judges the globals the reader recorded, with how each is used, by the same policy as
/// [`scan_path`]; most severe first, allowlisted names left out. `torchscript`: the checkpoint is
/// a TorchScript archive (its `__torch__.*` names are the archive's own classes).
///
/// What only the pickle's values show is not seen here: a global handed to something that calls
/// it, a computed callable, embedded payloads, the arguments of a call. So a REDUCE of a
/// class-like name outside the standard library, which is how Enum members are pickled (every
/// `training_args.bin`), is needs-code here, where [`scan_path`] tells an Enum member from a call.
#[cfg(feature = "cli")] // only the commands use it
pub fn dangerous_globals(globals: &crate::model::Globals, torchscript: bool) -> Vec<GlobalWarning> {
    let mut out: Vec<GlobalWarning> = globals
        .uses()
        .filter_map(|(global, usages)| {
            let (module, name) = policy::normalize(&global.module, &global.name);
            let (category, why) = policy::classify(&module, &name, torchscript);
            let called = usages.contains(&crate::pickle::Usage::Called);
            let maybe_enum =
                policy::is_class_like(&name) && !policy::is_acting_class_name(&name) && !policy::is_stdlib(&module);
            let verdict = match category {
                Category::Allowed => return None,
                Category::Denylisted => Verdict::Dangerous,
                Category::Unknown if called && !maybe_enum => Verdict::Dangerous,
                _ => Verdict::NeedsCode,
            };
            let why = match (category, called) {
                (Category::Unknown, true) if verdict == Verdict::Dangerous => {
                    "called, and not in torch's weights_only allowlist (an unknown callable is dangerous)"
                }
                _ => why,
            };
            Some(GlobalWarning {
                name: format!("{module}.{name}"),
                verdict,
                why: why.to_string(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.verdict.cmp(&a.verdict).then(a.name.cmp(&b.name)));
    out
}

/// Scans one file; never fails (errors become an unreadable report).
fn scan_file(path: &Path, limits: &ReadLimits, explicit: bool) -> ScanReport {
    container::scan_file(path, limits, explicit)
}
