//! bitsandbytes formats: blockwise 4-bit NF4/FP4 ([`four_bit`]), the 8-bit dynamic
//! blockwise map used for double-quantized absmax ([`blockwise8`]) and LLM.int8
//! ([`int8`]). Layouts, key names and numerics are those of bitsandbytes 0.4x/0.5x
//! and its Hugging Face serialization (see `docs/formats.md`).

pub mod blockwise8;
pub mod four_bit;
pub mod int8;

pub use four_bit::{Absmax, FourBitKind, FourBitWeight, NestedAbsmax};
pub use int8::Int8Weight;
