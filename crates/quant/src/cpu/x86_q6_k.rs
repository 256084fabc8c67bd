//! Q6_K row dots against 8-bit activations (x86_64): AVX-512 (VNNI, BW) and AVX2.
//!
//! Per super-block (256 elements, 210 bytes: `ql` 128, `qh` 64, 16 i8 scales, f16 `d`,
//! see `ggml::q6_k`) the exact integer
//! `sum_e scale(e/16) * (q_e - 32) * xq_e = sum_j scale_j * (sum_{e in j} q_e xq_e
//! - 32 * bsum16_j)` is formed from unsigned 6-bit codes `q` (so `vpmaddubsw` can take
//! them: pair sums `<= 2 * 63 * 127`, no saturation) and the activations' 16-element
//! code sums (`Q8Acts::bsums16`).
//!
//! Unpacking, for half `h` of a super-block: `ql[64h..64h+64]` holds elements
//! `128h + 0..64` in its low nibbles and `128h + 64..128` in its high nibbles (in
//! element order); `qh[32h..32h+32]` holds the two high bits of elements `128h + l`,
//! `+32`, `+64`, `+96` at bits 0, 2, 4, 6 of byte `l`. AVX-512 duplicates the 32 `qh`
//! bytes into both 256-bit halves and shifts the halves' words by different amounts
//! (`vpsrlvw`: 0 / 2 for the low nibbles, 4 / 6 for the high ones), so one 64-byte
//! vector holds 64 complete codes in element order; AVX2 does the same per 32 bytes
//! with four fixed shifts. Activations stay in their natural order.
//!
//! Scales: AVX-512 widens the 16 i8 scales to words once per super-block and places
//! them with one `vpermw` per 64 elements (word `w` of chunk `c` takes scale
//! `4c + w/8`), then `vpdpwssd` adds `pairs * scale` into i32 lanes; AVX2 multiplies
//! each 32-element vector's pair sums by its two scales with `vpmaddwd`. The offset
//! term is a `vpmaddwd` of the widened scales with `bsums16` (AVX-512) or 16 scalar
//! products (AVX2).
//!
//! Numerics: the integer sums are exact; the f32 combination `d * d_x * (sum - 32 *
//! offset)` is formed per lane and summed at the end, which differs from the scalar
//! definition (`q8::row_dot_scalar`) by f32 rounding only.

use std::arch::x86_64::*;

use super::q8::Q8Acts;
use crate::ggml::q6_k::BLOCK_BYTES;

/// `vpermw` indices placing scale `4c + w / 8` at word `w` of 64-element chunk `c`.
const SCALE_INDEX: [[i16; 32]; 4] = {
    let mut t = [[0i16; 32]; 4];
    let mut c = 0;
    while c < 4 {
        let mut w = 0;
        while w < 32 {
            t[c][w] = (4 * c + w / 8) as i16;
            w += 1;
        }
        c += 1;
    }
    t
};

/// Panics unless `row` is whole super-blocks covered by the activations.
fn check(row: &[u8], acts: &Q8Acts) {
    let supers = row.len() / BLOCK_BYTES;
    assert!(
        row.len() == supers * BLOCK_BYTES
            && acts.block == 256
            && acts.qs.len() >= 256 * supers
            && acts.d.len() >= supers
            && acts.bsums16.len() >= 16 * supers,
        "Q6_K row of {} bytes does not match the activations",
        row.len()
    );
}

/// f16 `d` of a super-block times the activation scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_scale(block: &[u8], dx: f32) -> f32 {
    let bits = u16::from_le_bytes([block[208], block[209]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))) * dx
}

