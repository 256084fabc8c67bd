//! Fast CPU paths of the tensor ops: rayon over rows, f32 compute, `gemm` for matmul.
//!
//! f16 and bf16 inputs are widened to f32 once, computed in f32 and rounded back to the
//! input dtype (round-to-nearest-even), so results match the f32 path up to that final
//! rounding. Tested against `reference` in this crate and in the conformance suite.

use half::{bf16, f16};
use rayon::prelude::*;

use super::{BinaryOp, MatmulDims};
use crate::dtype::{DType, FloatElement};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Rows below this many elements are not worth splitting across threads.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// The f32 values of a CPU float tensor (borrowed when already f32).
pub fn f32_values(t: &Tensor) -> Result<std::borrow::Cow<'_, [f32]>> {
    Ok(match t.dtype() {
        DType::F32 => std::borrow::Cow::Borrowed(t.as_slice::<f32>()?),
        DType::F16 => std::borrow::Cow::Owned(widen(t.as_slice::<f16>()?)),
        DType::BF16 => std::borrow::Cow::Owned(widen(t.as_slice::<bf16>()?)),
        dtype => return Err(Error::UnsupportedDType { op: "cpu", dtype, detail: "expected f32, f16 or bf16".into() }),
    })
}

fn widen<T: FloatElement>(src: &[T]) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(PAR_MIN_ELEMS).zip(src.par_chunks(PAR_MIN_ELEMS)).for_each(|(o, s)| {
        for (o, s) in o.iter_mut().zip(s) {
            *o = s.to_f32();
        }
    });
    out
}

/// A CPU tensor of `dtype` from f32 values (rounded to `dtype`).
pub fn tensor_from_f32(values: Vec<f32>, dtype: DType, dims: &[usize]) -> Result<Tensor> {
    fn narrow<T: FloatElement>(values: &[f32]) -> Vec<T> {
        let mut out = vec![T::from_f32(0.0); values.len()];
        out.par_chunks_mut(PAR_MIN_ELEMS).zip(values.par_chunks(PAR_MIN_ELEMS)).for_each(|(o, s)| {
            for (o, &s) in o.iter_mut().zip(s) {
                *o = T::from_f32(s);
            }
        });
        out
    }
    match dtype {
        DType::F32 => Tensor::from_vec(values, dims.to_vec()),
        DType::F16 => Tensor::from_vec(narrow::<f16>(&values), dims.to_vec()),
        DType::BF16 => Tensor::from_vec(narrow::<bf16>(&values), dims.to_vec()),
        dtype => Err(Error::UnsupportedDType { op: "cpu", dtype, detail: "expected f32, f16 or bf16".into() }),
    }
}

pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (av, bv) = (f32_values(a)?, f32_values(b)?);
    let mut out = vec![0f32; av.len()];
    out.par_chunks_mut(PAR_MIN_ELEMS).zip(av.par_chunks(PAR_MIN_ELEMS).zip(bv.par_chunks(PAR_MIN_ELEMS))).for_each(
        |(o, (x, y))| {
            for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                *o = op.apply(x, y);
            }
        },
    );
    tensor_from_f32(out, a.dtype(), a.dims())
}

pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let av = f32_values(a)?;
    let mut out = vec![0f32; av.len()];
    out.par_chunks_mut(PAR_MIN_ELEMS).zip(av.par_chunks(PAR_MIN_ELEMS)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = x * s;
        }
    });
    tensor_from_f32(out, a.dtype(), a.dims())
}

