//! ggml block quantization: Q8_0, Q4_0, Q4_K, Q6_K.
//!
//! A weight `W [rows, cols]` of a ggml type stores each row as `cols / block_elems`
//! consecutive blocks (blocks run along the last, "input" dimension). The per-format
//! modules hold the byte layout of one block, its reference quantizer (the algorithm
//! of ggml's `quantize_row_*_ref`, bit-exact with the `gguf` Python package where that
//! package has a quantizer), its dequantizer and a scalar fused dot product.
//! Here: format dispatch over whole rows and tensor-level helpers.

pub mod q4_0;
pub mod q4_k;
pub mod q6_k;
pub mod q8_0;

use linattn_tensor::{DType, Error, Result, Tensor};
use rayon::prelude::*;

/// One of the ggml block formats this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlFormat {
    Q8_0,
    Q4_0,
    Q4K,
    Q6K,
}

impl GgmlFormat {
    /// All formats.
    pub const ALL: [GgmlFormat; 4] = [GgmlFormat::Q8_0, GgmlFormat::Q4_0, GgmlFormat::Q4K, GgmlFormat::Q6K];

    /// The tensor dtype of this format.
    pub const fn dtype(self) -> DType {
        match self {
            GgmlFormat::Q8_0 => DType::Q8_0,
            GgmlFormat::Q4_0 => DType::Q4_0,
            GgmlFormat::Q4K => DType::Q4K,
            GgmlFormat::Q6K => DType::Q6K,
        }
    }

    /// The format of a block-quantized dtype.
    pub fn from_dtype(dtype: DType) -> Result<GgmlFormat> {
        Ok(match dtype {
            DType::Q8_0 => GgmlFormat::Q8_0,
            DType::Q4_0 => GgmlFormat::Q4_0,
            DType::Q4K => GgmlFormat::Q4K,
            DType::Q6K => GgmlFormat::Q6K,
            _ => {
                return Err(Error::UnsupportedDType {
                    op: "ggml",
                    dtype,
                    detail: "expected q8_0, q4_0, q4_k or q6_k".into(),
                });
            }
        })
    }

    /// The ggml type id used in GGUF files.
    pub const fn ggml_type_id(self) -> u32 {
        match self {
            GgmlFormat::Q4_0 => 2,
            GgmlFormat::Q8_0 => 8,
            GgmlFormat::Q4K => 12,
            GgmlFormat::Q6K => 14,
        }
    }

    /// Logical elements per block.
    pub const fn block_elems(self) -> usize {
        self.dtype().block_elems()
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        self.dtype().block_bytes()
    }

    /// Bytes of one row of `cols` elements; errors if `cols` is not a multiple of the block.
    pub fn row_bytes(self, cols: usize) -> Result<usize> {
        if !cols.is_multiple_of(self.block_elems()) {
            return Err(Error::invalid(format!(
                "{}: row of {cols} elements is not a multiple of the block size {}",
                self.dtype(),
                self.block_elems()
            )));
        }
        Ok(cols / self.block_elems() * self.block_bytes())
    }

    fn quantize_block(self, x: &[f32], out: &mut [u8]) {
        match self {
            GgmlFormat::Q8_0 => q8_0::quantize_block(x, out),
            GgmlFormat::Q4_0 => q4_0::quantize_block(x, out),
            GgmlFormat::Q4K => q4_k::quantize_block(x, out),
            GgmlFormat::Q6K => q6_k::quantize_block(x, out),
        }
    }

    pub(crate) fn dequantize_block(self, b: &[u8], out: &mut [f32]) {
        match self {
            GgmlFormat::Q8_0 => q8_0::dequantize_block(b, out),
            GgmlFormat::Q4_0 => q4_0::dequantize_block(b, out),
            GgmlFormat::Q4K => q4_k::dequantize_block(b, out),
            GgmlFormat::Q6K => q6_k::dequantize_block(b, out),
        }
    }

    /// Scalar fused dot product of one block with its activations.
    #[inline]
    pub(crate) fn dot_block_scalar(self, b: &[u8], x: &[f32]) -> f32 {
        match self {
            GgmlFormat::Q8_0 => q8_0::dot_block(b, x),
            GgmlFormat::Q4_0 => q4_0::dot_block(b, x),
            GgmlFormat::Q4K => q4_k::dot_block(b, x),
            GgmlFormat::Q6K => q6_k::dot_block(b, x),
        }
    }
}

impl std::fmt::Display for GgmlFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dtype().name())
    }
}

