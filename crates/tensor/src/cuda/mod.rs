//! CUDA device (PLACEHOLDER: to be replaced by the real cudarc backend).
//!
//! Contract used by the rest of the crate:
//! `CudaDevice::{open, ordinal, name, same_device, synchronize, alloc_zeroed, upload}`,
//! `CudaBuffer::{len_bytes, device, download}`, and `ops::{binary, scale, matmul,
//! softmax_last, rms_norm}` with the signatures below.

pub mod ops;

use crate::error::{Error, Result};
use crate::storage::CpuBuffer;

#[derive(Clone, Debug)]
pub struct CudaDevice {
    never: Never,
}

#[derive(Clone, Copy, Debug)]
enum Never {}

impl CudaDevice {
    pub fn open(ordinal: usize) -> Result<CudaDevice> {
        Err(Error::DeviceUnavailable { device: format!("cuda:{ordinal}"), reason: "CUDA backend not built yet".into() })
    }
    pub fn ordinal(&self) -> usize {
        match self.never {}
    }
    pub fn name(&self) -> String {
        match self.never {}
    }
    pub fn same_device(&self, _other: &CudaDevice) -> bool {
        match self.never {}
    }
    pub fn synchronize(&self) -> Result<()> {
        match self.never {}
    }
    pub fn alloc_zeroed(&self, _bytes: usize) -> Result<CudaBuffer> {
        match self.never {}
    }
    pub fn upload(&self, _bytes: &[u8]) -> Result<CudaBuffer> {
        match self.never {}
    }
}

#[derive(Debug)]
pub struct CudaBuffer {
    device: CudaDevice,
}

impl CudaBuffer {
    pub fn len_bytes(&self) -> usize {
        match self.device.never {}
    }
    pub fn device(&self) -> &CudaDevice {
        &self.device
    }
    pub fn download(&self) -> Result<CpuBuffer> {
        match self.device.never {}
    }
}
