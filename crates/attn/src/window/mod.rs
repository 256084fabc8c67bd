//! LoLCATs sliding-window + linear attention hybrid (`window_linear`).
//!
//! Per query n of a sequence, with W the window (keys `n-W+1..=n`, the query's own key
//! included), s the score scale (default `D^-0.5`), `a = sigmoid(w_h)` the per-head
//! window factor, phi_q / phi_k the feature maps (identity when absent), and
//! `S = sum_{j <= n-W} phi_k(k_j) v_j^T`, `z = sum_{j <= n-W} phi_k(k_j)`:
//!
//! ```text
//! c   = max_{j in window} s * q_n . k_j
//! y_n = (sum_win a exp(s q_n.k_j - c) v_j + phi_q(q_n)^T S) / (sum_win a exp(s q_n.k_j - c) + phi_q(q_n) . z)
//! ```
//!
//! This is the definition (DESIGN.md, LoLCATs): the `exp(-c)` factor multiplies only the
//! window terms, so `c` must be exactly the maximum over the query's whole window, never a
//! running or per-tile maximum. Both kernels compute all window scores first, then `c`.
//! Window exponents are <= 0; the linear terms are unscaled, non-negative sums for the
//! Hedgehog map (softmax outputs). Layout: q, k `[B, T, H, D]`, v `[B, T, H, V]`,
//! window factor logits `[H]`; output `[B, T, H, V]` in q's dtype.
//!
//! The linear term equals causal linear attention over keys shifted by W positions
//! (position m sees key/value `m - W`), so the fast path runs the chunked linear kernel
//! with `key_shift = W`, scale 1 and the ones column for z, then adds the window terms
//! (`O(T W (D + V))`). The reference evaluates the formula quadratically in f64.
//!
//! State: `linear` (S `[N, H, K', V]`, z `[N, H, K']`, f32) covers the keys older than the
//! last W tokens; the window KV cache `keys [N, H, W, D]`, `values [N, H, W, V]` (f32)
//! is a ring buffer: token m of a sequence lives in slot `m % W`; `tokens_seen [N]` (i64)
//! counts the sequence's tokens. Prefill starts from an empty state.

pub(crate) mod chunked;
pub mod decode;
pub(crate) mod reference;

use linattn_tensor::ops::non_finite::first_non_finite_in_slice;
use linattn_tensor::{DType, Device, Error, Result, Tensor};

pub use decode::window_linear_step;

use crate::gated::Engine;
use crate::gated::problem::{GateInput, Problem, expect_shape};
use crate::options::{AttnOptions, DEFAULT_CHUNK_SIZE, LinearState};

/// Window length W when none is given (LoLCATs).
pub const DEFAULT_WINDOW: usize = 64;
/// Largest window accepted.
pub const MAX_WINDOW: usize = 65536;

/// Options of [`window_linear`] and [`window_linear_step`].
#[derive(Clone, Copy, Debug)]
pub struct WindowOptions<'a> {
    /// Window length W (keys `n-W+1..=n` are in query n's window).
    pub window: usize,
    /// Softmax score scale; default `D^-0.5`.
    pub scale: Option<f32>,
    /// Chunk length of the linear part's fast kernel: 16, 32 or 64.
    pub chunk_size: usize,
    /// Variable-length batch (prefill only).
    pub cu_seqlens: Option<&'a [usize]>,
    /// Hedgehog weights `[H, D, F]` for the linear part's queries (identity if `None`).
    pub q_feature_map: Option<&'a Tensor>,
    /// Hedgehog weights `[H, D, F]` for the linear part's keys (identity if `None`).
    pub k_feature_map: Option<&'a Tensor>,
}

impl Default for WindowOptions<'_> {
    fn default() -> Self {
        WindowOptions {
            window: DEFAULT_WINDOW,
            scale: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            cu_seqlens: None,
            q_feature_map: None,
            k_feature_map: None,
        }
    }
}

/// Decoding state of the window hybrid (see the module header for the layout).
#[derive(Clone, Debug)]
pub struct WindowState {
    /// S `[N, H, K', V]` and z (always `Some`) `[N, H, K']` over evicted keys.
    pub linear: LinearState,
    /// Ring buffer of raw keys `[N, H, W, D]`, f32.
    pub keys: Tensor,
    /// Ring buffer of values `[N, H, W, V]`, f32.
    pub values: Tensor,
    /// Tokens seen per sequence `[N]`, i64.
    pub tokens_seen: Tensor,
}

