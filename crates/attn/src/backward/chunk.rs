//! Chunked backward of the gated recurrence, one (sequence, head) at a time, in f32.
//!
//! The sequence is cut into chunks of C tokens (the last one may be shorter; a chunk
//! never crosses a sequence). Per chunk n (rows i, j, last row L), `b` is the
//! chunk-local inclusive cumsum of the log-gates (per key dim; 0 without gates),
//! `S_n` the state entering the chunk, `dS'` = dL/dS_{n+1}, `du` the gradient of the
//! unnormalized output:
//! ```text
//! forward   S_{n+1} = e^{b_L} * S_n + sum_j (k_j * e^{b_L - b_j}) v_j^T          (row-scaled)
//!           u_i = s (q_i * e^{b_i})^T S_n + sum_{j<=i} A_ij v_j,  A_ij = s sum_k q_ik k_jk e^{b_ik - b_jk}
//! dA_ij = du_i . v_j                                                (j <= i, else never formed)
//! dq_i  = s e^{b_i} * (S_n du_i) + s sum_{j<=i} dA_ij k_j * e^{b_i - b_j}
//! dk_j  = e^{b_L - b_j} * (dS' v_j) + s sum_{i>=j} dA_ij q_i * e^{b_i - b_j}
//! dv_j  = dS'^T (k_j * e^{b_L - b_j}) + sum_{i>=j} A_ij du_i
//! dS_n  = e^{b_L} * dS' + s sum_i (q_i * e^{b_i}) du_i^T
//! db_i  = q_i * dq_i - k_i * dk_i  (+ rowsum(dS' * S_{n+1}) at i = L)
//! dg_t  = sum_{i >= t in the chunk} db_i                 (summed over key dims for scalar gates)
//! ```
//! With log-gates <= 0 every exponent above is <= 0: `b_i - b_j` only for i >= j,
//! `b_L - b_j`, `b_i`, `b_L`; pairs j > i are skipped, never exponentiated. The
//! intra-chunk decay is evaluated element-wise (one exp per pair and key dim, one per
//! pair for scalar gates). Normalization is handled by the caller (`super`), which
//! appends a ones column to the values so that the normalizer is the last state column.

use super::{Local, LocalGrads};

/// Chunk-local inclusive cumsum of the log-gates, `[L, gw]`.
fn chunk_cumsum(l: &Local, chunk: usize) -> Vec<f32> {
    let gw = l.gw;
    let mut b = l.g.clone();
    for c0 in (0..l.len).step_by(chunk) {
        for t in c0 + 1..(c0 + chunk).min(l.len) {
            for i in 0..gw {
                b[t * gw + i] += b[(t - 1) * gw + i];
            }
        }
    }
    b
}

/// Cumulative log-gate of key dim `i` at row `t`.
#[inline(always)]
fn cum(b: &[f32], gw: usize, t: usize, i: usize) -> f32 {
    match gw {
        0 => 0.0,
        1 => b[t],
        _ => b[t * gw + i],
    }
}

/// States entering each chunk and the final state: `(chunks + 1) * K * V`.
fn chunk_states(l: &Local, b: &[f32], chunk: usize) -> Vec<f32> {
    let (kd, vd, gw, sz) = (l.kd, l.vd, l.gw, l.kd * l.vd);
    let chunks = l.len.div_ceil(chunk);
    let mut states = vec![0.0f32; (chunks + 1) * sz];
    states[..sz].copy_from_slice(&l.h0);
    for c in 0..chunks {
        let (c0, c1) = (c * chunk, ((c + 1) * chunk).min(l.len));
        let last = c1 - 1;
        let (done, rest) = states.split_at_mut((c + 1) * sz);
        let (prev, next) = (&done[c * sz..], &mut rest[..sz]);
        for i in 0..kd {
            let bl = cum(b, gw, last, i);
            let decay = bl.exp();
            let row = &mut next[i * vd..(i + 1) * vd];
            for (x, &p) in row.iter_mut().zip(&prev[i * vd..(i + 1) * vd]) {
                *x = decay * p;
            }
            for t in c0..c1 {
                let kt = l.k[t * kd + i] * (bl - cum(b, gw, t, i)).exp();
                for (x, &vj) in row.iter_mut().zip(&l.v[t * vd..(t + 1) * vd]) {
                    *x += kt * vj;
                }
            }
        }
    }
    states
}

