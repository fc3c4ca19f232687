//! The numbers of a tensor: counts of NaN, infinities, zeros and subnormals; min, max, mean,
//! std, absmax and L2 norm; what a float16 cast would lose. See [`TensorRef::stats`].

mod findings;
mod kernel;
mod moments;
mod nonfinite;

pub use findings::Findings;
pub use moments::Moments;
pub(crate) use nonfinite::tensors_with_nonfinite;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::pass;
use crate::tensor_ref::TensorRef;

/// The numbers of one tensor's elements, from [`TensorRef::stats`]. Every dtype has
/// [`values`](Self::values) (the real parts, for complex dtypes); complex dtypes add
/// [`imag`](Self::imag), integer and bool dtypes exact extremes, bool its count of `true`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorStats {
    dtype: DType,
    values: Moments,
    imag: Option<Moments>,
    /// Complex dtypes: elements whose real and imaginary parts are both zero.
    complex_zeros: u64,
    int_range: Option<(i128, i128)>,
}

impl TensorStats {
    pub(crate) fn new(dtype: DType, values: Moments, imag: Option<Moments>, int_range: Option<(i128, i128)>) -> Self {
        TensorStats {
            dtype,
            values,
            imag,
            complex_zeros: 0,
            int_range,
        }
    }

    /// The statistics of no elements of `dtype`.
    pub(crate) fn empty(dtype: DType) -> Self {
        Self::new(
            dtype,
            Moments::default(),
            dtype.is_complex().then(Moments::default),
            None,
        )
    }

    /// Folds in the statistics of the elements that follow.
    pub(crate) fn merge(&mut self, other: &TensorStats) {
        self.values.merge(&other.values);
        if let (Some(a), Some(b)) = (&mut self.imag, &other.imag) {
            a.merge(b);
        }
        self.complex_zeros += other.complex_zeros;
        self.int_range = match (self.int_range, other.int_range) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
    }

    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The elements' values (for complex dtypes, their real parts).
    pub fn values(&self) -> &Moments {
        &self.values
    }

    /// Complex dtypes: the imaginary parts; None for other dtypes.
    pub fn imag(&self) -> Option<&Moments> {
        self.imag.as_ref()
    }

    /// Integer and bool dtypes: the smallest element, exactly (f64 is exact only to 2^53).
    pub fn int_min(&self) -> Option<i128> {
        self.int_range.map(|r| r.0)
    }

    /// Integer and bool dtypes: the largest element, exactly.
    pub fn int_max(&self) -> Option<i128> {
        self.int_range.map(|r| r.1)
    }

    /// bool: how many elements are `true`; None for other dtypes.
    pub fn true_count(&self) -> Option<u64> {
        (self.dtype == DType::Bool).then(|| self.values.count() - self.values.zeros())
    }

    /// Elements equal to zero (complex ones: both parts zero).
    pub fn zeros(&self) -> u64 {
        if self.imag.is_some() {
            self.complex_zeros
        } else {
            self.values.zeros()
        }
    }

    /// The fraction of elements equal to zero; None for no elements.
    pub fn zero_fraction(&self) -> Option<f64> {
        let n = self.values.count();
        (n > 0).then(|| self.zeros() as f64 / n as f64)
    }

    /// Complex dtypes: counts `n` more elements that are zero.
    pub(crate) fn add_complex_zeros(&mut self, n: u64) {
        self.complex_zeros += n;
    }
}

impl TensorRef<'_> {
    /// The numbers of its elements, read in one streaming pass (constant memory, whatever the
    /// tensor's size). See [`Moments`] for what each number means.
    ///
    /// ```
    /// # fn main() -> ckpt::Result<()> {
    /// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
    /// let ckpt = ckpt::open(&path)?;
    /// let stats = ckpt.tensor("fc3.bias").unwrap().stats()?;
    /// assert_eq!(stats.values().count(), 10);
    /// assert_eq!(stats.values().nan() + stats.values().pos_inf() + stats.values().neg_inf(), 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Those of [`TensorRef::read_bytes`].
    pub fn stats(&self) -> Result<TensorStats> {
        let mut stats = TensorStats::empty(self.dtype());
        self.for_each_chunk(|bytes| {
            stats.merge(&kernel::summarise(self.dtype(), bytes));
            Ok::<(), Error>(())
        })?;
        Ok(stats)
    }
}

/// Every tensor's numbers and what they say about the checkpoint, from [`Checkpoint::stats`].
#[derive(Clone, Debug)]
pub struct CheckpointStats {
    names: Vec<String>,
    stats: Vec<TensorStats>,
    findings: Findings,
}

impl CheckpointStats {
    /// Each tensor's name and numbers, in file order.
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = (&str, &TensorStats)> + '_ {
        self.names.iter().map(String::as_str).zip(&self.stats)
    }

    /// The numbers of the tensor called `name`, if it was measured.
    pub fn get(&self, name: &str) -> Option<&TensorStats> {
        self.names.iter().position(|n| n == name).map(|i| &self.stats[i])
    }

    /// What the numbers say: NaN, infinities, all-zero tensors, float16 range, identical copies.
    pub fn findings(&self) -> &Findings {
        &self.findings
    }
}

impl Checkpoint {
    /// The numbers of every tensor (see [`TensorRef::stats`]) and the [`Findings`] they add up
    /// to, read on all cores, a tensor per core at a time, in constant memory.
    ///
    /// ```
    /// # fn main() -> ckpt::Result<()> {
    /// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
    /// let ckpt = ckpt::open(&path)?;
    /// let stats = ckpt.stats()?;
    /// assert!(stats.findings().nan().is_empty());
    /// for (name, s) in stats.tensors() {
    ///     println!("{name}: mean {:?} std {:?}", s.values().mean(), s.values().std(1));
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// Those of [`TensorRef::read_bytes`], for the first tensor that fails.
    pub fn stats(&self) -> Result<CheckpointStats> {
        self.stats_of(self.tensors().collect())
    }

    /// [`Checkpoint::stats`] of the given tensors only (in their order).
    ///
    /// # Errors
    /// Those of [`TensorRef::read_bytes`], for the first tensor that fails.
    pub fn stats_of(&self, tensors: Vec<TensorRef<'_>>) -> Result<CheckpointStats> {
        let stats = pass::map(&tensors, |t| t.nbytes(), pass::threads(), |t| t.stats());
        let stats = stats.into_iter().collect::<Result<Vec<_>>>()?;
        let findings = findings::findings(self, &tensors, &stats)?;
        Ok(CheckpointStats {
            names: tensors.iter().map(|t| t.name().to_string()).collect(),
            stats,
            findings,
        })
    }
}
