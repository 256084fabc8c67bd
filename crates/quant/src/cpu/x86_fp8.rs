//! AVX-512 and AVX2 FP8 row dots (x86_64): codes widened to dwords and decoded to f32
//! with bit arithmetic, FMA with `x`, each scale span's sum scaled once (see `fp8`).
//!
//! Decoding: with `v` the code, `(v & 0x7F) << 20` (E4M3) or `<< 21` (E5M2) puts the
//! FP8 exponent and mantissa fields into the low exponent bits and the top mantissa bits
//! of an f32, whose value is then the FP8 magnitude times `2^-120` (E4M3, bias 7 against
//! 127) or `2^-112` (E5M2, bias 15). Multiplying by `2^120` / `2^112` restores it
//! exactly, subnormal codes included: FP8 exponent 0 lands on an f32 subnormal
//! (`m * 2^-149` after the shift), which the power-of-two product turns into the exact
//! normal result (no denormals-are-zero mode is set by Rust code). The sign is bit 7
//! moved to bit 31. Special codes: E4M3 `S.1111.111` is NaN; E5M2 exponent 31 is
//! infinity (mantissa 0) or NaN. They are blended in from constants, so every code
//! decodes to exactly [`crate::fp8::Fp8Kind::decode`] (tested over all 256 codes).
//!
//! Per 16 codes (AVX-512): one widening load, 2 ands, 2 shifts, a multiply, an or, a
//! compare and a blend, then the FMA. Ragged ends of spans use masked loads (AVX-512)
//! or a zero-padded copy (AVX2). Every function requires the features it enables
//! (checked by `CpuKernel`).

use std::arch::x86_64::*;

use crate::fp8::Fp8Kind;

/// `(mantissa-field shift, 2^(127 - bias))` of an encoding.
fn decode_params(kind: Fp8Kind) -> (u32, f32) {
    match kind {
        Fp8Kind::E4M3 => (20, f32::from_bits((127 + 120) << 23)),
        Fp8Kind::E5M2 => (21, f32::from_bits((127 + 112) << 23)),
    }
}

const QUIET_NAN: i32 = 0x7FC0_0000;
const INFINITY_BITS: i32 = 0x7F80_0000;

/// Decodes 16 codes held one per dword (0..=255) to f32.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn decode16(kind: Fp8Kind, v: __m512i) -> __m512 {
    let (shift, rebias) = decode_params(kind);
    let low7 = _mm512_and_si512(v, _mm512_set1_epi32(0x7F));
    let sign = _mm512_slli_epi32::<24>(_mm512_and_si512(v, _mm512_set1_epi32(0x80)));
    let magnitude = _mm512_sll_epi32(low7, _mm_cvtsi32_si128(shift as i32));
    let value = _mm512_castps_si512(_mm512_mul_ps(_mm512_castsi512_ps(magnitude), _mm512_set1_ps(rebias)));
    let value = _mm512_or_si512(value, sign);
    match kind {
        Fp8Kind::E4M3 => {
            let nan = _mm512_cmpeq_epi32_mask(low7, _mm512_set1_epi32(0x7F));
            _mm512_castsi512_ps(_mm512_mask_blend_epi32(nan, value, _mm512_set1_epi32(QUIET_NAN)))
        }
        Fp8Kind::E5M2 => {
            let exponent31 =
                _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, _mm512_set1_epi32(0x7C)), _mm512_set1_epi32(0x7C));
            let mantissa = _mm512_test_epi32_mask(v, _mm512_set1_epi32(0x03));
            let special = _mm512_mask_blend_epi32(
                mantissa,
                _mm512_or_si512(sign, _mm512_set1_epi32(INFINITY_BITS)),
                _mm512_set1_epi32(QUIET_NAN),
            );
            _mm512_castsi512_ps(_mm512_mask_blend_epi32(exponent31, value, special))
        }
    }
}

