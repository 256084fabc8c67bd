//! `e^x` on 16 f32 lanes for the tile kernel: [`crate::vecops::exp_fast`]'s algorithm
//! (range reduction by `n ln2` in two parts, Cephes' degree-6 polynomial, `2^n` built
//! from exponent bits as two factors) in zmm registers; 0 below the range, +inf above,
//! NaN kept.

use std::arch::x86_64::*;

/// `e^x` per lane with [`crate::vecops::exp_fast`]'s algorithm: `x = n ln2 + r`,
/// Cephes' degree-6 polynomial for `e^r`, `2^n` from exponent bits as two factors; 0
/// below `EXP_LO`, +inf above `EXP_HI`, NaN kept.
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) fn exp512(x: __m512) -> __m512 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const EXP_LO: f32 = -87.336_55;
    const EXP_HI: f32 = 88.722_83;
    let xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_LO)), _mm512_set1_ps(EXP_HI));
    let t = _mm512_fmadd_ps(xc, _mm512_set1_ps(LOG2E), _mm512_set1_ps(ROUND));
    let n = _mm512_sub_ps(t, _mm512_set1_ps(ROUND));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    let ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(ROUND.to_bits() as i32));
    let n1 = _mm512_srai_epi32::<1>(ni);
    let n2 = _mm512_sub_epi32(ni, n1);
    let bias = _mm512_set1_epi32(127);
    let s1 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n1, bias)));
    let s2 = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n2, bias)));
    let e = _mm512_mul_ps(_mm512_mul_ps(y, s1), s2);
    let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(EXP_LO));
    let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, _mm512_set1_ps(EXP_HI));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let e = _mm512_mask_mov_ps(e, below, _mm512_setzero_ps());
    let e = _mm512_mask_mov_ps(e, above, _mm512_set1_ps(f32::INFINITY));
    _mm512_mask_mov_ps(e, nan, x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp512` equals `exp_fast` lane by lane, including the range ends and NaN.
    #[test]
    fn exp512_matches_exp_fast() {
        if !std::is_x86_feature_detected!("avx512f") {
            linattn_tensor::report_skip("exp512_matches_exp_fast: skipped, no AVX-512F on this CPU");
            return;
        }
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.05).collect();
        xs.extend([-1e30, -87.4, -87.3, 88.7, 88.8, 1e30, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0]);
        xs.resize(xs.len().div_ceil(16) * 16, 0.0);
        for chunk in xs.chunks_exact(16) {
            let mut got = [0.0f32; 16];
            // SAFETY: AVX-512F checked above; `chunk` and `got` hold 16 floats each.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp512(_mm512_loadu_ps(chunk.as_ptr()))) };
            for (&x, &g) in chunk.iter().zip(&got) {
                // FMA here vs separate multiply and add in `exp_fast`: a few ulp apart.
                let want = crate::vecops::exp_fast(x);
                let close = (g - want).abs() <= 4.0 * f32::EPSILON * want.abs();
                assert!(close || g == want || (g.is_nan() && want.is_nan()), "exp({x}): {g} vs exp_fast {want}");
            }
        }
    }
}
