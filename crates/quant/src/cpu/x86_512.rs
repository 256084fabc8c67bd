//! AVX-512 integer decode kernels (x86_64): ggml Q8_0, Q4_0 and Q4_K rows against 8-bit
//! activations, selected at run time as [`super::CpuKernel::Avx512`].
//!
//! Numerics are those of the AVX2 and scalar paths ([`super::q8`], llama.cpp's scheme):
//! every 32-element block's integer dot product is exact in i32 and scaled once in f32,
//! so the result differs from the scalar path only by the order of the f32 combination.
//!
//! Layout and instructions:
//! - [`Q8Lanes::for_avx512`] re-lays the quantized activations once per matvec so the
//!   per-row loop needs only full-width loads: codes in the order the weight bytes come
//!   out of the kernel's loads, `d_x` repeated over each block's i32 lanes, and one i32
//!   offset per lane (below). For Q4_K the codes are permuted within each super-block to
//!   the order in which a 64-byte load yields the nibbles (sub-blocks 0,2,1,3,4,6,5,7).
//! - `vpdpbusd` multiplies unsigned weight bytes with signed activation codes, 4 products
//!   per i32 lane. Q8_0 weights are biased by +128 (`w ^ 0x80`); Q4_0 nibbles are used as
//!   stored (`0..=15`, the format's `-8` omitted). Each lane starts from `-bias` times
//!   the sum of the codes it multiplies (precomputed), so every lane holds the exact
//!   signed partial dot product, as the AVX2 `vpmaddwd` lanes do: no large biased terms
//!   that would only cancel across lanes in f32.
//! - Q8_0: one step = two blocks (8 lanes each): codes from two 32-byte loads, the two
//!   f16 scales read as scalars, converted together, multiplied by the two blocks'
//!   activation scales and blended over their lanes (a lone last block: one masked
//!   load, `vpermb` and `vcvtph2ps`, per-lane activation scales).
//! - Q4_0: one step = four blocks (72 bytes, 4 lanes each): the four 16-byte nibble runs
//!   are loaded into the four 128-bit lanes of one register (a partial last step gathers
//!   them from two masked loads with `vpermi2b`), low and high nibbles go to two
//!   `vpdpbusd` against the matching codes (elements 0..16 and 16..32 of each block); the
//!   four f16 scales are read as scalars, converted together and spread with `vpermps`
//!   (whole octets of 8 blocks: taken out with `vpermi2b`, converted and multiplied by
//!   the blocks' activation scales before the spread, which leaves the products
//!   unchanged and saves a 64-byte load of per-lane scales per quad).
//!   Whole octets also hint the weight bytes 8 KiB ahead (`prefetcht2`, see
//!   [`PREFETCH_AHEAD`]): the hardware prefetchers alone left the two-thread Q4_0
//!   matvec at about 35 GB/s on a machine that reads 65.
//! - Q4_K: `vpmaddubsw` (nibble x code, pair sums `<= 2 * 15 * 127`) then `vpdpwssd`
//!   with the 6-bit sub-block scales as i16 lanes gives `sum_j sc_j * dot_j` in i32;
//!   the mins term `sum_j m_j * bsum_j` is a `vpmaddwd` on 8 i16 lanes.
//!
//! Every function here requires avx512f, avx512bw, avx512vl, avx512vnni and avx512vbmi,
//! and the Q8_0 row also F16C (checked by `CpuKernel`); loads that could run past a row end are masked (masked-out
//! bytes are neither read nor faulted on).

use std::arch::x86_64::*;

use super::q8_lanes::Q8Lanes;

/// Bytes per Q8_0 block (f16 scale, 32 codes).
const Q8_0_BYTES: usize = 34;
/// Bytes per Q4_0 block (f16 scale, 16 bytes of nibbles).
pub(super) const Q4_0_BYTES: usize = 18;
/// Bytes per Q4_K super-block.
const Q4_K_BYTES: usize = 144;