/// Intra-chunk decay of the pair (i, j), i >= j, for key dim `kk` (`pair` is the
/// precomputed scalar-gate factor).
#[inline(always)]
fn pair_decay(b: &[f32], gw: usize, i: usize, j: usize, kk: usize, pair: f32) -> f32 {
    if gw > 1 { (b[i * gw + kk] - b[j * gw + kk]).exp() } else { pair }
}

/// Unnormalized outputs `u_t = s q_t^T S_t`, `[L, V]`, computed chunk by chunk.
pub(crate) fn forward_outputs(l: &Local, scale: f32, chunk: usize) -> Vec<f32> {
    let b = chunk_cumsum(l, chunk);
    let states = chunk_states(l, &b, chunk);
    outputs(l, &b, &states, scale, chunk)
}

fn outputs(l: &Local, b: &[f32], states: &[f32], s: f32, chunk: usize) -> Vec<f32> {
    let (kd, vd, gw, sz) = (l.kd, l.vd, l.gw, l.kd * l.vd);
    let mut u = vec![0.0f32; l.len * vd];
    for c0 in (0..l.len).step_by(chunk) {
        let c1 = (c0 + chunk).min(l.len);
        let st = &states[(c0 / chunk) * sz..(c0 / chunk + 1) * sz];
        for i in c0..c1 {
            let ui = &mut u[i * vd..(i + 1) * vd];
            for kk in 0..kd {
                let qg = s * l.q[i * kd + kk] * cum(b, gw, i, kk).exp();
                for (x, &sv) in ui.iter_mut().zip(&st[kk * vd..(kk + 1) * vd]) {
                    *x += qg * sv;
                }
            }
            for j in c0..=i {
                let pair = if gw == 1 { (b[i] - b[j]).exp() } else { 1.0 };
                let mut a = 0.0f32;
                for kk in 0..kd {
                    a += l.q[i * kd + kk] * l.k[j * kd + kk] * pair_decay(b, gw, i, j, kk, pair);
                }
                let a = s * a;
                for (x, &vj) in ui.iter_mut().zip(&l.v[j * vd..(j + 1) * vd]) {
                    *x += a * vj;
                }
            }
        }
    }
    u
}

