//! The conversions `convert --dtype` spends its time in, float32 to bfloat16 and to float16,
//! and their loss counts, as loops the compiler vectorises (compiled again for AVX2 and chosen
//! at run time), float32 -> float16 with the F16C instruction PyTorch's own kernel uses. Each
//! gives exactly what the scalar functions of the parent module give, element for element (the
//! tests compare them over sampled bit patterns and every boundary).

use super::f32_to_f16;
#[cfg(feature = "cli")]
use super::Losses;

/// Elements per step of the vector loops.
const LANES: usize = 8;

/// The first four bytes of `b` (it has them). Taken as one slice, so the vector loops load
/// words: built byte by byte (`[b[0], b[1], ...]`), the compiler inserted bytes one at a time,
/// and the bfloat16 cast ran at 0.85 ns an element instead of 0.10.
#[inline(always)]
fn word(b: &[u8]) -> [u8; 4] {
    b.get(..4).and_then(|w| w.try_into().ok()).unwrap_or_default()
}

/// float32 bits -> bfloat16 bits as PyTorch's vectorised kernel: round to nearest even, every
/// NaN -> 0xFFFF (see `f32_to_bf16_vec`), without branches.
#[inline(always)]
fn bf16_of(x: u32) -> u16 {
    let nan = x & 0x7FFF_FFFF > 0x7F80_0000;
    let rounded = (x.wrapping_add(0x7FFF + ((x >> 16) & 1)) >> 16) as u16;
    if nan {
        0xFFFF
    } else {
        rounded
    }
}

/// Appends the bfloat16 of every little-endian float32 in `src` to `out`.
pub(super) fn f32_to_bf16(src: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let n = src.len() / 4;
    out.resize(start + n * 2, 0);
    let dst = &mut out[start..];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { f32_to_bf16_avx2(src, dst) };
    }
    f32_to_bf16_into(src, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn f32_to_bf16_avx2(src: &[u8], dst: &mut [u8]) {
    f32_to_bf16_into(src, dst);
}

#[inline(always)]
fn f32_to_bf16_into(src: &[u8], dst: &mut [u8]) {
    let mut s = src.chunks_exact(4 * LANES);
    let mut d = dst.chunks_exact_mut(2 * LANES);
    for (s, d) in (&mut s).zip(&mut d) {
        for j in 0..LANES {
            let x = u32::from_le_bytes(word(&s[4 * j..]));
            d[2 * j..2 * j + 2].copy_from_slice(&bf16_of(x).to_le_bytes());
        }
    }
    for (s, d) in s.remainder().chunks_exact(4).zip(d.into_remainder().chunks_exact_mut(2)) {
        d.copy_from_slice(&bf16_of(u32::from_le_bytes([s[0], s[1], s[2], s[3]])).to_le_bytes());
    }
}

/// Appends the float16 of every little-endian float32 in `src` to `out`.
pub(super) fn f32_to_f16s(src: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let n = src.len() / 4;
    out.resize(start + n * 2, 0);
    let dst = &mut out[start..];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has F16C and AVX, checked just above.
        return unsafe { f32_to_f16_f16c(src, dst) };
    }
    for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&f32_to_f16(u32::from_le_bytes([s[0], s[1], s[2], s[3]])).to_le_bytes());
    }
}

/// `vcvtps2ph` with round-to-nearest-even, eight elements at a time: the instruction PyTorch's
/// CPU kernel converts with (NaN: sign kept, quiet bit set, payload truncated).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn f32_to_f16_f16c(src: &[u8], dst: &mut [u8]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtps_ph, _mm256_loadu_ps, _mm_storeu_si128, _MM_FROUND_TO_NEAREST_INT};
    let mut s = src.chunks_exact(32);
    let mut d = dst.chunks_exact_mut(16);
    for (s, d) in (&mut s).zip(&mut d) {
        // SAFETY: s holds 32 bytes and d 16; both loads and stores are unaligned.
        unsafe {
            let v = _mm256_loadu_ps(s.as_ptr().cast());
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
            _mm_storeu_si128(d.as_mut_ptr().cast::<__m128i>(), h);
        }
    }
    for (s, d) in s.remainder().chunks_exact(4).zip(d.into_remainder().chunks_exact_mut(2)) {
        d.copy_from_slice(&f32_to_f16(u32::from_le_bytes([s[0], s[1], s[2], s[3]])).to_le_bytes());
    }
}

