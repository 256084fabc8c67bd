//! Writing safetensors files: [`save`] for tensors in memory, [`SafeTensorsWriter`] to
//! stream a file tensor by tensor.
//!
//! The layout matches the reference implementation (and so Python's `safetensors`):
//! tensors sorted by descending dtype alignment rank (the order of the reference
//! `Dtype` enum: I64, F64, F32, U32, I32, BF16, F16, U16, I16, F8_E4M3, F8_E5M2, I8, U8),
//! ties broken by name; compact JSON header with `__metadata__` first, then tensors in
//! data order as `{"dtype", "shape", "data_offsets"}`; the header padded with spaces to
//! a multiple of 8 bytes so the data section starts 8-byte aligned. Metadata keys are
//! written sorted. Output goes through a temporary file renamed into place on success.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::atomic::AtomicFile;
use super::{MAX_HEADER_LEN, dtype_to_safetensors, st_err};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Name, dtype and shape of a tensor to be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorSpec {
    /// A spec from its parts.
    pub fn new(name: impl Into<String>, dtype: DType, shape: impl Into<Shape>) -> TensorSpec {
        TensorSpec { name: name.into(), dtype, shape: shape.into() }
    }

    /// The spec of an existing tensor.
    pub fn of(name: impl Into<String>, tensor: &Tensor) -> TensorSpec {
        TensorSpec::new(name, tensor.dtype(), tensor.shape().clone())
    }
}

/// Position of a dtype in the reference `Dtype` enum, which is ordered by alignment.
fn alignment_rank(dtype: DType) -> u8 {
    match dtype {
        DType::U8 => 4,
        DType::I8 => 5,
        DType::F8E5M2 => 6,
        DType::F8E4M3 => 7,
        DType::I16 => 11,
        DType::U16 => 12,
        DType::F16 => 13,
        DType::BF16 => 14,
        DType::I32 => 15,
        DType::U32 => 16,
        DType::F32 => 17,
        DType::F64 => 19,
        DType::I64 => 20,
        // Not storable; rejected before sorting.
        DType::Q8_0 | DType::Q4_0 | DType::Q4K | DType::Q6K => 0,
    }
}

/// Where every tensor goes, and the header bytes (length prefix included).
struct Layout {
    prefix_and_header: Vec<u8>,
    /// Specs in data order with their file byte ranges.
    entries: Vec<(TensorSpec, Range<usize>)>,
    file_len: usize,
}

