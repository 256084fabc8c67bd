//! Parsing and validation of a safetensors header against the bytes of its file.
//!
//! [`parse`] takes the whole file (`[u64 LE n][n bytes JSON][data]`) and checks, in
//! order: the 8-byte length prefix, the header length against the file and against
//! [`MAX_HEADER_LEN`], UTF-8, JSON (an object, no duplicate keys), `__metadata__` as a
//! string map, each tensor entry's dtype, shape and `data_offsets`, then that the
//! offsets, sorted, tile the data section with no overlap, gap or trailing byte and that
//! each range holds exactly `numel * element size` bytes. Offsets in messages are file
//! offsets unless they are quoted as `data_offsets`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};

use super::json::Entries;
use super::{MAX_HEADER_LEN, dtype_from_safetensors, st_err};
use crate::dtype::DType;
use crate::error::Result;
use crate::shape::Shape;

/// Where and what one tensor is in a safetensors file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type (`BOOL` is read as [`DType::U8`]).
    pub dtype: DType,
    /// Dimensions, outermost first.
    pub shape: Shape,
    /// Byte range relative to the start of the data section, as written in the header.
    pub data_offsets: Range<usize>,
    /// Byte range in the file (`data_offsets` shifted by `8 + header length`).
    pub file_range: Range<usize>,
}

impl TensorInfo {
    /// Number of bytes of the tensor.
    pub fn len_bytes(&self) -> usize {
        self.data_offsets.end - self.data_offsets.start
    }
}

/// A validated header.
#[derive(Debug)]
pub(crate) struct Header {
    /// Length of the JSON header in bytes (the `n` of the prefix).
    pub header_len: usize,
    /// The `__metadata__` map (empty when absent or `null`).
    pub metadata: BTreeMap<String, String>,
    /// Tensors sorted by their position in the data section.
    pub tensors: Vec<(String, TensorInfo)>,
}

/// One tensor entry as written in the JSON header.
#[derive(serde::Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// The JSON header as written: `__metadata__` (values checked later) and tensor entries,
/// in document order, with duplicate keys rejected at any level.
struct RawHeader {
    metadata: Option<Entries<serde_json::Value>>,
    tensors: Vec<(String, RawInfo)>,
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct RawHeaderVisitor;

        impl<'de> Visitor<'de> for RawHeaderVisitor {
            type Value = RawHeader;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RawHeader, A::Error> {
                let mut seen = HashSet::new();
                let mut header = RawHeader { metadata: None, tensors: Vec::new() };
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(A::Error::custom(format!("duplicate key `{key}`")));
                    }
                    if key == "__metadata__" {
                        header.metadata = map.next_value::<Option<Entries<serde_json::Value>>>().map_err(|e| {
                            A::Error::custom(format!("`__metadata__` is not a JSON object of strings: {e}"))
                        })?;
                    } else {
                        let info = map
                            .next_value::<RawInfo>()
                            .map_err(|e| A::Error::custom(format!("tensor `{key}`: invalid header entry: {e}")))?;
                        header.tensors.push((key, info));
                    }
                }
                Ok(header)
            }
        }

        deserializer.deserialize_map(RawHeaderVisitor)
    }
}

/// Parses and validates the header of `file`, the full contents of the file at `path`.
pub(crate) fn parse(file: &[u8], path: &Path) -> Result<Header> {
    let Some(prefix) = file.get(..8) else {
        return Err(st_err(
            path,
            format!(
                "file is {} bytes, too short for the 8-byte header length at offset 0 (truncated file?)",
                file.len()
            ),
        ));
    };
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(prefix);
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER_LEN as u64 {
        return Err(st_err(
            path,
            format!(
                "header length {n} at offset 0 exceeds the limit of {MAX_HEADER_LEN} bytes (file is {} bytes)",
                file.len()
            ),
        ));
    }
    let n = n as usize;
    let data_start = 8 + n;
    let Some(header_bytes) = file.get(8..data_start) else {
        return Err(st_err(
            path,
            format!(
                "header length {n} at offset 0 runs past the end of the file: the header would end at offset {data_start} but the file is {} bytes (truncated file?)",
                file.len()
            ),
        ));
    };
    let text = std::str::from_utf8(header_bytes)
        .map_err(|e| st_err(path, format!("header is not valid UTF-8 at offset {}", 8 + e.valid_up_to())))?;
    let raw: RawHeader = serde_json::from_str(text)
        .map_err(|e| st_err(path, format!("invalid JSON header (file offsets 8..{data_start}): {e}")))?;

    let data_len = file.len() - data_start;
    let metadata = parse_metadata(raw.metadata, path)?;
    let mut tensors = Vec::with_capacity(raw.tensors.len());
    for (name, info) in raw.tensors {
        let info = check_entry(&name, info, data_start, path)?;
        tensors.push((name, info));
    }

    tensors.sort_by(|a, b| {
        (a.1.data_offsets.start, a.1.data_offsets.end).cmp(&(b.1.data_offsets.start, b.1.data_offsets.end))
    });
    check_tiling(&tensors, data_start, data_len, path)?;
    Ok(Header { header_len: n, metadata, tensors })
}

