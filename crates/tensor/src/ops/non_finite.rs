//! Where a float tensor first holds NaN, +Inf or -Inf, found on the tensor's own device.
//!
//! Ops: [`first_non_finite`] (one tensor), [`first_non_finite_each`] (several tensors on
//! one device, with a single device->host readback for all of them), and
//! [`check_all_finite`] (the `Error::NonFinite` of the first tensor, in the given order,
//! that holds such a value). Dtypes f32, f16 and bf16; any shape (flat, row-major index).
//!
//! Test: an element is non-finite when its exponent bits are all ones (f32 `0x7f800000`,
//! f16 `0x7c00`, bf16 `0x7f80`), an integer test on the stored bits on every device, so no
//! float comparison is involved. The reported value is the element widened to f32, which
//! is exact: Inf stays Inf, NaN stays NaN (f16 and bf16 NaNs widen like `half` does it:
//! quiet bit set, payload kept).
//!
//! Devices:
//! - CPU: a parallel scan over the stored bits ([`first_exponent_all_ones`]): rayon's
//!   `position_first` over blocks of 64 Ki elements, each block tested branch-free, the
//!   exact index searched only inside the first block that holds one. No copy.
//! - CUDA (`kernels/cuda/tensor/non_finite.cu`) and WebGPU
//!   (`kernels/wgsl/tensor/non_finite.wgsl`): one read pass in which every thread
//!   `atomicMin`s the index of the first non-finite element it meets into a small result
//!   buffer, then a one-thread kernel copies that element's value beside the index. The
//!   host reads back only that buffer (16 bytes per tensor on CUDA, 8 on WebGPU).
//!
//! Limits: WebGPU kernels index with `u32`, so a tensor of 2^32 - 1 or more elements is an
//! `Err` there (no storage buffer that large can be bound anyway); CUDA and the CPU use
//! 64-bit indices.

use std::ops::BitAnd;

use half::{bf16, f16};
use rayon::prelude::*;

use super::check_compute_dtype;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The first non-finite element of a tensor.
#[derive(Clone, Copy, Debug)]
pub struct NonFiniteElement {
    /// Flat (row-major) index.
    pub index: usize,
    /// The element widened to f32: NaN, +Inf or -Inf.
    pub value: f32,
}

/// Exponent masks of the stored bits: all ones means Inf or NaN.
pub const F32_EXPONENT_BITS: u32 = 0x7f80_0000;
pub const F16_EXPONENT_BITS: u16 = 0x7c00;
pub const BF16_EXPONENT_BITS: u16 = 0x7f80;

/// Elements per block of the CPU scan (one rayon task each).
const SCAN_BLOCK: usize = 1 << 16;

/// The first NaN or Inf of `t`, or `None` when every element is finite. Runs on the
/// tensor's device; a GPU tensor is not copied to the host (see the module header).
pub fn first_non_finite(t: &Tensor) -> Result<Option<NonFiniteElement>> {
    Ok(first_non_finite_each(&[t])?.pop().flatten())
}

/// [`first_non_finite`] of each tensor (all on one device), in order. On a GPU the scans
/// are queued together and their results come back in one readback.
pub fn first_non_finite_each(tensors: &[&Tensor]) -> Result<Vec<Option<NonFiniteElement>>> {
    const OP: &str = "first_non_finite";
    let Some(first) = tensors.first() else {
        return Ok(Vec::new());
    };
    let device = first.device();
    for t in tensors {
        check_compute_dtype(OP, t)?;
        if !t.device().same_device(&device) {
            return Err(Error::DeviceMismatch { op: OP, lhs: device.to_string(), rhs: t.device().to_string() });
        }
    }
    match device {
        Device::Cpu => tensors.iter().map(|t| first_non_finite_cpu(t)).collect(),
        Device::Cuda(_) => crate::cuda::non_finite::first_non_finite_each(tensors),
        Device::Wgpu(_) => crate::wgpu::non_finite::first_non_finite_each(tensors),
    }
}

/// Fails with `Error::NonFinite { op, tensor: name, index, value }` for the first tensor
/// of `named` (in order) that holds a NaN or Inf; the tensors must share a device.
pub fn check_all_finite(op: &'static str, named: &[(&str, &Tensor)]) -> Result<()> {
    let tensors: Vec<&Tensor> = named.iter().map(|&(_, t)| t).collect();
    let found = first_non_finite_each(&tensors)?;
    match named.iter().zip(found).find_map(|(&(name, _), hit)| hit.map(|hit| (name, hit))) {
        Some((name, hit)) => Err(Error::NonFinite { op, tensor: name.to_string(), index: hit.index, value: hit.value }),
        None => Ok(()),
    }
}

/// Index of the first non-finite value of a host f32 slice (the CPU scan of
/// [`first_non_finite`] on data that is already on the host).
pub fn first_non_finite_in_slice(values: &[f32]) -> Option<usize> {
    first_exponent_all_ones(bytemuck::cast_slice::<f32, u32>(values), F32_EXPONENT_BITS)
}

