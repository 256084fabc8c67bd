//! Fast CPU chunked kernel for scalar decay (linear attention, simple GLA, RetNet).
//!
//! One (sequence, head) at a time; the caller runs heads and sequences in parallel.
//! For a chunk of L <= C tokens with queries Q (scaled, mapped), keys K, values V
//! (`[L, V(+1)]`, the extra ones column accumulating z) and the chunk-local inclusive
//! cumsum `b` of the log-decays (f32):
//!
//! ```text
//! A_ij = (q_i . k_j) * exp(b_i - b_j)   for j <= i, 0 for j > i
//! O    = diag(exp(b)) (Q S) + A V
//! S   <- exp(b_L) * S + (K * exp(b_L - b))^T V
//! ```
//!
//! Every product is a dense matrix product ([`matmul`], the `gemm` crate): `Q S`
//! (`L x K'` by `K' x V`), `Q K^T` and `A V` by row blocks of [`INTRA_BLOCK`] rows so
//! that only the blocks on or below the diagonal are multiplied, and the state update
//! `K^T V`. Plain calls read q, k, v in place (strided rows, the scale applied as a
//! product coefficient); otherwise rows are gathered per chunk ([`HeadSource`]).
//!
//! With log-decays <= 0, `b` is non-increasing, so every exponent is <= 0: no overflow.
//! The upper triangle (j > i, exponent > 0) is never exponentiated: its product
//! entries are overwritten with 0 before `A V`. Without gates all exponentials are
//! skipped. Exponentials use `vecops::exp_fast` (vectorized). Outputs are the raw
//! (unnormalized) rows `[L, V(+1)]` written to `out`; normalization happens in the
//! caller. Accumulation is f32.
//!
//! The body is compiled for the baseline target and, on x86-64, for AVX2 + FMA
//! (`run_head` dispatches on [`Isa`]); both are tested against each other.

use super::matmul::{Mat, MatMut, matmul};
use super::source::{HeadSource, Scratch};
use crate::vecops::{Isa, exp_fast, exp_in_place};

/// Query rows per block of the intra-chunk products.
pub(crate) const INTRA_BLOCK: usize = 16;

/// Runs the whole sequence of `src`: `state [K', V(+1)]` in/out, `out [len, V(+1)]`
/// receives the raw output rows (overwritten).
pub(crate) fn run_head(src: &HeadSource, isa: Isa, scratch: &mut Scratch, state: &mut [f32], out: &mut MatMut) {
    match isa {
        // (`Isa::Avx512` normally runs the tile kernel of `chunk_scalar_avx512`; this
        // per-head body is its fallback and the AVX2 machines' kernel.)
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
    let gated = src.has_gates();
    scratch.reserve(c, kd, vx);
    let Scratch { q, k, v, b, a, e, kw, .. } = scratch;
    let mut start = 0;
    while start < len {
        let l = c.min(len - start);
        // Gathered into contiguous scratch (queries already scaled): measured 10-15% faster
        // than handing gemm the strided [B, T, H, K] rows.
        src.fill_queries(start, l, q);
        src.fill_keys_values(start, l, k, v);
        let (qm, km, vm, alpha) = (Mat::rows(q, l, kd, kd), Mat::rows(k, l, kd, kd), Mat::rows(v, l, vx, vx), 1.0);
        if gated {
            src.fill_scalar_gates(start, l, b);
            for i in 1..l {
                b[i] += b[i - 1];
            }
        }
        let mut o = out.sub_rows(start, start + l);
        // Inter-chunk: O = diag(exp(b)) (alpha Q) S.
        matmul(&mut o, qm, Mat::rows(state, kd, vx, vx), alpha, false);
        if gated {
            e[..l].copy_from_slice(&b[..l]);
            exp_in_place(&mut e[..l]);
            for (i, &d) in e[..l].iter().enumerate() {
                o.row_mut(i).iter_mut().for_each(|x| *x *= d);
            }
        }
        // Intra-chunk, block by block of query rows: A = (alpha Q K^T) masked and
        // decayed, O += A V.
        let mut r0 = 0;
        while r0 < l {
            let r1 = (r0 + INTRA_BLOCK).min(l);
            let block = &mut a[r0 * c..];
            matmul(&mut MatMut::rows(block, r1 - r0, r1, c), qm.sub_rows(r0, r1), km.sub_rows(0, r1).t(), alpha, false);
            for i in r0..r1 {
                let row = &mut a[i * c..i * c + r1];
                if gated {
                    let (bi, ei) = (b[i], &mut e[..=i]);
                    ei.iter_mut().zip(&b[..=i]).for_each(|(x, &bj)| *x = bi - bj);
                    exp_in_place(ei);
                    row[..=i].iter_mut().zip(ei.iter()).for_each(|(x, &w)| *x *= w);
                }
                row[i + 1..].fill(0.0);
            }
            matmul(&mut o.sub_rows(r0, r1), Mat::rows(&a[r0 * c..], r1 - r0, r1, c), vm.sub_rows(0, r1), 1.0, true);
            r0 = r1;
        }
        // State update: S = exp(b_L) S + (K * exp(b_L - b))^T V.
        let mut sm = MatMut::rows(state, kd, vx, vx);
        if gated {
            let bl = b[l - 1];
            let dl = exp_fast(bl);
            for r in 0..kd {
                sm.row_mut(r).iter_mut().for_each(|x| *x *= dl);
            }
            e[..l].iter_mut().zip(&b[..l]).for_each(|(x, &bj)| *x = bl - bj);
            exp_in_place(&mut e[..l]);
            for j in 0..l {
                let w = e[j];
                kw[j * kd..(j + 1) * kd].iter_mut().zip(km.row(j)).for_each(|(x, &kj)| *x = kj * w);
            }
            matmul(&mut sm, Mat::rows(kw, l, kd, kd).t(), vm, 1.0, true);
        } else {
            matmul(&mut sm, km.t(), vm, 1.0, true);
        }
        start += l;
    }
}
