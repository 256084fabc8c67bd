//! WebGPU dispatch of `crate::ops::first_non_finite_each` (`kernels/wgsl/tensor/non_finite.wgsl`).
//!
//! Layout: one result buffer of two u32 words per tensor, `[index, value bits]`, uploaded
//! as `[0xFFFFFFFF, 0]` (no index yet). Per non-empty tensor two dispatches:
//! `first_non_finite` (grid-stride over the tensor's u32 words, at most
//! `MAX_WORKGROUPS` workgroups of 256) `atomicMin`s the index of the first non-finite
//! element each invocation meets into the tensor's slot; `non_finite_value` (one
//! invocation) then writes that element widened to f32 bits. All dispatches go into one
//! command buffer and one download of 8 bytes per tensor reads every answer: one wait,
//! no copy of the tensors themselves.
//!
//! Limits: indices are `u32`; a tensor of `u32::MAX` or more elements is an `Err` (the
//! index `0xFFFFFFFF` means "none").

use bytemuck::{Pod, Zeroable};

use super::launch::tensor_buffer;
use super::modules::TENSOR_NON_FINITE;
use super::ops::{dtype_code, shader_u32};
use super::{Binding, Launch, Workgroups};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::NonFiniteElement;
use crate::tensor::Tensor;

/// Invocations per workgroup of `first_non_finite`.
const WORKGROUP: u64 = 256;
/// Most workgroups of one scan; invocations loop over the rest with a grid stride.
const MAX_WORKGROUPS: u64 = 4096;
/// The index word of a slot that found nothing.
const NOT_FOUND: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ScanParams {
    numel: u32,
    words: u32,
    slot: u32,
    _pad: u32,
}

/// The first non-finite element of each tensor (all on one WebGPU device, f32 / f16 /
/// bf16, checked by the caller), in order.
pub fn first_non_finite_each(tensors: &[&Tensor]) -> Result<Vec<Option<NonFiniteElement>>> {
    const OP: &str = "first_non_finite";
    let Some(first) = tensors.first() else {
        return Ok(Vec::new());
    };
    let device = tensor_buffer(first, OP)?.device().clone();
    let mut scans = Vec::with_capacity(tensors.len());
    for (slot, t) in tensors.iter().enumerate() {
        let numel = shader_u32(OP, "numel", t.numel())?;
        if numel == NOT_FOUND {
            return Err(Error::invalid(format!(
                "{OP}: {} elements ({}) reach the u32 index that means `none`",
                t.numel(),
                t.shape()
            )));
        }
        let words = if t.dtype() == DType::F32 { numel } else { numel.div_ceil(2) };
        let params = ScanParams { numel, words, slot: shader_u32(OP, "slot", slot)?, _pad: 0 };
        scans.push((tensor_buffer(t, OP)?, [("DTYPE", dtype_code(OP, t.dtype())?)], params));
    }
    let initial: Vec<u32> = tensors.iter().flat_map(|_| [NOT_FOUND, 0]).collect();
    let found = device.upload(bytemuck::cast_slice(&initial))?;
    let bindings: Vec<[Binding<'_>; 2]> =
        scans.iter().map(|(buffer, _, _)| [Binding::read(buffer), Binding::read_write(&found)]).collect();
    let mut launches = Vec::with_capacity(2 * scans.len());
    for ((_, constants, params), bindings) in scans.iter().zip(&bindings) {
        if params.numel == 0 {
            continue;
        }
        let scan_groups = u64::from(params.words).div_ceil(WORKGROUP).min(MAX_WORKGROUPS);
        let common = Launch {
            module: &TENSOR_NON_FINITE,
            entry: "first_non_finite",
            constants,
            bindings,
            params: bytemuck::bytes_of(params),
            workgroups: Workgroups::Linear(scan_groups),
        };
        launches.push(common);
        launches.push(Launch { entry: "non_finite_value", workgroups: Workgroups::Linear(1), ..common });
    }
    if !launches.is_empty() {
        device.launch_all(&launches)?;
    }
    let host = found.download()?;
    let words = host.as_slice::<u32>()?;
    Ok(words
        .chunks_exact(2)
        .map(|slot| {
            (slot[0] != NOT_FOUND).then(|| NonFiniteElement { index: slot[0] as usize, value: f32::from_bits(slot[1]) })
        })
        .collect())
}