/// Index of the first element of `bits` whose bits under `exponent_mask` are all set.
/// Parallel over blocks; each block is tested without branches (so it vectorizes) and
/// only the first block with a hit is searched element by element.
pub fn first_exponent_all_ones<B>(bits: &[B], exponent_mask: B) -> Option<usize>
where
    B: Copy + Send + Sync + BitAnd<Output = B> + PartialEq,
{
    let is_non_finite = |b: B| (b & exponent_mask) == exponent_mask;
    let block = bits
        .par_chunks(SCAN_BLOCK)
        .position_first(|block| block.iter().fold(false, |hit, &b| hit | is_non_finite(b)))?;
    let start = block * SCAN_BLOCK;
    bits[start..].iter().position(|&b| is_non_finite(b)).map(|offset| start + offset)
}

fn first_non_finite_cpu(t: &Tensor) -> Result<Option<NonFiniteElement>> {
    let buffer = t.cpu_buffer()?;
    let found = match t.dtype() {
        DType::F32 => {
            let bits = buffer.as_slice::<u32>()?;
            first_exponent_all_ones(bits, F32_EXPONENT_BITS).map(|i| (i, f32::from_bits(bits[i])))
        }
        DType::F16 => {
            let bits = buffer.as_slice::<u16>()?;
            first_exponent_all_ones(bits, F16_EXPONENT_BITS).map(|i| (i, f16::from_bits(bits[i]).to_f32()))
        }
        DType::BF16 => {
            let bits = buffer.as_slice::<u16>()?;
            first_exponent_all_ones(bits, BF16_EXPONENT_BITS).map(|i| (i, bf16::from_bits(bits[i]).to_f32()))
        }
        dtype => {
            return Err(Error::UnsupportedDType {
                op: "first_non_finite",
                dtype,
                detail: "expected f32, f16 or bf16".into(),
            });
        }
    };
    Ok(found.map(|(index, value)| NonFiniteElement { index, value }))
}

/// The f32 bits of a non-finite f16 (`bits` has all exponent bits set), widened the way
/// `half` widens it: Inf keeps its sign, NaN keeps sign and payload with the quiet bit set.
/// The GPU kernels compute the same bits.
pub fn widen_non_finite_f16_bits(bits: u16) -> u32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let mantissa = u32::from(bits & 0x03ff);
    if mantissa == 0 { sign | 0x7f80_0000 } else { sign | 0x7fc0_0000 | (mantissa << 13) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain oracle: widen every element, ask `is_finite`.
    fn reference(t: &Tensor) -> Option<usize> {
        t.to_f32_vec().unwrap().iter().position(|v| !v.is_finite())
    }

    #[test]
    fn cpu_scan_matches_the_plain_search() {
        let lengths = [0usize, 1, 7, SCAN_BLOCK - 1, SCAN_BLOCK, SCAN_BLOCK + 3, 3 * SCAN_BLOCK + 17];
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for &len in &lengths {
                let base: Vec<f32> = (0..len).map(|i| (i % 97) as f32 * 0.25 - 12.0).collect();
                let clean = Tensor::from_f32(&base, dtype, [len]).unwrap();
                assert!(first_non_finite(&clean).unwrap().is_none(), "{dtype} len {len}: false positive");
                let spots = [0, len / 2, len.saturating_sub(1), SCAN_BLOCK + 1];
                for (&spot, bad) in spots.iter().zip([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]) {
                    if spot >= len {
                        continue;
                    }
                    let mut values = base.clone();
                    values[spot] = bad;
                    // A later non-finite value must not win over the first one.
                    if spot + 5 < len {
                        values[spot + 5] = f32::INFINITY;
                    }
                    let t = Tensor::from_f32(&values, dtype, [len]).unwrap();
                    let hit = first_non_finite(&t).unwrap().expect("a non-finite value");
                    assert_eq!(Some(hit.index), reference(&t), "{dtype} len {len} spot {spot}");
                    assert_eq!(hit.index, spot);
                    assert_eq!(hit.value.is_nan(), bad.is_nan(), "{dtype}: value {}", hit.value);
                    if !bad.is_nan() {
                        assert_eq!(hit.value, bad);
                    }
                }
            }
        }
    }

    #[test]
    fn f16_widening_matches_half() {
        for bits in [0x7c00u16, 0xfc00, 0x7c01, 0x7e00, 0xfdff, 0x7fff] {
            assert_eq!(widen_non_finite_f16_bits(bits), f16::from_bits(bits).to_f32().to_bits(), "{bits:#06x}");
        }
    }

    #[test]
    fn check_all_finite_names_the_first_tensor_in_order() {
        let good = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap();
        let bad_late = Tensor::from_vec(vec![1.0f32, 2.0, f32::NAN], [3]).unwrap();
        let bad_early = Tensor::from_vec(vec![f32::INFINITY, 2.0, 3.0], [3]).unwrap();
        assert!(check_all_finite("op", &[("a", &good), ("b", &good)]).is_ok());
        let err = check_all_finite("op", &[("a", &good), ("b", &bad_late), ("c", &bad_early)]).unwrap_err();
        match err {
            Error::NonFinite { op, tensor, index, value } => {
                assert_eq!((op, tensor.as_str(), index), ("op", "b", 2));
                assert!(value.is_nan());
            }
            other => panic!("unexpected error {other}"),
        }
        let ints = Tensor::from_vec(vec![1i32, 2], [2]).unwrap();
        assert!(first_non_finite(&ints).is_err(), "integer tensors are rejected");
        assert!(first_non_finite_each(&[]).unwrap().is_empty());
        assert_eq!(first_non_finite_in_slice(&[0.0, 1.0, f32::NEG_INFINITY]), Some(2));
    }
}
