//! Element-type conversion of floating-point data, bit for bit as PyTorch's CPU
//! `tensor.to(dtype)` does it on a contiguous tensor.
//!
//! What PyTorch does, measured with torch 2.11 on x86-64 (its AVX2 and AVX-512 kernels agree) and
//! pinned by `fixtures/casts/casts.json` (written by `fixtures/casts/generate_casts.py`):
//!
//! * Narrowing rounds to nearest, ties to even, with gradual underflow (no flush to zero).
//!   Finite values beyond the target's range become ±inf (float16, bfloat16, float32,
//!   float8_e5m2) or NaN (float8 kinds without an infinity); see [`losses`].
//! * float64 goes through float32 first (c10's Half/BFloat16 constructors take a float), so
//!   float64 -> float16/bfloat16/float8 rounds twice, as PyTorch does.
//! * float16, bfloat16 and float8 sources are decoded exactly to float32 first; conversions
//!   between the narrow kinds go through float32.
//! * NaNs, which is where PyTorch's code paths differ:
//!   - to float16 (F16C `vcvtps2ph`): sign kept, quiet bit set, payload truncated
//!     (`0x7FA00000` -> `0x7F00`);
//!   - float32/float64 -> bfloat16 (the vectorised kernel): every NaN becomes `0xFFFF`;
//!     float16/float8 -> bfloat16 (c10's `round_to_nearest_even`): every NaN becomes `0x7FC0`;
//!   - to float32/float64 (hardware `vcvtph2ps`, `vcvtss2sd`, `vcvtsd2ss`): sign and payload
//!     kept, quiet bit set, payload shifted; bfloat16 -> float32 is a plain shift and keeps a
//!     signalling NaN signalling;
//!   - to float8: c10's `fp8*_from_fp32_value` (e4m3fn: `0x7F|sign`, e5m2: `0x7F|sign`,
//!     fnuz kinds: `0x80`, e8m0fnu: `0xFF`).
//!
//! PyTorch itself is not consistent about NaN bits. Its kernels convert whole vector blocks
//! (8 or 16 elements) and finish the last `n % width` elements of each thread's range on a
//! scalar path, where float16 -> float32 turns every NaN into `0x7FFFFFFF` and
//! float64 -> bfloat16 turns every NaN into `0x7FC0`; which elements hit that path depends on
//! the tensor's length and the thread count, so this module always gives the block result
//! (recorded as `tail_differences` in casts.json). Strided tensors and builds without vector
//! kernels (`ATEN_CPU_CAPABILITY=default`, some non-x86 builds) take scalar paths that give
//! canonical NaNs (`0x7E00|sign` for float16, `0x7FC0` for bfloat16) for float32/float64 ->
//! bfloat16 and bfloat16/float8/float64 -> float16. Finite values and infinities never differ
//! between these paths (compared over every sweep of casts.json, AVX-512 against default).

use crate::dtype::DType;

mod fast;

/// Whether [`convert`] can convert `from` elements to `to` elements: any pair of floating
/// dtypes (float64, float32, float16, bfloat16 and the five float8 kinds). Integer, bool and
/// complex tensors are never cast.
pub fn supported(from: DType, to: DType) -> bool {
    from.is_floating() && to.is_floating()
}

/// Appends to `out` the little-endian `to` elements of the little-endian `from` elements in
/// `src`. A trailing partial element of `src` is ignored.
///
/// # Panics
/// If `!supported(from, to)`.
pub fn convert(from: DType, to: DType, src: &[u8], out: &mut Vec<u8>) {
    match (from, to) {
        (DType::F32, DType::BF16) => fast::f32_to_bf16(src, out),
        (DType::F32, DType::F16) => fast::f32_to_f16s(src, out),
        _ => convert_scalar(from, to, src, out),
    }
}

