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
//! In place (`*_step_in_place`): on the CPU the same pass reads and overwrites the
//! caller's state (copied first only if its storage is shared with another handle), so a
//! generation loop allocates nothing but the output; the state is scanned for Inf/NaN
//! before the first write, so a failed step leaves it exactly as it was. Batch 64, H = 8,
//! K = V = 64 (8 MiB of state) on two Zen 4 cores: 0.41-0.59 ms against 0.92-1.14 ms for
//! the step into a new state, whose fresh 8 MiB the kernel must fault in and clear every
//! call (`linattn bench attn --decode-batch 64`).
//!
//! GPU: a length-1 prefill from the given state through the device dispatch of
//! `forward` (the GPU chunk kernels); in place, the new state replaces the old one.

use linattn_tensor::ops::non_finite::first_non_finite_in_slice;
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

/// [`linear_attn_step`] updating `state` in place; returns the output `[N, H, V]`.
/// On the CPU the f32 state is read and written in one pass, with nothing allocated
/// beside the output (a generation loop's state then stays where it is); elsewhere the
/// new state replaces the old one. On `Err` the state is unchanged.
pub fn linear_attn_step_in_place(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    state: &mut LinearState,
    opts: &AttnOptions,
) -> Result<Tensor> {
    step_in_place("linear_attn_step_in_place", q, k, v, None, false, state, opts)
}

/// [`simple_gla_step`] updating `state` in place (see [`linear_attn_step_in_place`]).
pub fn simple_gla_step_in_place(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: &Tensor,
    state: &mut LinearState,
    opts: &AttnOptions,
) -> Result<Tensor> {
    step_in_place("simple_gla_step_in_place", q, k, v, Some(g), false, state, opts)
}

/// [`gla_step`] updating `state` in place (see [`linear_attn_step_in_place`]).
pub fn gla_step_in_place(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: &Tensor,
    state: &mut LinearState,
    opts: &AttnOptions,
) -> Result<Tensor> {
    step_in_place("gla_step_in_place", q, k, v, Some(g), true, state, opts)
}

/// `[N, H, X]` -> `[N, 1, H, X]` after checking the rank.
pub(crate) fn as_one_token(op: &str, name: &str, t: &Tensor, meaning: &str) -> Result<Tensor> {
    let d = t.dims();
    if d.len() != 3 {
        return Err(Error::invalid(format!("{op}: `{name}` must be {meaning}, got shape {}", t.shape())));
    }
    t.reshape([d[0], 1, d[1], d[2]])
}

/// A step's inputs reshaped to one token, `[N, 1, H, *]` (gates `[N, 1, H(, K')]` or
/// `[H]`).
struct OneToken {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Option<Tensor>,
    per_key: bool,
}

impl OneToken {
    #[allow(clippy::too_many_arguments)]
    fn new(
        op: &str,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        g: Option<&Tensor>,
        per_key: bool,
        opts: &AttnOptions,
    ) -> Result<OneToken> {
        if opts.cu_seqlens.is_some() || opts.initial_state.is_some() {
            return Err(Error::invalid(format!(
                "{op}: decode steps take the state as an argument; cu_seqlens and initial_state must be None"
            )));
        }
        let g = match g {
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
        Ok(OneToken {
            q: as_one_token(op, "q", q, "[N, H, K]")?,
            k: as_one_token(op, "k", k, "[N, H, K]")?,
            v: as_one_token(op, "v", v, "[N, H, V]")?,
            g,
            per_key,
        })
    }

    fn gate(&self) -> GateInput<'_> {
        match &self.g {
            None => GateInput::None,
            Some(g) if self.per_key => GateInput::PerKey(g),
            Some(g) => super::scalar_gate(g),
        }
    }
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
    let one = OneToken::new(op, q, k, v, g, per_key, opts)?;
    let step_opts = AttnOptions { initial_state: state, ..*opts };
    if one.q.is_cpu() {
        return step_cpu(op, &one, &step_opts);
    }
    let mut res = forward(op, &one.q, &one.k, &one.v, one.gate(), &step_opts, Engine::Fast)?;
    let d = res.output.dims().to_vec();
    res.output = res.output.reshape([d[0], d[2], d[3]])?;
    Ok(res)
}

