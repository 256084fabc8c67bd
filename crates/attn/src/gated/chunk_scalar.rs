//! Fast CPU chunked kernel for scalar decay (linear attention, simple GLA, RetNet).
//!
//! One (sequence, head) at a time; the caller runs heads and sequences in parallel.
//! For a chunk of L <= C tokens with queries Q (scaled, mapped), keys K, values V
//! (`[L, V(+1)]`, the extra ones column accumulating z) and the chunk-local inclusive
//! cumsum `b` of the log-decays (f32):
//!
//! ```text
//! A_ij = (q_i . k_j) * exp(b_i - b_j)   for j <= i, never computed for j > i
//! o_i  = exp(b_i) * (q_i S) + sum_{j<=i} A_ij v_j
//! S   <- exp(b_L) * S + sum_j exp(b_L - b_j) k_j v_j^T
//! ```
//!
//! With log-decays <= 0, `b` is non-increasing, so every exponent is <= 0: no overflow.
//! The upper triangle (j > i, exponent > 0) is masked by never evaluating it. Without
//! gates all exponentials are skipped. Outputs are the raw (unnormalized) rows
//! `[L, V(+1)]`; normalization happens in the caller. Accumulation is f32.

use super::source::HeadSource;
use crate::vecops::{axpy, dot};

/// Runs the whole sequence of `src`: `state [K', V(+1)]` in/out, `out [len, V(+1)]`
/// receives the raw output rows (must be zeroed).
pub(crate) fn run_head(src: &HeadSource, state: &mut [f32], out: &mut [f32]) {
    let p = src.problem;
    let (kd, vx) = (p.rec_key_dim, p.value_width());
    let len = src.len();
    let c = p.chunk.min(len.max(1));
    let gated = src.has_gates();
    let mut q = vec![0.0f32; c * kd];
    let mut k = vec![0.0f32; c * kd];
    let mut v = vec![0.0f32; c * vx];
    let mut b = vec![0.0f32; c];
    let mut a = vec![0.0f32; c * c];
    let mut start = 0;
    while start < len {
        let l = c.min(len - start);
        src.fill_queries(start, l, &mut q);
        src.fill_keys_values(start, l, &mut k, &mut v);
        if gated {
            src.fill_scalar_gates(start, l, &mut b);
            for i in 1..l {
                b[i] += b[i - 1];
            }
        }
        // Intra-chunk scores, lower triangle only.
        for i in 0..l {
            let qi = &q[i * kd..(i + 1) * kd];
            for j in 0..=i {
                let s = dot(qi, &k[j * kd..(j + 1) * kd]);
                a[i * c + j] = if gated { s * (b[i] - b[j]).exp() } else { s };
            }
        }
        // Outputs: inter-chunk through the state, then the intra-chunk product.
        for i in 0..l {
            let o = &mut out[(start + i) * vx..(start + i + 1) * vx];
            for r in 0..kd {
                axpy(q[i * kd + r], &state[r * vx..(r + 1) * vx], o);
            }
            if gated {
                let d = b[i].exp();
                o.iter_mut().for_each(|x| *x *= d);
            }
            for j in 0..=i {
                axpy(a[i * c + j], &v[j * vx..(j + 1) * vx], o);
            }
        }
        // State update.
        if gated {
            let d = b[l - 1].exp();
            state.iter_mut().for_each(|s| *s *= d);
        }
        for j in 0..l {
            let w = if gated { (b[l - 1] - b[j]).exp() } else { 1.0 };
            let vj = &v[j * vx..(j + 1) * vx];
            for r in 0..kd {
                axpy(k[j * kd + r] * w, vj, &mut state[r * vx..(r + 1) * vx]);
            }
        }
        start += l;
    }
}
