//! ckpt: read, inspect, rewrite and convert deep-learning checkpoints (PyTorch zip and legacy
//! formats, whole-model pickles, TorchScript archives, safetensors, sharded checkpoints) without
//! ever executing a pickle.
//!
//! The pipeline: a reader ([`open()`]) produces a [`Checkpoint`]; commands work on it; tensor
//! data stays a byte range of the input file until something needs the bytes.
//!
//! # Library
//!
//! [`open()`] reads a checkpoint of any kind; [`Checkpoint::tensor`] finds a tensor by name and
//! [`Checkpoint::tensors`] lists them in file order, each a [`TensorRef`] with its dtype, shape,
//! strides, device and flags; its elements come as bytes ([`TensorRef::read_bytes`]), as a
//! `Vec` of the Rust type of its dtype ([`TensorRef::to_vec`], see [`Element`]) or, with the
//! `ndarray` feature, as an array (`TensorRef::to_ndarray`, zero-copy `view_ndarray`). The
//! other way, [`CheckpointBuilder`] makes a checkpoint of named slices (or ndarray arrays) that
//! [`write()`] saves as a .pth or safetensors file; [`scan_path`] judges what loading a file
//! with Python would run, without loading it. [`TensorRef::stats`] and [`Checkpoint::stats`]
//! give the numbers of one tensor or all (NaN and inf counts, min, max, mean, std, norm; see
//! [`stats`]), and [`check::check`] says whether a file is sound (zip CRCs, shard sizes, a
//! SHA-256 manifest, NaN and inf). [`curves::read`] and [`curves::analyze`] find a run's learning
//! curves and judge them (overfitting, underfitting, early stopping, the best checkpoint).
//! Every failure is an [`Error`]. This is the README's example:
//!
//! ```
//! use ckpt::{write, OutFormat, WriteOptions};
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
//!
//! # Features
//!
//! - `cli` (default): the `ckpt` binary, `cli::main`, with clap, anyhow and indicatif. A
//!   library user can leave it out (`default-features = false`).
//! - `ndarray`: tensors read into and built from `ndarray` arrays.
//! - `tch`: `ckpt verify`, which loads checkpoints with libtorch (implies `cli`).
//! - `internals`: not an API. It makes the internal modules public (and hidden from these docs)
//!   for the crate's own integration tests and fuzz targets; nothing in them is stable.

#![deny(missing_docs)]

/// Declares modules that are visible only inside the crate, or, with the `internals` feature,
/// public but hidden from the docs: the integration tests and fuzz targets drive readers,
/// transforms and writers directly, and no user should build on them.
macro_rules! internal {
    ($($(#[$attr:meta])* pub mod $name:ident;)*) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        $(#[$attr])*
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        $(#[$attr])*
        pub(crate) mod $name;
    )*};
}

/// Declares a public struct whose fields are private to the crate, or, with the `internals`
/// feature, public but hidden from the docs (see `internal!`): the invariants between them are
/// the crate's to keep.
macro_rules! internal_fields {
    ($(#[$attr:meta])* pub struct $name:ident { $($(#[$fattr:meta])* pub $field:ident: $ty:ty,)* }) => {
        #[cfg(feature = "internals")]
        $(#[$attr])*
        pub struct $name { $($(#[$fattr])* #[doc(hidden)] pub $field: $ty,)* }
        #[cfg(not(feature = "internals"))]
        $(#[$attr])*
        pub struct $name { $($(#[$fattr])* pub(crate) $field: $ty,)* }
    };
}

mod builder;
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod curves;
mod element;
mod error;
mod pass;
pub mod stats;
mod tensor_ref;

internal! {
    #[cfg(feature = "cli")]
    pub mod architecture;
    pub mod assembly;
    pub mod container;
    #[cfg(feature = "cli")]
    pub mod diff;
    pub mod dtype;
    pub mod elem;
    #[cfg(feature = "cli")]
    pub mod inspect;
    pub mod model;
    #[cfg(feature = "cli")]
    pub mod module_view;
    pub mod pickle;
    pub mod read;
    #[cfg(feature = "cli")]
    pub mod record;
    pub mod scan;
    pub mod source;
    pub mod tensor_data;
    #[cfg(feature = "cli")]
    pub mod transform;
    #[cfg(feature = "cli")]
    pub mod units;
    #[cfg(feature = "tch")]
    pub mod verify;
    pub mod write;
}

pub use builder::CheckpointBuilder;
pub use dtype::DType;
pub use element::Element;
pub use error::{Error, Result};
pub use model::{Checkpoint, Format};
pub use read::ReadLimits;
pub use scan::{scan_path, scan_paths, Finding, ScanReport, Verdict};
pub use tensor_ref::TensorRef;
pub use write::progress::{OnProgress, ProgressReport};
pub use write::{write, OutFormat, WriteOptions, WriteReport};

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
