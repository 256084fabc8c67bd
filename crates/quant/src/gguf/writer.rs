//! GGUF v3 writer. Produces the layout the `gguf` Python package writes: header,
//! metadata in insertion order, tensor infos with offsets of consecutive tensors each
//! padded to the alignment, zero padding up to the aligned data section, then each
//! tensor's bytes followed by zero padding to the alignment.

use std::path::Path;

use linattn_tensor::{Error, Result, Shape, Tensor};

use super::{DEFAULT_ALIGNMENT, GgufFile, GgufValue, ggml_type_info, ggml_type_of_dtype};
use crate::weight::QuantizedWeight;

struct PendingTensor {
    name: String,
    ggml_dims: Vec<u64>,
    ggml_type: u32,
    bytes: Vec<u8>,
}

/// Builds a GGUF file in memory.
pub struct GgufWriter {
    version: u32,
    alignment: usize,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) -> Result<()> {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::Array(elem, items) => {
            if let Some(bad) = items.iter().find(|i| i.type_id() != *elem) {
                return Err(Error::invalid(format!(
                    "gguf array of type {elem} holds an item of type {}",
                    bad.type_id()
                )));
            }
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(out, i)?;
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
    Ok(())
}

impl GgufWriter {
    /// An empty version-3 file with the default alignment (32).
    pub fn new() -> GgufWriter {
        GgufWriter { version: 3, alignment: DEFAULT_ALIGNMENT, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// A writer that reproduces `file` (metadata, tensors, alignment) byte for byte when
    /// the file was laid out like the `gguf` package lays files out.
    pub fn from_file(file: &GgufFile) -> Result<GgufWriter> {
        let mut w = GgufWriter {
            version: file.version,
            alignment: file.alignment,
            metadata: file.metadata.clone(),
            tensors: Vec::new(),
        };
        for t in &file.tensors {
            w.tensors.push(PendingTensor {
                name: t.name.clone(),
                ggml_dims: t.ggml_dims.clone(),
                ggml_type: t.ggml_type,
                bytes: file.tensor_bytes(&t.name)?.as_slice().to_vec(),
            });
        }
        Ok(w)
    }

    /// Sets the data alignment (a power of two) and records it as `general.alignment`.
    pub fn set_alignment(&mut self, alignment: usize) -> Result<()> {
        if alignment == 0 || !alignment.is_power_of_two() || alignment > u32::MAX as usize {
            return Err(Error::invalid(format!("gguf alignment {alignment} is not a power of two")));
        }
        self.alignment = alignment;
        self.add_metadata("general.alignment", GgufValue::U32(alignment as u32));
        Ok(())
    }

    /// Adds (or replaces, keeping its position) a metadata entry.
    pub fn add_metadata(&mut self, key: &str, value: GgufValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds raw tensor bytes of ggml type `ggml_type` with row-major `shape`.
    pub fn add_tensor_bytes(&mut self, name: &str, ggml_type: u32, shape: &Shape, bytes: Vec<u8>) -> Result<()> {
        let (tname, be, bb) = ggml_type_info(ggml_type)
            .ok_or_else(|| Error::invalid(format!("tensor `{name}`: unknown ggml type {ggml_type}")))?;
        if shape.rank() == 0 || shape.rank() > 4 || !shape.last_dim().is_multiple_of(be) {
            return Err(Error::invalid(format!(
                "tensor `{name}`: shape {shape} is not valid for {tname} (rank 1..=4, last dim a multiple of {be})"
            )));
        }
        let want = shape.checked_numel()? / be * bb;
        if bytes.len() != want {
            return Err(Error::invalid(format!(
                "tensor `{name}`: {} bytes for {tname} shape {shape}, expected {want}",
                bytes.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(Error::invalid(format!("duplicate tensor name `{name}`")));
        }
        let ggml_dims = shape.dims().iter().rev().map(|&d| d as u64).collect();
        self.tensors.push(PendingTensor { name: name.to_string(), ggml_dims, ggml_type, bytes });
        Ok(())
    }

    /// Adds a tensor of any dtype GGUF knows (dense or ggml blocks).
    pub fn add_tensor(&mut self, name: &str, t: &Tensor) -> Result<()> {
        let id = ggml_type_of_dtype(t.dtype())?;
        let host = t.to_device(&linattn_tensor::Device::Cpu)?;
        self.add_tensor_bytes(name, id, t.shape(), host.as_bytes()?.to_vec())
    }

    /// Adds a ggml-format quantized weight.
    pub fn add_weight(&mut self, name: &str, w: &QuantizedWeight) -> Result<()> {
        match w {
            QuantizedWeight::Ggml { format, shape, bytes } => {
                self.add_tensor_bytes(name, format.ggml_type_id(), shape, bytes.as_slice().to_vec())
            }
            _ => Err(Error::invalid(format!("tensor `{name}`: {} weights cannot be stored in GGUF", w.format()))),
        }
    }

    /// Serializes the file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let a = self.alignment;
        let pad = |n: usize| n.div_ceil(a) * a;
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_string(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, v)?;
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_string(&mut out, &t.name);
            out.extend_from_slice(&(t.ggml_dims.len() as u32).to_le_bytes());
            for d in &t.ggml_dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ggml_type.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += pad(t.bytes.len());
        }
        out.resize(pad(out.len()), 0);
        for t in &self.tensors {
            out.extend_from_slice(&t.bytes);
            out.resize(pad(out.len()), 0);
        }
        Ok(out)
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.to_bytes()?;
        std::fs::write(path.as_ref(), bytes).map_err(|e| Error::io(path.as_ref(), e))
    }
}
