//! Every bad input returns `Err` naming the problem; nothing panics.

mod common;

use std::collections::BTreeMap;

use common::Rng;
use linattn_attn::{AttnOptions, LinearState, WindowOptions, WindowState, gla, hedgehog_feature_map, linear_attn};
use linattn_attn::{linear_attn_step, run_named, simple_gla, window_linear, window_linear_step};
use linattn_tensor::{DType, Device, Tensor};

fn t(rng: &mut Rng, shape: &[usize]) -> Tensor {
    rng.tensor(shape, 1.0, DType::F32)
}

fn expect_err<T: std::fmt::Debug>(r: linattn_tensor::Result<T>, needles: &[&str]) {
    let msg = r.expect_err("expected an error").to_string();
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` does not mention `{n}`");
    }
}

#[test]
fn shape_errors_name_both_shapes() {
    let mut r = Rng::new(1);
    let (q, v) = (t(&mut r, &[2, 5, 3, 8]), t(&mut r, &[2, 5, 3, 4]));
    let o = AttnOptions::default();
    expect_err(linear_attn(&q, &t(&mut r, &[2, 5, 3, 9]), &v, &o), &["`k`", "[2, 5, 3, 9]", "[2, 5, 3, 8]"]);
    expect_err(linear_attn(&q, &q, &t(&mut r, &[2, 6, 3, 4]), &o), &["`v`", "[2, 6, 3, 4]", "[2, 5, 3, 8]"]);
    expect_err(linear_attn(&t(&mut r, &[5, 3, 8]), &q, &v, &o), &["`q`", "[5, 3, 8]"]);
    expect_err(simple_gla(&q, &q, &v, &t(&mut r, &[2, 5, 4]), &o), &["`g`", "[2, 5, 4]", "[2, 5, 3]"]);
    expect_err(simple_gla(&q, &q, &v, &t(&mut r, &[4]), &o), &["`g`", "[4]", "[3]"]);
    expect_err(gla(&q, &q, &v, &t(&mut r, &[2, 5, 3]), &o), &["`g`", "[2, 5, 3, 8]"]);
    let bad_state = LinearState { kv: Tensor::zeros([2, 3, 8, 5], DType::F32, &Device::Cpu).unwrap(), z: None };
    expect_err(
        linear_attn(&q, &q, &v, &AttnOptions { initial_state: Some(&bad_state), ..o }),
        &["initial_state.kv", "[2, 3, 8, 5]", "[2, 3, 8, 4]"],
    );
    let w = t(&mut r, &[3, 7, 4]);
    expect_err(linear_attn(&q, &q, &v, &AttnOptions { q_feature_map: Some(&w), ..o }), &["q_feature_map", "[3, 7, 4]"]);
    let wq = t(&mut r, &[3, 8, 3]);
    expect_err(
        linear_attn(&q, &q, &v, &AttnOptions { q_feature_map: Some(&wq), ..o }),
        &["mapped query dim 6", "key dim 8"],
    );
    expect_err(hedgehog_feature_map(&q, &w), &["weight", "[3, 7, 4]"]);
}

#[test]
fn head_dims_chunk_sizes_and_cu_seqlens_are_checked() {
    let mut r = Rng::new(2);
    let o = AttnOptions::default();
    let big = t(&mut r, &[1, 2, 1, 257]);
    expect_err(linear_attn(&big, &big, &t(&mut r, &[1, 2, 1, 4]), &o), &["K = 257", "1..=256"]);
    let q = t(&mut r, &[1, 6, 1, 4]);
    expect_err(linear_attn(&q, &q, &t(&mut r, &[1, 6, 1, 300]), &o), &["V = 300"]);
    expect_err(linear_attn(&q, &q, &q, &AttnOptions { chunk_size: 48, ..o }), &["chunk size 48", "[16, 32, 64]"]);
    expect_err(linear_attn(&q, &q, &q, &AttnOptions { cu_seqlens: Some(&[0, 4, 3, 6]), ..o }), &["non-decreasing"]);
    expect_err(linear_attn(&q, &q, &q, &AttnOptions { cu_seqlens: Some(&[0, 5]), ..o }), &["end at T = 6"]);
    let q2 = t(&mut r, &[2, 6, 1, 4]);
    expect_err(linear_attn(&q2, &q2, &q2, &AttnOptions { cu_seqlens: Some(&[0, 6]), ..o }), &["batch size 1"]);
    expect_err(linear_attn(&q, &q, &q, &AttnOptions { scale: Some(f32::NAN), ..o }), &["scale"]);
    expect_err(linear_attn(&q, &q, &q, &AttnOptions { eps: -1.0, ..o }), &["eps"]);
}

/// Inf or NaN anywhere (first, middle, last element, the last token of a whole block;
/// head dims that are and are not a multiple of 16, so the AVX-512 kernel reads rows
/// both in place and through copies; a partial last block; several heads and
/// sequences, with and without the normalizer) is found and named with its flat index,
/// whichever CPU kernel runs.
#[test]
fn non_finite_inputs_are_found_everywhere() {
    let mut r = Rng::new(11);
    for dim in [20usize, 32] {
        let shape = [2usize, 37, 3, dim];
        let n: usize = shape.iter().product();
        let good = t(&mut r, &shape);
        let g = Tensor::from_vec(vec![-0.1f32; 2 * 37 * 3], [2, 37, 3]).unwrap();
        let end_of_block = ((37 + 15) * 3 + 2) * dim + dim - 1; // sequence 1, token 15, head 2
        for index in [0, n / 2 + 7, end_of_block, n - 1] {
            for bad_value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut vals = good.to_f32_vec().unwrap();
                vals[index] = bad_value;
                let bad = Tensor::from_vec(vals, shape).unwrap();
                let at = format!("index {index}");
                for normalize in [false, true] {
                    let o = AttnOptions { normalize, ..AttnOptions::default() };
                    expect_err(linear_attn(&bad, &good, &good, &o), &["`q`", &at]);
                    expect_err(simple_gla(&good, &bad, &good, &g, &o), &["`k`", &at]);
                    expect_err(simple_gla(&good, &good, &bad, &g, &o), &["`v`", &at]);
                }
            }
        }
    }
}

/// Finite inputs whose outputs overflow are not an error: the AVX-512 kernel's output
/// probe fires, the input scan finds nothing, and the infinite outputs are returned.
#[test]
fn outputs_that_overflow_are_returned() {
    let shape = [1usize, 40, 2, 32];
    let big = Tensor::from_vec(vec![3.0e18f32; shape.iter().product()], shape).unwrap();
    let out = linear_attn(&big, &big, &big, &AttnOptions::default()).unwrap();
    let values = out.output.to_f32_vec().unwrap();
    assert!(values.iter().all(|x| *x == f32::INFINITY), "every output overflows to +inf");
}

#[test]
fn non_finite_inputs_are_named() {
    let mut r = Rng::new(3);
    let q = t(&mut r, &[1, 4, 1, 4]);
    let mut vals = q.to_f32_vec().unwrap();
    vals[5] = f32::NAN;
    let bad = Tensor::from_vec(vals.clone(), [1, 4, 1, 4]).unwrap();
    let o = AttnOptions::default();
    expect_err(linear_attn(&bad, &q, &q, &o), &["`q`", "index 5"]);
    expect_err(linear_attn(&q, &bad, &q, &o), &["`k`"]);
    expect_err(linear_attn(&q, &q, &bad, &o), &["`v`"]);
    expect_err(gla(&q, &q, &q, &bad, &o), &["`g`"]);
    let g = Tensor::from_vec(vec![0.0f32, f32::NEG_INFINITY, 0.0, 0.0], [1, 4, 1]).unwrap();
    expect_err(simple_gla(&q, &q, &q, &g, &o), &["`g`", "index 1"]);
    let st = LinearState { kv: Tensor::from_vec(vec![f32::INFINITY; 16], [1, 1, 4, 4]).unwrap(), z: None };
    expect_err(linear_attn(&q, &q, &q, &AttnOptions { initial_state: Some(&st), ..o }), &["initial_state.kv"]);
    let w = Tensor::from_vec(vals[..8].to_vec(), [1, 4, 2]).unwrap();
    let mut wv = w.to_f32_vec().unwrap();
    wv[0] = f32::NAN;
    let w = Tensor::from_vec(wv, [1, 4, 2]).unwrap();
    expect_err(hedgehog_feature_map(&q, &w), &["weight"]);
    expect_err(linear_attn(&q, &q, &q, &AttnOptions { k_feature_map: Some(&w), ..o }), &["k_feature_map"]);
}

#[test]
fn dtype_and_state_mismatches() {
    let mut r = Rng::new(4);
    let q = t(&mut r, &[1, 4, 1, 4]);
    let o = AttnOptions::default();
    let qh = q.to_dtype(DType::BF16).unwrap();
    expect_err(linear_attn(&qh, &q, &q, &o), &["share a dtype", "bf16", "f32"]);
    let qi = Tensor::from_vec(vec![1i32; 16], [1, 4, 1, 4]).unwrap();
    expect_err(linear_attn(&qi, &qi, &qi, &o), &["i32"]);
    let z = Tensor::zeros([1, 1, 4], DType::F32, &Device::Cpu).unwrap();
    let st = LinearState { kv: Tensor::zeros([1, 1, 4, 4], DType::F32, &Device::Cpu).unwrap(), z: Some(z) };
    expect_err(linear_attn(&q, &q, &q, &AttnOptions { initial_state: Some(&st), ..o }), &["normalize is off"]);
    let kv16 = LinearState { kv: Tensor::zeros([1, 1, 4, 4], DType::F16, &Device::Cpu).unwrap(), z: None };
    expect_err(
        linear_attn(&q, &q, &q, &AttnOptions { initial_state: Some(&kv16), ..o }),
        &["initial_state.kv must be f32"],
    );
    // Decode steps.
    let q3 = t(&mut r, &[1, 1, 4]);
    expect_err(linear_attn_step(&q, &q3, &q3, None, &o), &["`q`", "[N, H, K]", "[1, 4, 1, 4]"]);
    expect_err(linear_attn_step(&q3, &q3, &q3, None, &AttnOptions { cu_seqlens: Some(&[0, 1]), ..o }), &["cu_seqlens"]);
}

#[test]
fn window_errors() {
    let mut r = Rng::new(5);
    let q = t(&mut r, &[1, 6, 2, 4]);
    let f = t(&mut r, &[2]);
    let o = WindowOptions::default();
    expect_err(window_linear(&q, &q, &q, &t(&mut r, &[3]), &o), &["window_factor", "[3]", "[2]"]);
    expect_err(window_linear(&q, &q, &q, &f, &WindowOptions { window: 0, ..o }), &["window 0"]);
    let nan = Tensor::from_vec(vec![f32::NAN, 0.0], [2]).unwrap();
    expect_err(window_linear(&q, &q, &q, &nan, &o), &["window_factor"]);
    let state = WindowState::empty(1, 2, 4, 4, 4, 8).unwrap();
    let q3 = t(&mut r, &[1, 2, 4]);
    expect_err(window_linear_step(&q3, &q3, &q3, &f, &state, &o), &["state.keys", "[1, 2, 8, 4]", "[1, 2, 64, 4]"]);
    let mut bad = WindowState::empty(1, 2, 4, 4, 4, 64).unwrap();
    bad.tokens_seen = Tensor::from_vec(vec![-3i64], [1]).unwrap();
    expect_err(window_linear_step(&q3, &q3, &q3, &f, &bad, &o), &["tokens_seen[0] = -3"]);
    bad.tokens_seen = Tensor::from_vec(vec![1i32], [1]).unwrap();
    expect_err(window_linear_step(&q3, &q3, &q3, &f, &bad, &o), &["tokens_seen"]);
}

#[test]
fn run_named_errors() {
    let mut r = Rng::new(6);
    let q = t(&mut r, &[1, 4, 1, 4]);
    let cpu = Device::Cpu;
    let mut m = BTreeMap::from([("q".to_string(), q.clone()), ("k".to_string(), q.clone())]);
    expect_err(run_named("linear_attn", &m, &cpu), &["missing input tensor `v`"]);
    m.insert("v".into(), q.clone());
    expect_err(run_named("nope", &m, &cpu), &["unknown attention op `nope`"]);
    m.insert("qq".into(), q.clone());
    expect_err(run_named("linear_attn", &m, &cpu), &["unknown input `qq`"]);
    m.remove("qq");
    m.insert("chunk_size".into(), Tensor::from_vec(vec![1.5f32], [1]).unwrap());
    expect_err(run_named("linear_attn", &m, &cpu), &["chunk_size", "1.5"]);
    m.insert("chunk_size".into(), Tensor::from_vec(vec![16i64, 32], [2]).unwrap());
    expect_err(run_named("linear_attn", &m, &cpu), &["chunk_size", "0-d"]);
    m.remove("chunk_size");
    m.insert("cu_seqlens".into(), Tensor::from_vec(vec![0.0f32, 4.0], [2]).unwrap());
    expect_err(run_named("linear_attn", &m, &cpu), &["cu_seqlens", "i32 or i64"]);
    m.remove("cu_seqlens");
    expect_err(run_named("simple_gla", &m, &cpu), &["missing input tensor `g`"]);
}