/// ggml's `nearest_int`: round half to even through the 1.5 * 2^23 trick (valid for
/// `|v| < 2^22`, which the quantizers guarantee).
#[inline(always)]
pub(crate) fn nearest_int(v: f32) -> i32 {
    let t = v + 12_582_912.0;
    (t.to_bits() & 0x007F_FFFF) as i32 - 0x0040_0000
}

/// Quantizes `values` (a whole number of blocks) into ggml blocks. Rows are
/// independent, so this runs in parallel over blocks. Non-finite input is an error.
pub fn quantize(format: GgmlFormat, values: &[f32]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; quantized_len(format, values.len())?];
    quantize_into(format, values, &mut out)?;
    Ok(out)
}

/// Bytes of `n` values quantized to `format` (an error unless they fill whole blocks).
pub fn quantized_len(format: GgmlFormat, n: usize) -> Result<usize> {
    let be = format.block_elems();
    if !n.is_multiple_of(be) {
        return Err(Error::invalid(format!("quantize {format}: {n} values do not fill whole blocks of {be}")));
    }
    Ok(n / be * format.block_bytes())
}

/// [`quantize`] into `out` (exactly [`quantized_len`] bytes).
pub fn quantize_into(format: GgmlFormat, values: &[f32], out: &mut [u8]) -> Result<()> {
    let want = quantized_len(format, values.len())?;
    if out.len() != want {
        return Err(Error::invalid(format!(
            "quantize {format}: output of {} bytes, expected {want} for {} values",
            out.len(),
            values.len()
        )));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { op: "quantize", tensor: "input".into(), index: i, value: values[i] });
    }
    let (be, bb) = (format.block_elems(), format.block_bytes());
    out.par_chunks_mut(bb * 64).zip(values.par_chunks(be * 64)).for_each(|(o, x)| {
        for (ob, xb) in o.chunks_mut(bb).zip(x.chunks(be)) {
            format.quantize_block(xb, ob);
        }
    });
    Ok(())
}

/// Dequantizes whole blocks into `out` (`out.len()` = blocks * block_elems).
pub fn dequantize_into(format: GgmlFormat, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let (be, bb) = (format.block_elems(), format.block_bytes());
    if !bytes.len().is_multiple_of(bb) || bytes.len() / bb * be != out.len() {
        return Err(Error::invalid(format!(
            "dequantize {format}: {} bytes are not {} whole blocks of {bb} bytes for {} outputs",
            bytes.len(),
            out.len() / be,
            out.len()
        )));
    }
    out.par_chunks_mut(be * 64).zip(bytes.par_chunks(bb * 64)).for_each(|(o, b)| {
        for (ob, bk) in o.chunks_mut(be).zip(b.chunks(bb)) {
            format.dequantize_block(bk, ob);
        }
    });
    Ok(())
}

/// Dequantizes whole blocks into a new vector.
pub fn dequantize(format: GgmlFormat, bytes: &[u8]) -> Result<Vec<f32>> {
    let bb = format.block_bytes();
    if !bytes.len().is_multiple_of(bb) {
        return Err(Error::invalid(format!(
            "dequantize {format}: {} bytes are not whole {bb}-byte blocks",
            bytes.len()
        )));
    }
    let mut out = vec![0.0f32; bytes.len() / bb * format.block_elems()];
    dequantize_into(format, bytes, &mut out)?;
    Ok(out)
}

/// Quantizes a float tensor (f32/f16/bf16, last dimension a multiple of the block) into
/// a CPU tensor of the ggml `dtype` with the same logical shape.
pub fn quantize_tensor(t: &Tensor, dtype: DType) -> Result<Tensor> {
    let format = GgmlFormat::from_dtype(dtype)?;
    if t.rank() == 0 || !t.shape().last_dim().is_multiple_of(format.block_elems()) {
        return Err(Error::invalid(format!(
            "quantize to {dtype}: tensor of shape {} needs a last dimension that is a multiple of {}",
            t.shape(),
            format.block_elems()
        )));
    }
    let values = t.to_f32_vec()?;
    let bytes = quantize(format, &values)?;
    Tensor::from_bytes(&bytes, dtype, t.shape().clone())
}

/// Dequantizes a ggml tensor (on any device; read back to the host) to an f32 CPU tensor.
pub fn dequantize_tensor(t: &Tensor) -> Result<Tensor> {
    let format = GgmlFormat::from_dtype(t.dtype())?;
    let host = t.to_device(&linattn_tensor::Device::Cpu)?;
    let values = dequantize(format, host.as_bytes()?)?;
    Tensor::from_vec(values, t.shape().clone())
}
