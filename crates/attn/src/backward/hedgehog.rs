//! Backward of the Hedgehog feature map and of its composition with linear attention
//! (the learnable part of LoLCATs attention transfer).
//!
//! Feature map, per token and head h (x `[B, T, H, D]`, W `[H, D, F]`, output
//! `[B, T, H, 2F]`):
//! ```text
//! a = x W_h  (F)      p = softmax(a)      m = softmax(-a)      phi(x) = [p, m]
//! ```
//! Backward with `dphi = [dp, dm]`:
//! ```text
//! da   = p * (dp - <p, dp>) - m * (dm - <m, dm>)
//! dx   = W_h da                    dW_h += x da^T   (summed over tokens)
//! ```
//! Composition: `o = linear_attn(phi_q(q), phi_k(k), v)` (optionally normalized; the
//! linear attention's key dim is 2F and its scale defaults to `(2F)^-0.5`). Its
//! backward runs [`super::linear_attn`] on the features and chains the feature-map
//! backward for q and k. The map is evaluated in f64 per token in both variants.

use linattn_tensor::{Error, Result};
use rayon::prelude::*;

use super::linear_attn::{self, LinearAttnBackwardInputs};
use super::{Upstream, check_chunk, check_input};
use crate::layout::AttnDims;

/// Sizes of a feature-map call: x `[tokens, heads, in_dim]`, W `[heads, in_dim,
/// feature_dim]`, phi `[tokens, heads, 2 * feature_dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureMapDims {
    /// Tokens (B * T).
    pub tokens: usize,
    /// Heads H.
    pub heads: usize,
    /// Input head dim D.
    pub in_dim: usize,
    /// Features per softmax F (the map outputs 2F).
    pub feature_dim: usize,
}

/// Gradients of the feature map.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMapGrads {
    /// dL/dx, `[tokens, H, D]`.
    pub dx: Vec<f32>,
    /// dL/dW, `[H, D, F]`.
    pub dw: Vec<f32>,
}

/// `phi(x) = [softmax(x W), softmax(-x W)]` of one token of one head, in f64.
/// `w` is that head's `[D, F]` slice; `out` holds `2F`.
pub(crate) fn phi_token(x: &[f64], w: &[f32], f: usize, out: &mut [f64]) {
    let (pos, neg) = out.split_at_mut(f);
    for (c, p) in pos.iter_mut().enumerate() {
        *p = x.iter().enumerate().map(|(d, &xd)| xd * w[d * f + c] as f64).sum();
    }
    for (n, &p) in neg.iter_mut().zip(pos.iter()) {
        *n = -p;
    }
    for half in [pos, neg] {
        let mx = half.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for a in half.iter_mut() {
            *a = (*a - mx).exp();
            sum += *a;
        }
        for a in half.iter_mut() {
            *a /= sum;
        }
    }
}

/// Backward of [`phi_token`]: adds dL/dx to `dx` (D) and dL/dW_h to `dw` (`[D, F]`).
pub(crate) fn phi_token_backward(x: &[f64], w: &[f32], f: usize, dphi: &[f64], dx: &mut [f64], dw: &mut [f64]) {
    let mut phi = vec![0.0f64; 2 * f];
    phi_token(x, w, f, &mut phi);
    let (p, m) = phi.split_at(f);
    let (dp, dm) = dphi.split_at(f);
    let pdp: f64 = p.iter().zip(dp).map(|(a, b)| a * b).sum();
    let mdm: f64 = m.iter().zip(dm).map(|(a, b)| a * b).sum();
    let da: Vec<f64> = (0..f).map(|c| p[c] * (dp[c] - pdp) - m[c] * (dm[c] - mdm)).collect();
    for (d, &xd) in x.iter().enumerate() {
        dx[d] += (0..f).map(|c| w[d * f + c] as f64 * da[c]).sum::<f64>();
        for c in 0..f {
            dw[d * f + c] += xd * da[c];
        }
    }
}

