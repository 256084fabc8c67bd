//! LLM.int8 on a GPU: the device form of an [`Int8Weight`] and the size checks shared by
//! the WebGPU ([`super::int8_wgpu`]) and CUDA ([`super::int8_cuda`]) launches of
//! `kernels/{wgsl,cuda}/quant/int8_mixed.*`.
//!
//! Device form: CB with every row zero-padded to `words = ceil(cols / 4)` u32 words
//! (column c of row r is byte c % 4, little-endian, of word `r * words + c / 4`), so every
//! row starts on a word and the kernels take 4 codes at a time (`dot4I8Packed`,
//! `__dp4a`); SCB as f32 `[rows]`; the threshold of the weight
//! (`Int8Weight::threshold`, <= 0 or NaN: no outlier split).
//!
//! Per product the launches allocate on the device: the packed int8 codes of x
//! (`[m, words]` u32), `(s_x, k)` per row of x (`[m, 2]` f32) and the outlier column bits
//! (`ceil(cols / 32)` u32, zero-filled). Numerics: the scheme of
//! `Int8Weight::matmul_f32`, see the kernel headers.

use linattn_tensor::{DType, Device, Error, Result, Shape, Tensor};

use crate::bnb::Int8Weight;

/// Largest `cols` whose i32 sum of int8 products cannot overflow (`|CB| <= 128`: weights
/// from other files may hold -128; `|xq| <= 127`), the CPU path's limit.
pub(crate) const MAX_COLS: usize = crate::cpu::i8dot::MAX_I8_DOT_LEN;

/// An LLM.int8 weight on a device.
#[derive(Clone, Debug)]
pub(crate) struct Int8DeviceWeight {
    /// CB, rows padded to whole u32 words: a U8 tensor of `rows * words * 4` bytes (at
    /// least 4: an empty buffer cannot be bound).
    pub codes: Tensor,
    /// SCB, f32 `[rows]` (at least one value).
    pub scb: Tensor,
    /// Outlier threshold; the split is on when it is > 0.
    pub threshold: f32,
}

impl Int8DeviceWeight {
    /// Pads the rows of `w` to whole words and uploads codes and SCB to `device`.
    pub(crate) fn upload(w: &Int8Weight, device: &Device) -> Result<Int8DeviceWeight> {
        w.validate()?;
        let (rows, cols) = (w.rows, w.cols);
        let row_bytes = 4 * cols.div_ceil(4);
        let total = rows
            .checked_mul(row_bytes)
            .ok_or_else(|| Error::invalid(format!("int8 upload: [{rows}, {cols}] overflows")))?;
        let mut padded = vec![0u8; total.max(4)];
        if cols > 0 {
            for (dst, src) in padded.chunks_exact_mut(row_bytes).zip(w.data.as_slice().chunks_exact(cols)) {
                dst[..cols].copy_from_slice(src);
            }
        }
        let scb: Vec<f32> = if w.scb.is_empty() { vec![0.0] } else { w.scb.clone() };
        let scb_len = scb.len();
        Ok(Int8DeviceWeight {
            codes: Tensor::from_bytes(&padded, DType::U8, [padded.len()])?.to_device(device)?,
            scb: Tensor::from_vec(scb, [scb_len])?.to_device(device)?,
            threshold: w.threshold,
        })
    }

    /// Whether columns with `|x| >= threshold` are outliers (`threshold > 0`; NaN is not).
    pub(crate) fn split(&self) -> bool {
        self.threshold > 0.0
    }
}

/// Sizes of one product `x [.., cols] W^T`, checked against the weight's buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Int8Sizes {
    pub rows: usize,
    pub cols: usize,
    /// Rows of x (product of its leading dims).
    pub m: usize,
    /// u32 words per row of codes and of the int8 codes of x: `ceil(cols / 4)`.
    pub words: usize,
    /// u32 words of outlier column bits: `ceil(cols / 32)`.
    pub flag_words: usize,
    /// The output dims: x's with the last replaced by `rows`.
    pub out_dims: Vec<usize>,
}

