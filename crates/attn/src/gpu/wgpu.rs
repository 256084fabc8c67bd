//! WebGPU launches of the gated linear-attention kernels (`kernels/wgsl/attn/`).
//!
//! - [`chunk_forward`] runs `attn/chunk_fwd.wgsl`, one 256-invocation workgroup per
//!   (sequence, head, 16-column value tile), chunks walked in order with the f32 state
//!   slice carried in the final-state buffer.
//! - [`decode_step`]: `attn/decode_step.wgsl`, one invocation per state column.
//!
//! Inputs are f32, f16 or bf16 (`DTYPE` override), gates f32/f16/bf16 (`GATE_DTYPE`);
//! outputs are fresh zero-filled buffers (16-bit outputs are OR-ed into words).
//! Uniform params are packed little-endian u32/f32 words matching the WGSL structs.

use linattn_tensor::wgpu::{Binding, Launch, WgpuBuffer, WgpuDevice, WgslModule, Workgroups, tensor_buffer};
use linattn_tensor::{DType, Device, Error, Result, Tensor};

use super::{
    ChunkExtras, Gate, WindowStepSizes, check_bounds, check_u32, hedgehog_sizes, prefill_sizes, step_sizes,
    window_step_sizes,
};
use crate::layout::MAX_HEAD_DIM;

/// `kernels/wgsl/attn/chunk_fwd.wgsl`.
pub static ATTN_CHUNK_FWD: WgslModule =
    WgslModule { name: "attn/chunk_fwd.wgsl", source: include_str!("../../../../kernels/wgsl/attn/chunk_fwd.wgsl") };

/// `kernels/wgsl/attn/decode_step.wgsl`.
pub static ATTN_DECODE_STEP: WgslModule = WgslModule {
    name: "attn/decode_step.wgsl",
    source: include_str!("../../../../kernels/wgsl/attn/decode_step.wgsl"),
};

/// `kernels/wgsl/attn/hedgehog.wgsl`.
pub static ATTN_HEDGEHOG: WgslModule =
    WgslModule { name: "attn/hedgehog.wgsl", source: include_str!("../../../../kernels/wgsl/attn/hedgehog.wgsl") };

/// `kernels/wgsl/attn/normalize.wgsl`.
pub static ATTN_NORMALIZE: WgslModule =
    WgslModule { name: "attn/normalize.wgsl", source: include_str!("../../../../kernels/wgsl/attn/normalize.wgsl") };

/// `kernels/wgsl/attn/state_ext.wgsl`.
pub static ATTN_STATE_EXT: WgslModule =
    WgslModule { name: "attn/state_ext.wgsl", source: include_str!("../../../../kernels/wgsl/attn/state_ext.wgsl") };

/// `kernels/wgsl/attn/window_fwd.wgsl`.
pub static ATTN_WINDOW_FWD: WgslModule =
    WgslModule { name: "attn/window_fwd.wgsl", source: include_str!("../../../../kernels/wgsl/attn/window_fwd.wgsl") };

/// `kernels/wgsl/attn/window_cache.wgsl`.
pub static ATTN_WINDOW_CACHE: WgslModule = WgslModule {
    name: "attn/window_cache.wgsl",
    source: include_str!("../../../../kernels/wgsl/attn/window_cache.wgsl"),
};

/// `kernels/wgsl/attn/window_step_gather.wgsl`.
pub static ATTN_WINDOW_STEP_GATHER: WgslModule = WgslModule {
    name: "attn/window_step_gather.wgsl",
    source: include_str!("../../../../kernels/wgsl/attn/window_step_gather.wgsl"),
};

/// `kernels/wgsl/attn/window_step_state.wgsl`.
pub static ATTN_WINDOW_STEP_STATE: WgslModule = WgslModule {
    name: "attn/window_step_state.wgsl",
    source: include_str!("../../../../kernels/wgsl/attn/window_step_state.wgsl"),
};

