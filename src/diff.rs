//! `ckpt diff`: compares two checkpoints by name, across formats (a `.pth` and its safetensors
//! conversion compare as identical): tensors, and the non-tensor leaves (epoch, loss history,
//! config, optimizer hyperparameters) that readers keep as metadata.
//!
//! Tensor values are compared element by element after decoding: floating kinds (float8
//! included) and complex numbers exactly to f64, integers and bool exactly as integers. NaN
//! equals NaN, -0.0 equals 0.0, inf equals inf of the same sign. A tensor is *identical* when
//! every element is equal, *close* when every element `a` is within tolerance of its partner `b`
//! (of the second checkpoint) as `torch.allclose(a, b)` decides: `|a - b| <= atol + rtol * |b|`,
//! never for NaN or inf against something else, and *changed* otherwise. Tensors whose dtype or
//! shape differ are listed apart; where only the dtype differs (a float32 model and its bfloat16
//! conversion), their values are still compared and the largest difference reported.
//!
//! Metadata leaves compare as values: integers, strings, bools and null exactly, floats within
//! the same tolerance, lists and dicts item by item. safetensors metadata is text, so where a
//! safetensors side holds a string and the other side a number or a list, the string is read as
//! the JSON that ckpt's writer made of it. Keys a format adds for itself are not compared:
//! safetensors' `format` marker and a sharded index's `total_size`. A name a safetensors file
//! records as a dropped alias (`ckpt convert --dedupe`, huggingface's `convert.py`: metadata
//! `name -> kept name`) is the tensor it names, so it compares equal to its source.
//!
//! Names can be narrowed ([`DiffOptions::filter`], patterns as [`Pattern`] reads them) and
//! prefixes stripped on both sides first ([`DiffOptions::strip_prefix`]: a DataParallel
//! `module.` checkpoint against a plain one).
//!
//! Nothing is held whole: both tensors are streamed with [`tensor_data::for_each_chunk`] (the
//! second on a helper thread, through a bounded channel) and compared chunk against chunk.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Mutex;

use serde_json::{json, Value as Json};

use crate::dtype::DType;
use crate::elem::{decode_complex, decode_f64, decode_int};
use crate::error::Error;
use crate::model::{Checkpoint, Format, Tensor};
use crate::pass;
use crate::tensor_data;
use crate::transform::Pattern;
use crate::write::progress::OnProgress;

/// How to compare.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Absolute and relative tolerance, as `torch.allclose`: `|a - b| <= atol + rtol * |b|`.
    pub atol: f64,
    pub rtol: f64,
    /// Compare only names that one of these matches (after stripping); empty: every name.
    pub filter: Vec<Pattern>,
    /// Prefixes removed from names on both sides before anything else (`module.` and `module`
    /// alike); each must occur on some side.
    pub strip_prefix: Vec<String>,
    /// Where the progress of comparing values is reported (nowhere by default).
    pub on_progress: OnProgress,
}

impl DiffOptions {
    /// Refuses a tolerance that is negative or NaN.
    pub fn check(&self) -> Result<(), DiffError> {
        for (option, v) in [("atol", self.atol), ("rtol", self.rtol)] {
            if v.is_nan() || v < 0.0 {
                return Err(DiffError::BadTolerance { option });
            }
        }
        Ok(())
    }
}

/// Why a comparison was not made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiffError {
    #[error("--{option} must be a number >= 0")]
    BadTolerance { option: &'static str },
    #[error("--strip-prefix '{prefix}': no name in either checkpoint starts with it")]
    PrefixAbsent { prefix: String },
    #[error("--filter {}: matches no name in either checkpoint", .patterns.join(", "))]
    FilterMatchesNothing { patterns: Vec<String> },
    #[error("--strip-prefix makes '{first}' and '{second}' of the {side} checkpoint both '{name}'")]
    Collision {
        side: &'static str,
        first: String,
        second: String,
        name: String,
    },
}

/// The result of [`diff`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiffReport {
    pub atol: f64,
    pub rtol: f64,
    /// Tensor names only in the first / second checkpoint, in their order.
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    pub dtype_or_shape_changed: Vec<LayoutChange>,
    /// Some element beyond tolerance (or NaN on one side only).
    pub values_changed: Vec<ValueChange>,
    /// Every element within tolerance, not all equal (empty when both tolerances are 0).
    pub close: Vec<ValueChange>,
    /// Every element equal.
    pub identical: Vec<String>,
    /// Tensors whose bytes could not be read: (name, error).
    pub errors: Vec<(String, String)>,
    /// Non-tensor leaves (metadata).
    pub metadata: MetadataDiff,
}

