//! WebGPU launch of the LLM.int8 mixed-precision product (`kernels/wgsl/quant/int8_mixed.wgsl`).
//!
//! `int8_mixed_matmul` encodes three dispatches into one command buffer, each seeing
//! the writes of the one before: `int8_row_stats` (one workgroup per row of x: outlier
//! column bits and `(s_x, k)`), `int8_quantize_x` (one invocation per u32 word of the
//! int8 codes of x) and `int8_mixed_matmul` (one 64-invocation workgroup per (weight row,
//! tile of 4 rows of x); m = 1 is the decode matvec). x stays on the device; the scratch
//! buffers are allocated per call (`m * ceil(cols / 4)` + `2 m` + `ceil(cols / 32)` u32).
//!
//! `x` is f32, f16 or bf16 (`DTYPE` override); the output `[.., rows]` is a fresh
//! zero-filled tensor of `x`'s dtype. Sizes are `u32` in the shader: larger weights or
//! activations are an `Err`, as are `cols` above `super::int8::MAX_COLS`. Numerics: the
//! scheme of `Int8Weight::matmul_f32` (see the shader header): codes and integer part
//! exact, the outlier part in f32 in another summation order.

use bytemuck::{Pod, Zeroable};
use linattn_tensor::wgpu::ops::{dtype_code, shader_u32};
use linattn_tensor::wgpu::{Binding, Launch, WgslModule, Workgroups, tensor_buffer};
use linattn_tensor::{DType, Error, Result, Shape, Tensor};

use super::int8::{Int8DeviceWeight, Int8Sizes};
use super::wgpu::device_of;

/// `kernels/wgsl/quant/int8_mixed.wgsl`.
pub static QUANT_INT8_MIXED: WgslModule = WgslModule {
    name: "quant/int8_mixed.wgsl",
    source: include_str!("../../../../kernels/wgsl/quant/int8_mixed.wgsl"),
};

/// Invocations per workgroup (`WORKGROUP` in the shader).
const WORKGROUP: usize = 64;
/// Rows of x per matmul workgroup (`TILE_M` in the shader).
const TILE_M: usize = 4;

/// The shader's `Params` (uniform, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Int8Params {
    rows: u32,
    cols: u32,
    m: u32,
    words: u32,
    m_tiles: u32,
    split: u32,
    threshold: f32,
    _pad: u32,
}

/// `y [.., rows] = x [.., cols] W^T` for an LLM.int8 weight of logical `shape` whose
/// buffers are on the same wgpu device as `x`, with the outlier decomposition.
pub(crate) fn int8_mixed_matmul(w: &Int8DeviceWeight, shape: &Shape, x: &Tensor) -> Result<Tensor> {
    const OP: &str = "wgpu int8_mixed_matmul";
    let sizes = Int8Sizes::check(OP, w, shape, x)?;
    let device = device_of(OP, x)?;
    for (what, t) in [("codes", &w.codes), ("SCB", &w.scb)] {
        if !device_of(OP, t)?.same_device(&device) {
            return Err(Error::invalid(format!("{OP}: {what} and x are on different wgpu devices")));
        }
    }
    let out = device.zeros_tensor(sizes.out_dims.clone(), x.dtype())?;
    if sizes.is_empty() {
        return Ok(out);
    }
    let Int8Sizes { rows, cols, m, words, flag_words, .. } = sizes;
    let m_tiles = m.div_ceil(TILE_M);
    // Every index the shader forms must fit in u32.
    shader_u32(OP, "weight words", rows * words)?;
    shader_u32(OP, "x elements", m * cols)?;
    shader_u32(OP, "x code words", m * words)?;
    shader_u32(OP, "output elements", m * rows)?;
    shader_u32(OP, "row statistics", 2 * m)?;
    let matmul_groups = shader_u32(OP, "workgroups", rows * m_tiles)?;
    let quantize_groups = (m * words).div_ceil(WORKGROUP) as u64;
    let x_codes = device.zeros_tensor([m * words], DType::U32)?;
    let stats = device.zeros_tensor([2 * m], DType::F32)?;
    let flags = device.zeros_tensor([flag_words], DType::U32)?;
    let params = Int8Params {
        rows: rows as u32,
        cols: cols as u32,
        m: m as u32,
        words: words as u32,
        m_tiles: m_tiles as u32,
        split: u32::from(w.split()),
        threshold: w.threshold,
        _pad: 0,
    };
    let constants = [("DTYPE", dtype_code(OP, x.dtype())?)];
    let bindings = [
        Binding::read(tensor_buffer(&w.codes, "codes")?),
        Binding::read(tensor_buffer(&w.scb, "SCB")?),
        Binding::read(tensor_buffer(x, "x")?),
        Binding::read_write(tensor_buffer(&x_codes, "x codes")?),
        Binding::read_write(tensor_buffer(&stats, "row statistics")?),
        Binding::read_write(tensor_buffer(&flags, "outlier columns")?),
        Binding::read_write(tensor_buffer(&out, "output")?),
    ];
    let launch = |entry, groups: u64| Launch {
        module: &QUANT_INT8_MIXED,
        entry,
        constants: &constants,
        bindings: &bindings,
        params: bytemuck::bytes_of(&params),
        workgroups: Workgroups::Linear(groups),
    };
    device.launch_all(&[
        launch("int8_row_stats", m as u64),
        launch("int8_quantize_x", quantize_groups),
        launch("int8_mixed_matmul", u64::from(matmul_groups)),
    ])?;
    Ok(out)
}
