//! AVX2 + FMA kernels (x86_64), selected at run time by [`super::CpuKernel::detect`].
//!
//! Activations stay in f32; quantized weights are widened to f32 in registers, so the
//! result differs from the scalar path only by summation order (f32 rounding), never
//! by an extra quantization of `x`. Every function here requires the `avx2` and `fma`
//! CPU features: callers check them first (see `CpuKernel`).

use std::arch::x86_64::*;

use half::f16;

/// Horizontal sum of 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Loads 8 f32 from `x[at..at+8]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load8(x: &[f32], at: usize) -> __m256 {
    let s = &x[at..at + 8];
    // SAFETY: `s` is a bounds-checked slice of exactly 8 f32; unaligned load is allowed.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Loads 16 bytes from `b[at..at+16]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load16(b: &[u8], at: usize) -> __m128i {
    let s = &b[at..at + 16];
    // SAFETY: `s` is a bounds-checked slice of exactly 16 bytes; unaligned load is allowed.
    unsafe { _mm_loadu_si128(s.as_ptr() as *const __m128i) }
}

/// Widens bytes 0..8 (`hi = false`) or 8..16 (`hi = true`) of `v` as u8 to 8 f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn u8x8_to_f32(v: __m128i, hi: bool) -> __m256 {
    let v = if hi { _mm_srli_si128::<8>(v) } else { v };
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// Widens bytes 0..8 or 8..16 of `v` as i8 to 8 f32.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn i8x8_to_f32(v: __m128i, hi: bool) -> __m256 {
    let v = if hi { _mm_srli_si128::<8>(v) } else { v };
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// Dot product of two equal-length f32 slices.
#[target_feature(enable = "avx2,fma")]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(load8(a, i), load8(b, i), acc0);
        acc1 = _mm256_fmadd_ps(load8(a, i + 8), load8(b, i + 8), acc1);
        i += 16;
    }
    let mut s = hsum(_mm256_add_ps(acc0, acc1));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// Q8_0 row (whole blocks) dot f32 activations.
#[target_feature(enable = "avx2,fma")]
pub fn row_dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (bi, b) in row.chunks_exact(34).enumerate() {
        let d = _mm256_set1_ps(f16::from_le_bytes([b[0], b[1]]).to_f32());
        let xo = bi * 32;
        let q0 = load16(b, 2);
        let q1 = load16(b, 18);
        let mut s = _mm256_mul_ps(i8x8_to_f32(q0, false), load8(x, xo));
        s = _mm256_fmadd_ps(i8x8_to_f32(q0, true), load8(x, xo + 8), s);
        s = _mm256_fmadd_ps(i8x8_to_f32(q1, false), load8(x, xo + 16), s);
        s = _mm256_fmadd_ps(i8x8_to_f32(q1, true), load8(x, xo + 24), s);
        acc = _mm256_fmadd_ps(d, s, acc);
    }
    hsum(acc)
}

/// Q4_0 row (whole blocks) dot f32 activations.
#[target_feature(enable = "avx2,fma")]
pub fn row_dot_q4_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mask = _mm_set1_epi8(0x0F);
    let eight = _mm256_set1_ps(8.0);
    for (bi, b) in row.chunks_exact(18).enumerate() {
        let d = _mm256_set1_ps(f16::from_le_bytes([b[0], b[1]]).to_f32());
        let xo = bi * 32;
        let q = load16(b, 2);
        let lo = _mm_and_si128(q, mask);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
        let x0 = load8(x, xo);
        let x1 = load8(x, xo + 8);
        let x2 = load8(x, xo + 16);
        let x3 = load8(x, xo + 24);
        let mut s = _mm256_mul_ps(u8x8_to_f32(lo, false), x0);
        s = _mm256_fmadd_ps(u8x8_to_f32(lo, true), x1, s);
        s = _mm256_fmadd_ps(u8x8_to_f32(hi, false), x2, s);
        s = _mm256_fmadd_ps(u8x8_to_f32(hi, true), x3, s);
        // sum((q - 8) x) = sum(q x) - 8 sum(x)
        let xs = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
        s = _mm256_fnmadd_ps(eight, xs, s);
        acc = _mm256_fmadd_ps(d, s, acc);
    }
    hsum(acc)
}

