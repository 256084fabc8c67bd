//! Brings one block's rows into the tile kernel's layouts (see the parent module): the
//! zero-padded copies of q, k, v for partial blocks, odd head dims and normalizers
//! ([`gather_raw`]), the key transpose of whole blocks read in place
//! ([`transpose_keys`]), the 16 x 16 register transpose both use, and the masked
//! loads and stores of row prefixes. Values are copied or scaled by the attention scale
//! (one f32 multiply), nothing else.

use std::arch::x86_64::*;

use super::BLOCK;
use crate::gated::source::RawBlock;

/// Lanes of `x` that hold Inf or NaN: exactly those where `x - x` is NaN (an unordered
/// compare, no dependency chain across calls).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn non_finite_lanes(x: __m512) -> u32 {
    u32::from(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, _mm512_sub_ps(x, x)))
}

/// The block's rows of a problem without feature maps or key shift copied from the
/// stored tensors into zero-padded buffers: `q = scale * q` rows, `kt` the keys
/// transposed, `v` rows plus the ones column when normalizing. For the shapes
/// [`transpose_keys`] and direct reads do not cover (K or V not a multiple of 16, a
/// normalizer, the partial last block). Columns past K and V(+1) and rows past `l` are
/// left as they are (zero).
#[allow(clippy::too_many_arguments)] // the block's buffers and their widths
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn gather_raw(
    rows: &RawBlock,
    scale: f32,
    (kd, vd): (usize, usize),
    normalize: bool,
    l: usize,
    q: &mut [f32],
    kt: &mut [f32],
    v: &mut [f32],
    kp: usize,
    vp: usize,
) {
    let scale = _mm512_set1_ps(scale);
    let (sqk, sv) = (rows.qk_stride, rows.v_stride);
    for j in 0..l {
        let q_src = &rows.q[j * sqk..j * sqk + kd];
        let q_dst = &mut q[j * kp..j * kp + kd];
        for c in (0..kd).step_by(16) {
            let n = (kd - c).min(16);
            store_prefix(&mut q_dst[c..c + n], _mm512_mul_ps(load_prefix(&q_src[c..c + n]), scale));
        }
        v[j * vp..j * vp + vd].copy_from_slice(&rows.v[j * sv..j * sv + vd]);
        if normalize {
            v[j * vp + vd] = 1.0;
        }
    }
    // Keys: 16 key dims at a time, 16 token rows -> 16 kt rows (lane = token).
    for c in (0..kd).step_by(16) {
        let n = (kd - c).min(16);
        let mut tokens = [_mm512_setzero_ps(); 16];
        for (j, row) in tokens.iter_mut().enumerate().take(l) {
            *row = load_prefix(&rows.k[j * sqk + c..j * sqk + c + n]);
        }
        let cols = transpose16(tokens);
        for (r, col) in cols.iter().enumerate().take(n) {
            let dst = &mut kt[(c + r) * BLOCK..(c + r + 1) * BLOCK];
            // SAFETY: `dst` is a slice of exactly 16 floats.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), *col) };
        }
    }
}

/// `kt [K, 16]` from 16 stored key rows (row j at `k[j * stride..]`, K a multiple of 16):
/// the only copy a whole block with direct reads needs (q and v are broadcast from and
/// streamed through their stored rows).
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn transpose_keys(k: &[f32], stride: usize, kd: usize, kt: &mut [f32]) {
    assert!(kd.is_multiple_of(16) && k.len() >= 15 * stride + kd && kt.len() >= kd * BLOCK);
    for c in (0..kd).step_by(16) {
        let mut tokens = [_mm512_setzero_ps(); 16];
        for (j, row) in tokens.iter_mut().enumerate() {
            // SAFETY: j < 16 and c + 16 <= kd, so the 16 floats lie inside `k` (asserted).
            *row = unsafe { _mm512_loadu_ps(k.as_ptr().add(j * stride + c)) };
        }
        for (r, col) in transpose16(tokens).iter().enumerate() {
            // SAFETY: c + r < kd, so row c + r of `kt` (16 floats) lies inside it (asserted).
            unsafe { _mm512_storeu_ps(kt.as_mut_ptr().add((c + r) * BLOCK), *col) };
        }
    }
}

