//! Devices: parsing `--device`, and refusing one libtorch does not have.

use tch::Device;

use super::report::VerifyError;

/// Parses `cpu`, `cuda` (= `cuda:0`) or `cuda:N`. Does not check that the device exists.
pub fn parse_device(s: &str) -> Result<Device, VerifyError> {
    let s = s.trim();
    match s {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => return Ok(Device::Cuda(0)),
        _ => {}
    }
    if let Some(n) = s.strip_prefix("cuda:") {
        if let Ok(n) = n.parse::<usize>() {
            return Ok(Device::Cuda(n));
        }
    }
    Err(VerifyError::Device(format!(
        "unknown device '{s}': expected cpu, cuda or cuda:N"
    )))
}

pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(n) => format!("cuda:{n}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// Whether this build's libtorch has CUDA (libtorch_cuda.so was linked), as build.rs found it.
pub fn built_with_cuda() -> bool {
    env!("CKPT_LIBTORCH_CUDA") == "1"
}

/// The libtorch lib dir this binary was linked against (its rpath), if build.rs knew it.
pub fn built_libtorch_dir() -> &'static str {
    env!("CKPT_LIBTORCH_LIB")
}

/// Checks that libtorch can use the device: a clear error where there is no CUDA device.
pub fn check_device(device: Device) -> Result<(), VerifyError> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(n) => {
            let count = tch::Cuda::device_count();
            if !tch::Cuda::is_available() || count <= 0 {
                let why = if built_with_cuda() {
                    "libtorch finds no CUDA device (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)"
                } else {
                    "this ckpt was built against a libtorch without CUDA (no libtorch_cuda.so)"
                };
                return Err(VerifyError::Device(format!("--device {}: {why}", device_name(device))));
            }
            if n as i64 >= count {
                return Err(VerifyError::Device(format!(
                    "--device cuda:{n}: libtorch sees {count} CUDA device(s), numbered 0 to {}",
                    count - 1
                )));
            }
            Ok(())
        }
        other => Err(VerifyError::Device(format!(
            "--device {}: ckpt verify supports cpu and cuda",
            device_name(other)
        ))),
    }
}
