//! LLM.int8 (bitsandbytes `Linear8bitLt`): row-wise int8 weights with mixed-precision
//! outlier decomposition.
//!
//! Layout: `weight` int8 `[out, in]` (`CB`), `SCB` f32 `[out]` = `max|W[r, :]|`, and
//! `weight_format` u8 = 0 ("row"). Value `W[r, c] = CB[r, c] * SCB[r] / 127`, computed
//! as bitsandbytes does: `(CB * SCB) * (1/127 as f32)`.
//! Quantization: `CB = round_half_even(W * (127 / SCB))` in f32 (0 for an all-zero
//! row). Error bound: `|W - W'| <= SCB / 254` per element (+1 ulp).
//!
//! Matmul `y = x W^T` with threshold `t` (6.0 default; 0 disables the split): the
//! input columns where any row has `|x| >= t`, or a NaN or Inf at any threshold, are
//! outlier columns, computed in f32 against the dequantized weight columns (so a
//! non-finite activation reaches its row of y as in a dense product). The other columns are quantized row-wise
//! (`s_x = max|x[t, c]|` over non-outlier entries, `xq = round(x * 127 / s_x)`),
//! multiplied int8 x int8 -> i32, and rescaled by `s_x * SCB / 127^2`. The two parts
//! are summed. Extra error of the int8 part: `|dy| <= (s_x/254) * sum|W'| +
//! (SCB/254) * sum|x|`-style rounding of `x` (bounded by half an int8 step per
//! element of `x`), documented and tested in `docs/formats.md`. The GPU kernels
//! (`crate::gpu`, `kernels/{wgsl,cuda}/quant/int8_mixed.*`) compute this same scheme.

use linattn_tensor::{Error, Result, Shape};
use rayon::prelude::*;

use crate::bytes::ByteView;
use crate::cpu::CpuKernel;
use crate::cpu::i8dot::{MAX_I8_DOT_LEN, i8_dot};

/// bitsandbytes' reciprocal of 127 as stored in its dequantize kernel.
const INV_127: f32 = 7.874_016e-3;
/// bitsandbytes' 1/127^2 in `int8_mm_dequant`.
const INV_127_SQ: f32 = 6.200_124e-5;

/// An LLM.int8 weight `[out, in]`.
#[derive(Clone, Debug)]
pub struct Int8Weight {
    pub rows: usize,
    pub cols: usize,
    /// `rows * cols` i8 values (row-major) as bytes.
    pub data: ByteView,
    /// Row absmax (`SCB`), one per output row.
    pub scb: Vec<f32>,
    /// Outlier threshold used by [`Int8Weight::matmul_f32`] (6.0 default).
    pub threshold: f32,
}

