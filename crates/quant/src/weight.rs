//! [`QuantizedWeight`]: one type over every quantized weight format, with its quant
//! state, and the tensor-level products `y = x W^T` (`W [out, in]`).
//!
//! Tensor-level functions validate shapes and dtypes, then dispatch on the device of
//! `x` in one place, [`dispatch_device`]: CPU runs the kernels of [`crate::cpu`];
//! formats with kernels on `x`'s GPU (`gpu::format_on_gpu`) run [`crate::gpu`] through a
//! [`DeviceQuantizedWeight`] ([`QuantizedWeight::to_device`] uploads once; `matmul` with
//! a GPU `x` uploads per call); every other GPU case returns
//! `Error::NotImplementedOnDevice`.

use linattn_tensor::{DType, Device, Error, Result, Shape, Tensor};

use crate::bnb::{FourBitKind, FourBitWeight, Int8Weight};
use crate::bytes::ByteView;
use crate::cpu::{self, CpuKernel};
use crate::fp8::{Fp8Kind, Fp8Weight};
use crate::ggml::{self, GgmlFormat};
use crate::gpu::DeviceQuantizedWeight;

/// Every quantized weight format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    Q8_0,
    Q4_0,
    Q4K,
    Q6K,
    Nf4,
    Fp4,
    Int8,
    Fp8E4M3,
    Fp8E5M2,
}

impl QuantFormat {
    pub const ALL: [QuantFormat; 9] = [
        QuantFormat::Q8_0,
        QuantFormat::Q4_0,
        QuantFormat::Q4K,
        QuantFormat::Q6K,
        QuantFormat::Nf4,
        QuantFormat::Fp4,
        QuantFormat::Int8,
        QuantFormat::Fp8E4M3,
        QuantFormat::Fp8E5M2,
    ];

    /// Short name: `q8_0 q4_0 q4_k q6_k nf4 fp4 int8 fp8_e4m3 fp8_e5m2`.
    pub const fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "q8_0",
            QuantFormat::Q4_0 => "q4_0",
            QuantFormat::Q4K => "q4_k",
            QuantFormat::Q6K => "q6_k",
            QuantFormat::Nf4 => "nf4",
            QuantFormat::Fp4 => "fp4",
            QuantFormat::Int8 => "int8",
            QuantFormat::Fp8E4M3 => "fp8_e4m3",
            QuantFormat::Fp8E5M2 => "fp8_e5m2",
        }
    }

    /// Parses a name as above; `fp8` means `fp8_e4m3`.
    pub fn parse(s: &str) -> Result<QuantFormat> {
        let lower = s.to_ascii_lowercase();
        if lower == "fp8" {
            return Ok(QuantFormat::Fp8E4M3);
        }
        QuantFormat::ALL.into_iter().find(|f| f.name() == lower).ok_or_else(|| {
            Error::invalid(format!(
                "unknown quant format `{s}`: expected q4_0, q8_0, q4_k, q6_k, nf4, fp4, int8 or fp8"
            ))
        })
    }

    /// The ggml format, for ggml block formats.
    pub const fn ggml(self) -> Option<GgmlFormat> {
        match self {
            QuantFormat::Q8_0 => Some(GgmlFormat::Q8_0),
            QuantFormat::Q4_0 => Some(GgmlFormat::Q4_0),
            QuantFormat::Q4K => Some(GgmlFormat::Q4K),
            QuantFormat::Q6K => Some(GgmlFormat::Q6K),
            _ => None,
        }
    }
}

impl std::fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A quantized weight with its quant state.
#[derive(Clone, Debug)]
pub enum QuantizedWeight {
    /// ggml blocks along the last dimension; `bytes` may view a mapped GGUF file.
    Ggml { format: GgmlFormat, shape: Shape, bytes: ByteView },
    /// bitsandbytes NF4 / FP4.
    FourBit(FourBitWeight),
    /// LLM.int8.
    Int8(Int8Weight),
    /// FP8 with per-tensor or block scales.
    Fp8(Fp8Weight),
}

