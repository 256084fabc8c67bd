//! GGUF reader: parses the header, metadata and tensor infos from a memory mapping
//! with bounds checks everywhere (every length and count is checked against the bytes
//! that remain before anything is allocated), then validates each tensor's data range
//! (aligned, inside the file, size consistent with shape and type). Tensor data is
//! returned as zero-copy views of the mapping.

use std::path::Path;

use linattn_tensor::{Error, Result, Tensor};

use super::{DEFAULT_ALIGNMENT, GgufTensorInfo, GgufValue, ggml_type_info};
use crate::bytes::ByteView;
use crate::ggml::GgmlFormat;
use crate::weight::QuantizedWeight;

/// Deepest nesting of arrays accepted.
const MAX_ARRAY_DEPTH: usize = 8;
/// Most dimensions of a tensor (ggml's GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;

/// A parsed GGUF file; tensors are views of the underlying bytes.
#[derive(Clone, Debug)]
pub struct GgufFile {
    /// Where the bytes came from (for error messages).
    pub source: String,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: usize,
    /// Absolute offset of the data section.
    pub data_offset: usize,
    bytes: ByteView,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    source: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> Error {
        Error::invalid(format!("gguf {}: {what} at byte offset {}", self.source, self.pos))
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(&format!("truncated file: {what} needs {n} bytes, {} remain", self.remaining())));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let start = self.pos;
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            self.pos = start;
            return Err(self
                .err(&format!("{what}: string length {len} exceeds the {} bytes that remain", self.remaining() - 8)));
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::invalid(format!("gguf {}: {what}: string at byte offset {start} is not valid UTF-8", self.source))
        })
    }

    fn value(&mut self, type_id: u32, key: &str, depth: usize) -> Result<GgufValue> {
        let what = format!("value of `{key}`");
        Ok(match type_id {
            0 => GgufValue::U8(self.take(1, &what)?[0]),
            1 => GgufValue::I8(self.take(1, &what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.take(2, &what)?.try_into().expect("2"))),
            3 => GgufValue::I16(i16::from_le_bytes(self.take(2, &what)?.try_into().expect("2"))),
            4 => GgufValue::U32(self.u32(&what)?),
            5 => GgufValue::I32(self.u32(&what)? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32(&what)?)),
            7 => match self.take(1, &what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(&format!("{what}: bool byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(&what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(&format!("{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let elem = self.u32(&what)?;
                let count = self.u64(&what)?;
                let min_size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(self.err(&format!("{what}: unknown array element type {t}"))),
                };
                if count > (self.remaining() / min_size) as u64 {
                    return Err(self.err(&format!(
                        "{what}: array of {count} elements cannot fit in the {} bytes that remain",
                        self.remaining()
                    )));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                GgufValue::Array(elem, items)
            }
            10 => GgufValue::U64(self.u64(&what)?),
            11 => GgufValue::I64(self.u64(&what)? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64(&what)?)),
            t => return Err(self.err(&format!("{what}: unknown value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Memory-maps and parses a file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only and private to this process; like every mmap
        // reader we rely on the file not being truncated or rewritten while mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        GgufFile::parse(ByteView::from_mmap(map), &path.display().to_string())
    }

    /// Parses GGUF bytes (`source` names them in errors).
    pub fn parse(bytes: ByteView, source: &str) -> Result<GgufFile> {
        let b = bytes.as_slice();
        let mut c = Cursor { b, pos: 0, source };
        let magic = c.take(4, "magic")?;
        if magic != b"GGUF" {
            return Err(Error::invalid(format!(
                "gguf {source}: bad magic {magic:?} at byte offset 0 (expected \"GGUF\")"
            )));
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            return Err(c.err(&format!("unsupported GGUF version {version} (expected 2 or 3)")));
        }
        let tensor_count = c.u64("tensor count")?;
        let kv_count = c.u64("metadata count")?;
        // Each KV needs at least 8 (key len) + 4 (type) + 1 bytes; each tensor info 8+4+4+8.
        if kv_count > (c.remaining() / 13) as u64 {
            return Err(c.err(&format!("metadata count {kv_count} cannot fit in a file of {} bytes", b.len())));
        }
        if tensor_count > (c.remaining() / 24) as u64 {
            return Err(c.err(&format!("tensor count {tensor_count} cannot fit in a file of {} bytes", b.len())));
        }
        let mut metadata = Vec::with_capacity(kv_count as usize);
        for _ in 0..kv_count {
            let key = c.string("metadata key")?;
            let t = c.u32(&format!("type of `{key}`"))?;
            let v = c.value(t, &key, 0)?;
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, GgufValue::U32(a))) if *a > 0 && a.is_power_of_two() => *a as usize,
            Some((_, v)) => {
                return Err(Error::invalid(format!(
                    "gguf {source}: general.alignment {v:?} is not a u32 power of two"
                )));
            }
        };
        let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let info_at = c.pos;
            let name = c.string("tensor name")?;
            let n_dims = c.u32(&format!("n_dims of tensor `{name}`"))?;
            if n_dims > MAX_DIMS {
                return Err(Error::invalid(format!(
                    "gguf {source}: tensor `{name}` (info at byte offset {info_at}) has {n_dims} dimensions (at most {MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&format!("dims of tensor `{name}`"))?);
            }
            let ggml_type = c.u32(&format!("type of tensor `{name}`"))?;
            let offset = c.u64(&format!("offset of tensor `{name}`"))?;
            let (tname, be, bb) = ggml_type_info(ggml_type).ok_or_else(|| {
                Error::invalid(format!("gguf {source}: tensor `{name}` (info at byte offset {info_at}) has unknown ggml type id {ggml_type}"))
            })?;
            let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).filter(|&n| n <= usize::MAX as u64 / 8);
            let numel = numel
                .ok_or_else(|| Error::invalid(format!("gguf {source}: tensor `{name}` dims {dims:?} overflow")))?;
            if dims.first().copied().unwrap_or(1) % be as u64 != 0 {
                return Err(Error::invalid(format!(
                    "gguf {source}: tensor `{name}` of type {tname}: innermost dimension {} is not a multiple of the block size {be}",
                    dims[0]
                )));
            }
            let nbytes = (numel / be as u64 * bb as u64) as usize;
            if tensors.iter().any(|t| t.name == name) {
                return Err(Error::invalid(format!(
                    "gguf {source}: duplicate tensor name `{name}` at byte offset {info_at}"
                )));
            }
            tensors.push(GgufTensorInfo { name, ggml_dims: dims, ggml_type, offset, nbytes });
        }
        let data_offset = c.pos.div_ceil(alignment) * alignment;
        for t in &tensors {
            if t.offset % alignment as u64 != 0 {
                return Err(Error::invalid(format!(
                    "gguf {source}: tensor `{}` data offset {} is not aligned to {alignment}",
                    t.name, t.offset
                )));
            }
            let end = (data_offset as u64).checked_add(t.offset).and_then(|s| s.checked_add(t.nbytes as u64));
            if end.is_none_or(|e| e > b.len() as u64) {
                return Err(Error::invalid(format!(
                    "gguf {source}: tensor `{}` data at offset {} (+{} bytes from the data section at {data_offset}) runs past the end of the {}-byte file",
                    t.name,
                    t.offset,
                    t.nbytes,
                    b.len()
                )));
            }
        }
        Ok(GgufFile { source: source.to_string(), version, metadata, tensors, alignment, data_offset, bytes })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor info by name.
    pub fn info(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::invalid(format!("gguf {}: no tensor named `{name}`", self.source)))
    }

    /// The raw bytes of a tensor (zero-copy view of the file).
    pub fn tensor_bytes(&self, name: &str) -> Result<ByteView> {
        let t = self.info(name)?;
        self.bytes.slice(self.data_offset + t.offset as usize, t.nbytes)
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &ByteView {
        &self.bytes
    }

    /// A tensor as a CPU [`Tensor`] (a copy) of its dtype and row-major shape.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let t = self.info(name)?;
        Tensor::from_bytes(self.tensor_bytes(name)?.as_slice(), t.dtype()?, t.shape())
    }

    /// A ggml-quantized tensor as a [`QuantizedWeight`] viewing the mapping (zero-copy).
    pub fn weight(&self, name: &str) -> Result<QuantizedWeight> {
        let t = self.info(name)?;
        let format = GgmlFormat::from_dtype(t.dtype()?).map_err(|_| {
            Error::invalid(format!(
                "gguf {}: tensor `{name}` of type {} is not a quantized weight",
                self.source,
                t.type_name()
            ))
        })?;
        Ok(QuantizedWeight::Ggml { format, shape: t.shape(), bytes: self.tensor_bytes(name)? })
    }
}