/// How far ahead of the octet being read the Q4_0 kernel asks for weight bytes
/// (`prefetcht2`, toward the outer caches; rows later in the task, never faulting).
///
/// Without it Q4_0 was the one format whose two-thread rate did not follow the memory:
/// about 35 GB/s whether the machine's read peer measured 35 or 65 (2-core Zen 4 VM,
/// 4096x4096 weights cycled out of the L3, 17 high-peer rounds of an interleaved
/// probe), 0.55-0.6 of the peer; with the hint, 46-51 GB/s (0.70-0.89) in 16 of the
/// 17 rounds (0.63 in one) and 1.2x in the low-peer ones. 8 KiB was the best of 2-32
/// KiB (`prefetcht2` at 2 KiB lost a third); `prefetcht0` gained less at 3-6 KiB and
/// lost at 8-16 KiB. Q8_0 (already at 0.9 of the peer) lost 2-11% with the hint at
/// 8-16 KiB and Q4_K moved within 6% (up at 14336 rows, down at 4096), so both go
/// without.
const PREFETCH_AHEAD: usize = 8 << 10;

/// Hints the cache lines of `bytes` (one kernel step) [`PREFETCH_AHEAD`] bytes on: one
/// `prefetcht2` per 64 bytes.
#[inline]
#[target_feature(enable = "avx512f")]
fn prefetch_ahead(bytes: &[u8]) {
    let ahead = bytes.as_ptr().wrapping_add(PREFETCH_AHEAD);
    for line in (0..bytes.len()).step_by(64) {
        // A prefetch never faults, so an address past the row or the allocation is fine
        // (the pointer is only hinted, never dereferenced).
        _mm_prefetch::<_MM_HINT_T2>(ahead.wrapping_add(line) as *const i8);
    }
}

/// Loads a 64-byte table.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) fn load_table(t: &[u8; 64]) -> __m512i {
    // SAFETY: `t` is exactly 64 bytes; unaligned load is allowed.
    unsafe { _mm512_loadu_si512(t.as_ptr() as *const _) }
}

/// `vpermb` table spreading the f16 scales of the blocks of one step (block `b` at byte
/// `stride * b`, `16 / lanes_per_block` blocks) over `lanes_per_block` f16 lanes each:
/// output f16 lane `h` (bytes `2h, 2h+1`, `h < 16`) holds block `h / lanes_per_block`'s
/// scale; bytes 32.. are unused.
const fn scale_table(stride: usize, lanes_per_block: usize) -> [u8; 64] {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 32 {
        t[i] = (stride * (i / 2 / lanes_per_block) + i % 2) as u8;
        i += 1;
    }
    t
}

const Q8_0_SCALE_TABLE: [u8; 64] = scale_table(Q8_0_BYTES, 8);
const Q4_0_SCALE_TABLE: [u8; 64] = scale_table(Q4_0_BYTES, 4);

/// `vpermi2b` table gathering the 16 packed bytes of each of four Q4_0 blocks (bytes
/// `18b + 2..18b + 18` of the 72-byte quad, sources 0..64 and 64..128) into 128-bit
/// lane `b`.
const Q4_0_NIBBLE_TABLE: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = (Q4_0_BYTES * (i / 16) + 2 + i % 16) as u8;
        i += 1;
    }
    t
};

/// Integer lanes of step `p` times their scales, accumulated:
/// `acc + f32(weight_scales) * act_scales[16p..16p+16] * f32(dot)`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
fn scaled_add(acc: __m512, dot: __m512i, weight_scales_f16: __m512i, act_scales: &[f32], p: usize) -> __m512 {
    let act = &act_scales[16 * p..16 * p + 16];
    // SAFETY: `act` is a bounds-checked slice of exactly 16 f32; unaligned load is allowed.
    let act = unsafe { _mm512_loadu_ps(act.as_ptr()) };
    let scale = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(weight_scales_f16)), act);
    _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), acc)
}

