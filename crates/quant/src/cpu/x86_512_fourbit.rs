//! AVX-512 bitsandbytes NF4/FP4 decode kernel (x86_64), selected at run time as
//! [`super::CpuKernel::Avx512`].
//!
//! Layout: a row is read 64 packed bytes (128 elements, a "group") at a time as 16
//! dwords. Dword `k` holds elements `8k..8k+8`: byte `i` of it has element `8k + 2i` in
//! its high nibble and `8k + 2i + 1` in its low one, so shifting the whole register right
//! by `8i + 4` (or `8i`) puts element `8k + t` of every dword in bits 0..4. The 16-entry
//! f32 code table is one zmm and `vpermps` only looks at bits 0..4 of each index, so each
//! shift is followed by one `vpermps` that yields 16 weights (`code[nibble]`), with no
//! nibble masking or widening. The activations are re-laid once per matvec ([`FourBitLanes`]) so
//! that `x[8k + t]` sits in lane `k` of the group's `t`-th vector.
//!
//! Numerics: `sum over blocks of absmax * sum(code[q] * x)` in f32 like the scalar path;
//! only the summation order differs (exact up to f32 rounding). Every lane of a group
//! belongs to one block (blocks are powers of two >= 32 elements, 8 elements per lane),
//! so each lane's partial sum is scaled by its own block's absmax.
//!
//! Every function here requires avx512f (checked by `CpuKernel`); loads that could run
//! past a row end are masked.

use std::arch::x86_64::*;

/// Elements per group (64 packed bytes).
const GROUP: usize = 128;

/// Activations of one 4-bit matvec, regrouped: for group `g`, vector `t` (0..8), lane `k`
/// (0..16): `x[128g + 8k + t]` (zero past the end of `x`); plus the block geometry.
pub(crate) struct FourBitLanes {
    x: Vec<f32>,
    /// log2 of the block size.
    block_shift: u32,
    /// Lane `k` of a group holds elements `128g + 8k..+8`, inside block `(128g + 8k) / bs`:
    /// `8k / min(bs, 128)` blocks after the group's first.
    lane_block: [i32; 16],
}

impl FourBitLanes {
    /// Regroups `x` (a row's worth of activations) for blocks of `bs` (a power of two,
    /// at least the 8 elements of a lane).
    pub(crate) fn new(x: &[f32], bs: usize) -> FourBitLanes {
        assert!(bs.is_power_of_two() && bs >= 8, "4-bit block size {bs}: expected a power of two >= 8");
        let groups = x.len().div_ceil(GROUP);
        let mut lanes = vec![0.0f32; groups * GROUP];
        for (i, &v) in x.iter().enumerate() {
            let (g, k, t) = (i / GROUP, (i % GROUP) / 8, i % 8);
            lanes[GROUP * g + 16 * t + k] = v;
        }
        FourBitLanes { x: lanes, block_shift: bs.trailing_zeros(), lane_block: lane_blocks(bs) }
    }
}

/// For blocks of `bs` elements: the block of lane `k` (elements `8k..8k+8` of a group)
/// counted from the group's first block.
pub(super) fn lane_blocks(bs: usize) -> [i32; 16] {
    std::array::from_fn(|k| (8 * k / bs.min(GROUP)) as i32)
}

/// `code[nibble]` for the nibble in bits 0..4 of every dword of `idx` (upper bits are
/// ignored by `vpermps`); lanes outside `dwords` are zero.
#[inline]
#[target_feature(enable = "avx512f")]
fn lookup(idx: __m512i, table: __m512, dwords: __mmask16) -> __m512 {
    _mm512_maskz_permutexvar_ps(dwords, idx, table)
}

