//! Chunked backward passes vs the reference backward passes (f32 vs f64 accumulation),
//! and bad input.
//!
//! Shapes: T in {1, 63, 64, 65, 200}, chunks 16 / 32 / 64, K != V, varlen with lengths
//! not aligned to chunks, initial states, strong gates (`logsigmoid(x) / 0.1` over a
//! few hundred tokens). Every gradient must agree with the reference within a relative
//! RMS error `||ref - chunked|| / ||ref||` of 1e-5 (2e-5 for the gate gradients, whose
//! chunk-local form subtracts two sums) and be finite.

use linattn_attn::backward::hedgehog::{self, HedgehogLinearAttnInputs};
use linattn_attn::backward::window::{self, WindowLinearBackwardInputs};
use linattn_attn::backward::{GatedGrads, Upstream, gla, linear_attn, simple_gla};
use linattn_attn::layout::AttnDims;
use linattn_tensor::Error;

mod backward_common;
use backward_common::{Rng, dims};

/// Fails with the max abs error, its index and the first pairs when the relative RMS
/// error of `got` against `want` exceeds `tol` (and the absolute RMS error exceeds
/// 1e-9, for gradients that vanish exactly, such as a window factor that cancels) or
/// `got` is not finite.
fn assert_close(what: &str, want: &[f32], got: &[f32], tol: f64) {
    assert_eq!(want.len(), got.len(), "{what}: lengths");
    if let Some(i) = got.iter().position(|x| !x.is_finite()) {
        panic!("{what}: non-finite value {} at {i}", got[i]);
    }
    let (mut num, mut den, mut worst, mut at) = (0.0f64, 0.0f64, 0.0f64, 0);
    for (i, (&w, &g)) in want.iter().zip(got).enumerate() {
        let e = (w as f64 - g as f64).abs();
        num += e * e;
        den += (w as f64).powi(2);
        if e > worst {
            (worst, at) = (e, i);
        }
    }
    let rel = (num / den.max(1e-300)).sqrt();
    assert!(
        rel <= tol || (num / want.len().max(1) as f64).sqrt() < 1e-9,
        "{what}: relative RMS error {rel:e} > {tol:e}; max abs error {worst:e} at {at} ({} vs {}); first pairs {:?}",
        want[at],
        got[at],
        want.iter().zip(got).take(4).collect::<Vec<_>>()
    );
}

