//! GPU kernels of the gated linear-attention ops: WebGPU ([`wgpu`]) and CUDA ([`cuda`]).
//!
//! Both take tensors already on their device and return new device tensors:
//! the output `[B, T, H, V]` (or `[N, H, V]` for a decode step) in the dtype of q, and
//! the final state `[N, H, K, V]` in f32. Layout and numerics are those of the CPU
//! reference (`crate::gated`): q, k `[B, T, H, K]`, v `[B, T, H, V]`, log-decays
//! `[H]`, `[B, T, H]` or `[B, T, H, K]`; chunked with C in {16, 32, 64}, f32
//! accumulation, every exponent <= 0 for log-decays <= 0.
//!
//! The public ops validate inputs (finite values, dtypes, devices, cu_seqlens); these
//! functions re-check the sizes the kernels rely on and return `Err` on a mismatch, and
//! the kernels bounds-check every global index.
//!
//! `gated_forward` and `window_prefill` compose the kernels for the public ops:
//! Hedgehog feature maps run first as their own kernel into f32 temporaries (the chunk
//! kernel then reads q, k as f32 and v in the input dtype), the normalizer is a ones
//! column appended to v inside the chunk kernel (raw f32 output with column V = q . z,
//! divided by a second kernel), and the window hybrid is the chunk kernel with
//! `key_shift = W` plus a window kernel that adds the softmax terms and divides.

pub mod cuda;
pub mod wgpu;

use linattn_tensor::{DType, Device, Error, Result, Tensor};

use crate::feature_map::FeatureMap;
use crate::layout::MAX_HEAD_DIM;
use crate::options::{AttnOutput, LinearState, check_chunk_size};

/// Extensions of the chunk kernel used by the fused paths.
#[derive(Clone, Copy, Debug)]
pub struct ChunkExtras {
    /// V, or V + 1 with the ones column that accumulates z.
    pub value_width: usize,
    /// Keys and values of row m come from row m - key_shift (zeros before).
    pub key_shift: usize,
    /// Output `[B, T, H, value_width]` f32 instead of `[B, T, H, V]` in v's dtype.
    pub raw_f32: bool,
}

/// Fails when `n` does not fit the u32 indices of the kernels.
pub(crate) fn check_u32(op: &str, n: usize) -> Result<()> {
    if n >= u32::MAX as usize {
        return Err(Error::invalid(format!("{op}: {n} elements exceed the u32 indexing of the kernels")));
    }
    Ok(())
}

/// Checks sequence boundaries over `rows` flat token rows: `[N + 1]`, starting at 0,
/// non-decreasing, ending at `rows`.
pub(crate) fn check_bounds(op: &str, bounds: &[u32], rows: usize) -> Result<()> {
    let ok = bounds.len() >= 2
        && bounds[0] == 0
        && bounds.windows(2).all(|w| w[0] <= w[1])
        && bounds.last().is_some_and(|&b| b as usize == rows);
    if !ok {
        return Err(Error::invalid(format!("{op}: sequence bounds {bounds:?} must go from 0 to {rows}")));
    }
    Ok(())
}

/// `(rows, H, D, F)` of a Hedgehog call: x `[.., H, D]`, weights f32 `[H, D, F]`,
/// D <= 256, F <= 128.
pub(crate) fn hedgehog_sizes(op: &str, x: &Tensor, weights: &Tensor) -> Result<(usize, usize, usize, usize)> {
    let xd = x.dims();
    let wd = weights.dims();
    if xd.len() < 2 || wd.len() != 3 || wd[0] != xd[xd.len() - 2] || wd[1] != xd[xd.len() - 1] {
        return Err(Error::invalid(format!(
            "{op}: x {} must be [.., H, D] and weights {} [H, D, F]",
            x.shape(),
            weights.shape()
        )));
    }
    let (heads, d, f) = (wd[0], wd[1], wd[2]);
    if weights.dtype() != DType::F32 || d == 0 || d > MAX_HEAD_DIM || f == 0 || 2 * f > MAX_HEAD_DIM {
        return Err(Error::invalid(format!(
            "{op}: weights must be f32 with D = {d} in 1..={MAX_HEAD_DIM} and 2F = {} in 1..={MAX_HEAD_DIM}",
            2 * f
        )));
    }
    let rows: usize = xd[..xd.len() - 2].iter().product();
    check_u32(op, rows * heads * d.max(2 * f))?;
    Ok((rows, heads, d, f))
}

