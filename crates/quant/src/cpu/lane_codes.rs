//! The integer NF4/FP4 decode scheme shared by the 15-bit ([`super::q16`]) and the 8-bit
//! ([`super::q8_fourbit`]) paths, generic over the code type (`i16` or `i8`,
//! [`LaneCode`]).
//!
//! [`LaneActs::quantize`] turns the f32 activations `x` into one integer code per element
//! and one f32 scale per 8 elements (a "lane"): `dx = max|x_lane| / MAX`,
//! `xq = round_half_away(x / dx)` in `-MAX..=MAX`. [`LaneTable::new`] does the same for
//! the 16-entry bitsandbytes code table with one scale (`dt = max|code| / MAX`). A row
//! dot ([`fourbit_row_dot_scalar`]) is, per lane, an exact i32 sum of 8 products
//! `tq[nibble] * xq` (at most `8 * MAX^2 < 2^31`), scaled in f32 by
//! `absmax(block) * dx(lane)`, summed over lanes and multiplied by `dt`. Lanes never
//! straddle blocks (block sizes are powers of two >= 32).
//!
//! Added error against the f32 dot of the dequantized row with `x`: every element moves
//! by `absmax * |code * x - dt*tq * dx*xq| <= absmax * (|code| * dx/2 + |x| * dt/2 +
//! dt*dx/4)`, summed over the row ([`LaneActs::error_bound`], tested in `cpu::tests_int4`).

use super::act_quant::{abs_max, codes_into, round_half_away, simd_versions};

/// Elements per activation scale.
pub(crate) const LANE: usize = 8;

/// An integer code type of the scheme: its largest magnitude and its vectorized
/// activation quantizer.
pub trait LaneCode: Copy + Default + std::fmt::Debug + Into<i32> + 'static {
    /// Largest code magnitude (`8 * MAX^2` fits in i32).
    const MAX: f32;
    /// `v` (an integer within `-MAX..=MAX`) as a code.
    fn narrow(v: i32) -> Self;
    /// Fills `xq` and `dx` (slices of the final sizes) for `x`.
    fn quantize_lanes(x: &[f32], xq: &mut [Self], dx: &mut [f32]);
}

/// Codes and scales of one run of lanes; `$body` instantiates it per code type so the
/// narrowing is inlined into the vectorized loop.
#[inline(always)]
fn quantize_lanes_body<T: LaneCode>(x: &[f32], xq: &mut [T], dx: &mut [f32]) {
    for ((lane, codes), d) in x.chunks_exact(LANE).zip(xq.chunks_exact_mut(LANE)).zip(dx.iter_mut()) {
        let amax = abs_max(lane);
        let inv = if amax == 0.0 { 0.0 } else { T::MAX / amax };
        *d = amax / T::MAX;
        codes_into(lane, inv, T::MAX, codes, T::narrow);
    }
}

#[inline(always)]
fn quantize_lanes_i16(x: &[f32], xq: &mut [i16], dx: &mut [f32]) {
    quantize_lanes_body(x, xq, dx)
}

#[inline(always)]
fn quantize_lanes_i8(x: &[f32], xq: &mut [i8], dx: &mut [f32]) {
    quantize_lanes_body(x, xq, dx)
}

simd_versions! {
    fn quantize_lanes_i16_simd(x: &[f32], xq: &mut [i16], dx: &mut [f32]) => quantize_lanes_i16
}

simd_versions! {
    fn quantize_lanes_i8_simd(x: &[f32], xq: &mut [i8], dx: &mut [f32]) => quantize_lanes_i8
}

impl LaneCode for i16 {
    const MAX: f32 = 16383.0;
    #[inline(always)]
    fn narrow(v: i32) -> i16 {
        v as i16
    }
    fn quantize_lanes(x: &[f32], xq: &mut [i16], dx: &mut [f32]) {
        quantize_lanes_i16_simd(x, xq, dx)
    }
}

impl LaneCode for i8 {
    const MAX: f32 = 127.0;
    #[inline(always)]
    fn narrow(v: i32) -> i8 {
        v as i8
    }
    fn quantize_lanes(x: &[f32], xq: &mut [i8], dx: &mut [f32]) {
        quantize_lanes_i8_simd(x, xq, dx)
    }
}

/// Activations quantized to integer codes, one scale per 8 elements.
#[derive(Clone, Debug, Default)]
pub struct LaneActs<T> {
    /// Codes, one per element (`x.len()` of them).
    pub xq: Vec<T>,
    /// One scale per 8 elements.
    pub dx: Vec<f32>,
}

impl<T: LaneCode> LaneActs<T> {
    /// Quantizes `x` (`x.len()` a multiple of 8, every value finite: callers fall back to
    /// the f32 path otherwise, so NaN and Inf propagate to the output).
    pub fn quantize(x: &[f32]) -> LaneActs<T> {
        debug_assert!(x.len().is_multiple_of(LANE) && x.iter().all(|v| v.is_finite()));
        let mut acts = LaneActs { xq: vec![T::default(); x.len()], dx: vec![0.0; x.len() / LANE] };
        T::quantize_lanes(x, &mut acts.xq, &mut acts.dx);
        acts
    }

