//! The Rust types a tensor's elements can be read as and built from: one per PyTorch dtype
//! that has a plain Rust counterpart.

use half::{bf16, f16};

use crate::dtype::DType;

mod sealed {
    /// Byte conversions of an [`super::Element`]; private, so that no type outside ckpt can
    /// claim to be one.
    pub trait Sealed: Sized {
        /// Whether every bit pattern of the type's size is a valid value (not so for bool).
        const ANY_BITS: bool;
        /// The value of exactly `size_of::<Self>()` little-endian bytes.
        fn from_le(bytes: &[u8]) -> Self;
        /// Appends the value's little-endian bytes.
        fn put_le(self, out: &mut Vec<u8>);
    }
}

pub(crate) use sealed::Sealed;

/// A Rust type that holds the elements of one PyTorch dtype exactly: `f32` is `torch.float32`,
/// [`half::f16`] `torch.float16`, [`half::bf16`] `torch.bfloat16`, `bool` `torch.bool`...
/// Implemented for f64, f32, f16, bf16, i8, i16, i32, i64, u8, u16, u32, u64 and bool; sealed.
///
/// ```
/// use ckpt::{dtype::DType, Element};
/// assert_eq!(<half::bf16 as Element>::DTYPE, DType::BF16);
/// ```
pub trait Element: Sealed + Copy + 'static {
    /// The dtype whose elements this type holds.
    const DTYPE: DType;
}

macro_rules! element {
    ($($t:ty => $dtype:ident),* $(,)?) => {$(
        impl Sealed for $t {
            const ANY_BITS: bool = true;
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("one element's bytes"))
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
        }
    )*};
}

element!(
    f64 => F64, f32 => F32, f16 => F16, bf16 => BF16,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
);

impl Sealed for bool {
    const ANY_BITS: bool = false;
    /// torch stores a bool as one byte, 0 or 1; a byte that is neither reads as true.
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

impl Element for bool {
    const DTYPE: DType = DType::Bool;
}
