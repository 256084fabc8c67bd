//! AVX2 + FMA kernels (x86_64), selected at run time by [`super::CpuKernel::detect`].
//!
//! - f32 kernels (`row_dot_*`, `fourbit_row_dot`): activations stay in f32; quantized
//!   weights are widened to f32 in registers (NF4/FP4 through the 16-entry code table
//!   with two `vpermps` and a blend), so the result differs from the scalar path only
//!   by summation order (f32 rounding), never by an extra quantization of `x`.
//! - integer kernels (`row_dot_*_i8`): activations pre-quantized to 8 bits
//!   ([`super::q8::Q8Acts`]); `vpmaddubsw` + `vpmaddwd` give exact i32 block sums,
//!   scaled once per block in f32 (llama.cpp's Q4_0/Q8_0 x Q8_0, Q4_K x Q8_K scheme).
//!   Q4_0 takes two blocks per 256-bit step against activations re-laid once per call
//!   ([`Q8Lanes::for_avx2_q4_0`]): the stored nibbles go straight into `vpmaddubsw` and
//!   per-lane offsets remove their `+8` bias, and the two f16 scales are converted
//!   together, instead of per-block sign tricks and scalar scale conversions.
//!
//! Every function here requires the `avx2`, `fma` and `f16c` CPU features: callers
//! check them first (see `CpuKernel`).

use std::arch::x86_64::*;

use half::f16;

use super::q8_lanes::Q8Lanes;

/// f16 bits to f32 with the F16C instruction (the `half` crate would check the CPU
/// features on every call).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_at(b: &[u8], at: usize) -> f32 {
    let bits = u16::from_le_bytes([b[at], b[at + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// Loads 32 bytes from `b[at..at+32]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load32<T: Copy>(b: &[T], at: usize) -> __m256i {
    debug_assert_eq!(std::mem::size_of::<T>(), 1);
    let s = &b[at..at + 32];
    // SAFETY: `s` is a bounds-checked slice of 32 one-byte elements (asserted size);
    // unaligned load is allowed.
    unsafe { _mm256_loadu_si256(s.as_ptr() as *const __m256i) }
}

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

/// Loads 8 i32 from `x[at..at+8]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load8_i32(x: &[i32], at: usize) -> __m256i {
    let s = &x[at..at + 8];
    // SAFETY: `s` is a bounds-checked slice of exactly 8 i32; unaligned load is allowed.
    unsafe { _mm256_loadu_si256(s.as_ptr() as *const __m256i) }
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

/// Sum of products of signed bytes `w` and `x`, pairwise into 8 x i32 (exact: `w` in
/// -128..=127 becomes `|w|` as u8, `x` in -127..=127 takes the sign of `w`, so each
/// i16 pair sum is at most 2 * 128 * 127 < 2^15).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn mul_sum_i8_pairs(w: __m256i, x: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Q8_0 row dot 8-bit activations in blocks of 32 (`qx`, `dx` cover the row).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn row_dot_q8_0_i8(row: &[u8], qx: &[i8], dx: &[f32]) -> f32 {
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut blocks = row.chunks_exact(68);
    for (pi, b) in (&mut blocks).enumerate() {
        let (i0, i1) = (2 * pi, 2 * pi + 1);
        let s0 = mul_sum_i8_pairs(load32(b, 2), load32(qx, 32 * i0));
        let s1 = mul_sum_i8_pairs(load32(b, 36), load32(qx, 32 * i1));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * dx[i0]), _mm256_cvtepi32_ps(s0), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 34) * dx[i1]), _mm256_cvtepi32_ps(s1), acc1);
    }
    let rem = blocks.remainder();
    if rem.len() == 34 {
        let i = row.len() / 34 - 1;
        let s = mul_sum_i8_pairs(load32(rem, 2), load32(qx, 32 * i));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(rem, 0) * dx[i]), _mm256_cvtepi32_ps(s), acc0);
    }
    hsum(_mm256_add_ps(acc0, acc1))
}

/// One Q4_0 step `p` (blocks `2p`, `2p + 1`; bytes `36p..36p+36`) of `row` against
/// [`Q8Lanes::for_avx2_q4_0`] lanes; a missing second block reads as zero bytes.
/// `vpmaddubsw` on the stored nibbles (`<= 15`) and the codes gives pair sums `<= 3810`,
/// so low + high stays inside i16; `vpmaddwd` with ones widens to 8 i32 lanes (4 per
/// block), and the lane offsets remove the `+8` nibble bias lane by lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_step(acc: __m256, row: &[u8], lanes: &Q8Lanes, p: usize) -> __m256 {
    const BLOCK: usize = 18;
    let at = 2 * BLOCK * p;
    let second = row.len() >= at + 2 * BLOCK;
    let packed =
        _mm256_set_m128i(if second { load16(row, at + BLOCK + 2) } else { _mm_setzero_si128() }, load16(row, at + 2));
    let low4 = _mm256_set1_epi8(0x0F);
    let lo = _mm256_and_si256(packed, low4);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(packed), low4);
    let pairs = _mm256_add_epi16(
        _mm256_maddubs_epi16(lo, load32(&lanes.codes, 64 * p)),
        _mm256_maddubs_epi16(hi, load32(&lanes.codes, 64 * p + 32)),
    );
    let dot = _mm256_add_epi32(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)), load8_i32(&lanes.offsets, 8 * p));
    let d0 = u16::from_le_bytes([row[at], row[at + 1]]) as i32;
    let d1 = if second { u16::from_le_bytes([row[at + BLOCK], row[at + BLOCK + 1]]) as i32 } else { 0 };
    // d_w * d_x of both blocks (`block_scales` is padded to whole steps), then spread
    // over their 4 lanes each: the same f32 products as spreading first, without the
    // 32-byte load of per-lane scales.
    let dx = &lanes.block_scales[2 * p..2 * p + 2];
    let both = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d0 | (d1 << 16))), _mm_setr_ps(dx[0], dx[1], 0.0, 0.0));
    let scale = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(both), _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
    _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(dot), acc)
}