/// How the non-tensor leaves compare.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataDiff {
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    /// Beyond tolerance, or not equal where exactness is asked.
    pub changed: Vec<MetadataChange>,
    /// Floats within tolerance, not equal.
    pub close: Vec<MetadataChange>,
    pub identical: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetadataChange {
    pub name: String,
    pub a: Json,
    pub b: Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LayoutChange {
    pub name: String,
    pub a_dtype: DType,
    pub a_shape: Vec<u64>,
    pub b_dtype: DType,
    pub b_shape: Vec<u64>,
    /// For equal shapes, the largest element difference (None when shapes differ or a side is
    /// unreadable).
    pub max_abs_diff: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValueChange {
    pub name: String,
    /// Largest |a - b| over the elements; inf where one side is NaN or inf and the other not.
    pub max_abs_diff: f64,
    /// Elements beyond tolerance (for `close`: that are not equal).
    pub differing: u64,
    pub numel: u64,
}

/// Compares every tensor and metadata leaf of `a` and `b` by name within `atol`. See the
/// module docs for what counts as equal; [`diff_with`] takes every option.
#[cfg(feature = "internals")] // only the integration tests call it
pub fn diff(a: &Checkpoint, b: &Checkpoint, atol: f64) -> DiffReport {
    let opts = DiffOptions {
        atol: if atol.is_nan() || atol < 0.0 { 0.0 } else { atol },
        ..Default::default()
    };
    diff_with(a, b, &opts).expect("no filter, no prefix, a valid tolerance")
}

/// The tolerance of a comparison.
#[derive(Debug, Clone, Copy)]
struct Tol {
    atol: f64,
    rtol: f64,
}

impl Tol {
    /// Whether a difference `d` from `b` (of magnitude `b_abs`) is within tolerance. Infinite
    /// differences never are (inf against a number, NaN against a number), as in torch.allclose.
    fn within(self, d: f64, b_abs: f64) -> bool {
        d.is_finite() && d <= self.atol + self.rtol * b_abs
    }
}

/// One checkpoint as the comparison sees it: names after stripping and filtering.
struct Side<'a> {
    ckpt: &'a Checkpoint,
    /// (compared name, tensor), each name once, in checkpoint order; dropped aliases last.
    tensors: Vec<(String, &'a Tensor)>,
    metadata: Vec<(String, &'a Json)>,
    /// Whether metadata values are text (safetensors), to be read as JSON against other values.
    text_metadata: bool,
}

/// Compares `a` and `b` as `opts` says.
pub fn diff_with(a: &Checkpoint, b: &Checkpoint, opts: &DiffOptions) -> Result<DiffReport, DiffError> {
    opts.check()?;
    let prefixes: Vec<String> = opts
        .strip_prefix
        .iter()
        .map(|p| if p.ends_with('.') { p.clone() } else { format!("{p}.") })
        .collect();
    let mut used = vec![false; prefixes.len()];
    let sa = side(a, "first", &prefixes, &mut used)?;
    let sb = side(b, "second", &prefixes, &mut used)?;
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(DiffError::PrefixAbsent {
            prefix: opts.strip_prefix[i].clone(),
        });
    }
    let (sa, sb) = (filtered(sa, &opts.filter), filtered(sb, &opts.filter));
    let nothing = |s: &Side| s.tensors.is_empty() && s.metadata.is_empty();
    if !opts.filter.is_empty() && nothing(&sa) && nothing(&sb) {
        return Err(DiffError::FilterMatchesNothing {
            patterns: opts.filter.iter().map(|p| p.as_str().to_string()).collect(),
        });
    }
    let tol = Tol {
        atol: opts.atol,
        rtol: opts.rtol,
    };
    let mut report = DiffReport {
        atol: opts.atol,
        rtol: opts.rtol,
        metadata: compare_metadata(&sa, &sb, tol),
        ..Default::default()
    };
    compare_tensors(&sa, &sb, tol, &opts.on_progress, &mut report);
    Ok(report)
}

/// Metadata keys a format writes for itself, not part of the checkpoint.
fn bookkeeping(format: Format, key: &str) -> bool {
    match format {
        Format::Safetensors => key == "format",
        Format::Sharded => key == "format" || key == "total_size",
        _ => false,
    }
}

/// The names of one side: tensors (first of a repeated name), dropped aliases resolved to their
/// tensors, metadata without bookkeeping and alias entries; prefixes stripped.
fn side<'a>(
    ckpt: &'a Checkpoint,
    label: &'static str,
    prefixes: &[String],
    used: &mut [bool],
) -> Result<Side<'a>, DiffError> {
    let mut by_name: HashMap<&str, &Tensor> = HashMap::new();
    let mut tensors: Vec<(&str, &Tensor)> = Vec::new();
    for t in &ckpt.tensors {
        if !by_name.contains_key(t.name.as_str()) {
            by_name.insert(&t.name, t);
            tensors.push((&t.name, t));
        }
    }
    let text_metadata = matches!(ckpt.format, Format::Safetensors | Format::Sharded);
    let mut metadata: Vec<(&str, &Json)> = Vec::new();
    for (k, v) in &ckpt.metadata {
        if text_metadata && bookkeeping(ckpt.format, k) {
            continue;
        }
        let alias_of = v.as_str().filter(|_| text_metadata).and_then(|kept| by_name.get(kept));
        match alias_of {
            Some(t) if !by_name.contains_key(k.as_str()) => tensors.push((k, t)),
            _ => metadata.push((k, v)),
        }
    }
    let mut strip = |name: &str| -> String {
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(rest) = name.strip_prefix(p.as_str()) {
                used[i] = true;
                return rest.to_string();
            }
        }
        name.to_string()
    };
    let tensors: Vec<(String, &Tensor, &str)> = tensors.into_iter().map(|(n, t)| (strip(n), t, n)).collect();
    let metadata: Vec<(String, &Json, &str)> = metadata.into_iter().map(|(n, v)| (strip(n), v, n)).collect();
    // Tensors and metadata are compared apart (a DTensor's placement notes share its name).
    unique_after_strip(label, tensors.iter().map(|(n, _, o)| (n, *o)))?;
    unique_after_strip(label, metadata.iter().map(|(n, _, o)| (n, *o)))?;
    Ok(Side {
        ckpt,
        tensors: tensors.into_iter().map(|(n, t, _)| (n, t)).collect(),
        metadata: metadata.into_iter().map(|(n, v, _)| (n, v)).collect(),
        text_metadata,
    })
}

