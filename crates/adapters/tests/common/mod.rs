//! Shared helpers of the adapter integration tests: fixture paths, tensor maps,
//! error metrics and seeded random tensors.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use linattn_adapters::peft_io::read_safetensors;
use linattn_adapters::train::SeededRng;
use linattn_tensor::Tensor;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/adapters")
}

pub fn tensors(path: &std::path::Path) -> BTreeMap<String, Tensor> {
    read_safetensors(path).unwrap().into_iter().collect()
}

/// Max abs error, and that error relative to max |expected|.
pub fn errors(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let abs = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = want.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    (abs, abs / scale)
}

#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel_tol: f32) {
    let (abs, rel) = errors(got, want);
    let idx = got.iter().zip(want).position(|(a, b)| (a - b).abs() == abs).unwrap_or(0);
    assert!(
        rel <= rel_tol,
        "{what}: max abs {abs:.3e}, rel {rel:.3e} > {rel_tol:.1e} at {idx}: got {} want {}",
        got[idx],
        want[idx]
    );
}

pub fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let mut rng = SeededRng::new(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() * scale).collect();
    Tensor::from_vec(v, shape.to_vec()).unwrap()
}
