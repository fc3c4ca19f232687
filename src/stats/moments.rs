//! Running statistics of real values that merge: a tensor's chunks are summarised one by one
//! (on any thread) and the summaries combined, so the result does not depend on how the tensor
//! was split beyond the last bits of rounding.
//!
//! Numerics: everything accumulates in f64. The mean and the sum of squared deviations use
//! Chan, Golub and LeVeque's pairwise update (each chunk's own mean first, then the merge), which
//! stays accurate where the textbook `sum(x^2) - n*mean^2` cancels catastrophically. The L2 norm
//! and the squared deviations are kept in units of the largest magnitude seen (`scale`), so
//! neither overflows for float64 tensors near f64::MAX nor underflows for tiny ones.
//!
//! NaN and infinities are counted, not folded in: min, max, mean, std and the norm describe the
//! finite values (torch's own reductions would return NaN or inf for the whole tensor).

/// Counts and moments of a set of real values: a tensor's elements, or the real or imaginary
/// parts of a complex tensor's. Min, max, mean, std, absmax and the norm describe the finite
/// values; NaN and infinities are counted apart.
///
/// ```
/// # fn main() -> ckpt::Result<()> {
/// # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cnn_state_dict.pth");
/// let ckpt = ckpt::open(&path)?;
/// let stats = ckpt.tensor("fc3.weight").unwrap().stats()?;
/// let v = stats.values();
/// assert_eq!((v.count(), v.nan()), (120, 0));
/// assert!(v.min().unwrap() <= v.mean().unwrap() && v.mean().unwrap() <= v.max().unwrap());
/// println!("std {:?} norm {}", v.std(1), v.norm());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// Every value seen, NaN and infinities included.
    count: u64,
    nan: u64,
    pos_inf: u64,
    neg_inf: u64,
    /// Values equal to zero (either sign).
    zeros: u64,
    /// Nonzero finite values below the smallest normal number of the values' own dtype.
    subnormal: u64,
    /// Finite values a float16 cast turns into an infinity (|x| >= 65520).
    above_f16: u64,
    /// Nonzero finite values below float16's smallest normal, 2^-14 (a float16 cast loses
    /// precision on them or flushes them to zero).
    below_f16_normal: u64,
    /// Finite values: the ones the moments below describe.
    finite: u64,
    min: f64,
    max: f64,
    mean: f64,
    /// Largest finite magnitude: the unit of `m2` and `ssq`, which keeps them finite.
    scale: f64,
    /// Sum of squared deviations from the mean, in units of `scale`^2.
    m2: f64,
    /// Sum of squares, in units of `scale`^2: the L2 norm is `scale * sqrt(ssq)`.
    ssq: f64,
}

/// float16's largest finite value rounds up to infinity from here on.
const F16_OVERFLOW: f64 = 65520.0;
/// float16's smallest normal number, 2^-14.
const F16_MIN_NORMAL: f64 = 6.103515625e-5;

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
            zeros: 0,
            subnormal: 0,
            above_f16: 0,
            below_f16_normal: 0,
            finite: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            mean: 0.0,
            m2: 0.0,
            scale: 0.0,
            ssq: 0.0,
        }
    }
}

