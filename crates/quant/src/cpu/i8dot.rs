//! Exact i8 x i8 dot products for the LLM.int8 row-wise product (`bnb::int8`): weight
//! codes `w` (any i8, -128 included) against quantized activations `x` (in
//! `-127..=127`, as `Int8Weight::matmul_f32` produces them).
//!
//! - AVX-512 (VNNI): `vpdpbusd` multiplies unsigned by signed bytes, so each 64-byte
//!   step feeds it `|w|` (`vpabsb`; |-128| reads back as the unsigned 128) and `x`
//!   negated where `w < 0` (a masked subtract from zero; `x` is never -128, so the
//!   negation cannot wrap). Four products per i32 lane per step, no saturation.
//! - AVX2: the same sign transfer with `vpsignb`, then `vpmaddubsw` (pairs of products,
//!   at most `2 * 128 * 127 = 32512`, so the i16 saturation never triggers) and
//!   `vpmaddwd` against ones into i32 lanes.
//! - Tails are masked (AVX-512) or summed by the scalar loop (AVX2).
//!
//! Numerics: every kernel returns the exact i32 sum; the sum fits i32 for any row up to
//! `2^31 / (128 * 127) ~ 132,000` columns (checked by the caller).

use super::CpuKernel;

/// Longest row whose i8 x i8 dot cannot overflow i32 (`|w| <= 128`, `|x| <= 127`).
pub(crate) const MAX_I8_DOT_LEN: usize = (i32::MAX as usize) / (128 * 127);

/// Scalar exact dot.
pub fn i8_dot_scalar(w: &[i8], x: &[i8]) -> i32 {
    w.iter().zip(x).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// Exact dot of `w` and `x` (same length, at most `MAX_I8_DOT_LEN`, `x` without -128)
/// on `kernel` (which the caller has checked is available).
pub fn i8_dot(kernel: CpuKernel, w: &[i8], x: &[i8]) -> i32 {
    assert!(w.len() == x.len() && w.len() <= MAX_I8_DOT_LEN, "i8 dot of {} and {} values", w.len(), x.len());
    debug_assert!(x.iter().all(|&v| v != i8::MIN));
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx512 is only handed out after avx512f/bw/vnni (and more) were
        // detected; slices are bounds-checked inside.
        CpuKernel::Avx512 => unsafe { x86::i8_dot_avx512(w, x) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2Fma is only handed out after avx2 was detected.
        CpuKernel::Avx2Fma => unsafe { x86::i8_dot_avx2(w, x) },
        _ => i8_dot_scalar(w, x),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// See the module header (AVX-512 VNNI).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) fn i8_dot_avx512(w: &[i8], x: &[i8]) -> i32 {
        let mut acc = _mm512_setzero_si512();
        let mut c = 0;
        while c < w.len() {
            let n = (w.len() - c).min(64);
            let mask: __mmask64 = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            // SAFETY: the masks enable exactly the `n` bytes left at `c` in both slices;
            // masked-off bytes are not read and come back zero.
            let (wv, xv) = unsafe {
                (_mm512_maskz_loadu_epi8(mask, w.as_ptr().add(c)), _mm512_maskz_loadu_epi8(mask, x.as_ptr().add(c)))
            };
            let negative = _mm512_movepi8_mask(wv);
            let x_signed = _mm512_mask_sub_epi8(xv, negative, _mm512_setzero_si512(), xv);
            acc = _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(wv), x_signed);
            c += n;
        }
        _mm512_reduce_add_epi32(acc)
    }

    /// See the module header (AVX2).
    #[target_feature(enable = "avx2")]
    pub(super) fn i8_dot_avx2(w: &[i8], x: &[i8]) -> i32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        let mut c = 0;
        while c + 32 <= w.len() {
            // SAFETY: `c + 32 <= len` for both slices: 32 bytes in bounds.
            let (wv, xv) = unsafe {
                (
                    _mm256_loadu_si256(w.as_ptr().add(c) as *const __m256i),
                    _mm256_loadu_si256(x.as_ptr().add(c) as *const __m256i),
                )
            };
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            c += 32;
        }
        let lanes = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256::<1>(acc));
        let lanes = _mm_add_epi32(lanes, _mm_shuffle_epi32::<0b01_00_11_10>(lanes));
        let lanes = _mm_add_epi32(lanes, _mm_shuffle_epi32::<0b10_11_00_01>(lanes));
        _mm_cvtsi128_si32(lanes) + super::i8_dot_scalar(&w[c..], &x[c..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel equals the scalar sum exactly: extreme codes (-128 and 127 in w,
    /// -127 and 127 in x), every length from 0 to 200 (tails of both kernels) and a long
    /// row of all-extreme products.
    #[test]
    fn every_kernel_is_exact() {
        let pick = |i: usize, seed: usize| ((i * 2_654_435_761 + seed * 40_503) >> 9) as u8 as i8;
        for len in (0..=200).chain([4096, 4096 + 63]) {
            let w: Vec<i8> = (0..len).map(|i| if i % 11 == 0 { i8::MIN } else { pick(i, 1) }).collect();
            let x: Vec<i8> = (0..len).map(|i| pick(i, 2).max(-127)).collect();
            let want = i8_dot_scalar(&w, &x);
            for kernel in CpuKernel::available() {
                assert_eq!(i8_dot(kernel, &w, &x), want, "{kernel:?} len {len}");
            }
        }
        let (w, x) = (vec![i8::MIN; 10_000], vec![-127i8; 10_000]);
        for kernel in CpuKernel::available() {
            assert_eq!(i8_dot(kernel, &w, &x), 10_000 * 128 * 127, "{kernel:?} extreme");
        }
    }
}
