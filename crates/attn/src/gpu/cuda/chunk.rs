//! CUDA launches of `kernels/cuda/attn/chunk_fwd.cu`: the chunk kernels
//! (`chunk_fwd_v2_<T>` behind the public ops, `chunk_fwd_v1_<T>`) and the decode-step
//! kernel (`decode_step_v1_<T>`).

use linattn_tensor::cuda::{LaunchConfig, dtype_suffix, grid_3d};
use linattn_tensor::{DType, Error, Result, Tensor};

use super::{ATTN_CHUNK_FWD, CHUNK_BLOCK, CHUNK_VALUE_TILE, STEP_BLOCK, buffer, device_of, gate_dtype};
use crate::gpu::{ChunkExtras, Gate, prefill_sizes, step_sizes};

/// Chunked forward on CUDA; same contract as [`crate::gpu::wgpu::chunk_forward`].
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
    const OP: &str = "cuda chunk_fwd";
    let sizes = prefill_sizes(OP, q, k, v, &gate, initial_state, cu_seqlens, chunk, v.dims()[3])?;
    let device = device_of(OP, q)?;
    let n = sizes.sequences();
    let (h, kd, vd) = (sizes.heads, sizes.key_dim, sizes.value_dim);
    let rows = sizes.batch * sizes.seq_len;
    let mut out = device.alloc_zeroed(q.dtype().storage_bytes(rows * h * vd)?)?;
    let mut state = device.alloc_zeroed(n * h * kd * vd * 4)?;
    let v_tiles = vd.div_ceil(CHUNK_VALUE_TILE);
    let blocks = (n * h * v_tiles) as u64;
    if blocks > 0 {
        let bounds_bytes: Vec<u8> = sizes.bounds.iter().flat_map(|b| b.to_le_bytes()).collect();
        let bounds = device.upload(&bounds_bytes)?;
        let dummy = device.alloc_zeroed(4)?;
        let gate_buf = match gate.tensor() {
            Some(g) => buffer("g", g, &device)?,
            None => &dummy,
        };
        let init_buf = match initial_state {
            Some(s) => buffer("initial_state", s, &device)?,
            None => &dummy,
        };
        let entry = format!("chunk_fwd_v1_{}", dtype_suffix(OP, q.dtype())?);
        let kernel = device.kernel(&ATTN_CHUNK_FWD, &entry)?;
        let config: LaunchConfig = grid_3d((blocks, 1, 1), (CHUNK_BLOCK, 1, 1), 0)?;
        let (qb, kb, vb) = (buffer("q", q, &device)?, buffer("k", k, &device)?, buffer("v", v, &device)?);
        let args = [h, kd, vd, n, v_tiles, chunk, rows, usize::from(initial_state.is_some())].map(|x| x as u32);
        let (mode, gdt) = (gate.mode(), gate_dtype(OP, &gate)?);
        let mut launch = kernel.launch_builder();
        launch.arg(qb.as_slice()).arg(kb.as_slice()).arg(vb.as_slice()).arg(gate_buf.as_slice());
        launch.arg(init_buf.as_slice()).arg(bounds.as_slice()).arg(out.as_slice_mut()).arg(state.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        launch.arg(&mode).arg(&gdt).arg(&scale);
        // SAFETY: 19 arguments in the order and C types of chunk_fwd_v1_<T> (8 pointers,
        // 10 u32, 1 f32); q/k/v/o/state/init sizes were checked by `prefill_sizes` and
        // `buffer`, bounds has N + 1 entries, and the kernel bounds-checks its indices.
        unsafe { launch.launch(config)? };
    }
    Ok((
        out.into_tensor([sizes.batch, sizes.seq_len, h, vd], q.dtype())?,
        state.into_tensor([n, h, kd, vd], DType::F32)?,
    ))
}

/// One decode step on CUDA; same contract as [`crate::gpu::wgpu::decode_step`].
pub fn decode_step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    gate: Gate,
    state: &Tensor,
    scale: f32,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "cuda decode_step";
    let (n, h, kd, vd) = step_sizes(OP, q, k, v, &gate, state)?;
    let device = device_of(OP, q)?;
    let mut out = device.alloc_zeroed(q.dtype().storage_bytes(n * h * vd)?)?;
    let mut new_state = device.alloc_zeroed(n * h * kd * vd * 4)?;
    let columns = (n * h * vd) as u64;
    if columns > 0 {
        let dummy = device.alloc_zeroed(4)?;
        let gate_buf = match gate.tensor() {
            Some(g) => buffer("g", g, &device)?,
            None => &dummy,
        };
        let entry = format!("decode_step_v1_{}", dtype_suffix(OP, q.dtype())?);
        let kernel = device.kernel(&ATTN_CHUNK_FWD, &entry)?;
        let config = grid_3d((columns.div_ceil(u64::from(STEP_BLOCK)), 1, 1), (STEP_BLOCK, 1, 1), 0)?;
        let (qb, kb, vb) = (buffer("q", q, &device)?, buffer("k", k, &device)?, buffer("v", v, &device)?);
        let sb = buffer("state", state, &device)?;
        let args = [n, h, kd, vd].map(|x| x as u32);
        let (mode, gdt) = (gate.mode(), gate_dtype(OP, &gate)?);
        let mut launch = kernel.launch_builder();
        launch.arg(qb.as_slice()).arg(kb.as_slice()).arg(vb.as_slice()).arg(gate_buf.as_slice());
        launch.arg(sb.as_slice()).arg(out.as_slice_mut()).arg(new_state.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        launch.arg(&mode).arg(&gdt).arg(&scale);
        // SAFETY: 14 arguments in the order and C types of decode_step_v1_<T> (7 pointers,
        // 6 u32, 1 f32); sizes checked by `step_sizes` and `buffer`.
        unsafe { launch.launch(config)? };
    }
    Ok((out.into_tensor([n, h, vd], q.dtype())?, new_state.into_tensor([n, h, kd, vd], DType::F32)?))
}