/// The kernels of one GPU backend, as the compositions below use them.
enum Backend {
    Wgpu,
    Cuda,
}

impl Backend {
    fn of(op: &'static str, device: &Device) -> Result<Backend> {
        match device {
            Device::Wgpu(_) => Ok(Backend::Wgpu),
            Device::Cuda(_) => Ok(Backend::Cuda),
            Device::Cpu => Err(Error::invalid(format!("{op}: a GPU kernel was asked to run on the CPU"))),
        }
    }

    fn hedgehog(&self, x: &Tensor, weights: &Tensor, out_f32: bool) -> Result<Tensor> {
        match self {
            Backend::Wgpu => wgpu::hedgehog(x, weights, out_f32),
            Backend::Cuda => cuda::hedgehog(x, weights, out_f32),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn chunk_raw(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        gate: Gate,
        init: Option<&Tensor>,
        cu_seqlens: Option<&[usize]>,
        scale: f32,
        chunk: usize,
        extras: ChunkExtras,
    ) -> Result<(Tensor, Tensor)> {
        match self {
            Backend::Wgpu => wgpu::chunk_raw(q, k, v, gate, init, cu_seqlens, scale, chunk, extras),
            Backend::Cuda => cuda::chunk_raw(q, k, v, gate, init, cu_seqlens, scale, chunk, extras),
        }
    }

    fn normalize_rows(&self, raw: &Tensor, shape: &[usize], dtype: DType, eps: f32) -> Result<Tensor> {
        match self {
            Backend::Wgpu => wgpu::normalize_rows(raw, shape, dtype, eps),
            Backend::Cuda => cuda::normalize_rows(raw, shape, dtype, eps),
        }
    }

    fn state_pack(&self, kv: &Tensor, z: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Backend::Wgpu => wgpu::state_pack(kv, z),
            Backend::Cuda => cuda::state_pack(kv, z),
        }
    }

    fn state_split(&self, ext: &Tensor) -> Result<(Tensor, Tensor)> {
        match self {
            Backend::Wgpu => wgpu::state_split(ext),
            Backend::Cuda => cuda::state_split(ext),
        }
    }
}

/// Hedgehog weights `[H, D, F]` as an f32 tensor on `device`.
pub(crate) fn map_weights(map: &FeatureMap, device: &Device) -> Result<Tensor> {
    Tensor::from_vec(map.weights.clone(), [map.heads, map.in_dim, map.features])?.to_device(device)
}

/// The standalone Hedgehog feature map on the GPU of `x`: output in x's dtype.
pub(crate) fn hedgehog_feature_map(x: &Tensor, map: &FeatureMap) -> Result<Tensor> {
    const OP: &str = "hedgehog_feature_map";
    let device = x.device();
    Backend::of(OP, &device)?.hedgehog(x, &map_weights(map, &device)?, false)
}

/// A validated gated call (see `crate::gated::forward`) for [`gated_forward`].
pub(crate) struct GatedCall<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub gate: Gate<'a>,
    pub q_map: Option<&'a FeatureMap>,
    pub k_map: Option<&'a FeatureMap>,
    pub initial: Option<&'a LinearState>,
    pub cu_seqlens: Option<&'a [usize]>,
    pub scale: f32,
    pub chunk: usize,
    pub normalize: bool,
    pub eps: f32,
}

/// Maps q and k through their feature maps (f32 temporaries) when they have one.
fn mapped(b: &Backend, x: &Tensor, map: Option<&FeatureMap>) -> Result<Option<Tensor>> {
    map.map(|m| b.hedgehog(x, &map_weights(m, &x.device())?, true)).transpose()
}

