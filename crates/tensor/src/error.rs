//! The one error type of linattn-tensor. Every message names the problem: both shapes
//! on a mismatch, the tensor name and byte offset on a bad file, the device and reason
//! when a device cannot be used.

use crate::{dtype::DType, shape::Shape};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch: {lhs} vs {rhs}")]
    ShapeMismatch { op: &'static str, lhs: Shape, rhs: Shape },

    #[error("{op}: dtype mismatch: {lhs} vs {rhs}")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },

    #[error("{op}: dtype {dtype} is not supported{}", if .detail.is_empty() { String::new() } else { format!(" ({})", .detail) })]
    UnsupportedDType { op: &'static str, dtype: DType, detail: String },

    #[error("{op}: tensors live on different devices: {lhs} vs {rhs}")]
    DeviceMismatch { op: &'static str, lhs: String, rhs: String },

    #[error("device {device} is unavailable: {reason}")]
    DeviceUnavailable { device: String, reason: String },

    #[error("{op}: not implemented on {device}")]
    NotImplementedOnDevice { op: &'static str, device: String },

    #[error("{0}")]
    InvalidArgument(String),

    #[error("{op}: input `{tensor}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite { op: &'static str, tensor: String, index: usize, value: f32 },

    #[error("safetensors {path}: {message}")]
    SafeTensors { path: String, message: String },

    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("CUDA: {0}")]
    Cuda(String),

    #[error("WebGPU: {0}")]
    Wgpu(String),

    #[error("kernel {kernel}: {message}")]
    Kernel { kernel: String, message: String },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
}
