//! AVX-512 VNNI integer NF4/FP4 decode kernel (x86_64) with 8-bit activations and code
//! table ([`super::q8_fourbit`]), selected at run time as [`super::CpuKernel::Avx512`].
//!
//! Layout: a row is read 64 packed bytes (128 elements, a "group") at a time. Byte `j`
//! holds element `2j` in its high nibble and `2j + 1` in its low one; `vpermb` on the
//! bytes and on the bytes shifted right by 4, against the 16 codes repeated four times,
//! turns each nibble into its table code without masking ([`nibble_codes`]).
//! The activations come regrouped with 64-byte steps ([`FourBitQ8Lanes`]): one vector of
//! the high-nibble elements, one of the low-nibble ones. `vpdpbusd` multiplies unsigned
//! bytes with signed ones, so the table is stored offset by +128 (`tq + 128` in
//! `1..=255`): dword lane `k` adds the four products of bytes `4k..4k+4` of both
//! vectors, elements `8k..8k+8` of the group, exactly one q8 lane, and gets the i32 sum
//! `sum(tq * xq) + 128 * sum(xq)`. Scaled by `absmax * dx` like the scalar path, the
//! offset adds `absmax(b) * block_offsets[b]` per block `b`, which is subtracted once
//! per row (a dot of the row's absmax with the per-call offsets).
//!
//! Per group: 1 shift, 2 `vpermb`, 2 `vpdpbusd`, one conversion, one f32 product and
//! one FMA; against 3 shifts, 4 `vpermw`, 4 word multiply-adds and twice the activation
//! bytes for the 15-bit kernel (`x86_512_fourbit_q16`). One Zen 4 core, L2-resident
//! 4096-column rows: 2.4 (with `vpshufb` and two masks) against 3.5 ns per group.
//!
//! Numerics: the (offset) i32 lane sums are exact; the f32 combination differs from
//! [`super::q8_fourbit::fourbit_row_dot_q8_scalar`] in order and by the rounding of the
//! offset products (they are of the size of `absmax * |x|`, like the row's terms).
//!
//! Every function here requires avx512f, avx512bw, avx512vnni and avx512vbmi (checked by
//! `CpuKernel`); loads that could run past a row end are masked.

use std::arch::x86_64::*;

use super::q8_fourbit::{FourBitQ8Code, FourBitQ8Lanes, Q8_LANE};
use super::x86_512_fourbit::group_scales;

/// Packed bytes per group.
pub(crate) const GROUP_BYTES: usize = 64;

/// How far ahead of the group being read the kernel asks for weight bytes
/// (`prefetcht2`, toward the outer caches). One Zen 4 thread, 14336x4096 NF4 read from
/// memory (weight copies cycled, `linattn bench quant`): 25.0-26.3 GB/s at 16-64 KiB
/// against 21.8-23.9 without (nine runs each); `prefetcht0` at 2-8 KiB gained nothing.
/// Of the ggml kernels (`x86_512`) only Q4_0 takes the hint, at 8 KiB (the distance
/// measured per kernel).
const PREFETCH_AHEAD: usize = 32 << 10;
/// Elements per group.
const GROUP: usize = 2 * GROUP_BYTES;

/// The table codes (`tq + 128`) of the high and the low nibble of every byte of a group,
/// with `table` the 16 codes repeated four times: `vpermb` reads the low 6 bits of each
/// index byte, and every index with the same low 4 bits finds the same code, so neither
/// the byte nor the byte shifted right by 4 (its neighbour's low bits land in bits 4..8)
/// needs masking first. Two masks fewer per group than `vpshufb`, which reads 4 bits
/// but zeroes on bit 7 (one Zen 4 core, 4096-column rows from L2, marginal rate of 128
/// to 256 rows: 29.8-32.5 -> 33.0-36.4 GB/s over five runs each).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub(super) fn nibble_codes(words: __m512i, table: __m512i) -> (__m512i, __m512i) {
    (_mm512_permutexvar_epi8(_mm512_srli_epi16::<4>(words), table), _mm512_permutexvar_epi8(words, table))
}

/// The 16 i32 lane sums (each offset by `128 * sum(xq)` of its lane) of one group.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
fn offset_lane_sums(words: __m512i, x_high: __m512i, x_low: __m512i, table: __m512i) -> __m512i {
    let (high, low) = nibble_codes(words, table);
    _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), high, x_high), low, x_low)
}

/// The absmax of every lane of whole group `g` (its 128 elements lie inside the row).
///
/// # Safety
/// `absmax` must hold a scale for every block of the group: `((g + 1) * 128 - 1) >>
/// block_shift < absmax.len()`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn whole_group_scales(absmax: &[f32], g: usize, block_shift: u32, lane_block: __m512i) -> __m512 {
    let first = (GROUP * g) >> block_shift;
    let at = absmax.as_ptr();
    // SAFETY: the group's blocks `first..=((g + 1) * 128 - 1) >> block_shift` are inside
    // `absmax` (the caller's contract); the masked load reads only those.
    unsafe {
        if block_shift >= GROUP.trailing_zeros() {
            _mm512_set1_ps(*at.add(first))
        } else if block_shift == GROUP.trailing_zeros() - 1 {
            // Two blocks of 64: lanes 0..8 and 8..16.
            _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(*at.add(first)), _mm512_set1_ps(*at.add(first + 1)))
        } else {
            let blocks = GROUP >> block_shift;
            let s = _mm512_maskz_loadu_ps((1u16 << blocks) - 1, at.add(first));
            _mm512_permutexvar_ps(lane_block, s)
        }
    }
}

