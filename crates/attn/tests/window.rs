//! Window hybrid: fast == quadratic f64 reference, prefill + decode == full sequence,
//! varlen == each sequence alone, the window-only and linear-only limits.

mod common;

use common::{Rng, assert_close, f32s, slice_tokens, token};
use linattn_attn::{WindowOptions, WindowState, window_linear, window_linear_reference, window_linear_step};
use linattn_tensor::{DType, Tensor};

struct Inputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    wq: Tensor,
    wk: Tensor,
    factor: Tensor,
}

fn inputs(b: usize, t: usize, h: usize, d: usize, f: usize, vd: usize, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    Inputs {
        q: rng.tensor(&[b, t, h, d], 2.0, DType::F32),
        k: rng.tensor(&[b, t, h, d], 2.0, DType::F32),
        v: rng.tensor(&[b, t, h, vd], 1.0, DType::F32),
        wq: rng.tensor(&[h, d, f], 0.5, DType::F32),
        wk: rng.tensor(&[h, d, f], 0.5, DType::F32),
        factor: rng.tensor(&[h], 2.0, DType::F32),
    }
}

#[test]
fn fast_matches_reference() {
    for (t, window, chunk) in [(1, 64, 64), (63, 16, 16), (65, 64, 64), (200, 64, 32), (150, 7, 16), (90, 100, 64)] {
        let x = inputs(2, t, 2, 24, 12, 20, t as u64);
        let opts = WindowOptions {
            window,
            chunk_size: chunk,
            q_feature_map: Some(&x.wq),
            k_feature_map: Some(&x.wk),
            ..Default::default()
        };
        let want = window_linear_reference(&x.q, &x.k, &x.v, &x.factor, &opts).unwrap();
        let got = window_linear(&x.q, &x.k, &x.v, &x.factor, &opts).unwrap();
        let what = format!("T={t} W={window} C={chunk}");
        assert_close(&format!("{what} output"), &want.output, &got.output, 1e-5);
        assert_close(&format!("{what} S"), &want.state.linear.kv, &got.state.linear.kv, 1e-5);
        assert_close(
            &format!("{what} z"),
            want.state.linear.z.as_ref().unwrap(),
            got.state.linear.z.as_ref().unwrap(),
            1e-5,
        );
        assert_eq!(f32s(&want.state.keys), f32s(&got.state.keys));
        assert_eq!(got.state.tokens_seen.to_vec::<i64>().unwrap(), vec![t as i64; 2]);
    }
}

#[test]
fn short_sequences_are_pure_softmax() {
    // T <= W: no key is older than the window, so y is softmax attention over all keys
    // (the factor cancels). Checked against a direct softmax.
    let x = inputs(1, 10, 1, 8, 4, 3, 2);
    let got = window_linear(&x.q, &x.k, &x.v, &x.factor, &WindowOptions { window: 10, ..Default::default() }).unwrap();
    let (q, k, v, o) = (f32s(&x.q), f32s(&x.k), f32s(&x.v), f32s(&got.output));
    for n in 0..10 {
        let s: Vec<f64> =
            (0..=n).map(|j| (0..8).map(|i| (q[n * 8 + i] * k[j * 8 + i]) as f64).sum::<f64>() / 8f64.sqrt()).collect();
        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        for c in 0..3 {
            let want: f64 = (0..=n).map(|j| e[j] * v[j * 3 + c] as f64).sum::<f64>() / sum;
            assert!((want - o[n * 3 + c] as f64).abs() < 1e-5, "n={n} c={c}: {want} vs {}", o[n * 3 + c]);
        }
    }
    assert!(f32s(&got.state.linear.kv).iter().all(|&x| x == 0.0));
}

#[test]
fn prefill_then_decode_equals_full_sequence() {
    let (b, t, h, d, f, vd, window, split) = (2, 50, 2, 16, 8, 12, 16, 20);
    let x = inputs(b, t, h, d, f, vd, 17);
    let opts = WindowOptions {
        window,
        chunk_size: 16,
        q_feature_map: Some(&x.wq),
        k_feature_map: Some(&x.wk),
        ..Default::default()
    };
    let full = window_linear(&x.q, &x.k, &x.v, &x.factor, &opts).unwrap();
    let head = window_linear(
        &slice_tokens(&x.q, 0, split),
        &slice_tokens(&x.k, 0, split),
        &slice_tokens(&x.v, 0, split),
        &x.factor,
        &opts,
    )
    .unwrap();
    let mut state = head.state;
    for i in split..t {
        let step =
            window_linear_step(&token(&x.q, i), &token(&x.k, i), &token(&x.v, i), &x.factor, &state, &opts).unwrap();
        assert_close(&format!("step {i}"), &token(&full.output, i), &step.output, 1e-5);
        state = step.state;
    }
    assert_close("S", &full.state.linear.kv, &state.linear.kv, 1e-5);
    assert_close("z", full.state.linear.z.as_ref().unwrap(), state.linear.z.as_ref().unwrap(), 1e-5);
    assert_eq!(f32s(&full.state.keys), f32s(&state.keys));
    assert_eq!(f32s(&full.state.values), f32s(&state.values));

    // Decoding every token from an empty state gives the same outputs as prefill.
    let mut state = WindowState::empty(b, h, d, 2 * f, vd, window).unwrap();
    for i in 0..t {
        let step =
            window_linear_step(&token(&x.q, i), &token(&x.k, i), &token(&x.v, i), &x.factor, &state, &opts).unwrap();
        assert_close(&format!("from empty, step {i}"), &token(&full.output, i), &step.output, 1e-5);
        state = step.state;
    }
}

#[test]
fn varlen_equals_each_sequence_alone() {
    let cu = [0usize, 5, 5, 80, 120];
    let x = inputs(1, 120, 2, 16, 8, 8, 23);
    let opts = WindowOptions {
        window: 32,
        cu_seqlens: Some(&cu),
        q_feature_map: Some(&x.wq),
        k_feature_map: Some(&x.wk),
        ..Default::default()
    };
    let packed = window_linear(&x.q, &x.k, &x.v, &x.factor, &opts).unwrap();
    let alone_opts = WindowOptions { cu_seqlens: None, ..opts };
    for n in 0..cu.len() - 1 {
        let (s, e) = (cu[n], cu[n + 1]);
        if s == e {
            continue;
        }
        let alone = window_linear(
            &slice_tokens(&x.q, s, e),
            &slice_tokens(&x.k, s, e),
            &slice_tokens(&x.v, s, e),
            &x.factor,
            &alone_opts,
        )
        .unwrap();
        assert_close(&format!("seq {n}"), &alone.output, &slice_tokens(&packed.output, s, e), 1e-6);
    }
    assert_eq!(packed.state.tokens_seen.to_vec::<i64>().unwrap(), vec![5, 0, 75, 40]);
}
