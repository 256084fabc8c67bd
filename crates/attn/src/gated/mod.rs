//! Gated linear attention: `linear_attn`, `simple_gla` (incl. RetNet / Lightning-2
//! constant decay) and `gla`, as prefill and as a batched decode step.
//!
//! All three are one recurrence with different decays (see `reference`):
//! `S_t = diag(exp(g_t)) S_{t-1} + phi_k(k_t) v_t^T`, `o_t = scale * phi_q(q_t)^T S_t`,
//! optionally divided by `scale * phi_q(q_t) . z_t + eps` with `z_t` the decayed sum of
//! mapped keys. Layout: q, k `[B, T, H, K]`, v `[B, T, H, V]`, g `[H]`, `[B, T, H]`
//! or `[B, T, H, K']`; state `[N, H, K', V]` (+ z `[N, H, K']`) in f32; output
//! `[B, T, H, V]` in the dtype of q. Computation is f32 (fast) or f64 (reference).
//!
//! Each public op validates once (`problem::Problem::for_fast_kernels`: metadata and a
//! non-finite scan on the device for GPU inputs, no device->host copy; host f32 data
//! for CPU inputs and for the reference) and then dispatches on the device in `forward`:
//! CPU -> the chunked kernels (scalar or no decay: the register-tiled
//! `chunk_scalar_avx512` on AVX-512 CPUs, else `chunk_scalar`; per-key decay:
//! `chunk_per_key`; the latter two are dense per-chunk products through `gemm` with
//! AVX2 element-wise code when detected), run in parallel over tasks of one sequence and
//! a group of its heads (one head, except for the block-major AVX-512 kernel) with
//! per-thread scratch, writing `[B, T, H, V]` in place when there is no normalizer;
//! CUDA / WebGPU -> `crate::gpu::gated_forward` (every gate, the normalizer and the
//! feature maps). The `*_reference` functions run the f64 oracle on the host.

pub(crate) mod chunk_per_key;
pub(crate) mod chunk_scalar;
#[cfg(target_arch = "x86_64")]
pub(crate) mod chunk_scalar_avx512;
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
            Device::Cpu => run_cpu_chunked(op, &problem)?,
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

/// One unit of parallel work: a sequence and a contiguous group of its heads.
#[derive(Clone, Copy, Debug)]
struct Task {
    span: SeqSpan,
    first_head: usize,
    heads: usize,
}

/// Final extended states of a task's heads, and whether every output value its kernel
/// wrote was finite (always true for kernels that do not check, see
/// [`kernel_checks_finite`]).
struct TaskResult {
    states: Vec<Vec<f32>>,
    outputs_finite: bool,
}

/// Whether the kernel that runs `p` on `isa` stands in for the scan of q, k, v for
/// non-finite values: the AVX-512 tile kernel on rows read as stored probes the
/// outputs it writes, and any non-finite q, k or v value makes an output non-finite
/// (see `chunk_scalar_avx512::run_heads`), so the inputs need a scan only when the probe
/// fires. Feature maps and key shifts come between the stored rows and the kernel, so
/// those problems are scanned beforehand.
fn kernel_checks_finite(p: &Problem, isa: Isa) -> bool {
    cfg!(target_arch = "x86_64")
        && isa == Isa::Avx512
        && !matches!(p.gates, problem::Gates::PerKey(_))
        && p.q_map.is_none()
        && p.k_map.is_none()
        && p.key_shift == 0
}

/// Runs one task through the chunked kernel that fits the gates: `outs[g]` receives the
/// raw rows of head `first_head + g`.
fn run_task(p: &Problem, isa: Isa, scratch: &mut Scratch, task: Task, outs: &mut [MatMut]) -> TaskResult {
    let heads = task.first_head..task.first_head + task.heads;
    let srcs: Vec<HeadSource> = heads.clone().map(|head| HeadSource { problem: p, span: task.span, head }).collect();
    let mut states: Vec<Vec<f32>> = heads.map(|h| p.initial_head_state(task.span.index, h)).collect();
    #[cfg(target_arch = "x86_64")]
    if tile_kernel_runs(p, isa) {
        // SAFETY: `Isa::Avx512` is only used when `Isa::detect` found AVX-512F, AVX2 and
        // FMA on this CPU (tests force it only under the same check).
        let outputs_finite = unsafe { chunk_scalar_avx512::run_heads(&srcs, &mut scratch.tiles, &mut states, outs) };
        return TaskResult { states, outputs_finite };
    }
    for ((src, state), out) in srcs.iter().zip(states.iter_mut()).zip(outs.iter_mut()) {
        if src.gates_per_key() {
            chunk_per_key::run_head(src, isa, scratch, state, out);
        } else {
            chunk_scalar::run_head(src, isa, scratch, state, out);
        }
    }
    TaskResult { states, outputs_finite: true }
}