/// Q4_0 row dot 8-bit activations laid out by [`Q8Lanes::for_avx2_q4_0`].
#[target_feature(enable = "avx2,fma,f16c")]
pub fn row_dot_q4_0_i8(row: &[u8], lanes: &Q8Lanes) -> f32 {
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for p in 0..row.len().div_ceil(36) {
        // Two accumulators in turn hide the FMA latency (one call site keeps it inlined).
        acc0 = q4_0_step(acc0, row, lanes, p);
        std::mem::swap(&mut acc0, &mut acc1);
    }
    hsum(_mm256_add_ps(acc0, acc1))
}

/// Q4_K row dot 8-bit activations in blocks of 256 (`bsums`: code sums per 32).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn row_dot_q4_k_i8(row: &[u8], qx: &[i8], dx: &[f32], bsums: &[i32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut smin = 0.0f32;
    let m4 = _mm256_set1_epi8(0x0F);
    for (bi, b) in row.chunks_exact(144).enumerate() {
        let s = &b[4..16];
        let mut sumi = _mm256_setzero_si256();
        let mut msum = 0i32;
        for p in 0..4 {
            let (sc1, m1) = crate::ggml::q4_k::scale_min(2 * p, s);
            let (sc2, m2) = crate::ggml::q4_k::scale_min(2 * p + 1, s);
            let q4 = load32(b, 16 + 32 * p);
            let lo = _mm256_and_si256(q4, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), m4);
            // u8 nibbles (<= 15) x i8 codes: pair sums <= 2 * 15 * 127, no saturation.
            let plo = _mm256_maddubs_epi16(lo, load32(qx, 256 * bi + 64 * p));
            let phi = _mm256_maddubs_epi16(hi, load32(qx, 256 * bi + 64 * p + 32));
            let plo = _mm256_madd_epi16(plo, _mm256_set1_epi16(sc1 as i16));
            let phi = _mm256_madd_epi16(phi, _mm256_set1_epi16(sc2 as i16));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(plo, phi));
            msum += m1 as i32 * bsums[8 * bi + 2 * p] + m2 as i32 * bsums[8 * bi + 2 * p + 1];
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * dx[bi]), _mm256_cvtepi32_ps(sumi), acc);
        smin += f16_at(b, 2) * dx[bi] * msum as f32;
    }
    hsum(acc) - smin
}

/// bitsandbytes 4-bit row dot f32 activations: `packed` holds the row's bytes (element
/// 2j in the high nibble of byte j), `absmax` one scale per `bs` elements (`bs` a
/// multiple of 32, dividing the row). Nibbles index `code` through two 8-entry
/// `vpermps` tables and a blend on bit 3; the row is never materialized.
#[target_feature(enable = "avx2,fma")]
pub fn fourbit_row_dot(packed: &[u8], absmax: &[f32], code: &[f32; 16], bs: usize, x: &[f32]) -> f32 {
    // SAFETY: `code` is 16 f32; both loads read 8 of them.
    let (tlo, thi) = unsafe { (_mm256_loadu_ps(code.as_ptr()), _mm256_loadu_ps(code.as_ptr().add(8))) };
    let m4 = _mm_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let lookup = |idx: __m256i| -> __m256 {
        let sel = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx));
        _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, idx), _mm256_permutevar8x32_ps(thi, idx), sel)
    };
    for (bi, &am) in absmax.iter().enumerate() {
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let base = bi * bs;
        let mut e = 0;
        while e < bs {
            let v = load16(packed, (base + e) / 2);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), m4);
            let lo = _mm_and_si128(v, m4);
            let e0 = _mm_unpacklo_epi8(hi, lo);
            let e1 = _mm_unpackhi_epi8(hi, lo);
            let xo = base + e;
            s0 = _mm256_fmadd_ps(lookup(_mm256_cvtepu8_epi32(e0)), load8(x, xo), s0);
            s1 = _mm256_fmadd_ps(lookup(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(e0))), load8(x, xo + 8), s1);
            s0 = _mm256_fmadd_ps(lookup(_mm256_cvtepu8_epi32(e1)), load8(x, xo + 16), s0);
            s1 = _mm256_fmadd_ps(lookup(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(e1))), load8(x, xo + 24), s1);
            e += 32;
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(am), _mm256_add_ps(s0, s1), acc);
    }
    hsum(acc)
}