/// Gated linear attention (any gate, feature maps, normalizer) on the GPU of q.
pub(crate) fn gated_forward(c: &GatedCall) -> Result<AttnOutput> {
    const OP: &str = "gated linear attention";
    let b = Backend::of(OP, &c.q.device())?;
    let qm = mapped(&b, c.q, c.q_map)?;
    let km = mapped(&b, c.k, c.k_map)?;
    let (q, k) = (qm.as_ref().unwrap_or(c.q), km.as_ref().unwrap_or(c.k));
    let vd = c.v.dims()[3];
    if !c.normalize {
        let extras = ChunkExtras { value_width: vd, key_shift: 0, raw_f32: false };
        let init = c.initial.map(|s| &s.kv);
        let (output, kv) = b.chunk_raw(q, k, c.v, c.gate, init, c.cu_seqlens, c.scale, c.chunk, extras)?;
        return Ok(AttnOutput { output, final_state: LinearState { kv, z: None } });
    }
    let init = c.initial.map(|s| b.state_pack(&s.kv, s.z.as_ref())).transpose()?;
    let extras = ChunkExtras { value_width: vd + 1, key_shift: 0, raw_f32: true };
    let (raw, ext) = b.chunk_raw(q, k, c.v, c.gate, init.as_ref(), c.cu_seqlens, c.scale, c.chunk, extras)?;
    let mut shape = c.v.dims().to_vec();
    shape[3] = vd;
    let output = b.normalize_rows(&raw, &shape, c.v.dtype(), c.eps)?;
    let (kv, z) = b.state_split(&ext)?;
    Ok(AttnOutput { output, final_state: LinearState { kv, z: Some(z) } })
}

/// The results of [`window_prefill`].
pub(crate) struct WindowPrefill {
    pub output: Tensor,
    pub kv: Tensor,
    pub z: Tensor,
    pub keys: Tensor,
    pub values: Tensor,
}

/// A validated window-hybrid prefill (see `crate::window`) for [`window_prefill`].
pub(crate) struct WindowCall<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub q_map: Option<&'a FeatureMap>,
    pub k_map: Option<&'a FeatureMap>,
    /// `sigmoid(w_h)` per head.
    pub factor: &'a [f32],
    pub cu_seqlens: Option<&'a [usize]>,
    /// Flat token rows of the sequences, `[N + 1]`.
    pub bounds: Vec<u32>,
    pub score_scale: f32,
    pub window: usize,
    pub chunk: usize,
}

/// The window hybrid's prefill on the GPU of q: the chunk kernel with `key_shift = W`,
/// scale 1, the ones column and the feature maps gives the linear part; the window
/// kernel adds the softmax terms and divides; the state is split and the KV cache
/// gathered on the device.
pub(crate) fn window_prefill(c: &WindowCall) -> Result<WindowPrefill> {
    const OP: &str = "window_linear";
    let device = c.q.device();
    let b = Backend::of(OP, &device)?;
    let qm = mapped(&b, c.q, c.q_map)?;
    let km = mapped(&b, c.k, c.k_map)?;
    let (q, k) = (qm.as_ref().unwrap_or(c.q), km.as_ref().unwrap_or(c.k));
    let vd = c.v.dims()[3];
    let extras = ChunkExtras { value_width: vd + 1, key_shift: c.window, raw_f32: true };
    let (lin, ext) = b.chunk_raw(q, k, c.v, Gate::None, None, c.cu_seqlens, 1.0, c.chunk, extras)?;
    let factor = Tensor::from_vec(c.factor.to_vec(), [c.factor.len()])?.to_device(&device)?;
    let (output, keys, values) = match b {
        Backend::Wgpu => (
            wgpu::window_forward(c.q, c.k, c.v, &lin, &factor, &c.bounds, c.score_scale, c.window)?,
            wgpu::window_cache(c.k, &c.bounds, c.window)?,
            wgpu::window_cache(c.v, &c.bounds, c.window)?,
        ),
        Backend::Cuda => (
            cuda::window_forward(c.q, c.k, c.v, &lin, &factor, &c.bounds, c.score_scale, c.window)?,
            cuda::window_cache(c.k, &c.bounds, c.window)?,
            cuda::window_cache(c.v, &c.bounds, c.window)?,
        ),
    };
    let (kv, z) = b.state_split(&ext)?;
    Ok(WindowPrefill { output, kv, z, keys, values })
}

