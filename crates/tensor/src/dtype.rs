//! Element types.
//!
//! `DType` names how a tensor's bytes are read. Dense types (f32, f16, bf16, f64 and the
//! integer types) have one element per `size_in_bytes()` bytes. Block-quantized types
//! (ggml Q8_0, Q4_0, Q4_K, Q6_K) pack `block_elems()` logical elements into
//! `block_bytes()` bytes; a tensor of such a type has a logical shape whose last
//! dimension is a multiple of the block and a byte length of
//! `numel / block_elems * block_bytes`. The quantization crate owns their numerics;
//! this crate only stores and moves their bytes.

use crate::error::{Error, Result};

/// How a tensor's bytes are interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    I64,
    /// FP8 E4M3 (finite-only, "fn" variant), stored one byte per element.
    F8E4M3,
    /// FP8 E5M2, stored one byte per element.
    F8E5M2,
    /// ggml Q8_0: f16 scale + 32 x i8, 34 bytes per 32 elements.
    Q8_0,
    /// ggml Q4_0: f16 scale + 16 bytes of nibbles, 18 bytes per 32 elements.
    Q4_0,
    /// ggml Q4_K: super-block of 256 elements in 144 bytes.
    Q4K,
    /// ggml Q6_K: super-block of 256 elements in 210 bytes.
    Q6K,
}

impl DType {
    pub const ALL: [DType; 17] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::U32,
        DType::I32,
        DType::I64,
        DType::F8E4M3,
        DType::F8E5M2,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4K,
        DType::Q6K,
    ];

    /// Logical elements per storage block (1 for dense types).
    pub const fn block_elems(self) -> usize {
        match self {
            DType::Q8_0 | DType::Q4_0 => 32,
            DType::Q4K | DType::Q6K => 256,
            _ => 1,
        }
    }

    /// Bytes per storage block (the element size for dense types).
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::U32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::U16 | DType::I16 => 2,
            DType::U8 | DType::I8 | DType::F8E4M3 | DType::F8E5M2 => 1,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4K => 144,
            DType::Q6K => 210,
        }
    }

    /// Whether this is a ggml block-quantized type.
    pub const fn is_block_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Whether this is one of the float types ops compute on (f32, f16, bf16).
    pub const fn is_compute_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// Bytes needed to store `numel` logical elements.
    pub fn storage_bytes(self, numel: usize) -> Result<usize> {
        let block = self.block_elems();
        if !numel.is_multiple_of(block) {
            return Err(Error::InvalidArgument(format!(
                "{numel} elements of {self} do not fill whole blocks of {block}"
            )));
        }
        (numel / block)
            .checked_mul(self.block_bytes())
            .ok_or_else(|| Error::InvalidArgument(format!("{numel} elements of {self} overflow usize bytes")))
    }

    /// The safetensors dtype string, for dense types safetensors knows.
    pub const fn safetensors_name(self) -> Option<&'static str> {
        Some(match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::U16 => "U16",
            DType::I16 => "I16",
            DType::U32 => "U32",
            DType::I32 => "I32",
            DType::I64 => "I64",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            _ => return None,
        })
    }

    /// Parses a short name as used on the command line (`f32`, `bf16`, `q4_0`, ...).
    pub fn parse(name: &str) -> Result<DType> {
        let lower = name.to_ascii_lowercase();
        DType::ALL
            .into_iter()
            .find(|d| d.name() == lower)
            .ok_or_else(|| Error::InvalidArgument(format!("unknown dtype `{name}`")))
    }

    /// Short lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::U16 => "u16",
            DType::I16 => "i16",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::F8E4M3 => "f8e4m3",
            DType::F8E5M2 => "f8e5m2",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4K => "q4_k",
            DType::Q6K => "q6_k",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that is the element of a dense dtype.
pub trait Element: bytemuck::Pod + Copy + Send + Sync + std::fmt::Debug + 'static {
    const DTYPE: DType;
}

macro_rules! element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
        }
    };
}
element!(f32, DType::F32);
element!(half::f16, DType::F16);
element!(half::bf16, DType::BF16);
element!(f64, DType::F64);
element!(u8, DType::U8);
element!(i8, DType::I8);
element!(u16, DType::U16);
element!(i16, DType::I16);
element!(u32, DType::U32);
element!(i32, DType::I32);
element!(i64, DType::I64);

/// A float element ops compute on; converts to and from f32 (the accumulation type).
pub trait FloatElement: Element {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl FloatElement for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl FloatElement for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}
impl FloatElement for half::bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_block_sizes_match_ggml() {
        assert_eq!((DType::Q8_0.block_elems(), DType::Q8_0.block_bytes()), (32, 34));
        assert_eq!((DType::Q4_0.block_elems(), DType::Q4_0.block_bytes()), (32, 18));
        assert_eq!((DType::Q4K.block_elems(), DType::Q4K.block_bytes()), (256, 144));
        assert_eq!((DType::Q6K.block_elems(), DType::Q6K.block_bytes()), (256, 210));
    }

    #[test]
    fn storage_bytes_rejects_partial_blocks() {
        assert_eq!(DType::Q4_0.storage_bytes(64).unwrap(), 36);
        let err = DType::Q4_0.storage_bytes(33).unwrap_err().to_string();
        assert!(err.contains("33") && err.contains("q4_0"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::parse(d.name()).unwrap(), d);
        }
        assert!(DType::parse("f7").is_err());
    }
}