/// AVX-512 Q6_K row dot (see the module header).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub fn row_dot_q6_k_avx512(row: &[u8], acts: &Q8Acts) -> f32 {
    check(row, acts);
    // SAFETY: each index table is 32 i16 (64 bytes); unaligned loads are allowed.
    let index = SCALE_INDEX.map(|t| unsafe { _mm512_loadu_si512(t.as_ptr() as *const _) });
    let (low4, low2) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x03));
    let halves = |lo: i16, hi: i16| _mm512_inserti64x4::<1>(_mm512_set1_epi16(lo), _mm256_set1_epi16(hi));
    let (shift_low_nibbles, shift_high_nibbles) = (halves(0, 2), halves(4, 6));
    let mut acc = _mm512_setzero_ps();
    let mut offset_acc = _mm256_setzero_ps();
    for (s, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let scale = block_scale(block, acts.d[s]);
        // SAFETY: `block` is 210 bytes: the loads at 0, 64 (64 bytes each), 128 (64) and
        // 192 (16) lie inside it; super-block `s < supers` owns activation codes
        // `256s..256s+256` and `bsums16[16s..16s+16]` (asserted by `check`).
        unsafe {
            let p = block.as_ptr();
            let qh = _mm512_loadu_si512(p.add(128) as *const _);
            let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
            let scale_words = _mm512_castsi256_si512(scales16);
            let codes = acts.qs.as_ptr().add(256 * s);
            let mut isum = _mm512_setzero_si512();
            for h in 0..2 {
                let ql = _mm512_loadu_si512(p.add(64 * h) as *const _);
                let qh_half = if h == 0 {
                    _mm512_shuffle_i64x2::<0b01_00_01_00>(qh, qh)
                } else {
                    _mm512_shuffle_i64x2::<0b11_10_11_10>(qh, qh)
                };
                let high_bits = |shifts: __m512i| {
                    _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srlv_epi16(qh_half, shifts), low2))
                };
                let chunk_codes = [
                    _mm512_or_si512(_mm512_and_si512(ql, low4), high_bits(shift_low_nibbles)),
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), low4), high_bits(shift_high_nibbles)),
                ];
                for (k, q) in chunk_codes.into_iter().enumerate() {
                    let c = 2 * h + k;
                    let pairs = _mm512_maddubs_epi16(q, _mm512_loadu_si512(codes.add(64 * c) as *const _));
                    isum = _mm512_dpwssd_epi32(isum, pairs, _mm512_permutexvar_epi16(index[c], scale_words));
                }
            }
            acc = _mm512_fmadd_ps(_mm512_set1_ps(scale), _mm512_cvtepi32_ps(isum), acc);
            let bsums = _mm256_loadu_si256(acts.bsums16.as_ptr().add(16 * s) as *const __m256i);
            let offset = _mm256_cvtepi32_ps(_mm256_madd_epi16(scales16, bsums));
            offset_acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), offset, offset_acc);
        }
    }
    _mm512_reduce_add_ps(acc) - 32.0 * hsum256(offset_acc)
}

/// AVX2 Q6_K row dot (see the module header).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn row_dot_q6_k_avx2(row: &[u8], acts: &Q8Acts) -> f32 {
    check(row, acts);
    let (low4, low2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x03));
    let mut acc = _mm256_setzero_ps();
    let mut offset_sum = 0.0f32;
    for (s, block) in row.chunks_exact(BLOCK_BYTES).enumerate() {
        let scale = block_scale(block, acts.d[s]);
        let scales = &block[192..208];
        let group_scale = |g: usize| (scales[g] as i8) as i16;
        let mut isum = _mm256_setzero_si256();
        for h in 0..2 {
            // SAFETY: `block` is 210 bytes: 32-byte loads at 64h, 64h + 32 and 128 + 32h
            // (h < 2) lie inside it; activation codes `256s + 128h..+128` exist (`check`).
            unsafe {
                let p = block.as_ptr();
                let ql_a = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
                let ql_b = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
                let high = |bits: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(bits, low2));
                // (codes, first element within the half) in element order.
                let vectors = [
                    (_mm256_or_si256(_mm256_and_si256(ql_a, low4), high(qh)), 0),
                    (_mm256_or_si256(_mm256_and_si256(ql_b, low4), high(_mm256_srli_epi16::<2>(qh))), 32),
                    (
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(ql_a), low4),
                            high(_mm256_srli_epi16::<4>(qh)),
                        ),
                        64,
                    ),
                    (
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(ql_b), low4),
                            high(_mm256_srli_epi16::<6>(qh)),
                        ),
                        96,
                    ),
                ];
                for (q, first) in vectors {
                    let e = 128 * h + first;
                    let x = _mm256_loadu_si256(acts.qs.as_ptr().add(256 * s + e) as *const __m256i);
                    let pairs = _mm256_maddubs_epi16(q, x);
                    let g = e / 16;
                    let sc = _mm256_set_m128i(_mm_set1_epi16(group_scale(g + 1)), _mm_set1_epi16(group_scale(g)));
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(pairs, sc));
                }
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(isum), acc);
        let offset: i32 = (0..16).map(|g| group_scale(g) as i32 * acts.bsums16[16 * s + g] as i32).sum();
        offset_sum += scale * offset as f32;
    }
    hsum256(acc) - 32.0 * offset_sum
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum256(v: __m256) -> f32 {
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    _mm_cvtss_f32(_mm_add_ss(sum2, _mm_shuffle_ps::<1>(sum2, sum2)))
}
