//! 15-bit fixed-point activations and code table for the integer NF4/FP4 decode path.
//!
//! [`Q16Acts::quantize`] turns the f32 activation vector `x` into one i16 code per
//! element and one f32 scale per 8 elements (a "lane"): `dx = max|x_lane| / 16383`,
//! `xq = round_half_away(x / dx)` in `-16383..=16383`. [`Q16Code::new`] does the same for
//! the 16-entry bitsandbytes code table with one scale for the table:
//! `dt = max|code| / 16383`. A row dot is then, per lane of 8 elements, an exact i32 sum
//! of 8 products `tq[nibble] * xq` (at most `8 * 16383^2 < 2^31`, so it never overflows),
//! scaled in f32 by `absmax(block) * dx(lane)`, summed over lanes and multiplied by `dt`.
//! Lanes never straddle blocks (block sizes are powers of two >= 32).
//!
//! Added error against the f32 dot of the dequantized row with `x`: every element moves
//! by `absmax * |code * x - dt*tq * dx*xq| <= absmax * (|code| * dx/2 + |x| * dt/2 +
//! dt*dx/4)`, summed over the row ([`Q16Acts::error_bound`], tested in `cpu::tests`).
//! Relative to the operands that is about 3e-5 per element, below the bf16/fp16 rounding
//! of the bitsandbytes GPU kernels, and far below the 4-bit quantization error itself.
//!
//! The scalar dot here defines the result; the SIMD kernels (`x86_fourbit_q16`,
//! `x86_512_fourbit_q16`) compute the same i32 lane sums exactly and differ only in the
//! order of the final f32 combination.

use super::act_quant::{abs_max, codes_into, round_half_away, simd_versions};

/// Largest code magnitude of activations and table (`8 * 16383^2` fits in i32).
pub(crate) const Q16_MAX: f32 = 16383.0;

/// Elements per activation scale.
pub(crate) const Q16_LANE: usize = 8;

/// Activations quantized to 15-bit codes, one scale per 8 elements.
#[derive(Clone, Debug, Default)]
pub struct Q16Acts {
    /// Codes, one per element (`x.len()` of them).
    pub xq: Vec<i16>,
    /// One scale per 8 elements.
    pub dx: Vec<f32>,
}

/// `round_half_away(v * inv)` clamped to the code range (`v` finite).
fn code_of(v: f32, inv: f32) -> i16 {
    round_half_away(v * inv).clamp(-Q16_MAX, Q16_MAX) as i16
}

simd_versions! {
    /// Codes and scales of [`Q16Acts`] (slices of the final sizes).
    fn quantize_lanes(x: &[f32], xq: &mut [i16], dx: &mut [f32]) => quantize_lanes_body
}

#[inline(always)]
fn quantize_lanes_body(x: &[f32], xq: &mut [i16], dx: &mut [f32]) {
    for ((lane, codes), d) in x.chunks_exact(Q16_LANE).zip(xq.chunks_exact_mut(Q16_LANE)).zip(dx.iter_mut()) {
        let amax = abs_max(lane);
        let inv = if amax == 0.0 { 0.0 } else { Q16_MAX / amax };
        *d = amax / Q16_MAX;
        codes_into(lane, inv, Q16_MAX, codes, |q| q as i16);
    }
}

impl Q16Acts {
    /// Quantizes `x` (`x.len()` a multiple of 8, every value finite: callers fall back to
    /// the f32 path otherwise, so NaN and Inf propagate to the output).
    pub fn quantize(x: &[f32]) -> Q16Acts {
        debug_assert!(x.len().is_multiple_of(Q16_LANE) && x.iter().all(|v| v.is_finite()));
        let mut acts = Q16Acts { xq: vec![0; x.len()], dx: vec![0.0; x.len() / Q16_LANE] };
        quantize_lanes(x, &mut acts.xq, &mut acts.dx);
        acts
    }

