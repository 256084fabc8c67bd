//! Batched decode steps: one new token per sequence, advanced from a state.
//!
//! Layout: q, k `[N, H, K]`, v `[N, H, V]`; gates `[H]`, `[N, H]` or `[N, H, K']`;
//! state `[N, H, K', V]` (+ z `[N, H, K']`), f32; output `[N, H, V]` in the dtype of q.
//! Validation is the prefill's (`Problem`, on the inputs reshaped to one token).
//!
//! CPU: an in-place state update, one pass over the state per (sequence, head), in
//! parallel: for each key row r, `S'_r = exp(g_r) S_r + k_r v` (read S, write S' into
//! the output state, the only allocation beside the output) and `o += q_r S'_r`;
//! `z'_r = exp(g_r) z_r + k_r`, `o /= q . z' + eps` when normalizing. Non-finite values
//! in the incoming state are detected during that pass (no extra scan unless one is
//! found, then `Error::NonFinite` names its first index). Feature maps and the scale
//! are applied to the single q, k row as in prefill.
//!
//! GPU: a length-1 prefill from the given state through the device dispatch of
//! [`forward`] (the GPU chunk kernels).

use linattn_tensor::{CpuBuffer, DType, Error, Result, Storage, Tensor};
use rayon::prelude::*;

use super::problem::{Problem, host_f32};
use super::source::{HeadSource, Scratch};
use super::{Engine, GateInput, forward};
use crate::options::{AttnOptions, AttnOutput, LinearState};
use crate::vecops::exp_in_place;

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
    if q4.is_cpu() {
        return step_cpu(op, &q4, &k4, &v4, gate, &step_opts);
    }
    let mut res = forward(op, &q4, &k4, &v4, gate, &step_opts, Engine::Fast)?;
    let d = res.output.dims().to_vec();
    res.output = res.output.reshape([d[0], d[2], d[3]])?;
    Ok(res)
}

/// The CPU decode step on inputs reshaped to `[N, 1, H, *]` (see the module header).
fn step_cpu(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    gate: GateInput,
    opts: &AttnOptions,
) -> Result<AttnOutput> {
    let p = Problem::for_cpu_step(op, q, k, v, gate, opts)?;
    let (n, heads, kd, vd) = (p.spans.len(), p.dims.heads, p.rec_key_dim, p.dims.value_dim);
    let vx = p.value_width();
    let kv_in = match opts.initial_state {
        Some(s) => Some(host_f32(&s.kv)?),
        None => None,
    };
    let z_in = match opts.initial_state.and_then(|s| s.z.as_ref()) {
        Some(z) => Some(host_f32(z)?),
        None => None,
    };
    let mut out = vec![0.0f32; n * heads * vd];
    // The new state is written straight into the buffer of the output tensor.
    let mut kv_buf = CpuBuffer::zeroed(n * heads * kd * vd * size_of::<f32>());
    let kv = kv_buf.as_slice_mut::<f32>()?;
    // Without the normalizer z is a small unused buffer, so every task gets a slice.
    let mut z = vec![0.0f32; n * heads * kd];
    let finite: Vec<bool> = out
        .par_chunks_mut(vd)
        .zip(kv.par_chunks_mut(kd * vd))
        .zip(z.par_chunks_mut(kd))
        .enumerate()
        .map_init(Scratch::default, |scratch, (task, ((o, s_out), z_out))| {
            let (seq, head) = (task / heads, task % heads);
            let src = HeadSource { problem: &p, span: p.spans[seq], head };
            scratch.reserve(1, kd, vx);
            let Scratch { q: qs, k: ks, v: vs, b, .. } = scratch;
            src.fill_queries(0, 1, qs);
            src.fill_keys_values(0, 1, ks, vs);
            let decays = &mut b[..kd];
            if src.has_gates() {
                src.fill_key_gates(0, 1, decays);
                exp_in_place(decays);
            } else {
                decays.fill(1.0);
            }
            let base = task * kd * vd;
            let s_in = kv_in.as_ref().map(|s| &s[base..base + kd * vd]);
            // Sum of `x * 0` over the incoming state: NaN iff a value is not finite.
            let mut poison = 0.0f32;
            for r in 0..kd {
                let (d, kr, qr) = (decays[r], ks[r], qs[r]);
                let dst = &mut s_out[r * vd..(r + 1) * vd];
                match s_in {
                    Some(s_in) => {
                        let row = &s_in[r * vd..(r + 1) * vd];
                        for ((x, &s), &vj) in dst.iter_mut().zip(row).zip(&vs[..vd]) {
                            poison += s * 0.0;
                            *x = d * s + kr * vj;
                        }
                    }
                    None => dst.iter_mut().zip(&vs[..vd]).for_each(|(x, &vj)| *x = kr * vj),
                }
                o.iter_mut().zip(dst.iter()).for_each(|(acc, &x)| *acc += qr * x);
            }
            if p.normalize {
                let z_task = z_in.as_ref().map(|z| &z[task * kd..(task + 1) * kd]);
                let mut denom = 0.0f32;
                for r in 0..kd {
                    let prev = z_task.map_or(0.0, |zt| zt[r]);
                    poison += prev * 0.0;
                    z_out[r] = decays[r] * prev + ks[r];
                    denom += qs[r] * z_out[r];
                }
                let inv = 1.0 / (denom + p.eps);
                o.iter_mut().for_each(|x| *x *= inv);
            }
            poison == 0.0
        })
        .collect();
    if finite.iter().any(|ok| !ok) {
        let inputs = [("initial_state.kv", kv_in.as_deref()), ("initial_state.z", z_in.as_deref())];
        for (name, values) in inputs {
            if let Some(index) = values.and_then(|x| x.iter().position(|v| !v.is_finite())) {
                let value = values.map_or(0.0, |x| x[index]);
                return Err(Error::NonFinite { op, tensor: name.to_string(), index, value });
            }
        }
    }
    let output = Tensor::from_f32(&out, p.out_dtype, [n, heads, vd])?;
    let kv = Tensor::from_storage(Storage::Cpu(kv_buf), [n, heads, kd, vd], DType::F32)?;
    let z = if p.normalize { Some(Tensor::from_f32(&z, DType::F32, [n, heads, kd])?) } else { None };
    Ok(AttnOutput { output, final_state: LinearState { kv, z } })
}