fn assert_grads(what: &str, r: &GatedGrads, c: &GatedGrads) {
    assert_close(&format!("{what} dq"), &r.dq, &c.dq, 1e-5);
    assert_close(&format!("{what} dk"), &r.dk, &c.dk, 1e-5);
    assert_close(&format!("{what} dv"), &r.dv, &c.dv, 1e-5);
    assert_close(&format!("{what} dg"), &r.dg, &c.dg, 2e-5);
    assert_close(&format!("{what} dh0"), &r.d_initial_state, &c.d_initial_state, 1e-5);
    assert_eq!(r.d_initial_normalizer.is_some(), c.d_initial_normalizer.is_some(), "{what}");
    if let (Some(a), Some(b)) = (&r.d_initial_normalizer, &c.d_initial_normalizer) {
        assert_close(&format!("{what} dz0"), a, b, 1e-5);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Linear,
    LinearNormalized,
    SimpleGla,
    Gla,
}

/// Runs `op` on random inputs through both backward passes and compares them.
fn compare_op(op: Op, d: AttnDims, cu: Option<&[usize]>, chunk: usize, temperature: f32, seed: u64) {
    let mut rng = Rng(seed);
    let n_seq = cu.map_or(d.batch, |c| c.len() - 1);
    let tok = d.batch * d.seq_len * d.heads;
    let normalize = op == Op::LinearNormalized;
    let (lo, hi) = if normalize { (0.05, 1.0) } else { (-1.0, 1.0) };
    let q = rng.vec(tok * d.key_dim, lo, hi);
    let k = rng.vec(tok * d.key_dim, lo, hi);
    let v = rng.vec(tok * d.value_dim, -1.0, 1.0);
    let gates = match op {
        Op::SimpleGla => rng.log_gates(tok, temperature),
        _ => rng.log_gates(tok * d.key_dim, temperature),
    };
    let h0 = rng.vec(n_seq * d.state_len(), -1.0, 1.0);
    let z0 = rng.vec(n_seq * d.heads * d.key_dim, 0.0, 1.0);
    let d_out = rng.vec(tok * d.value_dim, -1.0, 1.0);
    let dht = rng.vec(n_seq * d.state_len(), -1.0, 1.0);
    let dzt = rng.vec(n_seq * d.heads * d.key_dim, -1.0, 1.0);
    let mut up = Upstream::output(&d_out).with_final_state(&dht);
    if normalize {
        up = up.with_final_normalizer(&dzt);
    }
    let what = format!("{op:?} {d:?} cu={cu:?} chunk={chunk} temperature={temperature}");
    let (r, c) = match op {
        Op::Linear | Op::LinearNormalized => {
            let x = linear_attn::LinearAttnBackwardInputs {
                dims: d,
                q: &q,
                k: &k,
                v: &v,
                initial_state: Some(&h0),
                cu_seqlens: cu,
                scale: None,
                normalize: normalize.then_some(linear_attn::DEFAULT_NORM_EPS),
                initial_normalizer: normalize.then_some(&z0[..]),
            };
            let wrap = |g: linear_attn::LinearAttnGrads| GatedGrads {
                dq: g.dq,
                dk: g.dk,
                dv: g.dv,
                dg: Vec::new(),
                d_initial_state: g.d_initial_state,
                d_initial_normalizer: g.d_initial_normalizer,
            };
            (wrap(linear_attn::reference(&x, &up).unwrap()), wrap(linear_attn::chunked(&x, &up, chunk).unwrap()))
        }
        Op::SimpleGla => {
            let x = simple_gla::SimpleGlaBackwardInputs {
                dims: d,
                q: &q,
                k: &k,
                v: &v,
                g: &gates,
                initial_state: Some(&h0),
                cu_seqlens: cu,
                scale: None,
                normalize: None,
                initial_normalizer: None,
            };
            (simple_gla::reference(&x, &up).unwrap(), simple_gla::chunked(&x, &up, chunk).unwrap())
        }
        Op::Gla => {
            let x = gla::GlaBackwardInputs {
                dims: d,
                q: &q,
                k: &k,
                v: &v,
                g: &gates,
                initial_state: Some(&h0),
                cu_seqlens: cu,
                scale: None,
                normalize: None,
                initial_normalizer: None,
            };
            (gla::reference(&x, &up).unwrap(), gla::chunked(&x, &up, chunk).unwrap())
        }
    };
    assert_grads(&what, &r, &c);
}

#[test]
fn chunked_backward_matches_reference_over_lengths_and_chunks() {
    let mut seed = 1u64;
    for op in [Op::Linear, Op::LinearNormalized, Op::SimpleGla, Op::Gla] {
        for t in [1usize, 63, 64, 65, 200] {
            for chunk in [16usize, 32, 64] {
                if t == 200 && chunk != 64 && op != Op::Gla {
                    continue; // T = 200 with every chunk is covered by GLA; keep the run short.
                }
                seed += 1;
                compare_op(op, dims(2, t, 2, 8, 6), None, chunk, 1.0, seed);
            }
        }
    }
}

#[test]
fn chunked_backward_matches_reference_on_varlen() {
    // Lengths 5, 0, 70, 33, 1: none aligned to the chunk, one empty, one single token.
    let cu = [0usize, 5, 5, 75, 108, 109];
    for (i, op) in [Op::Linear, Op::LinearNormalized, Op::SimpleGla, Op::Gla].into_iter().enumerate() {
        for chunk in [16usize, 64] {
            compare_op(op, dims(1, 109, 3, 5, 7), Some(&cu), chunk, 1.0, 100 + i as u64 * 7 + chunk as u64);
        }
    }
}

#[test]
fn chunked_backward_is_finite_and_exact_under_strong_gates() {
    // logsigmoid(x) / 0.1: cumulative log-gates reach about -1500 over 300 tokens.
    for (op, chunk) in [(Op::SimpleGla, 64usize), (Op::Gla, 64), (Op::SimpleGla, 16), (Op::Gla, 32)] {
        compare_op(op, dims(1, 300, 1, 6, 4), None, chunk, 0.1, 7 + chunk as u64);
    }
    let cu = [0usize, 130, 300];
    compare_op(Op::Gla, dims(1, 300, 2, 4, 3), Some(&cu), 64, 0.1, 99);
}

#[test]
fn hedgehog_chunked_matches_reference() {
    let mut rng = Rng(5);
    let (d, f) = (dims(1, 150, 2, 6, 5), 4usize);
    let cu = [0usize, 70, 150];
    let tok = 150 * 2;
    let q = rng.vec(tok * 6, -1.0, 1.0);
    let k = rng.vec(tok * 6, -1.0, 1.0);
    let v = rng.vec(tok * 5, -1.0, 1.0);
    let wq = rng.vec(2 * 6 * f, -1.0, 1.0);
    let wk = rng.vec(2 * 6 * f, -1.0, 1.0);
    let h0 = rng.vec(2 * 2 * 2 * f * 5, -1.0, 1.0);
    let d_out = rng.vec(tok * 5, -1.0, 1.0);
    for normalize in [None, Some(1e-6f32)] {
        let x = HedgehogLinearAttnInputs {
            dims: d,
            q: &q,
            k: &k,
            v: &v,
            feature_q: &wq,
            feature_k: &wk,
            feature_dim: f,
            initial_state: Some(&h0),
            cu_seqlens: Some(&cu),
            scale: None,
            normalize,
            initial_normalizer: None,
        };
        let up = Upstream::output(&d_out);
        let r = hedgehog::linear_attn_reference(&x, &up).unwrap();
        let c = hedgehog::linear_attn_chunked(&x, &up, 32).unwrap();
        let what = format!("hedgehog normalize={normalize:?}");
        assert_close(&format!("{what} dq"), &r.dq, &c.dq, 1e-5);
        assert_close(&format!("{what} dk"), &r.dk, &c.dk, 1e-5);
        assert_close(&format!("{what} dv"), &r.dv, &c.dv, 1e-5);
        assert_close(&format!("{what} dWq"), &r.d_feature_q, &c.d_feature_q, 1e-5);
        assert_close(&format!("{what} dWk"), &r.d_feature_k, &c.d_feature_k, 1e-5);
        assert_close(&format!("{what} dh0"), &r.d_initial_state, &c.d_initial_state, 1e-5);
    }
}

#[test]
fn window_chunked_matches_reference() {
    let cu = [0usize, 37, 37, 140];
    for (seed, d, cu, window, chunk) in [
        (1u64, dims(2, 65, 2, 5, 3), None, 4usize, 16usize),
        (2, dims(1, 140, 2, 4, 6), Some(&cu[..]), 64, 64),
        (3, dims(1, 140, 1, 4, 6), Some(&cu[..]), 20, 32),
        (4, dims(1, 1, 1, 3, 2), None, 64, 64),
    ] {
        let mut rng = Rng(seed);
        let f = 3usize;
        let tok = d.batch * d.seq_len * d.heads;
        let (h, kd, vd) = (d.heads, d.key_dim, d.value_dim);
        let q = rng.vec(tok * kd, -1.5, 1.5);
        let k = rng.vec(tok * kd, -1.5, 1.5);
        let v = rng.vec(tok * vd, -1.0, 1.0);
        let wq = rng.vec(h * kd * f, -1.0, 1.0);
        let wk = rng.vec(h * kd * f, -1.0, 1.0);
        let logit = rng.vec(h, -3.0, 0.0);
        let d_out = rng.vec(tok * vd, -1.0, 1.0);
        let x = WindowLinearBackwardInputs {
            dims: d,
            q: &q,
            k: &k,
            v: &v,
            feature_q: &wq,
            feature_k: &wk,
            feature_dim: f,
            window_logit: &logit,
            window,
            cu_seqlens: cu,
            scale: None,
        };
        let r = window::reference(&x, &d_out).unwrap();
        let c = window::chunked(&x, &d_out, chunk).unwrap();
        let what = format!("window W={window} chunk={chunk} {d:?}");
        assert_close(&format!("{what} dq"), &r.dq, &c.dq, 1e-5);
        assert_close(&format!("{what} dk"), &r.dk, &c.dk, 1e-5);
        assert_close(&format!("{what} dv"), &r.dv, &c.dv, 1e-5);
        assert_close(&format!("{what} dWq"), &r.d_feature_q, &c.d_feature_q, 1e-5);
        assert_close(&format!("{what} dWk"), &r.d_feature_k, &c.d_feature_k, 1e-5);
        assert_close(&format!("{what} dw"), &r.d_window_logit, &c.d_window_logit, 1e-5);
    }
}

fn err_text<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.expect_err("bad input must be an Err").to_string()
}