/// [`convert`] one element at a time: every pair, the reference for the vector loops.
fn convert_scalar(from: DType, to: DType, src: &[u8], out: &mut Vec<u8>) {
    assert!(supported(from, to), "no element conversion from {from} to {to}");
    let n = src.len() / from.size();
    out.reserve(n * to.size());
    if from == to {
        out.extend_from_slice(&src[..n * from.size()]);
        return;
    }
    match (from, to) {
        // Exact widenings and the pairs with their own NaN rule come first.
        (DType::F64, DType::F32) => map::<8, 4>(src, out, |b| f64_to_f32(u64::from_le_bytes(b)).to_le_bytes()),
        (DType::F64, DType::BF16) => map::<8, 2>(src, out, |b| {
            f32_to_bf16_vec(f64_to_f32(u64::from_le_bytes(b))).to_le_bytes()
        }),
        (DType::F32, DType::F64) => map::<4, 8>(src, out, |b| f32_to_f64(u32::from_le_bytes(b)).to_le_bytes()),
        (DType::F32, DType::BF16) => map::<4, 2>(src, out, |b| f32_to_bf16_vec(u32::from_le_bytes(b)).to_le_bytes()),
        (DType::BF16, DType::F32) => map::<2, 4>(src, out, |b| bf16_to_f32(u16::from_le_bytes(b)).to_le_bytes()),
        (DType::F16, DType::F32) => map::<2, 4>(src, out, |b| f16_to_f32(u16::from_le_bytes(b)).to_le_bytes()),
        // Everything else: decode to float32, encode from float32.
        _ => {
            let dec = decoder(from);
            match to {
                DType::F64 => map_dyn::<8>(src, from.size(), out, |b| f32_to_f64(dec(b)).to_le_bytes()),
                DType::F32 => map_dyn::<4>(src, from.size(), out, |b| dec(b).to_le_bytes()),
                DType::F16 => map_dyn::<2>(src, from.size(), out, |b| f32_to_f16(dec(b)).to_le_bytes()),
                DType::BF16 => map_dyn::<2>(src, from.size(), out, |b| f32_to_bf16_scalar(dec(b)).to_le_bytes()),
                _ => {
                    let enc = f8_encoder(to);
                    map_dyn::<1>(src, from.size(), out, |b| [enc(dec(b))])
                }
            }
        }
    }
}

/// What a cast loses, counted over elements.
#[cfg(feature = "cli")] // casts report their losses in the commands only
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Losses {
    /// Finite values that become inf (NaN for float8 kinds without inf).
    pub overflow: u64,
    /// Non-zero finite values that become ±0 (values that stay subnormal are not lost).
    pub underflow: u64,
}

/// Counts what converting the little-endian `from` elements of `src` to `to` loses: finite
/// values that overflow (float16's largest finite value is 65504, so |x| >= 65520 becomes inf)
/// and non-zero values that flush to zero (|x| below half float16's smallest subnormal,
/// 2^-25, becomes ±0; AdamW's `exp_avg_sq` holds such values).
#[cfg(feature = "cli")]
pub fn losses(from: DType, to: DType, src: &[u8]) -> Losses {
    match (from, to) {
        (DType::F32, DType::BF16) => fast::f32_losses(src, true),
        (DType::F32, DType::F16) => fast::f32_losses(src, false),
        _ => losses_scalar(from, to, src),
    }
}

/// [`losses`] of a conversion already done: `out` holds the `to` elements converted from
/// `src`. A loss leaves an inf or a zero in the output, so an output of 16- or 32-bit floats
/// with neither (nearly every block of trained weights) is known to have lost nothing after
/// one pass over its bits, half the bytes of the source; otherwise the source is counted.
#[cfg(feature = "cli")]
pub fn losses_of_output(from: DType, to: DType, src: &[u8], out: &[u8]) -> Losses {
    let clean = match to {
        DType::BF16 => !fast::any_inf_or_zero_16(out, 0x7F80),
        DType::F16 => !fast::any_inf_or_zero_16(out, 0x7C00),
        DType::F32 => !fast::any_inf_or_zero_32(out),
        _ => false,
    };
    if clean {
        Losses::default()
    } else {
        losses(from, to, src)
    }
}

/// [`losses`] by converting and comparing element by element: every pair, the reference for
/// the vector counts.
#[cfg(feature = "cli")]
fn losses_scalar(from: DType, to: DType, src: &[u8]) -> Losses {
    let mut l = Losses::default();
    if !supported(from, to) || !can_lose(from, to) {
        return l;
    }
    let (src_finite, dst_finite) = (finite_test(from), finite_test(to));
    let (src_zero, dst_zero) = (zero_test(from), zero_test(to));
    let mut converted = Vec::with_capacity(65536 * to.size());
    // Bounded pieces, so a 4 MiB chunk never needs more than a small buffer.
    for piece in src.chunks(from.size() * 65536) {
        converted.clear();
        convert(from, to, piece, &mut converted);
        for (a, b) in piece.chunks_exact(from.size()).zip(converted.chunks_exact(to.size())) {
            if !src_finite(a) {
                continue;
            }
            if !dst_finite(b) {
                l.overflow += 1;
            } else if dst_zero(b) && !src_zero(a) {
                l.underflow += 1;
            }
        }
    }
    l
}

/// Whether one little-endian element of a floating dtype is ±0 (float8_e8m0fnu has no zero;
/// the fnuz kinds' 0x80 is their NaN, not -0).
#[cfg(feature = "cli")]
fn zero_test(d: DType) -> fn(&[u8]) -> bool {
    match d {
        DType::F64 => |b| u64::from_le_bytes(b[..8].try_into().unwrap()) << 1 == 0,
        DType::F32 => |b| u32::from_le_bytes(b[..4].try_into().unwrap()) << 1 == 0,
        DType::F16 | DType::BF16 => |b| u16::from_le_bytes([b[0], b[1]]) << 1 == 0,
        DType::F8E4M3Fn | DType::F8E5M2 => |b| b[0] & 0x7F == 0,
        DType::F8E4M3Fnuz | DType::F8E5M2Fnuz => |b| b[0] == 0,
        _ => |_| false,
    }
}