/// One Q8_0 block pair `p` of `row` (the second block may be missing at the row end);
/// used for a lone last block (whole pairs run inline in [`row_dot_q8_0`]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
fn q8_0_pair(acc: __m512, row: &[u8], lanes: &Q8Lanes, p: usize) -> __m512 {
    let at = 2 * Q8_0_BYTES * p;
    assert!(at < row.len() && lanes.codes.len() >= 64 * (p + 1) && lanes.offsets.len() >= 16 * (p + 1));
    let base = row[at..].as_ptr();
    // SAFETY: a whole pair spans bytes `at..at+68` of `row` and the loads read
    // `at+2..at+34`, `at+36..at+68` and `at..at+64`; a lone last block spans `at..at+34`
    // and both loads are masked to it. 64 codes and 16 offsets at the pair's index are
    // inside the lanes (asserted).
    let (weights, raw, codes, start) = unsafe {
        let (weights, raw) = if row.len() - at >= 2 * Q8_0_BYTES {
            let lo = _mm256_loadu_si256(base.add(2) as *const __m256i);
            let hi = _mm256_loadu_si256(base.add(Q8_0_BYTES + 2) as *const __m256i);
            (_mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi), _mm512_loadu_si512(base as *const _))
        } else {
            // The missing second block reads as scale 0 (zero bytes), codes 0, offset 0.
            (
                _mm512_maskz_loadu_epi8(u32::MAX as u64, base.add(2) as *const i8),
                _mm512_maskz_loadu_epi8((1u64 << Q8_0_BYTES) - 1, base as *const i8),
            )
        };
        (
            weights,
            raw,
            _mm512_loadu_si512(lanes.codes.as_ptr().add(64 * p) as *const _),
            _mm512_loadu_si512(lanes.offsets.as_ptr().add(16 * p) as *const _),
        )
    };
    let dot = _mm512_dpbusd_epi32(start, _mm512_xor_si512(weights, _mm512_set1_epi8(-128)), codes);
    let weight_scales = _mm512_permutexvar_epi8(load_table(&Q8_0_SCALE_TABLE), raw);
    scaled_add(acc, dot, weight_scales, &lanes.scales, p)
}

