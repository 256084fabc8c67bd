//! Gated linear attention: `linear_attn`, `simple_gla` (incl. RetNet / Lightning-2
//! constant decay) and `gla`, as prefill and as a batched decode step.
//!
//! All three are one recurrence with different decays (see [`reference`]):
//! `S_t = diag(exp(g_t)) S_{t-1} + phi_k(k_t) v_t^T`, `o_t = scale * phi_q(q_t)^T S_t`,
//! optionally divided by `scale * phi_q(q_t) . z_t + eps` with `z_t` the decayed sum of
//! mapped keys. Layout: q, k `[B, T, H, K]`, v `[B, T, H, V]`, g `[H]`, `[B, T, H]`
//! or `[B, T, H, K']`; state `[N, H, K', V]` (+ z `[N, H, K']`) in f32; output
//! `[B, T, H, V]` in the dtype of q. Computation is f32 (fast) or f64 (reference).
//!
//! Each public op validates once ([`problem::Problem::new`]) and then dispatches on the
//! device in [`forward`]: CPU -> the chunked kernels ([`chunk_scalar`] for scalar or no
//! decay, [`chunk_per_key`] for per-key decay), run in parallel over
//! sequences x heads; CUDA / WebGPU -> [`crate::gpu::gated_forward`] (every gate, the
//! normalizer and the feature maps). The `*_reference` functions run the f64 oracle on
//! the host.

pub(crate) mod chunk_per_key;
pub(crate) mod chunk_scalar;
pub mod decode;
pub(crate) mod problem;
pub(crate) mod reference;
pub(crate) mod source;

use linattn_tensor::{DType, Device, Error, Result, Tensor};
use rayon::prelude::*;

pub use problem::GateInput;
use problem::Problem;
use source::HeadSource;

use crate::options::{AttnOptions, AttnOutput, LinearState};

/// Which implementation runs a validated problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    /// The device's fast kernel.
    Fast,
    /// The f64 CPU oracle.
    Reference,
}

/// Linear attention: `S_t = S_{t-1} + k_t v_t^T`, `o_t = scale * q_t^T S_t`
/// (normalized by `scale * q_t . z_t + eps` when `opts.normalize`).
/// q, k `[B, T, H, K]`, v `[B, T, H, V]` -> output `[B, T, H, V]` and the final state.
pub fn linear_attn(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttnOptions) -> Result<AttnOutput> {
    forward("linear_attn", q, k, v, GateInput::None, opts, Engine::Fast)
}

/// The f64 oracle of [`linear_attn`].
pub fn linear_attn_reference(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttnOptions) -> Result<AttnOutput> {
    forward("linear_attn", q, k, v, GateInput::None, opts, Engine::Reference)
}

/// Simple GLA: scalar log-decay per head, `S_t = exp(g_t) S_{t-1} + k_t v_t^T`.
/// `g` is `[B, T, H]` (data-dependent) or `[H]` (a constant per head, RetNet /
/// Lightning-2). Log-decays should be <= 0 (see docs/kernels.md for why).
pub fn simple_gla(q: &Tensor, k: &Tensor, v: &Tensor, g: &Tensor, opts: &AttnOptions) -> Result<AttnOutput> {
    forward("simple_gla", q, k, v, scalar_gate(g), opts, Engine::Fast)
}

/// The f64 oracle of [`simple_gla`].
pub fn simple_gla_reference(q: &Tensor, k: &Tensor, v: &Tensor, g: &Tensor, opts: &AttnOptions) -> Result<AttnOutput> {
    forward("simple_gla", q, k, v, scalar_gate(g), opts, Engine::Reference)
}

/// GLA: per-key-dim log-decay `g [B, T, H, K']`, `S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T`.
pub fn gla(q: &Tensor, k: &Tensor, v: &Tensor, g: &Tensor, opts: &AttnOptions) -> Result<AttnOutput> {
    forward("gla", q, k, v, GateInput::PerKey(g), opts, Engine::Fast)
}

/// The f64 oracle of [`gla`].
pub fn gla_reference(q: &Tensor, k: &Tensor, v: &Tensor, g: &Tensor, opts: &AttnOptions) -> Result<AttnOutput> {
    forward("gla", q, k, v, GateInput::PerKey(g), opts, Engine::Reference)
}

/// `[H]` -> constant per head, anything else -> per token (shape checked later).
pub(crate) fn scalar_gate(g: &Tensor) -> GateInput<'_> {
    if g.rank() == 1 { GateInput::PerHead(g) } else { GateInput::PerToken(g) }
}

/// Validates, dispatches on the device, and assembles the output tensors.
pub(crate) fn forward(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    gate: GateInput,
    opts: &AttnOptions,
    engine: Engine,
) -> Result<AttnOutput> {
    let problem = Problem::new(op, q, k, v, gate, opts)?;
    let (out, states) = match engine {
        Engine::Reference => reference::run(&problem),
        // Device dispatch: the one place this op family picks a fast kernel.
        Engine::Fast => match &problem.device {
            Device::Cpu => run_cpu_chunked(&problem),
            Device::Cuda(_) | Device::Wgpu(_) if gpu_kernel_covers(&problem) => {
                return run_gpu_chunked(q, k, v, gate, opts, &problem);
            }
            other => return Err(Error::NotImplementedOnDevice { op, device: other.to_string() }),
        },
    };
    assemble(&problem, &out, &states)
}

