//! WebGPU launches of the chunk kernel (`attn/chunk_fwd.wgsl`: one 256-invocation
//! workgroup per (sequence, head, 16-column value tile), chunks walked in order with the
//! f32 state slice carried in the final-state buffer) and of the decode-step kernel
//! (`attn/decode_step.wgsl`, one invocation per state column).

use linattn_tensor::wgpu::{Binding, Launch, Workgroups, tensor_buffer};
use linattn_tensor::{DType, Error, Result, Tensor};

use super::{
    ATTN_CHUNK_FWD, ATTN_DECODE_STEP, CHUNK_VALUE_TILE, CHUNK_WORKGROUP_BYTES, STEP_WORKGROUP, device_of, dtype_code,
    gate_binding, words,
};
use crate::gpu::{ChunkExtras, Gate, prefill_sizes, step_sizes};

/// Chunked forward of gated linear attention on WebGPU.
///
/// q, k `[B, T, H, K]`, v `[B, T, H, V]` (f32/f16/bf16, one dtype), `gate` per
/// [`Gate`], optional f32 `initial_state [N, H, K, V]`, optional `cu_seqlens` (B = 1),
/// `scale` applied to q, `chunk` in {16, 32, 64}. Returns the output `[B, T, H, V]` in
/// the dtype of q and the final state `[N, H, K, V]` f32.
#[allow(clippy::too_many_arguments)]
pub fn chunk_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    gate: Gate,
    initial_state: Option<&Tensor>,
    cu_seqlens: Option<&[usize]>,
    scale: f32,
    chunk: usize,
) -> Result<(Tensor, Tensor)> {
    let extras = ChunkExtras { value_width: v.dims().get(3).copied().unwrap_or(0), key_shift: 0, raw_f32: false };
    chunk_raw(q, k, v, gate, initial_state, cu_seqlens, scale, chunk, extras)
}

/// Chunked forward with the extensions of the fused paths ([`ChunkExtras`]): q and k may
/// be f32 (mapped) while v has the input dtype; with `value_width = V + 1` the ones
/// column accumulates z (state and initial state `[N, H, K', V + 1]`); `key_shift`
/// shifts keys and values (window hybrid); `raw_f32` makes the output
/// `[B, T, H, value_width]` f32 instead of `[B, T, H, V]` in v's dtype.
#[allow(clippy::too_many_arguments)]
pub fn chunk_raw(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    gate: Gate,
    initial_state: Option<&Tensor>,
    cu_seqlens: Option<&[usize]>,
    scale: f32,
    chunk: usize,
    extras: ChunkExtras,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "wgpu chunk_fwd";
    let vx = extras.value_width;
    let sizes = prefill_sizes(OP, q, k, v, &gate, initial_state, cu_seqlens, chunk, vx)?;
    if vx != sizes.value_dim && !extras.raw_f32 {
        return Err(Error::invalid(format!("{OP}: the ones column (value width {vx}) needs the raw f32 output")));
    }
    let device = device_of(OP, q)?;
    let limit = device.limits().max_compute_workgroup_storage_size;
    if limit < CHUNK_WORKGROUP_BYTES {
        return Err(Error::invalid(format!(
            "{OP}: the kernel needs {CHUNK_WORKGROUP_BYTES} bytes of workgroup memory; this device allows {limit} \
             (max_compute_workgroup_storage_size)"
        )));
    }
    let n = sizes.sequences();
    let (h, kd, vd) = (sizes.heads, sizes.key_dim, sizes.value_dim);
    let out = if extras.raw_f32 {
        device.zeros_tensor([sizes.batch, sizes.seq_len, h, vx], DType::F32)?
    } else {
        device.zeros_tensor([sizes.batch, sizes.seq_len, h, vd], v.dtype())?
    };
    let state = device.zeros_tensor([n, h, kd, vx], DType::F32)?;
    if n * h == 0 {
        return Ok((out, state));
    }
    let v_tiles = vx.div_ceil(CHUNK_VALUE_TILE);
    let bounds = device.upload(&words(&sizes.bounds))?;
    let (dummy_gate, gate_dtype) = gate_binding(OP, &device, &gate)?;
    let dummy_init = if initial_state.is_none() { Some(device.alloc_zeroed(4)?) } else { None };
    let gate_buffer = match (&dummy_gate, gate.tensor()) {
        (Some(d), _) => d,
        (None, Some(g)) => tensor_buffer(g, "g")?,
        (None, None) => unreachable!("gate_binding returns a dummy without gates"),
    };
    let init_buffer = match (&dummy_init, initial_state) {
        (Some(d), _) => d,
        (None, Some(s)) => tensor_buffer(s, "initial_state")?,
        (None, None) => unreachable!("dummy allocated without an initial state"),
    };
    let rows = sizes.batch * sizes.seq_len;
    let key_shift = u32::try_from(extras.key_shift)
        .map_err(|_| Error::invalid(format!("{OP}: key shift {} exceeds u32", extras.key_shift)))?;
    let params = words(&[
        h as u32,
        kd as u32,
        vd as u32,
        n as u32,
        v_tiles as u32,
        chunk as u32,
        rows as u32,
        u32::from(initial_state.is_some()),
        scale.to_bits(),
        vx as u32,
        key_shift,
        0,
    ]);
    device.launch(&Launch {
        module: &ATTN_CHUNK_FWD,
        entry: "chunk_fwd",
        constants: &[
            ("DTYPE", dtype_code(OP, v.dtype())?),
            ("Q_DTYPE", dtype_code(OP, q.dtype())?),
            ("K_DTYPE", dtype_code(OP, k.dtype())?),
            ("OUT_F32", f64::from(u8::from(extras.raw_f32))),
            ("GATE_MODE", f64::from(gate.mode())),
            ("GATE_DTYPE", gate_dtype),
        ],
        bindings: &[
            Binding::read(tensor_buffer(q, "q")?),
            Binding::read(tensor_buffer(k, "k")?),
            Binding::read(tensor_buffer(v, "v")?),
            Binding::read(gate_buffer),
            Binding::read(init_buffer),
            Binding::read(&bounds),
            Binding::read_write(tensor_buffer(&out, "output")?),
            Binding::read_write(tensor_buffer(&state, "final state")?),
        ],
        params: &params,
        workgroups: Workgroups::Linear((n * h * v_tiles) as u64),
    })?;
    Ok((out, state))
}