/// Chunked forward with the extensions of [`crate::gpu::ChunkExtras`] (`chunk_fwd_v2_<T>`);
/// same contract as [`crate::gpu::wgpu::chunk_raw`].
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
    const OP: &str = "cuda chunk_fwd_v2";
    let vx = extras.value_width;
    let sizes = prefill_sizes(OP, q, k, v, &gate, initial_state, cu_seqlens, chunk, vx)?;
    if vx != sizes.value_dim && !extras.raw_f32 {
        return Err(Error::invalid(format!("{OP}: the ones column (value width {vx}) needs the raw f32 output")));
    }
    let key_shift = u32::try_from(extras.key_shift)
        .map_err(|_| Error::invalid(format!("{OP}: key shift {} exceeds u32", extras.key_shift)))?;
    let device = device_of(OP, q)?;
    let n = sizes.sequences();
    let (h, kd, vd) = (sizes.heads, sizes.key_dim, sizes.value_dim);
    let rows = sizes.batch * sizes.seq_len;
    let (out_dtype, out_width) = if extras.raw_f32 { (DType::F32, vx) } else { (v.dtype(), vd) };
    let mut out = device.alloc_zeroed(out_dtype.storage_bytes(rows * h * out_width)?)?;
    let mut state = device.alloc_zeroed(n * h * kd * vx * 4)?;
    let v_tiles = vx.div_ceil(CHUNK_VALUE_TILE);
    let blocks = (n * h * v_tiles) as u64;
    if blocks > 0 {
        let bounds_bytes: Vec<u8> = sizes.bounds.iter().flat_map(|b| b.to_le_bytes()).collect();
        let bounds = device.upload(&bounds_bytes)?;
        let dummy = device.alloc_zeroed(4)?;
        let gate_buf = match gate.tensor() {
            Some(g) => buffer("g", g, &device)?,
            None => &dummy,
        };
        let init_buf = match initial_state {
            Some(s) => buffer("initial_state", s, &device)?,
            None => &dummy,
        };
        let entry = format!("chunk_fwd_v2_{}", dtype_suffix(OP, v.dtype())?);
        let kernel = device.kernel(&ATTN_CHUNK_FWD, &entry)?;
        let config: LaunchConfig = grid_3d((blocks, 1, 1), (CHUNK_BLOCK, 1, 1), 0)?;
        let (qb, kb, vb) = (buffer("q", q, &device)?, buffer("k", k, &device)?, buffer("v", v, &device)?);
        let args = [h, kd, vd, n, v_tiles, chunk, rows, usize::from(initial_state.is_some())].map(|x| x as u32);
        let (mode, gdt) = (gate.mode(), gate_dtype(OP, &gate)?);
        let tail = [
            u32::from(q.dtype() == DType::F32),
            u32::from(k.dtype() == DType::F32),
            vx as u32,
            key_shift,
            u32::from(extras.raw_f32),
        ];
        let mut launch = kernel.launch_builder();
        launch.arg(qb.as_slice()).arg(kb.as_slice()).arg(vb.as_slice()).arg(gate_buf.as_slice());
        launch.arg(init_buf.as_slice()).arg(bounds.as_slice()).arg(out.as_slice_mut()).arg(state.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        launch.arg(&mode).arg(&gdt).arg(&scale);
        for a in &tail {
            launch.arg(a);
        }
        // SAFETY: 24 arguments in the order and C types of chunk_fwd_v2_<T> (8 pointers,
        // 10 u32, 1 f32, 5 u32); q/k (T or f32 as flagged), v, o (f32 [rows, H, VX] or T
        // [rows, H, V]), state and init ([N, H, K, VX]) sizes were checked by
        // `prefill_sizes` and `buffer`, bounds has N + 1 entries, and the kernel
        // bounds-checks its indices.
        unsafe { launch.launch(config)? };
    }
    Ok((
        out.into_tensor([sizes.batch, sizes.seq_len, h, out_width], out_dtype)?,
        state.into_tensor([n, h, kd, vx], DType::F32)?,
    ))
}
