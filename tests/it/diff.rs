//! `ckpt::diff`: fixtures against themselves and against their other-format twins, and small
//! in-memory checkpoints for every category and for chunk alignment.

use ckpt::diff::diff;
use ckpt::dtype::DType;
use ckpt::model::Checkpoint;

use crate::common::{expected, fixtures_dir};
use crate::transform::{dict, Mk};

fn open(rel: &str) -> Checkpoint {
    ckpt::read::open(&fixtures_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_fixture_is_identical_to_itself() {
    for rel in expected()["fixtures"].as_object().unwrap().keys() {
        let c = open(rel);
        let d = diff(&c, &c, 0.0);
        assert!(d.is_equal(), "{rel}:\n{}", d.to_text());
        let mut unique: Vec<&str> = c.tensors.iter().map(|t| t.name.as_str()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(d.identical.len(), unique.len(), "{rel}:\n{}", d.to_text());
        assert!(d.close.is_empty() && d.errors.is_empty());
    }
}

#[test]
fn twins_across_formats_are_identical() {
    for (a, b) in [
        ("cnn_state_dict.pth", "cnn_keep_vars.pth"),     // detached vs Parameters
        ("cnn_state_dict.pth", "legacy_state_dict.pth"), // zip vs legacy
        ("cnn_state_dict.pth", "protocol5.pth"),
        ("cnn_state_dict.pth", "archive_prefix.pth"),
        ("cnn_keep_vars.pth", "cnn_model.pth"),  // state dict vs whole model
        ("cnn_model.pth", "torchscript_cnn.pt"), // whole model vs TorchScript
        ("views.pth", "legacy_views.pth"),       // strided views, zip vs legacy
        ("sharded_bin", "sharded_st"),           // torch.save shards vs safetensors shards
    ] {
        let d = diff(&open(a), &open(b), 0.0);
        assert!(d.is_equal(), "{a} vs {b}:\n{}", d.to_text());
        assert!(!d.identical.is_empty());
    }
}

#[test]
fn cnn_vs_its_dataparallel_wrapping() {
    let d = diff(&open("cnn_state_dict.pth"), &open("dataparallel.pth"), 0.0);
    assert!(!d.is_equal());
    assert_eq!(d.only_in_a.len(), 15);
    assert_eq!(d.only_in_b.len(), 15);
    assert_eq!(d.only_in_b[0], "module.conv1.weight");
    let j = d.to_json();
    assert_eq!(j["equal"], false);
    assert_eq!(j["only_in_b"].as_array().unwrap().len(), 15);
    assert!(d.to_text().contains("only in b (15)"));
}

fn f32_ckpt(vals: &[(&str, Vec<f32>)]) -> crate::transform::Built {
    let mut m = Mk::new();
    let items = vals.iter().map(|(n, v)| (*n, m.t(v))).collect();
    m.finish(dict(items))
}

#[test]
fn categories_nan_and_tolerance() {
    let nan = f32::NAN;
    let a = f32_ckpt(&[
        ("same", vec![1.0, nan, -0.0, f32::INFINITY]),
        ("small", vec![1.0, 2.0, 3.0]),
        ("nan_vs_num", vec![nan, 1.0]),
        ("gone", vec![1.0]),
        ("reshaped", vec![1.0, 2.0]),
    ]);
    let b = f32_ckpt(&[
        ("same", vec![1.0, nan, 0.0, f32::INFINITY]),
        ("small", vec![1.0, 2.25, 3.0]),
        ("nan_vs_num", vec![0.0, 1.0]),
        ("new", vec![1.0]),
        ("reshaped", vec![1.0, 2.0, 3.0]),
    ]);
    let d = diff(&a.ckpt, &b.ckpt, 0.0);
    assert_eq!(d.identical, ["same"]);
    assert_eq!(d.only_in_a, ["gone"]);
    assert_eq!(d.only_in_b, ["new"]);
    assert_eq!(d.dtype_or_shape_changed.len(), 1);
    assert_eq!(d.dtype_or_shape_changed[0].max_abs_diff, None);
    let changed: Vec<(&str, f64, u64)> = d
        .values_changed
        .iter()
        .map(|c| (c.name.as_str(), c.max_abs_diff, c.differing))
        .collect();
    assert_eq!(changed, [("small", 0.25, 1), ("nan_vs_num", f64::INFINITY, 1)]);
    assert!(!d.is_equal());
    // JSON has no inf: it becomes a string.
    let j = d.to_json();
    assert_eq!(j["values_changed"][1]["max_abs_diff"], "inf");
    assert_eq!(j["values_changed"][0]["max_abs_diff"], 0.25);
    // Within atol: close, not changed.
    let d = diff(&a.ckpt, &b.ckpt, 0.25);
    assert_eq!(d.close.len(), 1);
    assert_eq!(d.close[0].name, "small");
    assert_eq!(d.values_changed.len(), 1, "NaN against a number is never close");
    assert!(d.to_text().contains("within atol 0.25"));
}

#[test]
fn integers_compare_exactly_and_dtype_changes_still_compare_values() {
    let mut m = Mk::new();
    let big = (1i64 << 53) + 1;
    let s = m.storage(&big.to_le_bytes(), "cpu");
    let ia = m.view(s, DType::I64, &[1], 0);
    let f = m.t(&[0.5, 1.5]);
    let a = m.finish(dict(vec![("i", ia), ("f", f)]));
    let mut m = Mk::new();
    let s = m.storage(&(1i64 << 53).to_le_bytes(), "cpu");
    let ib = m.view(s, DType::I64, &[1], 0);
    let h = m.storage(&[0x00, 0x38, 0x00, 0x3E], "cpu"); // float16 0.5, 1.5
    let fb = m.view(h, DType::F16, &[2], 0);
    let b = m.finish(dict(vec![("i", ib), ("f", fb)]));
    let d = diff(&a.ckpt, &b.ckpt, 0.0);
    assert_eq!(d.values_changed.len(), 1);
    assert_eq!(
        (d.values_changed[0].name.as_str(), d.values_changed[0].max_abs_diff),
        ("i", 1.0)
    );
    assert_eq!(d.dtype_or_shape_changed.len(), 1);
    assert_eq!(d.dtype_or_shape_changed[0].b_dtype, DType::F16);
    assert_eq!(d.dtype_or_shape_changed[0].max_abs_diff, Some(0.0));
}

#[test]
fn streams_align_across_chunks_and_layouts() {
    // 3M elements: float32 (12 MB, several chunks) against float64 (24 MB, chunks of other
    // element counts) and against a transposed view, one element changed near the end.
    let n = 3_000_000usize;
    let vals: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
    let mut m = Mk::new();
    let a = m.t(&vals);
    let a = m.finish(dict(vec![("x", a)]));
    let mut m = Mk::new();
    let mut wide: Vec<u8> = vals.iter().flat_map(|v| (*v as f64).to_le_bytes()).collect();
    let k = n - 7;
    wide[k * 8..k * 8 + 8].copy_from_slice(&((vals[k] as f64) + 3.0).to_le_bytes());
    let s = m.storage(&wide, "cpu");
    let x = m.view(s, DType::F64, &[n as u64], 0);
    let b = m.finish(dict(vec![("x", x)]));
    let d = diff(&a.ckpt, &b.ckpt, 0.0);
    assert_eq!(d.dtype_or_shape_changed.len(), 1);
    assert_eq!(d.dtype_or_shape_changed[0].max_abs_diff, Some(3.0));
    // Contiguous [rows, cols] against the transpose of a [cols, rows] storage.
    let (rows, cols) = (1500usize, 1000usize);
    let mut m = Mk::new();
    let c = m.t(&vals);
    let mut sa = m.finish(dict(vec![("m", c)]));
    sa.ckpt.tensors[0].shape = vec![rows as u64, cols as u64];
    sa.ckpt.tensors[0].stride = vec![cols as u64, 1];
    let mut tr = vec![0f32; n];
    for r in 0..rows {
        for c in 0..cols {
            tr[c * rows + r] = vals[r * cols + c];
        }
    }
    tr[5 * rows + 1400] += 1.0; // element (1400, 5)
    let mut m = Mk::new();
    let t = m.t(&tr);
    let mut sb = m.finish(dict(vec![("m", t)]));
    sb.ckpt.tensors[0].shape = vec![rows as u64, cols as u64];
    sb.ckpt.tensors[0].stride = vec![1, rows as u64];
    let d = diff(&sa.ckpt, &sb.ckpt, 0.0);
    assert_eq!(d.values_changed.len(), 1, "{}", d.to_text());
    assert_eq!(
        (d.values_changed[0].differing, d.values_changed[0].max_abs_diff),
        (1, 1.0)
    );
}

#[test]
fn a_pending_cast_is_a_dtype_change() {
    let a = open("cnn_state_dict.pth");
    let mut b = a.clone();
    ckpt::transform::cast(&mut b, DType::BF16, &ckpt::transform::Keep::default());
    let d = diff(&a, &b, 0.0);
    assert_eq!(d.dtype_or_shape_changed.len(), 14, "{}", d.to_text());
    assert_eq!(d.identical, ["bn.num_batches_tracked"]);
    // The stream applies the cast: the differences are bfloat16 rounding (values < 16).
    let mut rounded = 0;
    for c in &d.dtype_or_shape_changed {
        let m = c.max_abs_diff.unwrap_or_else(|| panic!("{}: not compared", c.name));
        assert!((0.0..0.07).contains(&m), "{}: {m}", c.name);
        rounded += usize::from(m > 0.0);
    }
    assert!(rounded >= 10, "{}", d.to_text());
}
