//! Naive CPU reference (the oracle): token-by-token recurrence in f64.
//!
//! For each sequence and head, per token t (decay `d_t = exp(g_t)`, a scalar broadcast
//! over K' or one value per key dim; 1 without gates):
//!
//! ```text
//! q~ = scale * phi_q(q_t),  k~ = phi_k(k_t)
//! S_t = diag(d_t) S_{t-1} + k~ v_t^T          z_t = diag(d_t) z_{t-1} + k~
//! o_t = q~^T S_t                               (normalize: o_t /= q~ . z_t + eps)
//! ```
//!
//! Plain loops, no chunking, f64 accumulation; it reads the inputs directly (not
//! through the fast kernels' gather) and maps features with the f64 feature-map oracle.

use super::problem::{Gates, Problem};
use crate::feature_map::reference::phi;

/// Output `[B, T, H, V]` and final extended states `[N, H, K', V(+1)]`, both f32.
pub(crate) fn run(p: &Problem) -> (Vec<f32>, Vec<Vec<f32>>) {
    let d = p.dims;
    let (kd, vd) = (p.rec_key_dim, d.value_dim);
    let mut out = vec![0.0f32; d.batch * d.seq_len * d.heads * vd];
    let mut states = Vec::with_capacity(p.spans.len() * d.heads);
    for span in &p.spans {
        for h in 0..d.heads {
            let init = p.initial_head_state(span.index, h);
            let vx = p.value_width();
            let mut s: Vec<f64> = (0..kd * vd).map(|i| init[(i / vd) * vx + i % vd] as f64).collect();
            let mut z: Vec<f64> = (0..kd).map(|r| if p.normalize { init[r * vx + vd] as f64 } else { 0.0 }).collect();
            for t in span.start..span.end {
                let row = |data: &[f32]| -> Vec<f64> {
                    data[d.qk_index(span.row, t, h, 0)..][..d.key_dim].iter().map(|&x| x as f64).collect()
                };
                let (q_raw, k_raw) = (row(&p.q), row(&p.k));
                let qt: Vec<f64> = match &p.q_map {
                    Some(m) => phi(m, h, &q_raw),
                    None => q_raw,
                }
                .into_iter()
                .map(|x| x * p.scale as f64)
                .collect();
                let kt = match &p.k_map {
                    Some(m) => phi(m, h, &k_raw),
                    None => k_raw,
                };
                let vt = &p.v[d.v_index(span.row, t, h, 0)..][..vd];
                let gi = d.gate_index(span.row, t, h);
                for r in 0..kd {
                    let decay = match &p.gates {
                        Gates::None => 1.0,
                        Gates::PerHead(g) => (g[h] as f64).exp(),
                        Gates::PerToken(g) => (g[gi] as f64).exp(),
                        Gates::PerKey(g) => (g[gi * kd + r] as f64).exp(),
                    };
                    for j in 0..vd {
                        s[r * vd + j] = decay * s[r * vd + j] + kt[r] * vt[j] as f64;
                    }
                    z[r] = decay * z[r] + kt[r];
                }
                let denom = if p.normalize { (0..kd).map(|r| qt[r] * z[r]).sum::<f64>() + p.eps as f64 } else { 1.0 };
                for j in 0..vd {
                    let o: f64 = (0..kd).map(|r| qt[r] * s[r * vd + j]).sum();
                    out[d.v_index(span.row, t, h, j)] = (o / denom) as f32;
                }
            }
            let mut ext = vec![0.0f32; kd * vx];
            for r in 0..kd {
                for j in 0..vd {
                    ext[r * vx + j] = s[r * vd + j] as f32;
                }
                if p.normalize {
                    ext[r * vx + vd] = z[r] as f32;
                }
            }
            states.push(ext);
        }
    }
    (out, states)
}