impl Moments {
    /// The summary of `values`, whose dtype's smallest normal number is `min_normal`. Two passes
    /// over the slice (it is small: a chunk, in cache): the first counts and sums, the second
    /// takes deviations from the slice's mean and magnitudes relative to its largest.
    pub(crate) fn of(values: &[f64], min_normal: f64) -> Moments {
        let first = FirstPass::of(values, min_normal);
        let mut m = Moments {
            count: values.len() as u64,
            finite: values.len() as u64 - first.non_finite,
            zeros: first.zeros,
            subnormal: first.subnormal,
            above_f16: first.above_f16,
            below_f16_normal: first.below_f16_normal,
            min: first.min,
            max: first.max,
            ..Moments::default()
        };
        if first.non_finite > 0 {
            for &x in values.iter().filter(|x| !x.is_finite()) {
                match (x.is_nan(), x > 0.0) {
                    (true, _) => m.nan += 1,
                    (false, true) => m.pos_inf += 1,
                    (false, false) => m.neg_inf += 1,
                }
            }
        }
        if m.finite == 0 {
            return m;
        }
        m.scale = m.max.abs().max(m.min.abs());
        let mean = first.sum / m.finite as f64;
        // A sum of finite values can still overflow (float64 near f64::MAX): then take the mean
        // of scaled values.
        m.mean = if mean.is_finite() {
            mean
        } else {
            scaled_mean(values, m.scale, m.finite)
        };
        if m.scale > 0.0 {
            (m.m2, m.ssq) = second_pass(values, m.mean, m.scale);
        }
        m
    }

    /// Folds `other` (the summary of further values) into `self`.
    pub(crate) fn merge(&mut self, other: &Moments) {
        self.count += other.count;
        self.nan += other.nan;
        self.pos_inf += other.pos_inf;
        self.neg_inf += other.neg_inf;
        self.zeros += other.zeros;
        self.subnormal += other.subnormal;
        self.above_f16 += other.above_f16;
        self.below_f16_normal += other.below_f16_normal;
        if other.finite == 0 {
            return;
        }
        if self.finite == 0 {
            let count = self.count;
            let counts = (self.nan, self.pos_inf, self.neg_inf, self.zeros, self.subnormal);
            let f16 = (self.above_f16, self.below_f16_normal);
            *self = other.clone();
            self.count = count;
            (self.nan, self.pos_inf, self.neg_inf, self.zeros, self.subnormal) = counts;
            (self.above_f16, self.below_f16_normal) = f16;
            return;
        }
        let (na, nb) = (self.finite as f64, other.finite as f64);
        let n = na + nb;
        let scale = self.scale.max(other.scale);
        if scale > 0.0 {
            // In units of the common scale, so that neither the difference of two large means
            // nor its square overflows.
            let delta = other.mean / scale - self.mean / scale;
            self.m2 = rescale(self.m2, self.scale, scale)
                + rescale(other.m2, other.scale, scale)
                + delta * delta * (na / n) * nb;
            self.ssq = rescale(self.ssq, self.scale, scale) + rescale(other.ssq, other.scale, scale);
            self.mean = self.mean * (na / n) + other.mean * (nb / n);
        }
        self.scale = scale;
        self.finite += other.finite;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Every value, NaN and infinities included.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// NaN values.
    pub fn nan(&self) -> u64 {
        self.nan
    }

    /// +inf values.
    pub fn pos_inf(&self) -> u64 {
        self.pos_inf
    }

    /// -inf values.
    pub fn neg_inf(&self) -> u64 {
        self.neg_inf
    }

    /// Finite values: those min, max, mean, std and the norm describe.
    pub fn finite(&self) -> u64 {
        self.finite
    }

    /// Values equal to zero, either sign.
    pub fn zeros(&self) -> u64 {
        self.zeros
    }

    /// Nonzero values below the smallest normal number of the tensor's dtype.
    pub fn subnormal(&self) -> u64 {
        self.subnormal
    }

    /// Finite values that a cast to float16 turns into an infinity (|x| >= 65520).
    pub fn above_f16(&self) -> u64 {
        self.above_f16
    }

    /// Nonzero finite values below float16's smallest normal number (2^-14), which a cast to
    /// float16 rounds coarsely or to zero.
    pub fn below_f16_normal(&self) -> u64 {
        self.below_f16_normal
    }

    /// The smallest finite value; None when there are none.
    pub fn min(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.min)
    }

