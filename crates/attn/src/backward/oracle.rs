//! Naive f64 forwards of the ops whose backward lives in [`super`], written token by
//! token to be obviously right. They are the functions the finite-difference tests
//! differentiate; they are independent of the forward kernels of this crate.
//!
//! Layouts as in [`crate::layout`], all values f64. Formulas:
//! - [`gated_forward`]: `S_t = diag(e^{a_t}) S_{t-1} + k_t v_t^T`, `o_t = s q_t^T S_t`
//!   (a = 0, a scalar log-gate or a per-key-dim log-gate), optionally divided by
//!   `s q_t^T z_t + eps`, `z_t = diag(e^{a_t}) z_{t-1} + k_t`; returns o and the final
//!   state and normalizer.
//! - [`feature_map`]: `phi(x) = [softmax(x W_h), softmax(-x W_h)]`.
//! - [`window_linear_forward`]: the LoLCATs hybrid of [`super::window`], each query's
//!   sums taken directly over its window and over all older keys.

use linattn_tensor::{Error, Result};

use crate::layout::{AttnDims, sequences};

/// Gates of [`gated_forward`].
#[derive(Clone, Copy, Debug)]
pub enum OracleGate<'a> {
    /// No gate.
    None,
    /// Log-gates `[B, T, H]`.
    Scalar(&'a [f64]),
    /// Log-gates `[B, T, H, K]`.
    PerKey(&'a [f64]),
}

fn check(name: &str, len: usize, expected: usize) -> Result<()> {
    if len != expected {
        return Err(Error::invalid(format!("oracle: `{name}` must hold {expected} elements, got {len}")));
    }
    Ok(())
}

/// Inputs of [`gated_forward`] (layouts of [`crate::layout`], all f64).
#[derive(Clone, Copy, Debug)]
pub struct OracleGated<'a> {
    pub dims: AttnDims,
    pub q: &'a [f64],
    pub k: &'a [f64],
    pub v: &'a [f64],
    pub gate: OracleGate<'a>,
    /// `[N, H, K, V]`; `None` means zero.
    pub initial_state: Option<&'a [f64]>,
    /// `[N, H, K]`; `None` means zero (normalized only).
    pub initial_normalizer: Option<&'a [f64]>,
    pub cu_seqlens: Option<&'a [usize]>,
    pub scale: f64,
    /// `Some(eps)`: divide by `s q_t^T z_t + eps`, `z_t = diag(e^{a_t}) z_{t-1} + k_t`.
    pub normalize: Option<f64>,
}

/// Outputs of [`gated_forward`].
#[derive(Clone, Debug)]
pub struct OracleGatedOutput {
    /// `[B, T, H, V]`.
    pub out: Vec<f64>,
    /// `[N, H, K, V]`.
    pub final_state: Vec<f64>,
    /// `[N, H, K]` (zeros when not normalized).
    pub final_normalizer: Vec<f64>,
}

/// Gated (or plain) linear attention forward, token by token.
pub fn gated_forward(x: &OracleGated) -> Result<OracleGatedOutput> {
    let dims = &x.dims;
    let spans = sequences(dims, x.cu_seqlens)?;
    let (h, kd, vd) = (dims.heads, dims.key_dim, dims.value_dim);
    let tokens = dims.batch * dims.seq_len * h;
    let (q, k, v) = (x.q, x.k, x.v);
    check("q", q.len(), tokens * kd)?;
    check("k", k.len(), tokens * kd)?;
    check("v", v.len(), tokens * vd)?;
    match x.gate {
        OracleGate::None => {}
        OracleGate::Scalar(g) => check("g", g.len(), tokens)?,
        OracleGate::PerKey(g) => check("g", g.len(), tokens * kd)?,
    }
    if let Some(h0) = x.initial_state {
        check("initial_state", h0.len(), spans.len() * h * kd * vd)?;
    }
    if let Some(z0) = x.initial_normalizer {
        check("initial_normalizer", z0.len(), spans.len() * h * kd)?;
    }
    let mut res = OracleGatedOutput {
        out: vec![0.0; tokens * vd],
        final_state: vec![0.0; spans.len() * h * kd * vd],
        final_normalizer: vec![0.0; spans.len() * h * kd],
    };
    for span in &spans {
        for head in 0..h {
            let (st_at, z_at) = ((span.index * h + head) * kd * vd, (span.index * h + head) * kd);
            let mut state: Vec<f64> =
                x.initial_state.map_or(vec![0.0; kd * vd], |s| s[st_at..st_at + kd * vd].to_vec());
            let mut z: Vec<f64> = x.initial_normalizer.map_or(vec![0.0; kd], |s| s[z_at..z_at + kd].to_vec());
            for t in span.start..span.end {
                let tok = (span.row * dims.seq_len + t) * h + head;
                for i in 0..kd {
                    let a = match x.gate {
                        OracleGate::None => 0.0,
                        OracleGate::Scalar(g) => g[tok],
                        OracleGate::PerKey(g) => g[tok * kd + i],
                    };
                    for j in 0..vd {
                        state[i * vd + j] = a.exp() * state[i * vd + j] + k[tok * kd + i] * v[tok * vd + j];
                    }
                    z[i] = a.exp() * z[i] + k[tok * kd + i];
                }
                let den = match x.normalize {
                    Some(eps) => x.scale * (0..kd).map(|i| q[tok * kd + i] * z[i]).sum::<f64>() + eps,
                    None => 1.0,
                };
                for j in 0..vd {
                    let u: f64 = (0..kd).map(|i| q[tok * kd + i] * state[i * vd + j]).sum();
                    res.out[tok * vd + j] = x.scale * u / den;
                }
            }
            res.final_state[st_at..st_at + kd * vd].copy_from_slice(&state);
            if x.normalize.is_some() {
                res.final_normalizer[z_at..z_at + kd].copy_from_slice(&z);
            }
        }
    }
    Ok(res)
}

