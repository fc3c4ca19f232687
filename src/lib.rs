//! ckpt: read, inspect, rewrite and convert deep-learning checkpoints (PyTorch zip and legacy
//! formats, whole-model pickles, TorchScript archives, safetensors, sharded checkpoints) without
//! ever executing a pickle.
//!
//! The pipeline: a reader ([`read::open`]) produces a [`model::Checkpoint`]; commands work on it;
//! tensor data stays a byte range of the input file until something needs the bytes.
//!
//! # Library
//!
//! [`open()`] reads a checkpoint of any kind; [`Checkpoint::tensor`] finds a tensor by name and
//! [`Checkpoint::tensors`] lists them in file order, each a [`TensorRef`] with its dtype, shape,
//! strides, device and flags; its elements come as bytes ([`TensorRef::read_bytes`]), as a
//! `Vec` of the Rust type of its dtype ([`TensorRef::to_vec`], see [`Element`]) or, with the
//! `ndarray` feature, as an array (`TensorRef::to_ndarray`, zero-copy `view_ndarray`). The
//! other way, [`CheckpointBuilder`] makes a checkpoint of named slices (or ndarray arrays) that
//! [`write::write`] saves as a .pth or safetensors file. Every failure is an [`Error`]. This is
//! the README's example:
//!
//! ```
//! use ckpt::write::{write, OutFormat, WriteOptions};
//!
//! fn main() -> ckpt::Result<()> {
//!     // Read any PyTorch or safetensors checkpoint; no pickle is executed.
//!     let ckpt = ckpt::open("fixtures/cnn_state_dict.pth")?;
//!     let w = ckpt.tensor("fc3.weight").expect("a tensor of that name");
//!     println!("{} {} {:?} {}", w.name(), w.dtype(), w.shape(), w.device()); // fc3.weight float32 [10, 12] cpu
//!     let weight: Vec<f32> = w.to_vec()?; // checked: a float16 tensor here is Error::DTypeMismatch
//!     let bias: Vec<f32> = ckpt.tensor("fc3.bias").expect("a tensor of that name").to_vec()?;
//!
//!     // torch.nn.functional.linear(x, weight, bias) for one input x
//!     let x = [0.5f32; 12];
//!     let y: Vec<f32> = (0..10)
//!         .map(|o| bias[o] + (0..12).map(|i| weight[o * 12 + i] * x[i]).sum::<f32>())
//!         .collect();
//!     println!("{y:?}");
//!
//!     // Write named tensors as a file torch.load (or safetensors) reads.
//!     let head = ckpt::CheckpointBuilder::new()
//!         .tensor("head.weight", &weight, &[10, 12])?
//!         .tensor("head.bias", &bias, &[10])?
//!         .build();
//!     let mut options = WriteOptions::new(OutFormat::Pth);
//!     options.force = true; // replace the file of an earlier run
//!     write(&head, &std::env::temp_dir().join("head.pth"), &options)?;
//!     Ok(())
//! }
//! ```

mod builder;
pub mod check;
pub mod container;
pub mod diff;
pub mod dtype;
mod element;
pub mod error;
pub mod inspect;
pub mod model;
mod pass;
pub mod pickle;
pub mod read;
pub mod record;
pub mod scan;
pub mod source;
pub mod stats;
pub mod tensor_data;
mod tensor_ref;
pub mod transform;
pub mod units;
#[cfg(feature = "tch")]
pub mod verify;
pub mod write;

pub use builder::CheckpointBuilder;
pub use element::Element;
pub use error::{Error, Result};
pub use model::Checkpoint;
pub use read::ReadLimits;
pub use tensor_ref::TensorRef;

/// Reads a checkpoint of any kind ckpt knows, with the default [`ReadLimits`]: a PyTorch file
/// (zip, legacy or tar format, whole-model pickle, TorchScript), a safetensors file, a sharded
/// checkpoint's `*.index.json` or the directory holding it. The kind is decided by the content,
/// never the extension; no pickle is executed.
///
/// ```
/// # fn main() -> ckpt::Result<()> {
/// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/model.safetensors");
/// let ckpt = ckpt::open(&path)?;
/// for t in ckpt.tensors() {
///     println!("{} {} {:?}", t.name(), t.dtype(), t.shape());
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`Error::Io`] when the path cannot be read; [`Error::UnknownFormat`] for content ckpt does
/// not read (or that two formats both accept); [`Error::Pickle`], [`Error::Malformed`],
/// [`Error::Safetensors`] and [`Error::Unsupported`] for files it cannot make sense of.
pub fn open(path: impl AsRef<std::path::Path>) -> Result<Checkpoint> {
    read::open(path.as_ref())
}

/// [`open()`] within the bounds of `limits`: for files from untrusted sources.
///
/// ```
/// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
/// let mut limits = ckpt::ReadLimits::default();
/// limits.max_pickle_bytes = 16;
/// assert!(ckpt::open_with(&path, &limits).is_err());
/// ```
///
/// # Errors
/// Those of [`open()`], and [`Error::Malformed`] or [`Error::Pickle`] when the file exceeds a
/// limit.
pub fn open_with(path: impl AsRef<std::path::Path>, limits: &ReadLimits) -> Result<Checkpoint> {
    read::open_with(path.as_ref(), limits)
}
