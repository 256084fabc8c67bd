//! AVX2 integer NF4/FP4 decode kernel (x86_64): 15-bit activations and code table
//! ([`super::q16`]), selected at run time as [`super::CpuKernel::Avx2Fma`].
//!
//! Layout: a row is read 32 packed bytes (64 elements, a "step") at a time. Low and
//! high nibbles are split into byte indices (`and`, one 16-bit shift); `vpshufb` looks
//! them up in two 16-byte tables holding the low and the high bytes of the i16 codes,
//! and `vpunpck{l,h}bw` joins the two halves into words. Because the unpacks work per
//! 128-bit half, word `w` of the "low half" vectors holds byte `w` (`w < 8`) or
//! `w + 8`, and of the "high half" vectors byte `w + 8` or `w + 16`; the low nibbles
//! give element `2j + 1` of byte `j`, the high nibbles element `2j`. `vpmaddwd` with
//! activations re-laid to match ([`Q16Lanes2`]) gives dwords of 4 consecutive elements,
//! and one `vphaddd` of the two halves' sums yields 8 dwords in natural lane order:
//! dword `k` is the exact i32 sum of elements `8k..8k+8` of the step, as in
//! [`super::q16`]. A partial last step (16 bytes) is copied into a zeroed buffer.
//!
//! Numerics: the i32 lane sums are exact; only the order of the f32 sum over lanes
//! differs from [`super::q16::fourbit_row_dot_q16_scalar`].
//!
//! Every function here requires avx2 and fma (checked by `CpuKernel`).

use std::arch::x86_64::*;

use super::q16::{Q16_LANE, Q16Acts, Q16Code};

/// Elements per step (32 packed bytes).
const STEP: usize = 64;

/// Element (within its step) that word `w` (0..16) of activation vector `v` multiplies:
/// vectors 0 and 1 are the low-half unpacks of the low and the high nibbles, 2 and 3 the
/// high-half ones.
fn source_element(v: usize, w: usize) -> usize {
    let byte = if v < 2 {
        if w < 8 { w } else { w + 8 }
    } else if w < 8 {
        w + 8
    } else {
        w + 16
    };
    2 * byte + usize::from(v.is_multiple_of(2))
}

/// Activations of one 4-bit q16 matvec for this kernel: for step `s`, vector `v` (0..4),
/// word `w` (0..16): `xq[64s + source_element(v, w)]` (zero past the end); lane scales
/// padded with zeros to whole steps; the block size.
pub(crate) struct Q16Lanes2 {
    xq: Vec<i16>,
    dx: Vec<f32>,
    bs: usize,
}

impl Q16Lanes2 {
    /// Regroups quantized activations for blocks of `bs` (a power of two >= 32).
    pub(crate) fn new(acts: &Q16Acts, bs: usize) -> Q16Lanes2 {
        assert!(bs.is_power_of_two() && bs >= 32, "4-bit block size {bs}: expected a power of two >= 32");
        let steps = acts.xq.len().div_ceil(STEP);
        let mut xq = vec![0i16; steps * STEP];
        for s in 0..steps {
            for v in 0..4 {
                for w in 0..16 {
                    xq[STEP * s + 16 * v + w] = acts.xq.get(STEP * s + source_element(v, w)).copied().unwrap_or(0);
                }
            }
        }
        let mut dx = acts.dx.clone();
        dx.resize(steps * STEP / Q16_LANE, 0.0);
        Q16Lanes2 { xq, dx, bs }
    }
}

/// Activation vector `v` (16 words) of step `s`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn act(lanes: &Q16Lanes2, s: usize, v: usize) -> __m256i {
    let a = &lanes.xq[STEP * s + 16 * v..STEP * s + 16 * v + 16];
    // SAFETY: `a` is a bounds-checked slice of 16 i16 (32 bytes); unaligned load is allowed.
    unsafe { _mm256_loadu_si256(a.as_ptr() as *const __m256i) }
}