/// Transposes a 16 x 16 matrix held as 16 rows: `out[j]` lane i = `rows[i]` lane j.
/// Pairs of rows are interleaved within 128-bit lanes, then quads, then the 4 x 4
/// arrangement of 128-bit lanes is transposed with two rounds of lane shuffles.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn transpose16(rows: [__m512; 16]) -> [__m512; 16] {
    // t[2p], t[2p+1]: rows 2p and 2p+1 interleaved, low and high halves of each lane.
    let mut t = [_mm512_setzero_ps(); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_ps(rows[2 * p], rows[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(rows[2 * p], rows[2 * p + 1]);
    }
    // u[4g + c], 128-bit lane L: column 4L + c of rows 4g..4g+3.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (lo_a, hi_a, lo_b, hi_b) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_shuffle_ps::<0x44>(lo_a, lo_b);
        u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(lo_a, lo_b);
        u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(hi_a, hi_b);
        u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(hi_a, hi_b);
    }
    // out[4L + c], 128-bit lane g = u[4g + c] lane L.
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let (a, b, cc, d) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
        let ab_lo = _mm512_shuffle_f32x4::<0x44>(a, b);
        let ab_hi = _mm512_shuffle_f32x4::<0xEE>(a, b);
        let cd_lo = _mm512_shuffle_f32x4::<0x44>(cc, d);
        let cd_hi = _mm512_shuffle_f32x4::<0xEE>(cc, d);
        out[c] = _mm512_shuffle_f32x4::<0x88>(ab_lo, cd_lo);
        out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(ab_lo, cd_lo);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(ab_hi, cd_hi);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(ab_hi, cd_hi);
    }
    out
}

/// Loads `src.len() <= 16` floats into the low lanes (the rest zero).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn load_prefix(src: &[f32]) -> __m512 {
    if let Ok(whole) = <&[f32; 16]>::try_from(src) {
        // SAFETY: `whole` is 16 floats.
        return unsafe { _mm512_loadu_ps(whole.as_ptr()) };
    }
    assert!(src.len() <= 16);
    let mask = ((1u32 << src.len()) - 1) as __mmask16;
    // SAFETY: the mask enables exactly `src.len()` lanes, all inside `src`; masked-off
    // lanes are not read (no fault) and come back zero.
    unsafe { _mm512_maskz_loadu_ps(mask, src.as_ptr()) }
}

/// Stores the first `n <= 16` lanes of `x` at `dst`.
///
/// # Safety
/// `dst` must be valid for writes of `n` f32s (initialized or not).
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn store_prefix_raw(dst: *mut f32, n: usize, x: __m512) {
    assert!(n <= 16);
    let mask = ((1u32 << n) - 1) as __mmask16;
    // SAFETY: the mask enables exactly `n` lanes, all valid for writes (caller
    // contract); masked-off lanes are neither read nor written.
    unsafe { _mm512_mask_storeu_ps(dst, mask, x) };
}

/// Stores the first `dst.len() <= 16` lanes of `x` into `dst`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn store_prefix(dst: &mut [f32], x: __m512) {
    if let Ok(whole) = <&mut [f32; 16]>::try_from(&mut *dst) {
        // SAFETY: `whole` is 16 floats.
        unsafe { _mm512_storeu_ps(whole.as_mut_ptr(), x) };
        return;
    }
    assert!(dst.len() <= 16);
    let mask = ((1u32 << dst.len()) - 1) as __mmask16;
    // SAFETY: the mask enables exactly `dst.len()` lanes, all inside `dst`; masked-off
    // lanes are neither read nor written.
    unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, x) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The register transpose against index arithmetic.
    #[test]
    fn transpose16_transposes() {
        if !std::is_x86_feature_detected!("avx512f") {
            linattn_tensor::report_skip("transpose16_transposes: skipped, no AVX-512F on this CPU");
            return;
        }
        let m: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut rows = [[0.0f32; 16]; 16];
        // SAFETY: AVX-512F checked above; every load and store covers 16 floats of an array.
        unsafe {
            let mut regs = [_mm512_setzero_ps(); 16];
            for (i, r) in regs.iter_mut().enumerate() {
                *r = _mm512_loadu_ps(m[i * 16..].as_ptr());
            }
            for (row, reg) in rows.iter_mut().zip(transpose16(regs)) {
                _mm512_storeu_ps(row.as_mut_ptr(), reg);
            }
        }
        for (j, row) in rows.iter().enumerate() {
            for (i, &x) in row.iter().enumerate() {
                assert_eq!(x, m[i * 16 + j], "out[{j}][{i}]");
            }
        }
    }
}
