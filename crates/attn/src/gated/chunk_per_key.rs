//! Fast CPU chunked kernel for per-key-dim decay (GLA).
//!
//! As `chunk_scalar`, but the log-decays and their chunk-local inclusive cumsum `b` are
//! `[L, K']` (one cumsum per key dim, f32):
//!
//! ```text
//! o_i  = (q_i * exp(b_i)) S + sum_{j<=i} A_ij v_j
//! A_ij = sum_r q_ir k_jr exp(b_ir - b_jr)            (j <= i)
//! S    <- diag(exp(b_L)) S + sum_j (k_j * exp(b_L - b_j)) v_j^T
//! ```
//!
//! `A` is built from secondary sub-chunks of 16 rows. For a query sub-chunk starting at
//! row r0 the anchor is `a = b_{r0}`; with log-decays <= 0, `b` is non-increasing per
//! dim, so for a key row j < r0 and a query row i >= r0 both `b_i - a <= 0` and
//! `a - b_j <= 0`, and `exp(b_i - b_j) = exp(b_i - a) * exp(a - b_j)` factors into
//! `A_IJ = (Q_I * exp(b_I - a)) (K_J * exp(a - b_J))^T` without any positive exponent.
//! If a factor underflows to 0 the true product is smaller still. The diagonal
//! sub-blocks are computed element-wise in f32 (`exp(b_ir - b_jr)`, j <= i). The upper
//! triangle is never evaluated. No exponent is positive, so extreme gates give zeros,
//! never Inf or NaN.

use super::source::HeadSource;
use crate::vecops::{axpy, dot};

/// Rows per secondary sub-chunk of the intra-chunk matrix.
pub(crate) const SUB_CHUNK: usize = 16;

/// Runs the whole sequence of `src`: `state [K', V(+1)]` in/out, `out [len, V(+1)]`
/// receives the raw output rows (must be zeroed).
pub(crate) fn run_head(src: &HeadSource, state: &mut [f32], out: &mut [f32]) {
    let p = src.problem;
    let (kd, vx) = (p.rec_key_dim, p.value_width());
    let len = src.len();
    let c = p.chunk.min(len.max(1));
    let mut q = vec![0.0f32; c * kd];
    let mut k = vec![0.0f32; c * kd];
    let mut v = vec![0.0f32; c * vx];
    let mut b = vec![0.0f32; c * kd];
    let mut a = vec![0.0f32; c * c];
    let mut q_anchored = vec![0.0f32; SUB_CHUNK * kd];
    let mut k_anchored = vec![0.0f32; kd];
    let mut start = 0;
    while start < len {
        let l = c.min(len - start);
        src.fill_queries(start, l, &mut q);
        src.fill_keys_values(start, l, &mut k, &mut v);
        src.fill_key_gates(start, l, &mut b);
        for i in 1..l {
            let (prev, cur) = b.split_at_mut(i * kd);
            for (x, &y) in cur[..kd].iter_mut().zip(&prev[(i - 1) * kd..]) {
                *x += y;
            }
        }
        intra_scores(&q, &k, &b, l, c, kd, &mut a, &mut q_anchored, &mut k_anchored);
        for i in 0..l {
            let o = &mut out[(start + i) * vx..(start + i + 1) * vx];
            for r in 0..kd {
                let w = q[i * kd + r] * b[i * kd + r].exp();
                axpy(w, &state[r * vx..(r + 1) * vx], o);
            }
            for j in 0..=i {
                axpy(a[i * c + j], &v[j * vx..(j + 1) * vx], o);
            }
        }
        let last = &b[(l - 1) * kd..l * kd];
        for r in 0..kd {
            let d = last[r].exp();
            state[r * vx..(r + 1) * vx].iter_mut().for_each(|s| *s *= d);
        }
        for j in 0..l {
            let vj = &v[j * vx..(j + 1) * vx];
            for r in 0..kd {
                let w = k[j * kd + r] * (last[r] - b[j * kd + r]).exp();
                axpy(w, vj, &mut state[r * vx..(r + 1) * vx]);
            }
        }
        start += l;
    }
}

/// Fills the lower triangle of `a [l, c]` (row stride c) with
/// `A_ij = sum_r q_ir k_jr exp(b_ir - b_jr)`, sub-chunk by sub-chunk (see module docs).
#[allow(clippy::too_many_arguments)]
fn intra_scores(
    q: &[f32],
    k: &[f32],
    b: &[f32],
    l: usize,
    c: usize,
    kd: usize,
    a: &mut [f32],
    q_anchored: &mut [f32],
    k_anchored: &mut [f32],
) {
    let mut r0 = 0;
    while r0 < l {
        let r1 = (r0 + SUB_CHUNK).min(l);
        let anchor = &b[r0 * kd..(r0 + 1) * kd];
        if r0 > 0 {
            for i in r0..r1 {
                let qa = &mut q_anchored[(i - r0) * kd..(i - r0 + 1) * kd];
                for r in 0..kd {
                    qa[r] = q[i * kd + r] * (b[i * kd + r] - anchor[r]).exp();
                }
            }
            for j in 0..r0 {
                for r in 0..kd {
                    k_anchored[r] = k[j * kd + r] * (anchor[r] - b[j * kd + r]).exp();
                }
                for i in r0..r1 {
                    a[i * c + j] = dot(&q_anchored[(i - r0) * kd..(i - r0 + 1) * kd], k_anchored);
                }
            }
        }
        // Diagonal sub-block, element-wise.
        for i in r0..r1 {
            for j in r0..=i {
                let mut s = 0.0f32;
                for r in 0..kd {
                    s += q[i * kd + r] * k[j * kd + r] * (b[i * kd + r] - b[j * kd + r]).exp();
                }
                a[i * c + j] = s;
            }
        }
        r0 = r1;
    }
}
