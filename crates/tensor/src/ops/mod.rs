//! Tensor ops: validation and device dispatch.
//!
//! Every op checks shapes, dtypes and devices here, once, and then runs on the device
//! of its inputs: `cpu` (fast paths), `crate::cuda::ops` or `crate::wgpu::ops`.
//! `reference` holds the naive oracles (f64 accumulation) the conformance suite
//! compares every device against. Compute dtypes are f32, f16 and bf16; accumulation is
//! f32 (f64 in references); outputs are in the input dtype.
//!
//! Ops: `add`, `mul` (same shape), `scale`, `matmul` (`[.., M, K] x [K, N]` or batched
//! `[B, M, K] x [B, K, N]`), `linear` (`x W^T` with `W [N, K]`), `softmax` over the last
//! dimension, `rms_norm` over the last dimension with a weight; `first_non_finite` (and
//! its batched forms `first_non_finite_each`, `check_all_finite`): the first NaN / Inf of
//! a tensor, found on its own device (`non_finite`).

pub mod cpu;
pub mod non_finite;
pub mod reference;

pub use non_finite::{NonFiniteElement, check_all_finite, first_non_finite, first_non_finite_each};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Elementwise binary ops on equal shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Mul,
}

impl BinaryOp {
    pub const fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Mul => "mul",
        }
    }

    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Mul => a * b,
        }
    }
}

/// Dimensions of a (batched) matrix product `C[b] = A[b] * op(B[b])`.
///
/// `A` is `[batch, m, k]` row-major. `B` is `[k, n]` (or `[n, k]` when `rhs_transposed`),
/// shared by all batches unless `rhs_batched`, in which case it has a leading `batch`
/// dimension. `C` is `[batch, m, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub rhs_batched: bool,
    pub rhs_transposed: bool,
}

impl MatmulDims {
    /// Floating-point operations of the product (2 m n k per batch).
    pub fn flops(&self) -> f64 {
        2.0 * self.batch as f64 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

pub(crate) fn check_compute_dtype(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_compute_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype: t.dtype(), detail: "expected f32, f16 or bf16".into() })
    }
}

/// Checks that `a` and `b` share dtype and device.
pub fn check_same_dtype_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    let (da, db) = (a.device(), b.device());
    if !da.same_device(&db) {
        return Err(Error::DeviceMismatch { op, lhs: da.to_string(), rhs: db.to_string() });
    }
    Ok(())
}

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_compute_dtype(op.name(), a)?;
    check_same_dtype_device(op.name(), a, b)?;
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch { op: op.name(), lhs: a.shape().clone(), rhs: b.shape().clone() });
    }
    match a.device() {
        Device::Cpu => cpu::binary(op, a, b),
        Device::Cuda(_) => crate::cuda::ops::binary(op, a, b),
        Device::Wgpu(_) => crate::wgpu::ops::binary(op, a, b),
    }
}

/// `a + b`, elementwise, equal shapes.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Add, a, b)
}

/// `a * b`, elementwise, equal shapes.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Mul, a, b)
}

/// `s * a`.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    check_compute_dtype("scale", a)?;
    if !s.is_finite() {
        return Err(Error::invalid(format!("scale: factor {s} is not finite")));
    }
    match a.device() {
        Device::Cpu => cpu::scale(a, s),
        Device::Cuda(_) => crate::cuda::ops::scale(a, s),
        Device::Wgpu(_) => crate::wgpu::ops::scale(a, s),
    }
}

/// Matrix product. `a` is `[M, K]` or `[B, M, K]`; `b` is `[K, N]` (shared over the batch)
/// or `[B, K, N]`. Returns `[M, N]` or `[B, M, N]`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_compute_dtype("matmul", a)?;
    check_same_dtype_device("matmul", a, b)?;
    let mismatch = || Error::ShapeMismatch { op: "matmul", lhs: a.shape().clone(), rhs: b.shape().clone() };
    let (batch, m, k) = match a.dims() {
        [m, k] => (1, *m, *k),
        [bt, m, k] => (*bt, *m, *k),
        _ => return Err(Error::invalid(format!("matmul: lhs must be rank 2 or 3, got {}", a.shape()))),
    };
    let (rhs_batched, kb, n) = match b.dims() {
        [kb, n] => (false, *kb, *n),
        [bb, kb, n] if *bb == batch && a.rank() == 3 => (true, *kb, *n),
        _ => return Err(mismatch()),
    };
    if kb != k {
        return Err(mismatch());
    }
    let dims = MatmulDims { batch, m, k, n, rhs_batched, rhs_transposed: false };
    let out_shape = if a.rank() == 3 { Shape::new([batch, m, n]) } else { Shape::new([m, n]) };
    run_matmul(a, b, &dims)?.reshape(out_shape)
}

/// `x W^T`: `x` is `[..., K]`, `w` is `[N, K]` (the PyTorch `Linear` weight layout).
/// Returns `[..., N]`.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    check_compute_dtype("linear", x)?;
    check_same_dtype_device("linear", x, w)?;
    let [n, k] = w.dims() else {
        return Err(Error::invalid(format!("linear: weight must be [out, in], got {}", w.shape())));
    };
    if x.rank() == 0 || x.shape().last_dim() != *k {
        return Err(Error::ShapeMismatch { op: "linear", lhs: x.shape().clone(), rhs: w.shape().clone() });
    }
    let dims = MatmulDims { batch: 1, m: x.shape().rows(), k: *k, n: *n, rhs_batched: false, rhs_transposed: true };
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("rank checked above") = *n;
    run_matmul(x, w, &dims)?.reshape(out_dims)
}

fn run_matmul(a: &Tensor, b: &Tensor, dims: &MatmulDims) -> Result<Tensor> {
    let _span = tracing::debug_span!("matmul", ?dims, dtype = %a.dtype()).entered();
    match a.device() {
        Device::Cpu => cpu::matmul(a, b, dims),
        Device::Cuda(_) => crate::cuda::ops::matmul(a, b, dims),
        Device::Wgpu(_) => crate::wgpu::ops::matmul(a, b, dims),
    }
}

/// Softmax over the last dimension (max-subtracted, f32 accumulation).
pub fn softmax(a: &Tensor) -> Result<Tensor> {
    check_compute_dtype("softmax", a)?;
    if a.rank() == 0 || a.shape().last_dim() == 0 {
        return Err(Error::invalid(format!("softmax: needs a non-empty last dimension, got {}", a.shape())));
    }
    match a.device() {
        Device::Cpu => cpu::softmax_last(a),
        Device::Cuda(_) => crate::cuda::ops::softmax_last(a),
        Device::Wgpu(_) => crate::wgpu::ops::softmax_last(a),
    }
}

/// RMSNorm over the last dimension: `x / sqrt(mean(x^2) + eps) * weight`, `weight` `[D]`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    check_compute_dtype("rms_norm", x)?;
    check_same_dtype_device("rms_norm", x, weight)?;
    if x.rank() == 0 || weight.dims() != [x.shape().last_dim()] {
        return Err(Error::ShapeMismatch { op: "rms_norm", lhs: x.shape().clone(), rhs: weight.shape().clone() });
    }
    if !(eps >= 0.0 && eps.is_finite()) {
        return Err(Error::invalid(format!("rms_norm: eps {eps} must be finite and >= 0")));
    }
    match x.device() {
        Device::Cpu => cpu::rms_norm(x, weight, eps),
        Device::Cuda(_) => crate::cuda::ops::rms_norm(x, weight, eps),
        Device::Wgpu(_) => crate::wgpu::ops::rms_norm(x, weight, eps),
    }
}