fn check_map(op: &'static str, dims: &FeatureMapDims, x: &[f32], w: &[f32]) -> Result<()> {
    if dims.heads == 0 || dims.in_dim == 0 || dims.feature_dim == 0 {
        return Err(Error::invalid(format!("{op}: heads, in_dim and feature_dim must be positive, got {dims:?}")));
    }
    check_input(op, "x", x, dims.tokens * dims.heads * dims.in_dim, "[tokens, H, D]")?;
    check_input(op, "w", w, dims.heads * dims.in_dim * dims.feature_dim, "[H, D, F]")
}

/// Forward of the feature map (f64 per token, f32 output `[tokens, H, 2F]`).
pub fn feature_map(dims: &FeatureMapDims, x: &[f32], w: &[f32]) -> Result<Vec<f32>> {
    check_map("hedgehog feature map", dims, x, w)?;
    let (h, d, f) = (dims.heads, dims.in_dim, dims.feature_dim);
    let mut out = vec![0.0f32; dims.tokens * h * 2 * f];
    out.par_chunks_mut(2 * f).enumerate().for_each(|(th, o)| {
        let xs: Vec<f64> = x[th * d..(th + 1) * d].iter().map(|&a| a as f64).collect();
        let wh = &w[(th % h) * d * f..(th % h + 1) * d * f];
        let mut phi = vec![0.0f64; 2 * f];
        phi_token(&xs, wh, f, &mut phi);
        for (a, b) in o.iter_mut().zip(&phi) {
            *a = *b as f32;
        }
    });
    Ok(out)
}

/// Backward of the feature map: `d_phi` is dL/dphi `[tokens, H, 2F]`. f64 accumulation,
/// rayon over heads.
pub fn feature_map_backward(dims: &FeatureMapDims, x: &[f32], w: &[f32], d_phi: &[f32]) -> Result<FeatureMapGrads> {
    let op = "hedgehog feature map backward";
    check_map(op, dims, x, w)?;
    let (h, d, f) = (dims.heads, dims.in_dim, dims.feature_dim);
    check_input(op, "d_phi", d_phi, dims.tokens * h * 2 * f, "[tokens, H, 2F]")?;
    let per_head: Vec<(Vec<f64>, Vec<f64>)> = (0..h)
        .into_par_iter()
        .map(|head| {
            let wh = &w[head * d * f..(head + 1) * d * f];
            let mut dx = vec![0.0f64; dims.tokens * d];
            let mut dw = vec![0.0f64; d * f];
            for t in 0..dims.tokens {
                let th = t * h + head;
                let xs: Vec<f64> = x[th * d..(th + 1) * d].iter().map(|&a| a as f64).collect();
                let dp: Vec<f64> = d_phi[th * 2 * f..(th + 1) * 2 * f].iter().map(|&a| a as f64).collect();
                phi_token_backward(&xs, wh, f, &dp, &mut dx[t * d..(t + 1) * d], &mut dw);
            }
            (dx, dw)
        })
        .collect();
    let mut grads = FeatureMapGrads { dx: vec![0.0; x.len()], dw: vec![0.0; w.len()] };
    for (head, (dx, dw)) in per_head.iter().enumerate() {
        for t in 0..dims.tokens {
            let th = t * h + head;
            for (a, &b) in grads.dx[th * d..(th + 1) * d].iter_mut().zip(&dx[t * d..(t + 1) * d]) {
                *a = b as f32;
            }
        }
        for (a, &b) in grads.dw[head * d * f..(head + 1) * d * f].iter_mut().zip(dw) {
            *a = b as f32;
        }
    }
    Ok(grads)
}

/// Forward inputs of Hedgehog linear attention: raw (post-RoPE) q, k through learnable
/// feature maps, then (optionally normalized) causal linear attention.
#[derive(Clone, Copy, Debug)]
pub struct HedgehogLinearAttnInputs<'a> {
    /// Sizes of the raw inputs; `key_dim` is the raw head dim D.
    pub dims: AttnDims,
    /// Raw queries `[B, T, H, D]`.
    pub q: &'a [f32],
    /// Raw keys `[B, T, H, D]`.
    pub k: &'a [f32],
    /// Values `[B, T, H, V]`.
    pub v: &'a [f32],
    /// Query feature-map weights `[H, D, F]`.
    pub feature_q: &'a [f32],
    /// Key feature-map weights `[H, D, F]`.
    pub feature_k: &'a [f32],
    /// Features per softmax F (features 2F).
    pub feature_dim: usize,
    /// Initial state `[N, H, 2F, V]`; `None` means zero.
    pub initial_state: Option<&'a [f32]>,
    /// Packed variable-length sequences (B = 1).
    pub cu_seqlens: Option<&'a [usize]>,
    /// Scale applied to phi(q); `None` means `(2F)^-0.5`.
    pub scale: Option<f32>,
    /// `Some(eps)`: normalize by `s phi(q_t)^T z_t + eps` (the LoLCATs form).
    pub normalize: Option<f32>,
    /// Initial normalizer `[N, H, 2F]` (normalized only); `None` means zero.
    pub initial_normalizer: Option<&'a [f32]>,
}

