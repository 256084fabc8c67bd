//! FP8 weights: E4M3 ("fn": finite, max 448) and E5M2 (max 57344), one byte per
//! element, row-major `[rows, cols]`, with either a per-tensor scale or 128x128 block
//! scales (Hugging Face fine-grained FP8: `weight_scale_inv` f32
//! `[ceil(rows/128), ceil(cols/128)]`). In both cases the stored scale multiplies:
//! `W = fp8_to_f32(q) * scale`.
//!
//! Bit layouts: E4M3 = sign | 4 exponent bits (bias 7) | 3 mantissa bits; exponent 0 is
//! subnormal (`m * 2^-9`); `S.1111.111` is NaN; no infinities. E5M2 = sign | 5 exponent
//! (bias 15) | 2 mantissa, IEEE-like (exponent 31 = inf/NaN), subnormal `m * 2^-16`.
//! Encoding rounds to nearest even and saturates finite overflow to the largest finite
//! value (torch would give NaN/inf there; our quantizer never produces overflow since it
//! scales to the format maximum first).
//!
//! Quantization: `scale = max|x| / FMAX` per tensor or per block (1 when all zero),
//! `q = encode(x / scale)`. Error bound per element: `|x - x'| <= 2^-4 |x| + 2^-10 scale`
//! (E4M3) and `2^-3 |x| + 2^-17 scale` (E5M2).

use std::sync::OnceLock;

use linattn_tensor::{Error, Result, Shape};

use crate::bytes::ByteView;

/// The two FP8 encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fp8Kind {
    E4M3,
    E5M2,
}

impl Fp8Kind {
    /// Largest finite value.
    pub const fn max_value(self) -> f32 {
        match self {
            Fp8Kind::E4M3 => 448.0,
            Fp8Kind::E5M2 => 57344.0,
        }
    }

    /// The safetensors dtype name (`F8_E4M3` / `F8_E5M2`).
    pub const fn safetensors_name(self) -> &'static str {
        match self {
            Fp8Kind::E4M3 => "F8_E4M3",
            Fp8Kind::E5M2 => "F8_E5M2",
        }
    }

    /// (mantissa bits, exponent bias).
    const fn params(self) -> (u32, i32) {
        match self {
            Fp8Kind::E4M3 => (3, 7),
            Fp8Kind::E5M2 => (2, 15),
        }
    }

    /// Decodes one byte to f32 (exact).
    pub fn decode(self, b: u8) -> f32 {
        let (mbits, bias) = self.params();
        let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
        let ebits = 7 - mbits;
        let e = ((b >> mbits) & ((1 << ebits) - 1) as u8) as i32;
        let m = (b & ((1 << mbits) - 1) as u8) as i32;
        let emax = (1 << ebits) - 1;
        match self {
            Fp8Kind::E4M3 if e == emax && m == (1 << mbits) - 1 => return f32::NAN,
            Fp8Kind::E5M2 if e == emax => return if m == 0 { sign * f32::INFINITY } else { f32::NAN },
            _ => {}
        }
        let mag = if e == 0 {
            m as f32 * 2f32.powi(1 - bias - mbits as i32)
        } else {
            (1.0 + m as f32 / (1 << mbits) as f32) * 2f32.powi(e - bias)
        };
        sign * mag
    }

    /// [`Fp8Kind::decode`] of every byte, built once per kind (row decoding reads it
    /// instead of recomputing powers of two per element).
    pub fn decode_table(self) -> &'static [f32; 256] {
        static E4M3: OnceLock<[f32; 256]> = OnceLock::new();
        static E5M2: OnceLock<[f32; 256]> = OnceLock::new();
        let cell = match self {
            Fp8Kind::E4M3 => &E4M3,
            Fp8Kind::E5M2 => &E5M2,
        };
        cell.get_or_init(|| std::array::from_fn(|b| self.decode(b as u8)))
    }

    /// Encodes an f32 with round-to-nearest-even, saturating finite overflow.
    pub fn encode(self, v: f32) -> u8 {
        let (mbits, bias) = self.params();
        if v.is_nan() {
            return 0x7F;
        }
        let sign = if v.is_sign_negative() { 0x80u8 } else { 0 };
        let a = v.abs();
        let max = self.max_value();
        // Overflow threshold: halfway between max and the next (unrepresentable) step.
        let ulp_at_max = 2f32.powi((max.log2().floor() as i32) - mbits as i32);
        if a >= max + ulp_at_max / 2.0 {
            return sign | self.encode(max);
        }
        let min_normal = 2f32.powi(1 - bias);
        if a < min_normal {
            let q = (a / 2f32.powi(1 - bias - mbits as i32)).round_ties_even() as u8;
            return sign | q; // q == 1 << mbits is exactly the smallest normal
        }
        let bits = a.to_bits();
        let shift = 23 - mbits;
        let rounded = bits + ((1 << (shift - 1)) - 1) + ((bits >> shift) & 1);
        let r = rounded >> shift; // (f32 exponent << mbits) | mantissa
        let e32 = (r >> mbits) as i32 - 127;
        let m = r & ((1 << mbits) - 1);
        let e = (e32 + bias) as u32;
        let code = ((e << mbits) | m) as u8;
        if a >= max {
            return sign | self.encode_max_code();
        }
        sign | code
    }

    fn encode_max_code(self) -> u8 {
        match self {
            Fp8Kind::E4M3 => 0x7E,
            Fp8Kind::E5M2 => 0x7B,
        }
    }
}

