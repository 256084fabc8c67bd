//! Helpers shared by the integration tests: a deterministic generator of inputs and
//! comparison shorthands.
#![allow(dead_code)]

use linattn_attn::check_close;
use linattn_tensor::{DType, Tensor};

/// SplitMix64: deterministic, seedable, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }

    /// A tensor of uniform values in [-1, 1) times `amp`.
    pub fn tensor(&mut self, shape: &[usize], amp: f32, dtype: DType) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = self.vec(n).into_iter().map(|x| x * amp).collect();
        Tensor::from_f32(&v, dtype, shape.to_vec()).unwrap()
    }

    /// Log-gates `logsigmoid(x) / temperature` with x uniform in [-spread, spread).
    pub fn log_gates(&mut self, shape: &[usize], spread: f32, temperature: f32) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = self
            .vec(n)
            .into_iter()
            .map(|x| {
                let x = x * spread;
                // logsigmoid(x) = -softplus(-x), stable form.
                let ls = -((-x).max(0.0) + (-(x.abs())).exp().ln_1p());
                ls / temperature
            })
            .collect();
        Tensor::from_vec(v, shape.to_vec()).unwrap()
    }
}

pub fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_f32_vec().unwrap()
}

/// Panics with the full comparison when the relative RMS error exceeds `tol`.
pub fn assert_close(what: &str, reference: &Tensor, actual: &Tensor, tol: f64) {
    assert_eq!(reference.dims(), actual.dims(), "{what}: shapes differ");
    if let Err(msg) = check_close(what, &f32s(reference), &f32s(actual), tol) {
        panic!("{msg}");
    }
}

/// Tokens `range` of a `[B, T, ...]` tensor along dim 1, as f32.
pub fn slice_tokens(t: &Tensor, start: usize, end: usize) -> Tensor {
    let d = t.dims();
    let row: usize = d[2..].iter().product();
    let vals = f32s(t);
    let mut out = Vec::new();
    for b in 0..d[0] {
        out.extend_from_slice(&vals[(b * d[1] + start) * row..(b * d[1] + end) * row]);
    }
    let mut shape = d.to_vec();
    shape[1] = end - start;
    Tensor::from_f32(&out, t.dtype(), shape).unwrap()
}

/// Token `t` of a `[B, T, ...]` tensor as `[B, ...]`.
pub fn token(t: &Tensor, i: usize) -> Tensor {
    let s = slice_tokens(t, i, i + 1);
    let mut shape = s.dims().to_vec();
    shape.remove(1);
    s.reshape(shape).unwrap()
}