/// The log-decay of a call, as tensors on the kernel's device.
#[derive(Clone, Copy, Debug)]
pub enum Gate<'a> {
    /// No decay (plain linear attention).
    None,
    /// A constant log-decay per head, `[H]` (RetNet / Lightning-2).
    PerHead(&'a Tensor),
    /// One per token and head: `[B, T, H]` (prefill) or `[N, H]` (decode step).
    PerToken(&'a Tensor),
    /// One per token, head and key dim: `[B, T, H, K]` (prefill) or `[N, H, K]` (decode).
    PerKey(&'a Tensor),
}

impl<'a> Gate<'a> {
    /// `GATE_MODE` of the kernels: 0 none, 1 per head, 2 per token, 3 per key.
    pub(crate) fn mode(&self) -> u32 {
        match self {
            Gate::None => 0,
            Gate::PerHead(_) => 1,
            Gate::PerToken(_) => 2,
            Gate::PerKey(_) => 3,
        }
    }

    pub(crate) fn tensor(&self) -> Option<&'a Tensor> {
        match *self {
            Gate::None => None,
            Gate::PerHead(g) | Gate::PerToken(g) | Gate::PerKey(g) => Some(g),
        }
    }

    /// Checks the gate's shape against the call: `tokens` are the leading dims of q
    /// (`[B, T]` prefill, `[N]` decode).
    pub(crate) fn check(&self, op: &str, tokens: &[usize], heads: usize, key_dim: usize) -> Result<()> {
        let want: Vec<usize> = match self {
            Gate::None => return Ok(()),
            Gate::PerHead(_) => vec![heads],
            Gate::PerToken(_) => tokens.iter().copied().chain([heads]).collect(),
            Gate::PerKey(_) => tokens.iter().copied().chain([heads, key_dim]).collect(),
        };
        let g = self.tensor().expect("gated");
        if g.dims() != want.as_slice() {
            return Err(Error::invalid(format!("{op}: gate g has shape {} but must be {want:?}", g.shape())));
        }
        Ok(())
    }
}

/// Sizes of a validated prefill call.
#[derive(Clone, Debug)]
pub(crate) struct PrefillSizes {
    pub batch: usize,
    pub seq_len: usize,
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
    /// Flat token-row boundaries of the sequences, `[N + 1]`.
    pub bounds: Vec<u32>,
}

impl PrefillSizes {
    pub fn sequences(&self) -> usize {
        self.bounds.len() - 1
    }
}

/// Checks shapes of a prefill call and builds the sequence boundaries.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prefill_sizes(
    op: &str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    gate: &Gate,
    initial_state: Option<&Tensor>,
    cu_seqlens: Option<&[usize]>,
    chunk: usize,
    value_width: usize,
) -> Result<PrefillSizes> {
    let qd = q.dims();
    if qd.len() != 4 || k.dims() != qd {
        return Err(Error::invalid(format!("{op}: q {} and k {} must both be [B, T, H, K]", q.shape(), k.shape())));
    }
    let vd = v.dims();
    if vd.len() != 4 || vd[..3] != qd[..3] {
        return Err(Error::invalid(format!(
            "{op}: v {} must be [B, T, H, V] with the B, T, H of q {}",
            v.shape(),
            q.shape()
        )));
    }
    let (batch, seq_len, heads, key_dim, value_dim) = (qd[0], qd[1], qd[2], qd[3], vd[3]);
    for (name, dim) in [("K", key_dim), ("V", value_dim)] {
        if dim == 0 || dim > MAX_HEAD_DIM {
            return Err(Error::invalid(format!("{op}: head dim {name} = {dim} must be in 1..={MAX_HEAD_DIM}")));
        }
    }
    // q and k have v's dtype, or are f32 (the outputs of the Hedgehog kernel).
    let qk_ok = |t: &Tensor| t.dtype() == v.dtype() || t.dtype() == linattn_tensor::DType::F32;
    if !qk_ok(q) || !qk_ok(k) || !v.dtype().is_compute_float() {
        return Err(Error::invalid(format!(
            "{op}: q, k must have v's dtype or be f32, got {}, {}, {}",
            q.dtype(),
            k.dtype(),
            v.dtype()
        )));
    }
    check_chunk_size(op, chunk)?;
    gate.check(op, &qd[..2], heads, key_dim)?;
    let rows = batch * seq_len;
    let bounds: Vec<usize> = match cu_seqlens {
        None => (0..=batch).map(|b| b * seq_len).collect(),
        Some(cu) => {
            let ok = batch == 1
                && cu.len() >= 2
                && cu[0] == 0
                && cu.windows(2).all(|w| w[0] <= w[1])
                && *cu.last().expect("len >= 2") == seq_len;
            if !ok {
                return Err(Error::invalid(format!(
                    "{op}: cu_seqlens {cu:?} must start at 0, be non-decreasing and end at T = {seq_len} (B = 1, got B = {batch})"
                )));
            }
            cu.to_vec()
        }
    };
    let sequences = bounds.len() - 1;
    if value_width != value_dim && value_width != value_dim + 1 {
        return Err(Error::invalid(format!("{op}: value width {value_width} must be V = {value_dim} or V + 1")));
    }
    if let Some(s) = initial_state {
        let want = [sequences, heads, key_dim, value_width];
        if s.dims() != want || s.dtype() != linattn_tensor::DType::F32 {
            return Err(Error::invalid(format!(
                "{op}: initial state is {} {} but must be f32 {want:?}",
                s.dtype(),
                s.shape()
            )));
        }
    }
    let elements = [rows * heads * key_dim, rows * heads * value_width, sequences * heads * key_dim * value_width];
    if elements.iter().any(|&e| e >= u32::MAX as usize) || sequences * heads >= u32::MAX as usize {
        return Err(Error::invalid(format!(
            "{op}: tensors of {elements:?} elements exceed the u32 indexing of the kernels"
        )));
    }
    let bounds = bounds.into_iter().map(|b| b as u32).collect();
    Ok(PrefillSizes { batch, seq_len, heads, key_dim, value_dim, bounds })
}