impl WindowState {
    /// An empty state (no tokens seen) on the CPU.
    pub fn empty(
        sequences: usize,
        heads: usize,
        head_dim: usize,
        feature_dim: usize,
        value_dim: usize,
        window: usize,
    ) -> Result<WindowState> {
        let cpu = Device::Cpu;
        Ok(WindowState {
            linear: LinearState::zeros(sequences, heads, feature_dim, value_dim, true, &cpu)?,
            keys: Tensor::zeros([sequences, heads, window, head_dim], DType::F32, &cpu)?,
            values: Tensor::zeros([sequences, heads, window, value_dim], DType::F32, &cpu)?,
            tokens_seen: Tensor::zeros([sequences], DType::I64, &cpu)?,
        })
    }
}

/// Output of [`window_linear`] / [`window_linear_step`].
#[derive(Clone, Debug)]
pub struct WindowOutput {
    /// `[B, T, H, V]` (prefill) or `[N, H, V]` (step), in the dtype of q.
    pub output: Tensor,
    /// State after the last token of each sequence.
    pub state: WindowState,
}

/// A validated window call: the linear part as a shifted [`Problem`] plus the window's
/// own parameters.
pub(crate) struct WindowProblem<'a> {
    pub linear: Problem<'a>,
    pub window: usize,
    pub score_scale: f32,
    /// `sigmoid(w_h)` per head.
    pub factor: Vec<f32>,
    /// The logits `w_h` themselves.
    pub factor_logits: Vec<f32>,
}

impl<'a> WindowProblem<'a> {
    /// Validates a call. The linear part loads q, k, v to the host (checked there) for
    /// the CPU and the reference; for the GPU kernels ([`Engine::Fast`] on a GPU) it
    /// copies nothing and checks q, k, v on their device (`Problem::for_fast_kernels`).
    pub fn new(
        op: &'static str,
        q: &'a Tensor,
        k: &'a Tensor,
        v: &'a Tensor,
        window_factor: &'a Tensor,
        opts: &WindowOptions<'a>,
        engine: Engine,
    ) -> Result<WindowProblem<'a>> {
        if opts.window == 0 || opts.window > MAX_WINDOW {
            return Err(Error::invalid(format!("{op}: window {} must be in 1..={MAX_WINDOW}", opts.window)));
        }
        let linear_opts = AttnOptions {
            scale: Some(1.0),
            chunk_size: opts.chunk_size,
            cu_seqlens: opts.cu_seqlens,
            initial_state: None,
            normalize: true,
            eps: 0.0,
            q_feature_map: opts.q_feature_map,
            k_feature_map: opts.k_feature_map,
        };
        let mut linear = if engine == Engine::Fast && !q.is_cpu() {
            Problem::for_fast_kernels(op, q, k, v, GateInput::None, &linear_opts)?
        } else {
            Problem::new(op, q, k, v, GateInput::None, &linear_opts)?
        };
        linear.key_shift = opts.window;
        let heads = linear.dims.heads;
        expect_shape(op, "window_factor", window_factor, &[heads], "[H]")?;
        if !window_factor.device().same_device(&linear.device) {
            return Err(Error::DeviceMismatch {
                op,
                lhs: format!("q on {}", linear.device),
                rhs: format!("`window_factor` on {}", window_factor.device()),
            });
        }
        // `[H]` values the host needs anyway (for the sigmoid): checked there.
        let factor_logits = window_factor.to_f32_vec()?;
        if let Some(index) = first_non_finite_in_slice(&factor_logits) {
            let value = factor_logits[index];
            return Err(Error::NonFinite { op, tensor: "window_factor".into(), index, value });
        }
        let factor = factor_logits.iter().map(|&w| 1.0 / (1.0 + (-w).exp())).collect();
        let score_scale = opts.scale.unwrap_or((linear.dims.key_dim as f32).powf(-0.5));
        if !score_scale.is_finite() {
            return Err(Error::invalid(format!("{op}: scale must be finite, got {score_scale}")));
        }
        Ok(WindowProblem { linear, window: opts.window, score_scale, factor, factor_logits })
    }
}

/// Per-sequence, per-head results of either engine, assembled into tensors.
pub(crate) struct WindowResult {
    /// `[B, T, H, V]` f32.
    pub out: Vec<f32>,
    /// Per task (sequence-major): extended linear state `[K', V + 1]`.
    pub states: Vec<Vec<f32>>,
}

/// The window hybrid over a batch (prefill from an empty state). q, k `[B, T, H, D]`,
/// v `[B, T, H, V]`, `window_factor` `[H]` (logits; the factor is `sigmoid`).
pub fn window_linear(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window_factor: &Tensor,
    opts: &WindowOptions,
) -> Result<WindowOutput> {
    run("window_linear", q, k, v, window_factor, opts, Engine::Fast)
}

