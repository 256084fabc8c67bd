//! 8-bit activations and code table for the fast integer NF4/FP4 decode path.
//!
//! [`FourBitQ8Acts::quantize`] turns the f32 activation vector `x` into one i8 code per
//! element and one f32 scale per 8 elements (a "lane"): `dx = max|x_lane| / 127`,
//! `xq = round_half_away(x / dx)` in `-127..=127`. [`FourBitQ8Code::new`] does the same
//! for the 16-entry bitsandbytes code table with one scale for the table:
//! `dt = max|code| / 127`. A row dot is then, per lane, an exact i32 sum of 8 products
//! `tq[nibble] * xq`, scaled in f32 by `absmax(block) * dx(lane)`, summed over lanes and
//! multiplied by `dt`: the scheme of [`super::q16`] with 8-bit instead of 15-bit codes,
//! so the SIMD kernels can use byte shuffles and `vpdpbusd` (four products per i32 lane
//! and instruction) instead of word permutes and `vpdpwssd` (two).
//!
//! Added error against the f32 dot of the dequantized row with `x`: every element moves
//! by at most `absmax * (|code| * dx/2 + |x| * dt/2 + dt*dx/4)` (the [`super::q16`] bound
//! with `127` for `16383`; [`FourBitQ8Acts::error_bound`]). That is about 4e-3 of the
//! lane's largest activation times the block absmax per element: the size of a bf16
//! rounding of the operands, and well below the 4-bit quantization error of the weight
//! (half a step of the NF4 table is 0.04 to 0.14 of the absmax).
//!
//! The scalar dot here defines the result. The SIMD kernels (`x86_512_fourbit_q8`,
//! `x86_fourbit_q8`) read the activations regrouped by `FourBitQ8Lanes` and differ
//! from it only in f32 rounding: the AVX2 kernel computes the same i32 lane sums and
//! combines them in another order; the AVX-512 kernel's lane sums carry a known offset
//! (`128 * sum(xq)` over the lane, see there) that is taken off once per block in f32.

use super::act_quant::{abs_max, codes_into, round_half_away, simd_versions};
use super::aligned::LineOffsetBuffer;

/// Largest code magnitude of activations and table.
pub(crate) const Q8_CODE_MAX: f32 = 127.0;

/// Elements per activation scale.
pub(crate) const Q8_LANE: usize = 8;

/// Activations quantized to 8-bit codes, one scale per 8 elements.
#[derive(Clone, Debug, Default)]
pub struct FourBitQ8Acts {
    /// Codes, one per element (`x.len()` of them).
    pub xq: Vec<i8>,
    /// One scale per 8 elements.
    pub dx: Vec<f32>,
}

/// `round_half_away(v * inv)` clamped to the code range (`v` finite).
fn code_of(v: f32, inv: f32) -> i8 {
    round_half_away(v * inv).clamp(-Q8_CODE_MAX, Q8_CODE_MAX) as i8
}

simd_versions! {
    /// Codes and scales of [`FourBitQ8Acts`] (slices of the final sizes).
    fn quantize_lanes(x: &[f32], xq: &mut [i8], dx: &mut [f32]) => quantize_lanes_body
}

#[inline(always)]
fn quantize_lanes_body(x: &[f32], xq: &mut [i8], dx: &mut [f32]) {
    for ((lane, codes), d) in x.chunks_exact(Q8_LANE).zip(xq.chunks_exact_mut(Q8_LANE)).zip(dx.iter_mut()) {
        let amax = abs_max(lane);
        let inv = if amax == 0.0 { 0.0 } else { Q8_CODE_MAX / amax };
        *d = amax / Q8_CODE_MAX;
        codes_into(lane, inv, Q8_CODE_MAX, codes, |q| q as i8);
    }
}

impl FourBitQ8Acts {
    /// Quantizes `x` (`x.len()` a multiple of 8, every value finite: callers fall back to
    /// the f32 path otherwise, so NaN and Inf propagate to the output).
    pub fn quantize(x: &[f32]) -> FourBitQ8Acts {
        debug_assert!(x.len().is_multiple_of(Q8_LANE) && x.iter().all(|v| v.is_finite()));
        let mut acts = FourBitQ8Acts { xq: vec![0; x.len()], dx: vec![0.0; x.len() / Q8_LANE] };
        quantize_lanes(x, &mut acts.xq, &mut acts.dx);
        acts
    }