    /// The largest finite value; None when there are none.
    pub fn max(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.max)
    }

    /// The mean of the finite values; None when there are none.
    pub fn mean(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.mean)
    }

    /// The standard deviation of the finite values with `correction` degrees of freedom taken
    /// off (torch's default `std` is `correction = 1`); None when there are not more values than
    /// that.
    pub fn std(&self, correction: u64) -> Option<f64> {
        (self.finite > correction).then(|| self.scale * (self.m2 / (self.finite - correction) as f64).sqrt())
    }

    /// The L2 norm of the finite values (0 for none).
    pub fn norm(&self) -> f64 {
        self.scale * self.ssq.sqrt()
    }

    /// The largest finite magnitude; None when there are no finite values.
    pub fn absmax(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.scale)
    }
}

/// Independent accumulators per pass: they break the chain of dependent additions so the
/// compiler can keep several in flight (and in vector registers).
const LANES: usize = 8;

/// What one pass over a slice gathers before its mean is known. Non-finite values count in
/// `non_finite` only; the rest describe the finite values.
struct FirstPass {
    non_finite: u64,
    zeros: u64,
    subnormal: u64,
    above_f16: u64,
    below_f16_normal: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl FirstPass {
    fn of(values: &[f64], min_normal: f64) -> FirstPass {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { Self::of_avx2(values, min_normal) };
        }
        Self::of_portable(values, min_normal)
    }

    /// The same loop compiled for AVX2 (four f64 lanes a vector instead of two).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn of_avx2(values: &[f64], min_normal: f64) -> FirstPass {
        Self::of_portable(values, min_normal)
    }

    /// Branch-free per element (selects and compares, no jumps), so that the loop vectorises.
    #[inline(always)]
    fn of_portable(values: &[f64], min_normal: f64) -> FirstPass {
        let mut sum = [0.0; LANES];
        let mut min = [f64::INFINITY; LANES];
        let mut max = [f64::NEG_INFINITY; LANES];
        let mut non_finite = [0u64; LANES];
        let mut zeros = [0u64; LANES];
        let mut subnormal = [0u64; LANES];
        let mut above = [0u64; LANES];
        let mut below = [0u64; LANES];
        let mut lanes = values.chunks_exact(LANES);
        for chunk in &mut lanes {
            for j in 0..LANES {
                let x = chunk[j];
                let a = x.abs();
                // false for NaN and the infinities
                let finite = a < f64::INFINITY;
                let nonzero = a != 0.0;
                sum[j] += if finite { x } else { 0.0 };
                min[j] = if finite && x < min[j] { x } else { min[j] };
                max[j] = if finite && x > max[j] { x } else { max[j] };
                non_finite[j] += u64::from(!finite);
                zeros[j] += u64::from(!nonzero);
                subnormal[j] += u64::from(nonzero & (a < min_normal));
                above[j] += u64::from(finite & (a >= F16_OVERFLOW));
                below[j] += u64::from(nonzero & (a < F16_MIN_NORMAL));
            }
        }
        let mut first = FirstPass {
            non_finite: non_finite.iter().sum(),
            zeros: zeros.iter().sum(),
            subnormal: subnormal.iter().sum(),
            above_f16: above.iter().sum(),
            below_f16_normal: below.iter().sum(),
            sum: sum.iter().sum(),
            min: min.iter().copied().fold(f64::INFINITY, f64::min),
            max: max.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        };
        for &x in lanes.remainder() {
            let a = x.abs();
            if a < f64::INFINITY {
                first.sum += x;
                first.min = first.min.min(x);
                first.max = first.max.max(x);
            } else {
                first.non_finite += 1;
            }
            first.zeros += u64::from(a == 0.0);
            first.subnormal += u64::from(a != 0.0 && a < min_normal);
            first.above_f16 += u64::from((F16_OVERFLOW..f64::INFINITY).contains(&a));
            first.below_f16_normal += u64::from(a != 0.0 && a < F16_MIN_NORMAL);
        }
        first
    }
}