fn parse_metadata(entries: Option<Entries<serde_json::Value>>, path: &Path) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (key, value) in entries.map(|e| e.0).unwrap_or_default() {
        match value {
            serde_json::Value::String(s) => {
                map.insert(key, s);
            }
            other => {
                return Err(st_err(
                    path,
                    format!("`__metadata__` entry `{key}` is {other}, but metadata values must be strings"),
                ));
            }
        }
    }
    Ok(map)
}

/// Checks one entry on its own: dtype, shape, offsets in order, size = numel * dtype.
fn check_entry(name: &str, raw: RawInfo, data_start: usize, path: &Path) -> Result<TensorInfo> {
    let dtype = dtype_from_safetensors(&raw.dtype).map_err(|m| st_err(path, format!("tensor `{name}`: {m}")))?;
    let (begin, end) = raw.data_offsets;
    if end < begin {
        return Err(st_err(
            path,
            format!("tensor `{name}`: data_offsets [{begin}, {end}] are out of order (end before begin)"),
        ));
    }
    let dims = raw
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| st_err(path, format!("tensor `{name}`: shape {:?} does not fit in usize", raw.shape)))?;
    let shape = Shape::new(dims);
    let want =
        shape.checked_numel().ok().and_then(|numel| numel.checked_mul(dtype.block_bytes())).ok_or_else(|| {
            st_err(path, format!("tensor `{name}`: shape {shape} of {dtype} overflows the byte count"))
        })?;
    let (Ok(begin), Ok(end)) = (usize::try_from(begin), usize::try_from(end)) else {
        return Err(st_err(path, format!("tensor `{name}`: data_offsets [{begin}, {end}] do not fit in usize")));
    };
    if end - begin != want {
        return Err(st_err(
            path,
            format!(
                "tensor `{name}`: shape {shape} of {} needs {want} bytes, but data_offsets [{begin}, {end}] span {} bytes",
                raw.dtype,
                end - begin
            ),
        ));
    }
    let file_range = data_start
        .checked_add(begin)
        .zip(data_start.checked_add(end))
        .map(|(b, e)| b..e)
        .ok_or_else(|| st_err(path, format!("tensor `{name}`: data_offsets [{begin}, {end}] overflow usize")))?;
    Ok(TensorInfo { dtype, shape, data_offsets: begin..end, file_range })
}

/// Checks that the sorted tensors tile `[0, data_len)` exactly.
fn check_tiling(tensors: &[(String, TensorInfo)], data_start: usize, data_len: usize, path: &Path) -> Result<()> {
    let mut cursor = 0usize;
    let mut previous: Option<&str> = None;
    for (name, info) in tensors {
        let Range { start, end } = info.data_offsets;
        if start < cursor {
            let prev = previous.unwrap_or("?");
            return Err(st_err(
                path,
                format!(
                    "tensor `{name}`: data_offsets [{start}, {end}] overlap tensor `{prev}`, which ends at data offset {cursor} (file offset {})",
                    data_start + cursor
                ),
            ));
        }
        if start > cursor {
            let after = previous.map(|p| format!("after tensor `{p}` ")).unwrap_or_default();
            return Err(st_err(
                path,
                format!(
                    "tensor `{name}`: data_offsets [{start}, {end}] leave a gap of {} bytes {after}at file offset {} (tensors must be contiguous)",
                    start - cursor,
                    data_start + cursor
                ),
            ));
        }
        if end > data_len {
            return Err(st_err(
                path,
                format!(
                    "tensor `{name}`: data_offsets [{start}, {end}] run past the end of the data section ({data_len} bytes): the tensor would end at file offset {} but the file is {} bytes (truncated file?)",
                    data_start + end,
                    data_start + data_len
                ),
            ));
        }
        cursor = end;
        previous = Some(name);
    }
    if cursor != data_len {
        return Err(st_err(
            path,
            format!(
                "{} trailing bytes at file offset {} after the last tensor (the data section is {data_len} bytes)",
                data_len - cursor,
                data_start + cursor
            ),
        ));
    }
    Ok(())
}
