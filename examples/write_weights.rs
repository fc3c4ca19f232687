//! Hands weights made in Rust to PyTorch: builds a small model's tensors as ndarray arrays
//! (float32, float16, int64), writes them as `weights.pth` (for `torch.load`) and
//! `weights.safetensors` in OUT_DIR, and prints what was written as JSON (name, dtype, shape
//! and values).
//!
//! ```sh
//! cargo run --features ndarray --example write_weights -- OUT_DIR [--force-zip64]
//! ```
//!
//! `--force-zip64` writes the .pth with zip64 records, as torch.save does for files of 4 GiB
//! and more, so that a small file shows PyTorch reads them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use half::f16;
use ndarray::{Array, Array1, Array2, Dimension};
use serde_json::Value;

use ckpt::{write, CheckpointBuilder, Element, OutFormat, WriteOptions};

fn main() -> ExitCode {
    let mut out_dir = None;
    let mut force_zip64 = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--force-zip64" => force_zip64 = true,
            _ if out_dir.is_none() && !arg.starts_with("--") => out_dir = Some(PathBuf::from(arg)),
            _ => return fail(&format!("usage: write_weights OUT_DIR [--force-zip64] (got {arg})")),
        }
    }
    let Some(out_dir) = out_dir else {
        return fail("usage: write_weights OUT_DIR [--force-zip64]");
    };
    match run(&out_dir, force_zip64) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("write_weights: {message}");
    ExitCode::from(2)
}

fn run(out_dir: &Path, force_zip64: bool) -> ckpt::Result<serde_json::Value> {
    let weight: Array2<f32> = Array::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f32 * 0.25 - 1.0);
    let bias: Array1<f32> = Array::from_vec(vec![0.5, -0.125, 3.0e-5]);
    let embedding: Array2<f16> = Array::from_shape_fn((2, 3), |(i, j)| f16::from_f32(i as f32 - j as f32 / 3.0));
    let positions: Array1<i64> = Array::from_iter([0, 1, -1, i64::MAX, i64::MIN]);
    let step = ndarray::arr0(1000i64);
    let ckpt = CheckpointBuilder::new()
        .array("linear.weight", &weight)?
        .array("linear.bias", &bias)?
        .array("embed.weight", &embedding)?
        .array("positions", &positions)?
        .array("step", &step)?
        .build();
    let mut pth = WriteOptions::new(OutFormat::Pth);
    pth.force_zip64 = force_zip64;
    write(&ckpt, &out_dir.join("weights.pth"), &pth)?;
    let safetensors = WriteOptions::new(OutFormat::Safetensors);
    write(&ckpt, &out_dir.join("weights.safetensors"), &safetensors)?;
    let tensors = [
        describe("linear.weight", &weight, |v| v.into()),
        describe("linear.bias", &bias, |v| v.into()),
        // float16 widened to float32: exact.
        describe("embed.weight", &embedding, |v| v.to_f32().into()),
        describe("positions", &positions, |v| v.into()),
        describe("step", &step, |v| v.into()),
    ];
    Ok(serde_json::json!({ "tensors": tensors }))
}

/// What was written of one array: name, dtype, shape and values in row-major order.
fn describe<T: Element, D: Dimension>(name: &str, a: &Array<T, D>, value: impl Fn(T) -> Value) -> Value {
    let values: Vec<Value> = a.iter().map(|&v| value(v)).collect();
    serde_json::json!({ "name": name, "dtype": T::DTYPE.name(), "shape": a.shape(), "values": values })
}