/// The sums of squared deviations from `mean` and of squares of the finite `values`, both in
/// units of `scale`^2 (`scale` > 0: the largest finite magnitude).
fn second_pass(values: &[f64], mean: f64, scale: f64) -> (f64, f64) {
    let inv = 1.0 / scale;
    if !inv.is_finite() {
        // scale is subnormal: multiply by the inverse would overflow; divide instead.
        let fin = values.iter().filter(|x| x.is_finite());
        let m2 = fin.clone().map(|x| (x / scale - mean / scale).powi(2)).sum();
        return (m2, fin.map(|x| (x / scale).powi(2)).sum());
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { scaled_squares_avx2(values, mean * inv, inv) };
    }
    scaled_squares(values, mean * inv, inv)
}

/// [`scaled_squares`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scaled_squares_avx2(values: &[f64], shift: f64, inv: f64) -> (f64, f64) {
    scaled_squares(values, shift, inv)
}

/// Sums of (x*inv - shift)^2 and (x*inv)^2 over the finite values. x*inv - mean*inv rather
/// than (x - mean)*inv: the difference of two values near f64::MAX can overflow.
#[inline(always)]
fn scaled_squares(values: &[f64], shift: f64, inv: f64) -> (f64, f64) {
    let mut m2 = [0.0; LANES];
    let mut ssq = [0.0; LANES];
    let mut lanes = values.chunks_exact(LANES);
    for chunk in &mut lanes {
        for j in 0..LANES {
            let x = chunk[j];
            let finite = x.abs() < f64::INFINITY;
            let r = x * inv;
            let d = r - shift;
            m2[j] += if finite { d * d } else { 0.0 };
            ssq[j] += if finite { r * r } else { 0.0 };
        }
    }
    let (mut m2, mut ssq): (f64, f64) = (m2.iter().sum(), ssq.iter().sum());
    for &x in lanes.remainder().iter().filter(|x| x.is_finite()) {
        let r = x * inv;
        m2 += (r - shift) * (r - shift);
        ssq += r * r;
    }
    (m2, ssq)
}

/// `ssq` measured in units of `from` (squares of x/from), in units of `to` >= `from`.
fn rescale(ssq: f64, from: f64, to: f64) -> f64 {
    if from == 0.0 {
        0.0
    } else {
        let r = from / to;
        ssq * r * r
    }
}

