//! CUDA launches of the tensor ops (PLACEHOLDER).

use crate::error::{Error, Result};
use crate::ops::{BinaryOp, MatmulDims};
use crate::tensor::Tensor;

fn not_built(op: &'static str) -> Error {
    Error::NotImplementedOnDevice { op, device: "cuda".into() }
}

pub fn binary(_op: BinaryOp, _a: &Tensor, _b: &Tensor) -> Result<Tensor> {
    Err(not_built("binary"))
}
pub fn scale(_a: &Tensor, _s: f32) -> Result<Tensor> {
    Err(not_built("scale"))
}
pub fn matmul(_a: &Tensor, _b: &Tensor, _dims: &MatmulDims) -> Result<Tensor> {
    Err(not_built("matmul"))
}
pub fn softmax_last(_a: &Tensor) -> Result<Tensor> {
    Err(not_built("softmax"))
}
pub fn rms_norm(_x: &Tensor, _weight: &Tensor, _eps: f32) -> Result<Tensor> {
    Err(not_built("rms_norm"))
}
