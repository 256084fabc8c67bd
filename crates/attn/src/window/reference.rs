//! f64 oracle of the window hybrid: the definition evaluated quadratically.
//!
//! For each query n, every key j of its sequence is either in the window
//! (`n - W < j <= n`: softmax term with `c` = max window score) or older (`j <= n - W`:
//! linear term `phi_q(q_n) . phi_k(k_j)`, feature maps by the f64 oracle). The final
//! linear state sums `phi_k(k_j) v_j^T` and `phi_k(k_j)` over `j <= len - 1 - W`.

use super::{WindowProblem, WindowResult};
use crate::feature_map::reference::phi;

pub(crate) fn run(p: &WindowProblem) -> WindowResult {
    let lp = &p.linear;
    let d = lp.dims;
    let (kd, vd, w) = (lp.rec_key_dim, d.value_dim, p.window);
    let mut out = vec![0.0f32; d.batch * d.seq_len * d.heads * vd];
    let mut states = Vec::new();
    for span in &lp.spans {
        for h in 0..d.heads {
            let row = |data: &[f32], m: usize| -> Vec<f64> {
                data[d.qk_index(span.row, span.start + m, h, 0)..][..d.key_dim].iter().map(|&x| x as f64).collect()
            };
            let value = |m: usize| -> Vec<f64> {
                lp.v[d.v_index(span.row, span.start + m, h, 0)..][..vd].iter().map(|&x| x as f64).collect()
            };
            let mapped_key = |m: usize| match &lp.k_map {
                Some(map) => phi(map, h, &row(&lp.k, m)),
                None => row(&lp.k, m),
            };
            let factor = 1.0 / (1.0 + (-(p.factor_logits[h] as f64)).exp());
            for n in 0..span.len() {
                let qn = row(&lp.q, n);
                let lo = (n + 1).saturating_sub(w);
                let scores: Vec<f64> = (lo..=n)
                    .map(|j| p.score_scale as f64 * qn.iter().zip(row(&lp.k, j)).map(|(a, b)| a * b).sum::<f64>())
                    .collect();
                let c = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let mut num = vec![0.0f64; vd];
                let mut den = 0.0f64;
                for (j, s) in (lo..=n).zip(&scores) {
                    let a = factor * (s - c).exp();
                    den += a;
                    num.iter_mut().zip(value(j)).for_each(|(x, y)| *x += a * y);
                }
                let phi_q = match &lp.q_map {
                    Some(map) => phi(map, h, &qn),
                    None => qn.clone(),
                };
                for j in 0..lo {
                    let a: f64 = phi_q.iter().zip(mapped_key(j)).map(|(x, y)| x * y).sum();
                    den += a;
                    num.iter_mut().zip(value(j)).for_each(|(x, y)| *x += a * y);
                }
                for (jv, x) in num.iter().enumerate() {
                    out[d.v_index(span.row, span.start + n, h, jv)] = (x / den) as f32;
                }
            }
            let mut state = vec![0.0f64; kd * (vd + 1)];
            for j in 0..span.len().saturating_sub(w) {
                let (kj, vj) = (mapped_key(j), value(j));
                for r in 0..kd {
                    for c in 0..vd {
                        state[r * (vd + 1) + c] += kj[r] * vj[c];
                    }
                    state[r * (vd + 1) + vd] += kj[r];
                }
            }
            states.push(state.into_iter().map(|x| x as f32).collect());
        }
    }
    WindowResult { out, states }
}