/// The GPU kernels cover every gate, the normalizer and the feature maps
/// (`crate::gpu::gated_forward`); the window hybrid's key shift has its own path
/// (`crate::gpu::window_prefill`) and never reaches this dispatch.
fn gpu_kernel_covers(p: &Problem) -> bool {
    p.key_shift == 0
}

/// Runs the chunked forward on the inputs' GPU (validated by `Problem::new`).
fn run_gpu_chunked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    gate: GateInput,
    opts: &AttnOptions,
    p: &Problem,
) -> Result<AttnOutput> {
    let gpu_gate = match gate {
        GateInput::None => crate::gpu::Gate::None,
        GateInput::PerHead(g) => crate::gpu::Gate::PerHead(g),
        GateInput::PerToken(g) => crate::gpu::Gate::PerToken(g),
        GateInput::PerKey(g) => crate::gpu::Gate::PerKey(g),
    };
    crate::gpu::gated_forward(&crate::gpu::GatedCall {
        q,
        k,
        v,
        gate: gpu_gate,
        q_map: p.q_map.as_ref(),
        k_map: p.k_map.as_ref(),
        initial: opts.initial_state,
        cu_seqlens: opts.cu_seqlens,
        scale: p.scale,
        chunk: p.chunk,
        normalize: p.normalize,
        eps: p.eps,
    })
}

/// Runs every (sequence, head) raw through the chunked kernel that fits the gates.
/// Returns raw outputs `[len, V(+1)]` and final extended states `[K', V(+1)]` per task,
/// tasks ordered sequence-major.
pub(crate) fn run_raw_heads(p: &Problem) -> Vec<(Vec<f32>, Vec<f32>)> {
    let tasks: Vec<_> = p.spans.iter().flat_map(|s| (0..p.dims.heads).map(move |h| (*s, h))).collect();
    let vx = p.value_width();
    tasks
        .par_iter()
        .map(|&(span, head)| {
            let src = HeadSource { problem: p, span, head };
            let mut state = p.initial_head_state(span.index, head);
            let mut raw = vec![0.0f32; span.len() * vx];
            if src.gates_per_key() {
                chunk_per_key::run_head(&src, &mut state, &mut raw);
            } else {
                chunk_scalar::run_head(&src, &mut state, &mut raw);
            }
            (raw, state)
        })
        .collect()
}

/// The fast CPU path: chunked kernels, then normalization and scatter into `[B, T, H, V]`.
fn run_cpu_chunked(p: &Problem) -> (Vec<f32>, Vec<Vec<f32>>) {
    let d = p.dims;
    let (vd, vx) = (d.value_dim, p.value_width());
    let results = run_raw_heads(p);
    let mut out = vec![0.0f32; d.batch * d.seq_len * d.heads * vd];
    let mut states = Vec::with_capacity(results.len());
    for (task, (raw, state)) in results.into_iter().enumerate() {
        let (span, h) = (p.spans[task / d.heads], task % d.heads);
        for m in 0..span.len() {
            let row = &raw[m * vx..(m + 1) * vx];
            let dst = &mut out[d.v_index(span.row, span.start + m, h, 0)..][..vd];
            if p.normalize {
                let inv = 1.0 / (row[vd] + p.eps);
                dst.iter_mut().zip(row).for_each(|(o, &r)| *o = r * inv);
            } else {
                dst.copy_from_slice(&row[..vd]);
            }
        }
        states.push(state);
    }
    (out, states)
}

/// Builds the output tensor and splits extended states into `kv` and `z`.
fn assemble(p: &Problem, out: &[f32], states: &[Vec<f32>]) -> Result<AttnOutput> {
    let d = p.dims;
    let (kd, vd, vx) = (p.rec_key_dim, d.value_dim, p.value_width());
    let n = p.spans.len();
    let mut kv = Vec::with_capacity(n * d.heads * kd * vd);
    let mut z = Vec::with_capacity(n * d.heads * kd);
    for s in states {
        for r in 0..kd {
            kv.extend_from_slice(&s[r * vx..r * vx + vd]);
            if p.normalize {
                z.push(s[r * vx + vd]);
            }
        }
    }
    let output = Tensor::from_f32(out, p.out_dtype, [d.batch, d.seq_len, d.heads, vd])?;
    let kv = Tensor::from_f32(&kv, DType::F32, [n, d.heads, kd, vd])?;
    let z = if p.normalize { Some(Tensor::from_f32(&z, DType::F32, [n, d.heads, kd])?) } else { None };
    Ok(AttnOutput { output, final_state: LinearState { kv, z } })
}