/// `kernels/wgsl/attn/window_step_cache.wgsl`.
pub static ATTN_WINDOW_STEP_CACHE: WgslModule = WgslModule {
    name: "attn/window_step_cache.wgsl",
    source: include_str!("../../../../kernels/wgsl/attn/window_step_cache.wgsl"),
};

/// `kernels/wgsl/attn/window_step_out.wgsl`.
pub static ATTN_WINDOW_STEP_OUT: WgslModule = WgslModule {
    name: "attn/window_step_out.wgsl",
    source: include_str!("../../../../kernels/wgsl/attn/window_step_out.wgsl"),
};

/// Every WGSL module of this crate.
pub static ATTN_MODULES: &[&WgslModule] = &[
    &ATTN_CHUNK_FWD,
    &ATTN_DECODE_STEP,
    &ATTN_HEDGEHOG,
    &ATTN_NORMALIZE,
    &ATTN_STATE_EXT,
    &ATTN_WINDOW_FWD,
    &ATTN_WINDOW_CACHE,
    &ATTN_WINDOW_STEP_GATHER,
    &ATTN_WINDOW_STEP_STATE,
    &ATTN_WINDOW_STEP_CACHE,
    &ATTN_WINDOW_STEP_OUT,
];

/// Value columns per workgroup of `chunk_fwd` (`BV` in the shader).
const CHUNK_VALUE_TILE: usize = 16;
/// Workgroup memory of `chunk_fwd` in bytes (see the shader header).
const CHUNK_WORKGROUP_BYTES: u32 = 6848 * 4;
/// Invocations per workgroup of `decode_step`.
const STEP_WORKGROUP: u64 = 64;
/// Invocations per workgroup of the element-wise kernels (normalize, state_ext, cache).
const SMALL_WORKGROUP: u64 = 64;

fn device_of(op: &str, t: &Tensor) -> Result<WgpuDevice> {
    match t.device() {
        Device::Wgpu(d) => Ok(d),
        other => Err(Error::invalid(format!("{op}: expected tensors on wgpu, got one on {other}"))),
    }
}

