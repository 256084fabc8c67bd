//! linattn-tensor: the tensor core of linattn.
//!
//! - [`DType`], [`Shape`], [`Tensor`]: contiguous row-major tensors with zero-copy CPU
//!   views (`as_slice`, `view` for `ndarray`), conversions through `half`.
//! - [`Device`]: CPU, CUDA (cudarc, dynamically loaded: builds and runs where no CUDA
//!   is installed) and WebGPU (wgpu). Opening a missing device is an `Err`, never a panic.
//! - [`cuda`] and [`wgpu`]: device buffers and the kernel registry (PTX modules and WGSL
//!   pipelines, loaded once per device and cached by kernel id).
//! - [`io`]: safetensors read (memory-mapped) and write, sharded checkpoints.
//! - [`ops`]: the op set every device implements, with naive references.

pub mod compare;
pub mod cuda;
pub mod device;
pub mod dtype;
pub mod error;
pub mod io;
pub mod ops;
pub mod shape;
pub mod storage;
pub mod tensor;
pub mod testing;
pub mod wgpu;

pub use device::{Device, DeviceKind, cuda_required, gpu_required, report_skip, wgpu_required};
pub use dtype::{DType, Element, FloatElement};
pub use error::{Error, Result};
pub use shape::Shape;
pub use storage::{CpuBuffer, Storage};
pub use tensor::Tensor;

pub use half::{bf16, f16};