#[cfg(feature = "cli")] // casts report their losses in the commands only
/// What casting the little-endian float32 in `src` loses: to bfloat16 when `to_bf16`, else to
/// float16. Finite values whose absolute bits reach `overflow_from` round to inf; non-zero ones
/// at or below `underflow_to` round to zero (ties go to the even zero).
pub(super) fn f32_losses(src: &[u8], to_bf16: bool) -> Losses {
    // bfloat16: |x| >= 0x7F7F8000 rounds up to inf (0x7F7F is odd, so the tie rounds up);
    // |x| <= 0x8000 rounds to zero. float16: |x| >= 65520 overflows, |x| <= 2^-25 flushes.
    let (overflow_from, underflow_to) = if to_bf16 { (0x7F7F_8000, 0x8000) } else { (0x477F_F000, 0x3300_0000) };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { f32_losses_avx2(src, overflow_from, underflow_to) };
    }
    f32_losses_in(src, overflow_from, underflow_to)
}

#[cfg(all(feature = "cli", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
unsafe fn f32_losses_avx2(src: &[u8], overflow_from: u32, underflow_to: u32) -> Losses {
    f32_losses_in(src, overflow_from, underflow_to)
}

#[cfg(feature = "cli")]
#[inline(always)]
fn f32_losses_in(src: &[u8], overflow_from: u32, underflow_to: u32) -> Losses {
    let mut over = [0u32; LANES];
    let mut under = [0u32; LANES];
    let mut total = Losses::default();
    // u32 lane counters, emptied every 2^20 elements so they cannot wrap.
    for block in src.chunks((4 * LANES) << 20) {
        let mut s = block.chunks_exact(4 * LANES);
        for s in &mut s {
            for j in 0..LANES {
                let a = u32::from_le_bytes(word(&s[4 * j..])) & 0x7FFF_FFFF;
                over[j] += u32::from(a >= overflow_from && a < 0x7F80_0000);
                under[j] += u32::from(a != 0 && a <= underflow_to);
            }
        }
        for s in s.remainder().chunks_exact(4) {
            let a = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) & 0x7FFF_FFFF;
            total.overflow += u64::from(a >= overflow_from && a < 0x7F80_0000);
            total.underflow += u64::from(a != 0 && a <= underflow_to);
        }
        total.overflow += over.iter().map(|&c| u64::from(c)).sum::<u64>();
        total.underflow += under.iter().map(|&c| u64::from(c)).sum::<u64>();
        over = [0; LANES];
        under = [0; LANES];
    }
    total
}

/// Whether any little-endian 16-bit float in `out` is ±inf (`inf`: its bits) or ±0.
#[cfg(feature = "cli")]
pub(super) fn any_inf_or_zero_16(out: &[u8], inf: u16) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { any_inf_or_zero_16_avx2(out, inf) };
    }
    any_inf_or_zero_16_in(out, inf)
}

#[cfg(all(feature = "cli", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
unsafe fn any_inf_or_zero_16_avx2(out: &[u8], inf: u16) -> bool {
    any_inf_or_zero_16_in(out, inf)
}

#[cfg(feature = "cli")]
#[inline(always)]
fn any_inf_or_zero_16_in(out: &[u8], inf: u16) -> bool {
    // Branch-free over steps of 256 elements, so the loop vectorises; stops at the first hit.
    out.chunks(512).any(|step| {
        step.chunks_exact(2).fold(false, |hit, b| {
            let x = u16::from_le_bytes(b.try_into().unwrap_or_default()) & 0x7FFF;
            hit | (x == inf) | (x == 0)
        })
    })
}