/// Hedgehog feature map: x `[tokens, H, D]`, w `[H, D, F]` -> `[tokens, H, 2F]`.
pub fn feature_map(x: &[f64], w: &[f64], heads: usize, in_dim: usize, feature_dim: usize) -> Result<Vec<f64>> {
    let (h, d, f) = (heads, in_dim, feature_dim);
    check("w", w.len(), h * d * f)?;
    if h * d == 0 || !x.len().is_multiple_of(h * d) {
        return Err(Error::invalid(format!("oracle: `x` length {} is not a multiple of H * D = {}", x.len(), h * d)));
    }
    let mut out = Vec::with_capacity(x.len() / d * 2 * f);
    for (th, xs) in x.chunks(d).enumerate() {
        let wh = &w[(th % h) * d * f..];
        let a: Vec<f64> = (0..f).map(|c| (0..d).map(|i| xs[i] * wh[i * f + c]).sum()).collect();
        for sign in [1.0, -1.0] {
            let mx = a.iter().map(|x| sign * x).fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = a.iter().map(|x| (sign * x - mx).exp()).collect();
            let sum: f64 = e.iter().sum();
            out.extend(e.iter().map(|x| x / sum));
        }
    }
    Ok(out)
}

/// LoLCATs window + linear hybrid forward -> y `[B, T, H, V]`. `wq`, `wk` are the
/// feature-map weights `[H, K, F]`, `window_logit` `[H]`.
#[allow(clippy::too_many_arguments)]
pub fn window_linear_forward(
    dims: &AttnDims,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    wq: &[f64],
    wk: &[f64],
    feature_dim: usize,
    window_logit: &[f64],
    window: usize,
    cu_seqlens: Option<&[usize]>,
    scale: f64,
) -> Result<Vec<f64>> {
    let spans = sequences(dims, cu_seqlens)?;
    let (h, kd, vd) = (dims.heads, dims.key_dim, dims.value_dim);
    let tokens = dims.batch * dims.seq_len * h;
    check("q", q.len(), tokens * kd)?;
    check("k", k.len(), tokens * kd)?;
    check("v", v.len(), tokens * vd)?;
    check("window_logit", window_logit.len(), h)?;
    let fq = feature_map(q, wq, h, kd, feature_dim)?;
    let fk = feature_map(k, wk, h, kd, feature_dim)?;
    let f2 = 2 * feature_dim;
    let mut y = vec![0.0; tokens * vd];
    for span in &spans {
        for (head, &logit) in window_logit.iter().enumerate() {
            let g = 1.0 / (1.0 + (-logit).exp());
            let tok = |t: usize| (span.row * dims.seq_len + t) * h + head;
            for n in span.start..span.end {
                let tn = tok(n);
                let in_window = |m: usize| m + window > n;
                let score = |m: usize| scale * (0..kd).map(|i| q[tn * kd + i] * k[tok(m) * kd + i]).sum::<f64>();
                let c = (span.start..=n).filter(|&m| in_window(m)).map(score).fold(f64::NEG_INFINITY, f64::max);
                let (mut num, mut den) = (vec![0.0; vd], 0.0);
                for m in span.start..=n {
                    let tm = tok(m);
                    let wgt = if in_window(m) {
                        g * (score(m) - c).exp()
                    } else {
                        (0..f2).map(|i| fq[tn * f2 + i] * fk[tm * f2 + i]).sum::<f64>()
                    };
                    den += wgt;
                    for j in 0..vd {
                        num[j] += wgt * v[tm * vd + j];
                    }
                }
                for j in 0..vd {
                    y[tn * vd + j] = num[j] / den;
                }
            }
        }
    }
    Ok(y)
}