/// Whether one little-endian element of a floating dtype is finite.
#[cfg(feature = "cli")]
fn finite_test(d: DType) -> fn(&[u8]) -> bool {
    match d {
        DType::F64 => {
            |b| u64::from_le_bytes(b[..8].try_into().unwrap()) & 0x7FF0_0000_0000_0000 != 0x7FF0_0000_0000_0000
        }
        DType::F32 => |b| u32::from_le_bytes(b[..4].try_into().unwrap()) & 0x7F80_0000 != 0x7F80_0000,
        DType::F16 => |b| u16::from_le_bytes([b[0], b[1]]) & 0x7C00 != 0x7C00,
        DType::BF16 => |b| u16::from_le_bytes([b[0], b[1]]) & 0x7F80 != 0x7F80,
        DType::F8E4M3Fn => |b| b[0] & 0x7F != 0x7F,
        DType::F8E5M2 => |b| b[0] & 0x7C != 0x7C,
        DType::F8E4M3Fnuz | DType::F8E5M2Fnuz => |b| b[0] != 0x80,
        DType::F8E8M0Fnu => |b| b[0] != 0xFF,
        _ => |_| true,
    }
}

/// Whether some finite `from` value has no finite `to` value, or some non-zero one rounds to
/// zero (by the largest finite and the smallest positive values).
#[cfg(feature = "cli")]
fn can_lose(from: DType, to: DType) -> bool {
    max_finite(from) > max_finite(to) || min_positive(from) < min_positive(to)
}

/// The smallest positive value of a floating dtype (its smallest subnormal, where it has any).
#[cfg(feature = "cli")]
fn min_positive(d: DType) -> f64 {
    let exp = match d {
        DType::F64 => -1074,
        DType::F32 => -149,
        DType::F16 => -24,
        DType::BF16 => -133,
        DType::F8E4M3Fn => -9,
        DType::F8E5M2 => -16,
        DType::F8E4M3Fnuz => -10,
        DType::F8E5M2Fnuz => -17,
        DType::F8E8M0Fnu => -127,
        _ => return 0.0,
    };
    2f64.powi(exp)
}

/// The largest finite value of a floating dtype.
#[cfg(feature = "cli")]
pub fn max_finite(d: DType) -> f64 {
    match d {
        DType::F64 => f64::MAX,
        DType::F32 => f32::MAX as f64,
        DType::F16 => 65504.0,
        DType::BF16 => f32::from_bits(0x7F7F_0000) as f64,
        DType::F8E4M3Fn => 448.0,
        DType::F8E5M2 => 57344.0,
        DType::F8E4M3Fnuz => 240.0,
        DType::F8E5M2Fnuz => 57344.0,
        DType::F8E8M0Fnu => 2f64.powi(127),
        _ => f64::INFINITY,
    }
}

/// Decodes one little-endian element of a floating or integer dtype to f64: exact for every
/// floating kind (float8 included) and for integers up to 2^53; NaN for a NaN; bool as 0/1.
/// Complex elements decode to their real part (see [`decode_complex`]).
pub fn decode_f64(dtype: DType, b: &[u8]) -> f64 {
    match dtype {
        DType::F64 => f64::from_bits(u64::from_le_bytes(b[..8].try_into().unwrap())),
        DType::F32 => f32::from_bits(u32::from_le_bytes(b[..4].try_into().unwrap())) as f64,
        DType::F16
        | DType::BF16
        | DType::F8E4M3Fn
        | DType::F8E5M2
        | DType::F8E4M3Fnuz
        | DType::F8E5M2Fnuz
        | DType::F8E8M0Fnu => f32::from_bits(decoder(dtype)(b)) as f64,
        DType::I8 => b[0] as i8 as f64,
        DType::U8 => b[0] as f64,
        DType::Bool => (b[0] != 0) as u8 as f64,
        DType::I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
        DType::U16 => u16::from_le_bytes([b[0], b[1]]) as f64,
        DType::I32 => i32::from_le_bytes(b[..4].try_into().unwrap()) as f64,
        DType::U32 => u32::from_le_bytes(b[..4].try_into().unwrap()) as f64,
        DType::I64 => i64::from_le_bytes(b[..8].try_into().unwrap()) as f64,
        DType::U64 => u64::from_le_bytes(b[..8].try_into().unwrap()) as f64,
        DType::C32 | DType::C64 | DType::C128 => decode_complex(dtype, b).0,
    }
}