/// Sizes `(N, H, K, V)` of a decode step: q, k `[N, H, K]`, v `[N, H, V]`, state
/// `[N, H, K, V]` f32.
pub(crate) fn step_sizes(
    op: &str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    gate: &Gate,
    state: &Tensor,
) -> Result<(usize, usize, usize, usize)> {
    let qd = q.dims();
    let vd = v.dims();
    if qd.len() != 3 || k.dims() != qd || vd.len() != 3 || vd[..2] != qd[..2] {
        return Err(Error::invalid(format!(
            "{op}: q {}, k {} must be [N, H, K] and v {} [N, H, V]",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    let (n, h, kd, vdim) = (qd[0], qd[1], qd[2], vd[2]);
    if kd == 0 || vdim == 0 || kd > MAX_HEAD_DIM || vdim > MAX_HEAD_DIM {
        return Err(Error::invalid(format!("{op}: head dims K = {kd}, V = {vdim} must be in 1..={MAX_HEAD_DIM}")));
    }
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        return Err(Error::invalid(format!("{op}: q, k, v must share a dtype")));
    }
    gate.check(op, &qd[..1], h, kd)?;
    let want = [n, h, kd, vdim];
    if state.dims() != want || state.dtype() != linattn_tensor::DType::F32 {
        return Err(Error::invalid(format!(
            "{op}: state is {} {} but must be f32 {want:?}",
            state.dtype(),
            state.shape()
        )));
    }
    if n * h * kd * vdim >= u32::MAX as usize {
        return Err(Error::invalid(format!("{op}: state of {} elements exceeds u32 indexing", n * h * kd * vdim)));
    }
    Ok((n, h, kd, vdim))
}

/// Sizes of a window-hybrid decode step on a GPU.
pub(crate) struct WindowStepSizes {
    pub n: usize,
    pub h: usize,
    pub d: usize,
    pub vd: usize,
    pub kf: usize,
}

/// Checks the tensors of a GPU window decode step (both backends): q, k `[N, H, D]`, v
/// `[N, H, V]` (one dtype); `factor [H]`, kv `[N, H, K', V]`, z `[N, H, K']`, keys
/// `[N, H, W, D]`, values `[N, H, W, V]` all f32; `seen` one count per sequence; D, V,
/// K' in `1..=MAX_HEAD_DIM`, W >= 1; every buffer indexable with u32.
pub(crate) fn window_step_sizes(
    op: &str,
    [q, k, v]: [&Tensor; 3],
    factor: &Tensor,
    [kv, z, keys, values]: [&Tensor; 4],
    seen: usize,
    window: usize,
) -> Result<WindowStepSizes> {
    let qd = q.dims();
    let vdims = v.dims();
    if qd.len() != 3
        || k.dims() != qd
        || vdims.len() != 3
        || vdims[..2] != qd[..2]
        || k.dtype() != q.dtype()
        || v.dtype() != q.dtype()
    {
        return Err(Error::invalid(format!(
            "{op}: q {}, k {} must be [N, H, D] and v {} [N, H, V], one dtype",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    let (n, h, d, vd) = (qd[0], qd[1], qd[2], vdims[2]);
    let kf = kv.dims().get(2).copied().unwrap_or(0);
    let want: [(&str, &Tensor, Vec<usize>); 5] = [
        ("kv", kv, vec![n, h, kf, vd]),
        ("z", z, vec![n, h, kf]),
        ("keys", keys, vec![n, h, window, d]),
        ("values", values, vec![n, h, window, vd]),
        ("factor", factor, vec![h]),
    ];
    for (name, t, shape) in &want {
        if t.dims() != shape.as_slice() || t.dtype() != DType::F32 {
            return Err(Error::invalid(format!(
                "{op}: {name} is {} {} but must be f32 {shape:?}",
                t.dtype(),
                t.shape()
            )));
        }
    }
    if seen != n
        || d == 0
        || d > MAX_HEAD_DIM
        || vd == 0
        || vd > MAX_HEAD_DIM
        || kf == 0
        || kf > MAX_HEAD_DIM
        || window == 0
    {
        return Err(Error::invalid(format!(
            "{op}: {seen} tokens_seen for N = {n}; D = {d}, V = {vd}, K' = {kf} must be in 1..={MAX_HEAD_DIM}, W = {window} >= 1"
        )));
    }
    check_u32(op, n * h * window * d.max(vd).max(kf + 1))?;
    Ok(WindowStepSizes { n, h, d, vd, kf })
}

/// A validated window-hybrid decode step (see `crate::window::decode`).
pub(crate) struct WindowStepCall<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub q_map: Option<&'a FeatureMap>,
    pub k_map: Option<&'a FeatureMap>,
    /// `sigmoid(w_h)` per head.
    pub factor: &'a [f32],
    pub kv: &'a Tensor,
    pub z: &'a Tensor,
    pub keys: &'a Tensor,
    pub values: &'a Tensor,
    /// Tokens seen per sequence before this step.
    pub seen: &'a [i64],
    pub score_scale: f32,
    pub window: usize,
}

/// One decode step of the window hybrid on the GPU of q: returns the output
/// `[N, H, V]` and the new kv, z, keys, values (tokens_seen is the caller's).
pub(crate) fn window_step(c: &WindowStepCall) -> Result<(Tensor, Tensor, Tensor, Tensor, Tensor)> {
    const OP: &str = "window_linear_step";
    let device = c.q.device();
    let seen = c
        .seen
        .iter()
        .map(|&s| u32::try_from(s).map_err(|_| Error::invalid(format!("{OP}: tokens_seen {s} exceeds u32"))))
        .collect::<Result<Vec<u32>>>()?;
    let factor = Tensor::from_vec(c.factor.to_vec(), [c.factor.len()])?.to_device(&device)?;
    let wq = c.q_map.map(|m| map_weights(m, &device)).transpose()?;
    let wk = c.k_map.map(|m| map_weights(m, &device)).transpose()?;
    let (q, k, v) = (c.q, c.k, c.v);
    let (kv, z, keys, values) = (c.kv, c.z, c.keys, c.values);
    match Backend::of(OP, &device)? {
        Backend::Wgpu => wgpu::window_step(
            q,
            k,
            v,
            wq.as_ref(),
            wk.as_ref(),
            &factor,
            kv,
            z,
            keys,
            values,
            &seen,
            c.score_scale,
            c.window,
        ),
        Backend::Cuda => cuda::window_step(
            q,
            k,
            v,
            wq.as_ref(),
            wk.as_ref(),
            &factor,
            kv,
            z,
            keys,
            values,
            &seen,
            c.score_scale,
            c.window,
        ),
    }
}
