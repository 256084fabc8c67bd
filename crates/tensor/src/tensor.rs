//! `Tensor`: a contiguous, row-major, immutable n-dimensional array on one device.
//!
//! Storage is shared behind an `Arc`, so `clone` and `reshape` are free. CPU tensors
//! expose zero-copy typed slices and `ndarray` views; GPU tensors are moved with
//! `to_device`. Float conversions go through `half` with round-to-nearest-even.

use std::sync::Arc;

use half::{bf16, f16};

use crate::device::Device;
use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::storage::{CpuBuffer, Storage};

#[derive(Clone)]
pub struct Tensor {
    shape: Shape,
    dtype: DType,
    storage: Arc<Storage>,
}

impl Tensor {
    /// Wraps an existing storage. The storage must hold exactly the bytes of
    /// `shape` in `dtype`; this is checked for CPU storage.
    pub fn from_storage(storage: Storage, shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
        let shape = shape.into();
        let want = dtype.storage_bytes(shape.checked_numel()?)?;
        let have = match &storage {
            Storage::Cpu(b) => b.len(),
            Storage::Cuda(b) => b.len_bytes(),
            Storage::Wgpu(b) => b.len_bytes(),
        };
        if have != want {
            return Err(Error::invalid(format!(
                "storage of {have} bytes does not hold a {dtype} tensor of shape {shape} ({want} bytes)"
            )));
        }
        Ok(Tensor { shape, dtype, storage: Arc::new(storage) })
    }