/// Q8_0 row (whole blocks) dot 8-bit activations laid out by [`Q8Lanes::for_avx512`].
///
/// Whole pairs read their two f16 scales as scalars, convert them together (F16C) and
/// spread them with one blend instead of a 64-byte load, `vpermb` and a 16-lane
/// conversion: 2.25 -> 1.95 ns per pair on one Zen 4 core (L2-resident rows).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,f16c")]
pub fn row_dot_q8_0(row: &[u8], lanes: &Q8Lanes) -> f32 {
    let blocks = row.len() / Q8_0_BYTES;
    assert_eq!(row.len(), blocks * Q8_0_BYTES, "Q8_0 row of {} bytes is not whole blocks", row.len());
    let pairs = blocks.div_ceil(2);
    assert!(
        lanes.codes.len() >= 64 * pairs
            && lanes.offsets.len() >= 16 * pairs
            && lanes.scales.len() >= 16 * pairs
            && lanes.block_scales.len() >= 2 * pairs,
        "Q8_0 AVX-512 row of {blocks} blocks does not match the activation lanes"
    );
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for (p, pair) in row.chunks_exact(2 * Q8_0_BYTES).enumerate() {
        // SAFETY: `pair` is 68 bytes, so the loads of `[2, 34)`, `[36, 68)` and the
        // scales at `[0, 2)` and `[34, 36)` lie inside it; pair p < pairs has its lanes
        // and the two block scales at 2p (asserted above).
        let (weights, codes, start, act, scale_bits) = unsafe {
            let lo = _mm256_loadu_si256(pair.as_ptr().add(2) as *const __m256i);
            let hi = _mm256_loadu_si256(pair.as_ptr().add(Q8_0_BYTES + 2) as *const __m256i);
            let first = (pair.as_ptr() as *const u16).read_unaligned();
            let second = (pair.as_ptr().add(Q8_0_BYTES) as *const u16).read_unaligned();
            (
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi),
                _mm512_loadu_si512(lanes.codes.as_ptr().add(64 * p) as *const _),
                _mm512_loadu_si512(lanes.offsets.as_ptr().add(16 * p) as *const _),
                // d_x of blocks 2p and 2p + 1 in the two low lanes.
                _mm_castpd_ps(_mm_load_sd(lanes.block_scales.as_ptr().add(2 * p) as *const f64)),
                u16::from_le(first) as u32 | (u16::from_le(second) as u32) << 16,
            )
        };
        let dot = _mm512_dpbusd_epi32(start, _mm512_xor_si512(weights, _mm512_set1_epi8(-128)), codes);
        // d_w * d_x of both blocks, then spread over their 8 lanes each (the same f32
        // products as spreading first).
        let both = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(scale_bits as i32)), act);
        let scales =
            _mm512_mask_blend_ps(0xFF00, _mm512_broadcastss_ps(both), _mm512_broadcastss_ps(_mm_movehdup_ps(both)));
        acc0 = _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(dot), acc0);
        std::mem::swap(&mut acc0, &mut acc1);
    }
    if blocks % 2 == 1 {
        acc0 = q8_0_pair(acc0, row, lanes, pairs - 1);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

/// One Q4_0 quad `q` (blocks `4q..4q+4`, bytes `72q..72q+72`) of `row`; blocks past the
/// row end read as zero bytes (scale 0). Used for the partial last quad of a row (whole
/// quads take [`q4_0_whole_quad`], which measured 10-15% faster).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) fn q4_0_quad(acc: __m512, row: &[u8], lanes: &Q8Lanes, q: usize) -> __m512 {
    let at = 4 * Q4_0_BYTES * q;
    assert!(at < row.len() && lanes.codes.len() >= 128 * (q + 1) && lanes.offsets.len() >= 16 * (q + 1));
    let bytes_here = (row.len() - at).min(4 * Q4_0_BYTES);
    let first_mask = u64::MAX >> (64 - bytes_here.min(64));
    let second_mask = if bytes_here > 64 { u64::MAX >> (128 - bytes_here) } else { 0 };
    let (lo_codes, hi_codes) = (&lanes.codes[128 * q..128 * q + 64], &lanes.codes[128 * q + 64..128 * q + 128]);
    let start = &lanes.offsets[16 * q..16 * q + 16];
    // SAFETY: both weight loads are masked to the `bytes_here` bytes of this quad that lie
    // inside `row`; the other loads read bounds-checked slices of exactly 64 bytes.
    let (first, second, lo_codes, hi_codes, start) = unsafe {
        (
            _mm512_maskz_loadu_epi8(first_mask, row.as_ptr().add(at) as *const i8),
            _mm512_maskz_loadu_epi8(second_mask, row.as_ptr().wrapping_add(at + 64) as *const i8),
            _mm512_loadu_si512(lo_codes.as_ptr() as *const _),
            _mm512_loadu_si512(hi_codes.as_ptr() as *const _),
            _mm512_loadu_si512(start.as_ptr() as *const _),
        )
    };
    let packed = _mm512_permutex2var_epi8(first, load_table(&Q4_0_NIBBLE_TABLE), second);
    let low4 = _mm512_set1_epi8(0x0F);
    let lo = _mm512_and_si512(packed, low4);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(packed), low4);
    let dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, lo, lo_codes), hi, hi_codes);
    let weight_scales = _mm512_permutexvar_epi8(load_table(&Q4_0_SCALE_TABLE), first);
    scaled_add(acc, dot, weight_scales, &lanes.scales, q)
}

/// One whole Q4_0 quad `q` (blocks `4q..4q+4`, bytes `72q..72q+72`, all inside `row`):
/// the four 16-byte nibble runs are loaded straight into the four 128-bit lanes and the
/// four f16 scales are read as scalars, so the only full-width shuffle is the one that
/// spreads the four converted scales over their lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) fn q4_0_whole_quad(acc: __m512, row: &[u8], lanes: &Q8Lanes, q: usize) -> __m512 {
    let quad = &row[4 * Q4_0_BYTES * q..4 * Q4_0_BYTES * (q + 1)];
    let (codes, start, act) =
        (&lanes.codes[128 * q..128 * q + 128], &lanes.offsets[16 * q..16 * q + 16], &lanes.scales[16 * q..16 * q + 16]);
    let scale_bits = |b: usize| u64::from(u16::from_le_bytes([quad[Q4_0_BYTES * b], quad[Q4_0_BYTES * b + 1]]));
    let scales_f16 = scale_bits(0) | scale_bits(1) << 16 | scale_bits(2) << 32 | scale_bits(3) << 48;
    // SAFETY: `quad` is 72 bytes, so each 16-byte run at `18b + 2` (b < 4) lies inside
    // it; `codes` is 128 bytes and `start`, `act` 16 lanes of 4 bytes (bounds-checked
    // slices), read with unaligned loads.
    let (packed, lo_codes, hi_codes, start, act) = unsafe {
        let run = |b: usize| _mm_loadu_si128(quad.as_ptr().add(Q4_0_BYTES * b + 2) as *const __m128i);
        let packed = _mm512_inserti32x4::<1>(_mm512_castsi128_si512(run(0)), run(1));
        let packed = _mm512_inserti32x4::<3>(_mm512_inserti32x4::<2>(packed, run(2)), run(3));
        (
            packed,
            _mm512_loadu_si512(codes.as_ptr() as *const _),
            _mm512_loadu_si512(codes.as_ptr().add(64) as *const _),
            _mm512_loadu_si512(start.as_ptr() as *const _),
            _mm512_loadu_ps(act.as_ptr()),
        )
    };
    let low4 = _mm512_set1_epi8(0x0F);
    let lo = _mm512_and_si512(packed, low4);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(packed), low4);
    let dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, lo, lo_codes), hi, hi_codes);
    let four = _mm_cvtph_ps(_mm_cvtsi64_si128(scales_f16 as i64));
    let spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    let weight_scales = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(four));
    _mm512_fmadd_ps(_mm512_mul_ps(weight_scales, act), _mm512_cvtepi32_ps(dot), acc)
}

