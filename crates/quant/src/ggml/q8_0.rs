//! ggml Q8_0: blocks of 32 elements in 34 bytes.
//!
//! Byte layout of one block: `d` (f16, little-endian, bytes 0..2) then 32 x i8 `qs`
//! (bytes 2..34); element `j` is `d * qs[j]`.
//!
//! Quantization (ggml's reference, as the `gguf` Python package implements it):
//! `d = max|x| / 127` in f32, `q = round_half_away(x * (1/d))` (q = 0 when d = 0), and
//! `d` is stored rounded to f16. Error bound: with `d` the stored f16 scale,
//! `|x - d*q| <= d/2 + 127 * |d - d_f32|` where the f16 rounding term is at most
//! `127 * 2^-11 * d`, so `|x - x'| <= d * (0.5 + 0.062)` per element.

use half::f16;

/// Elements per block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 34;

/// Quantizes 32 values into one 34-byte block.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, &v) in out[2..BLOCK_BYTES].iter_mut().zip(x) {
        *o = ((v * id).round() as i8) as u8;
    }
}

/// Dequantizes one block into 32 values.
pub fn dequantize_block(b: &[u8], out: &mut [f32]) {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    for (o, &q) in out.iter_mut().zip(&b[2..BLOCK_BYTES]) {
        *o = d * (q as i8) as f32;
    }
}

/// Scalar dot product of one block with 32 activations: `d * sum(q_j x_j)`.
#[inline]
pub fn dot_block(b: &[u8], x: &[f32]) -> f32 {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut s = 0.0f32;
    for (&q, &xv) in b[2..BLOCK_BYTES].iter().zip(x) {
        s += (q as i8) as f32 * xv;
    }
    d * s
}
