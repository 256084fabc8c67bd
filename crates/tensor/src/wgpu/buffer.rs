//! `WgpuBuffer`: a storage buffer on a [`WgpuDevice`] with a logical byte length.
//!
//! Layout: the allocation is the logical length rounded up to a multiple of 4 (at least
//! 4 bytes, since WGSL reads `u32` words and wgpu copies in 4-byte units); the padding
//! is zero. Usages: `STORAGE | COPY_SRC | COPY_DST`, so any buffer can be bound
//! read-only or read-write by any kernel. New buffers are zero-filled by wgpu, which
//! kernels that OR 16-bit halves into output words rely on.
//! Sizes above the device's storage-binding or buffer limit are an `Err` naming both.
//! `download` copies into a `MAP_READ` staging buffer, maps it and waits.

use std::sync::mpsc;

use super::WgpuDevice;
use crate::error::{Error, Result};
use crate::storage::CpuBuffer;

/// Bytes of device memory holding `len_bytes` logical bytes.
pub struct WgpuBuffer {
    device: WgpuDevice,
    buffer: ::wgpu::Buffer,
    len: usize,
}

impl WgpuBuffer {
    /// Logical length in bytes (the allocation may be up to 3 bytes longer).
    pub fn len_bytes(&self) -> usize {
        self.len
    }

    /// Allocated length in bytes (a multiple of 4, at least 4).
    pub fn padded_len_bytes(&self) -> u64 {
        self.buffer.size()
    }

    /// The device the buffer lives on.
    pub fn device(&self) -> &WgpuDevice {
        &self.device
    }

    /// The raw wgpu buffer, for binding in custom passes.
    pub fn raw(&self) -> &::wgpu::Buffer {
        &self.buffer
    }

    /// Copies the logical bytes back to host memory (waits for queued work).
    pub fn download(&self) -> Result<CpuBuffer> {
        let _span = tracing::debug_span!("wgpu_download", bytes = self.len).entered();
        let mut host = CpuBuffer::zeroed(self.len);
        if self.len == 0 {
            return Ok(host);
        }
        let padded = self.buffer.size();
        let inner = &self.device.inner;
        let staging = self.device.scoped("download: staging buffer", || {
            let staging = inner.device.create_buffer(&::wgpu::BufferDescriptor {
                label: Some("linattn download staging"),
                size: padded,
                usage: ::wgpu::BufferUsages::MAP_READ | ::wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut encoder = inner.device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&self.buffer, 0, &staging, 0, padded);
            inner.queue.submit([encoder.finish()]);
            staging
        })?;
        let (sender, receiver) = mpsc::channel();
        staging.map_async(::wgpu::MapMode::Read, .., move |result| {
            // The receiver outlives the poll below; a send error only means it gave up.
            let _ = sender.send(result);
        });
        inner
            .device
            .poll(::wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Wgpu(format!("download of {} bytes: waiting for the device: {e}", self.len)))?;
        receiver
            .recv()
            .map_err(|_| Error::Wgpu(format!("download of {} bytes: the map callback never ran", self.len)))?
            .map_err(|e| Error::Wgpu(format!("download of {} bytes: mapping failed: {e}", self.len)))?;
        {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| Error::Wgpu(format!("download of {} bytes: mapped range: {e}", self.len)))?;
            host.as_bytes_mut().copy_from_slice(&view[..self.len]);
        }
        staging.unmap();
        Ok(host)
    }
}

impl std::fmt::Debug for WgpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBuffer({} bytes on {})", self.len, self.device.name())
    }
}

impl WgpuDevice {
    /// Checks that a buffer of `bytes` logical bytes fits this device; returns the
    /// padded allocation size.
    pub fn check_buffer_size(&self, bytes: usize) -> Result<u64> {
        let padded = (bytes.max(1) as u64).div_ceil(4) * 4;
        let limit = self.max_storage_buffer_bytes();
        if padded > limit {
            return Err(Error::Wgpu(format!(
                "buffer of {bytes} bytes exceeds the device's largest storage buffer of {limit} bytes \
                 (max_storage_buffer_binding_size {}, max_buffer_size {})",
                self.inner.limits.max_storage_buffer_binding_size, self.inner.limits.max_buffer_size
            )));
        }
        Ok(padded)
    }

    fn create_storage(&self, bytes: usize, mapped_at_creation: bool) -> Result<::wgpu::Buffer> {
        let padded = self.check_buffer_size(bytes)?;
        self.scoped(&format!("allocating a buffer of {bytes} bytes"), || {
            self.inner.device.create_buffer(&::wgpu::BufferDescriptor {
                label: Some("linattn tensor"),
                size: padded,
                usage: ::wgpu::BufferUsages::STORAGE | ::wgpu::BufferUsages::COPY_SRC | ::wgpu::BufferUsages::COPY_DST,
                mapped_at_creation,
            })
        })
    }

    /// A zero-filled buffer of `bytes` logical bytes.
    pub fn alloc_zeroed(&self, bytes: usize) -> Result<WgpuBuffer> {
        let _span = tracing::trace_span!("wgpu_alloc", bytes).entered();
        let buffer = self.create_storage(bytes, false)?;
        Ok(WgpuBuffer { device: self.clone(), buffer, len: bytes })
    }

    /// A buffer holding a copy of `bytes` (any length; the padding is zero).
    pub fn upload(&self, bytes: &[u8]) -> Result<WgpuBuffer> {
        let _span = tracing::debug_span!("wgpu_upload", bytes = bytes.len()).entered();
        let buffer = self.create_storage(bytes.len(), true)?;
        {
            let mut view = buffer
                .get_mapped_range_mut(..)
                .map_err(|e| Error::Wgpu(format!("upload of {} bytes: mapped range: {e}", bytes.len())))?;
            // The padding past `bytes.len()` is already zero: wgpu zero-fills new buffers.
            view.slice(..bytes.len()).copy_from_slice(bytes);
        }
        buffer.unmap();
        Ok(WgpuBuffer { device: self.clone(), buffer, len: bytes.len() })
    }
}
