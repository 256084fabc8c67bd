//! WebGPU launches of the gated linear-attention kernels (`kernels/wgsl/attn/`), one
//! file per family:
//!
//! - `chunk`: [`chunk_raw`] (`attn/chunk_fwd.wgsl`, the kernel of the public ops: f32
//!   mapped q/k, ones column, key shift, raw f32 output), [`chunk_forward`] (the same
//!   shader with the plain output) and [`decode_step`] (`attn/decode_step.wgsl`, one
//!   invocation per state column);
//! - `fused`: the Hedgehog feature map, the normalizer division and the state
//!   pack / split between `(S, z)` and the extended `[K, V + 1]` state;
//! - `window`: the window hybrid's prefill terms, window cache and decode step.
//!
//! Inputs are f32, f16 or bf16 (`DTYPE` override), gates f32/f16/bf16 (`GATE_DTYPE`);
//! outputs are fresh zero-filled buffers (16-bit outputs are OR-ed into words).
//! Uniform params are packed little-endian u32/f32 words matching the WGSL structs.
//! This module holds the shader registry and the helpers the three share.

mod chunk;
mod fused;
mod window;

pub use chunk::{chunk_forward, chunk_raw, decode_step};
pub use fused::{hedgehog, normalize_rows, state_pack, state_split};
pub use window::{WindowStepResult, window_cache, window_forward, window_step};

use linattn_tensor::wgpu::{WgpuBuffer, WgpuDevice, WgslModule};
use linattn_tensor::{DType, Device, Error, Result, Tensor};

use super::Gate;

/// `kernels/wgsl/attn/chunk_fwd.wgsl`.
pub static ATTN_CHUNK_FWD: WgslModule =
    WgslModule { name: "attn/chunk_fwd.wgsl", source: include_str!("../../../../../kernels/wgsl/attn/chunk_fwd.wgsl") };

/// `kernels/wgsl/attn/decode_step.wgsl`.
pub static ATTN_DECODE_STEP: WgslModule = WgslModule {
    name: "attn/decode_step.wgsl",
    source: include_str!("../../../../../kernels/wgsl/attn/decode_step.wgsl"),
};

/// `kernels/wgsl/attn/hedgehog.wgsl`.
pub static ATTN_HEDGEHOG: WgslModule =
    WgslModule { name: "attn/hedgehog.wgsl", source: include_str!("../../../../../kernels/wgsl/attn/hedgehog.wgsl") };

/// `kernels/wgsl/attn/normalize.wgsl`.
pub static ATTN_NORMALIZE: WgslModule =
    WgslModule { name: "attn/normalize.wgsl", source: include_str!("../../../../../kernels/wgsl/attn/normalize.wgsl") };

/// `kernels/wgsl/attn/state_ext.wgsl`.
pub static ATTN_STATE_EXT: WgslModule =
    WgslModule { name: "attn/state_ext.wgsl", source: include_str!("../../../../../kernels/wgsl/attn/state_ext.wgsl") };

/// `kernels/wgsl/attn/window_fwd.wgsl`.
pub static ATTN_WINDOW_FWD: WgslModule = WgslModule {
    name: "attn/window_fwd.wgsl",
    source: include_str!("../../../../../kernels/wgsl/attn/window_fwd.wgsl"),
};

/// `kernels/wgsl/attn/window_cache.wgsl`.
pub static ATTN_WINDOW_CACHE: WgslModule = WgslModule {
    name: "attn/window_cache.wgsl",
    source: include_str!("../../../../../kernels/wgsl/attn/window_cache.wgsl"),
};

/// `kernels/wgsl/attn/window_step_gather.wgsl`.
pub static ATTN_WINDOW_STEP_GATHER: WgslModule = WgslModule {
    name: "attn/window_step_gather.wgsl",
    source: include_str!("../../../../../kernels/wgsl/attn/window_step_gather.wgsl"),
};

/// `kernels/wgsl/attn/window_step_state.wgsl`.
pub static ATTN_WINDOW_STEP_STATE: WgslModule = WgslModule {
    name: "attn/window_step_state.wgsl",
    source: include_str!("../../../../../kernels/wgsl/attn/window_step_state.wgsl"),
};

/// `kernels/wgsl/attn/window_step_cache.wgsl`.
pub static ATTN_WINDOW_STEP_CACHE: WgslModule = WgslModule {
    name: "attn/window_step_cache.wgsl",
    source: include_str!("../../../../../kernels/wgsl/attn/window_step_cache.wgsl"),
};

/// `kernels/wgsl/attn/window_step_out.wgsl`.
pub static ATTN_WINDOW_STEP_OUT: WgslModule = WgslModule {
    name: "attn/window_step_out.wgsl",
    source: include_str!("../../../../../kernels/wgsl/attn/window_step_out.wgsl"),
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
pub(super) const CHUNK_VALUE_TILE: usize = 16;
/// Workgroup memory of `chunk_fwd` in bytes (see the shader header).
pub(super) const CHUNK_WORKGROUP_BYTES: u32 = 6848 * 4;
/// Invocations per workgroup of `decode_step`.
pub(super) const STEP_WORKGROUP: u64 = 64;
/// Invocations per workgroup of the element-wise kernels (normalize, state_ext, cache).
pub(super) const SMALL_WORKGROUP: u64 = 64;

pub(super) fn device_of(op: &str, t: &Tensor) -> Result<WgpuDevice> {
    match t.device() {
        Device::Wgpu(d) => Ok(d),
        other => Err(Error::invalid(format!("{op}: expected tensors on wgpu, got one on {other}"))),
    }
}

pub(super) fn dtype_code(op: &'static str, dtype: DType) -> Result<f64> {
    linattn_tensor::wgpu::ops::dtype_code(op, dtype)
}

pub(super) fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The gate's buffer and `GATE_DTYPE`, or a 4-byte dummy (never read) without gates.
pub(super) fn gate_binding(op: &'static str, device: &WgpuDevice, gate: &Gate) -> Result<(Option<WgpuBuffer>, f64)> {
    match gate.tensor() {
        None => Ok((Some(device.alloc_zeroed(4)?), 0.0)),
        Some(g) => Ok((None, dtype_code(op, g.dtype())?)),
    }
}