/// The single place where a quantized op picks its device implementation.
pub fn dispatch_device(op: &'static str, device: &Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        // GPU kernels for quantized formats are a later phase: they slot in here.
        Device::Cuda(_) | Device::Wgpu(_) => Err(Error::NotImplementedOnDevice { op, device: device.to_string() }),
    }
}

impl QuantizedWeight {
    /// Quantizes row-major `values` of `shape` (rank >= 1; 2D `[out, in]` for non-ggml
    /// formats) with default parameters: bitsandbytes blocksize 64 without double
    /// quantization, FP8 with 128x128 block scales, int8 threshold 6.0.
    pub fn quantize(values: &[f32], shape: impl Into<Shape>, format: QuantFormat) -> Result<QuantizedWeight> {
        let shape = shape.into();
        if shape.checked_numel()? != values.len() || shape.rank() == 0 {
            return Err(Error::invalid(format!(
                "quantize {format}: {} values do not fill shape {shape}",
                values.len()
            )));
        }
        if let Some(g) = format.ggml() {
            let last = shape.last_dim();
            g.row_bytes(last)?;
            // Straight into huge-page memory (see `WeightBuffer`).
            let mut bytes = crate::bytes::WeightBuffer::zeroed(ggml::quantized_len(g, values.len())?);
            ggml::quantize_into(g, values, bytes.as_mut_slice())?;
            return Ok(QuantizedWeight::Ggml { format: g, shape, bytes: bytes.into_view() });
        }
        let (rows, cols) = two_d(&shape, format)?;
        Ok(match format {
            QuantFormat::Nf4 => {
                QuantizedWeight::FourBit(FourBitWeight::quantize(values, shape, FourBitKind::Nf4, 64, false)?)
            }
            QuantFormat::Fp4 => {
                QuantizedWeight::FourBit(FourBitWeight::quantize(values, shape, FourBitKind::Fp4, 64, false)?)
            }
            QuantFormat::Int8 => QuantizedWeight::Int8(Int8Weight::quantize(values, rows, cols)?),
            QuantFormat::Fp8E4M3 => {
                QuantizedWeight::Fp8(Fp8Weight::quantize(values, rows, cols, Fp8Kind::E4M3, Some((128, 128)))?)
            }
            QuantFormat::Fp8E5M2 => {
                QuantizedWeight::Fp8(Fp8Weight::quantize(values, rows, cols, Fp8Kind::E5M2, Some((128, 128)))?)
            }
            _ => unreachable!("ggml formats handled above"),
        })
    }

    /// Quantizes a float tensor (any device; read back to the host).
    pub fn quantize_tensor(t: &Tensor, format: QuantFormat) -> Result<QuantizedWeight> {
        QuantizedWeight::quantize(&t.to_f32_vec()?, t.shape().clone(), format)
    }

    /// Wraps a CPU tensor of a ggml dtype (zero-copy).
    pub fn from_ggml_tensor(t: &Tensor) -> Result<QuantizedWeight> {
        let format = GgmlFormat::from_dtype(t.dtype())?;
        if t.rank() == 0 {
            return Err(Error::invalid(format!("{} tensor of rank 0 cannot be a weight", t.dtype())));
        }
        Ok(QuantizedWeight::Ggml { format, shape: t.shape().clone(), bytes: ByteView::from_tensor(t)? })
    }

    /// The format.
    pub fn format(&self) -> QuantFormat {
        match self {
            QuantizedWeight::Ggml { format, .. } => match format {
                GgmlFormat::Q8_0 => QuantFormat::Q8_0,
                GgmlFormat::Q4_0 => QuantFormat::Q4_0,
                GgmlFormat::Q4K => QuantFormat::Q4K,
                GgmlFormat::Q6K => QuantFormat::Q6K,
            },
            QuantizedWeight::FourBit(w) => match w.kind {
                FourBitKind::Nf4 => QuantFormat::Nf4,
                FourBitKind::Fp4 => QuantFormat::Fp4,
            },
            QuantizedWeight::Int8(_) => QuantFormat::Int8,
            QuantizedWeight::Fp8(w) => match w.kind {
                Fp8Kind::E4M3 => QuantFormat::Fp8E4M3,
                Fp8Kind::E5M2 => QuantFormat::Fp8E5M2,
            },
        }
    }

