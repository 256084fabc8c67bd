//! CUDA launches of the gated linear-attention kernels (`kernels/cuda/attn/chunk_fwd.cu`,
//! PTX embedded from `kernels/ptx/attn/chunk_fwd.ptx`).
//!
//! - [`chunk_forward`] launches `chunk_fwd_v1_<T>`, one 256-thread block per (sequence,
//!   head, 16-column value tile), 1-D grid.
//! - [`decode_step`]: `decode_step_v1_<T>`, one thread per state column, 64-thread blocks.
//! - [`chunk_raw`]: `chunk_fwd_v2_<T>` (f32 mapped q/k, ones column, key shift, raw f32
//!   output); [`hedgehog`], [`normalize_rows`], [`state_pack`] / [`state_split`],
//!   [`window_forward`], [`window_cache`]: `kernels/cuda/attn/fused.cu`.
//! - [`window_step`]: the window hybrid's decode step, `kernels/cuda/attn/window_step.cu`
//!   (gather, Hedgehog, state update, two cache updates, output).
//!
//! The kernels mirror `kernels/wgsl/attn/*.wgsl` (tested on lavapipe). Arguments are
//! pushed in the exact order and C types of the `.cu` header; buffer sizes are checked
//! here before every launch, and the kernels bounds-check their indices.

use linattn_tensor::cuda::{
    CudaBuffer, CudaDevice, LaunchConfig, PtxModule, dtype_suffix, grid_1d, grid_3d, grid_capped,
};
use linattn_tensor::{DType, Device, Error, Result, Tensor};

use super::{
    ChunkExtras, Gate, WindowStepSizes, check_bounds, check_u32, hedgehog_sizes, prefill_sizes, step_sizes,
    window_step_sizes,
};
use crate::layout::MAX_HEAD_DIM;

/// `kernels/ptx/attn/fused.ptx`: Hedgehog, normalizer, state packing, window prefill.
pub static ATTN_FUSED: PtxModule =
    PtxModule { name: "attn/fused", ptx: include_str!("../../../../kernels/ptx/attn/fused.ptx") };

/// `kernels/ptx/attn/window_step.ptx`: the window hybrid's decode step.
pub static ATTN_WINDOW_STEP: PtxModule =
    PtxModule { name: "attn/window_step", ptx: include_str!("../../../../kernels/ptx/attn/window_step.ptx") };

/// `kernels/ptx/attn/chunk_fwd.ptx`.
pub static ATTN_CHUNK_FWD: PtxModule =
    PtxModule { name: "attn/chunk_fwd", ptx: include_str!("../../../../kernels/ptx/attn/chunk_fwd.ptx") };

const CHUNK_BLOCK: u32 = 256;
const CHUNK_VALUE_TILE: usize = 16;
const STEP_BLOCK: u32 = 64;
const HEDGEHOG_BLOCK: u32 = 128;
const WINDOW_BLOCK: u32 = 64;
const ELEMENTWISE_BLOCK: u32 = 256;
const MAX_ELEMENTWISE_BLOCKS: u64 = 65535;

/// Every (module, entry) this file launches.
pub fn launched_entries() -> Vec<(&'static PtxModule, String)> {
    let mut entries: Vec<(&'static PtxModule, String)> = ["f32", "f16", "bf16"]
        .iter()
        .flat_map(|d| [format!("chunk_fwd_v1_{d}"), format!("chunk_fwd_v2_{d}"), format!("decode_step_v1_{d}")])
        .map(|e| (&ATTN_CHUNK_FWD, e))
        .collect();
    for d in ["f32", "f16", "bf16"] {
        for op in ["hedgehog_v1", "normalize_rows_v1", "window_fwd_v1", "window_cache_v1"] {
            entries.push((&ATTN_FUSED, format!("{op}_{d}")));
        }
    }
    entries.push((&ATTN_FUSED, "state_ext_v1".to_string()));
    for d in ["f32", "f16", "bf16"] {
        for op in ["window_step_gather_v1", "window_step_cache_v1", "window_step_out_v1"] {
            entries.push((&ATTN_WINDOW_STEP, format!("{op}_{d}")));
        }
    }
    entries.push((&ATTN_WINDOW_STEP, "window_step_state_v1".to_string()));
    entries
}

fn device_of(op: &str, t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d),
        other => Err(Error::invalid(format!("{op}: expected tensors on CUDA, got one on {other}"))),
    }
}

