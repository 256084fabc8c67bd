//! Backward of (optionally normalized) causal linear attention.
//!
//! Forward, per sequence and head (q, k `[B, T, H, K]`, v `[B, T, H, V]`, state
//! `[N, H, K, V]`, scale s default `K^-0.5`):
//! ```text
//! S_t = S_{t-1} + k_t v_t^T                  S_0 = initial state (zero if absent)
//! o_t = s q_t^T S_t                          (plain)
//! o_t = s q_t^T S_t / (s q_t^T z_t + eps)    (normalized, z_t = z_{t-1} + k_t, z_0 = initial normalizer)
//! ```
//! Gradients (tokens t = 1..T; when normalized `d_t = s q_t^T z_t + eps`,
//! `du_t = do_t / d_t`, `dd_t = -(do_t . o_t) / d_t`; otherwise `du_t = do_t`, `dd_t = 0`):
//! ```text
//! G_t  = G_{t+1} + s q_t du_t^T     G_{T+1} = dL/dS_T (given)   G_t = dL/dS_t in total
//! H_t  = H_{t+1} + s q_t dd_t       H_{T+1} = dL/dz_T (given)
//! dq_t = s S_t du_t + s z_t dd_t    dk_t = G_t v_t + H_t        dv_t = G_t^T k_t
//! d(initial state) = G_1            d(initial normalizer) = H_1
//! ```
//! [`reference()`] runs this recurrence in f64; [`chunked()`] uses the chunked form of
//! `docs/kernels-backward.md` in f32. The normalizer is carried as a ones column of
//! the values (its state row is z), so both variants share the gated cores.

use linattn_tensor::Result;

use super::{GateKind, GatedProblem, Upstream, resolve_scale};
use crate::layout::AttnDims;

/// Default `eps` of the normalized form (as flash-linear-attention).
pub const DEFAULT_NORM_EPS: f32 = 1e-10;

/// Forward inputs of linear attention, as given to the forward op.
#[derive(Clone, Copy, Debug)]
pub struct LinearAttnBackwardInputs<'a> {
    /// Sizes; `key_dim` and `value_dim` may differ.
    pub dims: AttnDims,
    /// Queries `[B, T, H, K]`.
    pub q: &'a [f32],
    /// Keys `[B, T, H, K]`.
    pub k: &'a [f32],
    /// Values `[B, T, H, V]`.
    pub v: &'a [f32],
    /// Initial state `[N, H, K, V]`; `None` means zero.
    pub initial_state: Option<&'a [f32]>,
    /// Packed variable-length sequences (B = 1), FlashAttention convention.
    pub cu_seqlens: Option<&'a [usize]>,
    /// Scale applied to q; `None` means `K^-0.5`.
    pub scale: Option<f32>,
    /// `Some(eps)`: normalize each output by `s q_t^T z_t + eps`.
    pub normalize: Option<f32>,
    /// Initial normalizer z_0 `[N, H, K]` (normalized only); `None` means zero.
    pub initial_normalizer: Option<&'a [f32]>,
}

/// Gradients of linear attention.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearAttnGrads {
    /// dL/dq, `[B, T, H, K]`.
    pub dq: Vec<f32>,
    /// dL/dk, `[B, T, H, K]`.
    pub dk: Vec<f32>,
    /// dL/dv, `[B, T, H, V]`.
    pub dv: Vec<f32>,
    /// dL/d(initial state), `[N, H, K, V]`.
    pub d_initial_state: Vec<f32>,
    /// dL/d(initial normalizer), `[N, H, K]`; `Some` exactly when normalized.
    pub d_initial_normalizer: Option<Vec<f32>>,
}

fn problem<'a>(x: &LinearAttnBackwardInputs<'a>) -> Result<GatedProblem<'a>> {
    Ok(GatedProblem {
        op: "linear_attn backward",
        dims: x.dims,
        q: x.q,
        k: x.k,
        v: x.v,
        gate_kind: GateKind::None,
        g: &[],
        scale: resolve_scale("linear_attn backward", x.scale, x.dims.key_dim)?,
        initial_state: x.initial_state,
        cu_seqlens: x.cu_seqlens,
        normalize: x.normalize,
        initial_normalizer: x.initial_normalizer,
    })
}

fn strip(g: super::GatedGrads) -> LinearAttnGrads {
    LinearAttnGrads {
        dq: g.dq,
        dk: g.dk,
        dv: g.dv,
        d_initial_state: g.d_initial_state,
        d_initial_normalizer: g.d_initial_normalizer,
    }
}

/// Reference backward (token-by-token reverse recurrence, f64 accumulation).
pub fn reference(inputs: &LinearAttnBackwardInputs, upstream: &Upstream) -> Result<LinearAttnGrads> {
    Ok(strip(problem(inputs)?.reference(upstream)?))
}

/// Chunked backward (f32, chunks of `chunk_size` tokens, rayon over sequences x heads).
pub fn chunked(inputs: &LinearAttnBackwardInputs, upstream: &Upstream, chunk_size: usize) -> Result<LinearAttnGrads> {
    Ok(strip(problem(inputs)?.chunked(upstream, chunk_size)?))
}