    /// The logical shape.
    pub fn shape(&self) -> Shape {
        match self {
            QuantizedWeight::Ggml { shape, .. } => shape.clone(),
            QuantizedWeight::FourBit(w) => w.shape.clone(),
            QuantizedWeight::Int8(w) => w.shape(),
            QuantizedWeight::Fp8(w) => w.shape(),
        }
    }

    /// Output features: the product of all dimensions but the last.
    pub fn rows(&self) -> usize {
        self.shape().rows()
    }

    /// Input features: the last dimension.
    pub fn cols(&self) -> usize {
        self.shape().last_dim()
    }

    /// Bytes of packed data plus scales (what a matvec streams).
    pub fn storage_bytes(&self) -> usize {
        match self {
            QuantizedWeight::Ggml { bytes, .. } => bytes.len(),
            QuantizedWeight::FourBit(w) => {
                w.packed.len()
                    + match &w.absmax {
                        crate::bnb::Absmax::F32(a) => 4 * a.len(),
                        crate::bnb::Absmax::Nested(n) => n.quantized.len() + 4 * n.absmax.len() + 1024,
                    }
                    + 64
            }
            QuantizedWeight::Int8(w) => w.data.len() + 4 * w.scb.len(),
            QuantizedWeight::Fp8(w) => {
                w.data.len()
                    + if let crate::fp8::Fp8Scale::Block { scale_inv, .. } = &w.scale { 4 * scale_inv.len() } else { 4 }
            }
        }
    }

    /// Checks internal consistency (sizes of data and state against the shape).
    pub fn validate(&self) -> Result<()> {
        match self {
            QuantizedWeight::Ggml { format, shape, bytes } => {
                let rb = format.row_bytes(shape.last_dim())?;
                let want = rb
                    .checked_mul(shape.rows())
                    .ok_or_else(|| Error::invalid(format!("{format} shape {shape} overflows")))?;
                if bytes.len() != want {
                    return Err(Error::invalid(format!(
                        "{format} weight of shape {shape}: {} bytes, expected {want}",
                        bytes.len()
                    )));
                }
                Ok(())
            }
            QuantizedWeight::FourBit(w) => w.validate(),
            QuantizedWeight::Int8(w) => w.validate(),
            QuantizedWeight::Fp8(w) => w.validate(),
        }
    }

    /// Dequantizes to f32 values (row-major, `shape()`).
    pub fn dequantize_f32(&self) -> Result<Vec<f32>> {
        self.validate()?;
        match self {
            QuantizedWeight::Ggml { format, bytes, .. } => ggml::dequantize(*format, bytes.as_slice()),
            QuantizedWeight::FourBit(w) => w.dequantize_f32(),
            QuantizedWeight::Int8(w) => w.dequantize_f32(),
            QuantizedWeight::Fp8(w) => w.dequantize_f32(),
        }
    }

    /// Dequantizes to an f32 CPU tensor of `shape()`.
    pub fn dequantize(&self) -> Result<Tensor> {
        Tensor::from_vec(self.dequantize_f32()?, self.shape())
    }

    /// The ggml weight as a tensor of its block dtype (a copy), e.g. to move to a GPU.
    pub fn to_ggml_tensor(&self) -> Result<Tensor> {
        match self {
            QuantizedWeight::Ggml { format, shape, bytes } => {
                Tensor::from_bytes(bytes.as_slice(), format.dtype(), shape.clone())
            }
            _ => Err(Error::invalid(format!("{} weight has no ggml tensor dtype", self.format()))),
        }
    }

