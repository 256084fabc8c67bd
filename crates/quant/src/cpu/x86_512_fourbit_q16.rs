//! AVX-512 integer NF4/FP4 decode kernel (x86_64): 15-bit activations and code table
//! ([`super::q16`]), selected at run time as [`super::CpuKernel::Avx512`].
//!
//! Layout: a row is read 64 packed bytes (128 elements, a "group") at a time as 32
//! words. Word `m` holds elements `4m..4m+4`: bits 0..4 element `4m+1`, 4..8 element
//! `4m`, 8..12 element `4m+3`, 12..16 element `4m+2` (element `2j` sits in the high
//! nibble of byte `j`). Shifting every word right by 0, 4, 8 and 12 puts one of them in
//! bits 0..4; `vpermw` looks at bits 0..5 of each index, so the 16-entry i16 table is
//! stored twice (32 words) and the stray bit 4 selects an identical copy: no masking.
//! Each shift gives 32 i16 weights; `vpdpwssd` multiplies them with 32 i16 activations
//! and adds word pairs into 16 i32 lanes. Dword lane `k` gets words `2k` and `2k+1`,
//! that is elements `8k..8k+8` of the group: after the four shifts it holds exactly the
//! i32 lane sum of [`super::q16`]. The activations are re-laid once per matvec
//! ([`Q16Lanes`]) to match; the lane scales `dx` are already in lane order.
//!
//! Per group: 3 shifts, 4 `vpermw`, 4 `vpdpwssd`, one conversion and two f32 products,
//! against 7 shifts, 8 `vpermps` and 8 FMAs for the f32 kernel (`x86_512_fourbit`),
//! whose shuffles and shifts share two vector pipes and bound it below the memory
//! bandwidth of two cores.
//!
//! Numerics: the i32 lane sums are exact; only the order of the f32 sum over lanes
//! differs from [`super::q16::fourbit_row_dot_q16_scalar`].
//!
//! Every function here requires avx512f, avx512bw and avx512vnni (checked by
//! `CpuKernel`); loads that could run past a row end are masked.

use std::arch::x86_64::*;

use super::aligned::LineOffsetBuffer;
use super::q16::{Q16_LANE, Q16Acts, Q16Code};
use super::x86_512_fourbit::{group_scales, lane_blocks};

/// Elements per group (64 packed bytes).
const GROUP: usize = 128;

/// Element (within its group) that word `w` of activation vector `t` multiplies:
/// shift `4t` exposes element `4m + [1, 0, 3, 2][t]` of word `m`.
fn source_element(t: usize, w: usize) -> usize {
    4 * w + [1, 0, 3, 2][t]
}

/// Where the regrouped activations start within a cache line: 16 bytes past a boundary
/// ran 14336x4096 at 17.5-18.2 GB/s on one Zen 4 core, against 10.5-16 GB/s at 0 bytes
/// (see `super::aligned`).
const ACTIVATION_LEAD_BYTES: usize = 16;
/// Where the lane scales start within a cache line: on a line boundary (with the
/// activations at 16 bytes, two threads ran 4096x4096 at 32-35 GB/s with the scales at
/// 0 or 16 bytes and 29 GB/s at 32; a heap `Vec` lands anywhere, call by call).
const DX_LEAD_BYTES: usize = 0;

/// Activations of one 4-bit q16 matvec, regrouped: for group `g`, vector `t` (0..4),
/// word `w` (0..32): `xq[128g + source_element(t, w)]` (zero past the end); lane scales
/// `dx` padded with zeros to whole groups; the block geometry.
pub(crate) struct Q16Lanes {
    xq: LineOffsetBuffer<i16>,
    dx: LineOffsetBuffer<f32>,
    block_shift: u32,
    lane_block: [i32; 16],
}

impl Q16Lanes {
    /// Regroups quantized activations for blocks of `bs` (a power of two >= 32).
    pub(crate) fn new(acts: &Q16Acts, bs: usize) -> Q16Lanes {
        assert!(bs.is_power_of_two() && bs >= 32, "4-bit block size {bs}: expected a power of two >= 32");
        let groups = acts.xq.len().div_ceil(GROUP);
        let mut xq = LineOffsetBuffer::zeroed(groups * GROUP, ACTIVATION_LEAD_BYTES);
        for g in 0..groups {
            for t in 0..4 {
                for w in 0..32 {
                    let e = GROUP * g + source_element(t, w);
                    xq[GROUP * g + 32 * t + w] = acts.xq.get(e).copied().unwrap_or(0);
                }
            }
        }
        let mut dx = LineOffsetBuffer::zeroed(groups * GROUP / Q16_LANE, DX_LEAD_BYTES);
        dx[..acts.dx.len()].copy_from_slice(&acts.dx);
        Q16Lanes { xq, dx, block_shift: bs.trailing_zeros(), lane_block: lane_blocks(bs) }
    }
}

/// Activation vector `t` (32 words) of group `g`.
#[inline]
#[target_feature(enable = "avx512f")]
fn act(lanes: &Q16Lanes, g: usize, t: usize) -> __m512i {
    let v = &lanes.xq[GROUP * g + 32 * t..GROUP * g + 32 * t + 32];
    // SAFETY: `v` is a bounds-checked slice of 32 i16 (64 bytes); unaligned load is allowed.
    unsafe { _mm512_loadu_si512(v.as_ptr() as *const _) }
}