/// Decodes one little-endian complex element to (real, imaginary).
pub fn decode_complex(dtype: DType, b: &[u8]) -> (f64, f64) {
    match dtype {
        DType::C32 => (decode_f64(DType::F16, &b[..2]), decode_f64(DType::F16, &b[2..4])),
        DType::C64 => (decode_f64(DType::F32, &b[..4]), decode_f64(DType::F32, &b[4..8])),
        DType::C128 => (decode_f64(DType::F64, &b[..8]), decode_f64(DType::F64, &b[8..16])),
        _ => (decode_f64(dtype, b), 0.0),
    }
}

/// Decodes one little-endian integer or bool element exactly; None for other dtypes.
pub fn decode_int(dtype: DType, b: &[u8]) -> Option<i128> {
    Some(match dtype {
        DType::I8 => b[0] as i8 as i128,
        DType::U8 => b[0] as i128,
        DType::Bool => (b[0] != 0) as i128,
        DType::I16 => i16::from_le_bytes([b[0], b[1]]) as i128,
        DType::U16 => u16::from_le_bytes([b[0], b[1]]) as i128,
        DType::I32 => i32::from_le_bytes(b[..4].try_into().ok()?) as i128,
        DType::U32 => u32::from_le_bytes(b[..4].try_into().ok()?) as i128,
        DType::I64 => i64::from_le_bytes(b[..8].try_into().ok()?) as i128,
        DType::U64 => u64::from_le_bytes(b[..8].try_into().ok()?) as i128,
        _ => return None,
    })
}

// ----------------------------------------------------------------------------------- loops

fn map<const I: usize, const O: usize>(src: &[u8], out: &mut Vec<u8>, f: impl Fn([u8; I]) -> [u8; O]) {
    let start = out.len();
    out.resize(start + src.len() / I * O, 0);
    for (s, d) in src.chunks_exact(I).zip(out[start..].chunks_exact_mut(O)) {
        d.copy_from_slice(&f(s.try_into().unwrap()));
    }
}

fn map_dyn<const O: usize>(src: &[u8], size: usize, out: &mut Vec<u8>, f: impl Fn(&[u8]) -> [u8; O]) {
    let start = out.len();
    out.resize(start + src.len() / size * O, 0);
    for (s, d) in src.chunks_exact(size).zip(out[start..].chunks_exact_mut(O)) {
        d.copy_from_slice(&f(s));
    }
}

/// The exact float32 bits of one little-endian element of a floating dtype, the way PyTorch
/// decodes it on the way to another type.
fn decoder(from: DType) -> fn(&[u8]) -> u32 {
    match from {
        DType::F64 => |b| f64_to_f32(u64::from_le_bytes(b[..8].try_into().unwrap())),
        DType::F32 => |b| u32::from_le_bytes(b[..4].try_into().unwrap()),
        DType::F16 => |b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        DType::BF16 => |b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])),
        DType::F8E4M3Fn => |b| f8e4m3fn_to_f32(b[0]),
        DType::F8E5M2 => |b| f8e5m2_to_f32(b[0]),
        DType::F8E4M3Fnuz => |b| f8_fnuz_to_f32::<4, 3>(b[0]),
        DType::F8E5M2Fnuz => |b| f8_fnuz_to_f32::<5, 2>(b[0]),
        DType::F8E8M0Fnu => |b| f8e8m0fnu_to_f32(b[0]),
        other => panic!("no float decoder for {other}"),
    }
}

fn f8_encoder(to: DType) -> fn(u32) -> u8 {
    match to {
        DType::F8E4M3Fn => f32_to_f8e4m3fn,
        DType::F8E5M2 => f32_to_f8e5m2,
        DType::F8E4M3Fnuz => f32_to_f8e4m3fnuz,
        DType::F8E5M2Fnuz => f32_to_f8e5m2fnuz,
        DType::F8E8M0Fnu => f32_to_f8e8m0fnu,
        other => panic!("no float8 encoder for {other}"),
    }
}

// ----------------------------------------------------------------- scalar conversions (bits)

/// float64 -> float32 as `vcvtsd2ss`: round to nearest even; NaN keeps sign and the top 22
/// payload bits and is quieted.
pub fn f64_to_f32(x: u64) -> u32 {
    let v = f64::from_bits(x);
    if v.is_nan() {
        let sign = ((x >> 32) as u32) & 0x8000_0000;
        let payload = ((x >> 29) as u32) & 0x007F_FFFF;
        return sign | 0x7FC0_0000 | payload;
    }
    // Rust's `as` rounds to nearest, ties to even, and saturates to ±inf like IEEE.
    (v as f32).to_bits()
}