fn dtype_code(op: &'static str, dtype: DType) -> Result<f64> {
    linattn_tensor::wgpu::ops::dtype_code(op, dtype)
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The gate's buffer and `GATE_DTYPE`, or a 4-byte dummy (never read) without gates.
fn gate_binding(op: &'static str, device: &WgpuDevice, gate: &Gate) -> Result<(Option<WgpuBuffer>, f64)> {
    match gate.tensor() {
        None => Ok((Some(device.alloc_zeroed(4)?), 0.0)),
        Some(g) => Ok((None, dtype_code(op, g.dtype())?)),
    }
}

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

/// Hedgehog feature map on WebGPU: `x [.., H, D]` (f32/f16/bf16, rows = product of the
/// leading dims), `weights [H, D, F]` f32 on the same device. Returns `[.., H, 2F]` in
/// the dtype of x, or f32 when `out_f32`.
pub fn hedgehog(x: &Tensor, weights: &Tensor, out_f32: bool) -> Result<Tensor> {
    const OP: &str = "wgpu hedgehog";
    let (rows, heads, d, f) = hedgehog_sizes(OP, x, weights)?;
    let device = device_of(OP, x)?;
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("rank checked") = 2 * f;
    let out = device.zeros_tensor(shape, if out_f32 { DType::F32 } else { x.dtype() })?;
    if rows * heads == 0 {
        return Ok(out);
    }
    let params = words(&[rows as u32, heads as u32, d as u32, f as u32]);
    device.launch(&Launch {
        module: &ATTN_HEDGEHOG,
        entry: "hedgehog",
        constants: &[("DTYPE", dtype_code(OP, x.dtype())?), ("OUT_F32", f64::from(u8::from(out_f32)))],
        bindings: &[
            Binding::read(tensor_buffer(x, "x")?),
            Binding::read(tensor_buffer(weights, "weights")?),
            Binding::read_write(tensor_buffer(&out, "output")?),
        ],
        params: &params,
        workgroups: Workgroups::Linear((rows * heads) as u64),
    })?;
    Ok(out)
}

/// `raw [.., V + 1]` f32 (column V = q . z) -> `raw[.., :V] / (raw[.., V] + eps)` in
/// `dtype`, shape `out_shape` (whose last dim is V).
pub fn normalize_rows(raw: &Tensor, out_shape: &[usize], dtype: DType, eps: f32) -> Result<Tensor> {
    const OP: &str = "wgpu normalize_rows";
    let vd = *out_shape.last().ok_or_else(|| Error::invalid(format!("{OP}: empty output shape")))?;
    let groups: usize = out_shape[..out_shape.len() - 1].iter().product();
    if raw.dtype() != DType::F32 || raw.numel() != groups * (vd + 1) || vd == 0 {
        return Err(Error::invalid(format!(
            "{OP}: raw {} {} must be f32 with {groups} rows of V + 1 = {}",
            raw.dtype(),
            raw.shape(),
            vd + 1
        )));
    }
    check_u32(OP, groups * (vd + 1))?;
    let device = device_of(OP, raw)?;
    let out = device.zeros_tensor(out_shape.to_vec(), dtype)?;
    let total = groups * vd;
    let out_words = if dtype == DType::F32 { total } else { total.div_ceil(2) };
    if out_words == 0 {
        return Ok(out);
    }
    let params = words(&[groups as u32, vd as u32, eps.to_bits(), 0]);
    device.launch(&Launch {
        module: &ATTN_NORMALIZE,
        entry: "normalize_rows",
        constants: &[("DTYPE", dtype_code(OP, dtype)?)],
        bindings: &[Binding::read(tensor_buffer(raw, "raw")?), Binding::read_write(tensor_buffer(&out, "output")?)],
        params: &params,
        workgroups: Workgroups::Linear((out_words as u64).div_ceil(SMALL_WORKGROUP)),
    })?;
    Ok(out)
}

/// Packs `kv [N, H, K', V]` and `z [N, H, K']` (zeros when `None`) into the extended
/// state `[N, H, K', V + 1]` (all f32).
pub fn state_pack(kv: &Tensor, z: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "wgpu state_pack";
    let (lead, vd) = state_dims(OP, kv, z)?;
    let device = device_of(OP, kv)?;
    let mut shape = lead.clone();
    shape.push(vd + 1);
    let ext = device.zeros_tensor(shape, DType::F32)?;
    let dummy = device.zeros_tensor([1], DType::F32)?;
    let rows: usize = lead.iter().product();
    state_ext_launch(&device, &ext, kv, z.unwrap_or(&dummy), rows, vd, 0, z.is_some())?;
    Ok(ext)
}

/// Splits the extended state `[N, H, K', V + 1]` into `kv [N, H, K', V]` and `z [N, H, K']`.
pub fn state_split(ext: &Tensor) -> Result<(Tensor, Tensor)> {
    const OP: &str = "wgpu state_split";
    let dims = ext.dims();
    if ext.dtype() != DType::F32 || dims.is_empty() || dims[dims.len() - 1] == 0 {
        return Err(Error::invalid(format!(
            "{OP}: extended state {} {} must be f32 [.., V + 1]",
            ext.dtype(),
            ext.shape()
        )));
    }
    let vd = dims[dims.len() - 1] - 1;
    let lead = dims[..dims.len() - 1].to_vec();
    let device = device_of(OP, ext)?;
    let mut kv_shape = lead.clone();
    kv_shape.push(vd);
    let kv = device.zeros_tensor(kv_shape, DType::F32)?;
    let z = device.zeros_tensor(lead.clone(), DType::F32)?;
    let rows: usize = lead.iter().product();
    state_ext_launch(&device, ext, &kv, &z, rows, vd, 1, true)?;
    Ok((kv, z))
}

fn state_dims(op: &str, kv: &Tensor, z: Option<&Tensor>) -> Result<(Vec<usize>, usize)> {
    let dims = kv.dims();
    let ok_z = z.is_none_or(|z| z.dims() == &dims[..dims.len().saturating_sub(1)] && z.dtype() == DType::F32);
    if kv.dtype() != DType::F32 || dims.is_empty() || !ok_z {
        return Err(Error::invalid(format!(
            "{op}: kv {} {} and z must be f32 [.., V] and [..]",
            kv.dtype(),
            kv.shape()
        )));
    }
    Ok((dims[..dims.len() - 1].to_vec(), dims[dims.len() - 1]))
}

#[allow(clippy::too_many_arguments)]
fn state_ext_launch(
    device: &WgpuDevice,
    ext: &Tensor,
    kv: &Tensor,
    z: &Tensor,
    rows: usize,
    vd: usize,
    direction: u32,
    has_z: bool,
) -> Result<()> {
    const OP: &str = "wgpu state_ext";
    let total = rows * (vd + 1);
    check_u32(OP, total)?;
    if total == 0 {
        return Ok(());
    }
    device.launch(&Launch {
        module: &ATTN_STATE_EXT,
        entry: "state_ext",
        constants: &[],
        bindings: &[
            Binding::read_write(tensor_buffer(ext, "extended state")?),
            Binding::read_write(tensor_buffer(kv, "kv")?),
            Binding::read_write(tensor_buffer(z, "z")?),
        ],
        params: &words(&[rows as u32, vd as u32, direction, u32::from(has_z)]),
        workgroups: Workgroups::Linear((total as u64).div_ceil(SMALL_WORKGROUP)),
    })
}

/// Window terms and final combination of the window hybrid (prefill): q, k
/// `[B, T, H, D]`, v `[B, T, H, V]` (one dtype), `lin [B, T, H, V + 1]` f32 from
/// [`chunk_raw`] with `key_shift = W`, `factor [H]` f32 (sigmoid already applied),
/// sequence `bounds` (flat rows, `[N + 1]`). Returns `[B, T, H, V]` in q's dtype.
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
    const OP: &str = "wgpu window_fwd";
    let qd = q.dims();
    let vd_ = v.dims();
    if qd.len() != 4
        || k.dims() != qd
        || vd_.len() != 4
        || vd_[..3] != qd[..3]
        || k.dtype() != q.dtype()
        || v.dtype() != q.dtype()
    {
        return Err(Error::invalid(format!(
            "{OP}: q {}, k {}, v {} must be [B, T, H, D] / [B, T, H, V] of one dtype",
            q.shape(),
            k.shape(),
            v.shape()
        )));
    }
    let (rows, h, kd, vd) = (qd[0] * qd[1], qd[2], qd[3], vd_[3]);
    if kd == 0 || vd == 0 || kd > MAX_HEAD_DIM || vd > MAX_HEAD_DIM || window == 0 {
        return Err(Error::invalid(format!(
            "{OP}: D = {kd}, V = {vd} must be in 1..={MAX_HEAD_DIM}, window {window} >= 1"
        )));
    }
    if lin.dtype() != DType::F32
        || lin.dims() != [qd[0], qd[1], h, vd + 1]
        || factor.dims() != [h]
        || factor.dtype() != DType::F32
    {
        return Err(Error::invalid(format!(
            "{OP}: lin {} must be f32 [B, T, H, V + 1] and factor {} f32 [H]",
            lin.shape(),
            factor.shape()
        )));
    }
    check_bounds(OP, bounds, rows)?;
    check_u32(OP, rows * h * (kd.max(vd) + 1))?;
    let device = device_of(OP, q)?;
    let out = device.zeros_tensor([qd[0], qd[1], h, vd], q.dtype())?;
    if rows * h == 0 {
        return Ok(out);
    }
    let bounds_buf = device.upload(&words(bounds))?;
    let window = u32::try_from(window).map_err(|_| Error::invalid(format!("{OP}: window exceeds u32")))?;
    let params =
        words(&[rows as u32, h as u32, kd as u32, vd as u32, (bounds.len() - 1) as u32, window, scale.to_bits(), 0]);
    device.launch(&Launch {
        module: &ATTN_WINDOW_FWD,
        entry: "window_fwd",
        constants: &[("DTYPE", dtype_code(OP, q.dtype())?)],
        bindings: &[
            Binding::read(tensor_buffer(q, "q")?),
            Binding::read(tensor_buffer(k, "k")?),
            Binding::read(tensor_buffer(v, "v")?),
            Binding::read(tensor_buffer(lin, "linear part")?),
            Binding::read(tensor_buffer(factor, "window factor")?),
            Binding::read(&bounds_buf),
            Binding::read_write(tensor_buffer(&out, "output")?),
        ],
        params: &params,
        workgroups: Workgroups::Linear((rows * h) as u64),
    })?;
    Ok(out)
}