#[allow(clippy::too_many_arguments)]
fn step_in_place(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    per_key: bool,
    state: &mut LinearState,
    opts: &AttnOptions,
) -> Result<Tensor> {
    let one = OneToken::new(op, q, k, v, g, per_key, opts)?;
    let on_cpu = one.q.is_cpu() && state.kv.is_cpu() && state.z.as_ref().is_none_or(Tensor::is_cpu);
    if !on_cpu {
        let step_opts = AttnOptions { initial_state: Some(&*state), ..*opts };
        let res = forward(op, &one.q, &one.k, &one.v, one.gate(), &step_opts, Engine::Fast)?;
        let d = res.output.dims().to_vec();
        *state = res.final_state;
        return res.output.reshape([d[0], d[2], d[3]]);
    }
    // Validation with the state (shapes, dtype, device, q/k/v/g values) before anything
    // is written; the state's own values are scanned below.
    Problem::for_cpu_step(
        op,
        &one.q,
        &one.k,
        &one.v,
        one.gate(),
        &AttnOptions { initial_state: Some(&*state), ..*opts },
    )?;
    for (name, t) in [("state.kv", Some(&state.kv)), ("state.z", state.z.as_ref())] {
        if let Some(t) = t {
            let values = t.as_slice::<f32>()?;
            if let Some(index) = first_non_finite_in_slice(values) {
                return Err(Error::NonFinite { op, tensor: name.into(), index, value: values[index] });
            }
        }
    }
    let p = Problem::for_cpu_step(op, &one.q, &one.k, &one.v, one.gate(), opts)?;
    let (n, heads, vd) = (p.spans.len(), p.dims.heads, p.dims.value_dim);
    let mut out = vec![0.0f32; n * heads * vd];
    let LinearState { kv, z } = state;
    let kv = kv.as_mut_slice::<f32>()?;
    let mut no_z = Vec::new();
    let z = match z {
        Some(z) => z.as_mut_slice::<f32>()?,
        None => &mut no_z,
    };
    run_cpu_step(&p, StateIo::InPlace { kv, z }, &mut out);
    Tensor::from_f32(&out, p.out_dtype, [n, heads, vd])
}

/// Where a CPU step reads the incoming state and writes the new one (`[N, H, K', V]`
/// and `[N, H, K']` f32).
enum StateIo<'s> {
    /// From `kv_in` / `z_in` (zeros when absent) into `kv_out` / `z_out`; the incoming
    /// values are checked for Inf/NaN on the way (see [`run_cpu_step`]).
    Copy { kv_in: Option<&'s [f32]>, z_in: Option<&'s [f32]>, kv_out: &'s mut [f32], z_out: &'s mut [f32] },
    /// Read and overwritten in place; the caller has checked the values. `z` may be
    /// empty when the op does not normalize.
    InPlace { kv: &'s mut [f32], z: &'s mut [f32] },
}