/// Whether any little-endian float32 in `out` is ±inf or ±0.
#[cfg(feature = "cli")]
pub(super) fn any_inf_or_zero_32(out: &[u8]) -> bool {
    out.chunks(1024).any(|step| {
        step.chunks_exact(4).fold(false, |hit, b| {
            let x = u32::from_le_bytes(word(b)) & 0x7FFF_FFFF;
            hit | (x == 0x7F80_0000) | (x == 0)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::super::convert_scalar;
    #[cfg(feature = "cli")]
    use super::super::losses_scalar;
    use super::*;
    use crate::dtype::DType;

    /// Bit patterns: a stride through all 2^32, and every pattern within 3 of a boundary.
    fn patterns() -> Vec<u32> {
        let mut v: Vec<u32> = (0..=u32::MAX).step_by(65_521).collect();
        let edges = [0, 0x8000, 0x7F7F_8000, 0x7F80_0000, 0x7FC0_0000, 0x477F_F000, 0x3300_0000, 0x3880_0000, 0x0080_0000];
        for e in edges {
            for sign in [0, 0x8000_0000u32] {
                for d in 0..7u32 {
                    v.push((e + d).wrapping_sub(3) | sign);
                }
            }
        }
        v
    }

    fn bytes(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Counting from the output (blocks without an inf or a zero lost nothing) gives the
    /// counts of the source, whole and in blocks of 64 elements (most of which take the short
    /// path), for every target the short path knows.
    #[cfg(feature = "cli")]
    #[test]
    fn losses_read_from_the_output_equal_the_source_counts() {
        use super::super::{convert, losses, losses_of_output};
        let f32s = bytes(&patterns());
        let f64s: Vec<u8> = patterns()
            .iter()
            .flat_map(|&x| {
                let x = f64::from(f32::from_bits(x));
                [x, x * 1e30, x * 1e-30]
            })
            .flat_map(f64::to_le_bytes)
            .collect();
        for (from, to, src) in [(DType::F32, DType::BF16, &f32s), (DType::F32, DType::F16, &f32s), (DType::F64, DType::F32, &f64s)] {
            let mut out = Vec::new();
            convert(from, to, src, &mut out);
            let whole = losses(from, to, src);
            assert!(whole.overflow > 0 && whole.underflow > 0, "{from} -> {to}: the patterns lose values");
            assert_eq!(losses_of_output(from, to, src, &out), whole, "{from} -> {to}");
            let mut clean = 0;
            for (s, o) in src.chunks(64 * from.size()).zip(out.chunks(64 * to.size())) {
                let l = losses(from, to, s);
                clean += usize::from(l == Losses::default());
                assert_eq!(losses_of_output(from, to, s, o), l, "{from} -> {to}");
            }
            assert!(clean > 0, "{from} -> {to}: some blocks lose nothing");
        }
    }

    #[test]
    fn vector_conversions_equal_the_scalar_ones() {
        let src = bytes(&patterns());
        for (to, fast) in [(DType::BF16, f32_to_bf16 as fn(&[u8], &mut Vec<u8>)), (DType::F16, f32_to_f16s)] {
            let (mut want, mut got) = (Vec::new(), vec![1u8]);
            convert_scalar(DType::F32, to, &src, &mut want);
            fast(&src, &mut got);
            assert_eq!(got[0], 1, "appends");
            assert!(got[1..] == want[..], "float32 -> {to} differs");
        }
    }

    #[cfg(feature = "cli")]
    #[test]
    fn vector_loss_counts_equal_the_scalar_ones() {
        let src = bytes(&patterns());
        for (to, bf16) in [(DType::BF16, true), (DType::F16, false)] {
            let want = losses_scalar(DType::F32, to, &src);
            assert_eq!(f32_losses(&src, bf16), want, "float32 -> {to}");
            assert!(want.overflow > 0 && want.underflow > 0, "the sample reaches both kinds of loss");
        }
    }
}