/// How FP8 values are scaled back to real values.
#[derive(Clone, Debug, PartialEq)]
pub enum Fp8Scale {
    /// One multiplier for the whole tensor.
    PerTensor(f32),
    /// One multiplier per `block_rows x block_cols` tile (row-major tiles).
    Block { block_rows: usize, block_cols: usize, scale_inv: Vec<f32> },
}

/// An FP8 weight `[rows, cols]`.
#[derive(Clone, Debug)]
pub struct Fp8Weight {
    pub kind: Fp8Kind,
    pub rows: usize,
    pub cols: usize,
    pub data: ByteView,
    pub scale: Fp8Scale,
}

impl Fp8Weight {
    /// Quantizes a row-major `[rows, cols]` weight; `block = Some((128, 128))` gives HF
    /// fine-grained block scales, `None` a per-tensor scale.
    pub fn quantize(
        values: &[f32],
        rows: usize,
        cols: usize,
        kind: Fp8Kind,
        block: Option<(usize, usize)>,
    ) -> Result<Fp8Weight> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::invalid(format!("fp8 quantize: {} values do not fill [{rows}, {cols}]", values.len())));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { op: "fp8_quantize", tensor: "input".into(), index: i, value: values[i] });
        }
        let fmax = kind.max_value();
        let scale_of = |amax: f32| if amax > 0.0 { amax / fmax } else { 1.0 };
        let mut buffer = crate::bytes::WeightBuffer::zeroed(values.len());
        let data = buffer.as_mut_slice();
        let scale = match block {
            None => {
                let s = scale_of(values.iter().fold(0.0f32, |m, v| m.max(v.abs())));
                for (o, &v) in data.iter_mut().zip(values) {
                    *o = kind.encode(v / s);
                }
                Fp8Scale::PerTensor(s)
            }
            Some((br, bc)) => {
                if br == 0 || bc == 0 {
                    return Err(Error::invalid("fp8 quantize: block dimensions must be positive"));
                }
                let (nbr, nbc) = (rows.div_ceil(br), cols.div_ceil(bc));
                let mut scales = vec![0.0f32; nbr * nbc];
                for bi in 0..nbr {
                    for bj in 0..nbc {
                        let (r0, r1, c0, c1) = (bi * br, ((bi + 1) * br).min(rows), bj * bc, ((bj + 1) * bc).min(cols));
                        let mut amax = 0.0f32;
                        for r in r0..r1 {
                            amax = values[r * cols + c0..r * cols + c1].iter().fold(amax, |m, v| m.max(v.abs()));
                        }
                        let s = scale_of(amax);
                        scales[bi * nbc + bj] = s;
                        for r in r0..r1 {
                            for c in c0..c1 {
                                data[r * cols + c] = kind.encode(values[r * cols + c] / s);
                            }
                        }
                    }
                }
                Fp8Scale::Block { block_rows: br, block_cols: bc, scale_inv: scales }
            }
        };
        Ok(Fp8Weight { kind, rows, cols, data: buffer.into_view(), scale })
    }

    /// Checks sizes of data and scales.
    pub fn validate(&self) -> Result<()> {
        if self.rows.checked_mul(self.cols) != Some(self.data.len()) {
            return Err(Error::invalid(format!(
                "fp8 weight [{}, {}]: data holds {} bytes",
                self.rows,
                self.cols,
                self.data.len()
            )));
        }
        if let Fp8Scale::Block { block_rows, block_cols, scale_inv } = &self.scale {
            if *block_rows == 0 || *block_cols == 0 {
                return Err(Error::invalid("fp8 weight: zero block dimension"));
            }
            let want = self.rows.div_ceil(*block_rows) * self.cols.div_ceil(*block_cols);
            if scale_inv.len() != want {
                return Err(Error::invalid(format!(
                    "fp8 weight [{}, {}]: weight_scale_inv holds {} values, expected {want} for {block_rows}x{block_cols} blocks",
                    self.rows,
                    self.cols,
                    scale_inv.len()
                )));
            }
        }
        Ok(())
    }

    pub fn shape(&self) -> Shape {
        Shape::new([self.rows, self.cols])
    }

    /// Decodes row `r` to f32.
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        let bytes = self.row(r);
        let table = self.kind.decode_table();
        match &self.scale {
            Fp8Scale::PerTensor(s) => {
                for (o, &b) in out.iter_mut().zip(bytes) {
                    *o = table[b as usize] * s;
                }
            }
            Fp8Scale::Block { block_cols, .. } => {
                // Column block by column block: a division per element bound the f32
                // FP8 prefill (about 1 G values/s on a Zen 4 core).
                let srow = self.row_scales(r);
                for ((o, b), &s) in out.chunks_mut(*block_cols).zip(bytes.chunks(*block_cols)).zip(srow) {
                    for (o, &b) in o.iter_mut().zip(b) {
                        *o = table[b as usize] * s;
                    }
                }
            }
        }
    }

    /// The codes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        &self.data.as_slice()[r * self.cols..(r + 1) * self.cols]
    }

    /// The scales of row `r` along its columns: one per column block (block scales), or
    /// the single per-tensor scale.
    pub fn row_scales(&self, r: usize) -> &[f32] {
        match &self.scale {
            Fp8Scale::PerTensor(s) => std::slice::from_ref(s),
            Fp8Scale::Block { block_rows, block_cols, scale_inv } => {
                let nbc = self.cols.div_ceil(*block_cols);
                &scale_inv[(r / block_rows) * nbc..(r / block_rows + 1) * nbc]
            }
        }
    }

    /// Columns per scale along a row (`cols` for a per-tensor scale, at least 1).
    pub fn scale_span(&self) -> usize {
        match &self.scale {
            Fp8Scale::PerTensor(_) => self.cols.max(1),
            Fp8Scale::Block { block_cols, .. } => *block_cols,
        }
    }

    /// Dequantizes to f32 `[rows, cols]`.
    pub fn dequantize_f32(&self) -> Result<Vec<f32>> {
        self.validate()?;
        let mut out = vec![0.0f32; self.rows * self.cols];
        for r in 0..self.rows {
            self.decode_row(r, &mut out[r * self.cols..(r + 1) * self.cols]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block-by-block row decode equals `table[code] * scale_inv[block of (r, c)]`
    /// element by element, with partial row and column blocks.
    #[test]
    fn block_scaled_rows_decode_with_their_blocks_scales() {
        let (rows, cols) = (7, 300);
        let values: Vec<f32> =
            (0..rows * cols).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * (1 + i % 9) as f32).collect();
        let w = Fp8Weight::quantize(&values, rows, cols, Fp8Kind::E4M3, Some((4, 128))).unwrap();
        let Fp8Scale::Block { block_rows, block_cols, scale_inv } = &w.scale else { panic!("block scales") };
        assert_eq!((*block_rows, *block_cols), (4, 128));
        let table = Fp8Kind::E4M3.decode_table();
        let mut out = vec![f32::NAN; cols];
        for r in 0..rows {
            w.decode_row(r, &mut out);
            for (c, v) in out.iter().enumerate() {
                let want = table[w.row(r)[c] as usize] * scale_inv[(r / 4) * 3 + c / 128];
                assert_eq!(v.to_bits(), want.to_bits(), "row {r} column {c}");
            }
        }
    }

    #[test]
    fn encode_decode_round_trips_every_finite_code() {
        for kind in [Fp8Kind::E4M3, Fp8Kind::E5M2] {
            for b in 0u8..=255 {
                let v = kind.decode(b);
                if v.is_finite() && !(v == 0.0 && b & 0x80 != 0) {
                    assert_eq!(kind.encode(v), b, "{kind:?} code {b:#x} value {v}");
                }
            }
        }
        assert_eq!(Fp8Kind::E4M3.decode(0x7E), 448.0);
        assert_eq!(Fp8Kind::E5M2.decode(0x7B), 57344.0);
        assert_eq!(Fp8Kind::E4M3.decode(0x01), 2f32.powi(-9));
        assert_eq!(Fp8Kind::E4M3.encode(1e6), 0x7E);
        assert_eq!(Fp8Kind::E4M3.encode(-1e6), 0xFE);
    }

    #[test]
    fn encode_rounds_to_nearest_even() {
        // 1.0625 is halfway between 1.0 (0x38) and 1.125 (0x39): ties to even -> 1.0.
        assert_eq!(Fp8Kind::E4M3.encode(1.0625), 0x38);
        assert_eq!(Fp8Kind::E4M3.encode(1.0626), 0x39);
        // 1.1875 is halfway between 1.125 (odd) and 1.25 (even) -> 1.25.
        assert_eq!(Fp8Kind::E4M3.encode(1.1875), 0x3A);
    }
}
