//! GPU kernels of the quantized products `y = x W^T`: WebGPU ([`wgpu`]) and CUDA ([`cuda`]).
//!
//! Every kernel is a fused dequantize + matvec/matmul: `W [out, in]` stays in its packed
//! form on the device and is never materialized. `x` is f32, f16 or bf16; accumulation
//! is f32 (i32 for the int8 x int8 part of LLM.int8); the output has the dtype of `x`.
//!
//! | format | WebGPU (tested on lavapipe) | CUDA (compiled, mirrors the WGSL) |
//! |--------|------------------------------|-----------------------------------|
//! | Q8_0, Q4_0, Q4_K, Q6_K | `quant/ggml_matmul.wgsl` | `quant/ggml_matmul.cu` |
//! | NF4, FP4, FP8 E4M3/E5M2 | `quant/codebook_matmul.wgsl` | `quant/codebook_matmul.cu` |
//! | LLM.int8 | `quant/int8_mixed.wgsl` | `quant/int8_mixed.cu` |
//!
//! [`DeviceQuantizedWeight`] is a weight uploaded once ([`crate::QuantizedWeight::to_device`]);
//! its `matmul` reuses the device buffers on every call. [`crate::QuantizedWeight::matmul`]
//! with a GPU `x` goes through it too (uploading per call: keep a `DeviceQuantizedWeight`
//! to avoid that). Formats without kernels on a device return
//! `Error::NotImplementedOnDevice`.
//!
//! Device forms (built on the host by [`DeviceQuantizedWeight::upload`]):
//! - ggml: the raw block bytes as a tensor of the ggml dtype.
//! - NF4 / FP4: the packed nibbles (element 2j in the high nibble), the 16-entry code
//!   table and one f32 absmax per block of the flattened weight. A double-quantized
//!   absmax is decoded on the host into f32 before the upload
//!   (`FourBitWeight::absmax_f32`); the kernel never sees the nested state.
//! - LLM.int8 (`int8`; launches in [`int8_wgpu`] and [`int8_cuda`]): the int8 codes with
//!   each row padded to whole u32 words, SCB per row and the threshold
//!   (`Int8Weight::threshold`). The GPU computes the same mixed-precision scheme as the
//!   CPU (`Int8Weight::matmul_f32`): outlier columns (some `|x| >= threshold`, when the
//!   threshold is positive) in f32 against the dequantized weight columns, the rest
//!   quantized row-wise to int8 on the device and multiplied int8 x int8 -> i32. Three
//!   passes on the device (outlier columns and `s_x` per row, int8 codes of x, the fused
//!   matmul); x never leaves the device. The codes and the integer part equal the CPU's
//!   exactly; only the f32 summation order of the outlier part differs.
//! - FP8 E4M3 / E5M2: the codes, the exact 256-entry decode table, and a per-tensor scale
//!   or the `weight_scale_inv` block scales (any block shape, 128 x 128 by default).

pub mod cuda;
mod int8;
pub mod int8_cuda;
pub mod int8_wgpu;
pub mod wgpu;

use linattn_tensor::{DType, Device, Error, Result, Shape, Tensor};

use crate::bnb::FourBitWeight;
use crate::fp8::{Fp8Scale, Fp8Weight};
use crate::ggml::GgmlFormat;
use crate::weight::{QuantFormat, QuantizedWeight};

/// Whether the ggml `format` has kernels on `device`: every ggml format on WebGPU and
/// CUDA; never on the CPU (that path is [`crate::cpu`]).
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

/// `x W^T` on `x`'s GPU for a ggml weight tensor `w` (`[out, in]`, any ggml format) on any
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

/// Whether `format` has kernels on `device` (never on the CPU).
pub fn format_on_gpu(format: QuantFormat, device: &Device) -> bool {
    match format.ggml() {
        Some(g) => ggml_format_on_gpu(g, device),
        None => match device {
            Device::Cpu => false,
            Device::Wgpu(_) | Device::Cuda(_) => true,
        },
    }
}