/// float32 -> float64 as `vcvtss2sd`: exact; NaN keeps sign and payload and is quieted.
pub fn f32_to_f64(x: u32) -> u64 {
    let v = f32::from_bits(x);
    if v.is_nan() {
        let sign = ((x & 0x8000_0000) as u64) << 32;
        let payload = ((x & 0x007F_FFFF) as u64) << 29;
        return sign | 0x7FF8_0000_0000_0000 | payload;
    }
    (v as f64).to_bits()
}

/// float32 -> float16 as F16C `vcvtps2ph` with round-to-nearest-even (what PyTorch's kernels
/// and c10::Half use on x86): gradual underflow, overflow to ±inf, NaN quieted with the top
/// 9 payload bits kept.
#[inline]
pub fn f32_to_f16(x: u32) -> u16 {
    let sign = ((x >> 16) & 0x8000) as u16;
    let f = x & 0x7FFF_FFFF;
    if f >= 0x4780_0000 {
        // >= 65536, inf or NaN.
        return sign
            | if f > 0x7F80_0000 {
                0x7E00 | ((f >> 13) & 0x3FF) as u16
            } else {
                0x7C00
            };
    }
    if f < 0x3880_0000 {
        // Below 2^-14: float16 subnormals. Adding 0.5 makes the FPU round the value to a
        // multiple of 2^-24 (nearest even) in the low mantissa bits.
        const MAGIC: u32 = 0x3F00_0000;
        return sign
            | (f32::from_bits(f) + f32::from_bits(MAGIC))
                .to_bits()
                .wrapping_sub(MAGIC) as u16;
    }
    // Normal: rebias the exponent and round the 13 dropped bits to nearest even; a carry
    // moves into the exponent (up to inf for 65520..65536).
    let mant_odd = (f >> 13) & 1;
    let r = f
        .wrapping_add(((15u32.wrapping_sub(127)) << 23).wrapping_add(0xFFF))
        .wrapping_add(mant_odd);
    sign | (r >> 13) as u16
}

/// The plain statement of [`f32_to_f16`], case by case (tests check the two agree).
#[cfg(test)]
fn f32_to_f16_reference(x: u32) -> u16 {
    let sign = ((x >> 16) & 0x8000) as u16;
    let abs = x & 0x7FFF_FFFF;
    let exp = abs >> 23;
    let man = abs & 0x007F_FFFF;
    if exp == 0xFF {
        return if man == 0 {
            sign | 0x7C00
        } else {
            sign | 0x7E00 | (man >> 13) as u16
        };
    }
    if abs >= 0x477F_F000 {
        // >= 65520: rounds past 65504.
        return sign | 0x7C00;
    }
    if exp < 113 {
        // Below 2^-14: a float16 subnormal (or zero), in units of 2^-24.
        if exp < 102 {
            return sign; // below 2^-25: rounds to zero (2^-25 itself ties to even zero)
        }
        let m = man | 0x0080_0000;
        let shift = 126 - exp; // 14..=24
        let q = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        let r = q + u32::from(rem > half || (rem == half && q & 1 == 1));
        return sign | r as u16;
    }
    let h = ((exp - 112) << 10) | (man >> 13);
    let rem = man & 0x1FFF;
    let r = h + u32::from(rem > 0x1000 || (rem == 0x1000 && h & 1 == 1));
    sign | r as u16
}

/// float16 -> float32: exact; NaN keeps sign and payload and is quieted (`vcvtph2ps`).
pub fn f16_to_f32(h: u16) -> u32 {
    static TABLE: std::sync::OnceLock<Box<[u32]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(f16_to_f32_calc).collect())[h as usize]
}

fn f16_to_f32_calc(h: u16) -> u32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1F) as u32;
    let man = (h & 0x03FF) as u32;
    match exp {
        0x1F if man == 0 => sign | 0x7F80_0000,
        0x1F => sign | 0x7FC0_0000 | (man << 13),
        0 if man == 0 => sign,
        0 => {
            // Subnormal: man * 2^-24, normalised.
            let lz = man.leading_zeros() - 22; // shifts to bring the top bit to position 10
            let m = (man << (lz + 1)) & 0x03FF;
            let e = 113 - (lz + 1);
            sign | (e << 23) | (m << 13)
        }
        _ => sign | ((exp + 112) << 23) | (man << 13),
    }
}

/// bfloat16 -> float32: the top half of the float32 (signalling NaNs stay signalling).
pub fn bf16_to_f32(b: u16) -> u32 {
    (b as u32) << 16
}

fn bf16_round(x: u32) -> u16 {
    let bias = ((x >> 16) & 1) + 0x7FFF;
    (x.wrapping_add(bias) >> 16) as u16
}

