//! safetensors IO: memory-mapped reading, atomic writing, Hugging Face sharded checkpoints.
//!
//! File layout (the safetensors format, little-endian throughout):
//!
//! ```text
//! [u64 LE n] [n bytes: UTF-8 JSON header, padded with spaces to a multiple of 8] [data]
//! ```
//!
//! The header is one JSON object. The optional key `__metadata__` maps to an object of
//! string values; every other key is a tensor name mapping to
//! `{"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}`, where the offsets
//! are byte positions relative to the start of the data section. Sorted by offset, the
//! tensors tile the data section exactly: the first begins at 0, each begins where the
//! previous one ends, the last ends at the end of the file, and each range holds exactly
//! `numel * element size` bytes of row-major elements.
//!
//! - [`SafeTensorsFile`]: maps a file, validates the whole header up front, then serves
//!   zero-copy byte slices and CPU [`Tensor`](crate::Tensor) copies.
//! - [`save`] and [`SafeTensorsWriter`]: write a file laid out as the reference
//!   implementation lays it out (tensors sorted by descending dtype alignment, then by
//!   name), through a temporary file in the same directory that is renamed into place
//!   only once everything is written.
//! - [`ShardedCheckpoint`]: a `model.safetensors.index.json` and its shards (opened lazily)
//!   or a single `model.safetensors`, behind one name -> tensor API; [`save_sharded`]
//!   writes one.
//!
//! Every malformed input is an [`crate::Error::SafeTensors`] naming the
//! file and, where relevant, the tensor and the byte offset; no input bytes can panic.

mod atomic;
mod header;
mod json;
mod read;
mod sharded;
mod write;

pub use header::TensorInfo;
pub use read::SafeTensorsFile;
pub use sharded::{INDEX_FILE_NAME, SINGLE_FILE_NAME, ShardedCheckpoint, save_sharded};
pub use write::{SafeTensorsWriter, TensorSpec, save};

use std::path::Path;

use crate::dtype::DType;
use crate::error::Error;

/// Largest header accepted or written, as in the reference implementation (100 MB).
pub const MAX_HEADER_LEN: usize = 100_000_000;

/// safetensors dtype names that exist in the format but have no linattn [`DType`].
const KNOWN_UNSUPPORTED: [&str; 8] =
    ["F4", "F6_E2M3", "F6_E3M2", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64", "U64"];

/// The linattn dtype a safetensors dtype string is read as. `BOOL` is read as `U8`
/// (one byte per element, 0 or 1). Errors name the string and say whether safetensors
/// knows it.
pub fn dtype_from_safetensors(name: &str) -> Result<DType, String> {
    if name == "BOOL" {
        return Ok(DType::U8);
    }
    if let Some(d) = DType::ALL.into_iter().find(|d| d.safetensors_name() == Some(name)) {
        return Ok(d);
    }
    if KNOWN_UNSUPPORTED.contains(&name) {
        Err(format!("dtype `{name}` is a safetensors dtype that linattn does not support"))
    } else {
        Err(format!("unknown dtype `{name}`"))
    }
}

/// The safetensors dtype string of `dtype`, or an error naming the tensor when the
/// format has no such dtype (the ggml block-quantized types).
pub(crate) fn dtype_to_safetensors(dtype: DType, tensor: &str) -> Result<&'static str, String> {
    dtype.safetensors_name().ok_or_else(|| {
        format!("tensor `{tensor}` has dtype {dtype}, which safetensors cannot store (dense dtypes only)")
    })
}

/// An [`Error::SafeTensors`] for `path`.
pub(crate) fn st_err(path: &Path, message: impl Into<String>) -> Error {
    Error::SafeTensors { path: path.display().to_string(), message: message.into() }
}