    /// Bound on `|f32 dot - integer dot|` for one row (before f32 rounding of either):
    /// `values` is the dequantized row (`code[q] * absmax`), `absmax_of(i)` the absmax of
    /// element `i`, `x` the f32 activations.
    pub fn error_bound(&self, code: &LaneTable<T>, values: &[f32], absmax_of: impl Fn(usize) -> f32, x: &[f32]) -> f64 {
        let dt = code.scale as f64;
        values
            .iter()
            .zip(x)
            .enumerate()
            .map(|(i, (&w, &xv))| {
                let (am, dx) = (absmax_of(i).abs() as f64, self.dx[i / LANE] as f64);
                let code_mag = if am == 0.0 { 0.0 } else { (w as f64).abs() / am };
                am * (code_mag * dx / 2.0 + (xv as f64).abs() * dt / 2.0 + dt * dx / 4.0)
            })
            .sum()
    }
}

/// The 16-entry code table as integer codes with one scale.
#[derive(Clone, Copy, Debug)]
pub struct LaneTable<T> {
    /// `round_half_away(code / scale)`, in `-MAX..=MAX`.
    pub tq: [T; 16],
    /// `max|code| / MAX` (0 for an all-zero table).
    pub scale: f32,
}

impl<T: LaneCode> LaneTable<T> {
    /// Quantizes a finite code table.
    pub fn new(code: &[f32; 16]) -> LaneTable<T> {
        debug_assert!(code.iter().all(|v| v.is_finite()));
        let amax = code.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inv = if amax == 0.0 { 0.0 } else { T::MAX / amax };
        let tq = code.map(|v| T::narrow(round_half_away(v * inv).clamp(-T::MAX, T::MAX) as i32));
        LaneTable { tq, scale: amax / T::MAX }
    }
}

/// Scalar dot of one bitsandbytes 4-bit row (whole blocks of `bs`, element `2j` in the
/// high nibble of byte `j`) with quantized activations covering the same columns: the
/// definition every SIMD kernel of the scheme reproduces.
pub fn fourbit_row_dot_scalar<T: LaneCode>(
    packed: &[u8],
    absmax: &[f32],
    code: &LaneTable<T>,
    bs: usize,
    acts: &LaneActs<T>,
) -> f32 {
    let mut acc = 0.0f32;
    let lanes = packed.chunks_exact(LANE / 2).zip(acts.xq.chunks_exact(LANE)).zip(&acts.dx);
    for (lane, ((bytes, xq), &dx)) in lanes.enumerate() {
        let mut isum = 0i32;
        for (j, &byte) in bytes.iter().enumerate() {
            isum += code.tq[(byte >> 4) as usize].into() * xq[2 * j].into();
            isum += code.tq[(byte & 0x0F) as usize].into() * xq[2 * j + 1].into();
        }
        acc += isum as f32 * (absmax[lane * LANE / bs] * dx);
    }
    acc * code.scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes_reconstruct_within_half_a_step<T: LaneCode>() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0 * (1 + i % 5) as f32).collect();
        let a = LaneActs::<T>::quantize(&x);
        assert_eq!((a.xq.len(), a.dx.len()), (512, 64));
        for (i, &v) in x.iter().enumerate() {
            let (d, q) = (a.dx[i / 8], a.xq[i].into());
            assert!((v - d * q as f32).abs() <= d / 2.0 * 1.0001 + 1e-7 * v.abs(), "MAX {}: elem {i}", T::MAX);
            assert!(q.unsigned_abs() as f32 <= T::MAX);
        }
        let z = LaneActs::<T>::quantize(&[0.0; 8]);
        assert!(z.xq.iter().all(|&q| q.into() == 0) && z.dx[0] == 0.0);
        let table = std::array::from_fn(|i| i as f32 / 7.5 - 1.0);
        let c = LaneTable::<T>::new(&table);
        assert_eq!((c.tq[0].into() as f32, c.tq[15].into() as f32), (-T::MAX, T::MAX));
        for (t, q) in table.iter().zip(c.tq) {
            assert!((t - c.scale * q.into() as f32).abs() <= c.scale / 2.0 * 1.0001);
        }
    }

    /// Every product at its maximum magnitude and the same sign: `8 * MAX^2 < 2^31`.
    fn extreme_lanes_do_not_overflow<T: LaneCode>() {
        let code = LaneTable::<T>::new(&[1.0; 16]);
        let acts = LaneActs::<T>::quantize(&[-3.0; 64]);
        let s = fourbit_row_dot_scalar(&[0x00; 32], &[2.0], &code, 64, &acts);
        assert!((s - (-3.0 * 2.0 * 64.0)).abs() < 1e-3, "MAX {}: {s}", T::MAX);
    }

    #[test]
    fn both_code_widths_quantize_and_sum_exactly() {
        codes_reconstruct_within_half_a_step::<i16>();
        codes_reconstruct_within_half_a_step::<i8>();
        extreme_lanes_do_not_overflow::<i16>();
        extreme_lanes_do_not_overflow::<i8>();
    }
}