/// One decode step: q, k `[N, H, K]`, v `[N, H, V]`, `gate` (`PerToken` is `[N, H]`,
/// `PerKey` `[N, H, K]`), f32 `state [N, H, K, V]` (not modified). Returns the output
/// `[N, H, V]` in the dtype of q and the new state `[N, H, K, V]` f32.
pub fn decode_step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    gate: Gate,
    state: &Tensor,
    scale: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "wgpu decode_step";
    let (n, h, kd, vd) = step_sizes(OP, q, k, v, &gate, state)?;
    let device = device_of(OP, q)?;
    let out = device.zeros_tensor([n, h, vd], q.dtype())?;
    let new_state = device.zeros_tensor([n, h, kd, vd], DType::F32)?;
    let columns = (n * h * vd) as u64;
    if columns == 0 {
        return Ok((out, new_state));
    }
    let (dummy_gate, gate_dtype) = gate_binding(OP, &device, &gate)?;
    let gate_buffer = match (&dummy_gate, gate.tensor()) {
        (Some(d), _) => d,
        (None, Some(g)) => tensor_buffer(g, "g")?,
        (None, None) => unreachable!("gate_binding returns a dummy without gates"),
    };
    let params = words(&[n as u32, h as u32, kd as u32, vd as u32, scale.to_bits(), 0, 0, 0]);
    device.launch(&Launch {
        module: &ATTN_DECODE_STEP,
        entry: "decode_step",
        constants: &[
            ("DTYPE", dtype_code(OP, q.dtype())?),
            ("GATE_MODE", f64::from(gate.mode())),
            ("GATE_DTYPE", gate_dtype),
        ],
        bindings: &[
            Binding::read(tensor_buffer(q, "q")?),
            Binding::read(tensor_buffer(k, "k")?),
            Binding::read(tensor_buffer(v, "v")?),
            Binding::read(gate_buffer),
            Binding::read(tensor_buffer(state, "state")?),
            Binding::read_write(tensor_buffer(&out, "output")?),
            Binding::read_write(tensor_buffer(&new_state, "new state")?),
        ],
        params: &params,
        workgroups: Workgroups::Linear(columns.div_ceil(STEP_WORKGROUP)),
    })?;
    Ok((out, new_state))
}
