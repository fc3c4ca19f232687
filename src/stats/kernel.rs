//! Summaries of raw tensor bytes: little-endian elements of one dtype, decoded to f64 a block
//! at a time (exactly: every dtype ckpt reads has an exact f64 value, integers up to 2^53) and
//! summarised as [`Moments`]; integers also keep their exact extremes, complex numbers a
//! summary per component.

use crate::dtype::DType;
use crate::transform::elem;

use super::moments::Moments;

/// Elements decoded per block: 16 KiB of f64, in L1 with the source bytes.
const BLOCK: usize = 2048;

/// What one run of elements holds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Summary {
    /// The values, or the real parts of complex ones.
    pub values: Moments,
    /// Complex dtypes: the imaginary parts.
    pub imag: Option<Moments>,
    /// Integer and bool dtypes: the exact smallest and largest element.
    pub int_range: Option<(i128, i128)>,
}

impl Summary {
    /// The summary of no elements of `dtype`.
    pub fn empty(dtype: DType) -> Summary {
        Summary {
            values: Moments::default(),
            imag: dtype.is_complex().then(Moments::default),
            int_range: None,
        }
    }

    /// Folds the summary of the elements that follow into `self`.
    pub fn merge(&mut self, other: &Summary) {
        self.values.merge(&other.values);
        if let (Some(a), Some(b)) = (&mut self.imag, &other.imag) {
            a.merge(b);
        }
        self.int_range = match (self.int_range, other.int_range) {
            (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
            (a, b) => a.or(b),
        };
    }
}

/// The summary of the whole elements in `bytes` (little-endian `dtype`); a trailing partial
/// element is ignored (callers hand whole elements).
pub(crate) fn summarise(dtype: DType, bytes: &[u8]) -> Summary {
    let mut out = Summary::empty(dtype);
    let size = dtype.size();
    let mut buf = [0f64; BLOCK];
    let mut imag = [0f64; BLOCK];
    for block in bytes.chunks(BLOCK * size) {
        let n = block.len() / size;
        let part = if dtype.is_complex() {
            decode_complex(dtype, block, &mut buf[..n], &mut imag[..n]);
            Summary {
                values: Moments::of(&buf[..n], min_normal(dtype)),
                imag: Some(Moments::of(&imag[..n], min_normal(dtype))),
                int_range: None,
            }
        } else {
            decode(dtype, block, &mut buf[..n]);
            Summary {
                values: Moments::of(&buf[..n], min_normal(dtype)),
                imag: None,
                int_range: int_range(dtype, block),
            }
        };
        out.merge(&part);
    }
    out
}

/// The smallest positive normal number of a floating dtype (of a complex dtype's components);
/// for integers 1, so that no integer counts as subnormal.
fn min_normal(dtype: DType) -> f64 {
    match dtype {
        DType::F64 | DType::C128 => f64::MIN_POSITIVE,
        DType::F32 | DType::BF16 | DType::C64 => f32::MIN_POSITIVE as f64,
        DType::F16 | DType::C32 => 6.103515625e-5,
        // e4m3: exponent bias 7; e5m2: bias 15; the fnuz kinds one more; e8m0 has no
        // subnormals (its smallest value, 2^-127, is its own smallest "normal").
        DType::F8E4M3Fn => 2f64.powi(-6),
        DType::F8E5M2 => 2f64.powi(-14),
        DType::F8E4M3Fnuz => 2f64.powi(-7),
        DType::F8E5M2Fnuz => 2f64.powi(-15),
        DType::F8E8M0Fnu => 2f64.powi(-127),
        _ => 1.0,
    }
}

/// Decodes `out.len()` elements of a real dtype from `bytes` into `out`.
fn decode(dtype: DType, bytes: &[u8], out: &mut [f64]) {
    macro_rules! lanes {
        ($n:literal, $f:expr) => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact($n)) {
                let b: [u8; $n] = b.try_into().unwrap();
                *o = $f(b);
            }
        };
    }
    match dtype {
        DType::F64 => lanes!(8, |b| f64::from_le_bytes(b)),
        DType::F32 => lanes!(4, |b| f32::from_le_bytes(b) as f64),
        DType::F16 => lanes!(2, |b| f32::from_bits(elem::f16_to_f32(u16::from_le_bytes(b))) as f64),
        DType::BF16 => lanes!(2, |b| f32::from_bits(elem::bf16_to_f32(u16::from_le_bytes(b))) as f64),
        DType::I64 => lanes!(8, |b| i64::from_le_bytes(b) as f64),
        DType::U64 => lanes!(8, |b| u64::from_le_bytes(b) as f64),
        DType::I32 => lanes!(4, |b| i32::from_le_bytes(b) as f64),
        DType::U32 => lanes!(4, |b| u32::from_le_bytes(b) as f64),
        DType::I16 => lanes!(2, |b| i16::from_le_bytes(b) as f64),
        DType::U16 => lanes!(2, |b| u16::from_le_bytes(b) as f64),
        DType::I8 => lanes!(1, |b: [u8; 1]| b[0] as i8 as f64),
        DType::U8 => lanes!(1, |b: [u8; 1]| b[0] as f64),
        DType::Bool => lanes!(1, |b: [u8; 1]| (b[0] != 0) as u8 as f64),
        // The float8 kinds: one byte, so a table of all 256 values.
        _ => {
            let table = byte_table(dtype);
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = table[b as usize];
            }
        }
    }
}

