//! `ckpt diff`: compares two checkpoints tensor by tensor, by name, across formats (a `.pth`
//! and its safetensors conversion compare as identical).
//!
//! Values are compared element by element after decoding: floating kinds (float8 included)
//! and complex numbers exactly to f64, integers and bool exactly as integers. NaN equals NaN,
//! -0.0 equals 0.0, inf equals inf of the same sign. A tensor is *identical* when every
//! element is equal, *close* when every element is within `atol` (absolute) of its partner
//! but not all are equal, and *changed* otherwise. Tensors whose dtype or shape differ are
//! listed apart; where only the dtype differs (a float32 model and its bfloat16 conversion),
//! their values are still compared and the largest difference reported.
//!
//! Nothing is held whole: both tensors are streamed with [`tensor_data::for_each_chunk`] (the
//! second on a helper thread, through a bounded channel) and compared chunk against chunk.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver};

use serde_json::{json, Value as Json};

use crate::dtype::DType;
use crate::error::Error;
use crate::model::{Checkpoint, Tensor};
use crate::tensor_data;
use crate::transform::elem::{decode_complex, decode_f64, decode_int};

/// The result of [`diff`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiffReport {
    pub atol: f64,
    /// Tensor names only in the first / second checkpoint, in their order.
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    pub dtype_or_shape_changed: Vec<LayoutChange>,
    /// Some element differs by more than `atol` (or is NaN on one side only).
    pub values_changed: Vec<ValueChange>,
    /// Every element within `atol`, not all equal (empty when `atol` is 0).
    pub close: Vec<ValueChange>,
    /// Every element equal.
    pub identical: Vec<String>,
    /// Tensors whose bytes could not be read: (name, error).
    pub errors: Vec<(String, String)>,
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
    /// Elements that differ by more than `atol` (for `close`: that are not equal).
    pub differing: u64,
    pub numel: u64,
}

/// Compares `a` and `b` by tensor name. See the module docs for what counts as equal.
pub fn diff(a: &Checkpoint, b: &Checkpoint, atol: f64) -> DiffReport {
    let atol = if atol.is_nan() || atol < 0.0 { 0.0 } else { atol };
    let mut report = DiffReport {
        atol,
        ..Default::default()
    };
    let index_b: HashMap<&str, &Tensor> = b.tensors.iter().rev().map(|t| (t.name.as_str(), t)).collect();
    let index_a: HashMap<&str, &Tensor> = a.tensors.iter().rev().map(|t| (t.name.as_str(), t)).collect();
    let mut seen = std::collections::HashSet::new();
    for ta in &a.tensors {
        if !seen.insert(ta.name.as_str()) {
            continue;
        }
        let Some(tb) = index_b.get(ta.name.as_str()) else {
            report.only_in_a.push(ta.name.clone());
            continue;
        };
        let same_shape = ta.shape == tb.shape;
        if ta.dtype != tb.dtype || !same_shape {
            let max_abs_diff = if same_shape {
                compare(a, ta, b, tb, atol).ok().map(|s| s.max_abs_diff)
            } else {
                None
            };
            report.dtype_or_shape_changed.push(LayoutChange {
                name: ta.name.clone(),
                a_dtype: ta.dtype,
                a_shape: ta.shape.clone(),
                b_dtype: tb.dtype,
                b_shape: tb.shape.clone(),
                max_abs_diff,
            });
            continue;
        }
        match compare(a, ta, b, tb, atol) {
            Err(e) => report.errors.push((ta.name.clone(), e)),
            Ok(s) if s.unequal == 0 => report.identical.push(ta.name.clone()),
            Ok(s) if s.beyond == 0 => report.close.push(ValueChange {
                name: ta.name.clone(),
                max_abs_diff: s.max_abs_diff,
                differing: s.unequal,
                numel: ta.numel(),
            }),
            Ok(s) => report.values_changed.push(ValueChange {
                name: ta.name.clone(),
                max_abs_diff: s.max_abs_diff,
                differing: s.beyond,
                numel: ta.numel(),
            }),
        }
    }
    let mut seen_b = std::collections::HashSet::new();
    for tb in &b.tensors {
        if seen_b.insert(tb.name.as_str()) && !index_a.contains_key(tb.name.as_str()) {
            report.only_in_b.push(tb.name.clone());
        }
    }
    report
}

#[derive(Debug, Default)]
struct Stats {
    max_abs_diff: f64,
    /// Elements not equal.
    unequal: u64,
    /// Elements differing by more than atol.
    beyond: u64,
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
fn compare(a: &Checkpoint, ta: &Tensor, b: &Checkpoint, tb: &Tensor, atol: f64) -> Result<Stats, String> {
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
            let mut off = 0;
            while off + ea <= bytes.len() {
                let Some(other) = pending.next(eb) else {
                    mismatch = Some(format!("'{}' ended early in the second checkpoint", tb.name));
                    return Ok(());
                };
                let (eq, d) = elem_diff(da(ta.dtype, &bytes[off..off + ea]), db(tb.dtype, other));
                if !eq {
                    stats.unequal += 1;
                    if d > atol || d.is_nan() {
                        stats.beyond += 1;
                    }
                    if d > stats.max_abs_diff || d.is_nan() {
                        stats.max_abs_diff = d;
                    }
                }
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
    /// No tensor only on one side, no dtype/shape change, no value beyond `atol`, nothing
    /// unreadable.
    pub fn is_equal(&self) -> bool {
        self.only_in_a.is_empty()
            && self.only_in_b.is_empty()
            && self.dtype_or_shape_changed.is_empty()
            && self.values_changed.is_empty()
            && self.errors.is_empty()
    }

    pub fn to_json(&self) -> Json {
        let change = |c: &ValueChange| json!({"name": c.name, "max_abs_diff": num(c.max_abs_diff), "differing": c.differing, "numel": c.numel});
        json!({
            "equal": self.is_equal(),
            "atol": num(self.atol),
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
                    "  {}: max abs diff {:e}, {} of {} elements beyond atol {}",
                    c.name, c.max_abs_diff, c.differing, c.numel, self.atol
                );
            }
        }
        if !self.close.is_empty() {
            let _ = writeln!(s, "within atol {} ({}):", self.atol, self.close.len());
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
        let _ = writeln!(
            s,
            "identical: {} tensor{}",
            self.identical.len(),
            if self.identical.len() == 1 { "" } else { "s" }
        );
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