/// Heads per task: the block-major AVX-512 kernel reads a group's rows contiguously, so
/// groups are as large as the thread count allows (one task per thread; at B = 1, H = 8,
/// K = V = 64, T = 4096 on 2 threads, groups of 4 heads ran 3-5% faster than groups of
/// 2 and 10% faster than groups of 1); the per-head kernels take one head per task.
fn heads_per_task(p: &Problem, isa: Isa) -> usize {
    let heads = p.dims.heads.max(1);
    if isa != Isa::Avx512 {
        return 1;
    }
    let wanted_tasks = rayon::current_num_threads().max(1);
    let groups_per_sequence = wanted_tasks.div_ceil(p.spans.len().max(1)).clamp(1, heads);
    heads.div_ceil(groups_per_sequence)
}

/// Tasks, sequence-major, heads ascending within a sequence.
fn tasks(p: &Problem, isa: Isa) -> Vec<Task> {
    let (heads, per) = (p.dims.heads, heads_per_task(p, isa));
    p.spans
        .iter()
        .flat_map(|&span| {
            (0..heads).step_by(per).map(move |first_head| Task { span, first_head, heads: per.min(heads - first_head) })
        })
        .collect()
}

/// Raw output rows `[len, V(+1)]` and final extended state `[K', V(+1)]` of one
/// (sequence, head).
pub(crate) type RawHead = (Vec<f32>, Vec<f32>);

/// Runs every (sequence, head) raw through the chunked kernel that fits the gates.
/// Returns raw outputs and final extended states per (sequence, head),
/// sequence-major. `p` must have been checked for non-finite q, k, v (`Problem::new`
/// does).
pub(crate) fn run_raw_heads(p: &Problem) -> Vec<RawHead> {
    assert!(p.qkv_checked, "run_raw_heads needs a problem whose inputs were checked");
    run_raw_heads_with(p, Isa::detect()).0
}

/// [`run_raw_heads`] on `isa`; also says whether the kernels' output probes saw only
/// finite values (see [`kernel_checks_finite`]).
fn run_raw_heads_with(p: &Problem, isa: Isa) -> (Vec<RawHead>, bool) {
    let vx = p.value_width();
    let per_task: Vec<(Vec<RawHead>, bool)> = tasks(p, isa)
        .par_iter()
        .map_init(Scratch::default, |scratch, &task| {
            let rows = task.span.len();
            let mut raws: Vec<Vec<f32>> = (0..task.heads).map(|_| vec![0.0f32; rows * vx]).collect();
            let mut outs: Vec<MatMut> = raws.iter_mut().map(|raw| MatMut::rows(raw, rows, vx, vx)).collect();
            let result = run_task(p, isa, scratch, task, &mut outs);
            drop(outs);
            (raws.into_iter().zip(result.states).collect(), result.outputs_finite)
        })
        .collect();
    let finite = per_task.iter().all(|(_, finite)| *finite);
    (per_task.into_iter().flat_map(|(heads, _)| heads).collect(), finite)
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
/// f32 outputs). When the AVX-512 tile kernel writes that buffer in place
/// ([`writes_output_in_place`]), the buffer is not zeroed beforehand: the kernel stores
/// every element of its rows through raw pointers and reads none, so no serial pass
/// over the whole output runs ahead of the parallel kernel (at B = 1, T = 4096, H = 8,
/// V = 64 on 2 threads that pass was about 7% of simple_gla's time).
/// Fails with `Error::NonFinite` for a non-finite q, k or v value.
fn run_cpu_chunked(op: &'static str, p: &Problem) -> Result<(CpuBuffer, Vec<Vec<f32>>)> {
    let d = p.dims;
    let total = d.batch * d.seq_len * d.heads * d.value_dim;
    let isa = Isa::detect();
    if writes_output_in_place(p) && tile_kernel_runs(p, isa) && spans_cover_every_row(p) {
        let mut states = Vec::new();
        // SAFETY: `fill` hands `run_cpu_chunked_into` the buffer's uninitialized `total`
        // f32s (8-byte aligned). With no normalizer and the tile kernel running every
        // task, every task stores every element of its (sequence, head) rows through
        // raw pointers and never reads them (`chunk_scalar_avx512::run_heads`; tested
        // on NaN-filled buffers); tasks cover every head, and the spans cover every
        // (batch, token) row (checked above), so on `Ok` all `total` values are
        // initialized.
        let out = unsafe {
            CpuBuffer::try_filled_uninit(total * size_of::<f32>(), |start| {
                states = run_cpu_chunked_into(op, p, isa, start.cast::<f32>(), total)?;
                Ok::<(), Error>(())
            })?
        };
        return Ok((out, states));
    }
    let mut out = CpuBuffer::zeroed(total * size_of::<f32>());
    let slice = out.as_slice_mut::<f32>().expect("a buffer of whole f32s");
    // SAFETY: `slice` is `total` initialized f32s, exclusively borrowed for the call.
    let states = unsafe { run_cpu_chunked_into(op, p, isa, slice.as_mut_ptr(), total)? };
    Ok((out, states))
}

/// [`run_cpu_chunked`] on a given instruction set, into a vector. Where the kernel may
/// write an uninitialized output (see [`run_cpu_chunked`]) the vector starts as NaN,
/// so an element it failed to write shows up in every comparison.
#[cfg(test)]
pub(crate) fn run_cpu_chunked_with(p: &Problem, isa: Isa) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let d = p.dims;
    let fill = if writes_output_in_place(p) && tile_kernel_runs(p, isa) { f32::NAN } else { 0.0 };
    let mut out = vec![fill; d.batch * d.seq_len * d.heads * d.value_dim];
    let total = out.len();
    // SAFETY: `out` is `total` initialized f32s, exclusively borrowed for the call.
    let states = unsafe { run_cpu_chunked_into("test", p, isa, out.as_mut_ptr(), total)? };
    Ok((out, states))
}

