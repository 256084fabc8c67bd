//! [`SafeTensorsFile`]: a memory-mapped safetensors file with a validated header.
//!
//! `open` maps the whole file read-only and validates the header against it (see
//! [`header`](super::header)); afterwards every accessor is a bounds-checked slice of
//! the mapping. `bytes` is zero-copy; `tensor` copies into an 8-byte-aligned CPU buffer.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::header::{self, TensorInfo};
use super::st_err;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A safetensors file mapped into memory, its header parsed and validated.
pub struct SafeTensorsFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: BTreeMap<String, String>,
    /// Tensors in data-section order.
    tensors: Vec<(String, TensorInfo)>,
    by_name: HashMap<String, usize>,
}

impl SafeTensorsFile {
    /// Maps the file at `path` and validates its header; every problem is an
    /// [`Error::SafeTensors`] naming the file, and the tensor and offset where relevant.
    ///
    /// The file must not be modified while it is open (see the safety note inside).
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensorsFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < 8 {
            return Err(st_err(
                path,
                format!("file is {len} bytes, too short for the 8-byte header length at offset 0 (truncated file?)"),
            ));
        }
        // SAFETY: the mapping is read-only and private to this value, and it is only ever
        // read through bounds-checked slices. Mapping a file is unsound if another
        // process truncates or rewrites it while mapped; like every mmap-based
        // checkpoint loader (the reference safetensors, candle) we require that open
        // files are left alone, and our own writers never modify a file in place: they
        // write a temporary file and rename it over the old one.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = header::parse(&mmap, path)?;
        let by_name = header.tensors.iter().enumerate().map(|(i, (name, _))| (name.clone(), i)).collect();
        Ok(SafeTensorsFile {
            path: path.to_path_buf(),
            mmap,
            header_len: header.header_len,
            metadata: header.metadata,
            tensors: header.tensors,
            by_name,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the JSON header in bytes; the data section begins at `8 + header_len()`.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Size of the whole file in bytes.
    pub fn file_len(&self) -> usize {
        self.mmap.len()
    }

    /// The `__metadata__` string map (empty when the file has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Tensor names in data-section order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.tensors.iter().map(|(name, _)| name.as_str())
    }

    /// Tensor names and infos in data-section order.
    pub fn tensors(&self) -> impl ExactSizeIterator<Item = (&str, &TensorInfo)> + '_ {
        self.tensors.iter().map(|(name, info)| (name.as_str(), info))
    }

    /// Whether the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Dtype, shape and byte range of tensor `name`.
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        match self.by_name.get(name) {
            Some(&i) => Ok(&self.tensors[i].1),
            None => Err(st_err(
                &self.path,
                format!("no tensor `{name}` in this file (it holds {} tensors)", self.tensors.len()),
            )),
        }
    }

    /// The raw little-endian bytes of tensor `name`, borrowed from the mapping.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info(name)?;
        self.mmap.get(info.file_range.clone()).ok_or_else(|| {
            st_err(
                &self.path,
                format!(
                    "tensor `{name}`: file range [{}, {}) lies outside the {}-byte mapping",
                    info.file_range.start,
                    info.file_range.end,
                    self.mmap.len()
                ),
            )
        })
    }

    /// Tensor `name` copied into a CPU [`Tensor`].
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.info(name)?;
        let bytes = self.bytes(name)?;
        Tensor::from_bytes(bytes, info.dtype, info.shape.clone())
            .map_err(|e| st_err(&self.path, format!("tensor `{name}`: {e}")))
    }
}

impl std::fmt::Debug for SafeTensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SafeTensorsFile({}, {} tensors)", self.path.display(), self.tensors.len())
    }
}
