//! The library's handle on one tensor of a [`Checkpoint`]: what it is (name, dtype, shape,
//! strides, device, flags) and its elements, read on demand as PyTorch's `t.contiguous()`
//! would hold them.

use std::io::Write;

use crate::dtype::DType;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::model::{Checkpoint, Storage, Tensor};
use crate::tensor_data::for_each_chunk;

/// Lookup and iteration: the entry points of the library API.
impl Checkpoint {
    /// The tensor named `name` (as `ckpt inspect` lists it: `fc.weight`,
    /// `optimizer_state_dict.state.0.exp_avg`), or None.
    ///
    /// Names are looked up in an index built on the first call, so a lookup does not search
    /// the tensors; only a name the index does not hold is searched for in order.
    ///
    /// ```
    /// # fn main() -> ckpt::Result<()> {
    /// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
    /// let ckpt = ckpt::open(&path)?;
    /// let w = ckpt.tensor("fc3.weight").expect("a Linear layer's weight");
    /// assert_eq!(w.shape(), [10, 12]);
    /// assert!(ckpt.tensor("no.such.tensor").is_none());
    /// # Ok(()) }
    /// ```
    pub fn tensor(&self, name: &str) -> Option<TensorRef<'_>> {
        let idx = self.names.find(&self.tensors, name)?;
        Some(TensorRef {
            ckpt: self,
            tensor: &self.tensors[idx],
        })
    }

    /// Every tensor, in the order of the file: a state_dict's order for PyTorch files, the order
    /// of the data for safetensors.
    ///
    /// ```
    /// # fn main() -> ckpt::Result<()> {
    /// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
    /// let ckpt = ckpt::open(&path)?;
    /// let params: u64 = ckpt.tensors().map(|t| t.numel()).sum();
    /// assert_eq!(params, ckpt.total_params());
    /// # Ok(()) }
    /// ```
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = TensorRef<'_>> + '_ {
        self.tensors.iter().map(move |tensor| TensorRef { ckpt: self, tensor })
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// One tensor of a [`Checkpoint`], borrowed from it; cheap to copy. Nothing is read from the
/// file until its elements are asked for.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    ckpt: &'a Checkpoint,
    tensor: &'a Tensor,
}

