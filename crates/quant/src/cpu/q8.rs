//! 8-bit quantized activations for the integer decode path (llama.cpp's scheme).
//!
//! [`Q8Acts::quantize`] turns the f32 activation vector `x` into blocks of `block`
//! elements (32 for Q8_0/Q4_0 weights, like ggml's Q8_0; 256 for Q4_K and Q6_K, like
//! Q8_K) with one f32 scale `d = max|x_block| / 127` and `q = round_half_away(x / d)` in
//! `-127..=127`, plus the integer sums of every 32 codes (`bsums`, used for the weight
//! offsets of Q4_0 and the mins of Q4_K) and of every 16 (`bsums16`, the `-32` offset of
//! Q6_K's codes per scale group). This runs once per matvec; the per-row dot
//! products are then integer multiply-adds (exact in i32) scaled once per block.
//!
//! Added error: `|x - d*q| <= d/2` per element, so a dot product with a weight row `w`
//! (dequantized values) moves by at most `sum_j |w_j| * d(j) / 2` where `d(j)` is the
//! scale of the activation block holding element `j` (tested in `tests`).
//!
//! The scalar dots here define the result; the SIMD kernels in `x86` and `x86_512`
//! compute the same integer sums exactly and differ only in the order of the final f32
//! combination.

use half::f16;

use super::act_quant::{abs_max, codes_into, simd_versions};

use crate::ggml::GgmlFormat;
use crate::ggml::{q4_k, q6_k};

/// Activations quantized to 8-bit blocks.
#[derive(Clone, Debug, Default)]
pub struct Q8Acts {
    /// Elements per scale (32 or 256).
    pub block: usize,
    /// Codes, one per element.
    pub qs: Vec<i8>,
    /// One scale per block.
    pub d: Vec<f32>,
    /// Sum of the codes of every 32 elements.
    pub bsums: Vec<i32>,
    /// Sum of the codes of every 16 elements (Q6_K's scale groups; `16 * 127` fits i16).
    pub bsums16: Vec<i16>,
}

impl Q8Acts {
    /// Activation block used with a weight format (32, or 256 for K formats).
    pub fn block_for(format: GgmlFormat) -> usize {
        match format {
            GgmlFormat::Q4K | GgmlFormat::Q6K => 256,
            GgmlFormat::Q8_0 | GgmlFormat::Q4_0 => 32,
        }
    }

    /// Quantizes `x` (`x.len()` a multiple of `block`, `block` a multiple of 32).
    pub fn quantize(x: &[f32], block: usize) -> Q8Acts {
        let mut a = Q8Acts::default();
        a.quantize_from(x, block);
        a
    }

    /// As [`Q8Acts::quantize`], reusing this value's buffers.
    pub fn quantize_from(&mut self, x: &[f32], block: usize) {
        debug_assert!(block.is_multiple_of(32) && x.len().is_multiple_of(block));
        self.block = block;
        let n = x.len();
        self.qs.clear();
        self.qs.resize(n, 0);
        self.d.clear();
        self.d.resize(n / block, 0.0);
        self.bsums.clear();
        self.bsums.resize(n / 32, 0);
        self.bsums16.clear();
        self.bsums16.resize(n / 16, 0);
        quantize_blocks(x, block, &mut self.qs, &mut self.d, &mut self.bsums, &mut self.bsums16);
    }
}

simd_versions! {
    /// Fills the codes, scales and code sums of [`Q8Acts`] (slices of the final sizes).
    fn quantize_blocks(x: &[f32], block: usize, qs: &mut [i8], d: &mut [f32], bsums: &mut [i32], bsums16: &mut [i16])
        => quantize_blocks_body
}

