//! NaN and infinities alone, for `check`: a bit test per element on the raw bytes (no decoding,
//! no moments), which the compiler vectorises, so scanning for them costs less than reading
//! the file.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::pass;
use crate::tensor_ref::TensorRef;

/// Elements per step of the vector loops.
const LANES: usize = 16;

/// How many NaN and how many infinities (either sign) the little-endian `dtype` elements in
/// `bytes` hold (complex: both parts, each counted).
pub(crate) fn count(dtype: DType, bytes: &[u8]) -> (u64, u64) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { count_avx2(dtype, bytes) };
    }
    count_portable(dtype, bytes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn count_avx2(dtype: DType, bytes: &[u8]) -> (u64, u64) {
    count_portable(dtype, bytes)
}

#[inline(always)]
fn count_portable(dtype: DType, bytes: &[u8]) -> (u64, u64) {
    match dtype {
        DType::F64 | DType::C128 => by_bits::<8>(bytes, 0x7FF0_0000_0000_0000),
        DType::F32 | DType::C64 => by_bits::<4>(bytes, 0x7F80_0000),
        DType::F16 | DType::C32 => by_bits::<2>(bytes, 0x7C00),
        DType::BF16 => by_bits::<2>(bytes, 0x7F80),
        d if d.is_floating() => by_table(d, bytes),
        _ => (0, 0),
    }
}

/// NaN and inf counts of N-byte IEEE elements whose exponent field is `exp`: all exponent bits
/// set is inf with a zero mantissa, NaN otherwise.
#[inline(always)]
fn by_bits<const N: usize>(bytes: &[u8], exp: u64) -> (u64, u64) {
    let abs_mask = (u64::MAX >> (64 - 8 * N)) >> 1;
    let (mut nan, mut inf) = ([0u64; LANES], [0u64; LANES]);
    let mut chunks = bytes.chunks_exact(N * LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            let mut b = [0u8; 8];
            b[..N].copy_from_slice(&c[j * N..(j + 1) * N]);
            let a = u64::from_le_bytes(b) & abs_mask;
            nan[j] += u64::from(a > exp);
            inf[j] += u64::from(a == exp);
        }
    }
    let (mut n, mut i) = (nan.iter().sum::<u64>(), inf.iter().sum::<u64>());
    for e in chunks.remainder().chunks_exact(N) {
        let mut b = [0u8; 8];
        b[..N].copy_from_slice(e);
        let a = u64::from_le_bytes(b) & abs_mask;
        n += u64::from(a > exp);
        i += u64::from(a == exp);
    }
    (n, i)
}

/// The float8 kinds: whether each of the 256 bytes is NaN or inf, by decoding it.
fn by_table(dtype: DType, bytes: &[u8]) -> (u64, u64) {
    let kind: [u8; 256] = std::array::from_fn(|b| {
        let v = crate::elem::decode_f64(dtype, &[b as u8]);
        u8::from(v.is_nan()) | (u8::from(v.is_infinite()) << 1)
    });
    bytes.iter().fold((0, 0), |(n, i), &b| {
        let k = kind[b as usize];
        (n + u64::from(k & 1), i + u64::from(k >> 1))
    })
}

/// The names of the tensors holding NaN and of those holding inf, in file order, read on all
/// cores.
pub(crate) fn tensors_with_nonfinite(ckpt: &Checkpoint) -> Result<(Vec<String>, Vec<String>)> {
    let tensors: Vec<TensorRef<'_>> = ckpt.tensors().collect();
    let counts = pass::map(
        &tensors,
        |t| t.nbytes(),
        pass::threads(),
        |t| {
            let mut total = (0u64, 0u64);
            t.for_each_chunk(|bytes| {
                let (n, i) = count(t.dtype(), bytes);
                total = (total.0 + n, total.1 + i);
                Ok::<(), Error>(())
            })
            .map(|()| total)
        },
    );
    let (mut nan, mut inf) = (Vec::new(), Vec::new());
    for (t, c) in tensors.iter().zip(counts) {
        let (n, i) = c?;
        if n > 0 {
            nan.push(t.name().to_string());
        }
        if i > 0 {
            inf.push(t.name().to_string());
        }
    }
    Ok((nan, inf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::kernel::summarise;

    #[test]
    fn counts_equal_the_full_statistics_for_every_dtype() {
        // Every byte value in every position: covers each dtype's NaN and inf encodings.
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .chain(0..=255)
            .collect();
        let specials: Vec<u8> = [f32::NAN, f32::INFINITY, -f32::INFINITY, 1.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        for dtype in DType::ALL {
            for data in [&bytes[..], &specials[..]] {
                let s = summarise(dtype, &data[..data.len() / dtype.size() * dtype.size()]);
                let parts = std::iter::once(s.values()).chain(s.imag());
                let want = parts.fold((0, 0), |(n, i), m| (n + m.nan(), i + m.pos_inf() + m.neg_inf()));
                assert_eq!(count(dtype, data), want, "{dtype}");
            }
        }
    }
}