/// The CPU decode step on inputs reshaped to one token, into a new state (see the module
/// header).
fn step_cpu(op: &'static str, one: &OneToken, opts: &AttnOptions) -> Result<AttnOutput> {
    let p = Problem::for_cpu_step(op, &one.q, &one.k, &one.v, one.gate(), opts)?;
    let (n, heads, kd, vd) = (p.spans.len(), p.dims.heads, p.rec_key_dim, p.dims.value_dim);
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
    let mut z = vec![0.0f32; if p.normalize { n * heads * kd } else { 0 }];
    let io = StateIo::Copy {
        kv_in: kv_in.as_deref(),
        z_in: z_in.as_deref(),
        kv_out: kv_buf.as_slice_mut::<f32>()?,
        z_out: &mut z,
    };
    if !run_cpu_step(&p, io, &mut out) {
        let inputs = [("initial_state.kv", kv_in.as_deref()), ("initial_state.z", z_in.as_deref())];
        for (name, values) in inputs {
            if let Some(index) = values.and_then(first_non_finite_in_slice) {
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

/// Advances every (sequence, head) state by its one token in parallel and writes the
/// outputs `out [N, H, V]`: per key row r, `S'_r = exp(g_r) S_r + k_r v` and
/// `o += q_r S'_r`; with the normalizer `z'_r = exp(g_r) z_r + k_r` and `o /= q . z' + eps`.
/// Returns false when a copied incoming state value was not finite (the caller finds
/// it); in place, the caller has scanned the values before.
fn run_cpu_step(p: &Problem, io: StateIo, out: &mut [f32]) -> bool {
    let (heads, kd, vd) = (p.dims.heads, p.rec_key_dim, p.dims.value_dim);
    let vx = p.value_width();
    let (kv_in, z_in, in_place, kv, z) = match io {
        StateIo::Copy { kv_in, z_in, kv_out, z_out } => (kv_in, z_in, false, kv_out, z_out),
        StateIo::InPlace { kv, z } => (None, None, true, kv, z),
    };
    // Every task gets its slice of z; an empty one without the normalizer.
    let tasks = out.len() / vd.max(1);
    let z_tasks: Vec<&mut [f32]> =
        if p.normalize { z.chunks_mut(kd).collect() } else { (0..tasks).map(|_| &mut [][..]).collect() };
    let finite: Vec<bool> = out
        .par_chunks_mut(vd)
        .zip(kv.par_chunks_mut(kd * vd))
        .zip(z_tasks.into_par_iter())
        .enumerate()
        .map_init(Scratch::default, |scratch, (task, ((o, s_out), z_out))| {
            let (seq, head) = (task / heads, task % heads);
            let src = HeadSource { problem: p, span: p.spans[seq], head };
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
            let s_in = kv_in.map(|s| &s[base..base + kd * vd]);
            // Per-lane sums of `x * 0` over the incoming state: NaN iff a value is not
            // finite (one accumulator per lane, so the loop vectorizes).
            let mut poison = [0.0f32; POISON_LANES];
            for r in 0..kd {
                let (d, kr, qr) = (decays[r], ks[r], qs[r]);
                let dst = &mut s_out[r * vd..(r + 1) * vd];
                match s_in {
                    Some(s_in) => update_row(dst, &s_in[r * vd..(r + 1) * vd], &vs[..vd], d, kr, &mut poison),
                    None if in_place => dst.iter_mut().zip(&vs[..vd]).for_each(|(x, &vj)| *x = d * *x + kr * vj),
                    None => dst.iter_mut().zip(&vs[..vd]).for_each(|(x, &vj)| *x = kr * vj),
                }
                o.iter_mut().zip(dst.iter()).for_each(|(acc, &x)| *acc += qr * x);
            }
            let mut poison: f32 = poison.iter().sum();
            if p.normalize {
                let z_task = z_in.map(|z| &z[task * kd..(task + 1) * kd]);
                let mut denom = 0.0f32;
                for r in 0..kd {
                    let prev = match z_task {
                        Some(zt) => zt[r],
                        None if in_place => z_out[r],
                        None => 0.0,
                    };
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
    finite.iter().all(|&ok| ok)
}

/// Lanes of the non-finite check's accumulators in [`update_row`].
const POISON_LANES: usize = 16;

/// One key row of the state update, `dst = d * src + kr * v`, adding `src * 0` (NaN
/// exactly for a non-finite `src` value) into per-lane accumulators. A single running
/// sum here was a serial chain of dependent adds that kept the loop scalar; with
/// `POISON_LANES` independent sums it vectorizes.
fn update_row(dst: &mut [f32], src: &[f32], v: &[f32], d: f32, kr: f32, poison: &mut [f32; POISON_LANES]) {
    let whole = dst.len() / POISON_LANES * POISON_LANES;
    let (dst_body, dst_tail) = dst.split_at_mut(whole);
    let lanes =
        dst_body.chunks_exact_mut(POISON_LANES).zip(src.chunks_exact(POISON_LANES)).zip(v.chunks_exact(POISON_LANES));
    for ((x, s), vj) in lanes {
        for l in 0..POISON_LANES {
            poison[l] += s[l] * 0.0;
            x[l] = d * s[l] + kr * vj[l];
        }
    }
    for ((x, &s), &vj) in dst_tail.iter_mut().zip(&src[whole..]).zip(&v[whole..]) {
        poison[0] += s * 0.0;
        *x = d * s + kr * vj;
    }
}
