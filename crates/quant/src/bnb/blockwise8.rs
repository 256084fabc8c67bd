//! bitsandbytes 8-bit blockwise quantization with a 256-entry code table, as used for
//! double-quantized ("nested") 4-bit absmax values.
//!
//! Layout: one u8 index per value into a sorted 256-entry f32 code table; one f32
//! absmax per block of `blocksize` values (the last block may be partial). Value =
//! `code[q] * absmax[block]` (f32). Quantization: `q` = index of the code entry nearest
//! to `v / absmax` (lower index on exact ties). bitsandbytes' native CPU quantizer
//! is not strictly nearest: on near-ties it sometimes picks the neighbouring entry
//! (2 of 288 nested-absmax codes in our fixture differ by one step); loading its
//! files is unaffected (decoding is exact). The default table is bitsandbytes'
//! signed "dynamic" map ([`dynamic_map`]); loaders use the table stored in the file.
//! Error bound: half the gap between neighbouring code entries, times absmax.

use linattn_tensor::{Error, Result};

/// bitsandbytes' signed dynamic 8-bit map (`create_dynamic_map(signed=True,
/// max_exponent_bits=7, total_bits=8)`): for exponent `i` in 0..7, the midpoints of a
/// `linspace(0.1, 1, 2^i + 1)` scaled by `10^(i-6)`, with both signs; plus 0 and 1,
/// sorted. Computed in f32 like torch does.
pub fn dynamic_map() -> Vec<f32> {
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..7i32 {
        let items = (1usize << i) + 1;
        let bounds = linspace_f32(0.1, 1.0, items);
        let scale = 10f64.powi(i - 6) as f32;
        for w in bounds.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale * mean);
            data.push(-(scale * mean));
        }
    }
    data.push(0.0);
    data.push(1.0);
    while data.len() < 256 {
        data.push(0.0);
    }
    data.sort_by(|a, b| a.total_cmp(b));
    // -0.0 sorts before 0.0 under total_cmp; the table stores +0.0 paddings.
    data.iter().map(|&v| if v == 0.0 { 0.0 } else { v }).collect()
}

/// `torch.linspace(start, end, steps)` in f32 as torch's CPU kernel computes it: the
/// first half counts up from `start`, the second half down from `end`, each value one
/// fused multiply-add (single rounding).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| if i < half { step.mul_add(i as f32, start) } else { (-step).mul_add((steps - i - 1) as f32, end) })
        .collect()
}

/// Index of the entry of sorted `code` nearest to `v` (lower index on ties).
fn nearest_code(code: &[f32], v: f32) -> u8 {
    let pos = code.partition_point(|&c| c < v);
    if pos == 0 {
        return 0;
    }
    if pos >= code.len() {
        return (code.len() - 1) as u8;
    }
    let (lo, hi) = (code[pos - 1], code[pos]);
    if (v - lo) <= (hi - v) { (pos - 1) as u8 } else { pos as u8 }
}

/// Quantizes `values` blockwise against a sorted 256-entry `code`: returns the indices
/// and one absmax per block.
pub fn quantize(values: &[f32], code: &[f32], blocksize: usize) -> Result<(Vec<u8>, Vec<f32>)> {
    if code.len() != 256 || blocksize == 0 {
        return Err(Error::invalid(format!(
            "8-bit blockwise quantize: need a 256-entry code and a positive blocksize, got {} entries, blocksize {blocksize}",
            code.len()
        )));
    }
    let mut q = Vec::with_capacity(values.len());
    let mut absmax = Vec::with_capacity(values.len().div_ceil(blocksize));
    for block in values.chunks(blocksize) {
        let am = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        absmax.push(am);
        for &v in block {
            let normed = if am == 0.0 { 0.0 } else { (v / am).clamp(-1.0, 1.0) };
            q.push(nearest_code(code, normed));
        }
    }
    Ok((q, absmax))
}

/// Dequantizes blockwise 8-bit indices: `code[q] * absmax[i / blocksize]`.
pub fn dequantize(q: &[u8], absmax: &[f32], code: &[f32], blocksize: usize) -> Result<Vec<f32>> {
    if code.len() != 256 || blocksize == 0 || absmax.len() != q.len().div_ceil(blocksize) {
        return Err(Error::invalid(format!(
            "8-bit blockwise dequantize: {} values with blocksize {blocksize} need {} absmax values and a 256-entry code; got {} and {}",
            q.len(),
            q.len().div_ceil(blocksize.max(1)),
            absmax.len(),
            code.len()
        )));
    }
    Ok(q.iter().enumerate().map(|(i, &qi)| code[qi as usize] * absmax[i / blocksize]).collect())
}