fn plan(specs: &[TensorSpec], metadata: Option<&BTreeMap<String, String>>, path: &Path) -> Result<Layout> {
    let mut sorted: Vec<(&TensorSpec, &'static str, usize)> = Vec::with_capacity(specs.len());
    let mut seen = HashMap::with_capacity(specs.len());
    for spec in specs {
        if spec.name == "__metadata__" {
            return Err(st_err(path, "`__metadata__` is reserved and cannot be a tensor name"));
        }
        if seen.insert(spec.name.as_str(), ()).is_some() {
            return Err(st_err(path, format!("tensor `{}` is listed twice", spec.name)));
        }
        let dtype_name = dtype_to_safetensors(spec.dtype, &spec.name).map_err(|m| st_err(path, m))?;
        let bytes = spec
            .shape
            .checked_numel()
            .and_then(|n| spec.dtype.storage_bytes(n))
            .map_err(|e| st_err(path, format!("tensor `{}`: {e}", spec.name)))?;
        sorted.push((spec, dtype_name, bytes));
    }
    sorted.sort_by(|a, b| alignment_rank(b.0.dtype).cmp(&alignment_rank(a.0.dtype)).then(a.0.name.cmp(&b.0.name)));

    let json = |e: serde_json::Error| st_err(path, format!("cannot encode header: {e}"));
    let mut header = String::from("{");
    if let Some(metadata) = metadata {
        header.push_str("\"__metadata__\":");
        header.push_str(&serde_json::to_string(metadata).map_err(json)?);
    }
    let mut offset = 0usize;
    let mut ranges = Vec::with_capacity(sorted.len());
    for (i, (spec, dtype_name, bytes)) in sorted.iter().enumerate() {
        if i > 0 || metadata.is_some() {
            header.push(',');
        }
        let end = offset
            .checked_add(*bytes)
            .ok_or_else(|| st_err(path, format!("tensor `{}`: data offsets overflow usize", spec.name)))?;
        let dims: Vec<String> = spec.shape.dims().iter().map(|d| d.to_string()).collect();
        header.push_str(&serde_json::to_string(&spec.name).map_err(json)?);
        header.push_str(&format!(
            ":{{\"dtype\":\"{dtype_name}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            dims.join(",")
        ));
        ranges.push(offset..end);
        offset = end;
    }
    header.push('}');
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    if header.len() > MAX_HEADER_LEN {
        return Err(st_err(
            path,
            format!("header of {} bytes exceeds the limit of {MAX_HEADER_LEN} bytes", header.len()),
        ));
    }
    let data_start = 8 + header.len();
    let mut prefix_and_header = (header.len() as u64).to_le_bytes().to_vec();
    prefix_and_header.extend_from_slice(&header);
    let entries = sorted
        .into_iter()
        .zip(ranges)
        .map(|((spec, _, _), r)| (spec.clone(), data_start + r.start..data_start + r.end))
        .collect();
    Ok(Layout { prefix_and_header, entries, file_len: data_start + offset })
}

/// Writes a safetensors file tensor by tensor: all names, dtypes and shapes are fixed
/// up front (which fixes the header and every offset), then each tensor's data is
/// written in any order and dropped, so only one tensor is ever held in memory.
/// [`finish`](Self::finish) renames the file into place; dropping the writer unfinished
/// deletes the temporary file and leaves any existing file at `path` untouched.
pub struct SafeTensorsWriter {
    path: PathBuf,
    out: AtomicFile,
    entries: Vec<(TensorSpec, Range<usize>)>,
    by_name: HashMap<String, usize>,
    written: Vec<bool>,
    file_len: usize,
}

impl SafeTensorsWriter {
    /// Starts a file at `path` holding `specs` and `metadata` (the `__metadata__` map,
    /// omitted when `None`). Fails on duplicate names, the reserved name `__metadata__`
    /// and dtypes safetensors cannot store (the block-quantized ones).
    pub fn create(
        path: impl AsRef<Path>,
        specs: &[TensorSpec],
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<SafeTensorsWriter> {
        let path = path.as_ref();
        let layout = plan(specs, metadata, path)?;
        let mut out = AtomicFile::create(path)?;
        out.write_at(0, &layout.prefix_and_header)?;
        let by_name = layout.entries.iter().enumerate().map(|(i, (s, _))| (s.name.clone(), i)).collect();
        Ok(SafeTensorsWriter {
            path: path.to_path_buf(),
            out,
            written: vec![false; layout.entries.len()],
            entries: layout.entries,
            by_name,
            file_len: layout.file_len,
        })
    }

    /// Tensor names in the order their data appears in the file; writing in this order
    /// writes the file sequentially.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.entries.iter().map(|(s, _)| s.name.as_str())
    }

    /// Size the finished file will have, in bytes.
    pub fn file_len(&self) -> usize {
        self.file_len
    }

    fn slot(&self, name: &str) -> Result<usize> {
        let i = *self.by_name.get(name).ok_or_else(|| {
            st_err(&self.path, format!("tensor `{name}` was not declared when the writer was created"))
        })?;
        if self.written[i] {
            return Err(st_err(&self.path, format!("tensor `{name}` was already written")));
        }
        Ok(i)
    }

    /// Writes tensor `name`, which must have the declared dtype and shape; a GPU tensor
    /// is downloaded first.
    pub fn write(&mut self, name: &str, tensor: &Tensor) -> Result<()> {
        let i = self.slot(name)?;
        let spec = &self.entries[i].0;
        if tensor.dtype() != spec.dtype || tensor.shape() != &spec.shape {
            return Err(st_err(
                &self.path,
                format!(
                    "tensor `{name}` was declared {} {} but is {} {}",
                    spec.dtype,
                    spec.shape,
                    tensor.dtype(),
                    tensor.shape()
                ),
            ));
        }
        let host = tensor.to_device(&Device::Cpu)?;
        self.write_bytes(name, host.as_bytes()?)
    }

    /// Writes the raw little-endian bytes of tensor `name`; their length must match the
    /// declared dtype and shape.
    pub fn write_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let i = self.slot(name)?;
        let (spec, range) = &self.entries[i];
        if bytes.len() != range.len() {
            return Err(st_err(
                &self.path,
                format!(
                    "tensor `{name}` ({} {}) needs {} bytes but {} were given",
                    spec.dtype,
                    spec.shape,
                    range.len(),
                    bytes.len()
                ),
            ));
        }
        self.out.write_at(range.start as u64, bytes)?;
        self.written[i] = true;
        Ok(())
    }

    /// Checks that every declared tensor was written, then syncs the file and renames it
    /// into place.
    pub fn finish(self) -> Result<()> {
        let missing: Vec<&str> =
            self.entries.iter().zip(&self.written).filter(|(_, w)| !**w).map(|((s, _), _)| s.name.as_str()).collect();
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(5).map(|n| format!("`{n}`")).collect();
            return Err(st_err(
                &self.path,
                format!(
                    "{} declared tensors were never written ({}{}); the file was not created",
                    missing.len(),
                    shown.join(", "),
                    if missing.len() > 5 { ", ..." } else { "" }
                ),
            ));
        }
        self.out.commit()
    }
}

/// Writes `tensors` (any dense dtype, on any device) and `metadata` to a safetensors
/// file at `path`, atomically: on error nothing at `path` changes. GPU tensors are
/// downloaded one at a time.
pub fn save(
    path: impl AsRef<Path>,
    tensors: &[(&str, &Tensor)],
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<()> {
    let specs: Vec<TensorSpec> = tensors.iter().map(|(name, t)| TensorSpec::of(*name, t)).collect();
    let mut writer = SafeTensorsWriter::create(path, &specs, metadata)?;
    let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (*n, *t)).collect();
    let order: Vec<String> = writer.names().map(str::to_string).collect();
    for name in &order {
        let tensor = by_name
            .get(name.as_str())
            .ok_or_else(|| Error::invalid(format!("save: tensor `{name}` vanished from the input")))?;
        writer.write(name, tensor)?;
    }
    writer.finish()
}
