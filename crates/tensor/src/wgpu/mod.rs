//! WebGPU device (PLACEHOLDER: to be replaced by the real wgpu backend).
//!
//! Contract used by the rest of the crate:
//! `WgpuDevice::{open_default, name, same_device, synchronize, alloc_zeroed, upload}`,
//! `WgpuBuffer::{len_bytes, device, download}`, and `ops::{binary, scale, matmul,
//! softmax_last, rms_norm}` with the signatures below.

pub mod ops;

use crate::error::{Error, Result};
use crate::storage::CpuBuffer;

#[derive(Clone, Debug)]
pub struct WgpuDevice {
    never: Never,
}

#[derive(Clone, Copy, Debug)]
enum Never {}

impl WgpuDevice {
    pub fn open_default() -> Result<WgpuDevice> {
        Err(Error::DeviceUnavailable { device: "wgpu".into(), reason: "WebGPU backend not built yet".into() })
    }
    pub fn name(&self) -> String {
        match self.never {}
    }
    pub fn same_device(&self, _other: &WgpuDevice) -> bool {
        match self.never {}
    }
    pub fn synchronize(&self) -> Result<()> {
        match self.never {}
    }
    pub fn alloc_zeroed(&self, _bytes: usize) -> Result<WgpuBuffer> {
        match self.never {}
    }
    pub fn upload(&self, _bytes: &[u8]) -> Result<WgpuBuffer> {
        match self.never {}
    }
}

#[derive(Debug)]
pub struct WgpuBuffer {
    device: WgpuDevice,
}

impl WgpuBuffer {
    pub fn len_bytes(&self) -> usize {
        match self.device.never {}
    }
    pub fn device(&self) -> &WgpuDevice {
        &self.device
    }
    pub fn download(&self) -> Result<CpuBuffer> {
        match self.device.never {}
    }
}
