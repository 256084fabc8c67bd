//! Backward of GLA (gated linear attention with one log-gate per key dim).
//!
//! Forward, per sequence and head (q, k, g `[B, T, H, K]`, v `[B, T, H, V]`, state
//! `[N, H, K, V]`, scale s default `K^-0.5`):
//! ```text
//! S_t = diag(e^{g_t}) S_{t-1} + k_t v_t^T      o_t = s q_t^T S_t
//! ```
//! Gradients (`dS` accumulated backward from the final-state gradient):
//! ```text
//! dS      += s q_t do_t^T
//! dq_t     = s S_t do_t      dk_t = dS v_t      dv_t = dS^T k_t
//! dg_{t,i} = e^{g_{t,i}} sum_j dS[i,j] S_{t-1}[i,j]
//! dS[i,:] *= e^{g_{t,i}}
//! ```
//! Equivalently `dg_{t,i} = sum_{tau>=t} (q_{tau,i} dq_{tau,i} - k_{tau,i} dk_{tau,i}) +
//! sum_j dS_T[i,j] S_T[i,j]`, evaluated chunk-locally by [`chunked()`]. The chunked
//! intra-chunk decay `e^{b_{i,k} - b_{j,k}}` is formed element-wise for i >= j only,
//! so with log-gates <= 0 no exponent is positive.

use linattn_tensor::Result;

use super::{GateKind, GatedGrads, GatedProblem, Upstream, resolve_scale};
use crate::layout::AttnDims;

/// Gradients of GLA; `dg` is `[B, T, H, K]`.
pub type GlaGrads = GatedGrads;

/// Forward inputs of GLA.
#[derive(Clone, Copy, Debug)]
pub struct GlaBackwardInputs<'a> {
    /// Sizes; `key_dim` and `value_dim` may differ.
    pub dims: AttnDims,
    /// Queries `[B, T, H, K]`.
    pub q: &'a [f32],
    /// Keys `[B, T, H, K]`.
    pub k: &'a [f32],
    /// Values `[B, T, H, V]`.
    pub v: &'a [f32],
    /// Log-gates `[B, T, H, K]` (decay `e^{g}` per key dim).
    pub g: &'a [f32],
    /// Initial state `[N, H, K, V]`; `None` means zero.
    pub initial_state: Option<&'a [f32]>,
    /// Packed variable-length sequences (B = 1).
    pub cu_seqlens: Option<&'a [usize]>,
    /// Scale applied to q; `None` means `K^-0.5`.
    pub scale: Option<f32>,
    /// `Some(eps)`: divide each output by `s q_t^T z_t + eps`, with the decayed key sum
    /// `z_t = e^{g_t} z_{t-1} + k_t`.
    pub normalize: Option<f32>,
    /// Initial normalizer z_0 `[N, H, K]` (normalized only); `None` means zero.
    pub initial_normalizer: Option<&'a [f32]>,
}

fn problem<'a>(x: &GlaBackwardInputs<'a>) -> Result<GatedProblem<'a>> {
    Ok(GatedProblem {
        op: "gla backward",
        dims: x.dims,
        q: x.q,
        k: x.k,
        v: x.v,
        gate_kind: GateKind::PerKey,
        g: x.g,
        scale: resolve_scale("gla backward", x.scale, x.dims.key_dim)?,
        initial_state: x.initial_state,
        cu_seqlens: x.cu_seqlens,
        normalize: x.normalize,
        initial_normalizer: x.initial_normalizer,
    })
}

/// Reference backward (token-by-token reverse recurrence, f64 accumulation).
pub fn reference(inputs: &GlaBackwardInputs, upstream: &Upstream) -> Result<GlaGrads> {
    problem(inputs)?.reference(upstream)
}

/// Chunked backward (f32, chunks of `chunk_size` tokens, rayon over sequences x heads).
pub fn chunked(inputs: &GlaBackwardInputs, upstream: &Upstream, chunk_size: usize) -> Result<GlaGrads> {
    problem(inputs)?.chunked(upstream, chunk_size)
}