    /// Bound on `|f32 dot - q8 dot|` for one row (before f32 rounding of either):
    /// `values` is the dequantized row (`code[q] * absmax`), `absmax_of(i)` the absmax of
    /// element `i`, `x` the f32 activations.
    pub fn error_bound(
        &self,
        code: &FourBitQ8Code,
        values: &[f32],
        absmax_of: impl Fn(usize) -> f32,
        x: &[f32],
    ) -> f64 {
        let dt = code.scale as f64;
        values
            .iter()
            .zip(x)
            .enumerate()
            .map(|(i, (&w, &xv))| {
                let (am, dx) = (absmax_of(i).abs() as f64, self.dx[i / Q8_LANE] as f64);
                let code_mag = if am == 0.0 { 0.0 } else { (w as f64).abs() / am };
                am * (code_mag * dx / 2.0 + (xv as f64).abs() * dt / 2.0 + dt * dx / 4.0)
            })
            .sum()
    }
}

/// The 16-entry code table as 8-bit codes with one scale.
#[derive(Clone, Copy, Debug)]
pub struct FourBitQ8Code {
    /// `round_half_away(code / scale)`, in `-127..=127`.
    pub tq: [i8; 16],
    /// `max|code| / 127` (0 for an all-zero table).
    pub scale: f32,
    /// `tq + 128` as unsigned bytes (`1..=255`), the AVX-512 kernel's form.
    pub offset_table: [u8; 16],
}

impl FourBitQ8Code {
    /// Quantizes a finite code table.
    pub fn new(code: &[f32; 16]) -> FourBitQ8Code {
        debug_assert!(code.iter().all(|v| v.is_finite()));
        let amax = code.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let inv = if amax == 0.0 { 0.0 } else { Q8_CODE_MAX / amax };
        let tq = code.map(|v| code_of(v, inv));
        FourBitQ8Code { tq, scale: amax / Q8_CODE_MAX, offset_table: tq.map(|t| (t as i16 + 128) as u8) }
    }
}

/// Scalar dot of one bitsandbytes 4-bit row (whole blocks of `bs`, element `2j` in the
/// high nibble of byte `j`) with quantized activations covering the same columns.
pub fn fourbit_row_dot_q8_scalar(
    packed: &[u8],
    absmax: &[f32],
    code: &FourBitQ8Code,
    bs: usize,
    acts: &FourBitQ8Acts,
) -> f32 {
    let mut acc = 0.0f32;
    let lanes = packed.chunks_exact(Q8_LANE / 2).zip(acts.xq.chunks_exact(Q8_LANE)).zip(&acts.dx);
    for (lane, ((bytes, xq), &dx)) in lanes.enumerate() {
        let mut isum = 0i32;
        for (j, &byte) in bytes.iter().enumerate() {
            isum += code.tq[(byte >> 4) as usize] as i32 * xq[2 * j] as i32;
            isum += code.tq[(byte & 0x0F) as usize] as i32 * xq[2 * j + 1] as i32;
        }
        acc += isum as f32 * (absmax[lane * Q8_LANE / bs] * dx);
    }
    acc * code.scale
}

/// Activations of one 4-bit q8 matvec laid out for the SIMD kernels, which read `group`
/// packed bytes (`2 * group` elements) per step: for step `s`, bytes
/// `2 * group * s..+group` hold `xq[2 * group * s + 2j]` (the elements in the high
/// nibbles of the step's bytes) and the next `group` bytes `xq[2 * group * s + 2j + 1]`
/// (the low nibbles); `dx` holds the lane scales; both are zero past the end of `x`, and
/// start on a cache line, so no 64-byte load splits across two (one Zen 4 thread,
/// 14336x4096 NF4: 24-25 GB/s, against 21.5 with the codes 16 bytes into a line and 22.5
/// at 32). `block_offsets[b] = 128 * sum over the lanes of block b of
/// dx * sum(xq)`, the term the AVX-512 kernel takes off per block.
pub(crate) struct FourBitQ8Lanes {
    pub(crate) xq: LineOffsetBuffer<i8>,
    pub(crate) dx: LineOffsetBuffer<f32>,
    pub(crate) block_offsets: Vec<f32>,
    /// log2 of the block size.
    pub(crate) block_shift: u32,
    /// For 128-element groups: the block of lane `k` counted from the group's first.
    pub(crate) lane_block: [i32; 16],
}