/// Gradients of Hedgehog linear attention.
#[derive(Clone, Debug, PartialEq)]
pub struct HedgehogLinearAttnGrads {
    /// dL/dq (raw), `[B, T, H, D]`.
    pub dq: Vec<f32>,
    /// dL/dk (raw), `[B, T, H, D]`.
    pub dk: Vec<f32>,
    /// dL/dv, `[B, T, H, V]`.
    pub dv: Vec<f32>,
    /// dL/dW_q, `[H, D, F]`.
    pub d_feature_q: Vec<f32>,
    /// dL/dW_k, `[H, D, F]`.
    pub d_feature_k: Vec<f32>,
    /// dL/d(initial state), `[N, H, 2F, V]`.
    pub d_initial_state: Vec<f32>,
    /// dL/d(initial normalizer), `[N, H, 2F]`; `Some` exactly when normalized.
    pub d_initial_normalizer: Option<Vec<f32>>,
}

fn run(
    x: &HedgehogLinearAttnInputs,
    upstream: &Upstream,
    chunk_size: Option<usize>,
) -> Result<HedgehogLinearAttnGrads> {
    let op = "hedgehog linear_attn backward";
    let d = x.dims;
    if let Some(c) = chunk_size {
        check_chunk(op, c)?;
    }
    let map =
        FeatureMapDims { tokens: d.batch * d.seq_len, heads: d.heads, in_dim: d.key_dim, feature_dim: x.feature_dim };
    check_map(op, &map, x.q, x.feature_q)?;
    check_map(op, &map, x.k, x.feature_k)?;
    let fq = feature_map(&map, x.q, x.feature_q)?;
    let fk = feature_map(&map, x.k, x.feature_k)?;
    let inner = LinearAttnBackwardInputs {
        dims: AttnDims { key_dim: 2 * x.feature_dim, ..d },
        q: &fq,
        k: &fk,
        v: x.v,
        initial_state: x.initial_state,
        cu_seqlens: x.cu_seqlens,
        scale: x.scale,
        normalize: x.normalize,
        initial_normalizer: x.initial_normalizer,
    };
    let g = match chunk_size {
        None => linear_attn::reference(&inner, upstream)?,
        Some(c) => linear_attn::chunked(&inner, upstream, c)?,
    };
    let gq = feature_map_backward(&map, x.q, x.feature_q, &g.dq)?;
    let gk = feature_map_backward(&map, x.k, x.feature_k, &g.dk)?;
    Ok(HedgehogLinearAttnGrads {
        dq: gq.dx,
        dk: gk.dx,
        dv: g.dv,
        d_feature_q: gq.dw,
        d_feature_k: gk.dw,
        d_initial_state: g.d_initial_state,
        d_initial_normalizer: g.d_initial_normalizer,
    })
}

/// Reference backward: feature maps in f64, [`linear_attn::reference`] on the features.
pub fn linear_attn_reference(
    inputs: &HedgehogLinearAttnInputs,
    upstream: &Upstream,
) -> Result<HedgehogLinearAttnGrads> {
    run(inputs, upstream, None)
}

/// Chunked backward: [`linear_attn::chunked`] on the features, chunks of `chunk_size`.
pub fn linear_attn_chunked(
    inputs: &HedgehogLinearAttnInputs,
    upstream: &Upstream,
    chunk_size: usize,
) -> Result<HedgehogLinearAttnGrads> {
    run(inputs, upstream, Some(chunk_size))
}
