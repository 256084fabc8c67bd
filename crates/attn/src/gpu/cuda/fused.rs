//! CUDA launches of the small kernels of `kernels/cuda/attn/fused.cu` around the chunk
//! kernel: the Hedgehog feature map, the normalizer division and the state pack / split
//! between `(S, z)` and the extended `[K, V + 1]` state.

use linattn_tensor::cuda::{CudaBuffer, CudaDevice, dtype_suffix, grid_1d, grid_capped};
use linattn_tensor::{DType, Error, Result, Tensor};

use super::{ATTN_FUSED, ELEMENTWISE_BLOCK, HEDGEHOG_BLOCK, MAX_ELEMENTWISE_BLOCKS, buffer, device_of};
use crate::gpu::{check_u32, hedgehog_sizes};

/// Hedgehog feature map on CUDA (`hedgehog_v1_<T>`); same contract as
/// [`crate::gpu::wgpu::hedgehog`].
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
/// [`crate::gpu::wgpu::normalize_rows`].
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

/// Packs kv and z into the extended state; same contract as [`crate::gpu::wgpu::state_pack`].
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

/// Splits the extended state; same contract as [`crate::gpu::wgpu::state_split`].
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
