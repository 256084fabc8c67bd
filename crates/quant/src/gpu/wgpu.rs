//! WebGPU launches of the quantized products (`kernels/wgsl/quant/`).
//!
//! - [`ggml_matmul`]: `quant/ggml_matmul.wgsl`, fused dequantize + matmul for Q8_0, Q4_0,
//!   Q4_K and Q6_K weights kept as raw ggml block bytes on the device. One 64-invocation
//!   workgroup per (weight row, tile of 4 rows of x); m = 1 is the decode matvec.
//! - `codebook_matmul`: `quant/codebook_matmul.wgsl`, the same work split for NF4 / FP4
//!   and FP8 weights (code table + scales, see [`super::DeviceQuantizedWeight`]).
//! - LLM.int8 has its own kernels (`quant/int8_mixed.wgsl`, launched by
//!   [`super::int8_wgpu`]).
//!
//! `x` is f32, f16 or bf16 (`DTYPE` override); the output `[.., rows]` is a fresh
//! zero-filled tensor of `x`'s dtype (16-bit results are OR-ed into their word). Sizes
//! are `u32` in the shader: larger weights or activations are an `Err`. The weight
//! buffer length is checked against `rows * row_bytes` before the dispatch.

use bytemuck::{Pod, Zeroable};
use linattn_tensor::wgpu::ops::{dtype_code, shader_u32};
use linattn_tensor::wgpu::{Binding, Launch, WgpuDevice, WgslModule, Workgroups, tensor_buffer};
use linattn_tensor::{Device, Error, Result, Tensor};

use super::{CodebookWeight, GgmlSizes};
use crate::ggml::GgmlFormat;

/// `kernels/wgsl/quant/ggml_matmul.wgsl`.
pub static QUANT_GGML_MATMUL: WgslModule = WgslModule {
    name: "quant/ggml_matmul.wgsl",
    source: include_str!("../../../../kernels/wgsl/quant/ggml_matmul.wgsl"),
};

/// `kernels/wgsl/quant/codebook_matmul.wgsl`.
pub static QUANT_CODEBOOK_MATMUL: WgslModule = WgslModule {
    name: "quant/codebook_matmul.wgsl",
    source: include_str!("../../../../kernels/wgsl/quant/codebook_matmul.wgsl"),
};

/// Every WGSL module of this crate.
pub static QUANT_MODULES: &[&WgslModule] =
    &[&QUANT_GGML_MATMUL, &QUANT_CODEBOOK_MATMUL, &super::int8_wgpu::QUANT_INT8_MIXED];

/// Rows of x per workgroup (`TILE_M` in the shader).
const TILE_M: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    m: u32,
    blocks: u32,
    row_bytes: u32,
    m_tiles: u32,
    _pad: [u32; 2],
}

/// The entry point of `quant/ggml_matmul.wgsl` for a format, if it has one.
pub fn entry_point(format: GgmlFormat) -> Option<&'static str> {
    match format {
        GgmlFormat::Q8_0 => Some("ggml_matmul_q8_0"),
        GgmlFormat::Q4_0 => Some("ggml_matmul_q4_0"),
        GgmlFormat::Q4K => Some("ggml_matmul_q4_k"),
        GgmlFormat::Q6K => Some("ggml_matmul_q6_k"),
    }
}

pub(super) fn device_of(op: &str, t: &Tensor) -> Result<WgpuDevice> {
    match t.device() {
        Device::Wgpu(d) => Ok(d),
        other => Err(Error::invalid(format!("{op}: expected tensors on wgpu, got one on {other}"))),
    }
}