/// How a codebook weight maps an element to its code and scale (see
/// `kernels/wgsl/quant/codebook_matmul.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct CodebookLayout {
    /// 4-bit codes (two per byte, element 2j in the high nibble) instead of bytes.
    pub nibbles: bool,
    /// > 0: scale index = flat element index / `flat_block` (bitsandbytes blocks).
    pub flat_block: usize,
    /// Otherwise scale index = (r / block_rows) * scale_cols + c / block_cols.
    pub block_rows: usize,
    pub block_cols: usize,
    pub scale_cols: usize,
}

/// A codebook weight on a device (NF4 / FP4 / FP8): element = table[code] * scale.
#[derive(Clone, Debug)]
pub(crate) struct CodebookWeight {
    /// Packed codes, a U8 tensor.
    pub codes: Tensor,
    /// 16 or 256 f32 values.
    pub table: Tensor,
    /// f32 scales.
    pub scales: Tensor,
    pub layout: CodebookLayout,
}

impl CodebookWeight {
    /// The number of scales the layout indexes for a `[rows, cols]` weight.
    pub(crate) fn scales_needed(&self, rows: usize, cols: usize) -> usize {
        let l = &self.layout;
        if l.flat_block > 0 {
            (rows * cols).div_ceil(l.flat_block)
        } else if rows == 0 || cols == 0 {
            0
        } else {
            rows.div_ceil(l.block_rows) * l.scale_cols
        }
    }

    /// Bytes of packed codes for `n` elements.
    pub(crate) fn code_bytes(&self, n: usize) -> usize {
        if self.layout.nibbles { n.div_ceil(2) } else { n }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum DeviceRepr {
    /// Raw ggml block bytes, a tensor of the ggml dtype `[.., cols]`.
    Ggml(Tensor),
    Codebook(CodebookWeight),
    /// LLM.int8 with the mixed-precision outlier decomposition.
    Int8(int8::Int8DeviceWeight),
}

/// A quantized weight `W [out, in]` whose packed data and quant state live on a GPU,
/// uploaded once; [`DeviceQuantizedWeight::matmul`] runs the fused kernels against it.
#[derive(Clone, Debug)]
pub struct DeviceQuantizedWeight {
    format: QuantFormat,
    shape: Shape,
    device: Device,
    pub(crate) repr: DeviceRepr,
}

impl DeviceQuantizedWeight {
    /// Uploads `w` to `device` (a GPU with kernels for its format). Double-quantized
    /// NF4/FP4 absmax is decoded on the host into f32 first.
    pub fn upload(w: &QuantizedWeight, device: &Device) -> Result<DeviceQuantizedWeight> {
        let format = w.format();
        if !format_on_gpu(format, device) {
            return Err(Error::NotImplementedOnDevice {
                op: "quant_to_device",
                device: format!("{device} ({format} weight)"),
            });
        }
        w.validate()?;
        let shape = w.shape();
        let f32_tensor = |v: &[f32]| -> Result<Tensor> {
            // A zero-length buffer cannot be bound: keep at least one (unused) value.
            let v: Vec<f32> = if v.is_empty() { vec![0.0] } else { v.to_vec() };
            let n = v.len();
            Tensor::from_vec(v, [n])?.to_device(device)
        };
        let u8_tensor = |b: &[u8]| -> Result<Tensor> {
            let b: &[u8] = if b.is_empty() { &[0] } else { b };
            Tensor::from_bytes(b, DType::U8, [b.len()])?.to_device(device)
        };
        let repr = match w {
            QuantizedWeight::Ggml { .. } => DeviceRepr::Ggml(w.to_ggml_tensor()?.to_device(device)?),
            QuantizedWeight::FourBit(fb) => DeviceRepr::Codebook(four_bit(fb, &f32_tensor, &u8_tensor)?),
            QuantizedWeight::Int8(q) => DeviceRepr::Int8(int8::Int8DeviceWeight::upload(q, device)?),
            QuantizedWeight::Fp8(f) => DeviceRepr::Codebook(fp8(f, &f32_tensor, &u8_tensor)?),
        };
        Ok(DeviceQuantizedWeight { format, shape, device: device.clone(), repr })
    }

    /// The format.
    pub fn format(&self) -> QuantFormat {
        self.format
    }

    /// The logical shape `[out, in]` (ggml weights: any rank >= 1, rows = leading dims).
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The device holding the buffers.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.shape.rows()
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.shape.last_dim()
    }

    /// `x [.., in] W^T -> [.., out]` with `x` (f32/f16/bf16) on the weight's device; the
    /// output has the dtype of `x` (f32 accumulation).
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "quant_matmul";
        if !x.device().same_device(&self.device) {
            return Err(Error::invalid(format!(
                "{OP}: x is on {} but the {} weight is on {}",
                x.device(),
                self.format,
                self.device
            )));
        }
        if !x.dtype().is_compute_float() {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: x.dtype(),
                detail: "expected f32, f16 or bf16".into(),
            });
        }
        if x.rank() == 0 || x.shape().last_dim() != self.cols() {
            return Err(Error::ShapeMismatch { op: OP, lhs: x.shape().clone(), rhs: self.shape.clone() });
        }
        match (&self.repr, &self.device) {
            (DeviceRepr::Ggml(w), Device::Wgpu(_)) => wgpu::ggml_matmul(w, x),
            (DeviceRepr::Ggml(w), Device::Cuda(_)) => cuda::ggml_matmul(w, x),
            (DeviceRepr::Codebook(c), Device::Wgpu(_)) => wgpu::codebook_matmul(c, &self.shape, x),
            (DeviceRepr::Codebook(c), Device::Cuda(_)) => cuda::codebook_matmul(c, &self.shape, x),
            (DeviceRepr::Int8(w), Device::Wgpu(_)) => int8_wgpu::int8_mixed_matmul(w, &self.shape, x),
            (DeviceRepr::Int8(w), Device::Cuda(_)) => int8_cuda::int8_mixed_matmul(w, &self.shape, x),
            (_, Device::Cpu) => Err(Error::invalid(format!("{OP}: a device weight on the CPU"))),
        }
    }
}