/// float32 -> bfloat16 as PyTorch's vectorised kernel (`cvtfp32_bf16`): round to nearest
/// even, every NaN -> 0xFFFF.
pub fn f32_to_bf16_vec(x: u32) -> u16 {
    if f32::from_bits(x).is_nan() {
        0xFFFF
    } else {
        bf16_round(x)
    }
}

/// float32 -> bfloat16 as c10's `round_to_nearest_even` (the scalar path): every NaN ->
/// 0x7FC0.
pub fn f32_to_bf16_scalar(x: u32) -> u16 {
    if f32::from_bits(x).is_nan() {
        0x7FC0
    } else {
        bf16_round(x)
    }
}

/// c10 `fp8e4m3fn_to_fp32_value`.
pub fn f8e4m3fn_to_f32(input: u8) -> u32 {
    let w = (input as u32) << 24;
    let sign = w & 0x8000_0000;
    let nonsign = w & 0x7FFF_FFFF;
    let mut renorm_shift = if nonsign != 0 { nonsign.leading_zeros() } else { 32 };
    renorm_shift = renorm_shift.saturating_sub(4);
    let inf_nan_mask = ((nonsign.wrapping_add(0x0100_0000) as i32) >> 8) as u32 & 0x7F80_0000;
    let zero_mask = ((nonsign.wrapping_sub(1) as i32) >> 31) as u32;
    let shifted = if renorm_shift >= 32 { 0 } else { nonsign << renorm_shift };
    sign | (((shifted >> 4).wrapping_add((0x78u32.wrapping_sub(renorm_shift)) << 23) | inf_nan_mask) & !zero_mask)
}

/// c10 `fp8e5m2_to_fp32_value`: the byte is the top half of a float16.
pub fn f8e5m2_to_f32(input: u8) -> u32 {
    f16_to_f32((input as u16) << 8)
}

/// c10 `fp8_fnuz_to_fp32_value<we, wm>`: 0x80 is NaN (decoded as 0x7F800001), no -0.
pub fn f8_fnuz_to_f32<const WE: u32, const WM: u32>(x: u8) -> u32 {
    if x == 0 {
        return 0;
    }
    if x == 0x80 {
        return 0x7F80_0001;
    }
    let mut mantissa = (x as u32) & ((1 << WM) - 1);
    let mut exponent = ((x as u32) & 0x7F) >> WM;
    if exponent == 0 {
        let renorm_shift = mantissa.leading_zeros();
        let sh = 1 + renorm_shift - (32 - WM);
        mantissa <<= sh;
        exponent = exponent.wrapping_add(1).wrapping_sub(sh);
        mantissa &= (1 << WM) - 1;
    }
    let exp_low_cutoff = (1u32 << 7) - (1u32 << (WE - 1));
    exponent = exponent.wrapping_add(exp_low_cutoff - 1);
    mantissa <<= 23 - WM;
    let sign = (x as u32) >> 7;
    (sign << 31) | (exponent << 23) | mantissa
}

/// c10 `Float8_e8m0fnu::operator float`: 2^(x-127); 0 -> 2^-127, 0xFF -> NaN 0x7F800001.
pub fn f8e8m0fnu_to_f32(x: u8) -> u32 {
    match x {
        0 => 0x0040_0000,
        0xFF => 0x7F80_0001,
        _ => (x as u32) << 23,
    }
}

/// `fp32_from_bits(a) + fp32_from_bits(b)` in float32 (round to nearest even), as bits.
fn add_f32(a: u32, b: u32) -> u32 {
    (f32::from_bits(a) + f32::from_bits(b)).to_bits()
}

/// c10 `fp8e4m3fn_from_fp32_value`: no infinity; |x| >= 480 and NaN -> 0x7F|sign.
pub fn f32_to_f8e4m3fn(x: u32) -> u8 {
    const FP8_MAX: u32 = 1087 << 20;
    const DENORM_MASK: u32 = 141 << 23;
    let sign = x & 0x8000_0000;
    let mut f = x ^ sign;
    let result: u8 = if f >= FP8_MAX {
        0x7F
    } else if f < (121 << 23) {
        f = add_f32(f, DENORM_MASK);
        f.wrapping_sub(DENORM_MASK) as u8
    } else {
        let mant_odd = (f >> 20) & 1;
        f = f.wrapping_add(((7u32.wrapping_sub(127)) << 23).wrapping_add(0x7FFFF));
        f = f.wrapping_add(mant_odd);
        (f >> 20) as u8
    };
    result | (sign >> 24) as u8
}

