//! The one place where adapter ops choose a device.
//!
//! Every public op validates its arguments first, then calls [`cpu_only`]: CPU tensors
//! run the CPU path of this crate; CUDA and WebGPU tensors get
//! [`Error::NotImplementedOnDevice`] until their kernels land. A GPU backend replaces
//! the `Cuda` / `Wgpu` arms here (and the op's body dispatches on `Device`).
//!
//! Ops with GPU kernels so far: [`crate::lora_forward`] (LoRA and DoRA over any base) and
//! `AdapterSet::forward_mixed`, through [`crate::gpu`]; they send GPU tensors there first.

use linattn_tensor::{Device, Error, Result, Tensor};

/// `Ok(())` when `t` lives on the CPU; `NotImplementedOnDevice` naming `op` otherwise.
pub fn cpu_only(op: &'static str, t: &Tensor) -> Result<()> {
    match t.device() {
        Device::Cpu => Ok(()),
        // GPU kernels for adapters are not written yet: this is where they dispatch.
        device @ (Device::Cuda(_) | Device::Wgpu(_)) => {
            Err(Error::NotImplementedOnDevice { op, device: device.to_string() })
        }
    }
}
