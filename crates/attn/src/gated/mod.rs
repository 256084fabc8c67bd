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
//! Each public op validates once ([`problem::Problem::for_fast_kernels`]: metadata only
//! for GPU inputs, no device->host copy; plus host f32 data and the non-finite check for
//! CPU inputs and for the reference) and then dispatches on the device in [`forward`]:
//! CPU -> the chunked kernels ([`chunk_scalar`] for scalar or no decay,
//! [`chunk_per_key`] for per-key decay: dense per-chunk products through `gemm`, AVX2
//! element-wise code when detected), run in parallel over sequences x heads with
//! per-thread scratch, writing `[B, T, H, V]` in place when there is no normalizer;
//! CUDA / WebGPU -> [`crate::gpu::gated_forward`] (every gate, the normalizer and the
//! feature maps). The `*_reference` functions run the f64 oracle on the host.

pub(crate) mod chunk_per_key;
pub(crate) mod chunk_scalar;
pub mod decode;
pub(crate) mod matmul;
pub(crate) mod problem;
pub(crate) mod reference;
pub(crate) mod source;

use linattn_tensor::{CpuBuffer, DType, Device, Error, Result, Storage, Tensor};
use rayon::prelude::*;

use matmul::MatMut;
pub use problem::GateInput;
use problem::Problem;
use source::{HeadSource, Scratch};

use crate::layout::SeqSpan;
use crate::vecops::Isa;

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
    let problem = match engine {
        Engine::Reference => Problem::new(op, q, k, v, gate, opts)?,
        Engine::Fast => Problem::for_fast_kernels(op, q, k, v, gate, opts)?,
    };
    let (out, states) = match engine {
        Engine::Reference => {
            let (out, states) = reference::run(&problem);
            (CpuBuffer::from_slice(&out), states)
        }
        // Device dispatch: the one place this op family picks a fast kernel.
        Engine::Fast => match &problem.device {
            Device::Cpu => run_cpu_chunked(&problem),
            Device::Cuda(_) | Device::Wgpu(_) if gpu_kernel_covers(&problem) => {
                return run_gpu_chunked(q, k, v, gate, opts, &problem);
            }
            other => return Err(Error::NotImplementedOnDevice { op, device: other.to_string() }),
        },
    };
    assemble(&problem, out, &states)
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

/// Runs one (sequence, head) through the chunked kernel that fits the gates.
fn run_task(p: &Problem, isa: Isa, scratch: &mut Scratch, span: SeqSpan, head: usize, out: &mut MatMut) -> Vec<f32> {
    let src = HeadSource { problem: p, span, head };
    let mut state = p.initial_head_state(span.index, head);
    if src.gates_per_key() {
        chunk_per_key::run_head(&src, isa, scratch, &mut state, out);
    } else {
        chunk_scalar::run_head(&src, isa, scratch, &mut state, out);
    }
    state
}

/// (sequence, head) tasks, sequence-major.
fn tasks(p: &Problem) -> Vec<(SeqSpan, usize)> {
    p.spans.iter().flat_map(|s| (0..p.dims.heads).map(move |h| (*s, h))).collect()
}

/// Runs every (sequence, head) raw through the chunked kernel that fits the gates.
/// Returns raw outputs `[len, V(+1)]` and final extended states `[K', V(+1)]` per task,
/// tasks ordered sequence-major.
pub(crate) fn run_raw_heads(p: &Problem) -> Vec<(Vec<f32>, Vec<f32>)> {
    run_raw_heads_with(p, Isa::detect())
}

fn run_raw_heads_with(p: &Problem, isa: Isa) -> Vec<(Vec<f32>, Vec<f32>)> {
    let vx = p.value_width();
    tasks(p)
        .par_iter()
        .map_init(Scratch::default, |scratch, &(span, head)| {
            let mut raw = vec![0.0f32; span.len() * vx];
            let state = run_task(p, isa, scratch, span, head, &mut MatMut::rows(&mut raw, span.len(), vx, vx));
            (raw, state)
        })
        .collect()
}

/// The output buffer `[B, T, H, V]` shared by the tasks of [`run_cpu_chunked_into`],
/// each of which writes only its own (sequence, head) rows.
struct SharedOutput(*mut f32);

// SAFETY: the pointer is only turned into views of disjoint (sequence, head) rows, one
// task each (see `run_cpu_chunked_into`), so sending or sharing it across the rayon
// workers never gives two threads the same element.
unsafe impl Send for SharedOutput {}
// SAFETY: as above.
unsafe impl Sync for SharedOutput {}

