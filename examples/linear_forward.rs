//! Runs one Linear layer of a saved model in Rust: reads its weight and bias into ndarray
//! arrays and computes `y = x Wᵀ + b` (what `torch.nn.functional.linear` does) for a fixed
//! input, then prints the input and output as JSON.
//!
//! ```sh
//! cargo run --features ndarray --example linear_forward -- fixtures/cnn_state_dict.pth fc3
//! ```

use std::process::ExitCode;

use ndarray::{Array1, Array2, Ix1, Ix2};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "fixtures/cnn_state_dict.pth".into());
    let layer = args.next().unwrap_or_else(|| "fc3".into());
    match forward(&path, &layer) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("linear_forward: {e}");
            ExitCode::from(2)
        }
    }
}

fn forward(path: &str, layer: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let ckpt = ckpt::open(path)?;
    let find = |name: String| ckpt.tensor(&name).ok_or(format!("{path} has no tensor {name}"));
    let weight: Array2<f32> = find(format!("{layer}.weight"))?
        .to_ndarray::<f32>()?
        .into_dimensionality::<Ix2>()?;
    let bias: Array1<f32> = find(format!("{layer}.bias"))?
        .to_ndarray::<f32>()?
        .into_dimensionality::<Ix1>()?;
    // A batch of two inputs with values spread over [-1.5, 1.5].
    let x = Array2::from_shape_fn((2, weight.ncols()), |(i, j)| {
        (j as f32 - 6.0) / 4.0 * (1.0 - i as f32 * 0.5)
    });
    let y = x.dot(&weight.t()) + &bias;
    Ok(serde_json::json!({ "layer": layer, "x": rows(&x), "y": rows(&y) }))
}

fn rows(a: &Array2<f32>) -> Vec<Vec<f32>> {
    a.rows().into_iter().map(|r| r.to_vec()).collect()
}