/// Refuses two names (before stripping) that stripping made one.
fn unique_after_strip<'a>(
    label: &'static str,
    names: impl Iterator<Item = (&'a String, &'a str)>,
) -> Result<(), DiffError> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (name, original) in names {
        if let Some(first) = seen.insert(name, original) {
            return Err(DiffError::Collision {
                side: label,
                first: first.to_string(),
                second: original.to_string(),
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// Keeps the names one of `filter` matches (all of them when it is empty).
fn filtered<'a>(mut s: Side<'a>, filter: &[Pattern]) -> Side<'a> {
    if !filter.is_empty() {
        let keep = |n: &str| filter.iter().any(|p| p.matches(n));
        s.tensors.retain(|(n, _)| keep(n));
        s.metadata.retain(|(n, _)| keep(n));
    }
    s
}

fn compare_tensors(sa: &Side, sb: &Side, tol: Tol, on_progress: &OnProgress, report: &mut DiffReport) {
    let index_b: HashMap<&str, &Tensor> = sb.tensors.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let names_a: HashSet<&str> = sa.tensors.iter().map(|(n, _)| n.as_str()).collect();
    let pairs: Vec<(&String, &Tensor, &Tensor)> = sa
        .tensors
        .iter()
        .filter_map(|(n, ta)| index_b.get(n.as_str()).map(|tb| (n, *ta, *tb)))
        .collect();
    let progress = on_progress.start("comparing", pairs.iter().map(|(_, t, _)| t.nbytes()).sum());
    report.only_in_a = sa
        .tensors
        .iter()
        .filter(|(n, _)| !index_b.contains_key(n.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    // On all cores, a pair per core at a time; results are filed in name order afterwards.
    let progress = Mutex::new(progress);
    let outcomes = pass::map(&pairs, |(_, t, _)| t.nbytes(), pass::threads(), |&(_, ta, tb)| {
        let outcome = compare_outcome(sa.ckpt, ta, sb.ckpt, tb, tol);
        progress.lock().unwrap_or_else(|e| e.into_inner()).add(ta.nbytes());
        outcome
    });
    progress.into_inner().unwrap_or_else(|e| e.into_inner()).finish();
    for ((name, ta, tb), outcome) in pairs.into_iter().zip(outcomes) {
        file_pair(name, ta, tb, outcome, report);
    }
    for (name, _) in &sb.tensors {
        if !names_a.contains(name.as_str()) {
            report.only_in_b.push(name.clone());
        }
    }
}

/// What comparing two tensors of one name found: whether dtype and shape agree, and the
/// element comparison (or why there is none: shapes that differ, or bytes that cannot be read).
type Outcome = (bool, Result<Stats, String>);

/// Compares two tensors of one name: whether their layouts agree, and the element comparison
/// (also across dtypes of one shape, for the max difference).
fn compare_outcome(a: &Checkpoint, ta: &Tensor, b: &Checkpoint, tb: &Tensor, tol: Tol) -> Outcome {
    let same_layout = ta.dtype == tb.dtype && ta.shape == tb.shape;
    if ta.shape != tb.shape {
        return (false, Err(String::new()));
    }
    (same_layout, compare(a, ta, b, tb, tol))
}

/// Files the outcome of one pair in the report.
fn file_pair(name: &str, ta: &Tensor, tb: &Tensor, (same_layout, result): Outcome, report: &mut DiffReport) {
    let name = name.to_string();
    if !same_layout {
        let max_abs_diff = if ta.shape == tb.shape {
            result.ok().map(|s| s.max_abs_diff)
        } else {
            None
        };
        report.dtype_or_shape_changed.push(LayoutChange {
            name,
            a_dtype: ta.dtype,
            a_shape: ta.shape.clone(),
            b_dtype: tb.dtype,
            b_shape: tb.shape.clone(),
            max_abs_diff,
        });
        return;
    }
    match result {
        Err(e) => report.errors.push((name, e)),
        Ok(s) if s.unequal == 0 => report.identical.push(name),
        Ok(s) if s.beyond == 0 => report.close.push(ValueChange {
            name,
            max_abs_diff: s.max_abs_diff,
            differing: s.unequal,
            numel: ta.numel(),
        }),
        Ok(s) => report.values_changed.push(ValueChange {
            name,
            max_abs_diff: s.max_abs_diff,
            differing: s.beyond,
            numel: ta.numel(),
        }),
    }
}

/// How two metadata values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Same {
    Equal,
    Close,
    Changed,
}

fn compare_metadata(sa: &Side, sb: &Side, tol: Tol) -> MetadataDiff {
    let index_b: HashMap<&str, &Json> = sb.metadata.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let names_a: HashSet<&str> = sa.metadata.iter().map(|(n, _)| n.as_str()).collect();
    let mut out = MetadataDiff::default();
    for (name, va) in &sa.metadata {
        let Some(vb) = index_b.get(name.as_str()) else {
            out.only_in_a.push(name.clone());
            continue;
        };
        let change = || MetadataChange {
            name: name.clone(),
            a: (*va).clone(),
            b: (*vb).clone(),
        };
        match same_value(va, sa.text_metadata, vb, sb.text_metadata, tol) {
            Same::Equal => out.identical.push(name.clone()),
            Same::Close => out.close.push(change()),
            Same::Changed => out.changed.push(change()),
        }
    }
    out.only_in_b = sb
        .metadata
        .iter()
        .filter(|(n, _)| !names_a.contains(n.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    out
}

/// Compares two metadata values; a string from text metadata (`a_text`, `b_text`) facing a
/// value that is not a string is read as JSON first.
fn same_value(a: &Json, a_text: bool, b: &Json, b_text: bool, tol: Tol) -> Same {
    let parsed = |s: &str| serde_json::from_str::<Json>(s).ok();
    match (a, b) {
        (Json::String(s), other) if a_text && !other.is_string() => match parsed(s) {
            Some(v) => same_value(&v, false, other, b_text, tol),
            None => Same::Changed,
        },
        (other, Json::String(s)) if b_text && !other.is_string() => match parsed(s) {
            Some(v) => same_value(other, a_text, &v, false, tol),
            None => Same::Changed,
        },
        (Json::Number(x), Json::Number(y)) => same_number(x, y, tol),
        (Json::Array(xs), Json::Array(ys)) if xs.len() == ys.len() => xs
            .iter()
            .zip(ys)
            .map(|(x, y)| same_value(x, a_text, y, b_text, tol))
            .max()
            .unwrap_or(Same::Equal),
        (Json::Object(xs), Json::Object(ys)) if xs.len() == ys.len() => xs
            .iter()
            .map(|(k, x)| match ys.get(k) {
                Some(y) => same_value(x, a_text, y, b_text, tol),
                None => Same::Changed,
            })
            .max()
            .unwrap_or(Same::Equal),
        _ if a == b => Same::Equal,
        _ => Same::Changed,
    }
}

/// Integers exactly; a float on either side within tolerance.
fn same_number(x: &serde_json::Number, y: &serde_json::Number, tol: Tol) -> Same {
    let int = |n: &serde_json::Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    if let (Some(p), Some(q)) = (int(x), int(y)) {
        return if p == q { Same::Equal } else { Same::Changed };
    }
    let (Some(p), Some(q)) = (x.as_f64(), y.as_f64()) else {
        return Same::Changed;
    };
    if p == q {
        Same::Equal
    } else if tol.within((p - q).abs(), q.abs()) {
        Same::Close
    } else {
        Same::Changed
    }
}

#[derive(Debug, Default)]
struct Stats {
    max_abs_diff: f64,
    /// Elements not equal.
    unequal: u64,
    /// Elements beyond tolerance.
    beyond: u64,
}

impl Stats {
    /// Counts one pair of elements (`y` the second checkpoint's).
    fn count(&mut self, tol: Tol, x: Val, y: Val) {
        let (eq, d) = elem_diff(x, y);
        if !eq {
            self.unequal += 1;
            if !tol.within(d, magnitude(y)) {
                self.beyond += 1;
            }
            if d > self.max_abs_diff || d.is_nan() {
                self.max_abs_diff = d;
            }
        }
    }
}

/// An element, decoded.
#[derive(Clone, Copy)]
enum Val {
    Int(i128),
    Real(f64),
    Complex(f64, f64),
}

fn decoder(d: DType) -> fn(DType, &[u8]) -> Val {
    if d.is_complex() {
        |d, b| {
            let (re, im) = decode_complex(d, b);
            Val::Complex(re, im)
        }
    } else if d.is_floating() {
        |d, b| Val::Real(decode_f64(d, b))
    } else {
        |d, b| Val::Int(decode_int(d, b).unwrap_or(0))
    }
}

/// |x - y| of two reals, 0 when equal (NaN == NaN, inf == inf), inf for NaN against a number.
fn real_diff(x: f64, y: f64) -> f64 {
    if x == y || (x.is_nan() && y.is_nan()) {
        0.0
    } else if x.is_nan() || y.is_nan() {
        f64::INFINITY
    } else {
        (x - y).abs()
    }
}

/// (equal, |difference|) of two elements.
fn elem_diff(x: Val, y: Val) -> (bool, f64) {
    match (x, y) {
        (Val::Int(p), Val::Int(q)) => (p == q, (p - q).unsigned_abs() as f64),
        (x, y) => {
            let (a, ai) = parts(x);
            let (c, ci) = parts(y);
            let d1 = real_diff(a, c);
            let d2 = real_diff(ai, ci);
            let eq = (a == c || (a.is_nan() && c.is_nan())) && (ai == ci || (ai.is_nan() && ci.is_nan()));
            (eq, d1.max(d2))
        }
    }
}

/// |b| for the relative tolerance (the modulus of a complex number).
fn magnitude(v: Val) -> f64 {
    let (re, im) = parts(v);
    re.hypot(im)
}

fn parts(v: Val) -> (f64, f64) {
    match v {
        Val::Int(i) => (i as f64, 0.0),
        Val::Real(r) => (r, 0.0),
        Val::Complex(r, i) => (r, i),
    }
}

/// What the helper thread's sink fails with: a read error, or the comparing side hung up.
enum Stop {
    Read(Error),
    Closed,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Read(e)
    }
}

/// Streams both tensors (equal numel) and compares them element by element.
fn compare(a: &Checkpoint, ta: &Tensor, b: &Checkpoint, tb: &Tensor, tol: Tol) -> Result<Stats, String> {
    let (ea, eb) = (ta.dtype.size(), tb.dtype.size());
    let (da, db) = (decoder(ta.dtype), decoder(tb.dtype));
    let mut stats = Stats::default();
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Vec<u8>>(2);
        let producer = scope.spawn(move || {
            tensor_data::for_each_chunk::<Stop>(b, tb, |bytes| tx.send(bytes.to_vec()).map_err(|_| Stop::Closed))
        });
        let mut pending = Pending {
            rx,
            buf: Vec::new(),
            pos: 0,
            done: false,
        };
        let mut mismatch = None;
        let r = tensor_data::for_each_chunk::<Error>(a, ta, |bytes| {
            if ta.dtype == tb.dtype {
                // Same dtype: equal bytes are equal values, compared at memory speed; only a
                // chunk whose bytes differ is compared element by element (-0.0 equals 0.0).
                let Some(other) = pending.next(bytes.len()) else {
                    mismatch = Some(format!("'{}' ended early in the second checkpoint", tb.name));
                    return Ok(());
                };
                if other != bytes {
                    for (x, y) in bytes.chunks_exact(ea).zip(other.chunks_exact(eb)) {
                        stats.count(tol, da(ta.dtype, x), db(tb.dtype, y));
                    }
                }
                return Ok(());
            }
            let mut off = 0;
            while off + ea <= bytes.len() {
                let Some(other) = pending.next(eb) else {
                    mismatch = Some(format!("'{}' ended early in the second checkpoint", tb.name));
                    return Ok(());
                };
                let y = db(tb.dtype, other);
                stats.count(tol, da(ta.dtype, &bytes[off..off + ea]), y);
                off += ea;
            }
            Ok(())
        });
        let rest = pending.next(eb).is_some();
        drop(pending);
        let produced = producer.join();
        if let Err(e) = r {
            return Err(format!("first checkpoint: {e}"));
        }
        match produced {
            Ok(Ok(())) => {}
            Ok(Err(Stop::Read(e))) => return Err(format!("second checkpoint: {e}")),
            Ok(Err(Stop::Closed)) => {}
            Err(_) => return Err("reading the second checkpoint panicked".into()),
        }
        if let Some(m) = mismatch {
            return Err(m);
        }
        if rest {
            return Err(format!("'{}' has more elements in the second checkpoint", tb.name));
        }
        Ok(stats)
    })
}

/// The second tensor's bytes as they arrive, handed out one element at a time.
struct Pending {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Pending {
    fn next(&mut self, size: usize) -> Option<&[u8]> {
        while self.buf.len() - self.pos < size {
            if self.done {
                return None;
            }
            match self.rx.recv() {
                Ok(more) => {
                    // Keep an element split across chunks whole.
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                    self.buf.extend_from_slice(&more);
                }
                Err(_) => self.done = true,
            }
        }
        let s = &self.buf[self.pos..self.pos + size];
        self.pos += size;
        Some(s)
    }
}

fn num(x: f64) -> Json {
    serde_json::Number::from_f64(x)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(x.to_string()))
}

impl DiffReport {
    /// No tensor or metadata leaf only on one side, no dtype/shape change, no value beyond
    /// tolerance, nothing unreadable.
    pub fn is_equal(&self) -> bool {
        self.only_in_a.is_empty()
            && self.only_in_b.is_empty()
            && self.dtype_or_shape_changed.is_empty()
            && self.values_changed.is_empty()
            && self.errors.is_empty()
            && self.metadata.is_equal()
    }

    /// "atol 0.1" or "atol 0.1 + rtol 0.01 * |b|".
    fn tolerance(&self) -> String {
        if self.rtol == 0.0 {
            format!("atol {}", self.atol)
        } else {
            format!("atol {} + rtol {} * |b|", self.atol, self.rtol)
        }
    }

    pub fn to_json(&self) -> Json {
        let change = |c: &ValueChange| json!({"name": c.name, "max_abs_diff": num(c.max_abs_diff), "differing": c.differing, "numel": c.numel});
        json!({
            "equal": self.is_equal(),
            "atol": num(self.atol),
            "rtol": num(self.rtol),
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "dtype_or_shape_changed": self.dtype_or_shape_changed.iter().map(|c| json!({
                "name": c.name,
                "a": {"dtype": c.a_dtype.name(), "shape": c.a_shape},
                "b": {"dtype": c.b_dtype.name(), "shape": c.b_shape},
                "max_abs_diff": c.max_abs_diff.map(num),
            })).collect::<Vec<_>>(),
            "values_changed": self.values_changed.iter().map(change).collect::<Vec<_>>(),
            "close": self.close.iter().map(change).collect::<Vec<_>>(),
            "identical": self.identical,
            "errors": self.errors.iter().map(|(n, e)| json!({"name": n, "error": e})).collect::<Vec<_>>(),
            "metadata": self.metadata.to_json(),
        })
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let list = |s: &mut String, title: &str, names: &[String]| {
            if !names.is_empty() {
                let _ = writeln!(s, "{title} ({}):", names.len());
                for n in names {
                    let _ = writeln!(s, "  {n}");
                }
            }
        };
        list(&mut s, "only in a", &self.only_in_a);
        list(&mut s, "only in b", &self.only_in_b);
        if !self.dtype_or_shape_changed.is_empty() {
            let _ = writeln!(s, "dtype or shape changed ({}):", self.dtype_or_shape_changed.len());
            for c in &self.dtype_or_shape_changed {
                let _ = write!(
                    s,
                    "  {}: {} {:?} -> {} {:?}",
                    c.name, c.a_dtype, c.a_shape, c.b_dtype, c.b_shape
                );
                if let Some(d) = c.max_abs_diff {
                    let _ = write!(s, " (max abs diff {d:e})");
                }
                s.push('\n');
            }
        }
        if !self.values_changed.is_empty() {
            let _ = writeln!(s, "values changed ({}):", self.values_changed.len());
            for c in &self.values_changed {
                let _ = writeln!(
                    s,
                    "  {}: max abs diff {:e}, {} of {} elements beyond {}",
                    c.name,
                    c.max_abs_diff,
                    c.differing,
                    c.numel,
                    self.tolerance()
                );
            }
        }
        if !self.close.is_empty() {
            let _ = writeln!(s, "within {} ({}):", self.tolerance(), self.close.len());
            for c in &self.close {
                let _ = writeln!(
                    s,
                    "  {}: max abs diff {:e}, {} of {} elements differ",
                    c.name, c.max_abs_diff, c.differing, c.numel
                );
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "unreadable ({}):", self.errors.len());
            for (n, e) in &self.errors {
                let _ = writeln!(s, "  {n}: {e}");
            }
        }
        s.push_str(&self.metadata.to_text(&self.tolerance()));
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let (tensors, leaves) = (self.identical.len(), self.metadata.identical.len());
        let _ = write!(s, "identical: {tensors} tensor{}", plural(tensors));
        if leaves > 0 {
            let _ = write!(s, ", {leaves} metadata value{}", plural(leaves));
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "{}",
            if self.is_equal() {
                "checkpoints are equal"
            } else {
                "checkpoints differ"
            }
        );
        s
    }
}

impl MetadataDiff {
    pub fn is_equal(&self) -> bool {
        self.only_in_a.is_empty() && self.only_in_b.is_empty() && self.changed.is_empty()
    }

    pub fn to_json(&self) -> Json {
        let change = |c: &MetadataChange| json!({"name": c.name, "a": c.a, "b": c.b});
        json!({
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "changed": self.changed.iter().map(change).collect::<Vec<_>>(),
            "close": self.close.iter().map(change).collect::<Vec<_>>(),
            "identical": self.identical,
        })
    }

    /// The sections of [`DiffReport::to_text`] about metadata (nothing when all is equal).
    fn to_text(&self, tolerance: &str) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        for (title, names) in [
            ("metadata only in a", &self.only_in_a),
            ("metadata only in b", &self.only_in_b),
        ] {
            if !names.is_empty() {
                let _ = writeln!(s, "{title} ({}):", names.len());
                for n in names {
                    let _ = writeln!(s, "  {n}");
                }
            }
        }
        for (title, changes) in [
            ("metadata changed".to_string(), &self.changed),
            (format!("metadata within {tolerance}"), &self.close),
        ] {
            if !changes.is_empty() {
                let _ = writeln!(s, "{title} ({}):", changes.len());
                for c in changes {
                    let _ = writeln!(s, "  {}: {} -> {}", c.name, short(&c.a), short(&c.b));
                }
            }
        }
        s
    }
}

/// A metadata value on one line, cut at 80 characters.
fn short(v: &Json) -> String {
    let text = v.to_string();
    if text.chars().count() <= 80 {
        return text;
    }
    let cut: String = text.chars().take(77).collect();
    format!("{cut}...")
}
