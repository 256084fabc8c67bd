//! 8-bit activations and code table for the fast integer NF4/FP4 decode path.
//!
//! The scheme of [`super::lane_codes`] with `MAX = 127`: one i8 code per activation, one
//! f32 scale per 8 (`dx = max|x_lane| / 127`), the code table as i8 codes with one scale
//! (`dt = max|code| / 127`), exact i32 sums of 8 products per lane. 8-bit codes let the
//! SIMD kernels use byte shuffles and `vpdpbusd` (four products per i32 lane and
//! instruction) instead of the word permutes and `vpdpwssd` (two) of [`super::q16`].
//!
//! Added error against the f32 dot of the dequantized row with `x`: every element moves
//! by at most `absmax * (|code| * dx/2 + |x| * dt/2 + dt*dx/4)`
//! ([`lane_codes::LaneActs::error_bound`]). That is about 4e-3 of the
//! lane's largest activation times the block absmax per element: the size of a bf16
//! rounding of the operands, and well below the 4-bit quantization error of the weight
//! (half a step of the NF4 table is 0.04 to 0.14 of the absmax).
//!
//! The scalar dot here defines the result. The SIMD kernels (`x86_512_fourbit_q8`,
//! `x86_fourbit_q8`) read the activations regrouped by `FourBitQ8Lanes` and differ
//! from it only in f32 rounding: the AVX2 kernel computes the same i32 lane sums and
//! combines them in another order; the AVX-512 kernel's lane sums carry a known offset
//! (`128 * sum(xq)` over the lane, see there) that is taken off once per block in f32.

use super::aligned::LineOffsetBuffer;
use super::lane_codes::{self, LaneActs, LaneTable};

/// Elements per activation scale.
pub(crate) const Q8_LANE: usize = lane_codes::LANE;

/// Activations quantized to 8-bit codes, one scale per 8 elements.
pub type FourBitQ8Acts = LaneActs<i8>;

/// The 16-entry code table as 8-bit codes with one scale.
pub type FourBitQ8Code = LaneTable<i8>;

/// Scalar dot of one bitsandbytes 4-bit row (whole blocks of `bs`, element `2j` in the
/// high nibble of byte `j`) with 8-bit activations covering the same columns.
pub fn fourbit_row_dot_q8_scalar(
    packed: &[u8],
    absmax: &[f32],
    code: &FourBitQ8Code,
    bs: usize,
    acts: &FourBitQ8Acts,
) -> f32 {
    lane_codes::fourbit_row_dot_scalar(packed, absmax, code, bs, acts)
}

/// Activations of one 4-bit q8 matvec laid out for the SIMD kernels, which read `group`
/// packed bytes (`2 * group` elements) per step: for step `s`, bytes
/// `2 * group * s..+group` hold `xq[2 * group * s + 2j]` (the elements in the high
/// nibbles of the step's bytes) and the next `group` bytes `xq[2 * group * s + 2j + 1]`
/// (the low nibbles); `dx` holds the lane scales; both are zero past the end of `x`, and
/// start on a cache line, so no 64-byte load splits across two (one Zen 4 thread,
/// 14336x4096 NF4, one weight copy, partly L3-resident: 24-25 GB/s, against 21.5 with
/// the codes 16 bytes into a line and 22.5 at 32). `block_offsets[b] = 128 * sum over
/// the lanes of block b of dx * sum(xq)`, the term the AVX-512 kernel takes off per
/// block.
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
}
