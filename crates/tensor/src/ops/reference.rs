//! Naive reference implementations: plain loops over f32 slices with f64 accumulation.
//! Never optimized; they are the oracle every device is compared with.

use super::{BinaryOp, MatmulDims};

pub fn binary(op: BinaryOp, a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(&x, &y)| op.apply(x, y)).collect()
}

pub fn scale(a: &[f32], s: f32) -> Vec<f32> {
    a.iter().map(|&x| x * s).collect()
}

/// `C[b, i, j] = sum_p A[b, i, p] * B[(b), p, j]` (or `B[(b), j, p]` when transposed).
pub fn matmul(a: &[f32], b: &[f32], d: &MatmulDims) -> Vec<f32> {
    let mut c = vec![0f32; d.batch * d.m * d.n];
    for bi in 0..d.batch {
        let a_off = bi * d.m * d.k;
        let b_off = if d.rhs_batched { bi * d.k * d.n } else { 0 };
        for i in 0..d.m {
            for j in 0..d.n {
                let mut acc = 0f64;
                for p in 0..d.k {
                    let bv = if d.rhs_transposed { b[b_off + j * d.k + p] } else { b[b_off + p * d.n + j] };
                    acc += a[a_off + i * d.k + p] as f64 * bv as f64;
                }
                c[(bi * d.m + i) * d.n + j] = acc as f32;
            }
        }
    }
    c
}

pub fn softmax_last(a: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    for (row, dst) in a.chunks(cols).zip(out.chunks_mut(cols)) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (o, &v) in dst.iter_mut().zip(row) {
            *o = ((v as f64 - max).exp() / sum) as f32;
        }
    }
    out
}

pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let cols = weight.len();
    let mut out = vec![0f32; x.len()];
    for (row, dst) in x.chunks(cols).zip(out.chunks_mut(cols)) {
        let ms: f64 = row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for ((o, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
            *o = (v as f64 * inv * w as f64) as f32;
        }
    }
    out
}