/// The absmax of each of the 8 lanes of step `s` (blocks of `bs` >= 32; a second block
/// past the row end gives 0).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn step_scales(absmax: &[f32], s: usize, bs: usize) -> __m256 {
    let first = STEP * s / bs;
    if bs >= STEP {
        return _mm256_set1_ps(absmax[first]);
    }
    let second = absmax.get(first + 1).copied().unwrap_or(0.0);
    _mm256_setr_m128(_mm_set1_ps(absmax[first]), _mm_set1_ps(second))
}

/// The 8 i32 lane sums of step `s` of a row.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn step_sums(packed: &[u8], s: usize, tables: (__m256i, __m256i), lanes: &Q16Lanes2) -> __m256i {
    let bytes = &packed[32 * s..(32 * s + 32).min(packed.len())];
    let mut padded = [0u8; 32];
    let src = if bytes.len() == 32 {
        bytes
    } else {
        padded[..bytes.len()].copy_from_slice(bytes);
        &padded[..]
    };
    // SAFETY: `src` holds 32 bytes; unaligned load is allowed.
    let v = unsafe { _mm256_loadu_si256(src.as_ptr() as *const __m256i) };
    let m4 = _mm256_set1_epi8(0x0F);
    let (lo, hi) = (_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4));
    let (tl, th) = tables;
    let (lo_l, lo_h) = (_mm256_shuffle_epi8(tl, lo), _mm256_shuffle_epi8(th, lo));
    let (hi_l, hi_h) = (_mm256_shuffle_epi8(tl, hi), _mm256_shuffle_epi8(th, hi));
    let low_half = _mm256_add_epi32(
        _mm256_madd_epi16(_mm256_unpacklo_epi8(lo_l, lo_h), act(lanes, s, 0)),
        _mm256_madd_epi16(_mm256_unpacklo_epi8(hi_l, hi_h), act(lanes, s, 1)),
    );
    let high_half = _mm256_add_epi32(
        _mm256_madd_epi16(_mm256_unpackhi_epi8(lo_l, lo_h), act(lanes, s, 2)),
        _mm256_madd_epi16(_mm256_unpackhi_epi8(hi_l, hi_h), act(lanes, s, 3)),
    );
    _mm256_hadd_epi32(low_half, high_half)
}

/// bitsandbytes 4-bit row dot with q16 activations regrouped by [`Q16Lanes2::new`]:
/// `packed` holds the row's bytes, `absmax` one scale per block of the block size given
/// to `Q16Lanes2::new` (dividing the row), `code` the quantized table.
#[target_feature(enable = "avx2,fma")]
pub fn fourbit_row_dot_q16(packed: &[u8], absmax: &[f32], code: &Q16Code, lanes: &Q16Lanes2) -> f32 {
    let elems = 2 * packed.len();
    assert!(
        elems.is_multiple_of(lanes.bs) && absmax.len() == elems / lanes.bs,
        "4-bit q16 AVX2 row: {elems} elements, block {}, {} scales",
        lanes.bs,
        absmax.len()
    );
    assert!(lanes.xq.len() >= elems.div_ceil(STEP) * STEP, "4-bit q16 AVX2 row: activations too short");
    let low_bytes = code.tq.map(|q| q.to_le_bytes()[0]);
    let high_bytes = code.tq.map(|q| q.to_le_bytes()[1]);
    // SAFETY: both arrays are 16 bytes; unaligned loads are allowed.
    let tables = unsafe {
        (
            _mm256_broadcastsi128_si256(_mm_loadu_si128(low_bytes.as_ptr() as *const __m128i)),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(high_bytes.as_ptr() as *const __m128i)),
        )
    };
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for s in 0..packed.len().div_ceil(32) {
        let dx = &lanes.dx[8 * s..8 * s + 8];
        // SAFETY: `dx` is a bounds-checked slice of 8 f32; unaligned load is allowed.
        let dx = unsafe { _mm256_loadu_ps(dx.as_ptr()) };
        let scale = _mm256_mul_ps(step_scales(absmax, s, lanes.bs), dx);
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(step_sums(packed, s, tables, lanes)), scale, acc0);
        std::mem::swap(&mut acc0, &mut acc1);
    }
    let acc = _mm256_add_ps(acc0, acc1);
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    _mm_cvtss_f32(_mm_add_ss(sum2, _mm_shuffle_ps::<1>(sum2, sum2))) * code.scale
}