/// Whether the kernels write the output `[B, T, H, V]` in place (no normalizer): the
/// raw rows are then the output rows.
fn writes_output_in_place(p: &Problem) -> bool {
    !p.normalize
}

/// Whether every task of `p` runs the AVX-512 register-tile kernel (scalar or no decay
/// on an AVX-512 CPU), see [`run_task`].
fn tile_kernel_runs(p: &Problem, isa: Isa) -> bool {
    cfg!(target_arch = "x86_64") && isa == Isa::Avx512 && !matches!(p.gates, problem::Gates::PerKey(_))
}

/// Whether the sequence spans cover all `B * T` (batch, token) rows: they never overlap
/// (validated layout), so their lengths adding up to `B * T` means every row is in one.
fn spans_cover_every_row(p: &Problem) -> bool {
    p.spans.iter().map(SeqSpan::len).sum::<usize>() == p.dims.batch * p.dims.seq_len
}

/// Runs all tasks, writing the output `[B, T, H, V]` (`total` f32s at `out`); returns
/// the final extended states per (sequence, head). Unless `p.qkv_checked`, q, k, v are
/// checked for non-finite values: after the kernel only if its output probe fired where
/// it has one ([`kernel_checks_finite`]), else before it runs; on failure the error
/// names the first non-finite value (the contents of `out` are then unspecified).
///
/// # Safety
/// `out` must be valid for reads and writes of `total` f32s, used by nobody else during
/// the call, and initialized unless [`writes_output_in_place`] and
/// [`tile_kernel_runs`] hold for `p` on `isa` (then the kernel only writes it).
unsafe fn run_cpu_chunked_into(
    op: &'static str,
    p: &Problem,
    isa: Isa,
    out: *mut f32,
    total: usize,
) -> Result<Vec<Vec<f32>>> {
    assert!(p.host_data, "the CPU kernels need the host data of the problem");
    let d = p.dims;
    let vd = d.value_dim;
    assert_eq!(total, d.batch * d.seq_len * d.heads * vd);
    let in_kernel_check = !p.qkv_checked && kernel_checks_finite(p, isa);
    if !p.qkv_checked && !in_kernel_check {
        p.check_qkv_finite(op)?;
    }
    if writes_output_in_place(p) {
        // Raw rows are the output rows: the kernels write `[B, T, H, V]` in place.
        let base = SharedOutput(out);
        let per_task: Vec<TaskResult> = tasks(p, isa)
            .par_iter()
            .map_init(Scratch::default, |scratch, &task| {
                let span = task.span;
                let rows = span.len();
                let mut outs = Vec::with_capacity(task.heads);
                for head in task.first_head..task.first_head + task.heads {
                    let first = d.v_index(span.row, span.start, head, 0);
                    assert!(rows == 0 || first + (rows - 1) * d.heads * vd + vd <= total);
                    // SAFETY: the view covers rows `span.start..span.end` of sequence
                    // `span.row`, head `head`: `vd` elements per row, row stride `H * V`,
                    // inside the `total` values at `out` (asserted above). Views differ
                    // in (span, head) and spans do not overlap, so no element is in two
                    // views; `out` outlives the parallel loop and is not touched
                    // elsewhere during it (caller contract).
                    outs.push(unsafe { MatMut::from_raw(base.ptr().add(first), rows, vd, d.heads * vd) });
                }
                run_task(p, isa, scratch, task, &mut outs)
            })
            .collect();
        if in_kernel_check && !per_task.iter().all(|r| r.outputs_finite) {
            // A non-finite input, or finite inputs whose outputs overflowed: the scan
            // tells which (and names the first bad value).
            p.check_qkv_finite(op)?;
        }
        return Ok(per_task.into_iter().flat_map(|r| r.states).collect());
    }
    // SAFETY: with a normalizer the buffer is initialized (caller contract), `total`
    // f32s valid for reads and writes and used by nobody else during the call.
    let out = unsafe { std::slice::from_raw_parts_mut(out, total) };
    let vx = p.value_width();
    let (results, finite) = run_raw_heads_with(p, isa);
    if in_kernel_check && !finite {
        p.check_qkv_finite(op)?;
    }
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
    Ok(states)
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

    /// Every kernel this CPU can run (the baseline and AVX2 + FMA compilations of both
    /// per-head kernels, the AVX-512 tile kernel) agrees with the others and with the f64
    /// reference: widths that are and are not multiples of 16, a normalizer column that
    /// makes V + 1 cross a 16 boundary, sequences shorter than one block, tails, every
    /// chunk size, outputs and final states.
    #[test]
    fn every_cpu_kernel_agrees() {
        let shapes = [
            (2usize, 150usize, 2usize, 24usize, 20usize, 32usize),
            (1, 1, 3, 64, 64, 16),
            (1, 83, 3, 100, 63, 64),
            (2, 40, 1, 16, 128, 16),
        ];
        for (b, t, h, kd, vd, chunk) in shapes {
            let q = Tensor::from_f32(&pattern(b * t * h * kd, 1), DType::F32, [b, t, h, kd]).unwrap();
            let k = Tensor::from_f32(&pattern(b * t * h * kd, 2), DType::F32, [b, t, h, kd]).unwrap();
            let v = Tensor::from_f32(&pattern(b * t * h * vd, 3), DType::F32, [b, t, h, vd]).unwrap();
            let gs: Vec<f32> = pattern(b * t * h, 4).iter().map(|x| -0.2 * (x + 0.6)).collect();
            let gk: Vec<f32> = pattern(b * t * h * kd, 5).iter().map(|x| -0.2 * (x + 0.6)).collect();
            let gh: Vec<f32> = (0..h).map(|i| -0.05 * (i + 1) as f32).collect();
            let gs = Tensor::from_f32(&gs, DType::F32, [b, t, h]).unwrap();
            let gk = Tensor::from_f32(&gk, DType::F32, [b, t, h, kd]).unwrap();
            let gh = Tensor::from_f32(&gh, DType::F32, [h]).unwrap();
            for normalize in [false, true] {
                let opts = AttnOptions { normalize, chunk_size: chunk, ..AttnOptions::default() };
                let gates =
                    [GateInput::None, GateInput::PerHead(&gh), GateInput::PerToken(&gs), GateInput::PerKey(&gk)];
                for gate in gates {
                    let case = format!("{gate:?}, normalize {normalize}, B {b} T {t} H {h} K {kd} V {vd} C {chunk}");
                    let p = Problem::new("test", &q, &k, &v, gate, &opts).unwrap();
                    let (portable, portable_states) = run_cpu_chunked_with(&p, Isa::Portable).unwrap();
                    let (reference, _) = reference::run(&p);
                    let err = crate::relative_rms_error(&reference, &portable);
                    assert!(err < 1e-5, "portable vs reference: {err:e} ({case})");
                    for isa in Isa::available() {
                        let (fast, fast_states) = run_cpu_chunked_with(&p, isa).unwrap();
                        let err = crate::relative_rms_error(&portable, &fast);
                        assert!(err < 1e-6, "portable vs {isa:?}: {err:e} ({case})");
                        let err = crate::relative_rms_error(&portable_states.concat(), &fast_states.concat());
                        assert!(err < 1e-6, "final states, portable vs {isa:?}: {err:e} ({case})");
                    }
                }
            }
        }
    }
}