    /// A CPU tensor owning `data`.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        Tensor::from_slice(&data, shape)
    }

    /// A CPU tensor holding a copy of `data`.
    pub fn from_slice<T: Element>(data: &[T], shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let numel = shape.checked_numel()?;
        if numel != data.len() {
            return Err(Error::invalid(format!(
                "{} {} values cannot fill shape {shape} ({numel} elements)",
                data.len(),
                T::DTYPE
            )));
        }
        Tensor::from_storage(Storage::Cpu(CpuBuffer::from_slice(data)), shape, T::DTYPE)
    }

    /// A CPU tensor from raw little-endian bytes of `dtype` (any dtype, including blocks).
    pub fn from_bytes(bytes: &[u8], dtype: DType, shape: impl Into<Shape>) -> Result<Tensor> {
        Tensor::from_storage(Storage::Cpu(CpuBuffer::from_bytes(bytes)), shape, dtype)
    }

    /// A CPU tensor of compute-float `dtype` converted from f32 values.
    pub fn from_f32(data: &[f32], dtype: DType, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        match dtype {
            DType::F32 => Tensor::from_slice(data, shape),
            DType::F16 => Tensor::from_vec(data.iter().map(|&v| f16::from_f32(v)).collect(), shape),
            DType::BF16 => Tensor::from_vec(data.iter().map(|&v| bf16::from_f32(v)).collect(), shape),
            DType::F64 => Tensor::from_vec(data.iter().map(|&v| v as f64).collect(), shape),
            _ => Err(Error::UnsupportedDType { op: "from_f32", dtype, detail: "expected a float dtype".into() }),
        }
    }

    /// A zero-filled tensor on `device`.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let bytes = dtype.storage_bytes(shape.checked_numel()?)?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuBuffer::zeroed(bytes)),
            Device::Cuda(d) => Storage::Cuda(d.alloc_zeroed(bytes)?),
            Device::Wgpu(d) => Storage::Wgpu(d.alloc_zeroed(bytes)?),
        };
        Tensor::from_storage(storage, shape, dtype)
    }

    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// Bytes of storage (block-quantized types included).
    pub fn size_in_bytes(&self) -> usize {
        self.dtype.storage_bytes(self.numel()).unwrap_or(0)
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The device this tensor lives on.
    pub fn device(&self) -> Device {
        match self.storage.as_ref() {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(b) => Device::Cuda(b.device().clone()),
            Storage::Wgpu(b) => Device::Wgpu(b.device().clone()),
        }
    }

    pub fn is_cpu(&self) -> bool {
        matches!(self.storage.as_ref(), Storage::Cpu(_))
    }

    /// The CPU buffer; errors naming the device when the tensor is elsewhere.
    pub fn cpu_buffer(&self) -> Result<&CpuBuffer> {
        match self.storage.as_ref() {
            Storage::Cpu(b) => Ok(b),
            _ => Err(Error::invalid(format!(
                "tensor {} {} lives on {}; call to_device(&Device::Cpu) first",
                self.dtype,
                self.shape,
                self.device()
            ))),
        }
    }

    /// Raw bytes of a CPU tensor.
    pub fn as_bytes(&self) -> Result<&[u8]> {
        Ok(self.cpu_buffer()?.as_bytes())
    }

    /// Zero-copy typed slice of a CPU tensor whose dtype is `T`.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        if self.dtype != T::DTYPE {
            return Err(Error::DTypeMismatch { op: "as_slice", lhs: self.dtype, rhs: T::DTYPE });
        }
        self.cpu_buffer()?.as_slice()
    }

    /// Mutable typed slice of a CPU tensor whose dtype is `T`, for in-place updates (a
    /// decode step's state, say). Storage is shared between the clones and reshapes of a
    /// tensor: when it is shared, this tensor first gets its own copy (copy on write),
    /// so no other handle ever sees the change.
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        if self.dtype != T::DTYPE {
            return Err(Error::DTypeMismatch { op: "as_mut_slice", lhs: self.dtype, rhs: T::DTYPE });
        }
        // A GPU tensor fails here, with the device named.
        self.cpu_buffer()?;
        if Arc::get_mut(&mut self.storage).is_none() {
            let copy = self.cpu_buffer()?.clone();
            self.storage = Arc::new(Storage::Cpu(copy));
        }
        match Arc::get_mut(&mut self.storage) {
            Some(Storage::Cpu(buffer)) => buffer.as_slice_mut(),
            // Unshared after the copy above, and on the CPU (checked first).
            _ => Err(Error::invalid(format!("tensor {} {}: no CPU storage to write", self.dtype, self.shape))),
        }
    }

    /// Zero-copy `ndarray` view of a CPU tensor whose dtype is `T`.
    pub fn view<T: Element>(&self) -> Result<ndarray::ArrayViewD<'_, T>> {
        let data = self.as_slice::<T>()?;
        ndarray::ArrayViewD::from_shape(ndarray::IxDyn(self.dims()), data)
            .map_err(|e| Error::invalid(format!("ndarray view of shape {}: {e}", self.shape)))
    }

    /// A CPU tensor copied from an `ndarray` array (any layout).
    pub fn from_ndarray<T: Element, D: ndarray::Dimension>(array: ndarray::ArrayView<'_, T, D>) -> Result<Tensor> {
        let shape = Shape::new(array.shape().to_vec());
        let data: Vec<T> = array.iter().copied().collect();
        Tensor::from_vec(data, shape)
    }

    /// Copies the elements out (downloading from a GPU if needed).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if self.dtype != T::DTYPE {
            return Err(Error::DTypeMismatch { op: "to_vec", lhs: self.dtype, rhs: T::DTYPE });
        }
        let host = self.to_device(&Device::Cpu)?;
        Ok(host.as_slice::<T>()?.to_vec())
    }

    /// The values as f32, from any float dtype on any device.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let host = self.to_device(&Device::Cpu)?;
        Ok(match host.dtype {
            DType::F32 => host.as_slice::<f32>()?.to_vec(),
            DType::F16 => host.as_slice::<f16>()?.iter().map(|v| v.to_f32()).collect(),
            DType::BF16 => host.as_slice::<bf16>()?.iter().map(|v| v.to_f32()).collect(),
            DType::F64 => host.as_slice::<f64>()?.iter().map(|&v| v as f32).collect(),
            dtype => {
                return Err(Error::UnsupportedDType {
                    op: "to_f32_vec",
                    dtype,
                    detail: "expected a float dtype".into(),
                });
            }
        })
    }

    /// Moves the tensor to `device` (a no-op clone when it is already there).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if self.device().same_device(device) {
            return Ok(self.clone());
        }
        let _span = tracing::debug_span!("to_device", to = %device, bytes = self.size_in_bytes()).entered();
        let host_bytes: CpuBuffer = match self.storage.as_ref() {
            Storage::Cpu(b) => b.clone(),
            Storage::Cuda(b) => b.download()?,
            Storage::Wgpu(b) => b.download()?,
        };
        let storage = match device {
            Device::Cpu => Storage::Cpu(host_bytes),
            Device::Cuda(d) => Storage::Cuda(d.upload(host_bytes.as_bytes())?),
            Device::Wgpu(d) => Storage::Wgpu(d.upload(host_bytes.as_bytes())?),
        };
        Tensor::from_storage(storage, self.shape.clone(), self.dtype)
    }

    /// Converts between float dtypes (f32, f16, bf16, f64); round-to-nearest-even.
    /// Runs on the host and returns a tensor on the original device.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype {
            return Ok(self.clone());
        }
        let values = self.to_f32_vec()?;
        let host = Tensor::from_f32(&values, dtype, self.shape.clone())?;
        host.to_device(&self.device())
    }

    /// Same bytes, new shape with the same number of elements.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.checked_numel()? != self.numel() {
            return Err(Error::ShapeMismatch { op: "reshape", lhs: self.shape.clone(), rhs: shape });
        }
        self.dtype.storage_bytes(shape.numel())?;
        if self.dtype.is_block_quantized() && shape.last_dim() % self.dtype.block_elems() != 0 {
            return Err(Error::invalid(format!(
                "reshape of {} tensor to {shape}: last dimension must be a multiple of {}",
                self.dtype,
                self.dtype.block_elems()
            )));
        }
        Ok(Tensor { shape, dtype: self.dtype, storage: self.storage.clone() })
    }

    /// Fails with [`Error::NonFinite`] naming `name` if any element is NaN or infinite.
    /// f32, f16 and bf16 are scanned on the tensor's device
    /// ([`crate::ops::first_non_finite`]: no copy to the host); f64 values are checked
    /// after narrowing to f32 (what the ops compute with), on the host;
    /// other dtypes always pass.
    pub fn check_finite(&self, op: &'static str, name: &str) -> Result<()> {
        if self.dtype.is_compute_float() {
            return crate::ops::check_all_finite(op, &[(name, self)]);
        }
        if self.dtype != DType::F64 {
            return Ok(());
        }
        let values = self.to_f32_vec()?;
        match values.iter().position(|v| !v.is_finite()) {
            Some(index) => Err(Error::NonFinite { op, tensor: name.to_string(), index, value: values[index] }),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {} on {})", self.dtype, self.shape, self.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_views() {
        let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
        assert_eq!(t.view::<f32>().unwrap()[[1, 2]], 6.0);
        assert_eq!(t.reshape([3, 2]).unwrap().dims(), &[3, 2]);
        let h = t.to_dtype(DType::BF16).unwrap();
        assert_eq!(h.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn mismatches_name_both_sides() {
        let err = Tensor::from_vec(vec![1.0f32; 5], [2, 3]).unwrap_err().to_string();
        assert!(err.contains('5') && err.contains("[2, 3]"), "{err}");
        let t = Tensor::from_vec(vec![1.0f32; 6], [2, 3]).unwrap();
        let err = t.reshape([4, 2]).unwrap_err().to_string();
        assert!(err.contains("[2, 3]") && err.contains("[4, 2]"), "{err}");
        assert!(t.as_slice::<f16>().is_err());
    }

    #[test]
    fn mutable_slices_copy_shared_storage_first() {
        let mut t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
        let other = t.reshape([4]).unwrap();
        t.as_mut_slice::<f32>().unwrap()[1] = 20.0;
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![1.0, 20.0, 3.0, 4.0]);
        assert_eq!(other.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0], "the shared handle changed");
        // Now unshared: written in place, no copy.
        let before = t.as_slice::<f32>().unwrap().as_ptr();
        t.as_mut_slice::<f32>().unwrap()[0] = 10.0;
        assert_eq!(t.as_slice::<f32>().unwrap().as_ptr(), before);
        assert_eq!(t.to_vec::<f32>().unwrap(), vec![10.0, 20.0, 3.0, 4.0]);
        assert!(matches!(t.as_mut_slice::<f16>(), Err(Error::DTypeMismatch { .. })));
    }

    #[test]
    fn non_finite_is_reported_with_index() {
        let t = Tensor::from_vec(vec![1.0f32, f32::NAN, 3.0], [3]).unwrap();
        let err = t.check_finite("op", "g").unwrap_err().to_string();
        assert!(err.contains("`g`") && err.contains("index 1"), "{err}");
    }
}
