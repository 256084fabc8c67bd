//! AVX-512 Q4_0 and NF4/FP4 (8-bit codes) kernels for a block of `R` weight rows
//! against `C` activation rows (x86_64), for the batched 8-bit-activation products
//! ([`super::batched_q8`]): each step's weight bytes are unpacked once per weight row
//! and its activation codes loaded once per activation row, so a pair costs about half
//! the loads of the single-row kernels.
//!
//! Numerics: every (weight row, activation row) pair runs the single-row kernel's
//! operations in the same order (same two accumulators, same scale products, same
//! tails), so result `[r][c]` equals the single-row kernel
//! ([`super::x86_512::row_dot_q4_0`], [`super::x86_512_fourbit_q8::fourbit_row_dot_q8`])
//! bit for bit (tested through the batched products).
//!
//! Every function here requires avx512f, avx512bw, avx512vl, avx512vnni and avx512vbmi
//! (checked by `CpuKernel`).

use std::arch::x86_64::*;

use super::q8_fourbit::{FourBitQ8Code, FourBitQ8Lanes};
use super::q8_lanes::Q8Lanes;
use super::x86_512::{Q4_0_BYTES, Q4_0_OCTET_TABLES, load_table, q4_0_quad, q4_0_quad_lanes, q4_0_whole_quad};
use super::x86_512_fourbit_q8::{GROUP_BYTES, nibble_codes, whole_group_scales};

/// Q4_0 rows (whole blocks, all of one length) dot activation rows laid out by
/// [`Q8Lanes::for_avx512`]: `out[r][c]` = row `r` . activations `c`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub fn rows_dot_q4_0<const R: usize, const C: usize>(rows: [&[u8]; R], lanes: [&Q8Lanes; C]) -> [[f32; C]; R] {
    let len = rows[0].len();
    let blocks = len / Q4_0_BYTES;
    for row in &rows {
        assert!(
            row.len() == len && len == blocks * Q4_0_BYTES,
            "Q4_0 rows of {} bytes are not whole blocks",
            row.len()
        );
    }
    let (octets, whole, quads) = (blocks / 8, blocks / 4, blocks.div_ceil(4));
    for l in &lanes {
        assert!(
            l.codes.len() >= 128 * quads
                && l.offsets.len() >= 16 * quads
                && l.scales.len() >= 16 * quads
                && l.block_scales.len() >= 8 * octets,
            "Q4_0 AVX-512 rows of {blocks} blocks do not match the activation lanes"
        );
    }
    let tables = Q4_0_OCTET_TABLES.map(|t| load_table(&t));
    let spread = [
        _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
        _mm512_set_epi32(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4),
    ];
    let mut acc0 = [[_mm512_setzero_ps(); C]; R];
    let mut acc1 = [[_mm512_setzero_ps(); C]; R];
    for o in 0..octets {
        // SAFETY: each octet is 144 bytes of its row, so the loads of `[0, 64)`,
        // `[64, 128)` and `[80, 144)` lie inside it; quads 2o and 2o + 1 < quads have
        // their lanes and blocks 8o..8o+8 their activation scales in every layout
        // (asserted above).
        unsafe {
            let mut unpacked = [(_mm512_setzero_si512(), _mm512_setzero_si512(), _mm256_setzero_ps()); R];
            for (u, row) in unpacked.iter_mut().zip(&rows) {
                let octet = row.as_ptr().add(8 * Q4_0_BYTES * o);
                let a = _mm512_loadu_si512(octet as *const _);
                let b = _mm512_loadu_si512(octet.add(64) as *const _);
                let c = _mm512_loadu_si512(octet.add(80) as *const _);
                let scales_f16 = _mm512_castsi512_si128(_mm512_permutex2var_epi8(a, tables[2], b));
                *u = (
                    _mm512_permutex2var_epi8(a, tables[0], b),
                    _mm512_permutex2var_epi8(b, tables[1], c),
                    _mm256_cvtph_ps(scales_f16),
                );
            }
            for (c, l) in lanes.iter().enumerate() {
                let act_scales = _mm256_loadu_ps(l.block_scales.as_ptr().add(8 * o));
                for (r, &(first, second, weight_scales)) in unpacked.iter().enumerate() {
                    let scales = _mm512_castps256_ps512(_mm256_mul_ps(weight_scales, act_scales));
                    acc0[r][c] = q4_0_quad_lanes(acc0[r][c], first, _mm512_permutexvar_ps(spread[0], scales), l, 2 * o);
                    acc1[r][c] =
                        q4_0_quad_lanes(acc1[r][c], second, _mm512_permutexvar_ps(spread[1], scales), l, 2 * o + 1);
                }
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            for q in 2 * octets..whole {
                acc0[r][c] = q4_0_whole_quad(acc0[r][c], rows[r], lanes[c], q);
            }
            for q in whole..quads {
                acc1[r][c] = q4_0_quad(acc1[r][c], rows[r], lanes[c], q);
            }
            out[r][c] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r][c], acc1[r][c]));
        }
    }
    out
}