impl<'a> TensorRef<'a> {
    /// The name, as `ckpt inspect` lists it.
    pub fn name(&self) -> &'a str {
        &self.tensor.name
    }

    /// The element type (after any pending cast of its storage).
    pub fn dtype(&self) -> DType {
        self.tensor.dtype
    }

    /// `t.shape`.
    pub fn shape(&self) -> &'a [u64] {
        &self.tensor.shape
    }

    /// `t.stride()`, in elements, as saved: a view keeps its base's layout.
    pub fn strides(&self) -> &'a [u64] {
        &self.tensor.stride
    }

    /// `t.storage_offset()`, in elements.
    pub fn storage_offset(&self) -> u64 {
        self.tensor.offset
    }

    /// The device tag saved with the storage (`cpu`, `cuda:0`...); the bytes are readable
    /// whatever it says.
    pub fn device(&self) -> &'a str {
        &self.storage().location
    }

    /// `t.requires_grad` as `torch.load` gives it.
    pub fn requires_grad(&self) -> bool {
        self.tensor.requires_grad
    }

    /// Whether it was saved as an `nn.Parameter`.
    pub fn is_parameter(&self) -> bool {
        self.tensor.parameter
    }

    /// `t.numel()`.
    pub fn numel(&self) -> u64 {
        self.tensor.numel()
    }

    /// Bytes of its elements: `t.numel() * t.element_size()`.
    pub fn nbytes(&self) -> u64 {
        self.tensor.nbytes()
    }

    /// `t.is_contiguous()`.
    pub fn is_contiguous(&self) -> bool {
        self.tensor.is_contiguous()
    }

    /// Its elements' bytes as `t.contiguous()` holds them on a little-endian machine: row-major,
    /// little-endian (big-endian files are swapped), in [`Self::dtype`].
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Malformed`] when the view does not
    /// fit its storage; [`Error::Unsupported`] for a pending cast ckpt cannot do or a tensor
    /// too large for memory.
    pub fn read_bytes(&self) -> Result<Vec<u8>> {
        let mut out = self.reserve::<u8>(self.nbytes())?;
        for_each_chunk::<Error>(self.ckpt, self.tensor, |bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        })?;
        Ok(out)
    }

    /// Streams the bytes [`Self::read_bytes`] gives into `out`, a chunk at a time, so a tensor
    /// larger than memory can be copied. Returns the number of bytes written.
    ///
    /// # Errors
    /// Those of [`Self::read_bytes`], and [`Error::Output`] when writing to `out` fails.
    pub fn write_bytes_to(&self, out: &mut impl Write) -> Result<u64> {
        let mut written = 0u64;
        for_each_chunk::<Error>(self.ckpt, self.tensor, |bytes| {
            written += bytes.len() as u64;
            out.write_all(bytes).map_err(|source| Error::Output {
                tensor: self.tensor.name.clone(),
                source,
            })
        })?;
        Ok(written)
    }

    /// Its elements in row-major order, the values `t.flatten().tolist()` gives in Python, as
    /// the Rust type of its dtype ([`Element`]: f32 for float32, [`half::bf16`] for bfloat16...).
    /// Views, strides and big-endian files are honoured.
    ///
    /// ```
    /// # fn main() -> ckpt::Result<()> {
    /// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
    /// let ckpt = ckpt::open(&path)?;
    /// let bias: Vec<f32> = ckpt.tensor("fc3.bias").unwrap().to_vec()?;
    /// assert_eq!(bias.len(), 10);
    /// // Asking for another type than the tensor's is an error, not a conversion.
    /// assert!(matches!(
    ///     ckpt.tensor("fc3.bias").unwrap().to_vec::<f64>(),
    ///     Err(ckpt::Error::DTypeMismatch { .. })
    /// ));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] when `T` is not the tensor's dtype; those of
    /// [`Self::read_bytes`].
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.expect_dtype::<T>()?;
        let mut out = self.reserve::<T>(self.numel())?;
        let size = T::DTYPE.size();
        // Every chunk holds whole elements (see tensor_data::CHUNK).
        for_each_chunk::<Error>(self.ckpt, self.tensor, |bytes| {
            out.extend(bytes.chunks_exact(size).map(T::from_le));
            Ok(())
        })?;
        Ok(out)
    }

    /// The data model's record of the tensor, for the crate's lower layers.
    pub(crate) fn raw(&self) -> &'a Tensor {
        self.tensor
    }

    /// Calls `sink` with consecutive pieces of the bytes [`Self::read_bytes`] gives, each a
    /// whole number of elements.
    pub(crate) fn for_each_chunk<E: From<Error>>(
        &self,
        sink: impl FnMut(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        for_each_chunk(self.ckpt, self.tensor, sink)
    }

    fn storage(&self) -> &'a Storage {
        self.ckpt.storage(self.tensor.storage)
    }

    fn expect_dtype<T: Element>(&self) -> Result<()> {
        if T::DTYPE == self.tensor.dtype {
            return Ok(());
        }
        Err(Error::DTypeMismatch {
            tensor: self.tensor.name.clone(),
            expected: T::DTYPE,
            found: self.tensor.dtype,
        })
    }

    /// An empty vector with room for `n` items, or an error where memory cannot hold them.
    fn reserve<T>(&self, n: u64) -> Result<Vec<T>> {
        let mut out = Vec::new();
        usize::try_from(n)
            .ok()
            .and_then(|n| out.try_reserve_exact(n).ok())
            .ok_or_else(|| Error::Unsupported {
                path: self.storage().data.source.path().into(),
                what: format!("tensor '{}': {n} elements do not fit in memory", self.tensor.name),
            })?;
        Ok(out)
    }
}