impl Int8Weight {
    /// Row-wise quantization of a row-major `[rows, cols]` weight.
    pub fn quantize(values: &[f32], rows: usize, cols: usize) -> Result<Int8Weight> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::invalid(format!("int8 quantize: {} values do not fill [{rows}, {cols}]", values.len())));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { op: "int8_quantize", tensor: "input".into(), index: i, value: values[i] });
        }
        let mut buffer = crate::bytes::WeightBuffer::zeroed(values.len());
        let data = buffer.as_mut_slice();
        let mut scb = vec![0.0f32; rows];
        for r in 0..rows {
            let row = &values[r * cols..(r + 1) * cols];
            let s = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            scb[r] = s;
            if s > 0.0 {
                let k = 127.0 / s;
                for (o, &v) in data[r * cols..(r + 1) * cols].iter_mut().zip(row) {
                    *o = ((v * k).round_ties_even().clamp(-127.0, 127.0) as i8) as u8;
                }
            }
        }
        Ok(Int8Weight { rows, cols, data: buffer.into_view(), scb, threshold: 6.0 })
    }

    /// Checks sizes.
    pub fn validate(&self) -> Result<()> {
        if self.rows.checked_mul(self.cols) != Some(self.data.len()) || self.scb.len() != self.rows {
            return Err(Error::invalid(format!(
                "int8 weight [{}, {}]: weight holds {} bytes and SCB {} values (expected {} and {})",
                self.rows,
                self.cols,
                self.data.len(),
                self.scb.len(),
                self.rows.saturating_mul(self.cols),
                self.rows
            )));
        }
        Ok(())
    }

    pub fn shape(&self) -> Shape {
        Shape::new([self.rows, self.cols])
    }

    fn row_i8(&self, r: usize) -> &[i8] {
        bytemuck::cast_slice(&self.data.as_slice()[r * self.cols..(r + 1) * self.cols])
    }

    /// Decodes row `r` to f32.
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        let s = self.scb[r];
        for (o, &q) in out.iter_mut().zip(self.row_i8(r)) {
            *o = (q as f32 * s) * INV_127;
        }
    }

    /// Dequantizes to f32 `[rows, cols]`.
    pub fn dequantize_f32(&self) -> Result<Vec<f32>> {
        self.validate()?;
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (r, o) in out.chunks_mut(self.cols.max(1)).enumerate().take(self.rows) {
            self.decode_row(r, o);
        }
        Ok(out)
    }

    /// Mixed-precision matmul `y [m, rows] = x [m, cols] W^T` (see the module docs);
    /// `threshold <= 0` quantizes every column. Runs the fastest CPU kernel.
    pub fn matmul_f32(&self, x: &[f32], m: usize, threshold: f32) -> Result<Vec<f32>> {
        self.matmul_f32_on(CpuKernel::detect(), x, m, threshold)
    }

    /// [`Int8Weight::matmul_f32`] on a given CPU kernel (the i8 x i8 row dots, exact on
    /// every kernel, see [`crate::cpu::i8dot`]).
    pub fn matmul_f32_on(&self, kernel: CpuKernel, x: &[f32], m: usize, threshold: f32) -> Result<Vec<f32>> {
        self.validate()?;
        if !kernel.is_available() {
            return Err(Error::invalid(format!("CPU kernel {kernel:?} is not supported by this CPU")));
        }
        let (rows, cols) = (self.rows, self.cols);
        if x.len() != m * cols {
            return Err(Error::invalid(format!("int8 matmul: x holds {} values, expected {m} x {cols}", x.len())));
        }
        if cols > MAX_I8_DOT_LEN {
            return Err(Error::invalid(format!(
                "int8 matmul: {cols} columns exceed the {MAX_I8_DOT_LEN} whose i8 dot products fit in i32"
            )));
        }
        // NaN and Inf entries are outliers at any threshold: the f32 part carries them to
        // the output (as a dense product would) instead of rounding them to a code.
        let is_outlier_entry = |v: f32| !v.is_finite() || (threshold > 0.0 && v.abs() >= threshold);
        let mut outlier_col = vec![false; cols];
        for t in 0..m {
            for c in 0..cols {
                if is_outlier_entry(x[t * cols + c]) {
                    outlier_col[c] = true;
                }
            }
        }
        let outliers: Vec<usize> = (0..cols).filter(|&c| outlier_col[c]).collect();
        // Row-wise int8 quantization of x with outlier entries excluded from the absmax
        // and outlier columns zeroed.
        let mut xq = vec![0i8; m * cols];
        let mut sx = vec![0.0f32; m];
        for t in 0..m {
            let row = &x[t * cols..(t + 1) * cols];
            let s = row.iter().filter(|v| !is_outlier_entry(**v)).fold(0.0f32, |a, v| a.max(v.abs()));
            sx[t] = s;
            if s > 0.0 {
                let k = 127.0 / s;
                for c in 0..cols {
                    if !outlier_col[c] {
                        xq[t * cols + c] = (row[c] * k).round_ties_even().clamp(-127.0, 127.0) as i8;
                    }
                }
            }
        }
        let mut y = vec![0.0f32; m * rows];
        // Parallel over output rows r; each task writes column r of y via a local buffer.
        let cols_out: Vec<Vec<f32>> = (0..rows)
            .into_par_iter()
            .map(|r| {
                let wq = self.row_i8(r);
                let mut w_outlier = Vec::with_capacity(outliers.len());
                for &c in &outliers {
                    w_outlier.push((wq[c] as f32 * self.scb[r]) * INV_127);
                }
                (0..m)
                    .map(|t| {
                        let xr = &xq[t * cols..(t + 1) * cols];
                        let acc = i8_dot(kernel, wq, xr);
                        let mut v = acc as f32 * (sx[t] * self.scb[r]) * INV_127_SQ;
                        for (k, &c) in outliers.iter().enumerate() {
                            v += x[t * cols + c] * w_outlier[k];
                        }
                        v
                    })
                    .collect()
            })
            .collect();
        for (r, col) in cols_out.iter().enumerate() {
            for t in 0..m {
                y[t * rows + r] = col[t];
            }
        }
        Ok(y)
    }
}