/// Activation vector `t` (lanes for elements `8k + t`) of a group.
#[inline]
#[target_feature(enable = "avx512f")]
fn act(x: &[f32], t: usize) -> __m512 {
    let v = &x[16 * t..16 * t + 16];
    // SAFETY: `v` is a bounds-checked slice of 16 f32; unaligned load is allowed.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

/// Dot of group `g` of a row (the last group may be partial: 16, 32 or 48 bytes) with
/// its regrouped activations: lane `k` is the sum over its 8 elements, not yet scaled.
#[inline]
#[target_feature(enable = "avx512f")]
fn group_dot(packed: &[u8], g: usize, table: __m512, lanes: &FourBitLanes) -> __m512 {
    let bytes = &packed[64 * g..(64 * g + 64).min(packed.len())];
    let x = &lanes.x[GROUP * g..GROUP * (g + 1)];
    let dwords: __mmask16 = if bytes.len() == 64 { u16::MAX } else { (1u16 << (bytes.len() / 4)) - 1 };
    // SAFETY: the load is masked to the `bytes.len()` (a multiple of 4) bytes of this
    // group, which lie inside `packed`.
    let packed = unsafe { _mm512_maskz_loadu_epi32(dwords, bytes.as_ptr() as *const i32) };
    let mut even = _mm512_mul_ps(lookup(_mm512_srli_epi32::<4>(packed), table, dwords), act(x, 0));
    let mut odd = _mm512_mul_ps(lookup(packed, table, dwords), act(x, 1));
    even = _mm512_fmadd_ps(lookup(_mm512_srli_epi32::<12>(packed), table, dwords), act(x, 2), even);
    odd = _mm512_fmadd_ps(lookup(_mm512_srli_epi32::<8>(packed), table, dwords), act(x, 3), odd);
    even = _mm512_fmadd_ps(lookup(_mm512_srli_epi32::<20>(packed), table, dwords), act(x, 4), even);
    odd = _mm512_fmadd_ps(lookup(_mm512_srli_epi32::<16>(packed), table, dwords), act(x, 5), odd);
    even = _mm512_fmadd_ps(lookup(_mm512_srli_epi32::<28>(packed), table, dwords), act(x, 6), even);
    odd = _mm512_fmadd_ps(lookup(_mm512_srli_epi32::<24>(packed), table, dwords), act(x, 7), odd);
    _mm512_add_ps(even, odd)
}

/// The absmax of every lane of group `g` (128 elements) for blocks of `1 << block_shift`
/// elements; `lane_block` holds [`lane_blocks`]. Rows are whole blocks, so a group is
/// partial only for blocks below 128 elements, and its lanes past the row end get 0.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn group_scales(absmax: &[f32], g: usize, block_shift: u32, lane_block: __m512i) -> __m512 {
    let first = (GROUP * g) >> block_shift;
    if block_shift >= GROUP.trailing_zeros() {
        return _mm512_set1_ps(absmax[first]);
    }
    if block_shift == GROUP.trailing_zeros() - 1 {
        // Two blocks of 64: lanes 0..8 and 8..16 (a blend, not a shuffle).
        let second = absmax.get(first + 1).copied().unwrap_or(0.0);
        return _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(absmax[first]), _mm512_set1_ps(second));
    }
    let here = &absmax[first..(first + (GROUP >> block_shift)).min(absmax.len())];
    // SAFETY: the load is masked to the `here.len()` (<= 4) scales of this group.
    let s = unsafe { _mm512_maskz_loadu_ps((1u16 << here.len()) - 1, here.as_ptr()) };
    _mm512_permutexvar_ps(lane_block, s)
}

/// bitsandbytes 4-bit row dot activations regrouped by [`FourBitLanes::new`]: `packed`
/// holds the row's bytes, `absmax` one scale per block (the block size given to
/// `FourBitLanes::new`, a power of two >= 32 dividing the row), `code` the 16-entry table.
#[target_feature(enable = "avx512f")]
pub fn fourbit_row_dot(packed: &[u8], absmax: &[f32], code: &[f32; 16], lanes: &FourBitLanes) -> f32 {
    let elems = 2 * packed.len();
    assert!(
        elems.is_multiple_of(1 << lanes.block_shift) && absmax.len() == elems >> lanes.block_shift,
        "4-bit AVX-512 row: {elems} elements, block {}, {} scales",
        1usize << lanes.block_shift,
        absmax.len()
    );
    assert!(lanes.x.len() >= elems.div_ceil(GROUP) * GROUP, "4-bit AVX-512 row: activations too short");
    // SAFETY: `code` is 16 f32 and `lane_block` 16 i32; unaligned loads are allowed.
    let (table, lane_block) =
        unsafe { (_mm512_loadu_ps(code.as_ptr()), _mm512_loadu_si512(lanes.lane_block.as_ptr() as *const _)) };
    let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for g in 0..packed.len().div_ceil(64) {
        // Two accumulators in turn hide the FMA latency (one call site keeps it inlined).
        acc0 = _mm512_fmadd_ps(
            group_dot(packed, g, table, lanes),
            group_scales(absmax, g, lanes.block_shift, lane_block),
            acc0,
        );
        std::mem::swap(&mut acc0, &mut acc1);
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}
