//! ggml Q4_0: blocks of 32 elements in 18 bytes.
//!
//! Byte layout of one block: `d` (f16, bytes 0..2) then 16 bytes `qs`; byte `j` holds
//! element `j` in its low nibble and element `j + 16` in its high nibble. Element value
//! is `d * (nibble - 8)`.
//!
//! Quantization (ggml's reference): `m` = the element of largest magnitude (first one on
//! ties), `d = m / -8`, `q = min(15, trunc(x/d + 8.5))`. So the extreme element maps to
//! nibble 0 and values span `[-8d, 7d]`. Error bound: `|x - x'| <= |d|/2` for elements
//! whose nibble is not clamped to 15, and `|d|` for those clamped (at most `|d| * 1`
//! since `x/d <= 8`), plus the f16 rounding of `d` (relative 2^-11, times at most 8).

use half::f16;

/// Elements per block.
pub const BLOCK_ELEMS: usize = 32;
/// Bytes per block.
pub const BLOCK_BYTES: usize = 18;

/// Quantizes 32 values into one 18-byte block.
pub fn quantize_block(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(x.len(), BLOCK_ELEMS);
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let nibble = |v: f32| -> u8 { ((v * id + 8.5).trunc() as i32).clamp(0, 15) as u8 };
    for j in 0..16 {
        out[2 + j] = nibble(x[j]) | (nibble(x[j + 16]) << 4);
    }
}

/// Dequantizes one block into 32 values.
pub fn dequantize_block(b: &[u8], out: &mut [f32]) {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    for j in 0..16 {
        let q = b[2 + j];
        out[j] = d * ((q & 0x0F) as i32 - 8) as f32;
        out[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
    }
}

/// Scalar dot product of one block with 32 activations.
#[inline]
pub fn dot_block(b: &[u8], x: &[f32]) -> f32 {
    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut s = 0.0f32;
    for j in 0..16 {
        let q = b[2 + j];
        s += ((q & 0x0F) as i32 - 8) as f32 * x[j];
        s += ((q >> 4) as i32 - 8) as f32 * x[j + 16];
    }
    d * s
}
