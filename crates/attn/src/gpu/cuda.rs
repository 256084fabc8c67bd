//! CUDA launches of the gated linear-attention kernels (`kernels/cuda/attn/chunk_fwd.cu`,
//! PTX embedded from `kernels/ptx/attn/chunk_fwd.ptx`).
//!
//! - [`chunk_forward`] launches `chunk_fwd_v1_<T>`, one 256-thread block per (sequence,
//!   head, 16-column value tile), 1-D grid.
//! - [`decode_step`]: `decode_step_v1_<T>`, one thread per state column, 64-thread blocks.
//!
//! The kernels mirror `kernels/wgsl/attn/*.wgsl` (tested on lavapipe). Arguments are
//! pushed in the exact order and C types of the `.cu` header; buffer sizes are checked
//! here before every launch, and the kernels bounds-check their indices.

use linattn_tensor::cuda::{CudaBuffer, CudaDevice, LaunchConfig, PtxModule, dtype_suffix, grid_3d};
use linattn_tensor::{DType, Device, Error, Result, Tensor};

use super::{Gate, prefill_sizes, step_sizes};

/// `kernels/ptx/attn/chunk_fwd.ptx`.
pub static ATTN_CHUNK_FWD: PtxModule =
    PtxModule { name: "attn/chunk_fwd", ptx: include_str!("../../../../kernels/ptx/attn/chunk_fwd.ptx") };

const CHUNK_BLOCK: u32 = 256;
const CHUNK_VALUE_TILE: usize = 16;
const STEP_BLOCK: u32 = 64;

/// Every (module, entry) this file launches.
pub fn launched_entries() -> Vec<(&'static PtxModule, String)> {
    ["f32", "f16", "bf16"]
        .iter()
        .flat_map(|d| [format!("chunk_fwd_v1_{d}"), format!("decode_step_v1_{d}")])
        .map(|e| (&ATTN_CHUNK_FWD, e))
        .collect()
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

fn todo_cuda<T>(op: &'static str) -> Result<T> {
    Err(Error::NotImplementedOnDevice { op, device: "cuda".into() })
}

#[allow(clippy::too_many_arguments)]
pub fn chunk_raw(
    _q: &Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _gate: Gate,
    _initial_state: Option<&Tensor>,
    _cu_seqlens: Option<&[usize]>,
    _scale: f32,
    _chunk: usize,
    _extras: super::ChunkExtras,
) -> Result<(Tensor, Tensor)> {
    todo_cuda("cuda chunk_raw")
}
pub fn hedgehog(_x: &Tensor, _w: &Tensor, _f: bool) -> Result<Tensor> {
    todo_cuda("cuda hedgehog")
}
pub fn normalize_rows(_raw: &Tensor, _s: &[usize], _d: DType, _e: f32) -> Result<Tensor> {
    todo_cuda("cuda normalize_rows")
}
pub fn state_pack(_kv: &Tensor, _z: Option<&Tensor>) -> Result<Tensor> {
    todo_cuda("cuda state_pack")
}
pub fn state_split(_e: &Tensor) -> Result<(Tensor, Tensor)> {
    todo_cuda("cuda state_split")
}
#[allow(clippy::too_many_arguments)]
pub fn window_forward(
    _q: &Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _lin: &Tensor,
    _factor: &Tensor,
    _bounds: &[u32],
    _scale: f32,
    _window: usize,
) -> Result<Tensor> {
    todo_cuda("cuda window_fwd")
}
pub fn window_cache(_src: &Tensor, _bounds: &[u32], _window: usize) -> Result<Tensor> {
    todo_cuda("cuda window_cache")
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
    }
}
