//! CUDA launches of the gated linear-attention kernels (PTX embedded from
//! `kernels/ptx/attn/`, compiled from `kernels/cuda/attn/`), one file per family:
//!
//! - `chunk`: [`chunk_raw`] launches `chunk_fwd_v2_<T>` (the kernel of the public ops:
//!   f32 mapped q/k, ones column, key shift, raw f32 output); [`chunk_forward`]
//!   `chunk_fwd_v1_<T>`, one 256-thread block per (sequence, head, 16-column value tile),
//!   1-D grid; [`decode_step`] `decode_step_v1_<T>`, one thread per state column,
//!   64-thread blocks (`chunk_fwd.cu`);
//! - `fused`: [`hedgehog`], [`normalize_rows`], [`state_pack`] / [`state_split`]
//!   (`fused.cu`);
//! - `window`: [`window_forward`], [`window_cache`] (`fused.cu`) and [`window_step`],
//!   the window hybrid's decode step (`window_step.cu`: gather, Hedgehog, state update,
//!   two cache updates, output).
//!
//! The kernels mirror `kernels/wgsl/attn/*.wgsl` (tested on lavapipe). Arguments are
//! pushed in the exact order and C types of the `.cu` header; buffer sizes are checked
//! before every launch, and the kernels bounds-check their indices. This module holds
//! the PTX modules, the launch constants and the helpers the three share.

mod chunk;
mod fused;
mod window;

pub use chunk::{chunk_forward, chunk_raw, decode_step};
pub use fused::{hedgehog, normalize_rows, state_pack, state_split};
pub use window::{WindowStepResult, window_cache, window_forward, window_step};

use linattn_tensor::cuda::{CudaBuffer, CudaDevice, PtxModule};
use linattn_tensor::{DType, Device, Error, Result, Tensor};

use super::Gate;

/// `kernels/ptx/attn/fused.ptx`: Hedgehog, normalizer, state packing, window prefill.
pub static ATTN_FUSED: PtxModule =
    PtxModule { name: "attn/fused", ptx: include_str!("../../../../../kernels/ptx/attn/fused.ptx") };

/// `kernels/ptx/attn/window_step.ptx`: the window hybrid's decode step.
pub static ATTN_WINDOW_STEP: PtxModule =
    PtxModule { name: "attn/window_step", ptx: include_str!("../../../../../kernels/ptx/attn/window_step.ptx") };

/// `kernels/ptx/attn/chunk_fwd.ptx`.
pub static ATTN_CHUNK_FWD: PtxModule =
    PtxModule { name: "attn/chunk_fwd", ptx: include_str!("../../../../../kernels/ptx/attn/chunk_fwd.ptx") };

pub(super) const CHUNK_BLOCK: u32 = 256;
pub(super) const CHUNK_VALUE_TILE: usize = 16;
pub(super) const STEP_BLOCK: u32 = 64;
pub(super) const HEDGEHOG_BLOCK: u32 = 128;
pub(super) const WINDOW_BLOCK: u32 = 64;
pub(super) const ELEMENTWISE_BLOCK: u32 = 256;
pub(super) const MAX_ELEMENTWISE_BLOCKS: u64 = 65535;

/// Every (module, entry) this file launches.
pub fn launched_entries() -> Vec<(&'static PtxModule, String)> {
    let mut entries: Vec<(&'static PtxModule, String)> = ["f32", "f16", "bf16"]
        .iter()
        .flat_map(|d| [format!("chunk_fwd_v1_{d}"), format!("chunk_fwd_v2_{d}"), format!("decode_step_v1_{d}")])
        .map(|e| (&ATTN_CHUNK_FWD, e))
        .collect();
    for d in ["f32", "f16", "bf16"] {
        for op in ["hedgehog_v1", "normalize_rows_v1", "window_fwd_v1", "window_cache_v1"] {
            entries.push((&ATTN_FUSED, format!("{op}_{d}")));
        }
    }
    entries.push((&ATTN_FUSED, "state_ext_v1".to_string()));
    for d in ["f32", "f16", "bf16"] {
        for op in ["window_step_gather_v1", "window_step_cache_v1", "window_step_out_v1"] {
            entries.push((&ATTN_WINDOW_STEP, format!("{op}_{d}")));
        }
    }
    entries.push((&ATTN_WINDOW_STEP, "window_step_state_v1".to_string()));
    entries
}

pub(super) fn device_of(op: &str, t: &Tensor) -> Result<CudaDevice> {
    match t.device() {
        Device::Cuda(d) => Ok(d),
        other => Err(Error::invalid(format!("{op}: expected tensors on CUDA, got one on {other}"))),
    }
}

pub(super) fn gate_dtype(op: &'static str, gate: &Gate) -> Result<u32> {
    match gate.tensor().map(|g| g.dtype()) {
        None | Some(DType::F32) => Ok(0),
        Some(DType::F16) => Ok(1),
        Some(DType::BF16) => Ok(2),
        Some(other) => {
            Err(Error::UnsupportedDType { op, dtype: other, detail: "gates must be f32, f16 or bf16".into() })
        }
    }
}

pub(super) fn buffer<'t>(what: &str, t: &'t Tensor, device: &CudaDevice) -> Result<&'t CudaBuffer> {
    let b = CudaBuffer::of(t).map_err(|e| Error::invalid(format!("{what}: {e}")))?;
    if !b.device().same_device(device) || b.len_bytes() != t.size_in_bytes() {
        return Err(Error::invalid(format!(
            "{what}: buffer of {} bytes on another device or of the wrong size",
            b.len_bytes()
        )));
    }
    Ok(b)
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
        assert!(ATTN_FUSED.ptx.contains(".target sm_80"));
        assert!(ATTN_WINDOW_STEP.ptx.contains(".target sm_80"));
    }
}