/// bitsandbytes 4-bit row dot with q8 activations laid out by [`FourBitQ8Lanes::new`]
/// with steps of [`GROUP_BYTES`]: `packed` holds the row's bytes, `absmax` one scale per
/// block (the block size given to `FourBitQ8Lanes::new`, dividing the row), `code` the
/// quantized table.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
pub fn fourbit_row_dot_q8(packed: &[u8], absmax: &[f32], code: &FourBitQ8Code, lanes: &FourBitQ8Lanes) -> f32 {
    let elems = 2 * packed.len();
    let shift = lanes.block_shift;
    assert!(
        shift >= 5 && elems.is_multiple_of(1 << shift) && absmax.len() == elems >> shift,
        "4-bit q8 AVX-512 row: {elems} elements, block {}, {} scales",
        1usize << shift,
        absmax.len()
    );
    let groups = packed.len().div_ceil(GROUP_BYTES);
    assert!(
        lanes.xq.len() >= groups * GROUP
            && lanes.dx.len() >= groups * GROUP / Q8_LANE
            && lanes.block_offsets.len() == absmax.len(),
        "4-bit q8 AVX-512 row: activations laid out for another shape"
    );
    // SAFETY: `tq` is 16 i8 and `lane_block` 16 i32; unaligned loads are allowed. The
    // table offset by +128 as unsigned bytes is `tq ^ 0x80`.
    let (table, lane_block) = unsafe {
        let signed = _mm_loadu_si128(code.tq.as_ptr() as *const _);
        (
            _mm512_broadcast_i32x4(_mm_xor_si128(signed, _mm_set1_epi8(-128))),
            _mm512_loadu_si512(lanes.lane_block.as_ptr() as *const _),
        )
    };
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let (xq, dx) = (lanes.xq.as_ptr(), lanes.dx.as_ptr());
    for (g, bytes) in packed.chunks_exact(GROUP_BYTES).enumerate() {
        // A hint for the bytes [`PREFETCH_AHEAD`] further on (rows later); never faults.
        _mm_prefetch::<_MM_HINT_T2>(bytes.as_ptr().wrapping_add(PREFETCH_AHEAD) as *const i8);
        // SAFETY: `bytes` is 64 bytes; group g < groups has 128 activation bytes at 128g
        // and 16 lane scales at 16g (asserted above); a whole group's blocks lie inside
        // the row, whose scales `absmax` holds (asserted above).
        let (words, x_high, x_low, scale) = unsafe {
            let x = xq.add(GROUP * g);
            (
                _mm512_loadu_si512(bytes.as_ptr() as *const _),
                _mm512_loadu_si512(x as *const _),
                _mm512_loadu_si512(x.add(GROUP_BYTES) as *const _),
                _mm512_mul_ps(whole_group_scales(absmax, g, shift, lane_block), _mm512_loadu_ps(dx.add(16 * g))),
            )
        };
        // Two accumulators in turn hide the FMA latency.
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(offset_lane_sums(words, x_high, x_low, table)), scale, acc0);
        std::mem::swap(&mut acc0, &mut acc1);
    }
    let whole = packed.len() / GROUP_BYTES;
    if whole < groups {
        // A partial last group (16, 32 or 48 bytes; blocks below 128 elements): the
        // missing bytes load as zero and their activations and scales are zero.
        let bytes = &packed[GROUP_BYTES * whole..];
        let x = &lanes.xq[GROUP * whole..GROUP * whole + GROUP];
        let d = &lanes.dx[16 * whole..16 * whole + 16];
        // SAFETY: the weight load is masked to the `bytes.len()` (a multiple of 4) bytes
        // left in `packed`; `x` is 128 bytes and `d` 16 f32 (bounds-checked slices).
        let (words, x_high, x_low, d) = unsafe {
            (
                _mm512_maskz_loadu_epi32((1u16 << (bytes.len() / 4)) - 1, bytes.as_ptr() as *const i32),
                _mm512_loadu_si512(x.as_ptr() as *const _),
                _mm512_loadu_si512(x[GROUP_BYTES..].as_ptr() as *const _),
                _mm512_loadu_ps(d.as_ptr()),
            )
        };
        let scale = _mm512_mul_ps(group_scales(absmax, whole, shift, lane_block), d);
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(offset_lane_sums(words, x_high, x_low, table)), scale, acc0);
    }
    // Take off the offsets, 16 blocks at a time.
    for (scales, offsets) in absmax.chunks(16).zip(lanes.block_offsets.chunks(16)) {
        let mask = (1u32 << scales.len()).wrapping_sub(1) as u16;
        // SAFETY: both loads are masked to the `scales.len()` (<= 16) elements of the
        // two equal-length chunks.
        let (a, o) =
            unsafe { (_mm512_maskz_loadu_ps(mask, scales.as_ptr()), _mm512_maskz_loadu_ps(mask, offsets.as_ptr())) };
        acc1 = _mm512_fnmadd_ps(a, o, acc1);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) * code.scale
}
