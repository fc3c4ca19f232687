//! Summaries of raw tensor bytes: little-endian elements of one dtype, decoded to f64 a block
//! at a time (exactly: every dtype ckpt reads has an exact f64 value, integers up to 2^53) and
//! summarised as [`Moments`]; integers also keep their exact extremes, complex numbers a
//! summary per component.

use crate::dtype::DType;
use crate::elem;

use super::moments::Moments;
use super::TensorStats;

/// Elements decoded per block: 16 KiB of f64, in L1 with the source bytes.
const BLOCK: usize = 2048;

/// The summary of the whole elements in `bytes` (little-endian `dtype`); a trailing partial
/// element is ignored (callers hand whole elements).
pub(crate) fn summarise(dtype: DType, bytes: &[u8]) -> TensorStats {
    let mut out = TensorStats::empty(dtype);
    let size = dtype.size();
    let mut buf = [0f64; BLOCK];
    let mut imag = [0f64; BLOCK];
    for block in bytes.chunks(BLOCK * size) {
        let n = block.len() / size;
        let part = if dtype.is_complex() {
            decode_complex(dtype, block, &mut buf[..n], &mut imag[..n]);
            let mut part = TensorStats::new(
                dtype,
                Moments::of(&buf[..n], min_normal(dtype)),
                Some(Moments::of(&imag[..n], min_normal(dtype))),
                None,
            );
            part.add_complex_zeros(
                buf[..n]
                    .iter()
                    .zip(&imag[..n])
                    .filter(|(r, i)| **r == 0.0 && **i == 0.0)
                    .count() as u64,
            );
            part
        } else {
            decode(dtype, block, &mut buf[..n]);
            TensorStats::new(
                dtype,
                Moments::of(&buf[..n], min_normal(dtype)),
                None,
                int_range(dtype, block),
            )
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
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { decode_avx2(dtype, bytes, out) };
    }
    decode_portable(dtype, bytes, out)
}

/// [`decode_portable`] compiled for AVX2 (vector conversions of float32 and the integers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn decode_avx2(dtype: DType, bytes: &[u8], out: &mut [f64]) {
    decode_portable(dtype, bytes, out)
}

#[inline(always)]
fn decode_portable(dtype: DType, bytes: &[u8], out: &mut [f64]) {
    macro_rules! lanes {
        ($n:literal, $f:expr) => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact($n)) {
                let b: [u8; $n] = b.try_into().unwrap();
                *o = $f(b);
            }
        };
    }
    match dtype {
        DType::F64 => lanes!(8, f64::from_le_bytes),
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
        assert_eq!((s.values().count(), s.values().nan(), s.values().zeros()), (5, 1, 1));
        assert_eq!((s.values().min(), s.values().max()), (Some(-2.0), Some(3.25)));
        assert_eq!(s.values().mean(), Some(0.6875));
        assert_eq!(s.int_min(), None);
    }

    #[test]
    fn integers_keep_exact_extremes_beyond_two_to_the_53() {
        let v = [i64::MAX, i64::MIN, 7];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = summarise(DType::I64, &bytes);
        assert_eq!(
            (s.int_min(), s.int_max()),
            (Some(i64::MIN as i128), Some(i64::MAX as i128))
        );
        assert_eq!(s.values().count(), 3);
    }

    #[test]
    fn blocks_merge_like_one_pass() {
        let v: Vec<f32> = (0..3 * BLOCK + 5).map(|i| (i as f32).sin() * 100.0).collect();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = summarise(DType::F32, &bytes);
        let values: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        let whole = Moments::of(&values, f32::MIN_POSITIVE as f64);
        assert_eq!(s.values().count(), whole.count());
        assert!((s.values().mean().unwrap() - whole.mean().unwrap()).abs() < 1e-12);
        assert!((s.values().std(1).unwrap() - whole.std(1).unwrap()).abs() < 1e-9);
    }

    #[test]
    fn complex_components_and_bool_counts() {
        let c = [1.0f32, -1.0, 3.0, 5.0, 0.0, 0.0, 0.0, 2.0];
        let bytes: Vec<u8> = c.iter().flat_map(|x| x.to_le_bytes()).collect();
        let s = summarise(DType::C64, &bytes);
        assert_eq!(s.values().mean(), Some(1.0)); // reals 1, 3, 0, 0
        assert_eq!(s.imag().and_then(|m| m.mean()), Some(1.5));
        assert_eq!((s.zeros(), s.values().zeros()), (1, 2));
        assert_eq!(s.imag().map(|m| (m.min(), m.max())), Some((Some(-1.0), Some(5.0))));
        let b = summarise(DType::Bool, &[1, 0, 0, 2]);
        assert_eq!(b.true_count(), Some(2));
        assert_eq!((b.int_min(), b.int_max()), (Some(0), Some(1)));
    }

    #[test]
    fn float8_and_half_kinds_decode_through_their_tables() {
        // float8_e4m3fn 0x7F is NaN; 0x38 is 1.0; 0x01 is its smallest subnormal 2^-9.
        let s = summarise(DType::F8E4M3Fn, &[0x7F, 0x38, 0x01]);
        assert_eq!(
            (s.values().nan(), s.values().subnormal(), s.values().max()),
            (1, 1, Some(1.0))
        );
        // float16 0x7BFF is 65504 (float16's max: no float16 overflow), 0x0001 is subnormal.
        let h = summarise(DType::F16, &[0xFF, 0x7B, 0x01, 0x00]);
        assert_eq!(
            (h.values().max(), h.values().above_f16(), h.values().subnormal()),
            (Some(65504.0), 0, 1)
        );
    }
}