/// The f64 value of every byte of a float8 dtype.
fn byte_table(dtype: DType) -> [f64; 256] {
    std::array::from_fn(|b| elem::decode_f64(dtype, &[b as u8]))
}

/// Decodes `re.len()` complex elements into their components.
fn decode_complex(dtype: DType, bytes: &[u8], re: &mut [f64], im: &mut [f64]) {
    for ((r, i), b) in re.iter_mut().zip(im.iter_mut()).zip(bytes.chunks_exact(dtype.size())) {
        (*r, *i) = elem::decode_complex(dtype, b);
    }
}

/// The exact extremes of the integer (or bool) elements in `bytes`; None for other dtypes or
/// no elements.
fn int_range(dtype: DType, bytes: &[u8]) -> Option<(i128, i128)> {
    let size = dtype.size();
    bytes
        .chunks_exact(size)
        .map(|b| elem::decode_int(dtype, b))
        .try_fold(None, |acc: Option<(i128, i128)>, v| {
            let v = v?;
            Some(Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v)))))
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_elements_summarise_exactly() {
        let v = [1.5f32, -2.0, 0.0, f32::NAN, 3.25];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = summarise(DType::F32, &bytes);
        assert_eq!((s.values.count, s.values.nan, s.values.zeros), (5, 1, 1));
        assert_eq!((s.values.min, s.values.max), (-2.0, 3.25));
        assert_eq!(s.values.mean(), Some(0.6875));
        assert_eq!(s.int_range, None);
    }

    #[test]
    fn integers_keep_exact_extremes_beyond_two_to_the_53() {
        let v = [i64::MAX, i64::MIN, 7];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = summarise(DType::I64, &bytes);
        assert_eq!(s.int_range, Some((i64::MIN as i128, i64::MAX as i128)));
        assert_eq!(s.values.count, 3);
    }

    #[test]
    fn blocks_merge_like_one_pass() {
        let v: Vec<f32> = (0..3 * BLOCK + 5).map(|i| (i as f32).sin() * 100.0).collect();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = summarise(DType::F32, &bytes);
        let values: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        let whole = Moments::of(&values, f32::MIN_POSITIVE as f64);
        assert_eq!(s.values.count, whole.count);
        assert!((s.values.mean - whole.mean).abs() < 1e-12);
        assert!((s.values.std(1).unwrap() - whole.std(1).unwrap()).abs() < 1e-9);
    }

    #[test]
    fn complex_components_and_bool_counts() {
        let c = [1.0f32, -1.0, 3.0, 5.0];
        let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = summarise(DType::C64, &bytes);
        assert_eq!(s.values.mean(), Some(2.0));
        assert_eq!(s.imag.as_ref().and_then(|m| m.mean()), Some(2.0));
        assert_eq!(s.imag.as_ref().map(|m| (m.min, m.max)), Some((-1.0, 5.0)));
        let b = summarise(DType::Bool, &[1, 0, 0, 2]);
        assert_eq!(b.values.count - b.values.zeros, 2);
        assert_eq!(b.int_range, Some((0, 1)));
    }

    #[test]
    fn float8_and_half_kinds_decode_through_their_tables() {
        // float8_e4m3fn 0x7F is NaN; 0x38 is 1.0; 0x01 is its smallest subnormal 2^-9.
        let s = summarise(DType::F8E4M3Fn, &[0x7F, 0x38, 0x01]);
        assert_eq!((s.values.nan, s.values.subnormal, s.values.max), (1, 1, 1.0));
        // float16 0x7BFF is 65504 (float16's max: no float16 overflow), 0x0001 is subnormal.
        let h = summarise(DType::F16, &[0xFF, 0x7B, 0x01, 0x00]);
        assert_eq!((h.values.max, h.values.above_f16, h.values.subnormal), (65504.0, 0, 1));
    }
}
