//! Quantized activations re-laid for the SIMD integer kernels (`x86`, `x86_512`), built
//! once per matvec from [`Q8Acts`] so the per-row loops need only full-width loads.
//!
//! Layout (Q8_0 / Q4_0): the row is cut into steps of `blocks_per_step` 32-element blocks
//! that one register pass handles; a step's codes are stored as one or more code vectors
//! of the register width in the order the kernel produces the weight bytes (Q4_0: the
//! low-nibble elements 0..16 of every block of the step, then the high ones 16..32). The
//! i32 lane `i` of a step multiplies bytes `4i..4i+4` of each code vector (`vpdpbusd`, or
//! `vpmaddubsw` + `vpmaddwd`) and belongs to one block; `scales` holds that block's `d_x`
//! per lane. The kernels feed unsigned weight bytes (Q8_0: `w + 128`; Q4_0: the stored
//! nibble, `w + 8`), so `offsets` holds per lane `-bias * (sum of the codes the lane
//! multiplies)`: adding it makes every lane the exact signed partial dot product.
//! Missing blocks of the last step are zero codes, zero scales and zero offsets.
//!
//! Q4_K (AVX-512): codes permuted within each super-block to sub-blocks 0,2,1,3,4,6,5,7
//! (the order a 64-byte load yields the nibbles), `d_x` per super-block, code sums as i16.

use super::q8::Q8Acts;
use crate::ggml::GgmlFormat;

/// Activations of one matvec laid out for one SIMD kernel (see the module header).
#[derive(Clone, Debug)]
pub(crate) struct Q8Lanes {
    /// Codes in the kernel's order, zero-padded to whole steps.
    pub(crate) codes: Vec<i8>,
    /// Q8_0 / Q4_0: `d_x` of the block of each lane. Q4_K: `d_x` per super-block.
    pub(crate) scales: Vec<f32>,
    /// Q8_0 / Q4_0: per lane, `-bias` times the sum of the codes the lane multiplies.
    pub(crate) offsets: Vec<i32>,
    /// Q4_K: code sums per 32 elements as i16 (`|bsum| <= 32 * 127`).
    pub(crate) bsums: Vec<i16>,
    /// Q8_0 / Q4_0: `d_x` per block (zero for the padding blocks of the last step); the
    /// AVX-512 Q4_0 kernel multiplies it with the weight scales before spreading both
    /// over the lanes, saving the 64-byte load of `scales` per step.
    pub(crate) block_scales: Vec<f32>,
}

/// Q4_0 code order within a step: low-nibble codes of every block, then high-nibble ones.
fn q4_0_order(codes: &mut Vec<i8>, step: &[i8]) {
    for half in [0, 16] {
        for block in step.chunks_exact(32) {
            codes.extend_from_slice(&block[half..half + 16]);
        }
    }
}

impl Q8Lanes {
    /// Lanes for the AVX-512 kernels of `format` (`acts` quantized with
    /// `Q8Acts::block_for(format)`): Q8_0 two blocks per 64-byte step, Q4_0 four.
    pub(crate) fn for_avx512(format: GgmlFormat, acts: &Q8Acts) -> Q8Lanes {
        match format {
            GgmlFormat::Q4K => {
                let mut codes = Vec::with_capacity(acts.qs.len());
                for sb in acts.qs.chunks_exact(256) {
                    for sub in [0, 2, 1, 3, 4, 6, 5, 7] {
                        codes.extend_from_slice(&sb[32 * sub..32 * sub + 32]);
                    }
                }
                let bsums = acts.bsums.iter().map(|&s| s as i16).collect();
                Q8Lanes { codes, scales: acts.d.clone(), offsets: Vec::new(), bsums, block_scales: Vec::new() }
            }
            GgmlFormat::Q8_0 => Q8Lanes::per_block(acts, 2, 64, 128, |codes, step| codes.extend_from_slice(step)),
            GgmlFormat::Q4_0 => Q8Lanes::per_block(acts, 4, 64, 8, q4_0_order),
            GgmlFormat::Q6K => unreachable!("Q6_K reads the activations in order (x86_q6_k)"),
        }
    }