/// Decodes 8 codes held one per dword (0..=255) to f32 (the AVX2 twin of [`decode16`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn decode8(kind: Fp8Kind, v: __m256i) -> __m256 {
    let (shift, rebias) = decode_params(kind);
    let low7 = _mm256_and_si256(v, _mm256_set1_epi32(0x7F));
    let sign = _mm256_slli_epi32::<24>(_mm256_and_si256(v, _mm256_set1_epi32(0x80)));
    let magnitude = _mm256_sll_epi32(low7, _mm_cvtsi32_si128(shift as i32));
    let value = _mm256_castps_si256(_mm256_mul_ps(_mm256_castsi256_ps(magnitude), _mm256_set1_ps(rebias)));
    let value = _mm256_castsi256_ps(_mm256_or_si256(value, sign));
    match kind {
        Fp8Kind::E4M3 => {
            let nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(low7, _mm256_set1_epi32(0x7F)));
            _mm256_blendv_ps(value, _mm256_castsi256_ps(_mm256_set1_epi32(QUIET_NAN)), nan)
        }
        Fp8Kind::E5M2 => {
            let exponent31 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
                _mm256_and_si256(v, _mm256_set1_epi32(0x7C)),
                _mm256_set1_epi32(0x7C),
            ));
            let mantissa_zero = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
                _mm256_and_si256(v, _mm256_set1_epi32(0x03)),
                _mm256_setzero_si256(),
            ));
            let infinity = _mm256_castsi256_ps(_mm256_or_si256(sign, _mm256_set1_epi32(INFINITY_BITS)));
            let special = _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_set1_epi32(QUIET_NAN)), infinity, mantissa_zero);
            _mm256_blendv_ps(value, special, exponent31)
        }
    }
}

/// AVX-512 dot of one FP8 row (`codes`, one scale per `span` columns) with `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub fn row_dot_avx512(kind: Fp8Kind, codes: &[u8], scales: &[f32], span: usize, x: &[f32]) -> f32 {
    assert!(span > 0 && codes.len() == x.len() && scales.len() >= codes.len().div_ceil(span));
    let mut acc = _mm512_setzero_ps();
    for ((cs, xs), &scale) in codes.chunks(span).zip(x.chunks(span)).zip(scales) {
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut c = 0;
        while c + 32 <= cs.len() {
            // SAFETY: `c + 32 <= cs.len() == xs.len()`: 32 codes and 32 floats in bounds.
            unsafe {
                let b0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(cs.as_ptr().add(c) as *const __m128i));
                let b1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(cs.as_ptr().add(c + 16) as *const __m128i));
                s0 = _mm512_fmadd_ps(decode16(kind, b0), _mm512_loadu_ps(xs.as_ptr().add(c)), s0);
                s1 = _mm512_fmadd_ps(decode16(kind, b1), _mm512_loadu_ps(xs.as_ptr().add(c + 16)), s1);
            }
            c += 32;
        }
        while c < cs.len() {
            let n = (cs.len() - c).min(16);
            let mask = ((1u32 << n) - 1) as __mmask16;
            // SAFETY: the masks enable exactly the `n` codes and floats left at `c`; the
            // masked-off lanes are not read and come back zero.
            unsafe {
                let b = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, cs.as_ptr().add(c) as *const i8));
                s0 = _mm512_fmadd_ps(decode16(kind, b), _mm512_maskz_loadu_ps(mask, xs.as_ptr().add(c)), s0);
            }
            c += n;
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(scale), _mm512_add_ps(s0, s1), acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// AVX2 dot of one FP8 row (`codes`, one scale per `span` columns) with `x`.
#[target_feature(enable = "avx2,fma")]
pub fn row_dot_avx2(kind: Fp8Kind, codes: &[u8], scales: &[f32], span: usize, x: &[f32]) -> f32 {
    assert!(span > 0 && codes.len() == x.len() && scales.len() >= codes.len().div_ceil(span));
    let mut acc = _mm256_setzero_ps();
    for ((cs, xs), &scale) in codes.chunks(span).zip(x.chunks(span)).zip(scales) {
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut c = 0;
        while c + 16 <= cs.len() {
            // SAFETY: `c + 16 <= cs.len() == xs.len()`: 16 codes and 16 floats in bounds.
            unsafe {
                let b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(cs.as_ptr().add(c) as *const __m128i));
                let b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(cs.as_ptr().add(c + 8) as *const __m128i));
                s0 = _mm256_fmadd_ps(decode8(kind, b0), _mm256_loadu_ps(xs.as_ptr().add(c)), s0);
                s1 = _mm256_fmadd_ps(decode8(kind, b1), _mm256_loadu_ps(xs.as_ptr().add(c + 8)), s1);
            }
            c += 16;
        }
        while c < cs.len() {
            let n = (cs.len() - c).min(8);
            let (mut code_buf, mut x_buf) = ([0u8; 8], [0.0f32; 8]);
            code_buf[..n].copy_from_slice(&cs[c..c + n]);
            x_buf[..n].copy_from_slice(&xs[c..c + n]);
            // SAFETY: both buffers are local arrays of 8 elements.
            unsafe {
                let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(code_buf.as_ptr() as *const __m128i));
                s0 = _mm256_fmadd_ps(decode8(kind, b), _mm256_loadu_ps(x_buf.as_ptr()), s0);
            }
            c += n;
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_add_ps(s0, s1), acc);
    }
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    _mm_cvtss_f32(_mm_add_ss(sum2, _mm_shuffle_ps::<1>(sum2, sum2)))
}
