//! WebGPU launches of the window hybrid's kernels: the prefill's softmax-window terms
//! and final combination (`attn/window_fwd.wgsl`), the window KV cache
//! (`attn/window_cache.wgsl`) and the decode step (`attn/window_step_*.wgsl`: gather,
//! state update, cache update, output).

use linattn_tensor::wgpu::{Binding, Launch, Workgroups, tensor_buffer};
use linattn_tensor::{DType, Error, Result, Tensor};

use super::fused::{hedgehog, state_pack, state_split};
use super::{
    ATTN_WINDOW_CACHE, ATTN_WINDOW_FWD, ATTN_WINDOW_STEP_CACHE, ATTN_WINDOW_STEP_GATHER, ATTN_WINDOW_STEP_OUT,
    ATTN_WINDOW_STEP_STATE, SMALL_WORKGROUP, device_of, dtype_code, words,
};
use crate::gpu::{WindowStepSizes, check_bounds, check_u32, window_step_sizes};
use crate::layout::MAX_HEAD_DIM;

/// Window terms and final combination of the window hybrid (prefill): q, k
/// `[B, T, H, D]`, v `[B, T, H, V]` (one dtype), `lin [B, T, H, V + 1]` f32 from
/// [`super::chunk_raw`] with `key_shift = W`, `factor [H]` f32 (sigmoid already applied),
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