impl SharedOutput {
    /// The base pointer (a method, so closures capture the `Sync` wrapper, not the field).
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

/// The fast CPU path: chunked kernels, then normalization and scatter into `[B, T, H, V]`.
/// The output is written into the buffer that becomes the output tensor (no copy for
/// f32 outputs).
fn run_cpu_chunked(p: &Problem) -> (CpuBuffer, Vec<Vec<f32>>) {
    let d = p.dims;
    let mut out = CpuBuffer::zeroed(d.batch * d.seq_len * d.heads * d.value_dim * size_of::<f32>());
    let slice = out.as_slice_mut::<f32>().expect("a buffer of whole f32s");
    let states = run_cpu_chunked_into(p, Isa::detect(), slice);
    (out, states)
}

/// [`run_cpu_chunked`] on a given instruction set, into a vector.
#[cfg(test)]
pub(crate) fn run_cpu_chunked_with(p: &Problem, isa: Isa) -> (Vec<f32>, Vec<Vec<f32>>) {
    let d = p.dims;
    let mut out = vec![0.0f32; d.batch * d.seq_len * d.heads * d.value_dim];
    let states = run_cpu_chunked_into(p, isa, &mut out);
    (out, states)
}

/// Runs all tasks, writing the output `[B, T, H, V]` into `out`; returns the final
/// extended states per task.
fn run_cpu_chunked_into(p: &Problem, isa: Isa, out: &mut [f32]) -> Vec<Vec<f32>> {
    assert!(p.host_data, "the CPU kernels need the host data of the problem");
    let d = p.dims;
    let (vd, vx) = (d.value_dim, p.value_width());
    assert_eq!(out.len(), d.batch * d.seq_len * d.heads * vd);
    if !p.normalize {
        // Raw rows are the output rows: the kernels write `[B, T, H, V]` in place.
        let base = SharedOutput(out.as_mut_ptr());
        let total = out.len();
        let states = tasks(p)
            .par_iter()
            .map_init(Scratch::default, |scratch, &(span, head)| {
                let first = d.v_index(span.row, span.start, head, 0);
                let rows = span.len();
                assert!(rows == 0 || first + (rows - 1) * d.heads * vd + vd <= total);
                // SAFETY: the view covers rows `span.start..span.end` of sequence
                // `span.row`, head `head`: `vd` elements per row, row stride `H * V`,
                // inside `out` (asserted above). Tasks differ in (span, head) and spans
                // do not overlap, so no element is in two views; `out` outlives the
                // parallel loop and is not touched elsewhere during it.
                let mut view = unsafe { MatMut::from_raw(base.ptr().add(first), rows, vd, d.heads * vd) };
                run_task(p, isa, scratch, span, head, &mut view)
            })
            .collect();
        return states;
    }
    let results = run_raw_heads_with(p, isa);
    let mut states = Vec::with_capacity(results.len());
    for (task, (raw, state)) in results.into_iter().enumerate() {
        let (span, h) = (p.spans[task / d.heads], task % d.heads);
        for m in 0..span.len() {
            let row = &raw[m * vx..(m + 1) * vx];
            let dst = &mut out[d.v_index(span.row, span.start + m, h, 0)..][..vd];
            let inv = 1.0 / (row[vd] + p.eps);
            dst.iter_mut().zip(row).for_each(|(o, &r)| *o = r * inv);
        }
        states.push(state);
    }
    states
}

/// Builds the output tensor and splits extended states into `kv` and `z`.
fn assemble(p: &Problem, out: CpuBuffer, states: &[Vec<f32>]) -> Result<AttnOutput> {
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
    let shape = [d.batch, d.seq_len, d.heads, vd];
    let output = if p.out_dtype == DType::F32 {
        Tensor::from_storage(Storage::Cpu(out), shape, DType::F32)?
    } else {
        Tensor::from_f32(out.as_slice::<f32>()?, p.out_dtype, shape)?
    };
    let kv = Tensor::from_f32(&kv, DType::F32, [n, d.heads, kd, vd])?;
    let z = if p.normalize { Some(Tensor::from_f32(&z, DType::F32, [n, d.heads, kd])?) } else { None };
    Ok(AttnOutput { output, final_state: LinearState { kv, z } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.618 + seed as f32 * 1.7).sin() * 43758.547).fract() - 0.5).collect()
    }

    /// The baseline and the AVX2 + FMA compilations of both kernels agree (when the CPU
    /// has AVX2), and both match the f64 reference.
    #[test]
    fn portable_and_avx2_kernels_agree() {
        let (b, t, h, kd, vd) = (2usize, 150usize, 2usize, 24usize, 20usize);
        let q = Tensor::from_f32(&pattern(b * t * h * kd, 1), DType::F32, [b, t, h, kd]).unwrap();
        let k = Tensor::from_f32(&pattern(b * t * h * kd, 2), DType::F32, [b, t, h, kd]).unwrap();
        let v = Tensor::from_f32(&pattern(b * t * h * vd, 3), DType::F32, [b, t, h, vd]).unwrap();
        let gs: Vec<f32> = pattern(b * t * h, 4).iter().map(|x| -0.2 * (x + 0.6)).collect();
        let gk: Vec<f32> = pattern(b * t * h * kd, 5).iter().map(|x| -0.2 * (x + 0.6)).collect();
        let gs = Tensor::from_f32(&gs, DType::F32, [b, t, h]).unwrap();
        let gk = Tensor::from_f32(&gk, DType::F32, [b, t, h, kd]).unwrap();
        for normalize in [false, true] {
            let opts = AttnOptions { normalize, chunk_size: 32, ..AttnOptions::default() };
            for gate in [GateInput::None, GateInput::PerToken(&gs), GateInput::PerKey(&gk)] {
                let p = Problem::new("test", &q, &k, &v, gate, &opts).unwrap();
                let (portable, _) = run_cpu_chunked_with(&p, Isa::Portable);
                let (reference, _) = reference::run(&p);
                let err = crate::relative_rms_error(&reference, &portable);
                assert!(err < 1e-5, "portable vs reference: {err:e} ({gate:?}, normalize {normalize})");
                if Isa::detect() == Isa::Avx2Fma {
                    let (avx2, _) = run_cpu_chunked_with(&p, Isa::Avx2Fma);
                    let err = crate::relative_rms_error(&portable, &avx2);
                    assert!(err < 1e-6, "portable vs avx2: {err:e} ({gate:?}, normalize {normalize})");
                }
            }
        }
    }
}