/// f32 GEMM on slices through the `gemm` crate: `c = a * op(b)` per batch.
pub fn matmul_f32(a: &[f32], b: &[f32], d: &MatmulDims) -> Vec<f32> {
    let mut c = vec![0f32; d.batch * d.m * d.n];
    if d.m == 0 || d.n == 0 || d.k == 0 {
        return c;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 && d.m * d.n * d.k >= 1 << 15 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // Row-major strides: A[i, p] at i*k + p; B[p, j] at p*n + j, or B^T: B[j, p] at j*k + p.
    let (b_rs, b_cs) = if d.rhs_transposed { (1isize, d.k as isize) } else { (d.n as isize, 1isize) };
    for bi in 0..d.batch {
        let a_part = &a[bi * d.m * d.k..(bi + 1) * d.m * d.k];
        let b_part = if d.rhs_batched { &b[bi * d.k * d.n..(bi + 1) * d.k * d.n] } else { &b[..d.k * d.n] };
        let c_part = &mut c[bi * d.m * d.n..(bi + 1) * d.m * d.n];
        // SAFETY: the three slices hold exactly m*k, k*n and m*n f32 values (sliced above),
        // and the strides index within them: A rows of k, B rows of n (or, transposed, rows
        // of k), C rows of n. `read_dst` is false, so C's zeroed contents are only written.
        unsafe {
            gemm::gemm(
                d.m,
                d.n,
                d.k,
                c_part.as_mut_ptr(),
                1,
                d.n as isize,
                false,
                a_part.as_ptr(),
                1,
                d.k as isize,
                b_part.as_ptr(),
                b_cs,
                b_rs,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
    c
}

pub fn matmul(a: &Tensor, b: &Tensor, d: &MatmulDims) -> Result<Tensor> {
    let (av, bv) = (f32_values(a)?, f32_values(b)?);
    let c = matmul_f32(&av, &bv, d);
    tensor_from_f32(c, a.dtype(), &[d.batch, d.m, d.n])
}

pub fn softmax_last(a: &Tensor) -> Result<Tensor> {
    let cols = a.shape().last_dim();
    let av = f32_values(a)?;
    let mut out = vec![0f32; av.len()];
    out.par_chunks_mut(cols).zip(av.par_chunks(cols)).for_each(|(o, row)| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for (o, &v) in o.iter_mut().zip(row) {
            let e = (v - max).exp();
            *o = e;
            sum += e;
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|v| *v *= inv);
    });
    tensor_from_f32(out, a.dtype(), a.dims())
}

pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let cols = x.shape().last_dim();
    let (xv, wv) = (f32_values(x)?, f32_values(weight)?);
    let mut out = vec![0f32; xv.len()];
    out.par_chunks_mut(cols).zip(xv.par_chunks(cols)).for_each(|(o, row)| {
        let ms = row.iter().map(|&v| v * v).sum::<f32>() / cols as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(row).zip(wv.iter()) {
            *o = v * inv * w;
        }
    });
    tensor_from_f32(out, x.dtype(), x.dims())
}

#[cfg(test)]
mod tests {
    use super::super::reference;
    use super::*;
    use proptest::prelude::*;

    fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn gemm_matches_reference(batch in 1usize..3, m in 1usize..40, k in 1usize..70, n in 1usize..40,
                                  transposed: bool, batched: bool, seed: u64) {
            let d = MatmulDims { batch, m, k, n, rhs_batched: batched, rhs_transposed: transposed };
            let mut s = seed;
            let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5 };
            let a: Vec<f32> = (0..batch * m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..if batched { batch } else { 1 } * k * n).map(|_| next()).collect();
            let fast = matmul_f32(&a, &b, &d);
            let slow = reference::matmul(&a, &b, &d);
            prop_assert!(max_rel_err(&fast, &slow) < 1e-5, "err {}", max_rel_err(&fast, &slow));
        }
    }

    #[test]
    fn softmax_and_rms_norm_match_reference() {
        let x: Vec<f32> = (0..3 * 50).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.3).collect();
        let w: Vec<f32> = (0..50).map(|i| 0.5 + i as f32 * 0.01).collect();
        let xt = Tensor::from_slice(&x, [3, 50]).unwrap();
        let wt = Tensor::from_slice(&w, [50]).unwrap();
        let s = softmax_last(&xt).unwrap().to_f32_vec().unwrap();
        assert!(max_rel_err(&s, &reference::softmax_last(&x, 50)) < 1e-5);
        let r = rms_norm(&xt, &wt, 1e-6).unwrap().to_f32_vec().unwrap();
        assert!(max_rel_err(&r, &reference::rms_norm(&x, &w, 1e-6)) < 1e-5);
    }
}