/// NF4/FP4 rows (`packed`, scales `absmax`; every row of whole 128-element groups, all
/// of one length) dot activation rows laid out by [`FourBitQ8Lanes::new`] with steps of
/// [`GROUP_BYTES`]: `out[r][c]` = row `r` . activations `c`, each pair with the
/// operations of [`super::x86_512_fourbit_q8::fourbit_row_dot_q8`] in its order (the
/// integer lane sums are exact, so splitting the table lookups from the dot products
/// changes nothing). Per group the nibbles are looked up once per weight row and the
/// activation codes and scales loaded once per activation row.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
pub fn fourbit_rows_dot_q8<const R: usize, const C: usize>(
    packed: [&[u8]; R],
    absmax: [&[f32]; R],
    code: &FourBitQ8Code,
    lanes: [&FourBitQ8Lanes; C],
) -> [[f32; C]; R] {
    let len = packed[0].len();
    let shift = lanes[0].block_shift;
    let elems = 2 * len;
    let groups = len / GROUP_BYTES;
    for (p, a) in packed.iter().zip(&absmax) {
        assert!(
            p.len() == len
                && len.is_multiple_of(GROUP_BYTES)
                && shift >= 5
                && elems.is_multiple_of(1 << shift)
                && a.len() == elems >> shift,
            "4-bit q8 AVX-512 rows: {} bytes, block {}, {} scales",
            p.len(),
            1usize << shift,
            a.len()
        );
    }
    for l in &lanes {
        assert!(
            l.block_shift == shift
                && l.xq.len() >= groups * 2 * GROUP_BYTES
                && l.dx.len() >= groups * 16
                && l.block_offsets.len() == absmax[0].len(),
            "4-bit q8 AVX-512 rows: activations laid out for another shape"
        );
    }
    // SAFETY: `tq` is 16 i8 and `lane_block` 16 i32; unaligned loads are allowed. The
    // table offset by +128 as unsigned bytes is `tq ^ 0x80`.
    let (table, lane_block) = unsafe {
        let signed = _mm_loadu_si128(code.tq.as_ptr() as *const _);
        (
            _mm512_broadcast_i32x4(_mm_xor_si128(signed, _mm_set1_epi8(-128))),
            _mm512_loadu_si512(lanes[0].lane_block.as_ptr() as *const _),
        )
    };
    // The single-row kernel alternates two accumulators, even groups into the first.
    let mut even = [[_mm512_setzero_ps(); C]; R];
    let mut odd = [[_mm512_setzero_ps(); C]; R];
    for g in 0..groups {
        let mut looked_up = [(_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_ps()); R];
        for ((u, p), a) in looked_up.iter_mut().zip(&packed).zip(&absmax) {
            // SAFETY: group g < groups is 64 bytes of the row; its blocks' scales are in
            // `a` (asserted above).
            unsafe {
                let words = _mm512_loadu_si512(p.as_ptr().add(GROUP_BYTES * g) as *const _);
                let (high, low) = nibble_codes(words, table);
                *u = (high, low, whole_group_scales(a, g, shift, lane_block));
            }
        }
        for (c, l) in lanes.iter().enumerate() {
            // SAFETY: group g has 128 activation bytes at 128g and 16 lane scales at 16g
            // (asserted above).
            let (x_high, x_low, d) = unsafe {
                let x = l.xq.as_ptr().add(2 * GROUP_BYTES * g);
                (
                    _mm512_loadu_si512(x as *const _),
                    _mm512_loadu_si512(x.add(GROUP_BYTES) as *const _),
                    _mm512_loadu_ps(l.dx.as_ptr().add(16 * g)),
                )
            };
            for (r, &(high, low, scales)) in looked_up.iter().enumerate() {
                let sums = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), high, x_high), low, x_low);
                let acc = if g.is_multiple_of(2) { &mut even[r][c] } else { &mut odd[r][c] };
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(scales, d), *acc);
            }
        }
    }
    // The single-row kernel takes the offsets off its second accumulator after the
    // last swap: the odd groups' one for an even group count, else the even groups'.
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            let (first, mut second) =
                if groups.is_multiple_of(2) { (even[r][c], odd[r][c]) } else { (odd[r][c], even[r][c]) };
            for (scales, offsets) in absmax[r].chunks(16).zip(lanes[c].block_offsets.chunks(16)) {
                let mask = (1u32 << scales.len()).wrapping_sub(1) as u16;
                // SAFETY: both loads are masked to the `scales.len()` (<= 16) elements
                // of the two equal-length chunks.
                let (a, o) = unsafe {
                    (_mm512_maskz_loadu_ps(mask, scales.as_ptr()), _mm512_maskz_loadu_ps(mask, offsets.as_ptr()))
                };
                second = _mm512_fnmadd_ps(a, o, second);
            }
            out[r][c] = _mm512_reduce_add_ps(_mm512_add_ps(first, second)) * code.scale;
        }
    }
    out
}
