//! Conformance cases of the tensor core ops: add, mul, scale, matmul (plain, batched,
//! shared rhs), linear (`x W^T`), softmax and RMSNorm, in f32, f16 and bf16, over shapes
//! chosen to miss every tile boundary (1, 7, 33, 65, 129 ...).
//!
//! Inputs come from a seeded generator and are rounded to the case dtype before the
//! reference (`linattn_tensor::ops::reference`, f64 accumulation) sees them, so the
//! only differences left are accumulation order and the final rounding to the dtype.

use linattn_tensor::ops::{self, BinaryOp, MatmulDims, reference};
use linattn_tensor::{DType, Device, Result, Tensor};

use crate::harness::{Case, CaseOutput, TestRng, Tolerance, round_to};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Uploads f32 `values` (already representable in `dtype`) as a `dtype` tensor on `device`.
pub fn upload(values: &[f32], dtype: DType, dims: &[usize], device: &Device) -> Result<Tensor> {
    Tensor::from_f32(values, dtype, dims.to_vec())?.to_device(device)
}

/// Seeded inputs in `[lo, hi)`, rounded to `dtype`.
pub fn inputs(seed: u64, n: usize, lo: f32, hi: f32, dtype: DType) -> Vec<f32> {
    round_to(&TestRng::new(seed).vec(n, lo, hi), dtype)
}

fn shape_str(dims: &[usize]) -> String {
    linattn_tensor::Shape::new(dims.to_vec()).to_string()
}

fn binary_cases(out: &mut Vec<Case>) {
    for dtype in DTYPES {
        for dims in [vec![1usize], vec![7, 33], vec![65, 129], vec![3, 5, 1031]] {
            for op in [BinaryOp::Add, BinaryOp::Mul] {
                let d = dims.clone();
                out.push(Case::new(op.name(), dtype, shape_str(&dims), Tolerance::for_dtype(dtype), move |dev| {
                    let n = d.iter().product();
                    let (a, b) = (inputs(1, n, -2.0, 2.0, dtype), inputs(2, n, -2.0, 2.0, dtype));
                    let (ta, tb) = (upload(&a, dtype, &d, dev)?, upload(&b, dtype, &d, dev)?);
                    let got = match op {
                        BinaryOp::Add => ops::add(&ta, &tb)?,
                        BinaryOp::Mul => ops::mul(&ta, &tb)?,
                    };
                    Ok(CaseOutput { got: got.to_f32_vec()?, want: reference::binary(op, &a, &b) })
                }));
            }
            let d = dims.clone();
            out.push(Case::new("scale", dtype, shape_str(&dims), Tolerance::for_dtype(dtype), move |dev| {
                let n = d.iter().product();
                let a = inputs(3, n, -2.0, 2.0, dtype);
                let got = ops::scale(&upload(&a, dtype, &d, dev)?, -0.37)?;
                Ok(CaseOutput { got: got.to_f32_vec()?, want: reference::scale(&a, -0.37) })
            }));
        }
    }
}

fn matmul_tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance::new(1e-5, 1e-4, 1e-4),
        _ => Tolerance::for_dtype(dtype),
    }
}

fn matmul_cases(out: &mut Vec<Case>) {
    // (batch, m, k, n, rhs_batched)
    let shapes = [
        (1, 1, 1, 1, false),
        (1, 7, 33, 65, false),
        (1, 64, 64, 64, false),
        (1, 1, 4096, 11, false),
        (3, 130, 67, 45, true),
        (2, 33, 129, 17, false),
    ];
    for dtype in DTYPES {
        for (batch, m, k, n, rhs_batched) in shapes {
            let dims = MatmulDims { batch, m, k, n, rhs_batched, rhs_transposed: false };
            let a_dims = if batch > 1 { vec![batch, m, k] } else { vec![m, k] };
            let b_dims = if rhs_batched { vec![batch, k, n] } else { vec![k, n] };
            let label = format!("{}x{}", shape_str(&a_dims), shape_str(&b_dims));
            out.push(Case::new("matmul", dtype, label, matmul_tolerance(dtype), move |dev| {
                let a = inputs(4, a_dims.iter().product(), -1.0, 1.0, dtype);
                let b = inputs(5, b_dims.iter().product(), -1.0, 1.0, dtype);
                let got = ops::matmul(&upload(&a, dtype, &a_dims, dev)?, &upload(&b, dtype, &b_dims, dev)?)?;
                Ok(CaseOutput { got: got.to_f32_vec()?, want: reference::matmul(&a, &b, &dims) })
            }));
        }
        for (rows, k, n) in [(1usize, 4096usize, 128usize), (5, 100, 60), (70, 256, 129)] {
            let dims = MatmulDims { batch: 1, m: rows, k, n, rhs_batched: false, rhs_transposed: true };
            let label = format!("{}x{}^T", shape_str(&[rows, k]), shape_str(&[n, k]));
            out.push(Case::new("linear", dtype, label, matmul_tolerance(dtype), move |dev| {
                let x = inputs(6, rows * k, -1.0, 1.0, dtype);
                let w = inputs(7, n * k, -0.2, 0.2, dtype);
                let got = ops::linear(&upload(&x, dtype, &[rows, k], dev)?, &upload(&w, dtype, &[n, k], dev)?)?;
                Ok(CaseOutput { got: got.to_f32_vec()?, want: reference::matmul(&x, &w, &dims) })
            }));
        }
    }
}

fn row_op_cases(out: &mut Vec<Case>) {
    for dtype in DTYPES {
        for dims in [vec![1usize, 1], vec![7, 33], vec![3, 1000], vec![2, 4097], vec![2, 3, 64]] {
            let d = dims.clone();
            out.push(Case::new("softmax", dtype, shape_str(&dims), Tolerance::for_dtype(dtype), move |dev| {
                let x = inputs(8, d.iter().product(), -8.0, 8.0, dtype);
                let got = ops::softmax(&upload(&x, dtype, &d, dev)?)?;
                Ok(CaseOutput { got: got.to_f32_vec()?, want: reference::softmax_last(&x, *d.last().unwrap()) })
            }));
            let d = dims.clone();
            out.push(Case::new("rms_norm", dtype, shape_str(&dims), Tolerance::for_dtype(dtype), move |dev| {
                let cols = *d.last().unwrap();
                let x = inputs(9, d.iter().product(), -3.0, 3.0, dtype);
                let w = inputs(10, cols, 0.5, 1.5, dtype);
                let got = ops::rms_norm(&upload(&x, dtype, &d, dev)?, &upload(&w, dtype, &[cols], dev)?, 1e-5)?;
                Ok(CaseOutput { got: got.to_f32_vec()?, want: reference::rms_norm(&x, &w, 1e-5) })
            }));
        }
    }
}

/// Every tensor-op case.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    binary_cases(&mut out);
    matmul_cases(&mut out);
    row_op_cases(&mut out);
    out
}