/// Chunked backward of one (sequence, head).
pub(crate) fn backward(l: &Local, s: f32, chunk: usize) -> LocalGrads {
    let (n, kd, vd, gw, sz) = (l.len, l.kd, l.vd, l.gw, l.kd * l.vd);
    let b = chunk_cumsum(l, chunk);
    let states = chunk_states(l, &b, chunk);
    let chunks = n.div_ceil(chunk);

    let du = &l.d_out;
    let mut g = LocalGrads {
        dq: vec![0.0; n * kd],
        dk: vec![0.0; n * kd],
        dv: vec![0.0; n * vd],
        dg: vec![0.0; n * gw],
        dh0: Vec::new(),
    };
    let mut ds = l.d_final.clone();
    let mut ds_prev = vec![0.0f32; sz];
    let mut db = vec![0.0f32; chunk * kd];
    for c in (0..chunks).rev() {
        let (c0, c1) = (c * chunk, ((c + 1) * chunk).min(n));
        let last = c1 - 1;
        let (st, st_next) = (&states[c * sz..(c + 1) * sz], &states[(c + 1) * sz..(c + 2) * sz]);

        // Inter-chunk terms: through S_n (queries) and into dS' (keys, values).
        for i in c0..c1 {
            let dui = &du[i * vd..(i + 1) * vd];
            for kk in 0..kd {
                let sdu: f32 = st[kk * vd..(kk + 1) * vd].iter().zip(dui).map(|(a, b)| a * b).sum();
                g.dq[i * kd + kk] = s * cum(&b, gw, i, kk).exp() * sdu;
            }
        }
        for j in c0..c1 {
            let vj = &l.v[j * vd..(j + 1) * vd];
            for kk in 0..kd {
                let dec = (cum(&b, gw, last, kk) - cum(&b, gw, j, kk)).exp();
                let row = &ds[kk * vd..(kk + 1) * vd];
                g.dk[j * kd + kk] = dec * row.iter().zip(vj).map(|(a, b)| a * b).sum::<f32>();
                let kdec = l.k[j * kd + kk] * dec;
                for (x, &r) in g.dv[j * vd..(j + 1) * vd].iter_mut().zip(row) {
                    *x += kdec * r;
                }
            }
        }

        // Intra-chunk terms, pairs j <= i only.
        for i in c0..c1 {
            let dui = &du[i * vd..(i + 1) * vd];
            for j in c0..=i {
                let vj = &l.v[j * vd..(j + 1) * vd];
                let da = s * dui.iter().zip(vj).map(|(a, b)| a * b).sum::<f32>();
                let pair = if gw == 1 { (b[i] - b[j]).exp() } else { 1.0 };
                let mut a = 0.0f32;
                for kk in 0..kd {
                    let e = pair_decay(&b, gw, i, j, kk, pair);
                    let (qi, kj) = (l.q[i * kd + kk], l.k[j * kd + kk]);
                    a += qi * kj * e;
                    g.dq[i * kd + kk] += da * kj * e;
                    g.dk[j * kd + kk] += da * qi * e;
                }
                let a = s * a;
                for (x, &d) in g.dv[j * vd..(j + 1) * vd].iter_mut().zip(dui) {
                    *x += a * d;
                }
            }
        }

        // Gate gradients: chunk-local reverse cumsum of q*dq - k*dk (+ dS' * S_{n+1}).
        if gw > 0 {
            let rows = c1 - c0;
            for r in 0..rows {
                let t = c0 + r;
                for kk in 0..kd {
                    db[r * kd + kk] = l.q[t * kd + kk] * g.dq[t * kd + kk] - l.k[t * kd + kk] * g.dk[t * kd + kk];
                }
            }
            for kk in 0..kd {
                let row = kk * vd..(kk + 1) * vd;
                db[(rows - 1) * kd + kk] += ds[row.clone()].iter().zip(&st_next[row]).map(|(a, b)| a * b).sum::<f32>();
            }
            let mut acc = vec![0.0f32; gw];
            for r in (0..rows).rev() {
                let t = c0 + r;
                if gw == 1 {
                    acc[0] += db[r * kd..(r + 1) * kd].iter().sum::<f32>();
                } else {
                    for kk in 0..kd {
                        acc[kk] += db[r * kd + kk];
                    }
                }
                g.dg[t * gw..(t + 1) * gw].copy_from_slice(&acc);
            }
        }

        // dS_n = e^{b_L} * dS' + s sum_i (q_i * e^{b_i}) du_i^T.
        for kk in 0..kd {
            let decay = cum(&b, gw, last, kk).exp();
            let row = &mut ds_prev[kk * vd..(kk + 1) * vd];
            for (x, &d) in row.iter_mut().zip(&ds[kk * vd..(kk + 1) * vd]) {
                *x = decay * d;
            }
            for i in c0..c1 {
                let qg = s * l.q[i * kd + kk] * cum(&b, gw, i, kk).exp();
                for (x, &d) in row.iter_mut().zip(&du[i * vd..(i + 1) * vd]) {
                    *x += qg * d;
                }
            }
        }
        std::mem::swap(&mut ds, &mut ds_prev);
    }

    g.dh0 = ds;
    g
}