fn gate_dtype(op: &'static str, gate: &Gate) -> Result<u32> {
    match gate.tensor().map(|g| g.dtype()) {
        None | Some(DType::F32) => Ok(0),
        Some(DType::F16) => Ok(1),
        Some(DType::BF16) => Ok(2),
        Some(other) => {
            Err(Error::UnsupportedDType { op, dtype: other, detail: "gates must be f32, f16 or bf16".into() })
        }
    }
}

fn buffer<'t>(what: &str, t: &'t Tensor, device: &CudaDevice) -> Result<&'t CudaBuffer> {
    let b = CudaBuffer::of(t).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    if !b.device().same_device(device) || b.len_bytes() != t.size_in_bytes() {
        return Err(Error::invalid(format!(
            "{what}: buffer of {} bytes on another device or of the wrong size",
            b.len_bytes()
        )));
    }
    Ok(b)
}

/// Chunked forward on CUDA; same contract as [`super::wgpu::chunk_forward`].
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

/// One decode step on CUDA; same contract as [`super::wgpu::decode_step`].
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

/// Chunked forward with the extensions of [`super::ChunkExtras`] (`chunk_fwd_v2_<T>`);
/// same contract as [`super::wgpu::chunk_raw`].
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

/// Hedgehog feature map on CUDA (`hedgehog_v1_<T>`); same contract as
/// [`super::wgpu::hedgehog`].
pub fn hedgehog(x: &Tensor, weights: &Tensor, out_f32: bool) -> Result<Tensor> {
    const OP: &str = "cuda hedgehog";
    let (rows, heads, d, f) = hedgehog_sizes(OP, x, weights)?;
    let device = device_of(OP, x)?;
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("rank checked") = 2 * f;
    let out_dtype = if out_f32 { DType::F32 } else { x.dtype() };
    let mut out = device.alloc_zeroed(out_dtype.storage_bytes(rows * heads * 2 * f)?)?;
    let groups = (rows * heads) as u64;
    if groups > 0 {
        let kernel = device.kernel(&ATTN_FUSED, &format!("hedgehog_v1_{}", dtype_suffix(OP, x.dtype())?))?;
        let config = grid_capped((groups, 1, 1), (HEDGEHOG_BLOCK, 1, 1), 0)?;
        let (xb, wb) = (buffer("x", x, &device)?, buffer("weights", weights, &device)?);
        let args = [rows, heads, d, f, usize::from(out_f32)].map(|a| a as u32);
        let mut launch = kernel.launch_builder();
        launch.arg(xb.as_slice()).arg(wb.as_slice()).arg(out.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        // SAFETY: 8 arguments in the order and C types of hedgehog_v1_<T> (3 pointers,
        // 5 u32); x [rows, H, D], weights f32 [H, D, F] checked by `hedgehog_sizes` and
        // `buffer`, o has rows * H * 2F elements of the flagged type; block-stride loop.
        unsafe { launch.launch(config)? };
    }
    out.into_tensor(shape, out_dtype)
}

/// Normalizer division on CUDA (`normalize_rows_v1_<T>`); same contract as
/// [`super::wgpu::normalize_rows`].
pub fn normalize_rows(raw: &Tensor, out_shape: &[usize], dtype: DType, eps: f32) -> Result<Tensor> {
    const OP: &str = "cuda normalize_rows";
    let vd = *out_shape.last().ok_or_else(|| Error::invalid(format!("{OP}: empty output shape")))?;
    let groups: usize = out_shape[..out_shape.len() - 1].iter().product();
    if raw.dtype() != DType::F32 || raw.numel() != groups * (vd + 1) || vd == 0 {
        return Err(Error::invalid(format!("{OP}: raw {} must be f32 with {groups} rows of V + 1", raw.shape())));
    }
    check_u32(OP, groups * (vd + 1))?;
    let device = device_of(OP, raw)?;
    let mut out = device.alloc_zeroed(dtype.storage_bytes(groups * vd)?)?;
    if groups > 0 {
        let kernel = device.kernel(&ATTN_FUSED, &format!("normalize_rows_v1_{}", dtype_suffix(OP, dtype)?))?;
        let config = grid_1d((groups * vd) as u64, ELEMENTWISE_BLOCK, MAX_ELEMENTWISE_BLOCKS)?;
        let rb = buffer("raw", raw, &device)?;
        let (g32, v32) = (groups as u32, vd as u32);
        let mut launch = kernel.launch_builder();
        launch.arg(rb.as_slice()).arg(out.as_slice_mut()).arg(&g32).arg(&v32).arg(&eps);
        // SAFETY: 5 arguments in the order and C types of normalize_rows_v1_<T> (2 pointers,
        // 2 u32, 1 f32); raw has groups * (V + 1) f32, o groups * V elements; grid-stride.
        unsafe { launch.launch(config)? };
    }
    out.into_tensor(out_shape.to_vec(), dtype)
}

fn state_ext_launch(
    device: &CudaDevice,
    bufs: (&CudaBuffer, &CudaBuffer, &CudaBuffer),
    rows: usize,
    vd: usize,
    direction: u32,
    has_z: bool,
) -> Result<()> {
    const OP: &str = "cuda state_ext";
    let total = rows * (vd + 1);
    check_u32(OP, total)?;
    if total == 0 {
        return Ok(());
    }
    let kernel = device.kernel(&ATTN_FUSED, "state_ext_v1")?;
    let config = grid_1d(total as u64, ELEMENTWISE_BLOCK, MAX_ELEMENTWISE_BLOCKS)?;
    let args = [rows as u32, vd as u32, direction, u32::from(has_z)];
    let mut launch = kernel.launch_builder();
    launch.arg(bufs.0.as_slice()).arg(bufs.1.as_slice()).arg(bufs.2.as_slice());
    for a in &args {
        launch.arg(a);
    }
    // SAFETY: 7 arguments in the order and C types of state_ext_v1 (3 pointers, 4 u32);
    // ext has rows * (V + 1) f32, kv rows * V, z rows (or is only read when has_z = 0
    // and direction 0: never, the kernel does not read z then); grid-stride.
    unsafe { launch.launch(config)? };
    Ok(())
}

/// Packs kv and z into the extended state; same contract as [`super::wgpu::state_pack`].
pub fn state_pack(kv: &Tensor, z: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "cuda state_pack";
    let dims = kv.dims().to_vec();
    let ok_z = z.is_none_or(|z| z.dims() == &dims[..dims.len().saturating_sub(1)] && z.dtype() == DType::F32);
    if kv.dtype() != DType::F32 || dims.is_empty() || !ok_z {
        return Err(Error::invalid(format!("{OP}: kv {} and z must be f32 [.., V] and [..]", kv.shape())));
    }
    let vd = dims[dims.len() - 1];
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let device = device_of(OP, kv)?;
    let ext = device.alloc_zeroed(rows * (vd + 1) * 4)?;
    let dummy = device.alloc_zeroed(4)?;
    let zb = match z {
        Some(z) => buffer("z", z, &device)?,
        None => &dummy,
    };
    state_ext_launch(&device, (&ext, buffer("kv", kv, &device)?, zb), rows, vd, 0, z.is_some())?;
    let mut shape = dims[..dims.len() - 1].to_vec();
    shape.push(vd + 1);
    ext.into_tensor(shape, DType::F32)
}

/// Splits the extended state; same contract as [`super::wgpu::state_split`].
pub fn state_split(ext: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "cuda state_split";
    let dims = ext.dims().to_vec();
    if ext.dtype() != DType::F32 || dims.is_empty() || dims[dims.len() - 1] == 0 {
        return Err(Error::invalid(format!("{OP}: extended state {} must be f32 [.., V + 1]", ext.shape())));
    }
    let vd = dims[dims.len() - 1] - 1;
    let lead = dims[..dims.len() - 1].to_vec();
    let rows: usize = lead.iter().product();
    let device = device_of(OP, ext)?;
    let kv = device.alloc_zeroed(rows * vd * 4)?;
    let z = device.alloc_zeroed(rows * 4)?;
    state_ext_launch(&device, (buffer("extended state", ext, &device)?, &kv, &z), rows, vd, 1, true)?;
    let mut kv_shape = lead.clone();
    kv_shape.push(vd);
    Ok((kv.into_tensor(kv_shape, DType::F32)?, z.into_tensor(lead, DType::F32)?))
}

/// Window terms and combination on CUDA (`window_fwd_v1_<T>`); same contract as
/// [`super::wgpu::window_forward`].
#[allow(clippy::too_many_arguments)]
pub fn window_forward(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    lin: &Tensor,
    factor: &Tensor,
    bounds: &[u32],
    scale: f32,
    window: usize,
) -> Result<Tensor> {
    const OP: &str = "cuda window_fwd";
    let qd = q.dims();
    let vdims = v.dims();
    let same = k.dims() == qd && k.dtype() == q.dtype() && v.dtype() == q.dtype();
    if qd.len() != 4 || vdims.len() != 4 || vdims[..3] != qd[..3] || !same {
        return Err(Error::invalid(format!(
            "{OP}: q {}, k {}, v {} must be [B, T, H, D] / [B, T, H, V] of one dtype",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    let (rows, h, kd, vd) = (qd[0] * qd[1], qd[2], qd[3], vdims[3]);
    if kd == 0 || vd == 0 || kd > MAX_HEAD_DIM || vd > MAX_HEAD_DIM || window == 0 {
        return Err(Error::invalid(format!("{OP}: D = {kd}, V = {vd} must be in 1..={MAX_HEAD_DIM}, window >= 1")));
    }
    let lin_ok = lin.dtype() == DType::F32 && lin.dims() == [qd[0], qd[1], h, vd + 1];
    if !lin_ok || factor.dims() != [h] || factor.dtype() != DType::F32 {
        return Err(Error::invalid(format!(
            "{OP}: lin {} must be f32 [B, T, H, V + 1] and factor {} f32 [H]",
            lin.shape(),
            factor.shape()
        )));
    }
    check_bounds(OP, bounds, rows)?;
    check_u32(OP, rows * h * (kd.max(vd) + 1))?;
    let window = u32::try_from(window).map_err(|_| Error::invalid(format!("{OP}: window exceeds u32")))?;
    let device = device_of(OP, q)?;
    let mut out = device.alloc_zeroed(q.dtype().storage_bytes(rows * h * vd)?)?;
    if rows * h > 0 {
        let bounds_bytes: Vec<u8> = bounds.iter().flat_map(|b| b.to_le_bytes()).collect();
        let bounds_buf = device.upload(&bounds_bytes)?;
        let kernel = device.kernel(&ATTN_FUSED, &format!("window_fwd_v1_{}", dtype_suffix(OP, q.dtype())?))?;
        let config = grid_capped(((rows * h) as u64, 1, 1), (WINDOW_BLOCK, 1, 1), 0)?;
        let (qb, kb, vb) = (buffer("q", q, &device)?, buffer("k", k, &device)?, buffer("v", v, &device)?);
        let (lb, fb) = (buffer("linear part", lin, &device)?, buffer("window factor", factor, &device)?);
        let args = [rows as u32, h as u32, kd as u32, vd as u32, (bounds.len() - 1) as u32, window];
        let mut launch = kernel.launch_builder();
        launch.arg(qb.as_slice()).arg(kb.as_slice()).arg(vb.as_slice()).arg(lb.as_slice()).arg(fb.as_slice());
        launch.arg(bounds_buf.as_slice()).arg(out.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        launch.arg(&scale);
        // SAFETY: 14 arguments in the order and C types of window_fwd_v1_<T> (7 pointers,
        // 6 u32, 1 f32); q, k [rows, H, D], v [rows, H, V], lin [rows, H, V + 1], factor [H],
        // bounds [N + 1] ending at rows were checked above; block-stride loop.
        unsafe { launch.launch(config)? };
    }
    out.into_tensor([qd[0], qd[1], h, vd], q.dtype())
}

/// The window KV cache after a prefill on CUDA (`window_cache_v1_<T>`); same contract as
/// [`super::wgpu::window_cache`].
pub fn window_cache(src: &Tensor, bounds: &[u32], window: usize) -> Result<Tensor> {
    const OP: &str = "cuda window_cache";
    let d = src.dims();
    if d.len() != 4 || window == 0 {
        return Err(Error::invalid(format!("{OP}: src {} must be [B, T, H, X], window {window} >= 1", src.shape())));
    }
    let (rows, h, x) = (d[0] * d[1], d[2], d[3]);
    check_bounds(OP, bounds, rows)?;
    let n = bounds.len() - 1;
    let total = n * h * window * x;
    check_u32(OP, total)?;
    let device = device_of(OP, src)?;
    let mut out = device.alloc_zeroed(total * 4)?;
    if total > 0 {
        let bounds_bytes: Vec<u8> = bounds.iter().flat_map(|b| b.to_le_bytes()).collect();
        let bounds_buf = device.upload(&bounds_bytes)?;
        let kernel = device.kernel(&ATTN_FUSED, &format!("window_cache_v1_{}", dtype_suffix(OP, src.dtype())?))?;
        let config = grid_1d(total as u64, ELEMENTWISE_BLOCK, MAX_ELEMENTWISE_BLOCKS)?;
        let sb = buffer("src", src, &device)?;
        let args = [n, h, window, x].map(|a| a as u32);
        let mut launch = kernel.launch_builder();
        launch.arg(sb.as_slice()).arg(bounds_buf.as_slice()).arg(out.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        // SAFETY: 7 arguments in the order and C types of window_cache_v1_<T> (3 pointers,
        // 4 u32); src [rows, H, X], bounds [N + 1] ending at rows, dst N * H * W * X f32;
        // grid-stride.
        unsafe { launch.launch(config)? };
    }
    out.into_tensor([n, h, window, x], DType::F32)
}

/// Results of [`window_step`]: output `[N, H, V]` (q's dtype), kv, z, keys, values.
pub type WindowStepResult = (Tensor, Tensor, Tensor, Tensor, Tensor);

/// One decode step of the window hybrid on CUDA; same contract as
/// [`super::wgpu::window_step`]. q, k `[N, H, D]`, v `[N, H, V]` (one dtype); optional f32
/// Hedgehog weights `[H, D, F]`; `factor [H]` f32 (sigmoid applied); kv `[N, H, K', V]`,
/// z `[N, H, K']`, keys `[N, H, W, D]`, values `[N, H, W, V]` f32 (not modified);
/// `seen [N]` tokens seen per sequence. Kernels of `window_step.cu` in the order of the
/// WGSL twin: gather, Hedgehog (`hedgehog_v1_f32`), state, cache (keys, values), output.
#[allow(clippy::too_many_arguments)]
pub fn window_step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    q_weights: Option<&Tensor>,
    k_weights: Option<&Tensor>,
    factor: &Tensor,
    kv: &Tensor,
    z: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    seen: &[u32],
    scale: f32,
    window: usize,
) -> Result<WindowStepResult> {
    const OP: &str = "cuda window_step";
    let WindowStepSizes { n, h, d, vd, kf } =
        window_step_sizes(OP, [q, k, v], factor, [kv, z, keys, values], seen.len(), window)?;
    let device = device_of(OP, q)?;
    let suffix = dtype_suffix(OP, q.dtype())?;
    let mut out = device.alloc_zeroed(q.dtype().storage_bytes(n * h * vd)?)?;
    if n * h == 0 {
        return Ok((out.into_tensor([n, h, vd], q.dtype())?, kv.clone(), z.clone(), keys.clone(), values.clone()));
    }
    let seen_bytes: Vec<u8> = seen.iter().flat_map(|s| s.to_le_bytes()).collect();
    let seen_buf = device.upload(&seen_bytes)?;
    let (nw, hw, ww) = (n as u32, h as u32, window as u32);
    let (qb, kb, vb) = (buffer("q", q, &device)?, buffer("k", k, &device)?, buffer("v", v, &device)?);
    let (keys_b, values_b) = (buffer("keys", keys, &device)?, buffer("values", values, &device)?);

    // Gather q as f32 and the evicted keys; map both.
    let mut q32 = device.alloc_zeroed(n * h * d * 4)?;
    let mut old_k = device.alloc_zeroed(n * h * d * 4)?;
    {
        let kernel = device.kernel(&ATTN_WINDOW_STEP, &format!("window_step_gather_v1_{suffix}"))?;
        let config = grid_1d((n * h * d) as u64, ELEMENTWISE_BLOCK, MAX_ELEMENTWISE_BLOCKS)?;
        let args = [nw, hw, d as u32, ww];
        let mut launch = kernel.launch_builder();
        launch.arg(qb.as_slice()).arg(keys_b.as_slice()).arg(seen_buf.as_slice());
        launch.arg(q32.as_slice_mut()).arg(old_k.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        // SAFETY: 9 arguments in the order and C types of window_step_gather_v1_<T>
        // (5 pointers, 4 u32); q [N, H, D] in T, keys f32 [N, H, W, D] checked above and by
        // `buffer`, seen has N u32, q32 / old_k N * H * D f32; grid-stride.
        unsafe { launch.launch(config)? };
    }
    let q32 = q32.into_tensor([n, h, d], DType::F32)?;
    let old_k = old_k.into_tensor([n, h, d], DType::F32)?;
    let phi_q = match q_weights {
        Some(w) => hedgehog(&q32, w, true)?,
        None => q32,
    };
    let phi_old = match k_weights {
        Some(w) => hedgehog(&old_k, w, true)?,
        None => old_k,
    };
    if phi_q.dims() != [n, h, kf] || phi_old.dims() != [n, h, kf] {
        return Err(Error::invalid(format!(
            "{OP}: mapped q {} and k {} must be [N, H, K'] = [{n}, {h}, {kf}]",
            phi_q.shape(),
            phi_old.shape()
        )));
    }

    // Linear state: evict into S, z.
    let ext_in = state_pack(kv, Some(z))?;
    let mut ext = device.alloc_zeroed(n * h * kf * (vd + 1) * 4)?;
    {
        let kernel = device.kernel(&ATTN_WINDOW_STEP, "window_step_state_v1")?;
        let config = grid_1d((n * h * kf * (vd + 1)) as u64, ELEMENTWISE_BLOCK, MAX_ELEMENTWISE_BLOCKS)?;
        let (eb, pb) = (buffer("state", &ext_in, &device)?, buffer("phi_old", &phi_old, &device)?);
        let args = [nw, hw, kf as u32, vd as u32, ww];
        let mut launch = kernel.launch_builder();
        launch.arg(eb.as_slice()).arg(pb.as_slice()).arg(values_b.as_slice()).arg(seen_buf.as_slice());
        launch.arg(ext.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        // SAFETY: 10 arguments in the order and C types of window_step_state_v1 (5 pointers,
        // 5 u32); ext_in / ext f32 [N, H, K', V + 1], phi_old [N, H, K'], values
        // [N, H, W, V] checked above, seen has N u32; grid-stride.
        unsafe { launch.launch(config)? };
    }
    let ext = ext.into_tensor([n, h, kf, vd + 1], DType::F32)?;

    // Ring buffers.
    let cache = |src: &CudaBuffer, cache_in: &CudaBuffer, width: usize| -> Result<Tensor> {
        let mut dst = device.alloc_zeroed(n * h * window * width * 4)?;
        let kernel = device.kernel(&ATTN_WINDOW_STEP, &format!("window_step_cache_v1_{suffix}"))?;
        let config = grid_1d((n * h * window * width) as u64, ELEMENTWISE_BLOCK, MAX_ELEMENTWISE_BLOCKS)?;
        let args = [nw, hw, ww, width as u32];
        let mut launch = kernel.launch_builder();
        launch.arg(src.as_slice()).arg(cache_in.as_slice()).arg(seen_buf.as_slice()).arg(dst.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        // SAFETY: 8 arguments in the order and C types of window_step_cache_v1_<T>
        // (4 pointers, 4 u32); src [N, H, X] in T, cache_in / dst f32 [N, H, W, X] (k with
        // keys, v with values, checked above), seen has N u32; grid-stride.
        unsafe { launch.launch(config)? };
        dst.into_tensor([n, h, window, width], DType::F32)
    };
    let new_keys = cache(kb, keys_b, d)?;
    let new_values = cache(vb, values_b, vd)?;

    {
        let kernel = device.kernel(&ATTN_WINDOW_STEP, &format!("window_step_out_v1_{suffix}"))?;
        let config = grid_capped(((n * h) as u64, 1, 1), (WINDOW_BLOCK, 1, 1), 0)?;
        let (pb, eb) = (buffer("phi_q", &phi_q, &device)?, buffer("new state", &ext, &device)?);
        let (nkb, nvb) = (buffer("new keys", &new_keys, &device)?, buffer("new values", &new_values, &device)?);
        let fb = buffer("window factor", factor, &device)?;
        let args = [nw, hw, d as u32, kf as u32, vd as u32, ww];
        let mut launch = kernel.launch_builder();
        launch.arg(qb.as_slice()).arg(pb.as_slice()).arg(eb.as_slice()).arg(nkb.as_slice());
        launch.arg(nvb.as_slice()).arg(seen_buf.as_slice()).arg(fb.as_slice()).arg(out.as_slice_mut());
        for a in &args {
            launch.arg(a);
        }
        launch.arg(&scale);
        // SAFETY: 15 arguments in the order and C types of window_step_out_v1_<T>
        // (8 pointers, 6 u32, 1 f32); q [N, H, D] in T, phi_q [N, H, K'], ext
        // [N, H, K', V + 1], keys [N, H, W, D], values [N, H, W, V], factor [H] f32, seen
        // N u32, o N * H * V in T, all checked above; D, V <= 256; block-stride loop.
        unsafe { launch.launch(config)? };
    }
    let (new_kv, new_z) = state_split(&ext)?;
    Ok((out.into_tensor([n, h, vd], q.dtype())?, new_kv, new_z, new_keys, new_values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_launched_entry_is_in_the_ptx() {
        for (module, entry) in launched_entries() {
            assert!(module.has_entry(&entry), "{} lacks .entry {entry}; found {:?}", module.name, module.entry_names());
        }
        assert!(ATTN_CHUNK_FWD.ptx.contains(".target sm_80"));
        assert!(ATTN_FUSED.ptx.contains(".target sm_80"));
        assert!(ATTN_WINDOW_STEP.ptx.contains(".target sm_80"));
    }
}