/// The f64 oracle of [`window_linear`] (quadratic evaluation of the definition).
pub fn window_linear_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window_factor: &Tensor,
    opts: &WindowOptions,
) -> Result<WindowOutput> {
    run("window_linear", q, k, v, window_factor, opts, Engine::Reference)
}

fn run(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window_factor: &Tensor,
    opts: &WindowOptions,
    engine: Engine,
) -> Result<WindowOutput> {
    let p = WindowProblem::new(op, q, k, v, window_factor, opts, engine)?;
    let result = match engine {
        Engine::Reference => reference::run(&p),
        // Device dispatch: the one place this op picks a fast kernel.
        Engine::Fast => match &p.linear.device {
            Device::Cpu => chunked::run(&p),
            Device::Cuda(_) | Device::Wgpu(_) => return run_gpu(&p, q, k, v, opts),
        },
    };
    assemble(&p, result)
}

/// The prefill on the inputs' GPU (`crate::gpu::window_prefill`); every output tensor
/// stays on that device.
fn run_gpu(p: &WindowProblem, q: &Tensor, k: &Tensor, v: &Tensor, opts: &WindowOptions) -> Result<WindowOutput> {
    let lp = &p.linear;
    let t = lp.dims.seq_len;
    let flat = |span: &crate::layout::SeqSpan| span.row * t + span.start;
    let mut bounds: Vec<u32> = lp.spans.iter().map(|s| flat(s) as u32).collect();
    bounds.push(lp.spans.last().map_or(0, |s| (flat(s) + s.len()) as u32));
    let r = crate::gpu::window_prefill(&crate::gpu::WindowCall {
        q,
        k,
        v,
        q_map: lp.q_map.as_ref(),
        k_map: lp.k_map.as_ref(),
        factor: &p.factor,
        cu_seqlens: opts.cu_seqlens,
        bounds,
        score_scale: p.score_scale,
        window: p.window,
        chunk: lp.chunk,
    })?;
    let seen: Vec<i64> = lp.spans.iter().map(|s| s.len() as i64).collect();
    let n = seen.len();
    Ok(WindowOutput {
        output: r.output,
        state: WindowState {
            linear: LinearState { kv: r.kv, z: Some(r.z) },
            keys: r.keys,
            values: r.values,
            tokens_seen: Tensor::from_vec(seen, [n])?.to_device(&lp.device)?,
        },
    })
}

/// Output tensor, linear state and the ring-buffer cache of the last W tokens.
fn assemble(p: &WindowProblem, r: WindowResult) -> Result<WindowOutput> {
    let lp = &p.linear;
    let d = lp.dims;
    let (kd, vd, w, n) = (lp.rec_key_dim, d.value_dim, p.window, lp.spans.len());
    let mut kv = Vec::with_capacity(n * d.heads * kd * vd);
    let mut z = Vec::with_capacity(n * d.heads * kd);
    for s in &r.states {
        for row in s.chunks_exact(vd + 1) {
            kv.extend_from_slice(&row[..vd]);
            z.push(row[vd]);
        }
    }
    let mut keys = vec![0.0f32; n * d.heads * w * d.key_dim];
    let mut values = vec![0.0f32; n * d.heads * w * vd];
    let mut seen = Vec::with_capacity(n);
    for span in &lp.spans {
        seen.push(span.len() as i64);
        for m in span.len().saturating_sub(w)..span.len() {
            let t = span.start + m;
            for h in 0..d.heads {
                let slot = (span.index * d.heads + h) * w + m % w;
                keys[slot * d.key_dim..(slot + 1) * d.key_dim]
                    .copy_from_slice(&lp.k[d.qk_index(span.row, t, h, 0)..][..d.key_dim]);
                values[slot * vd..(slot + 1) * vd].copy_from_slice(&lp.v[d.v_index(span.row, t, h, 0)..][..vd]);
            }
        }
    }
    Ok(WindowOutput {
        output: Tensor::from_f32(&r.out, lp.out_dtype, [d.batch, d.seq_len, d.heads, vd])?,
        state: WindowState {
            linear: LinearState {
                kv: Tensor::from_vec(kv, [n, d.heads, kd, vd])?,
                z: Some(Tensor::from_vec(z, [n, d.heads, kd])?),
            },
            keys: Tensor::from_vec(keys, [n, d.heads, w, d.key_dim])?,
            values: Tensor::from_vec(values, [n, d.heads, w, vd])?,
            tokens_seen: Tensor::from_vec(seen, [n])?,
        },
    })
}