/// c10 `fp8e5m2_from_fp32_value`: |x| >= 65536 -> inf, NaN -> 0x7F|sign.
pub fn f32_to_f8e5m2(x: u32) -> u8 {
    const FP32_INF: u32 = 255 << 23;
    const FP8_MAX: u32 = 143 << 23;
    const DENORM_MASK: u32 = 134 << 23;
    let sign = x & 0x8000_0000;
    let mut f = x ^ sign;
    let result: u8 = if f >= FP8_MAX {
        if f > FP32_INF {
            0x7F
        } else {
            0x7C
        }
    } else if f < (113 << 23) {
        f = add_f32(f, DENORM_MASK);
        f.wrapping_sub(DENORM_MASK) as u8
    } else {
        let mant_odd = (f >> 21) & 1;
        f = f.wrapping_add(((15u32.wrapping_sub(127)) << 23).wrapping_add(0xFFFFF));
        f = f.wrapping_add(mant_odd);
        (f >> 21) as u8
    };
    result | (sign >> 24) as u8
}

/// c10 `fp8e4m3fnuz_from_fp32_value`: |x| >= 256 (and inf, NaN) -> 0x80 (NaN); no -0.
pub fn f32_to_f8e4m3fnuz(x: u32) -> u8 {
    const FNUZ_MAX: u32 = 0x87 << 23;
    const DENORM_MASK: u32 = 0x8C << 23;
    let sign = x & 0x8000_0000;
    let mut f = x ^ sign;
    if f >= FNUZ_MAX {
        return 0x80;
    }
    let result: u32 = if f < (0x78 << 23) {
        f = add_f32(f, DENORM_MASK);
        let r = f.wrapping_sub(DENORM_MASK) as u8;
        if r == 0 {
            return 0;
        }
        r as u32
    } else {
        let mant_odd = (f >> 20) & 1;
        f = f.wrapping_add(((8u32.wrapping_sub(127)) << 23).wrapping_add(0x7FFFF));
        f = f.wrapping_add(mant_odd);
        (f >> 20) as u8 as u32
    };
    (result | (sign >> 24)) as u8
}

/// c10 `fp8e5m2fnuz_from_fp32_value`: |x| >= 65536 (and inf, NaN) -> 0x80 (NaN); no -0.
pub fn f32_to_f8e5m2fnuz(x: u32) -> u8 {
    const FNUZ_MAX: u32 = 0x8F << 23;
    const DENORM_MASK: u32 = 0x85 << 23;
    let sign = x & 0x8000_0000;
    let mut f = x ^ sign;
    if f >= FNUZ_MAX {
        return 0x80;
    }
    let result: u32 = if f < (0x70 << 23) {
        f = add_f32(f, DENORM_MASK);
        let r = f.wrapping_sub(DENORM_MASK) as u8;
        if r == 0 {
            return 0;
        }
        r as u32
    } else {
        let mant_odd = (f >> 21) & 1;
        f = f.wrapping_add(((16u32.wrapping_sub(127)) << 23).wrapping_add(0xFFFFF));
        f = f.wrapping_add(mant_odd);
        (f >> 21) as u8 as u32
    };
    (result | (sign >> 24)) as u8
}