#[cfg(feature = "ndarray")]
mod arrays {
    use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};

    use super::TensorRef;
    use crate::element::Element;
    use crate::error::{Error, Result};
    use crate::model::ByteOrder;

    impl<'a> TensorRef<'a> {
        /// Its elements as an n-dimensional array of its shape (row-major), the values
        /// `t.numpy()` gives; any view, stride or byte order. Needs the `ndarray` feature.
        ///
        /// ```
        /// # fn main() -> ckpt::Result<()> {
        /// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
        /// let ckpt = ckpt::open(&path)?;
        /// let w = ckpt.tensor("fc3.weight").unwrap().to_ndarray::<f32>()?;
        /// assert_eq!(w.shape(), [10, 12]);
        /// # Ok(()) }
        /// ```
        ///
        /// # Errors
        /// Those of [`TensorRef::to_vec`].
        pub fn to_ndarray<T: Element>(&self) -> Result<ArrayD<T>> {
            let shape = self.usize_dims(self.shape())?;
            let data = self.to_vec::<T>()?;
            ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| self.malformed(e))
        }

        /// The elements in place, without a copy: an array view of the bytes in the file's map
        /// (or the builder's buffer), with the tensor's shape and strides. None where the bytes
        /// cannot be used as they lie: a big-endian file or machine, a pending cast, storage
        /// bytes not aligned for `T` (a safetensors header whose length is not a multiple of
        /// the element size), or a bool storage holding bytes other than 0 and 1. Then use
        /// [`TensorRef::to_ndarray`].
        ///
        /// ```
        /// # fn main() -> ckpt::Result<()> {
        /// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
        /// let ckpt = ckpt::open(&path)?;
        /// let w = ckpt.tensor("fc3.weight").unwrap();
        /// if let Some(view) = w.view_ndarray::<f32>()? {
        ///     assert_eq!(view, w.to_ndarray::<f32>()?);
        /// }
        /// # Ok(()) }
        /// ```
        ///
        /// # Errors
        /// [`Error::DTypeMismatch`] when `T` is not the tensor's dtype; [`Error::Malformed`]
        /// when the view does not fit its storage.
        pub fn view_ndarray<T: Element>(&self) -> Result<Option<ArrayViewD<'a, T>>> {
            self.expect_dtype::<T>()?;
            let storage = self.storage();
            let in_place = cfg!(target_endian = "little")
                && storage.byte_order == ByteOrder::Little
                && storage.cast.is_none_or(|c| c.from == c.to)
                && storage.data.source.assembly().is_none();
            let Some(elements) = in_place.then(|| storage_elements::<T>(storage.data.bytes())).flatten() else {
                return Ok(None);
            };
            let shape = self.usize_dims(self.shape())?;
            if self.numel() == 0 {
                // No element to point at (the storage may have no bytes at all).
                return Ok(ArrayViewD::from_shape(IxDyn(&shape), &[]).ok());
            }
            let strides = self.usize_dims(self.strides())?;
            let offset = usize::try_from(self.storage_offset()).unwrap_or(usize::MAX);
            let from_offset = elements.get(offset..).unwrap_or(&[]);
            // ndarray checks that every index the shape and strides reach lies in the slice
            // (overlapping windows are allowed in a read-only view).
            ArrayViewD::from_shape(IxDyn(&shape).strides(IxDyn(&strides)), from_offset)
                .map(Some)
                .map_err(|e| self.malformed(e))
        }

        fn usize_dims(&self, dims: &[u64]) -> Result<Vec<usize>> {
            dims.iter()
                .map(|&d| usize::try_from(d).map_err(|e| self.malformed(e)))
                .collect()
        }

        fn malformed(&self, e: impl std::fmt::Display) -> Error {
            let path = self.storage().data.source.path();
            Error::malformed(path, format!("tensor '{}'", self.name()), e.to_string())
        }
    }

    /// The storage's bytes as whole `T`s, if they are aligned for `T` and valid values of it.
    fn storage_elements<T: Element>(bytes: &[u8]) -> Option<&[T]> {
        if bytes.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
            return None;
        }
        if !T::ANY_BITS && bytes.iter().any(|&b| b > 1) {
            return None;
        }
        let n = bytes.len() / std::mem::size_of::<T>();
        // SAFETY: the pointer is aligned for T; n elements of T lie within `bytes`, which stays
        // borrowed for the result's lifetime; every Element is a plain number whose every bit
        // pattern is a value, except bool, whose bytes were just checked to be 0 or 1.
        Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), n) })
    }
}
