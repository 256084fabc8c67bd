//! Fast CPU path of the window hybrid.
//!
//! 1. Linear part: the chunked scalar kernel with `key_shift = W`, scale 1 and the ones
//!    column, giving per query the raw `phi_q(q_n)^T S` (V columns) and `phi_q(q_n) . z`
//!    (last column) over keys `j <= n - W`; feature maps are fused per chunk.
//! 2. Window part ([`window_terms`]): all W scores of the query, then `c` = their maximum,
//!    then `a exp(score - c)`-weighted sums in f32 (exponents <= 0).
//! 3. `y = (window numerator + linear numerator) / (window denominator + linear denominator)`.
//!
//! Parallel over sequences x heads (rayon), f32 accumulation.

use rayon::prelude::*;

use super::{WindowProblem, WindowResult};
use crate::gated::run_raw_heads;
use crate::vecops::{axpy, dot};

/// Window softmax terms of one query over `count` keys: adds
/// `sum_j factor * exp(scale q.k_j - c) v_j` to `num` and returns the matching
/// denominator, with `c` the maximum of the `count` scores (computed first, exactly).
/// `scores` must hold at least `count` values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn window_terms<'k>(
    q: &[f32],
    count: usize,
    key: impl Fn(usize) -> &'k [f32],
    value: impl Fn(usize) -> &'k [f32],
    scale: f32,
    factor: f32,
    scores: &mut [f32],
    num: &mut [f32],
) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for (j, s) in scores[..count].iter_mut().enumerate() {
        *s = scale * dot(q, key(j));
        max = max.max(*s);
    }
    let mut den = 0.0f32;
    for (j, &s) in scores[..count].iter().enumerate() {
        let w = factor * (s - max).exp();
        den += w;
        axpy(w, value(j), num);
    }
    den
}

pub(crate) fn run(p: &WindowProblem) -> WindowResult {
    let lp = &p.linear;
    let d = lp.dims;
    let (kd_raw, vd, heads) = (d.key_dim, d.value_dim, d.heads);
    let raw = run_raw_heads(lp);
    let rows: Vec<Vec<f32>> = raw
        .par_iter()
        .enumerate()
        .map(|(task, (lin, _))| {
            let (span, h) = (lp.spans[task / heads], task % heads);
            let qk_row = |m: usize| -> std::ops::Range<usize> {
                let at = d.qk_index(span.row, span.start + m, h, 0);
                at..at + kd_raw
            };
            let mut scores = vec![0.0f32; p.window];
            let mut out = vec![0.0f32; span.len() * vd];
            let mut num = vec![0.0f32; vd];
            for n in 0..span.len() {
                let lo = (n + 1).saturating_sub(p.window);
                num.copy_from_slice(&lin[n * (vd + 1)..n * (vd + 1) + vd]);
                let den = window_terms(
                    &lp.q[qk_row(n)],
                    n + 1 - lo,
                    |j| &lp.k[qk_row(lo + j)],
                    |j| &lp.v[d.v_index(span.row, span.start + lo + j, h, 0)..][..vd],
                    p.score_scale,
                    p.factor[h],
                    &mut scores,
                    &mut num,
                ) + lin[n * (vd + 1) + vd];
                let inv = 1.0 / den;
                out[n * vd..(n + 1) * vd].iter_mut().zip(&num).for_each(|(o, &x)| *o = x * inv);
            }
            out
        })
        .collect();
    let mut out = vec![0.0f32; d.batch * d.seq_len * heads * vd];
    for (task, rows) in rows.iter().enumerate() {
        let (span, h) = (lp.spans[task / heads], task % heads);
        for m in 0..span.len() {
            out[d.v_index(span.row, span.start + m, h, 0)..][..vd].copy_from_slice(&rows[m * vd..(m + 1) * vd]);
        }
    }
    WindowResult { out, states: raw.into_iter().map(|(_, s)| s).collect() }
}
