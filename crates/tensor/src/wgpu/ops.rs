//! WebGPU dispatches of the tensor ops: add, mul, scale, matmul (tiled, or split-k matvec
//! when m <= `MATVEC_MAX_M`), softmax over the last dimension, RMSNorm.
//!
//! Inputs were validated by `crate::ops` (shapes, dtypes, devices). Every op allocates a
//! fresh zero-filled output in the input dtype (f32, f16 or bf16), specializes its
//! kernel with the `DTYPE` override (0 f32, 1 f16, 2 bf16) and computes in f32.
//! Element counts and offsets are `u32` in the shaders; larger tensors are an `Err`.
//! Empty tensors return without a dispatch.

use bytemuck::{Pod, Zeroable};

use super::launch::tensor_buffer;
use super::modules::{TENSOR_BINARY, TENSOR_MATMUL, TENSOR_MATVEC, TENSOR_RMS_NORM, TENSOR_SCALE, TENSOR_SOFTMAX};
use super::{Binding, Launch, WgpuDevice, Workgroups};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::{BinaryOp, MatmulDims};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Invocations per workgroup of the elementwise and row kernels.
const WORKGROUP: u64 = 256;
/// Output tile edge of `matmul_tiled`.
const MATMUL_TILE: usize = 64;
/// Products with at most this many rows per batch entry run `matvec_split_k`.
pub const MATVEC_MAX_M: usize = 8;
/// Output columns per `matvec_split_k` workgroup: rhs transposed, not transposed.
const MATVEC_COLS_TRANSPOSED: usize = 8;
const MATVEC_COLS: usize = 64;

/// The `DTYPE` override value of `common/elements.wgsl` for a compute dtype.
pub fn dtype_code(op: &'static str, dtype: DType) -> Result<f64> {
    match dtype {
        DType::F32 => Ok(0.0),
        DType::F16 => Ok(1.0),
        DType::BF16 => Ok(2.0),
        _ => Err(Error::UnsupportedDType { op, dtype, detail: "wgpu kernels take f32, f16 or bf16".into() }),
    }
}

/// `value` as a shader `u32`, or an `Err` naming `what`.
pub fn shader_u32(op: &str, what: &str, value: usize) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| Error::invalid(format!("{op}: {what} = {value} exceeds the u32 range WGSL kernels index with")))
}

fn device_of(op: &str, t: &Tensor) -> Result<WgpuDevice> {
    match t.device() {
        Device::Wgpu(d) => Ok(d),
        other => Err(Error::invalid(format!("{op}: expected a tensor on wgpu, got one on {other}"))),
    }
}

/// u32 words holding `numel` elements of `dtype`.
fn words(dtype: DType, numel: usize) -> u64 {
    if dtype == DType::F32 { numel as u64 } else { (numel as u64).div_ceil(2) }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElementwiseParams {
    numel: u32,
    factor: f32,
    _pad: [u32; 2],
}

/// `a + b` or `a * b` on equal shapes.
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let device = device_of(op.name(), a)?;
    let out = device.zeros_tensor(a.shape().clone(), a.dtype())?;
    if a.numel() == 0 {
        return Ok(out);
    }
    let params = ElementwiseParams { numel: shader_u32(op.name(), "numel", a.numel())?, factor: 0.0, _pad: [0; 2] };
    device.launch(&Launch {
        module: &TENSOR_BINARY,
        entry: op.name(),
        constants: &[("DTYPE", dtype_code(op.name(), a.dtype())?)],
        bindings: &[
            Binding::read(tensor_buffer(a, "lhs")?),
            Binding::read(tensor_buffer(b, "rhs")?),
            Binding::read_write(tensor_buffer(&out, "output")?),
        ],
        params: bytemuck::bytes_of(&params),
        workgroups: Workgroups::Linear(words(a.dtype(), a.numel()).div_ceil(WORKGROUP)),
    })?;
    Ok(out)
}