#[test]
fn bad_input_is_an_error_naming_the_problem() {
    let d = dims(1, 4, 1, 2, 3);
    let (q, k, v, g, d_out) = (vec![0.5f32; 8], vec![0.5f32; 8], vec![0.5f32; 12], vec![-0.1f32; 4], vec![1.0f32; 12]);
    let base = simple_gla::SimpleGlaBackwardInputs {
        dims: d,
        q: &q,
        k: &k,
        v: &v,
        g: &g,
        initial_state: None,
        cu_seqlens: None,
        scale: None,
        normalize: None,
        initial_normalizer: None,
    };
    let up = Upstream::output(&d_out);
    assert!(simple_gla::chunked(&base, &up, 16).is_ok());

    let short = vec![0.5f32; 7];
    let e = err_text(simple_gla::reference(&simple_gla::SimpleGlaBackwardInputs { q: &short, ..base }, &up));
    assert!(e.contains("`q`") && e.contains('8') && e.contains('7'), "{e}");
    let e = err_text(simple_gla::chunked(&base, &Upstream::output(&d_out[..11]), 16));
    assert!(e.contains("d_out"), "{e}");
    let mut nan = v.clone();
    nan[5] = f32::NAN;
    let e = err_text(simple_gla::chunked(&simple_gla::SimpleGlaBackwardInputs { v: &nan, ..base }, &up, 16));
    assert!(e.contains("`v`") && e.contains("index 5"), "{e}");
    let e = err_text(simple_gla::chunked(&base, &up, 0));
    assert!(e.contains("chunk_size"), "{e}");
    let e = err_text(simple_gla::chunked(&base, &up.with_final_state(&[0.0; 5]), 16));
    assert!(e.contains("d_final_state"), "{e}");
    let z = [0.0f32; 2];
    let e = err_text(simple_gla::reference(
        &simple_gla::SimpleGlaBackwardInputs { initial_normalizer: Some(&z), ..base },
        &up,
    ));
    assert!(e.contains("normalize"), "{e}");
    let e = err_text(simple_gla::reference(
        &simple_gla::SimpleGlaBackwardInputs { cu_seqlens: Some(&[0, 5]), ..base },
        &up,
    ));
    assert!(e.contains("cu_seqlens"), "{e}");
    let e = err_text(simple_gla::reference(
        &simple_gla::SimpleGlaBackwardInputs { scale: Some(f32::INFINITY), ..base },
        &up,
    ));
    assert!(e.contains("scale"), "{e}");
    let e = err_text(gla::chunked(
        &gla::GlaBackwardInputs {
            dims: d,
            q: &q,
            k: &k,
            v: &v,
            g: &g,
            initial_state: None,
            cu_seqlens: None,
            scale: None,
            normalize: None,
            initial_normalizer: None,
        },
        &up,
        16,
    ));
    assert!(e.contains("`g`") && e.contains("[B, T, H, K]"), "{e}");
    let e = err_text(linear_attn::chunked(
        &linear_attn::LinearAttnBackwardInputs {
            dims: AttnDims { key_dim: 0, ..d },
            q: &q,
            k: &k,
            v: &v,
            initial_state: None,
            cu_seqlens: None,
            scale: None,
            normalize: None,
            initial_normalizer: None,
        },
        &up,
        16,
    ));
    assert!(e.contains("key_dim"), "{e}");

    let (w, logit) = (vec![0.1f32; 2 * 3], vec![0.0f32; 1]);
    let win = WindowLinearBackwardInputs {
        dims: d,
        q: &q,
        k: &k,
        v: &v,
        feature_q: &w,
        feature_k: &w,
        feature_dim: 3,
        window_logit: &logit,
        window: 2,
        cu_seqlens: None,
        scale: None,
    };
    assert!(window::chunked(&win, &d_out, 16).is_ok());
    let e = err_text(window::chunked(&WindowLinearBackwardInputs { window: 0, ..win }, &d_out, 16));
    assert!(e.contains("window"), "{e}");
    let e = err_text(window::reference(&WindowLinearBackwardInputs { feature_q: &w[..5], ..win }, &d_out));
    assert!(e.contains("feature_q"), "{e}");
    let e = err_text(window::reference(&WindowLinearBackwardInputs { window_logit: &[], ..win }, &d_out));
    assert!(e.contains("window_logit"), "{e}");
}