/// `vpermi2b` tables of a Q4_0 octet (8 blocks, 144 bytes, read as `a = [0, 64)`,
/// `b = [64, 128)` and `c = [80, 144)`): the nibble runs of blocks 0..4 from `(a, b)`
/// and of blocks 4..8 from `(b, c)` into 128-bit lanes, and the 8 f16 scales (bytes
/// `18k, 18k + 1`) from `(a, b)` into the low 16 bytes.
pub(super) const Q4_0_OCTET_TABLES: [[u8; 64]; 3] = {
    let mut t = [[0u8; 64]; 3];
    let mut i = 0;
    while i < 64 {
        let (lane, j) = (i / 16, i % 16);
        t[0][i] = (Q4_0_BYTES * lane + 2 + j) as u8;
        let k = Q4_0_BYTES * (lane + 4) + 2 + j; // byte of the octet, 74..144
        t[1][i] = if k < 128 { (k - 64) as u8 } else { (64 + k - 80) as u8 };
        t[2][i] = if i < 16 { (Q4_0_BYTES * (i / 2) + i % 2) as u8 } else { 0 };
        i += 1;
    }
    t
};

/// One quad's integer lanes against its activation lanes, scaled and accumulated:
/// `acc + scales * (start + lo . lo_codes + hi . hi_codes)`, where `scales` holds each
/// lane's `d_w * d_x` (the product taken per block before spreading over the lanes is
/// the same f32 as the product of the spread factors).
///
/// # Safety
/// Quad `q` must have its 128 codes and 16 offsets inside `lanes`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) unsafe fn q4_0_quad_lanes(
    acc: __m512,
    packed: __m512i,
    scales: __m512,
    lanes: &Q8Lanes,
    q: usize,
) -> __m512 {
    // SAFETY: the caller guarantees codes `128q..128q+128` and lanes `16q..16q+16`.
    let (lo_codes, hi_codes, start) = unsafe {
        (
            _mm512_loadu_si512(lanes.codes.as_ptr().add(128 * q) as *const _),
            _mm512_loadu_si512(lanes.codes.as_ptr().add(128 * q + 64) as *const _),
            _mm512_loadu_si512(lanes.offsets.as_ptr().add(16 * q) as *const _),
        )
    };
    let low4 = _mm512_set1_epi8(0x0F);
    let lo = _mm512_and_si512(packed, low4);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(packed), low4);
    let dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(start, lo, lo_codes), hi, hi_codes);
    _mm512_fmadd_ps(scales, _mm512_cvtepi32_ps(dot), acc)
}

