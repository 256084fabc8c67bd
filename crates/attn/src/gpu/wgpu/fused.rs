//! WebGPU launches of the small kernels around the chunk kernel: the Hedgehog feature
//! map (`attn/hedgehog.wgsl`), the normalizer division (`attn/normalize.wgsl`) and the
//! state pack / split between `(S, z)` and the extended `[K, V + 1]` state
//! (`attn/state_ext.wgsl`).

use linattn_tensor::wgpu::{Binding, Launch, WgpuDevice, Workgroups, tensor_buffer};
use linattn_tensor::{DType, Error, Result, Tensor};

use super::{ATTN_HEDGEHOG, ATTN_NORMALIZE, ATTN_STATE_EXT, SMALL_WORKGROUP, device_of, dtype_code, words};
use crate::gpu::{check_u32, hedgehog_sizes};

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