/// `s * a`.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let device = device_of("scale", a)?;
    let out = device.zeros_tensor(a.shape().clone(), a.dtype())?;
    if a.numel() == 0 {
        return Ok(out);
    }
    let params = ElementwiseParams { numel: shader_u32("scale", "numel", a.numel())?, factor: s, _pad: [0; 2] };
    device.launch(&Launch {
        module: &TENSOR_SCALE,
        entry: "scale",
        constants: &[("DTYPE", dtype_code("scale", a.dtype())?)],
        bindings: &[Binding::read(tensor_buffer(a, "input")?), Binding::read_write(tensor_buffer(&out, "output")?)],
        params: bytemuck::bytes_of(&params),
        workgroups: Workgroups::Linear(words(a.dtype(), a.numel()).div_ceil(WORKGROUP)),
    })?;
    Ok(out)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    rhs_batch_stride: u32,
    m_tiles: u32,
    n_tiles: u32,
    total_tiles: u32,
    _pad: u32,
}

/// `C[b] = A[b] * op(B[b])` per [`MatmulDims`]; returns `[batch, m, n]`.
pub fn matmul(a: &Tensor, b: &Tensor, dims: &MatmulDims) -> Result<Tensor> {
    let device = device_of("matmul", a)?;
    let lhs_numel = dims.batch * dims.m * dims.k;
    let rhs_numel = if dims.rhs_batched { dims.batch } else { 1 } * dims.k * dims.n;
    if a.numel() != lhs_numel || b.numel() != rhs_numel {
        return Err(Error::invalid(format!(
            "matmul: dims {dims:?} need {lhs_numel} lhs and {rhs_numel} rhs elements, got {} ({}) and {} ({})",
            a.numel(),
            a.shape(),
            b.numel(),
            b.shape()
        )));
    }
    let out = device.zeros_tensor(Shape::new([dims.batch, dims.m, dims.n]), a.dtype())?;
    if out.numel() == 0 || dims.k == 0 {
        return Ok(out);
    }
    if dims.m <= MATVEC_MAX_M {
        return matvec(&device, a, b, dims, out);
    }
    let m_tiles = dims.m.div_ceil(MATMUL_TILE);
    let n_tiles = dims.n.div_ceil(MATMUL_TILE);
    let total_tiles = dims
        .batch
        .checked_mul(m_tiles)
        .and_then(|t| t.checked_mul(n_tiles))
        .ok_or_else(|| Error::invalid(format!("matmul: tile count of {dims:?} overflows")))?;
    let params = MatmulParams {
        m: shader_u32("matmul", "m", dims.m)?,
        n: shader_u32("matmul", "n", dims.n)?,
        k: shader_u32("matmul", "k", dims.k)?,
        rhs_batch_stride: if dims.rhs_batched { shader_u32("matmul", "k * n", dims.k * dims.n)? } else { 0 },
        m_tiles: shader_u32("matmul", "m tiles", m_tiles)?,
        n_tiles: shader_u32("matmul", "n tiles", n_tiles)?,
        total_tiles: shader_u32("matmul", "tiles", total_tiles)?,
        _pad: 0,
    };
    shader_u32("matmul", "lhs elements", lhs_numel)?;
    shader_u32("matmul", "output elements", out.numel())?;
    device.launch(&Launch {
        module: &TENSOR_MATMUL,
        entry: "matmul_tiled",
        constants: &[
            ("DTYPE", dtype_code("matmul", a.dtype())?),
            ("RHS_TRANSPOSED", if dims.rhs_transposed { 1.0 } else { 0.0 }),
        ],
        bindings: &[
            Binding::read(tensor_buffer(a, "lhs")?),
            Binding::read(tensor_buffer(b, "rhs")?),
            Binding::read_write(tensor_buffer(&out, "output")?),
        ],
        params: bytemuck::bytes_of(&params),
        workgroups: Workgroups::Linear(total_tiles as u64),
    })?;
    Ok(out)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatvecParams {
    m: u32,
    n: u32,
    k: u32,
    rhs_batch_stride: u32,
    col_groups: u32,
    total_groups: u32,
    _pad: [u32; 2],
}

/// `matvec_split_k` into the zero-filled `out`, for 1 <= m <= `MATVEC_MAX_M` (sizes were
/// checked by `matmul`).
fn matvec(device: &WgpuDevice, a: &Tensor, b: &Tensor, dims: &MatmulDims, out: Tensor) -> Result<Tensor> {
    let cols = if dims.rhs_transposed { MATVEC_COLS_TRANSPOSED } else { MATVEC_COLS };
    let col_groups = dims.n.div_ceil(cols);
    let total_groups = dims
        .batch
        .checked_mul(col_groups)
        .ok_or_else(|| Error::invalid(format!("matmul: workgroup count of {dims:?} overflows")))?;
    let params = MatvecParams {
        m: shader_u32("matmul", "m", dims.m)?,
        n: shader_u32("matmul", "n", dims.n)?,
        k: shader_u32("matmul", "k", dims.k)?,
        rhs_batch_stride: if dims.rhs_batched { shader_u32("matmul", "k * n", dims.k * dims.n)? } else { 0 },
        col_groups: shader_u32("matmul", "column groups", col_groups)?,
        total_groups: shader_u32("matmul", "workgroups", total_groups)?,
        _pad: [0; 2],
    };
    shader_u32("matmul", "lhs elements", a.numel())?;
    shader_u32("matmul", "rhs elements", b.numel())?;
    shader_u32("matmul", "output elements", out.numel())?;
    device.launch(&Launch {
        module: &TENSOR_MATVEC,
        entry: "matvec_split_k",
        constants: &[
            ("DTYPE", dtype_code("matmul", a.dtype())?),
            ("RHS_TRANSPOSED", if dims.rhs_transposed { 1.0 } else { 0.0 }),
        ],
        bindings: &[
            Binding::read(tensor_buffer(a, "lhs")?),
            Binding::read(tensor_buffer(b, "rhs")?),
            Binding::read_write(tensor_buffer(&out, "output")?),
        ],
        params: bytemuck::bytes_of(&params),
        workgroups: Workgroups::Linear(total_groups as u64),
    })?;
    Ok(out)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RowParams {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

fn row_params(op: &str, t: &Tensor, eps: f32) -> Result<RowParams> {
    let cols = t.shape().last_dim();
    shader_u32(op, "numel", t.numel())?;
    Ok(RowParams { rows: shader_u32(op, "rows", t.numel() / cols)?, cols: shader_u32(op, "cols", cols)?, eps, _pad: 0 })
}

/// Softmax over the last dimension.
pub fn softmax_last(a: &Tensor) -> Result<Tensor> {
    let device = device_of("softmax", a)?;
    let out = device.zeros_tensor(a.shape().clone(), a.dtype())?;
    if a.numel() == 0 {
        return Ok(out);
    }
    let params = row_params("softmax", a, 0.0)?;
    device.launch(&Launch {
        module: &TENSOR_SOFTMAX,
        entry: "softmax_rows",
        constants: &[("DTYPE", dtype_code("softmax", a.dtype())?)],
        bindings: &[Binding::read(tensor_buffer(a, "input")?), Binding::read_write(tensor_buffer(&out, "output")?)],
        params: bytemuck::bytes_of(&params),
        workgroups: Workgroups::Linear(u64::from(params.rows)),
    })?;
    Ok(out)
}

/// RMSNorm over the last dimension with `weight` `[D]`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let device = device_of("rms_norm", x)?;
    let out = device.zeros_tensor(x.shape().clone(), x.dtype())?;
    if x.numel() == 0 {
        return Ok(out);
    }
    let params = row_params("rms_norm", x, eps)?;
    device.launch(&Launch {
        module: &TENSOR_RMS_NORM,
        entry: "rms_norm_rows",
        constants: &[("DTYPE", dtype_code("rms_norm", x.dtype())?)],
        bindings: &[
            Binding::read(tensor_buffer(x, "input")?),
            Binding::read(tensor_buffer(weight, "weight")?),
            Binding::read_write(tensor_buffer(&out, "output")?),
        ],
        params: bytemuck::bytes_of(&params),
        workgroups: Workgroups::Linear(u64::from(params.rows)),
    })?;
    Ok(out)
}
