//! Reference backward of the gated recurrence, one (sequence, head) at a time: plain
//! loops, f64 accumulation, every state kept. It is the oracle the chunked form is
//! tested against. Normalization is handled by the caller (`super`), which appends a
//! ones column to the values so that the normalizer is the last state column.
//!
//! Forward (rows `[L, K]`, `[L, V]`; state `[K, V]`; `a_{t,i}` the log-gate of key dim
//! i at step t: 0 without gates, `g_t` for scalar gates, `g_{t,i}` per key dim):
//! ```text
//! S_t[i,:] = e^{a_{t,i}} S_{t-1}[i,:] + k_{t,i} v_t      S_0 = initial state
//! o_t      = s S_t^T q_t
//! ```
//! Reverse recurrence, `dS` starting at dL/dS_L (zero when not given):
//! ```text
//! dS  += s q_t do_t^T
//! dq_t = s S_t do_t        dk_t = dS v_t        dv_t = dS^T k_t
//! da_{t,i} = e^{a_{t,i}} sum_j dS[i,j] S_{t-1}[i,j]
//! dS[i,:] *= e^{a_{t,i}}   (now dL/dS_{t-1})
//! ```
//! dL/dS_0 is the final `dS`. Scalar gates sum `da_{t,i}` over i.

use super::{Local, LocalGrads};

/// Log-gate of key dim `i` at row `t` (0 without gates).
fn log_gate(l: &Local, t: usize, i: usize) -> f64 {
    match l.gw {
        0 => 0.0,
        1 => l.g[t] as f64,
        _ => l.g[t * l.gw + i] as f64,
    }
}

/// All states S_0..S_L of one (sequence, head), `(L + 1) * K * V`, f64.
fn states(l: &Local) -> Vec<f64> {
    let (n, kd, vd, sz) = (l.len, l.kd, l.vd, l.kd * l.vd);
    let mut states = vec![0.0f64; (n + 1) * sz];
    for (dst, &x) in states[..sz].iter_mut().zip(&l.h0) {
        *dst = x as f64;
    }
    for t in 0..n {
        let (prev, cur) = states.split_at_mut((t + 1) * sz);
        let prev = &prev[t * sz..];
        for i in 0..kd {
            let decay = log_gate(l, t, i).exp();
            let ki = l.k[t * kd + i] as f64;
            for j in 0..vd {
                cur[i * vd + j] = decay * prev[i * vd + j] + ki * l.v[t * vd + j] as f64;
            }
        }
    }
    states
}

/// Outputs `o_t = s S_t^T q_t`, `[L, V]`, f64.
pub(crate) fn forward(l: &Local, scale: f32) -> Vec<f64> {
    let (kd, vd, sz) = (l.kd, l.vd, l.kd * l.vd);
    let states = states(l);
    let mut out = vec![0.0f64; l.len * vd];
    for t in 0..l.len {
        let st = &states[(t + 1) * sz..(t + 2) * sz];
        for j in 0..vd {
            out[t * vd + j] = scale as f64 * (0..kd).map(|i| l.q[t * kd + i] as f64 * st[i * vd + j]).sum::<f64>();
        }
    }
    out
}

/// Reference backward of one (sequence, head).
pub(crate) fn backward(l: &Local, scale: f32) -> LocalGrads {
    let (n, kd, vd, sz) = (l.len, l.kd, l.vd, l.kd * l.vd);
    let s = scale as f64;
    let states = states(l);
    let mut ds: Vec<f64> = l.d_final.iter().map(|&x| x as f64).collect();
    let mut g = LocalGrads {
        dq: vec![0.0; n * kd],
        dk: vec![0.0; n * kd],
        dv: vec![0.0; n * vd],
        dg: vec![0.0; n * l.gw],
        dh0: Vec::new(),
    };
    let mut da = vec![0.0f64; kd];
    for t in (0..n).rev() {
        let du: Vec<f64> = l.d_out[t * vd..(t + 1) * vd].iter().map(|&x| x as f64).collect();
        let st = &states[(t + 1) * sz..(t + 2) * sz];
        let prev = &states[t * sz..(t + 1) * sz];
        for i in 0..kd {
            let qi = l.q[t * kd + i] as f64;
            for j in 0..vd {
                ds[i * vd + j] += s * qi * du[j];
            }
        }
        for i in 0..kd {
            let dq = s * (0..vd).map(|j| st[i * vd + j] * du[j]).sum::<f64>();
            let dk = (0..vd).map(|j| ds[i * vd + j] * l.v[t * vd + j] as f64).sum::<f64>();
            g.dq[t * kd + i] = dq as f32;
            g.dk[t * kd + i] = dk as f32;
        }
        for j in 0..vd {
            g.dv[t * vd + j] = (0..kd).map(|i| ds[i * vd + j] * l.k[t * kd + i] as f64).sum::<f64>() as f32;
        }
        for i in 0..kd {
            let decay = log_gate(l, t, i).exp();
            da[i] = decay * (0..vd).map(|j| ds[i * vd + j] * prev[i * vd + j]).sum::<f64>();
            for j in 0..vd {
                ds[i * vd + j] *= decay;
            }
        }
        match l.gw {
            0 => {}
            1 => g.dg[t] = da.iter().sum::<f64>() as f32,
            _ => {
                for (dst, &x) in g.dg[t * kd..(t + 1) * kd].iter_mut().zip(&da) {
                    *dst = x as f32;
                }
            }
        }
    }
    g.dh0 = ds.iter().map(|&x| x as f32).collect();
    g
}