/// c10 `fp8e8m0fnu_from_fp32_value`: the exponent, rounded by the mantissa (sign dropped);
/// inf and NaN -> 0xFF.
pub fn f32_to_f8e8m0fnu(x: u32) -> u8 {
    let mut exponent = (x >> 23) & 0xFF;
    if exponent == 0xFF {
        return 0xFF;
    }
    let g = x & 0x40_0000 != 0;
    let r = x & 0x20_0000 != 0;
    let s = x & 0x1F_FFFF != 0;
    let lsb = exponent > 0;
    if g && (r || s || lsb) {
        exponent += 1;
    }
    exponent as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(from: DType, to: DType, src: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        convert(from, to, src, &mut out);
        out
    }

    #[test]
    fn f16_round_trip_of_every_pattern_is_exact_except_nan_quieting() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            let back = f32_to_f16(f);
            let is_nan = (h & 0x7C00) == 0x7C00 && (h & 0x3FF) != 0;
            if is_nan {
                assert_eq!(back, h | 0x0200, "{h:#x}");
            } else {
                assert_eq!(back, h, "{h:#x}");
                // And the decode agrees with the `half` crate's exact value.
                assert_eq!(f32::from_bits(f), half::f16::from_bits(h).to_f32(), "{h:#x}");
            }
        }
    }

    #[test]
    fn f32_to_f16_rounds_like_the_half_crate_for_finite_values() {
        let mut x: u32 = 1;
        for _ in 0..200_000 {
            x = x.wrapping_mul(0x9E37_79B1).wrapping_add(0x7F4A_7C15);
            let v = f32::from_bits(x);
            if v.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16(x), half::f16::from_f32(v).to_bits(), "{x:#x}");
        }
    }

    #[test]
    fn fast_f32_to_f16_agrees_with_the_reference() {
        // Every exponent with many mantissas (the full 2^32 sweep passes too; it takes ~10 s
        // in a debug build).
        for hi in 0..=0x1FFu32 {
            for k in 0..4096u32 {
                let x = (hi << 23) | (k.wrapping_mul(0x9E37_79B1) >> 9) ^ (k & 0x1FFF);
                assert_eq!(f32_to_f16(x), f32_to_f16_reference(x), "{x:#x}");
                let y = (hi << 23) | (k << 11) | 0x7FF;
                assert_eq!(f32_to_f16(y), f32_to_f16_reference(y), "{y:#x}");
            }
        }
    }

    #[test]
    #[ignore = "the full 2^32 sweep takes minutes in a debug build; the sampled sweep above runs by default"]
    fn fast_f32_to_f16_agrees_with_the_reference_everywhere() {
        for x in 0..=u32::MAX {
            assert_eq!(f32_to_f16(x), f32_to_f16_reference(x), "{x:#x}");
        }
    }

    #[test]
    fn specials() {
        assert_eq!(f32_to_f16(0x7FC0_0000), 0x7E00);
        assert_eq!(f32_to_f16(0xFFC0_0000), 0xFE00);
        assert_eq!(f32_to_f16(65504f32.to_bits()), 0x7BFF);
        assert_eq!(f32_to_f16(65519.996f32.to_bits()), 0x7BFF);
        assert_eq!(f32_to_f16(65520f32.to_bits()), 0x7C00);
        assert_eq!(f32_to_bf16_vec(0x7FC0_0000), 0xFFFF);
        assert_eq!(f32_to_bf16_scalar(0xFFC0_0000), 0x7FC0);
        assert_eq!(f32_to_bf16_vec(0x3F80_8000), 0x3F80); // tie to even
        assert_eq!(f32_to_bf16_vec(0x3F81_8000), 0x3F82);
        assert_eq!(f32_to_bf16_vec(0x7F7F_8000), 0x7F80); // overflow to inf
                                                          // float64 rounds through float32: 1 + 2^-11 + 2^-40 ties to even in f32 -> 1.0.
        let x = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(conv(DType::F64, DType::F16, &x.to_le_bytes()), 0x3C00u16.to_le_bytes());
    }

    #[test]
    fn float8_decodes_match_their_values() {
        for b in 0..=255u8 {
            let e4 = f32::from_bits(f8e4m3fn_to_f32(b));
            if b & 0x7F == 0x7F {
                assert!(e4.is_nan());
            } else {
                let mag = if b & 0x78 == 0 {
                    (b & 7) as f32 * 2f32.powi(-9)
                } else {
                    (8 + (b & 7)) as f32 * 2f32.powi(((b >> 3) & 15) as i32 - 10)
                };
                assert_eq!(e4, if b & 0x80 != 0 { -mag } else { mag }, "{b:#x}");
                // And encoding it again gives the same byte.
                assert_eq!(f32_to_f8e4m3fn(e4.to_bits()), b, "{b:#x}");
            }
            let e5 = f32::from_bits(f8e5m2_to_f32(b));
            if !e5.is_nan() {
                assert_eq!(f32_to_f8e5m2(e5.to_bits()), b, "{b:#x}");
            }
            for (dec, enc) in [
                (
                    f8_fnuz_to_f32::<4, 3> as fn(u8) -> u32,
                    f32_to_f8e4m3fnuz as fn(u32) -> u8,
                ),
                (f8_fnuz_to_f32::<5, 2>, f32_to_f8e5m2fnuz),
            ] {
                let v = dec(b);
                assert_eq!(enc(v), b, "{b:#x}");
            }
        }
    }

    #[test]
    fn losses_count_overflow_and_flush_to_zero() {
        let vals: Vec<u8> = [1.0f32, 65504.0, 65520.0, -1e10, f32::INFINITY, f32::NAN, 3.4e38]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let over = |to| losses(DType::F32, to, &vals).overflow;
        assert_eq!(over(DType::F16), 3);
        assert_eq!(over(DType::BF16), 1); // 3.4e38 rounds up to inf
        assert_eq!(over(DType::F64), 0);
        assert_eq!(over(DType::F8E4M3Fn), 4); // 65504, 65520, -1e10, 3.4e38
                                              // float16's smallest subnormal is 2^-24: 2^-24 survives, 2^-25 rounds to even (0),
                                              // just above 2^-25 rounds up to 2^-24; zeros were zero already.
        let small: Vec<u8> = [
            1e-19f32,
            -1e-19,
            2f32.powi(-24),
            2f32.powi(-25),
            2f32.powi(-25) * 1.0001,
            0.0,
            -0.0,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
        assert_eq!(
            losses(DType::F32, DType::F16, &small),
            Losses {
                overflow: 0,
                underflow: 3
            }
        );
        assert_eq!(losses(DType::F32, DType::BF16, &small).underflow, 0);
        assert_eq!(losses(DType::F32, DType::F64, &small).underflow, 0);
    }
}
