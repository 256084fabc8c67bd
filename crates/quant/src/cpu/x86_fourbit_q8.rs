//! AVX2 integer NF4/FP4 decode kernel (x86_64) with 8-bit activations and code table
//! ([`super::q8_fourbit`]), selected at run time as [`super::CpuKernel::Avx2Fma`].
//!
//! Layout: a row is read 32 packed bytes (64 elements, a "step") at a time. One shift
//! and two masks split the high and the low nibbles into byte indices, and `vpshufb`
//! (per 128-bit half, low 4 bits of each index) looks them up in the signed 8-bit table.
//! The activations come regrouped with 32-byte steps ([`FourBitQ8Lanes`]): one vector
//! of the high-nibble elements (`xq[2j]`), one of the low-nibble ones (`xq[2j + 1]`).
//! `vpmaddubsw` needs an unsigned operand, so it multiplies `|tq|` with `xq` carrying
//! the sign of `tq` (`vpsignb`); pairs of products stay within `2 * 127 * 127`, so the
//! i16 sums never saturate. `vpmaddwd` with ones widens them: dword `k` of both vectors
//! together is the exact i32 sum of elements `8k..8k+8` of the step, one q8 lane.
//! A partial last step (16 bytes) is copied into a zeroed buffer.
//!
//! Numerics: the i32 lane sums are exact; only the order of the f32 sum over lanes
//! differs from [`super::q8_fourbit::fourbit_row_dot_q8_scalar`].
//!
//! Every function here requires avx2 and fma (checked by `CpuKernel`).

use std::arch::x86_64::*;

use super::q8_fourbit::{FourBitQ8Code, FourBitQ8Lanes, Q8_LANE};
use super::x86_fourbit_q16::step_scales;

/// Packed bytes per step.
pub(crate) const STEP_BYTES: usize = 32;
/// Elements per step.
const STEP: usize = 2 * STEP_BYTES;

/// The 8 exact i32 lane sums of one step from its 32 packed bytes and its two
/// activation vectors.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lane_sums(words: __m256i, x_high: __m256i, x_low: __m256i, table: __m256i) -> __m256i {
    let nibble = _mm256_set1_epi8(0x0F);
    let low = _mm256_shuffle_epi8(table, _mm256_and_si256(words, nibble));
    let high = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(words), nibble));
    let pairs_high = _mm256_maddubs_epi16(_mm256_abs_epi8(high), _mm256_sign_epi8(x_high, high));
    let pairs_low = _mm256_maddubs_epi16(_mm256_abs_epi8(low), _mm256_sign_epi8(x_low, low));
    let ones = _mm256_set1_epi16(1);
    _mm256_add_epi32(_mm256_madd_epi16(pairs_high, ones), _mm256_madd_epi16(pairs_low, ones))
}

/// bitsandbytes 4-bit row dot with q8 activations laid out by [`FourBitQ8Lanes::new`]
/// with steps of [`STEP_BYTES`]: `packed` holds the row's bytes, `absmax` one scale per
/// block (the block size given to `FourBitQ8Lanes::new`, dividing the row), `code` the
/// quantized table.
#[target_feature(enable = "avx2,fma")]
pub fn fourbit_row_dot_q8(packed: &[u8], absmax: &[f32], code: &FourBitQ8Code, lanes: &FourBitQ8Lanes) -> f32 {
    let elems = 2 * packed.len();
    let bs = 1usize << lanes.block_shift;
    assert!(
        bs >= 32 && elems.is_multiple_of(bs) && absmax.len() == elems / bs,
        "4-bit q8 AVX2 row: {elems} elements, block {bs}, {} scales",
        absmax.len()
    );
    let steps = packed.len().div_ceil(STEP_BYTES);
    assert!(
        lanes.xq.len() >= steps * STEP && lanes.dx.len() >= steps * STEP / Q8_LANE,
        "4-bit q8 AVX2 row: activations laid out for another shape"
    );
    let signed_table: [u8; 16] = code.tq.map(|t| t as u8);
    // SAFETY: `signed_table` is 16 bytes; unaligned load is allowed.
    let table = unsafe { _mm256_broadcastsi128_si256(_mm_loadu_si128(signed_table.as_ptr() as *const __m128i)) };
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut padded = [0u8; STEP_BYTES];
    for s in 0..steps {
        let bytes = &packed[STEP_BYTES * s..(STEP_BYTES * s + STEP_BYTES).min(packed.len())];
        let src = if bytes.len() == STEP_BYTES {
            bytes
        } else {
            padded[..bytes.len()].copy_from_slice(bytes);
            &padded[..]
        };
        let x = &lanes.xq[STEP * s..STEP * s + STEP];
        let dx = &lanes.dx[8 * s..8 * s + 8];
        // SAFETY: `src` holds 32 bytes, `x` 64 i8 and `dx` 8 f32 (bounds-checked
        // slices); unaligned loads are allowed.
        let (words, x_high, x_low, dx) = unsafe {
            (
                _mm256_loadu_si256(src.as_ptr() as *const __m256i),
                _mm256_loadu_si256(x.as_ptr() as *const __m256i),
                _mm256_loadu_si256(x[STEP_BYTES..].as_ptr() as *const __m256i),
                _mm256_loadu_ps(dx.as_ptr()),
            )
        };
        let scale = _mm256_mul_ps(step_scales(absmax, s, bs), dx);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lane_sums(words, x_high, x_low, table)), scale, acc0);
        std::mem::swap(&mut acc0, &mut acc1);
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    _mm_cvtss_f32(_mm_add_ss(sum2, _mm_shuffle_ps::<1>(sum2, sum2))) * code.scale
}
