//! GPU kernels of the quantized products `y = x W^T`: WebGPU ([`wgpu`]) and CUDA ([`cuda`]).
//!
//! Formats on the GPU: ggml Q8_0 and Q4_0 (WebGPU and CUDA), Q4_K (WebGPU), fused dequantize + matvec/matmul (the weight
//! stays in its raw ggml block bytes on the device, `W [out, in]`). `x` is f32, f16 or
//! bf16; accumulation is f32; the output has the dtype of `x`. Other formats return
//! `Error::NotImplementedOnDevice` from [`crate::weight::dispatch_device`].
//!
//! [`ggml_format_on_gpu`] says which ggml formats have GPU kernels;
//! [`crate::QuantizedWeight::matmul`] and [`crate::weight::ggml_matmul`] route a GPU `x`
//! (WebGPU or CUDA) here through [`ggml_matmul_on_device`], uploading a weight that is not
//! on `x`'s device. The WebGPU kernel is tested on Mesa lavapipe; the CUDA kernel mirrors
//! it and is compiled to PTX without spills, its conformance test needs a CUDA GPU.

pub mod cuda;
pub mod wgpu;

use linattn_tensor::{Device, Error, Result, Tensor};

use crate::ggml::GgmlFormat;

/// Whether `format` has kernels on `device`: Q8_0 and Q4_0 on WebGPU and CUDA, Q4_K on
/// WebGPU only; never on the CPU (that path is [`crate::cpu`]).
pub fn ggml_format_on_gpu(format: GgmlFormat, device: &Device) -> bool {
    match device {
        Device::Cpu => false,
        Device::Wgpu(_) => wgpu::entry_point(format).is_some(),
        Device::Cuda(_) => cuda::entry_point(format, "f32").is_some(),
    }
}

/// Sizes of one ggml product, checked against the tensors the kernels will read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GgmlSizes {
    pub format: GgmlFormat,
    /// Output features (rows of W).
    pub rows: usize,
    /// Input features (columns of W, last dim of x).
    pub cols: usize,
    /// Rows of x (product of its leading dims).
    pub m: usize,
    /// Bytes of one weight row.
    pub row_bytes: usize,
}

impl GgmlSizes {
    /// Validates `w` (a ggml tensor of a GPU format, rank >= 1) and `x` (float, last dim
    /// = cols) and returns the sizes plus the output dims (`x` dims with the last = rows).
    pub(crate) fn check(op: &'static str, w: &Tensor, x: &Tensor) -> Result<(GgmlSizes, Vec<usize>)> {
        let format = GgmlFormat::from_dtype(w.dtype())?;
        if !ggml_format_on_gpu(format, &x.device()) {
            return Err(Error::NotImplementedOnDevice { op, device: format!("{} ({format} weight)", x.device()) });
        }
        if w.rank() == 0 {
            return Err(Error::invalid(format!("{op}: {format} weight of rank 0")));
        }
        if !x.dtype().is_compute_float() {
            return Err(Error::UnsupportedDType { op, dtype: x.dtype(), detail: "expected f32, f16 or bf16".into() });
        }
        let (rows, cols) = (w.shape().rows(), w.shape().last_dim());
        if x.rank() == 0 || x.shape().last_dim() != cols {
            return Err(Error::ShapeMismatch { op, lhs: x.shape().clone(), rhs: w.shape().clone() });
        }
        let row_bytes = format.row_bytes(cols)?;
        let want = row_bytes
            .checked_mul(rows)
            .ok_or_else(|| Error::invalid(format!("{op}: {format} shape {} overflows", w.shape())))?;
        if w.size_in_bytes() != want {
            return Err(Error::invalid(format!(
                "{op}: {format} weight of shape {} holds {} bytes, expected {want}",
                w.shape(),
                w.size_in_bytes()
            )));
        }
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank >= 1 checked") = rows;
        Ok((GgmlSizes { format, rows, cols, m: x.shape().rows(), row_bytes }, dims))
    }
}

/// `x W^T` on `x`'s GPU for a ggml weight tensor `w` (`[out, in]`, Q8_0 or Q4_0) on any
/// device: a weight elsewhere is uploaded to `x`'s device first (a copy per call; keep
/// the weight on the device to avoid it). `Err` for a CPU `x` or a format without GPU
/// kernels (`NotImplementedOnDevice`).
pub fn ggml_matmul_on_device(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    let device = x.device();
    let format = GgmlFormat::from_dtype(w.dtype())?;
    if !ggml_format_on_gpu(format, &device) {
        return Err(Error::NotImplementedOnDevice { op: "ggml_matmul", device: format!("{device} ({format} weight)") });
    }
    let w = w.to_device(&device)?;
    match device {
        Device::Wgpu(_) => wgpu::ggml_matmul(&w, x),
        _ => cuda::ggml_matmul(&w, x),
    }
}