/// The window KV cache after a prefill: `src [B, T, H, X]` -> `[N, H, W, X]` f32 ring
/// buffer holding the last W tokens of each sequence (token m in slot `m % W`).
pub fn window_cache(src: &Tensor, bounds: &[u32], window: usize) -> Result<Tensor> {
    const OP: &str = "wgpu window_cache";
    let d = src.dims();
    if d.len() != 4 || window == 0 {
        return Err(Error::invalid(format!("{OP}: src {} must be [B, T, H, X], window {window} >= 1", src.shape())));
    }
    let (rows, h, x) = (d[0] * d[1], d[2], d[3]);
    check_bounds(OP, bounds, rows)?;
    let n = bounds.len() - 1;
    check_u32(OP, n * h * window * x)?;
    let device = device_of(OP, src)?;
    let out = device.zeros_tensor([n, h, window, x], DType::F32)?;
    let total = (n * h * window * x) as u64;
    if total == 0 {
        return Ok(out);
    }
    let bounds_buf = device.upload(&words(bounds))?;
    device.launch(&Launch {
        module: &ATTN_WINDOW_CACHE,
        entry: "window_cache",
        constants: &[("DTYPE", dtype_code(OP, src.dtype())?)],
        bindings: &[
            Binding::read(tensor_buffer(src, "src")?),
            Binding::read(&bounds_buf),
            Binding::read_write(tensor_buffer(&out, "cache")?),
        ],
        params: &words(&[n as u32, h as u32, window as u32, x as u32]),
        workgroups: Workgroups::Linear(total.div_ceil(SMALL_WORKGROUP)),
    })?;
    Ok(out)
}

