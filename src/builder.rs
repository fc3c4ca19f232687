//! Checkpoints made in a program: named arrays become a [`Checkpoint`] that the writers
//! ([`crate::write::write`]) turn into a file `torch.load` or safetensors loads.

use std::sync::Arc;

use crate::element::Element;
use crate::error::{Error, Result};
use crate::model::{ByteOrder, Checkpoint, DataRef, Format, Key, Node, Origin, Storage, StorageId, Tensor};
use crate::source::Source;

/// The name the bytes of a built checkpoint go by in error messages.
const SOURCE_NAME: &str = "<built checkpoint>";

/// Each tensor's bytes start at a multiple of this in the builder's buffer, as in a .pth's
/// zip records, so that no element straddles an alignment boundary of its type.
const ALIGN: usize = 64;

/// Collects named tensors, in order, into a [`Checkpoint`]: a state_dict of CPU tensors
/// (`torch.load` of the .pth written from it returns an `OrderedDict` in this order).
///
/// ```
/// use ckpt::write::{write, OutFormat, WriteOptions};
///
/// # fn main() -> ckpt::Result<()> {
/// let ckpt = ckpt::CheckpointBuilder::new()
///     .tensor("fc.weight", &[0.5f32, -1.0, 2.0, 0.25, 1.5, -0.75], &[2, 3])?
///     .tensor("fc.bias", &[0.1f32, 0.2], &[2])?
///     .build();
/// assert_eq!(ckpt.tensor("fc.bias").unwrap().to_vec::<f32>()?, [0.1, 0.2]);
/// # let dir = tempfile::tempdir().unwrap();
/// # let out = dir.path().join("linear.pth");
/// write(&ckpt, &out, &WriteOptions::new(OutFormat::Pth))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct CheckpointBuilder {
    bytes: Vec<u8>,
    tensors: Vec<Tensor>,
    /// (offset, length) of each tensor's bytes in `bytes`; tensor i has storage i.
    ranges: Vec<(u64, u64)>,
}

impl CheckpointBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor of shape `shape` holding `data` in row-major order; its dtype is `T`'s
    /// ([`Element::DTYPE`]). `&[]` is the shape of a scalar (one element).
    ///
    /// # Errors
    /// [`Error::DuplicateName`] when a tensor of that name was added before;
    /// [`Error::ShapeMismatch`] when `data` does not hold exactly the shape's elements.
    pub fn tensor<T: Element>(self, name: &str, data: &[T], shape: &[u64]) -> Result<Self> {
        self.add(name, shape, data.len() as u64, data.iter().copied())
    }

    /// Builds the checkpoint. Its tensors' bytes stay in memory until a writer streams them.
    pub fn build(self) -> Checkpoint {
        let source = Source::from_memory(SOURCE_NAME, self.bytes);
        let storages = self
            .ranges
            .iter()
            .map(|&(offset, len)| storage(&source, offset, len))
            .collect();
        let items = self
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (Key::Str(t.name.clone()), Node::Tensor(i)))
            .collect();
        Checkpoint {
            format: Format::Built,
            root: Node::Dict { ordered: true, items },
            tensors: self.tensors,
            storages,
            metadata: Default::default(),
            globals: Default::default(),
            origin: Origin::Data,
            files: Vec::new(),
            module_classes: Default::default(),
            modules: Vec::new(),
            names: Default::default(),
        }
    }

    /// Appends a tensor of `count` elements given by `values` in row-major order.
    fn add<T: Element>(
        mut self,
        name: &str,
        shape: &[u64],
        count: u64,
        values: impl Iterator<Item = T>,
    ) -> Result<Self> {
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(Error::DuplicateName { tensor: name.into() });
        }
        let expected = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        if expected != Some(count) {
            return Err(Error::ShapeMismatch {
                tensor: name.into(),
                shape: shape.to_vec(),
                expected: expected.unwrap_or(u64::MAX),
                found: count,
            });
        }
        self.bytes.resize(self.bytes.len().next_multiple_of(ALIGN), 0);
        let start = self.bytes.len();
        for v in values {
            v.put_le(&mut self.bytes);
        }
        self.ranges.push((start as u64, (self.bytes.len() - start) as u64));
        self.tensors.push(Tensor {
            name: name.into(),
            dtype: T::DTYPE,
            shape: shape.to_vec(),
            stride: contiguous_strides(shape),
            offset: 0,
            storage: StorageId(self.tensors.len()),
            requires_grad: false,
            parameter: false,
        });
        Ok(self)
    }
}

/// A CPU storage of `len` bytes at `offset` of `source`.
fn storage(source: &Arc<Source>, offset: u64, len: u64) -> Storage {
    Storage {
        key: None,
        location: "cpu".into(),
        byte_order: ByteOrder::Little,
        data: DataRef {
            source: source.clone(),
            offset,
            len,
        },
        cast: None,
    }
}

/// Row-major strides of `shape`, in elements, as torch gives a new tensor.
fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    strides
}

#[cfg(feature = "ndarray")]
mod arrays {
    use ndarray::{ArrayBase, Data, Dimension};

    use super::CheckpointBuilder;
    use crate::element::Element;
    use crate::error::Result;

    impl CheckpointBuilder {
        /// Adds an array as a tensor of its shape, its elements in row-major (logical) order
        /// whatever its memory layout. Needs the `ndarray` feature.
        ///
        /// ```
        /// # fn main() -> ckpt::Result<()> {
        /// let w = ndarray::Array2::<f32>::eye(3);
        /// let ckpt = ckpt::CheckpointBuilder::new().array("proj.weight", &w.t())?.build();
        /// assert_eq!(ckpt.tensor("proj.weight").unwrap().to_ndarray::<f32>()?, w.into_dyn());
        /// # Ok(()) }
        /// ```
        ///
        /// # Errors
        /// [`crate::Error::DuplicateName`] when a tensor of that name was added before.
        pub fn array<T, S, D>(self, name: &str, array: &ArrayBase<S, D>) -> Result<Self>
        where
            T: Element,
            S: Data<Elem = T>,
            D: Dimension,
        {
            let shape: Vec<u64> = array.shape().iter().map(|&d| d as u64).collect();
            self.add(name, &shape, array.len() as u64, array.iter().copied())
        }
    }
}