    /// Decode matvec into a preallocated output, `y = W x` (`x`: `cols`, `y`: `rows`).
    /// The ggml formats quantize `x` once to 8-bit blocks and run integer dot products
    /// (`cpu::ggml_matvec_q8_into`, llama.cpp's scheme; use `matmul_into` with `m = 1`
    /// for f32 activations); NF4/FP4 quantize `x` and the code table to 8-bit codes, one
    /// activation scale per 8 elements, and run integer dot products
    /// (`cpu::fourbit_matvec_q8_into`, about bf16 precision; `cpu::fourbit_matvec_q16_into`
    /// is the 15-bit variant, about 3e-5, and `matmul_into` with `m = 1` keeps f32); FP8
    /// uses its fused f32 kernel; LLM.int8 its mixed-precision product.
    pub fn matvec_into(&self, kernel: CpuKernel, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.validate()?;
        let (rows, cols) = (self.rows(), self.cols());
        match self {
            QuantizedWeight::Ggml { format, bytes, .. } => {
                cpu::ggml_matvec_q8_into(kernel, *format, bytes.as_slice(), rows, cols, x, y)
            }
            QuantizedWeight::FourBit(w) => cpu::fourbit_matvec_q8_into(kernel, w, x, y),
            _ => self.matmul_into(kernel, x, 1, y),
        }
    }

    /// `y [m, rows] = x [m, cols] W^T` on host slices with the activations quantized as
    /// in [`Self::matvec_into`]: the fast CPU product for batched decode and prefill.
    /// For the ggml formats and NF4/FP4 every activation row is quantized once and
    /// dotted with integer kernels (`cpu::ggml_matmul_q8_into`,
    /// `cpu::fourbit_matmul_q8_into`), and row `j` of `y` equals `matvec_into` of
    /// `x[j]` bit for bit, whatever `m`. LLM.int8 and FP8 run [`Self::matmul_into`].
    /// [`Self::matmul_into`] keeps f32 activations (training, references).
    pub fn matmul_q8_into(&self, kernel: CpuKernel, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        self.validate()?;
        let (rows, cols) = (self.rows(), self.cols());
        match self {
            QuantizedWeight::Ggml { format, bytes, .. } => {
                cpu::ggml_matmul_q8_into(kernel, *format, bytes.as_slice(), rows, cols, x, m, y)
            }
            QuantizedWeight::FourBit(w) => cpu::fourbit_matmul_q8_into(kernel, w, x, m, y),
            _ => self.matmul_into(kernel, x, m, y),
        }
    }

    /// `y [m, rows] = x [m, cols] W^T` on host slices with f32 activations (exact up to
    /// f32 summation order; what the tensor API [`Self::matmul`] runs on the CPU).
    pub fn matmul_into(&self, kernel: CpuKernel, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        self.validate()?;
        let (rows, cols) = (self.rows(), self.cols());
        match self {
            QuantizedWeight::Ggml { format, bytes, .. } => {
                cpu::ggml_matmul_into(kernel, *format, bytes.as_slice(), rows, cols, x, m, y)
            }
            QuantizedWeight::FourBit(w) if m < cpu::F32_GEMM_MIN_M => {
                // A few activation rows: the fused f32 matvec per row (0.37 ms per
                // 4096x4096 NF4 row on two Zen 4 cores, against 4.1 ms for the
                // dequantizing prefill at m = 2).
                matvec_per_row("4-bit matmul", x, m, y, (rows, cols), |xj, yj| {
                    cpu::fourbit_matvec_into(kernel, w, xj, yj)
                })
            }
            QuantizedWeight::FourBit(w) => {
                let absmax = w.absmax_f32();
                cpu::rowwise_matmul_into(kernel, rows, cols, x, m, y, |r, buf| w.decode_range(&absmax, r * cols, buf))
            }
            QuantizedWeight::Int8(w) => {
                if y.len() != m * rows {
                    return Err(Error::invalid(format!(
                        "int8 matmul: y holds {} values, expected {m} x {rows}",
                        y.len()
                    )));
                }
                y.copy_from_slice(&w.matmul_f32_on(kernel, x, m, w.threshold)?);
                Ok(())
            }
            QuantizedWeight::Fp8(w) if m < cpu::F32_GEMM_MIN_M => {
                // A few activation rows: the fused matvec per row, as for NF4/FP4.
                matvec_per_row("fp8 matmul", x, m, y, (rows, cols), |xj, yj| {
                    cpu::fp8::fp8_matvec_into(kernel, w, xj, yj)
                })
            }
            QuantizedWeight::Fp8(w) => {
                cpu::rowwise_matmul_into(kernel, rows, cols, x, m, y, |r, buf| w.decode_row(r, buf))
            }
        }
    }

