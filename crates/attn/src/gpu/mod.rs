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
//! the kernels bounds-check every global index. Normalization (`normalize`) and fused
//! feature maps are not handled here: the caller applies them or keeps the CPU path.

pub mod cuda;
pub mod wgpu;

use linattn_tensor::{Error, Result, Tensor};

use crate::layout::MAX_HEAD_DIM;
use crate::options::check_chunk_size;

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
    if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        return Err(Error::invalid(format!(
            "{op}: q, k, v must share a dtype, got {}, {}, {}",
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
    if let Some(s) = initial_state {
        let want = [sequences, heads, key_dim, value_dim];
        if s.dims() != want || s.dtype() != linattn_tensor::DType::F32 {
            return Err(Error::invalid(format!(
                "{op}: initial state is {} {} but must be f32 {want:?}",
                s.dtype(),
                s.shape()
            )));
        }
    }
    let elements = [rows * heads * key_dim, rows * heads * value_dim, sequences * heads * key_dim * value_dim];
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
