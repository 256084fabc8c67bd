//! Batched decode steps: one new token per sequence, advanced from a state.
//!
//! Layout: q, k `[N, H, K]`, v `[N, H, V]`; gates `[H]`, `[N, H]` or `[N, H, K']`;
//! state `[N, H, K', V]` (+ z `[N, H, K']`), f32; output `[N, H, V]` in the dtype of q.
//! A step is a length-1 prefill from the given state (one token per batch row), so it
//! runs the same validated path and kernels as prefill: on the CPU a chunk of one token
//! costs `O(K' V)` per head. A GPU decode kernel slots into the same dispatch.

use linattn_tensor::{Error, Result, Tensor};

use super::{Engine, GateInput, forward};
use crate::options::{AttnOptions, AttnOutput, LinearState};

/// One decode step of [`super::linear_attn`]; `state = None` starts from zeros.
pub fn linear_attn_step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    state: Option<&LinearState>,
    opts: &AttnOptions,
) -> Result<AttnOutput> {
    step("linear_attn_step", q, k, v, None, false, state, opts)
}

/// One decode step of [`super::simple_gla`]; `g` is `[N, H]` or `[H]`.
pub fn simple_gla_step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: &Tensor,
    state: Option<&LinearState>,
    opts: &AttnOptions,
) -> Result<AttnOutput> {
    step("simple_gla_step", q, k, v, Some(g), false, state, opts)
}

/// One decode step of [`super::gla`]; `g` is `[N, H, K']`.
pub fn gla_step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: &Tensor,
    state: Option<&LinearState>,
    opts: &AttnOptions,
) -> Result<AttnOutput> {
    step("gla_step", q, k, v, Some(g), true, state, opts)
}

/// `[N, H, X]` -> `[N, 1, H, X]` after checking the rank.
pub(crate) fn as_one_token(op: &str, name: &str, t: &Tensor, meaning: &str) -> Result<Tensor> {
    let d = t.dims();
    if d.len() != 3 {
        return Err(Error::invalid(format!("{op}: `{name}` must be {meaning}, got shape {}", t.shape())));
    }
    t.reshape([d[0], 1, d[1], d[2]])
}

#[allow(clippy::too_many_arguments)]
fn step(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    per_key: bool,
    state: Option<&LinearState>,
    opts: &AttnOptions,
) -> Result<AttnOutput> {
    if opts.cu_seqlens.is_some() || opts.initial_state.is_some() {
        return Err(Error::invalid(format!(
            "{op}: decode steps take the state as an argument; cu_seqlens and initial_state must be None"
        )));
    }
    let q4 = as_one_token(op, "q", q, "[N, H, K]")?;
    let k4 = as_one_token(op, "k", k, "[N, H, K]")?;
    let v4 = as_one_token(op, "v", v, "[N, H, V]")?;
    let g4 = match g {
        None => None,
        Some(g) if per_key => Some(as_one_token(op, "g", g, "[N, H, K']")?),
        Some(g) if g.rank() == 1 => Some(g.clone()),
        Some(g) => {
            let d = g.dims();
            if d.len() != 2 {
                return Err(Error::invalid(format!("{op}: `g` must be [N, H] or [H], got shape {}", g.shape())));
            }
            Some(g.reshape([d[0], 1, d[1]])?)
        }
    };
    let gate = match &g4 {
        None => GateInput::None,
        Some(g) if per_key => GateInput::PerKey(g),
        Some(g) => super::scalar_gate(g),
    };
    let step_opts = AttnOptions { initial_state: state, ..*opts };
    let mut res = forward(op, &q4, &k4, &v4, gate, &step_opts, Engine::Fast)?;
    let d = res.output.dims().to_vec();
    res.output = res.output.reshape([d[0], d[2], d[3]])?;
    Ok(res)
}
