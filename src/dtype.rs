//! Element types, under the names PyTorch, its storage classes and safetensors give them.

use std::fmt;

/// A tensor element type. `name()` is PyTorch's name without the `torch.` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// `torch.float64` (double).
    F64,
    /// `torch.float32` (float).
    F32,
    /// `torch.float16` (half).
    F16,
    /// `torch.bfloat16`.
    BF16,
    /// `torch.float8_e4m3fn`.
    F8E4M3Fn,
    /// `torch.float8_e5m2`.
    F8E5M2,
    /// `torch.float8_e4m3fnuz`.
    F8E4M3Fnuz,
    /// `torch.float8_e5m2fnuz`.
    F8E5M2Fnuz,
    /// `torch.float8_e8m0fnu`.
    F8E8M0Fnu,
    /// `torch.int8`.
    I8,
    /// `torch.int16` (short).
    I16,
    /// `torch.int32` (int).
    I32,
    /// `torch.int64` (long).
    I64,
    /// `torch.uint8`.
    U8,
    /// `torch.uint16`.
    U16,
    /// `torch.uint32`.
    U32,
    /// `torch.uint64`.
    U64,
    /// `torch.bool`.
    Bool,
    /// `torch.complex32` (ComplexHalf): two float16. torch saves it with `_rebuild_tensor_v3`;
    /// safetensors has no such dtype.
    C32,
    /// `torch.complex64` (cfloat): two float32.
    C64,
    /// `torch.complex128` (cdouble): two float64.
    C128,
}

impl DType {
    /// Every dtype ckpt knows.
    pub const ALL: [DType; 21] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3Fn,
        DType::F8E5M2,
        DType::F8E4M3Fnuz,
        DType::F8E5M2Fnuz,
        DType::F8E8M0Fnu,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
        DType::C32,
        DType::C64,
        DType::C128,
    ];

    /// PyTorch's name: `torch.<name>` is the dtype object.
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F8E4M3Fn => "float8_e4m3fn",
            DType::F8E5M2 => "float8_e5m2",
            DType::F8E4M3Fnuz => "float8_e4m3fnuz",
            DType::F8E5M2Fnuz => "float8_e5m2fnuz",
            DType::F8E8M0Fnu => "float8_e8m0fnu",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
            DType::C32 => "complex32",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 | DType::C64 => 8,
            DType::F32 | DType::I32 | DType::U32 | DType::C32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::C128 => 16,
            _ => 1,
        }
    }

    /// The unit that byte order applies to: a complex number is two floats.
    pub fn swap_unit(self) -> usize {
        if self.is_complex() {
            self.size() / 2
        } else {
            self.size()
        }
    }

    /// Whether it is a complex type (two floats per element).
    pub fn is_complex(self) -> bool {
        matches!(self, DType::C32 | DType::C64 | DType::C128)
    }

    /// Whether it is a real floating-point type (float8 kinds included).
    pub fn is_floating(self) -> bool {
        matches!(
            self,
            DType::F64
                | DType::F32
                | DType::F16
                | DType::BF16
                | DType::F8E4M3Fn
                | DType::F8E5M2
                | DType::F8E4M3Fnuz
                | DType::F8E5M2Fnuz
                | DType::F8E8M0Fnu
        )
    }

    /// Looks up a dtype by PyTorch name, with or without `torch.`, and the common aliases
    /// (`float`, `half`, `double`, `long`, `int`, `short`, `chalf`, `cfloat`, `cdouble`) and short forms
    /// users type (`f32`, `bf16`, `fp16`...).
    pub fn parse(s: &str) -> Option<DType> {
        let s = s.strip_prefix("torch.").unwrap_or(s);
        let alias = match s {
            "float" | "f32" | "fp32" => "float32",
            "double" | "f64" | "fp64" => "float64",
            "half" | "f16" | "fp16" => "float16",
            "bf16" => "bfloat16",
            "long" | "i64" => "int64",
            "int" | "i32" => "int32",
            "short" | "i16" => "int16",
            "i8" => "int8",
            "u8" => "uint8",
            "chalf" => "complex32",
            "cfloat" => "complex64",
            "cdouble" => "complex128",
            other => other,
        };
        DType::ALL.into_iter().find(|d| d.name() == alias)
    }

    /// The dtype of a legacy typed storage class (`torch.FloatStorage` ...), by class name.
    pub(crate) fn from_storage_class(class: &str) -> Option<DType> {
        Some(match class {
            "DoubleStorage" => DType::F64,
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            "ComplexFloatStorage" => DType::C64,
            "ComplexDoubleStorage" => DType::C128,
            _ => return None,
        })
    }

    /// The legacy typed storage class PyTorch pickles for this dtype, if it has one; dtypes
    /// without one are saved as `UntypedStorage` with `_rebuild_tensor_v3`.
    pub(crate) fn storage_class(self) -> Option<&'static str> {
        Some(match self {
            DType::F64 => "DoubleStorage",
            DType::F32 => "FloatStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::I64 => "LongStorage",
            DType::I32 => "IntStorage",
            DType::I16 => "ShortStorage",
            DType::I8 => "CharStorage",
            DType::U8 => "ByteStorage",
            DType::Bool => "BoolStorage",
            DType::C64 => "ComplexFloatStorage",
            DType::C128 => "ComplexDoubleStorage",
            _ => return None,
        })
    }

    /// The safetensors name, for the dtypes safetensors can hold.
    pub fn safetensors_name(self) -> Option<&'static str> {
        Some(match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F8E4M3Fn => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            DType::F8E8M0Fnu => "F8_E8M0",
            DType::F8E4M3Fnuz => "F8_E4M3FNUZ",
            DType::F8E5M2Fnuz => "F8_E5M2FNUZ",
            DType::I8 => "I8",
            DType::I16 => "I16",
            DType::I32 => "I32",
            DType::I64 => "I64",
            DType::U8 => "U8",
            DType::U16 => "U16",
            DType::U32 => "U32",
            DType::U64 => "U64",
            DType::Bool => "BOOL",
            DType::C64 => "C64",
            _ => return None,
        })
    }

    pub(crate) fn from_safetensors(dtype: safetensors::Dtype) -> Option<DType> {
        use safetensors::Dtype as S;
        Some(match dtype {
            S::F64 => DType::F64,
            S::F32 => DType::F32,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::F8_E4M3 => DType::F8E4M3Fn,
            S::F8_E5M2 => DType::F8E5M2,
            S::F8_E8M0 => DType::F8E8M0Fnu,
            S::F8_E4M3FNUZ => DType::F8E4M3Fnuz,
            S::F8_E5M2FNUZ => DType::F8E5M2Fnuz,
            S::I8 => DType::I8,
            S::I16 => DType::I16,
            S::I32 => DType::I32,
            S::I64 => DType::I64,
            S::U8 => DType::U8,
            S::U16 => DType::U16,
            S::U32 => DType::U32,
            S::U64 => DType::U64,
            S::BOOL => DType::Bool,
            S::C64 => DType::C64,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_parse() {
        for d in DType::ALL {
            assert_eq!(DType::parse(d.name()), Some(d));
            assert_eq!(DType::parse(&format!("torch.{}", d.name())), Some(d));
        }
        assert_eq!(DType::parse("bf16"), Some(DType::BF16));
        assert_eq!(DType::parse("half"), Some(DType::F16));
        assert_eq!(DType::parse("float7"), None);
    }

    #[test]
    fn storage_classes_round_trip() {
        for d in DType::ALL {
            if let Some(class) = d.storage_class() {
                assert_eq!(DType::from_storage_class(class), Some(d));
            }
        }
    }
}