/// The 16 i32 lane sums of one group from its 32 packed words and its four activation
/// vectors (see the module header).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn lane_sums(words: __m512i, x: [__m512i; 4], table: __m512i) -> __m512i {
    let w0 = _mm512_permutexvar_epi16(words, table);
    let w1 = _mm512_permutexvar_epi16(_mm512_srli_epi16::<4>(words), table);
    let w2 = _mm512_permutexvar_epi16(_mm512_srli_epi16::<8>(words), table);
    let w3 = _mm512_permutexvar_epi16(_mm512_srli_epi16::<12>(words), table);
    // Two chains of two, so the four multiply-adds do not wait on each other in turn.
    let a = _mm512_dpwssd_epi32(_mm512_madd_epi16(w0, x[0]), w2, x[2]);
    let b = _mm512_dpwssd_epi32(_mm512_madd_epi16(w1, x[1]), w3, x[3]);
    _mm512_add_epi32(a, b)
}

/// The 16 i32 lane sums of the partial last group `g` of a row (16, 32 or 48 bytes; the
/// missing words are zero and so are their activations).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn partial_group_sums(packed: &[u8], g: usize, table: __m512i, lanes: &Q16Lanes) -> __m512i {
    let bytes = &packed[64 * g..(64 * g + 64).min(packed.len())];
    let dwords: __mmask16 = (1u16 << (bytes.len() / 4)) - 1;
    // SAFETY: the load is masked to the `bytes.len()` (a multiple of 4) bytes of this
    // group, which lie inside `packed`.
    let words = unsafe { _mm512_maskz_loadu_epi32(dwords, bytes.as_ptr() as *const i32) };
    lane_sums(words, [0, 1, 2, 3].map(|t| act(lanes, g, t)), table)
}

/// bitsandbytes 4-bit row dot with q16 activations regrouped by [`Q16Lanes::new`]:
/// `packed` holds the row's bytes, `absmax` one scale per block (the block size given to
/// `Q16Lanes::new`, dividing the row), `code` the quantized table.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub fn fourbit_row_dot_q16(packed: &[u8], absmax: &[f32], code: &Q16Code, lanes: &Q16Lanes) -> f32 {
    let elems = 2 * packed.len();
    assert!(
        elems.is_multiple_of(1 << lanes.block_shift) && absmax.len() == elems >> lanes.block_shift,
        "4-bit q16 AVX-512 row: {elems} elements, block {}, {} scales",
        1usize << lanes.block_shift,
        absmax.len()
    );
    assert!(lanes.xq.len() >= elems.div_ceil(GROUP) * GROUP, "4-bit q16 AVX-512 row: activations too short");
    let mut twice = [0i16; 32];
    twice[..16].copy_from_slice(&code.tq);
    twice[16..].copy_from_slice(&code.tq);
    // SAFETY: `twice` is 32 i16 and `lane_block` 16 i32 (64 bytes each); unaligned loads
    // are allowed.
    let (table, lane_block) = unsafe {
        (_mm512_loadu_si512(twice.as_ptr() as *const _), _mm512_loadu_si512(lanes.lane_block.as_ptr() as *const _))
    };
    let groups = packed.len().div_ceil(64);
    assert!(lanes.dx.len() >= 16 * groups, "4-bit q16 AVX-512 row: activation scales too short");
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    // Whole groups: a plain load and unchecked activation loads (bounds asserted above);
    // one thread at 14336x4096 ran 16.3 -> 17.0 GB/s against the masked, per-group
    // checked path that now only takes a partial last group.
    let whole = packed.len() / 64;
    for (g, bytes) in packed.chunks_exact(64).enumerate() {
        // SAFETY: `bytes` is 64 bytes; group g < groups has 128 activations at 128g and 16
        // lane scales at 16g (asserted above).
        let (words, x, dx) = unsafe {
            let x = lanes.xq.as_ptr().add(GROUP * g);
            (
                _mm512_loadu_si512(bytes.as_ptr() as *const _),
                [0, 1, 2, 3].map(|t| _mm512_loadu_si512(x.add(32 * t) as *const _)),
                _mm512_loadu_ps(lanes.dx.as_ptr().add(16 * g)),
            )
        };
        let scale = _mm512_mul_ps(group_scales(absmax, g, lanes.block_shift, lane_block), dx);
        // Two accumulators in turn hide the FMA latency.
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lane_sums(words, x, table)), scale, acc0);
        std::mem::swap(&mut acc0, &mut acc1);
    }
    for g in whole..groups {
        let dx = &lanes.dx[16 * g..16 * g + 16];
        // SAFETY: `dx` is a bounds-checked slice of 16 f32; unaligned load is allowed.
        let dx = unsafe { _mm512_loadu_ps(dx.as_ptr()) };
        let scale = _mm512_mul_ps(group_scales(absmax, g, lanes.block_shift, lane_block), dx);
        let sums = _mm512_cvtepi32_ps(partial_group_sums(packed, g, table, lanes));
        acc0 = _mm512_fmadd_ps(sums, scale, acc0);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) * code.scale
}
