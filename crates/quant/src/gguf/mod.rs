//! GGUF v3 files (llama.cpp / ggml model format): reader ([`GgufFile`], memory-mapped,
//! tensors used in place) and writer ([`GgufWriter`]).
//!
//! Layout (little-endian): magic `"GGUF"`, u32 version (3; 2 accepted on read),
//! u64 tensor_count, u64 kv_count; `kv_count` entries of (string key, u32 value type,
//! value); `tensor_count` tensor infos of (string name, u32 n_dims, n_dims x u64 dims
//! innermost first, u32 ggml type, u64 offset relative to the data section); padding
//! to `general.alignment` (u32, default 32); the data section, each tensor at an
//! aligned offset. Strings are u64 length + UTF-8 bytes. Value types: 0 u8, 1 i8,
//! 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (1 byte), 8 string, 9 array (u32 element
//! type, u64 count, elements), 10 u64, 11 i64, 12 f64.

mod reader;
mod writer;

pub use reader::GgufFile;
pub use writer::GgufWriter;

use linattn_tensor::{DType, Error, Result, Shape};

/// Default data alignment.
pub const DEFAULT_ALIGNMENT: usize = 32;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Element value type id and items (all of that type).
    Array(u32, Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The value type id.
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(..) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// The value as an unsigned integer, for any non-negative integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) if v >= 0 => Some(v as u64),
            GgufValue::I16(v) if v >= 0 => Some(v as u64),
            GgufValue::I32(v) if v >= 0 => Some(v as u64),
            GgufValue::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    /// The string, for string values.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// A JSON rendering (arrays longer than `max_items` are cut, noting the length).
    pub fn to_json(&self, max_items: usize) -> serde_json::Value {
        use serde_json::json;
        match self {
            GgufValue::U8(v) => json!(v),
            GgufValue::I8(v) => json!(v),
            GgufValue::U16(v) => json!(v),
            GgufValue::I16(v) => json!(v),
            GgufValue::U32(v) => json!(v),
            GgufValue::I32(v) => json!(v),
            GgufValue::F32(v) => json!(v),
            GgufValue::Bool(v) => json!(v),
            GgufValue::String(v) => json!(v),
            GgufValue::U64(v) => json!(v),
            GgufValue::I64(v) => json!(v),
            GgufValue::F64(v) => json!(v),
            GgufValue::Array(_, items) if items.len() > max_items => {
                let head: Vec<_> = items[..max_items].iter().map(|v| v.to_json(max_items)).collect();
                json!({ "len": items.len(), "head": head })
            }
            GgufValue::Array(_, items) => {
                serde_json::Value::Array(items.iter().map(|v| v.to_json(max_items)).collect())
            }
        }
    }
}

/// ggml tensor types known to this reader: (type id, name, block elems, block bytes).
/// Types without a `DType` can be listed and viewed as bytes, not computed on.
const GGML_TYPES: &[(u32, &str, usize, usize)] = &[
    (0, "f32", 1, 4),
    (1, "f16", 1, 2),
    (2, "q4_0", 32, 18),
    (3, "q4_1", 32, 20),
    (6, "q5_0", 32, 22),
    (7, "q5_1", 32, 24),
    (8, "q8_0", 32, 34),
    (9, "q8_1", 32, 36),
    (10, "q2_k", 256, 84),
    (11, "q3_k", 256, 110),
    (12, "q4_k", 256, 144),
    (13, "q5_k", 256, 176),
    (14, "q6_k", 256, 210),
    (15, "q8_k", 256, 292),
    (24, "i8", 1, 1),
    (25, "i16", 1, 2),
    (26, "i32", 1, 4),
    (27, "i64", 1, 8),
    (28, "f64", 1, 8),
    (30, "bf16", 1, 2),
];

/// Name, block elements and block bytes of a ggml type id.
pub fn ggml_type_info(type_id: u32) -> Option<(&'static str, usize, usize)> {
    GGML_TYPES.iter().find(|t| t.0 == type_id).map(|t| (t.1, t.2, t.3))
}

/// The linattn dtype of a ggml type id, where one exists.
pub fn dtype_of_ggml_type(type_id: u32) -> Option<DType> {
    Some(match type_id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        8 => DType::Q8_0,
        12 => DType::Q4K,
        14 => DType::Q6K,
        24 => DType::I8,
        25 => DType::I16,
        26 => DType::I32,
        27 => DType::I64,
        28 => DType::F64,
        30 => DType::BF16,
        _ => return None,
    })
}

/// The ggml type id of a dtype, where one exists.
pub fn ggml_type_of_dtype(dtype: DType) -> Result<u32> {
    (0u32..=40).find(|&id| dtype_of_ggml_type(id) == Some(dtype)).ok_or_else(|| Error::UnsupportedDType {
        op: "gguf",
        dtype,
        detail: "no ggml type id".into(),
    })
}

/// One tensor info entry.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions as stored: innermost (contiguous) first.
    pub ggml_dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Byte size of the data.
    pub nbytes: usize,
}

impl GgufTensorInfo {
    /// Row-major shape, outermost first (the reverse of `ggml_dims`).
    pub fn shape(&self) -> Shape {
        Shape::new(self.ggml_dims.iter().rev().map(|&d| d as usize).collect::<Vec<_>>())
    }

    /// The ggml type name (`q4_k`, `f16`, ...).
    pub fn type_name(&self) -> &'static str {
        ggml_type_info(self.ggml_type).map(|t| t.0).unwrap_or("unknown")
    }

    /// The linattn dtype, if this type has one.
    pub fn dtype(&self) -> Result<DType> {
        dtype_of_ggml_type(self.ggml_type).ok_or_else(|| {
            Error::invalid(format!(
                "gguf tensor `{}`: ggml type {} ({}) is not supported for compute",
                self.name,
                self.ggml_type,
                self.type_name()
            ))
        })
    }
}
