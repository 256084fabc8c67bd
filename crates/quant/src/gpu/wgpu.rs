//! WebGPU launches of the quantized products (`kernels/wgsl/quant/`).
//!
//! - [`ggml_matmul`]: `quant/ggml_matmul.wgsl`, fused dequantize + matmul for Q8_0, Q4_0
//!   and Q4_K weights kept as raw ggml block bytes on the device. One 64-invocation
//!   workgroup per (weight row, tile of 4 rows of x); m = 1 is the decode matvec.
//!
//! `x` is f32, f16 or bf16 (`DTYPE` override); the output `[.., rows]` is a fresh
//! zero-filled tensor of `x`'s dtype (16-bit results are OR-ed into their word). Sizes
//! are `u32` in the shader: larger weights or activations are an `Err`. The weight
//! buffer length is checked against `rows * row_bytes` before the dispatch.

use bytemuck::{Pod, Zeroable};
use linattn_tensor::wgpu::ops::{dtype_code, shader_u32};
use linattn_tensor::wgpu::{Binding, Launch, WgpuDevice, WgslModule, Workgroups, tensor_buffer};
use linattn_tensor::{Device, Error, Result, Tensor};

use super::GgmlSizes;
use crate::ggml::GgmlFormat;

/// `kernels/wgsl/quant/ggml_matmul.wgsl`.
pub static QUANT_GGML_MATMUL: WgslModule = WgslModule {
    name: "quant/ggml_matmul.wgsl",
    source: include_str!("../../../../kernels/wgsl/quant/ggml_matmul.wgsl"),
};

/// Every WGSL module of this crate.
pub static QUANT_MODULES: &[&WgslModule] = &[&QUANT_GGML_MATMUL];

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
        GgmlFormat::Q6K => None,
    }
}

fn device_of(op: &str, t: &Tensor) -> Result<WgpuDevice> {
    match t.device() {
        Device::Wgpu(d) => Ok(d),
        other => Err(Error::invalid(format!("{op}: expected tensors on wgpu, got one on {other}"))),
    }
}

/// `y [.., rows] = x [.., cols] W^T` with `w` a Q8_0 / Q4_0 / Q4_K tensor of shape `[rows, cols]`
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
