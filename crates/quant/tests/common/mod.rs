//! Shared helpers for the integration tests: fixture loading and comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

/// `tests/fixtures/quant/<name>` in the workspace.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant").join(name)
}

/// A tensor read from a safetensors fixture: dtype name, shape, raw bytes.
pub struct Raw {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Raw {
    pub fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.dtype, "F32");
        self.bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }
}

pub fn load(name: &str) -> HashMap<String, Raw> {
    let data = std::fs::read(fixture(name)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&data).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            (k, Raw { dtype: format!("{:?}", v.dtype()), shape: v.shape().to_vec(), bytes: v.data().to_vec() })
        })
        .collect()
}

/// Deterministic pseudo-random f32 in [-1, 1) (xorshift).
pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    linattn_tensor::testing::uniform(n, seed, -1.0, 1.0)
}

/// Asserts `|a - b| <= atol + rtol * |b|` everywhere, printing the worst mismatch.
pub fn assert_close(what: &str, a: &[f32], b: &[f32], atol: f32, rtol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let mut worst = (0usize, 0.0f32);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let err = (x - y).abs();
        let excess = err - (atol + rtol * y.abs());
        // Written negated on purpose: a NaN excess must count as a failure.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let outside = !(excess <= 0.0);
        if outside && (excess > worst.1 || worst.1 == 0.0) {
            worst = (i, excess.max(f32::MIN_POSITIVE));
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        let max_abs = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        panic!(
            "{what}: mismatch at {i}: got {} expected {} (max abs err {max_abs}, atol {atol}, rtol {rtol})",
            a[i], b[i]
        );
    }
}