fn four_bit(
    w: &FourBitWeight,
    f32_tensor: &dyn Fn(&[f32]) -> Result<Tensor>,
    u8_tensor: &dyn Fn(&[u8]) -> Result<Tensor>,
) -> Result<CodebookWeight> {
    Ok(CodebookWeight {
        codes: u8_tensor(w.packed.as_slice())?,
        table: f32_tensor(&w.code)?,
        scales: f32_tensor(&w.absmax_f32())?,
        layout: CodebookLayout { nibbles: true, flat_block: w.blocksize, block_rows: 1, block_cols: 1, scale_cols: 1 },
    })
}

fn fp8(
    w: &Fp8Weight,
    f32_tensor: &dyn Fn(&[f32]) -> Result<Tensor>,
    u8_tensor: &dyn Fn(&[u8]) -> Result<Tensor>,
) -> Result<CodebookWeight> {
    let table: Vec<f32> = (0..=255u8).map(|b| w.kind.decode(b)).collect();
    let (scales, block_rows, block_cols, scale_cols) = match &w.scale {
        Fp8Scale::PerTensor(s) => (vec![*s], w.rows.max(1), w.cols.max(1), 1),
        Fp8Scale::Block { block_rows, block_cols, scale_inv } => {
            (scale_inv.clone(), *block_rows, *block_cols, w.cols.div_ceil(*block_cols))
        }
    };
    Ok(CodebookWeight {
        codes: u8_tensor(w.data.as_slice())?,
        table: f32_tensor(&table)?,
        scales: f32_tensor(&scales)?,
        layout: CodebookLayout { nibbles: false, flat_block: 0, block_rows, block_cols, scale_cols },
    })
}
