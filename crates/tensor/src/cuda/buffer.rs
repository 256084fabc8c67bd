//! `CudaBuffer`: a tensor's bytes in GPU memory.
//!
//! Layout: one device allocation (`CudaSlice<u8>`, at least 1 byte since the driver
//! rejects empty allocations) holding `len` meaningful bytes, plus the device it lives on.
//! Device allocations are at least 256-byte aligned, so the bytes can be viewed as any
//! dense element type for kernel arguments (`view`, `view_mut`) without copying.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DeviceRepr};

use super::{CudaDevice, cuda_error};
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::storage::{CpuBuffer, Storage};
use crate::tensor::Tensor;

/// Bytes on one CUDA device.
pub struct CudaBuffer {
    slice: CudaSlice<u8>,
    len: usize,
    device: CudaDevice,
}

impl std::fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBuffer({} bytes on cuda:{})", self.len, self.device.ordinal())
    }
}

impl CudaBuffer {
    pub(crate) fn new(slice: CudaSlice<u8>, len: usize, device: CudaDevice) -> CudaBuffer {
        debug_assert!(slice.len() >= len);
        CudaBuffer { slice, len, device }
    }

    /// The CUDA buffer behind `tensor`; errors naming where the tensor lives otherwise.
    pub fn of(tensor: &Tensor) -> Result<&CudaBuffer> {
        match tensor.storage() {
            Storage::Cuda(buffer) => Ok(buffer),
            _ => Err(Error::invalid(format!(
                "expected a CUDA tensor, got {} {} on {}",
                tensor.dtype(),
                tensor.shape(),
                tensor.device()
            ))),
        }
    }

    /// Wraps this buffer as a tensor (the size must match `shape` in `dtype` exactly).
    pub fn into_tensor(self, shape: impl Into<crate::shape::Shape>, dtype: crate::dtype::DType) -> Result<Tensor> {
        Tensor::from_storage(Storage::Cuda(self), shape, dtype)
    }

    /// Meaningful bytes (the tensor's storage size).
    pub fn len_bytes(&self) -> usize {
        self.len
    }

    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    /// The raw allocation, for `KernelLaunch::arg` (the kernel sees its base address).
    /// It may be longer than `len_bytes` (an empty buffer still owns one byte).
    pub fn as_slice(&self) -> &CudaSlice<u8> {
        &self.slice
    }

    /// The raw allocation, mutably: pass `&mut` for kernel outputs so cudarc orders later
    /// reads after the write.
    pub fn as_slice_mut(&mut self) -> &mut CudaSlice<u8> {
        &mut self.slice
    }

    fn typed_len<T>(&self) -> Result<usize> {
        let size = std::mem::size_of::<T>();
        if size == 0 || !self.len.is_multiple_of(size) {
            return Err(Error::invalid(format!(
                "a CUDA buffer of {} bytes cannot be viewed as {}-byte {} elements",
                self.len,
                size,
                std::any::type_name::<T>()
            )));
        }
        Ok(self.len / size)
    }

    /// Typed view of the `len_bytes` bytes as `T`s.
    pub fn view<T: Element + DeviceRepr>(&self) -> Result<CudaView<'_, T>> {
        let count = self.typed_len::<T>()?;
        // SAFETY: `T: Element` is plain old data (bytemuck::Pod), so any bytes are a valid
        // `T`; the allocation is 256-byte aligned and holds at least `count * size_of::<T>()`
        // bytes, which `transmute` checks again (returning None otherwise).
        unsafe { self.slice.transmute::<T>(count) }.ok_or_else(|| {
            Error::invalid(format!("CUDA buffer of {} bytes is too short for {count} elements", self.len))
        })
    }

    /// Typed mutable view of the `len_bytes` bytes as `T`s.
    pub fn view_mut<T: Element + DeviceRepr>(&mut self) -> Result<CudaViewMut<'_, T>> {
        let count = self.typed_len::<T>()?;
        let len = self.len;
        // SAFETY: as in `view`; the mutable borrow of `self` makes the view exclusive.
        unsafe { self.slice.transmute_mut::<T>(count) }
            .ok_or_else(|| Error::invalid(format!("CUDA buffer of {len} bytes is too short for {count} elements")))
    }

    /// The device address (`CUdeviceptr`) of the first byte, for hand-built argument
    /// lists. Prefer `as_slice`/`view` with `KernelLaunch::arg`, which also order the
    /// launch after pending writes on other streams.
    pub fn device_address(&self) -> u64 {
        let stream = self.device.stream();
        let (address, _sync) = self.slice.device_ptr(stream);
        address
    }

    /// Copies the `len_bytes` bytes to host memory (waits for queued work).
    pub fn download(&self) -> Result<CpuBuffer> {
        let _span = tracing::trace_span!("cuda_download", bytes = self.len).entered();
        if self.len == 0 {
            return Ok(CpuBuffer::zeroed(0));
        }
        let stream = self.device.stream();
        let context = || format!("download {} bytes from cuda:{}", self.len, self.device.ordinal());
        let bytes = stream.clone_dtoh(&self.slice.slice(..self.len)).map_err(|e| cuda_error(context(), e))?;
        stream.synchronize().map_err(|e| cuda_error(context(), e))?;
        Ok(CpuBuffer::from_bytes(&bytes))
    }
}
