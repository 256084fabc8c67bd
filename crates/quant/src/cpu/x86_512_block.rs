//! AVX-512 Q4_0 kernel for a block of `R` weight rows against `C` activation rows
//! (x86_64), for the batched 8-bit-activation products ([`super::batched_q8`]): each
//! octet's weight bytes are unpacked once per weight row and each quad's activation
//! codes and offsets loaded once per activation row, so a pair costs about half the
//! loads of the single-row kernel.
//!
//! Numerics: every (weight row, activation row) pair runs the single-row kernel's
//! operations in the same order (same two accumulators, same scale products, same
//! tails), so result `[r][c]` equals [`super::x86_512::row_dot_q4_0`] of `rows[r]` and
//! `lanes[c]` bit for bit (tested through the batched products).
//!
//! Every function here requires avx512f, avx512bw, avx512vl, avx512vnni and avx512vbmi
//! (checked by `CpuKernel`).

use std::arch::x86_64::*;

use super::q8_lanes::Q8Lanes;
use super::x86_512::{Q4_0_BYTES, Q4_0_OCTET_TABLES, load_table, q4_0_quad, q4_0_quad_lanes, q4_0_whole_quad};

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