#[inline(always)]
fn quantize_blocks_body(x: &[f32], block: usize, qs: &mut [i8], d: &mut [f32], bsums: &mut [i32], bsums16: &mut [i16]) {
    for ((xb, qb), db) in x.chunks_exact(block).zip(qs.chunks_exact_mut(block)).zip(d.iter_mut()) {
        let scale = abs_max(xb) / 127.0;
        let id = if scale == 0.0 { 0.0 } else { 1.0 / scale };
        *db = scale;
        codes_into(xb, id, 127.0, qb, |q| q as i8);
    }
    for (s16, q16) in bsums16.iter_mut().zip(qs.chunks_exact(16)) {
        *s16 = q16.iter().map(|&q| q as i16).sum();
    }
    for (s, pair) in bsums.iter_mut().zip(bsums16.chunks_exact(2)) {
        *s = pair[0] as i32 + pair[1] as i32;
    }
}

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Scalar dot of one ggml row (`row` = whole blocks) with quantized activations
/// covering the same columns: per block (super-block for the K formats) an exact i32
/// sum of weight codes times activation codes, scaled once in f32. Q6_K:
/// `sum_e scale(e/16) * (q_e - 32) * xq_e` per super-block (at most
/// `256 * 128 * 32 * 127 < 2^31`), times `d * d_x`.
pub fn row_dot_scalar(format: GgmlFormat, row: &[u8], a: &Q8Acts) -> f32 {
    match format {
        GgmlFormat::Q8_0 => {
            let mut s = 0.0f32;
            for (bi, b) in row.chunks_exact(34).enumerate() {
                let qx = &a.qs[bi * 32..bi * 32 + 32];
                let isum: i32 = b[2..34].iter().zip(qx).map(|(&w, &q)| (w as i8) as i32 * q as i32).sum();
                s += f16_at(b, 0) * a.d[bi] * isum as f32;
            }
            s
        }
        GgmlFormat::Q4_0 => {
            let mut s = 0.0f32;
            for (bi, b) in row.chunks_exact(18).enumerate() {
                let qx = &a.qs[bi * 32..bi * 32 + 32];
                let mut isum = 0i32;
                for j in 0..16 {
                    isum += ((b[2 + j] & 0x0F) as i32 - 8) * qx[j] as i32;
                    isum += ((b[2 + j] >> 4) as i32 - 8) * qx[j + 16] as i32;
                }
                s += f16_at(b, 0) * a.d[bi] * isum as f32;
            }
            s
        }
        GgmlFormat::Q4K => {
            let (mut s, mut smin) = (0.0f32, 0.0f32);
            for (bi, b) in row.chunks_exact(144).enumerate() {
                let qx = &a.qs[bi * 256..bi * 256 + 256];
                let (mut isum, mut msum) = (0i32, 0i32);
                for j in 0..8 {
                    let (sc, m) = q4_k::scale_min(j, &b[4..16]);
                    let (p, shift) = (j / 2, 4 * (j % 2));
                    let mut sub = 0i32;
                    for l in 0..32 {
                        sub += ((b[16 + 32 * p + l] >> shift) & 0x0F) as i32 * qx[32 * j + l] as i32;
                    }
                    isum += sc as i32 * sub;
                    msum += m as i32 * a.bsums[bi * 8 + j];
                }
                s += f16_at(b, 0) * a.d[bi] * isum as f32;
                smin += f16_at(b, 2) * a.d[bi] * msum as f32;
            }
            s - smin
        }
        GgmlFormat::Q6K => {
            let mut s = 0.0f32;
            for (bi, b) in row.chunks_exact(q6_k::BLOCK_BYTES).enumerate() {
                let qx = &a.qs[bi * 256..bi * 256 + 256];
                let mut isum = 0i32;
                for h in 0..2 {
                    for l in 0..32 {
                        for (k, q) in q6_k::unpack_quad(b, h, l).into_iter().enumerate() {
                            let e = 128 * h + l + 32 * k;
                            isum += (b[192 + e / 16] as i8) as i32 * q * qx[e] as i32;
                        }
                    }
                }
                s += f16_at(b, 208) * a.d[bi] * isum as f32;
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reconstruct_within_half_a_step() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        for block in [32, 256] {
            let a = Q8Acts::quantize(&x, block);
            assert_eq!(a.bsums.len(), 512 / 32);
            for (i, &v) in x.iter().enumerate() {
                let d = a.d[i / block];
                assert!((v - d * a.qs[i] as f32).abs() <= d / 2.0 * 1.0001, "elem {i}");
            }
            for (k, s) in a.bsums.iter().enumerate() {
                assert_eq!(*s, a.qs[32 * k..32 * k + 32].iter().map(|&q| q as i32).sum::<i32>());
            }
        }
        let z = Q8Acts::quantize(&[0.0; 32], 32);
        assert!(z.qs.iter().all(|&q| q == 0) && z.d[0] == 0.0);
    }
}