/// Results of [`window_step`]: output `[N, H, V]` (q's dtype), kv, z, keys, values.
pub type WindowStepResult = (Tensor, Tensor, Tensor, Tensor, Tensor);

/// One decode step of the window hybrid on WebGPU. q, k `[N, H, D]`, v `[N, H, V]`
/// (one dtype); optional f32 Hedgehog weights `[H, D, F]` for q and k; `factor [H]` f32
/// (sigmoid applied); state kv `[N, H, K', V]`, z `[N, H, K']`, keys `[N, H, W, D]`,
/// values `[N, H, W, V]` (f32, not modified); `seen [N]` tokens seen per sequence.
/// Kernels: gather (q as f32, the evicted key), Hedgehog on both, state update, two
/// cache updates, output (see the `window_step_*.wgsl` headers).
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
    const OP: &str = "wgpu window_step";
    let WindowStepSizes { n, h, d, vd, kf } =
        window_step_sizes(OP, [q, k, v], factor, [kv, z, keys, values], seen.len(), window)?;
    let device = device_of(OP, q)?;
    let out = device.zeros_tensor([n, h, vd], q.dtype())?;
    if n * h == 0 {
        return Ok((out, kv.clone(), z.clone(), keys.clone(), values.clone()));
    }
    let seen_buf = device.upload(&words(seen))?;
    let linear = |count: usize| Workgroups::Linear((count as u64).div_ceil(SMALL_WORKGROUP));
    let dtype = dtype_code(OP, q.dtype())?;
    let (nw, hw, ww) = (n as u32, h as u32, window as u32);

    // Gather q as f32 and the evicted keys; map both.
    let q32 = device.zeros_tensor([n, h, d], DType::F32)?;
    let old_k = device.zeros_tensor([n, h, d], DType::F32)?;
    device.launch(&Launch {
        module: &ATTN_WINDOW_STEP_GATHER,
        entry: "window_step_gather",
        constants: &[("DTYPE", dtype)],
        bindings: &[
            Binding::read(tensor_buffer(q, "q")?),
            Binding::read(tensor_buffer(keys, "keys")?),
            Binding::read(&seen_buf),
            Binding::read_write(tensor_buffer(&q32, "q32")?),
            Binding::read_write(tensor_buffer(&old_k, "old_k")?),
        ],
        params: &words(&[nw, hw, d as u32, ww]),
        workgroups: linear(n * h * d),
    })?;
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
    let ext = device.zeros_tensor([n, h, kf, vd + 1], DType::F32)?;
    device.launch(&Launch {
        module: &ATTN_WINDOW_STEP_STATE,
        entry: "window_step_state",
        constants: &[],
        bindings: &[
            Binding::read(tensor_buffer(&ext_in, "state")?),
            Binding::read(tensor_buffer(&phi_old, "phi_old")?),
            Binding::read(tensor_buffer(values, "values")?),
            Binding::read(&seen_buf),
            Binding::read_write(tensor_buffer(&ext, "new state")?),
        ],
        params: &words(&[nw, hw, kf as u32, vd as u32, ww, 0, 0, 0]),
        workgroups: linear(n * h * kf * (vd + 1)),
    })?;

    // Ring buffers.
    let cache = |src: &Tensor, cache_in: &Tensor, width: usize| -> Result<Tensor> {
        let out = device.zeros_tensor([n, h, window, width], DType::F32)?;
        device.launch(&Launch {
            module: &ATTN_WINDOW_STEP_CACHE,
            entry: "window_step_cache",
            constants: &[("DTYPE", dtype)],
            bindings: &[
                Binding::read(tensor_buffer(src, "new token")?),
                Binding::read(tensor_buffer(cache_in, "cache")?),
                Binding::read(&seen_buf),
                Binding::read_write(tensor_buffer(&out, "new cache")?),
            ],
            params: &words(&[nw, hw, ww, width as u32]),
            workgroups: linear(n * h * window * width),
        })?;
        Ok(out)
    };
    let new_keys = cache(k, keys, d)?;
    let new_values = cache(v, values, vd)?;

    device.launch(&Launch {
        module: &ATTN_WINDOW_STEP_OUT,
        entry: "window_step_out",
        constants: &[("DTYPE", dtype)],
        bindings: &[
            Binding::read(tensor_buffer(q, "q")?),
            Binding::read(tensor_buffer(&phi_q, "phi_q")?),
            Binding::read(tensor_buffer(&ext, "new state")?),
            Binding::read(tensor_buffer(&new_keys, "keys")?),
            Binding::read(tensor_buffer(&new_values, "values")?),
            Binding::read(&seen_buf),
            Binding::read(tensor_buffer(factor, "factor")?),
            Binding::read_write(tensor_buffer(&out, "output")?),
        ],
        params: &words(&[nw, hw, d as u32, kf as u32, vd as u32, ww, scale.to_bits(), 0]),
        workgroups: Workgroups::Linear((n * h) as u64),
    })?;
    let (new_kv, new_z) = state_split(&ext)?;
    Ok((out, new_kv, new_z, new_keys, new_values))
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