    /// Uploads the packed data and quant state to a GPU once; the returned weight's
    /// `matmul` reuses them. `NotImplementedOnDevice` for the CPU or a format without
    /// kernels on `device`.
    pub fn to_device(&self, device: &Device) -> Result<DeviceQuantizedWeight> {
        DeviceQuantizedWeight::upload(self, device)
    }

    /// `x [.., in] W^T -> [.., out]` on tensors. `x` is f32/f16/bf16; the output has the
    /// dtype of `x` (f32 accumulation). Validates, then dispatches on `x`'s device. A GPU
    /// `x` uploads the weight on every call: keep [`QuantizedWeight::to_device`]'s result
    /// instead when the weight is reused. LLM.int8 runs its mixed-precision outlier
    /// decomposition at the weight's threshold on every device: the GPU kernels compute
    /// the CPU's scheme (`Int8Weight::matmul_f32`; same int8 codes and i32 sums, only the
    /// f32 summation order of the outlier columns differs; see [`crate::gpu`]).
    pub fn matmul(&self, x: &Tensor) -> Result<Tensor> {
        if !x.dtype().is_compute_float() {
            return Err(Error::UnsupportedDType {
                op: "quant_matmul",
                dtype: x.dtype(),
                detail: "expected f32, f16 or bf16".into(),
            });
        }
        if x.rank() == 0 || x.shape().last_dim() != self.cols() {
            return Err(Error::ShapeMismatch { op: "quant_matmul", lhs: x.shape().clone(), rhs: self.shape() });
        }
        if !x.is_cpu() && crate::gpu::format_on_gpu(self.format(), &x.device()) {
            return self.to_device(&x.device())?.matmul(x);
        }
        dispatch_device("quant_matmul", &x.device())?;
        let m = x.shape().rows();
        let xs = x.to_f32_vec()?;
        let mut y = vec![0.0f32; m * self.rows()];
        self.matmul_into(CpuKernel::detect(), &xs, m, &mut y)?;
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank >= 1 checked") = self.rows();
        Tensor::from_f32(&y, x.dtype(), dims)
    }
}

/// `y [m, rows] = x [m, cols] W^T` as one `matvec(x[j], y[j])` per activation row, after
/// checking that `x` holds `m x cols` values and `y` `m x rows`.
fn matvec_per_row(
    what: &str,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    (rows, cols): (usize, usize),
    matvec: impl Fn(&[f32], &mut [f32]) -> Result<()>,
) -> Result<()> {
    if x.len() != m * cols || y.len() != m * rows {
        return Err(Error::invalid(format!(
            "{what}: x holds {} values (expected {m} x {cols}), y holds {} (expected {m} x {rows})",
            x.len(),
            y.len()
        )));
    }
    for (xj, yj) in x.chunks_exact(cols.max(1)).zip(y.chunks_exact_mut(rows.max(1))) {
        matvec(xj, yj)?;
    }
    Ok(())
}

fn two_d(shape: &Shape, format: QuantFormat) -> Result<(usize, usize)> {
    match shape.dims() {
        [r, c] => Ok((*r, *c)),
        _ => Err(Error::invalid(format!("{format} weights are 2D [out, in]; got shape {shape}"))),
    }
}

/// `x W^T` for a weight given as a tensor of a ggml dtype (`W [out, in]`).
/// A GPU `x` runs the GPU kernels (every ggml format; a host `w` is uploaded).
pub fn ggml_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if GgmlFormat::from_dtype(w.dtype()).is_ok_and(|f| crate::gpu::ggml_format_on_gpu(f, &x.device())) {
        return crate::gpu::ggml_matmul_on_device(w, x);
    }
    dispatch_device("ggml_matmul", &w.device())?;
    QuantizedWeight::from_ggml_tensor(w)?.matmul(x)
}

/// Whether a dtype is one this crate can wrap as a ggml weight.
pub fn is_ggml_dtype(dtype: DType) -> bool {
    GgmlFormat::from_dtype(dtype).is_ok()
}
