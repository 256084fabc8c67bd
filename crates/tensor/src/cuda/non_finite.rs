//! CUDA launches of `crate::ops::first_non_finite_each` (`kernels/cuda/tensor/non_finite.cu`).
//!
//! Layout: one result buffer of two u64 per tensor, `[index, value bits]`, uploaded as
//! `[u64::MAX, 0]` (no index yet). Per non-empty tensor two launches on the device's
//! stream: `first_non_finite_<T>` (256-thread grid-stride blocks, at most 32 per SM)
//! `atomicMin`s the index of the first non-finite element each thread meets into the
//! tensor's slot; `non_finite_value_<T>` (one thread does the work) then writes that
//! element widened to f32 bits. One download of 16 bytes per tensor reads every answer:
//! one wait, no copy of the tensors themselves. Indices are 64-bit: any size works.

use super::CudaDevice;
use super::buffer::CudaBuffer;
use super::kernels::NON_FINITE;
use super::launch::{grid_1d, grid_3d};
use super::registry::dtype_suffix;
use crate::error::{Error, Result};
use crate::ops::NonFiniteElement;
use crate::tensor::Tensor;

/// Threads per block of `first_non_finite_<T>`.
const SCAN_BLOCK: u32 = 256;
/// The index word of a slot that found nothing.
const NOT_FOUND: u64 = u64::MAX;

/// The first non-finite element of each tensor (all on one CUDA device, f32 / f16 /
/// bf16, checked by the caller), in order.
pub fn first_non_finite_each(tensors: &[&Tensor]) -> Result<Vec<Option<NonFiniteElement>>> {
    const OP: &str = "first_non_finite";
    let Some(first) = tensors.first() else {
        return Ok(Vec::new());
    };
    let device: CudaDevice = CudaBuffer::of(first)?.device().clone();
    let initial: Vec<u64> = tensors.iter().flat_map(|_| [NOT_FOUND, 0]).collect();
    let mut found = device.upload(bytemuck::cast_slice(&initial))?;
    for (slot, t) in tensors.iter().enumerate() {
        let buffer = CudaBuffer::of(t)?;
        if buffer.len_bytes() != t.size_in_bytes() {
            return Err(Error::invalid(format!(
                "{OP}: CUDA buffer holds {} bytes, expected {} for {} {}",
                buffer.len_bytes(),
                t.size_in_bytes(),
                t.dtype(),
                t.shape()
            )));
        }
        let n = t.numel() as u64;
        if n == 0 {
            continue;
        }
        let slot = u32::try_from(slot).map_err(|_| Error::invalid(format!("{OP}: {slot} tensors in one call")))?;
        let suffix = dtype_suffix(OP, t.dtype())?;
        let scan = device.kernel(&NON_FINITE, &format!("first_non_finite_{suffix}"))?;
        let mut launch = scan.launch_builder();
        launch.arg(buffer.as_slice()).arg(&n).arg(found.as_slice_mut()).arg(&slot);
        let blocks = u64::from(device.multiprocessor_count()) * 32;
        // SAFETY: matches `(const T* x, u64 n, u64* found, u32 slot)`; x holds n elements
        // of the dtype the entry was chosen for (size checked above), found holds
        // 2 * tensors.len() u64 and slot < tensors.len().
        unsafe { launch.launch(grid_1d(n, SCAN_BLOCK, blocks)?) }?;
        let value = device.kernel(&NON_FINITE, &format!("non_finite_value_{suffix}"))?;
        let mut launch = value.launch_builder();
        launch.arg(buffer.as_slice()).arg(&n).arg(found.as_slice_mut()).arg(&slot);
        // SAFETY: the same signature and buffers as the scan above; the kernel reads
        // x[index] only for an index < n.
        unsafe { launch.launch(grid_3d((1, 1, 1), (32, 1, 1), 0)?) }?;
    }
    let host = found.download()?;
    let words: &[u64] = bytemuck::try_cast_slice(host.as_bytes())
        .map_err(|e| Error::invalid(format!("{OP}: result buffer of {} bytes: {e:?}", host.len())))?;
    Ok(words
        .chunks_exact(2)
        .map(|slot| {
            (slot[0] != NOT_FOUND)
                .then(|| NonFiniteElement { index: slot[0] as usize, value: f32::from_bits(slot[1] as u32) })
        })
        .collect())
}
