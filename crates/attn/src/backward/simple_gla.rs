//! Backward of simple GLA (scalar decay per head and token: RetNet, Lightning-2 style).
//!
//! Forward, per sequence and head (q, k `[B, T, H, K]`, v `[B, T, H, V]`, log-gates g
//! `[B, T, H]`, state `[N, H, K, V]`, scale s default `K^-0.5`):
//! ```text
//! S_t = e^{g_t} S_{t-1} + k_t v_t^T      o_t = s q_t^T S_t
//! ```
//! Gradients (`dS` accumulated backward from the final-state gradient):
//! ```text
//! dS   += s q_t do_t^T
//! dq_t = s S_t do_t      dk_t = dS v_t      dv_t = dS^T k_t
//! dg_t = e^{g_t} <dS, S_{t-1}>               (Frobenius product)
//! dS   *= e^{g_t}                            (becomes dL/dS_{t-1})
//! ```
//! Equivalently `dg_t = sum_{tau>=t} (q_tau . dq_tau - k_tau . dk_tau) + <dS_T, S_T>`,
//! which the chunked form evaluates chunk-locally (see `docs/kernels-backward.md`).
//! Log-gates are expected <= 0; then every exponent of the chunked form is <= 0.

use linattn_tensor::Result;

use super::{GateKind, GatedGrads, GatedProblem, Upstream, resolve_scale};
use crate::layout::AttnDims;

/// Gradients of simple GLA; `dg` is `[B, T, H]`.
pub type SimpleGlaGrads = GatedGrads;

/// Forward inputs of simple GLA.
#[derive(Clone, Copy, Debug)]
pub struct SimpleGlaBackwardInputs<'a> {
    /// Sizes; `key_dim` and `value_dim` may differ.
    pub dims: AttnDims,
    /// Queries `[B, T, H, K]`.
    pub q: &'a [f32],
    /// Keys `[B, T, H, K]`.
    pub k: &'a [f32],
    /// Values `[B, T, H, V]`.
    pub v: &'a [f32],
    /// Log-gates `[B, T, H]` (decay `e^{g}`).
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

fn problem<'a>(x: &SimpleGlaBackwardInputs<'a>) -> Result<GatedProblem<'a>> {
    Ok(GatedProblem {
        op: "simple_gla backward",
        dims: x.dims,
        q: x.q,
        k: x.k,
        v: x.v,
        gate_kind: GateKind::Scalar,
        g: x.g,
        scale: resolve_scale("simple_gla backward", x.scale, x.dims.key_dim)?,
        initial_state: x.initial_state,
        cu_seqlens: x.cu_seqlens,
        normalize: x.normalize,
        initial_normalizer: x.initial_normalizer,
    })
}

/// Reference backward (token-by-token reverse recurrence, f64 accumulation).
pub fn reference(inputs: &SimpleGlaBackwardInputs, upstream: &Upstream) -> Result<SimpleGlaGrads> {
    problem(inputs)?.reference(upstream)
}

/// Chunked backward (f32, chunks of `chunk_size` tokens, rayon over sequences x heads).
pub fn chunked(inputs: &SimpleGlaBackwardInputs, upstream: &Upstream, chunk_size: usize) -> Result<SimpleGlaGrads> {
    problem(inputs)?.chunked(upstream, chunk_size)
}
