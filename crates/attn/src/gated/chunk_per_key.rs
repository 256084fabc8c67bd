//! Fast CPU chunked kernel for per-key-dim decay (GLA).
//!
//! As `chunk_scalar`, but the log-decays and their chunk-local inclusive cumsum `b` are
//! `[L, K']` (one cumsum per key dim, f32):
//!
//! ```text
//! O    = (Q * exp(b)) S + A V
//! A_ij = sum_r q_ir k_jr exp(b_ir - b_jr)            (j <= i, 0 for j > i)
//! S    <- diag(exp(b_L)) S + (K * exp(b_L - b))^T V
//! ```
//!
//! `A` is built from secondary sub-chunks of 16 rows. For a query sub-chunk starting at
//! row r0 the anchor is `a = b_{r0}`; with log-decays <= 0, `b` is non-increasing per
//! dim, so for a key row j < r0 and a query row i >= r0 both `b_i - a <= 0` and
//! `a - b_j <= 0`, and `exp(b_i - b_j) = exp(b_i - a) * exp(a - b_j)` factors into
//! `A_IJ = (Q_I * exp(b_I - a)) (K_J * exp(a - b_J))^T` without any positive exponent:
//! one dense product per query sub-chunk against all earlier keys. If a factor
//! underflows to 0 the true product is smaller still. The diagonal sub-blocks are
//! computed element-wise in f32 (`exp(b_ir - b_jr)`, j <= i, `vecops::dot_exp_diff`).
//! The upper triangle is never evaluated. No exponent is positive, so extreme gates
//! give zeros, never Inf or NaN.
//!
//! Products (`Q S`, the off-diagonal `A` blocks, `A V`, `K^T V`) go through
//! [`matmul`] (the `gemm` crate); exponentials use `vecops::exp_fast`. The body is
//! compiled for the baseline target and, on x86-64, for AVX2 + FMA (`run_head`
//! dispatches on [`Isa`]); both are tested against each other.

use super::matmul::{Mat, MatMut, matmul};
use super::source::{HeadSource, Scratch};
use crate::vecops::{Isa, dot_exp_diff, exp_in_place};

/// Rows per secondary sub-chunk of the intra-chunk matrix.
pub(crate) const SUB_CHUNK: usize = 16;

/// Runs the whole sequence of `src`: `state [K', V(+1)]` in/out, `out [len, V(+1)]`
/// receives the raw output rows (overwritten).
pub(crate) fn run_head(src: &HeadSource, isa: Isa, scratch: &mut Scratch, state: &mut [f32], out: &mut MatMut) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma | Isa::Avx512 => {
            // SAFETY: both are only used when `Isa::detect` found AVX2 and FMA on this
            // CPU (tests force them only under the same check).
            unsafe { run_head_avx2(src, scratch, state, out) }
        }
        _ => run_head_body(src, scratch, state, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_head_avx2(src: &HeadSource, scratch: &mut Scratch, state: &mut [f32], out: &mut MatMut) {
    run_head_body(src, scratch, state, out);
}

#[inline(always)]
fn run_head_body(src: &HeadSource, scratch: &mut Scratch, state: &mut [f32], out: &mut MatMut) {
    let p = src.problem;
    let (kd, vx) = (p.rec_key_dim, p.value_width());
    let len = src.len();
    let c = p.chunk.min(len.max(1));
    scratch.reserve(c, kd, vx);
    let Scratch { q, k, v, b, a, e, qa, kw, .. } = scratch;
    let mut start = 0;
    while start < len {
        let l = c.min(len - start);
        // Queries are always gathered (scaled): they are decayed element-wise below.
        src.fill_queries(start, l, q);
        src.fill_keys_values(start, l, k, v);
        let (km, vm) = (Mat::rows(k, l, kd, kd), Mat::rows(v, l, vx, vx));
        src.fill_key_gates(start, l, b);
        for i in 1..l {
            let (prev, cur) = b.split_at_mut(i * kd);
            for (x, &y) in cur[..kd].iter_mut().zip(&prev[(i - 1) * kd..]) {
                *x += y;
            }
        }
        // Inter-chunk: O = (Q * exp(b)) S.
        let mut o = out.sub_rows(start, start + l);
        e[..l * kd].copy_from_slice(&b[..l * kd]);
        exp_in_place(&mut e[..l * kd]);
        e[..l * kd].iter_mut().zip(&q[..l * kd]).for_each(|(x, &qi)| *x *= qi);
        matmul(&mut o, Mat::rows(e, l, kd, kd), Mat::rows(state, kd, vx, vx), 1.0, false);
        // Intra-chunk by query sub-chunks, then O += A V.
        let mut r0 = 0;
        while r0 < l {
            let r1 = (r0 + SUB_CHUNK).min(l);
            if r0 > 0 {
                let anchor = &b[r0 * kd..(r0 + 1) * kd];
                for i in r0..r1 {
                    let row = &mut qa[(i - r0) * kd..(i - r0 + 1) * kd];
                    row.iter_mut().zip(&b[i * kd..(i + 1) * kd]).zip(anchor).for_each(|((x, &bi), &an)| *x = bi - an);
                    exp_in_place(row);
                    row.iter_mut().zip(&q[i * kd..(i + 1) * kd]).for_each(|(x, &qi)| *x *= qi);
                }
                for j in 0..r0 {
                    let row = &mut kw[j * kd..(j + 1) * kd];
                    row.iter_mut().zip(&b[j * kd..(j + 1) * kd]).zip(anchor).for_each(|((x, &bj), &an)| *x = an - bj);
                    exp_in_place(row);
                    row.iter_mut().zip(km.row(j)).for_each(|(x, &kj)| *x *= kj);
                }
                matmul(
                    &mut MatMut::rows(&mut a[r0 * c..], r1 - r0, r0, c),
                    Mat::rows(qa, r1 - r0, kd, kd),
                    Mat::rows(kw, r0, kd, kd).t(),
                    1.0,
                    false,
                );
            }
            // Diagonal sub-block, element-wise.
            for i in r0..r1 {
                let (qi, bi) = (&q[i * kd..(i + 1) * kd], &b[i * kd..(i + 1) * kd]);
                for j in r0..=i {
                    a[i * c + j] = dot_exp_diff(qi, km.row(j), bi, &b[j * kd..(j + 1) * kd]);
                }
                a[i * c + i + 1..i * c + r1].fill(0.0);
            }
            matmul(&mut o.sub_rows(r0, r1), Mat::rows(&a[r0 * c..], r1 - r0, r1, c), vm.sub_rows(0, r1), 1.0, true);
            r0 = r1;
        }
        // State update: S = diag(exp(b_L)) S + (K * exp(b_L - b))^T V.
        let last = &b[(l - 1) * kd..l * kd];
        e[..kd].copy_from_slice(last);
        exp_in_place(&mut e[..kd]);
        let mut sm = MatMut::rows(state, kd, vx, vx);
        for (r, &d) in e[..kd].iter().enumerate() {
            sm.row_mut(r).iter_mut().for_each(|x| *x *= d);
        }
        for j in 0..l {
            let row = &mut kw[j * kd..(j + 1) * kd];
            row.iter_mut().zip(&b[j * kd..(j + 1) * kd]).zip(last).for_each(|((x, &bj), &bl)| *x = bl - bj);
            exp_in_place(row);
            row.iter_mut().zip(km.row(j)).for_each(|(x, &kj)| *x *= kj);
        }
        matmul(&mut sm, Mat::rows(kw, l, kd, kd).t(), vm, 1.0, true);
        start += l;
    }
}