/// Q4_0 row (whole blocks) dot 8-bit activations laid out by [`Q8Lanes::for_avx512`].
///
/// Whole octets (8 blocks, 144 bytes) take three plain loads and three `vpermi2b`
/// (nibbles of each quad, the 8 scales), so a quad costs about 16 instructions: the
/// quad-at-a-time loop needed about 48 (scalar scale gathering and bounds checks) and
/// ran at ~21 GB/s per core even from L1, instruction-bound. A remaining whole quad
/// takes [`q4_0_whole_quad`], a partial one the masked [`q4_0_quad`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub fn row_dot_q4_0(row: &[u8], lanes: &Q8Lanes) -> f32 {
    let blocks = row.len() / Q4_0_BYTES;
    assert_eq!(row.len(), blocks * Q4_0_BYTES, "Q4_0 row of {} bytes is not whole blocks", row.len());
    let (octets, whole, quads) = (blocks / 8, blocks / 4, blocks.div_ceil(4));
    assert!(
        lanes.codes.len() >= 128 * quads
            && lanes.offsets.len() >= 16 * quads
            && lanes.scales.len() >= 16 * quads
            && lanes.block_scales.len() >= 8 * octets,
        "Q4_0 AVX-512 row of {blocks} blocks does not match the activation lanes"
    );
    let tables = Q4_0_OCTET_TABLES.map(|t| load_table(&t));
    let spread = [
        _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
        _mm512_set_epi32(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4),
    ];
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for o in 0..octets {
        let octet = &row[8 * Q4_0_BYTES * o..8 * Q4_0_BYTES * (o + 1)];
        prefetch_ahead(octet);
        // SAFETY: `octet` is 144 bytes, so the loads of `[0, 64)`, `[64, 128)` and
        // `[80, 144)` lie inside it; quads 2o and 2o + 1 < quads have their lanes and
        // blocks 8o..8o+8 their activation scales (asserted above).
        unsafe {
            let a = _mm512_loadu_si512(octet.as_ptr() as *const _);
            let b = _mm512_loadu_si512(octet.as_ptr().add(64) as *const _);
            let c = _mm512_loadu_si512(octet.as_ptr().add(80) as *const _);
            let scales_f16 = _mm512_castsi512_si128(_mm512_permutex2var_epi8(a, tables[2], b));
            // d_w * d_x of the octet's 8 blocks, then spread over each quad's lanes.
            let act_scales = _mm256_loadu_ps(lanes.block_scales.as_ptr().add(8 * o));
            let scales = _mm512_castps256_ps512(_mm256_mul_ps(_mm256_cvtph_ps(scales_f16), act_scales));
            let first = _mm512_permutex2var_epi8(a, tables[0], b);
            let second = _mm512_permutex2var_epi8(b, tables[1], c);
            acc0 = q4_0_quad_lanes(acc0, first, _mm512_permutexvar_ps(spread[0], scales), lanes, 2 * o);
            acc1 = q4_0_quad_lanes(acc1, second, _mm512_permutexvar_ps(spread[1], scales), lanes, 2 * o + 1);
        }
    }
    for q in 2 * octets..whole {
        acc0 = q4_0_whole_quad(acc0, row, lanes, q);
    }
    for q in whole..quads {
        acc1 = q4_0_quad(acc1, row, lanes, q);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

/// The 8 scales and 8 mins (6 bits each) of a Q4_K super-block from its 12 packed bytes,
/// as little-endian byte vectors (sub-block `j` in byte `j`). See [`crate::ggml::q4_k`]:
/// sub-blocks 0..4 take the low 6 bits of bytes 0..4 / 4..8; sub-blocks 4..8 take a
/// nibble of bytes 8..12 and the top 2 bits of bytes 0..4 / 4..8 as bits 4..6.
#[inline]
fn q4_k_scales_mins(packed: &[u8]) -> (u64, u64) {
    let word = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let (w0, w1, w2) = (word(0), word(1), word(2));
    let scales_lo = w0 & 0x3F3F_3F3F;
    let mins_lo = w1 & 0x3F3F_3F3F;
    let scales_hi = (w2 & 0x0F0F_0F0F) | ((w0 >> 2) & 0x3030_3030);
    let mins_hi = ((w2 >> 4) & 0x0F0F_0F0F) | ((w1 >> 2) & 0x3030_3030);
    (scales_lo as u64 | (scales_hi as u64) << 32, mins_lo as u64 | (mins_hi as u64) << 32)
}

/// For the `k`-th 64 nibbles of a Q4_K super-block (sub-blocks `(0,2), (1,3), (4,6),
/// (5,7)`), i16 lanes 0..16 take the first sub-block's scale byte and lanes 16..32 the
/// second's; every high byte takes byte [`Q4_K_ZERO_BYTE`] of the scale vector, which is
/// zero, so one `vpermb` builds the i16 lanes without a mask.
const fn q4_k_scale_table(k: usize) -> [u8; 64] {
    let (first, second) = [(0, 2), (1, 3), (4, 6), (5, 7)][k];
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = if i % 2 == 1 {
            Q4_K_ZERO_BYTE
        } else if i < 32 {
            first
        } else {
            second
        };
        i += 1;
    }
    t
}