    /// Lanes for the AVX2 Q4_0 kernel: two blocks per step, 32-byte code vectors.
    pub(crate) fn for_avx2_q4_0(acts: &Q8Acts) -> Q8Lanes {
        Q8Lanes::per_block(acts, 2, 32, 8, q4_0_order)
    }

    /// Q8_0 / Q4_0 lanes: `blocks_per_step` 32-blocks per step, code vectors of
    /// `vector_bytes` (`vector_bytes / 4` lanes per step), weight bias `bias`;
    /// `order_codes` appends one step's codes in the kernel's order.
    fn per_block(
        acts: &Q8Acts,
        blocks_per_step: usize,
        vector_bytes: usize,
        bias: i32,
        order_codes: impl Fn(&mut Vec<i8>, &[i8]),
    ) -> Q8Lanes {
        let step_bytes = 32 * blocks_per_step;
        let lanes_per_step = vector_bytes / 4;
        let lanes_per_block = lanes_per_step / blocks_per_step;
        let padded_blocks = acts.d.len().div_ceil(blocks_per_step) * blocks_per_step;
        let mut padded = acts.qs.clone();
        padded.resize(padded_blocks * 32, 0);
        let mut codes = Vec::with_capacity(padded.len());
        for step in padded.chunks_exact(step_bytes) {
            order_codes(&mut codes, step);
        }
        let mut scales = vec![0.0f32; padded_blocks * lanes_per_block];
        for (b, &d) in acts.d.iter().enumerate() {
            scales[lanes_per_block * b..lanes_per_block * (b + 1)].fill(d);
        }
        // Lane `i` of a step multiplies bytes `4i..4i+4` of each of the step's vectors.
        let mut offsets = vec![0i32; padded_blocks * lanes_per_block];
        for (step, lanes) in codes.chunks_exact(step_bytes).zip(offsets.chunks_exact_mut(lanes_per_step)) {
            for vector in step.chunks_exact(vector_bytes) {
                for (offset, quad) in lanes.iter_mut().zip(vector.chunks_exact(4)) {
                    *offset -= bias * quad.iter().map(|&q| q as i32).sum::<i32>();
                }
            }
        }
        let mut block_scales = acts.d.clone();
        block_scales.resize(padded_blocks, 0.0);
        Q8Lanes { codes, scales, offsets, bsums: Vec::new(), block_scales }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lane's offset plus the biased products of its codes is the signed product.
    #[test]
    fn offsets_cancel_the_weight_bias_lane_by_lane() {
        let x: Vec<f32> = (0..160).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let acts = Q8Acts::quantize(&x, 32);
        for (lanes, vector_bytes, bias) in [
            (Q8Lanes::for_avx512(GgmlFormat::Q8_0, &acts), 64, 128),
            (Q8Lanes::for_avx512(GgmlFormat::Q4_0, &acts), 64, 8),
            (Q8Lanes::for_avx2_q4_0(&acts), 32, 8),
        ] {
            assert_eq!(lanes.offsets.len(), lanes.scales.len());
            assert_eq!(lanes.codes.len() % vector_bytes, 0);
            let total: i32 = lanes.offsets.iter().sum();
            assert_eq!(total, -bias * acts.qs.iter().map(|&q| q as i32).sum::<i32>(), "bias {bias}");
            // Every code appears once (padding is zero).
            let mut sorted: Vec<i8> = lanes.codes.iter().copied().filter(|&q| q != 0).collect();
            let mut want: Vec<i8> = acts.qs.iter().copied().filter(|&q| q != 0).collect();
            sorted.sort();
            want.sort();
            assert_eq!(sorted, want);
        }
    }
}
