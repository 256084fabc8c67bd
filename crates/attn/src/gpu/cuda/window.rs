//! CUDA launches of the window hybrid's kernels: the prefill's softmax-window terms and
//! the window KV cache (`kernels/cuda/attn/fused.cu`) and the decode step
//! (`kernels/cuda/attn/window_step.cu`).

use linattn_tensor::cuda::{CudaBuffer, dtype_suffix, grid_1d, grid_capped};
use linattn_tensor::{DType, Error, Result, Tensor};

use super::fused::{hedgehog, state_pack, state_split};
use super::{ATTN_FUSED, ATTN_WINDOW_STEP, ELEMENTWISE_BLOCK, MAX_ELEMENTWISE_BLOCKS, WINDOW_BLOCK, buffer, device_of};
use crate::gpu::{WindowStepSizes, check_bounds, check_u32, window_step_sizes};
use crate::layout::MAX_HEAD_DIM;

/// Window terms and combination on CUDA (`window_fwd_v1_<T>`); same contract as
/// [`crate::gpu::wgpu::window_forward`].
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
/// [`crate::gpu::wgpu::window_cache`].
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
/// [`crate::gpu::wgpu::window_step`]. q, k `[N, H, D]`, v `[N, H, V]` (one dtype); optional f32
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