/// A byte of the Q4_K scale vector that is always zero: the 8 scale bytes fill bytes
/// 0..8 of a zero-extended 64-bit move.
const Q4_K_ZERO_BYTE: u8 = 8;

const Q4_K_SCALE_TABLES: [[u8; 64]; 4] =
    [q4_k_scale_table(0), q4_k_scale_table(1), q4_k_scale_table(2), q4_k_scale_table(3)];

/// Q4_K row (whole super-blocks) dot 8-bit activations laid out by [`Q8Lanes::for_avx512`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub fn row_dot_q4_k(row: &[u8], lanes: &Q8Lanes) -> f32 {
    let supers = row.len() / Q4_K_BYTES;
    assert!(
        row.len() == supers * Q4_K_BYTES
            && lanes.codes.len() >= 256 * supers
            && lanes.scales.len() >= supers
            && lanes.bsums.len() >= 8 * supers,
        "Q4_K AVX-512 row of {} bytes does not match the activation lanes",
        row.len()
    );
    let tables = Q4_K_SCALE_TABLES.map(|t| load_table(&t));
    let low4 = _mm512_set1_epi8(0x0F);
    let mut acc = _mm512_setzero_ps();
    let mut min_acc = _mm_setzero_ps();
    for (s, block) in row.chunks_exact(Q4_K_BYTES).enumerate() {
        let (scales, mins) = q4_k_scales_mins(&block[4..16]);
        let d_dmin_bits = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        // [d * d_x, dmin * d_x, 0, 0]
        let d_dmin = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d_dmin_bits as i32)), _mm_set1_ps(lanes.scales[s]));
        // Bytes 8..64 zero (`vmovq` clears the rest of the 128 bits, the extension the rest).
        let scale_bytes = _mm512_zextsi128_si512(_mm_cvtsi64_si128(scales as i64));
        // SAFETY: `block` is 144 bytes, so the two 64-byte loads at 16 and 80 are inside
        // it; super-block `s < supers` owns codes `256s..256s+256` and bsums `8s..8s+8`
        // (asserted above).
        unsafe {
            let q0 = _mm512_loadu_si512(block.as_ptr().add(16) as *const _);
            let q1 = _mm512_loadu_si512(block.as_ptr().add(80) as *const _);
            let nibbles = [
                _mm512_and_si512(q0, low4),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q0), low4),
                _mm512_and_si512(q1, low4),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q1), low4),
            ];
            let codes = lanes.codes.as_ptr().add(256 * s);
            let mut isum = _mm512_setzero_si512();
            for (k, (nib, table)) in nibbles.iter().zip(&tables).enumerate() {
                let pairs = _mm512_maddubs_epi16(*nib, _mm512_loadu_si512(codes.add(64 * k) as *const _));
                let sub_scales = _mm512_permutexvar_epi8(*table, scale_bytes);
                isum = _mm512_dpwssd_epi32(isum, pairs, sub_scales);
            }
            acc = _mm512_fmadd_ps(_mm512_set1_ps(_mm_cvtss_f32(d_dmin)), _mm512_cvtepi32_ps(isum), acc);
            let bsums = _mm_loadu_si128(lanes.bsums.as_ptr().add(8 * s) as *const __m128i);
            let min_dot = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(mins as i64)), bsums);
            min_acc = _mm_fmadd_ps(_mm_permute_ps::<0b0101_0101>(d_dmin), _mm_cvtepi32_ps(min_dot), min_acc);
        }
    }
    let min_acc = _mm_add_ps(min_acc, _mm_movehl_ps(min_acc, min_acc));
    let min_sum = _mm_cvtss_f32(_mm_add_ss(min_acc, _mm_movehdup_ps(min_acc)));
    _mm512_reduce_add_ps(acc) - min_sum
}