impl Int8Sizes {
    /// Checks `x` (f32/f16/bf16, last dim = cols of `shape`) and the buffer sizes of `w`
    /// against the logical `shape` `[rows, cols]`; `Err` naming the problem otherwise.
    pub(crate) fn check(op: &'static str, w: &Int8DeviceWeight, shape: &Shape, x: &Tensor) -> Result<Int8Sizes> {
        let (rows, cols) = match shape.dims() {
            [r, c] => (*r, *c),
            _ => return Err(Error::invalid(format!("{op}: int8 weights are 2D [out, in]; got shape {shape}"))),
        };
        if x.rank() == 0 || x.shape().last_dim() != cols {
            return Err(Error::ShapeMismatch { op, lhs: x.shape().clone(), rhs: shape.clone() });
        }
        if !x.dtype().is_compute_float() {
            return Err(Error::UnsupportedDType { op, dtype: x.dtype(), detail: "expected f32, f16 or bf16".into() });
        }
        if cols > MAX_COLS {
            return Err(Error::invalid(format!(
                "{op}: {cols} input features exceed {MAX_COLS}, where the i32 sum of int8 products could overflow"
            )));
        }
        let words = cols.div_ceil(4);
        let code_bytes = rows
            .checked_mul(words)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| Error::invalid(format!("{op}: weight shape {shape} overflows")))?;
        let checks = [
            ("codes", w.codes.dtype() == DType::U8, w.codes.size_in_bytes(), code_bytes),
            ("SCB", w.scb.dtype() == DType::F32, w.scb.size_in_bytes(), 4 * rows),
        ];
        for (what, dtype_ok, have, want) in checks {
            if !dtype_ok || have < want {
                return Err(Error::invalid(format!(
                    "{op}: {what} hold {have} bytes, expected at least {want} (weight {shape})"
                )));
            }
        }
        let mut out_dims = x.dims().to_vec();
        *out_dims.last_mut().expect("rank >= 1 checked") = rows;
        Ok(Int8Sizes { rows, cols, m: x.shape().rows(), words, flag_words: cols.div_ceil(32), out_dims })
    }

    /// Whether the product is empty (the output is all zeros, nothing is launched).
    pub(crate) fn is_empty(&self) -> bool {
        self.m == 0 || self.rows == 0 || self.cols == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(rows: usize, cols: usize) -> Int8Weight {
        let values: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        Int8Weight::quantize(&values, rows, cols).unwrap()
    }

    #[test]
    fn rows_are_padded_to_words() {
        let w = weight(3, 5);
        let dev = Int8DeviceWeight::upload(&w, &Device::Cpu).unwrap();
        let bytes = dev.codes.as_bytes().unwrap();
        assert_eq!(bytes.len(), 3 * 8);
        for r in 0..3 {
            assert_eq!(&bytes[r * 8..r * 8 + 5], &w.data.as_slice()[r * 5..r * 5 + 5]);
            assert_eq!(&bytes[r * 8 + 5..r * 8 + 8], &[0, 0, 0]);
        }
        assert_eq!(dev.scb.to_f32_vec().unwrap(), w.scb);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let w = weight(4, 6);
        let dev = Int8DeviceWeight::upload(&w, &Device::Cpu).unwrap();
        let shape = Shape::new([4, 6]);
        let x = Tensor::from_f32(&[0.0; 12], DType::F32, [2, 6]).unwrap();
        let sizes = Int8Sizes::check("test", &dev, &shape, &x).unwrap();
        assert_eq!((sizes.words, sizes.flag_words, sizes.out_dims.clone()), (2, 1, vec![2, 4]));
        let wrong = Tensor::from_f32(&[0.0; 10], DType::F32, [2, 5]).unwrap();
        assert!(matches!(Int8Sizes::check("test", &dev, &shape, &wrong), Err(Error::ShapeMismatch { .. })));
        let ints = Tensor::from_bytes(&[0u8; 6], DType::U8, [1, 6]).unwrap();
        assert!(matches!(Int8Sizes::check("test", &dev, &shape, &ints), Err(Error::UnsupportedDType { .. })));
        // A shape larger than the buffers hold.
        let err = Int8Sizes::check("test", &dev, &Shape::new([9, 6]), &x).unwrap_err().to_string();
        assert!(err.contains("codes"), "{err}");
        assert!(Int8Sizes::check("test", &dev, &Shape::new([4, 2, 3]), &x).is_err());
        let wide = Tensor::from_f32(&vec![0.0; MAX_COLS + 1], DType::F32, [1, MAX_COLS + 1]).unwrap();
        assert!(Int8Sizes::check("test", &dev, &Shape::new([1, MAX_COLS + 1]), &wide).is_err());
    }
}