impl FourBitQ8Lanes {
    /// Lays out `acts` for steps of `group` packed bytes (a power of two >= 4) and
    /// blocks of `bs` elements (a power of two >= 8).
    pub(crate) fn new(acts: &FourBitQ8Acts, group: usize, bs: usize) -> FourBitQ8Lanes {
        assert!(group.is_power_of_two() && group >= 4, "step of {group} bytes: expected a power of two >= 4");
        assert!(bs.is_power_of_two() && bs >= Q8_LANE, "4-bit block size {bs}: expected a power of two >= 8");
        let step = 2 * group;
        let padded = acts.xq.len().div_ceil(step) * step;
        let mut xq = LineOffsetBuffer::zeroed(padded, 0);
        for (codes, out) in acts.xq.chunks(step).zip(xq.chunks_exact_mut(step)) {
            let (high, low) = out.split_at_mut(group);
            for (pair, (h, l)) in codes.chunks_exact(2).zip(high.iter_mut().zip(low.iter_mut())) {
                (*h, *l) = (pair[0], pair[1]);
            }
        }
        let mut dx = LineOffsetBuffer::zeroed(padded / Q8_LANE, 0);
        dx[..acts.dx.len()].copy_from_slice(&acts.dx);
        let mut block_offsets = vec![0.0f64; acts.xq.len().div_ceil(bs)];
        let lane_shift = (bs / Q8_LANE).trailing_zeros();
        for (lane, (codes, &d)) in acts.xq.chunks_exact(Q8_LANE).zip(&acts.dx).enumerate() {
            let sum: i32 = codes.iter().map(|&q| q as i32).sum();
            block_offsets[lane >> lane_shift] += 128.0 * d as f64 * sum as f64;
        }
        FourBitQ8Lanes {
            xq,
            dx,
            block_offsets: block_offsets.into_iter().map(|v| v as f32).collect(),
            block_shift: bs.trailing_zeros(),
            lane_block: std::array::from_fn(|k| (Q8_LANE * k / bs.min(128)) as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_reconstruct_within_half_a_step() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0 * (1 + i % 5) as f32).collect();
        let a = FourBitQ8Acts::quantize(&x);
        assert_eq!((a.xq.len(), a.dx.len()), (512, 64));
        for (i, &v) in x.iter().enumerate() {
            let d = a.dx[i / 8];
            assert!((v - d * a.xq[i] as f32).abs() <= d / 2.0 * 1.0001 + 1e-7 * v.abs(), "elem {i}");
            assert!(a.xq[i].unsigned_abs() <= 127);
        }
        let z = FourBitQ8Acts::quantize(&[0.0; 8]);
        assert!(z.xq.iter().all(|&q| q == 0) && z.dx[0] == 0.0);
        let table = std::array::from_fn(|i| i as f32 / 7.5 - 1.0);
        let c = FourBitQ8Code::new(&table);
        assert_eq!((c.tq[0], c.tq[15]), (-127, 127));
        for ((t, q), u) in table.iter().zip(c.tq).zip(c.offset_table) {
            assert!((t - c.scale * q as f32).abs() <= c.scale / 2.0 * 1.0001);
            assert_eq!(u as i32, q as i32 + 128);
        }
    }

    #[test]
    fn lanes_split_high_and_low_nibble_elements_per_step() {
        let x: Vec<f32> = (0..192).map(|i| (i % 23) as f32 - 11.0).collect();
        let acts = FourBitQ8Acts::quantize(&x);
        for group in [32usize, 64] {
            let lanes = FourBitQ8Lanes::new(&acts, group, 64);
            assert_eq!(lanes.xq.len(), 192usize.div_ceil(2 * group) * 2 * group);
            assert_eq!(lanes.xq.as_ptr() as usize % 64, 0);
            let mut expected = vec![0i8; lanes.xq.len()];
            for (e, &q) in acts.xq.iter().enumerate() {
                let (s, i) = (e / (2 * group), e % (2 * group));
                expected[2 * group * s + (i % 2) * group + i / 2] = q;
            }
            assert_eq!(&lanes.xq[..], &expected[..], "steps of {group} bytes");
            assert_eq!(lanes.block_offsets.len(), 3);
            for (b, &off) in lanes.block_offsets.iter().enumerate() {
                let want: f64 = (8 * b..8 * b + 8)
                    .map(|lane| {
                        let sum: i32 = acts.xq[8 * lane..8 * lane + 8].iter().map(|&q| q as i32).sum();
                        128.0 * acts.dx[lane] as f64 * sum as f64
                    })
                    .sum();
                assert!((off as f64 - want).abs() <= 1e-6 * want.abs().max(1.0), "block {b}: {off} vs {want}");
            }
        }
    }

    #[test]
    fn extreme_lanes_do_not_overflow() {
        let code = FourBitQ8Code::new(&[1.0; 16]);
        let acts = FourBitQ8Acts::quantize(&[-3.0; 64]);
        let s = fourbit_row_dot_q8_scalar(&[0x00; 32], &[2.0], &code, 64, &acts);
        assert!((s - (-3.0 * 2.0 * 64.0)).abs() < 1e-3, "{s}");
    }
}