/// Q4_K row (whole super-blocks) dot f32 activations.
#[target_feature(enable = "avx2,fma")]
pub fn row_dot_q4_k(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mask = _mm_set1_epi8(0x0F);
    for (bi, b) in row.chunks_exact(144).enumerate() {
        let sm = crate::ggml::q4_k::sub_block_scales(b);
        let xb = bi * 256;
        for p in 0..4 {
            let (mut s1, mut s2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut x1, mut x2) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for half in 0..2 {
                let q = load16(b, 16 + 32 * p + 16 * half);
                let lo = _mm_and_si128(q, mask);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
                let xa = xb + 64 * p + 16 * half;
                let (xa0, xa1) = (load8(x, xa), load8(x, xa + 8));
                let (xb0, xb1) = (load8(x, xa + 32), load8(x, xa + 40));
                s1 = _mm256_fmadd_ps(u8x8_to_f32(lo, false), xa0, s1);
                s1 = _mm256_fmadd_ps(u8x8_to_f32(lo, true), xa1, s1);
                s2 = _mm256_fmadd_ps(u8x8_to_f32(hi, false), xb0, s2);
                s2 = _mm256_fmadd_ps(u8x8_to_f32(hi, true), xb1, s2);
                x1 = _mm256_add_ps(x1, _mm256_add_ps(xa0, xa1));
                x2 = _mm256_add_ps(x2, _mm256_add_ps(xb0, xb1));
            }
            let (d1, m1) = sm[2 * p];
            let (d2, m2) = sm[2 * p + 1];
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d1), s1, acc);
            acc = _mm256_fnmadd_ps(_mm256_set1_ps(m1), x1, acc);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d2), s2, acc);
            acc = _mm256_fnmadd_ps(_mm256_set1_ps(m2), x2, acc);
        }
    }
    hsum(acc)
}

/// Q6_K row (whole super-blocks) dot f32 activations: each 16-element group is
/// decoded to i32 lanes in registers and multiplied by its scale.
#[target_feature(enable = "avx2,fma")]
pub fn row_dot_q6_k(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let m4 = _mm_set1_epi8(0x0F);
    let m2 = _mm_set1_epi8(0x03);
    let off = _mm256_set1_ps(32.0);
    for (bi, b) in row.chunks_exact(210).enumerate() {
        let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
        let xb = bi * 256;
        for h in 0..2 {
            for g in 0..2 {
                // positions l = 16g .. 16g+16 of half h
                let l0 = 16 * g;
                let ql0 = load16(b, 64 * h + l0);
                let ql1 = load16(b, 64 * h + l0 + 32);
                let qh = load16(b, 128 + 32 * h + l0);
                let quads = [
                    _mm_or_si128(_mm_and_si128(ql0, m4), _mm_slli_epi16::<4>(_mm_and_si128(qh, m2))),
                    _mm_or_si128(
                        _mm_and_si128(ql1, m4),
                        _mm_slli_epi16::<4>(_mm_and_si128(_mm_srli_epi16::<2>(qh), m2)),
                    ),
                    _mm_or_si128(
                        _mm_and_si128(_mm_srli_epi16::<4>(ql0), m4),
                        _mm_slli_epi16::<4>(_mm_and_si128(_mm_srli_epi16::<4>(qh), m2)),
                    ),
                    _mm_or_si128(
                        _mm_and_si128(_mm_srli_epi16::<4>(ql1), m4),
                        _mm_slli_epi16::<4>(_mm_and_si128(_mm_srli_epi16::<6>(qh), m2)),
                    ),
                ];
                for (k, q) in quads.iter().enumerate() {
                    let xo = xb + 128 * h + l0 + 32 * k;
                    let lo = _mm256_sub_ps(u8x8_to_f32(*q, false), off);
                    let hi = _mm256_sub_ps(u8x8_to_f32(*q, true), off);
                    let s = _mm256_fmadd_ps(hi, load8(x, xo + 8), _mm256_mul_ps(lo, load8(x, xo)));
                    let sc = (b[192 + 8 * h + g + 2 * k] as i8) as f32;
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d * sc), s, acc);
                }
            }
        }
    }
    hsum(acc)
}