/// The mean of the finite `values`, each divided by `scale` before summing.
fn scaled_mean(values: &[f64], scale: f64, finite: u64) -> f64 {
    let sum: f64 = values.iter().filter(|x| x.is_finite()).map(|x| x / scale).sum();
    sum / finite as f64 * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(values: &[f64]) -> (f64, f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        let norm = values.iter().map(|x| x * x).sum::<f64>().sqrt();
        (mean, var.sqrt(), norm)
    }

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * a.abs().max(b.abs())
    }

    #[test]
    fn one_slice_matches_the_textbook_formulas() {
        let v: Vec<f64> = (0..1000).map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0).collect();
        let m = Moments::of(&v, f64::MIN_POSITIVE);
        let (mean, std, norm) = naive(&v);
        assert!(close(m.mean().unwrap(), mean, 1e-12), "{} {mean}", m.mean);
        assert!(close(m.std(1).unwrap(), std, 1e-12));
        assert!(close(m.norm(), norm, 1e-12));
        assert_eq!(m.min, -50.0 / 7.0);
        assert_eq!(m.max, 50.0 / 7.0);
    }

    #[test]
    fn merging_chunks_gives_the_whole_slice_summary() {
        let v: Vec<f64> = (0..10_000).map(|i| 1e6 + ((i * 7919) % 1000) as f64 * 1e-3).collect();
        let whole = Moments::of(&v, f64::MIN_POSITIVE);
        for chunk in [1, 3, 64, 999, 4096] {
            let mut merged = Moments::default();
            for c in v.chunks(chunk) {
                merged.merge(&Moments::of(c, f64::MIN_POSITIVE));
            }
            assert_eq!(merged.count, whole.count);
            assert_eq!((merged.min, merged.max), (whole.min, whole.max));
            assert!(close(merged.mean, whole.mean, 1e-14), "chunk {chunk}");
            // A large offset with a small spread: the naive formula would lose every digit.
            assert!(
                close(merged.std(1).unwrap(), whole.std(1).unwrap(), 1e-9),
                "chunk {chunk}"
            );
            assert!(close(merged.norm(), whole.norm(), 1e-14), "chunk {chunk}");
        }
    }

    #[test]
    fn non_finite_values_are_counted_not_averaged() {
        let v = [1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 3.0, 0.0, -0.0];
        let m = Moments::of(&v, f64::MIN_POSITIVE);
        assert_eq!(
            (m.count, m.finite, m.nan, m.pos_inf, m.neg_inf, m.zeros),
            (7, 4, 1, 1, 1, 2)
        );
        assert_eq!(m.mean(), Some(1.0));
        assert_eq!((m.min, m.max), (-0.0, 3.0));
        let all_nan = Moments::of(&[f64::NAN; 3], f64::MIN_POSITIVE);
        assert_eq!((all_nan.mean(), all_nan.std(1), all_nan.absmax()), (None, None, None));
        assert_eq!(all_nan.norm(), 0.0);
    }

    #[test]
    fn huge_and_tiny_values_neither_overflow_nor_underflow() {
        // The sum overflows, the mean, std and norm do not.
        let big = [f64::MAX / 2.0, f64::MAX / 2.0, -f64::MAX / 4.0, f64::MAX / 2.0];
        let m = Moments::of(&big, f64::MIN_POSITIVE);
        assert!(close(m.mean().unwrap(), f64::MAX * 0.3125, 1e-15));
        assert!(close(m.norm(), f64::MAX / 4.0 * 13f64.sqrt(), 1e-15));
        // deviations 0.1875, 0.1875, -0.5625, 0.1875 (units of MAX): sum of squares 0.421875
        assert!(close(m.std(1).unwrap(), f64::MAX * (0.421875f64 / 3.0).sqrt(), 1e-14));
        let mut halves = Moments::of(&big[..2], f64::MIN_POSITIVE);
        halves.merge(&Moments::of(&big[2..], f64::MIN_POSITIVE));
        assert!(close(halves.std(1).unwrap(), m.std(1).unwrap(), 1e-14));
        assert!(close(halves.mean, m.mean, 1e-15));
        let tiny = [1e-300, 2e-300];
        let t = Moments::of(&tiny, f64::MIN_POSITIVE);
        assert!(close(t.norm(), 5f64.sqrt() * 1e-300, 1e-15));
    }

    #[test]
    fn float16_range_and_subnormal_counts() {
        let v = [65504.0, 65520.0, -70000.0, 1e-5, 6.2e-5, 0.0, 1e-40];
        let m = Moments::of(&v, f32::MIN_POSITIVE as f64);
        assert_eq!(m.above_f16, 2);
        assert_eq!(m.below_f16_normal, 2); // 1e-5 and 1e-40
        assert_eq!(m.subnormal, 1); // 1e-40 is below float32's smallest normal
        let mut halves = Moments::of(&v[..3], f32::MIN_POSITIVE as f64);
        halves.merge(&Moments::of(&v[3..], f32::MIN_POSITIVE as f64));
        assert_eq!(halves.count, m.count);
        assert_eq!((halves.above_f16, halves.below_f16_normal, halves.subnormal), (2, 2, 1));
        assert_eq!(halves.absmax(), Some(70000.0));
    }

    #[test]
    fn merging_into_an_empty_or_all_nan_summary_keeps_its_counts() {
        let mut m = Moments::of(&[f64::NAN, -f64::NAN], 1e-38);
        m.merge(&Moments::of(&[2.0, 4.0], 1e-38));
        assert_eq!((m.count, m.nan, m.finite), (4, 2, 2));
        assert_eq!(m.mean(), Some(3.0));
    }
}