    /// Bound on `|f32 dot - q16 dot|` for one row (before f32 rounding of either):
    /// `values` is the dequantized row (`code[q] * absmax`), `absmax_of(i)` the absmax of
    /// element `i`, `x` the f32 activations.
    pub fn error_bound(&self, code: &Q16Code, values: &[f32], absmax_of: impl Fn(usize) -> f32, x: &[f32]) -> f64 {
        let dt = code.scale as f64;
        values
            .iter()
            .zip(x)
            .enumerate()
            .map(|(i, (&w, &xv))| {
                let (am, dx) = (absmax_of(i).abs() as f64, self.dx[i / Q16_LANE] as f64);
                let code_mag = if am == 0.0 { 0.0 } else { (w as f64).abs() / am };
                am * (code_mag * dx / 2.0 + (xv as f64).abs() * dt / 2.0 + dt * dx / 4.0)
            })
            .sum()
    }
}

/// The 16-entry code table as 15-bit codes with one scale.
#[derive(Clone, Copy, Debug)]
pub struct Q16Code {
    /// `round_half_away(code / scale)`.
    pub tq: [i16; 16],
    /// `max|code| / 16383` (0 for an all-zero table).
    pub scale: f32,
}

impl Q16Code {
    /// Quantizes a finite code table.
    pub fn new(code: &[f32; 16]) -> Q16Code {
        debug_assert!(code.iter().all(|v| v.is_finite()));
        let amax = code.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inv = if amax == 0.0 { 0.0 } else { Q16_MAX / amax };
        Q16Code { tq: code.map(|v| code_of(v, inv)), scale: amax / Q16_MAX }
    }
}

/// Scalar dot of one bitsandbytes 4-bit row (whole blocks of `bs`, element `2j` in the
/// high nibble of byte `j`) with quantized activations covering the same columns.
pub fn fourbit_row_dot_q16_scalar(packed: &[u8], absmax: &[f32], code: &Q16Code, bs: usize, acts: &Q16Acts) -> f32 {
    let mut acc = 0.0f32;
    let lanes = packed.chunks_exact(Q16_LANE / 2).zip(acts.xq.chunks_exact(Q16_LANE)).zip(&acts.dx);
    for (lane, ((bytes, xq), &dx)) in lanes.enumerate() {
        let mut isum = 0i32;
        for (j, &byte) in bytes.iter().enumerate() {
            isum += code.tq[(byte >> 4) as usize] as i32 * xq[2 * j] as i32;
            isum += code.tq[(byte & 0x0F) as usize] as i32 * xq[2 * j + 1] as i32;
        }
        acc += isum as f32 * (absmax[lane * Q16_LANE / bs] * dx);
    }
    acc * code.scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reconstruct_within_half_a_step() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0 * (1 + i % 5) as f32).collect();
        let a = Q16Acts::quantize(&x);
        assert_eq!((a.xq.len(), a.dx.len()), (512, 64));
        for (i, &v) in x.iter().enumerate() {
            let d = a.dx[i / 8];
            assert!((v - d * a.xq[i] as f32).abs() <= d / 2.0 * 1.0001 + 1e-7 * v.abs(), "elem {i}");
            assert!(a.xq[i].unsigned_abs() <= 16383);
        }
        let z = Q16Acts::quantize(&[0.0; 8]);
        assert!(z.xq.iter().all(|&q| q == 0) && z.dx[0] == 0.0);
        let table = std::array::from_fn(|i| i as f32 / 7.5 - 1.0);
        let c = Q16Code::new(&table);
        assert_eq!((c.tq[0], c.tq[15]), (-16383, 16383));
        for (t, q) in table.iter().zip(c.tq) {
            assert!((t - c.scale * q as f32).abs() <= c.scale / 2.0 * 1.0001);
        }
    }

    #[test]
    fn extreme_lanes_do_not_overflow() {
        // Every product at its maximum magnitude and the same sign: 8 * 16383^2 < 2^31.
        let code = Q16Code::new(&[1.0; 16]);
        let acts = Q16Acts::quantize(&[-3.0; 64]);
        let s = fourbit_row_dot_q16_scalar(&[0x00; 32], &[2.0], &code, 64, &acts);
        assert!((s - (-3.0 * 2.0 * 64.0)).abs() < 1e-3, "{s}");
    }
}