/// `y [.., rows] = x [.., cols] W^T` with `w` a Q8_0 / Q4_0 / Q4_K / Q6_K tensor of shape `[rows, cols]`
/// (any rank >= 1: leading dims are rows) already on the same wgpu device as `x`.
pub fn ggml_matmul(w: &Tensor, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "wgpu ggml_matmul";
    let (sizes, out_dims) = GgmlSizes::check(OP, w, x)?;
    let device = device_of(OP, x)?;
    if !device_of(OP, w)?.same_device(&device) {
        return Err(Error::invalid(format!("{OP}: weight and x are on different wgpu devices")));
    }
    let out = device.zeros_tensor(out_dims, x.dtype())?;
    if sizes.m == 0 || sizes.rows == 0 || sizes.cols == 0 {
        return Ok(out);
    }
    let entry = entry_point(sizes.format).expect("GgmlSizes::check admits only GPU formats");
    let m_tiles = sizes.m.div_ceil(TILE_M);
    // Every index the shader forms must fit in u32.
    shader_u32(OP, "weight bytes", sizes.rows * sizes.row_bytes)?;
    shader_u32(OP, "x elements", sizes.m * sizes.cols)?;
    shader_u32(OP, "output elements", sizes.m * sizes.rows)?;
    let groups = shader_u32(OP, "workgroups", sizes.rows * m_tiles)?;
    let params = Params {
        rows: sizes.rows as u32,
        cols: sizes.cols as u32,
        m: sizes.m as u32,
        blocks: (sizes.cols / sizes.format.block_elems()) as u32,
        row_bytes: sizes.row_bytes as u32,
        m_tiles: m_tiles as u32,
        _pad: [0; 2],
    };
    device.launch(&Launch {
        module: &QUANT_GGML_MATMUL,
        entry,
        constants: &[("DTYPE", dtype_code(OP, x.dtype())?)],
        bindings: &[
            Binding::read(tensor_buffer(w, "weight")?),
            Binding::read(tensor_buffer(x, "x")?),
            Binding::read_write(tensor_buffer(&out, "output")?),
        ],
        params: bytemuck::bytes_of(&params),
        workgroups: Workgroups::Linear(u64::from(groups)),
    })?;
    Ok(out)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CodebookParams {
    rows: u32,
    cols: u32,
    m: u32,
    m_tiles: u32,
    flat_block: u32,
    block_rows: u32,
    block_cols: u32,
    scale_cols: u32,
}

/// Checks a codebook weight's buffers against `[rows, cols]` and `x`; returns (rows,
/// cols, m, output dims). Shared by the WebGPU and CUDA launches.
pub(crate) fn check_codebook(
    op: &'static str,
    w: &CodebookWeight,
    shape: &linattn_tensor::Shape,
    x: &Tensor,
) -> Result<(usize, usize, usize, Vec<usize>)> {
    let (rows, cols) = (shape.rows(), shape.last_dim());
    if x.rank() == 0 || x.shape().last_dim() != cols {
        return Err(Error::ShapeMismatch { op, lhs: x.shape().clone(), rhs: shape.clone() });
    }
    if !x.dtype().is_compute_float() {
        return Err(Error::UnsupportedDType { op, dtype: x.dtype(), detail: "expected f32, f16 or bf16".into() });
    }
    let l = &w.layout;
    if l.flat_block == 0 && (l.block_rows == 0 || l.block_cols == 0 || l.scale_cols == 0) {
        return Err(Error::invalid(format!("{op}: zero scale block dimension")));
    }
    let n = rows.checked_mul(cols).ok_or_else(|| Error::invalid(format!("{op}: weight shape {shape} overflows")))?;
    let table_len = if l.nibbles { 16 } else { 256 };
    let checks = [
        ("codes", w.codes.size_in_bytes(), w.code_bytes(n)),
        ("code table", w.table.size_in_bytes(), 4 * table_len),
        ("scales", w.scales.size_in_bytes(), 4 * w.scales_needed(rows, cols)),
    ];
    for (what, have, want) in checks {
        if have < want {
            return Err(Error::invalid(format!("{op}: {what} hold {have} bytes, expected at least {want}")));
        }
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("rank >= 1 checked") = rows;
    Ok((rows, cols, x.shape().rows(), dims))
}

/// `y [.., rows] = x [.., cols] W^T` for a codebook weight (NF4 / FP4 / FP8)
/// of logical `shape` whose buffers are on the same wgpu device as `x`.
pub(crate) fn codebook_matmul(w: &CodebookWeight, shape: &linattn_tensor::Shape, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "wgpu codebook_matmul";
    let (rows, cols, m, out_dims) = check_codebook(OP, w, shape, x)?;
    let device = device_of(OP, x)?;
    for (what, t) in [("codes", &w.codes), ("code table", &w.table), ("scales", &w.scales)] {
        if !device_of(OP, t)?.same_device(&device) {
            return Err(Error::invalid(format!("{OP}: {what} and x are on different wgpu devices")));
        }
    }
    let out = device.zeros_tensor(out_dims, x.dtype())?;
    if m == 0 || rows == 0 || cols == 0 {
        return Ok(out);
    }
    let m_tiles = m.div_ceil(TILE_M);
    // Every index the shader forms must fit in u32 (the flat element index included).
    shader_u32(OP, "weight elements", rows * cols)?;
    shader_u32(OP, "x elements", m * cols)?;
    shader_u32(OP, "output elements", m * rows)?;
    shader_u32(OP, "scales", w.scales_needed(rows, cols))?;
    let groups = shader_u32(OP, "workgroups", rows * m_tiles)?;
    let l = &w.layout;
    let params = CodebookParams {
        rows: rows as u32,
        cols: cols as u32,
        m: m as u32,
        m_tiles: m_tiles as u32,
        flat_block: shader_u32(OP, "block size", l.flat_block)?,
        block_rows: shader_u32(OP, "block rows", l.block_rows)?,
        block_cols: shader_u32(OP, "block cols", l.block_cols)?,
        scale_cols: shader_u32(OP, "scale cols", l.scale_cols)?,
    };
    device.launch(&Launch {
        module: &QUANT_CODEBOOK_MATMUL,
        entry: if l.nibbles { "codebook_matmul_u4" } else { "codebook_matmul_u8" },
        constants: &[("DTYPE", dtype_code(OP, x.dtype())?)],
        bindings: &[
            Binding::read(tensor_buffer(&w.codes, "codes")?),
            Binding::read(tensor_buffer(&w.table, "code table")?),
            Binding::read(tensor_buffer(&w.scales, "scales")?),
            Binding::read(tensor_buffer(x, "x")?),
            Binding::read_write(tensor_buffer(&out, "output")?),
        ],
        params: bytemuck::bytes_of(&params),
        workgroups: Workgroups::Linear(u64::from(groups)),
    })?;
    Ok(out)
}
