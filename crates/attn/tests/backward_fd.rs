//! Reference backward passes vs central finite differences of the naive f64 forwards
//! in `linattn_attn::backward::oracle`, on tiny shapes (T <= 10, K, V <= 5).
//!
//! The loss is `L = <o, dO> + <S_T, dS_T> (+ <z_T, dz_T>)` with random upstream
//! gradients; each input element is perturbed by +-h (h = 1e-5) in f64 and the
//! difference quotient compared with the analytic gradient:
//! `max |fd - grad| <= 1e-4 * max |fd|` per input tensor.

use linattn_attn::backward::hedgehog::{self, FeatureMapDims, HedgehogLinearAttnInputs};
use linattn_attn::backward::oracle::{self, OracleGate, OracleGated};
use linattn_attn::backward::window::{self, WindowLinearBackwardInputs};
use linattn_attn::backward::{Upstream, gla, linear_attn, simple_gla};
use linattn_attn::layout::AttnDims;

mod backward_common;
use backward_common::{Rng, dims};

/// Deterministic xorshift generator (tests need no external RNG).
fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&a| a as f64).collect()
}

fn dot(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, &y)| x * y as f64).sum()
}

/// Checks `grad` against central differences of `loss` around `base`.
fn fd_check(what: &str, base: &[f32], grad: &[f32], loss: impl Fn(&[f64]) -> f64) {
    assert_eq!(base.len(), grad.len(), "{what}: gradient length");
    let h = 1e-5;
    let mut x = f64s(base);
    let mut fd = vec![0.0f64; base.len()];
    for i in 0..x.len() {
        let x0 = x[i];
        x[i] = x0 + h;
        let up = loss(&x);
        x[i] = x0 - h;
        let down = loss(&x);
        x[i] = x0;
        fd[i] = (up - down) / (2.0 * h);
    }
    let scale = fd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0.0f64, 0);
    for (i, (&f, &g)) in fd.iter().zip(grad).enumerate() {
        let e = (f - g as f64).abs();
        if e > worst {
            (worst, at) = (e, i);
        }
    }
    assert!(scale > 1e-6, "{what}: finite differences vanish (max {scale:e}), the check would be empty");
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max abs error {worst:e} at index {at} (fd {}, grad {}), max |fd| {scale:e}",
        fd[at],
        grad[at]
    );
}

/// One gated configuration checked end to end.
struct GatedCase {
    dims: AttnDims,
    cu: Option<Vec<usize>>,
    gate: &'static str,
    normalize: bool,
    with_state: bool,
}

fn run_gated_case(c: &GatedCase, seed: u64) {
    let mut rng = Rng(seed);
    let d = c.dims;
    let n_seq = c.cu.as_ref().map_or(d.batch, |cu| cu.len() - 1);
    let tok = d.batch * d.seq_len * d.heads;
    // Positive q, k keep the normalizer away from zero.
    let (lo, hi) = if c.normalize { (0.1, 1.0) } else { (-1.0, 1.0) };
    let q = rng.vec(tok * d.key_dim, lo, hi);
    let k = rng.vec(tok * d.key_dim, lo, hi);
    let v = rng.vec(tok * d.value_dim, -1.0, 1.0);
    let g = match c.gate {
        "none" => Vec::new(),
        "scalar" => rng.log_gates(tok, 1.0),
        _ => rng.log_gates(tok * d.key_dim, 1.0),
    };
    let h0 = rng.vec(n_seq * d.state_len(), -0.5, 0.5);
    let z0 = rng.vec(n_seq * d.heads * d.key_dim, 0.1, 1.0);
    let d_out = rng.vec(tok * d.value_dim, -1.0, 1.0);
    let dht = rng.vec(n_seq * d.state_len(), -1.0, 1.0);
    let dzt = rng.vec(n_seq * d.heads * d.key_dim, -1.0, 1.0);
    let scale = 0.7f32;
    let eps = 1e-3f32;
    let cu = c.cu.as_deref();
    let h0o = c.with_state.then_some(&h0[..]);
    let z0o = (c.with_state && c.normalize).then_some(&z0[..]);
    let mut up = Upstream::output(&d_out).with_final_state(&dht);
    if c.normalize {
        up = up.with_final_normalizer(&dzt);
    }
    let norm = c.normalize.then_some(eps);

    let grads = match c.gate {
        "none" => {
            let x = linear_attn::LinearAttnBackwardInputs {
                dims: d,
                q: &q,
                k: &k,
                v: &v,
                initial_state: h0o,
                cu_seqlens: cu,
                scale: Some(scale),
                normalize: norm,
                initial_normalizer: z0o,
            };
            let r = linear_attn::reference(&x, &up).unwrap();
            (r.dq, r.dk, r.dv, Vec::new(), r.d_initial_state, r.d_initial_normalizer)
        }
        "scalar" => {
            let x = simple_gla::SimpleGlaBackwardInputs {
                dims: d,
                q: &q,
                k: &k,
                v: &v,
                g: &g,
                initial_state: h0o,
                cu_seqlens: cu,
                scale: Some(scale),
                normalize: norm,
                initial_normalizer: z0o,
            };
            let r = simple_gla::reference(&x, &up).unwrap();
            (r.dq, r.dk, r.dv, r.dg, r.d_initial_state, r.d_initial_normalizer)
        }
        _ => {
            let x = gla::GlaBackwardInputs {
                dims: d,
                q: &q,
                k: &k,
                v: &v,
                g: &g,
                initial_state: h0o,
                cu_seqlens: cu,
                scale: Some(scale),
                normalize: norm,
                initial_normalizer: z0o,
            };
            let r = gla::reference(&x, &up).unwrap();
            (r.dq, r.dk, r.dv, r.dg, r.d_initial_state, r.d_initial_normalizer)
        }
    };
    let (dq, dk, dv, dg, dh0, dz0) = grads;

    let (q64, k64, v64, g64, h064, z064) = (f64s(&q), f64s(&k), f64s(&v), f64s(&g), f64s(&h0), f64s(&z0));
    let loss = |q: &[f64], k: &[f64], v: &[f64], g: &[f64], h0: &[f64], z0: &[f64]| -> f64 {
        let gate = match c.gate {
            "none" => OracleGate::None,
            "scalar" => OracleGate::Scalar(g),
            _ => OracleGate::PerKey(g),
        };
        let o = oracle::gated_forward(&OracleGated {
            dims: d,
            q,
            k,
            v,
            gate,
            initial_state: c.with_state.then_some(h0),
            initial_normalizer: (c.with_state && c.normalize).then_some(z0),
            cu_seqlens: cu,
            scale: scale as f64,
            normalize: c.normalize.then_some(eps as f64),
        })
        .unwrap();
        dot(&o.out, &d_out) + dot(&o.final_state, &dht) + dot(&o.final_normalizer, &dzt)
    };
    let tag = format!("{} normalize={} state={}", c.gate, c.normalize, c.with_state);
    fd_check(&format!("{tag} dq"), &q, &dq, |x| loss(x, &k64, &v64, &g64, &h064, &z064));
    fd_check(&format!("{tag} dk"), &k, &dk, |x| loss(&q64, x, &v64, &g64, &h064, &z064));
    fd_check(&format!("{tag} dv"), &v, &dv, |x| loss(&q64, &k64, x, &g64, &h064, &z064));
    if c.gate != "none" {
        fd_check(&format!("{tag} dg"), &g, &dg, |x| loss(&q64, &k64, &v64, x, &h064, &z064));
    }
    if c.with_state {
        fd_check(&format!("{tag} dh0"), &h0, &dh0, |x| loss(&q64, &k64, &v64, &g64, x, &z064));
    }
    match (c.normalize && c.with_state, dz0) {
        (true, Some(dz0)) => fd_check(&format!("{tag} dz0"), &z0, &dz0, |x| loss(&q64, &k64, &v64, &g64, &h064, x)),
        (false, _) => {}
        (true, None) => panic!("{tag}: normalized call returned no normalizer gradient"),
    }
}

#[test]
fn gated_reference_backward_matches_finite_differences() {
    let cases = [
        GatedCase { dims: dims(2, 6, 2, 3, 4), cu: None, gate: "none", normalize: false, with_state: true },
        GatedCase {
            dims: dims(1, 9, 2, 4, 3),
            cu: Some(vec![0, 4, 9]),
            gate: "none",
            normalize: true,
            with_state: true,
        },
        GatedCase { dims: dims(2, 5, 1, 5, 2), cu: None, gate: "none", normalize: true, with_state: false },
        GatedCase { dims: dims(2, 7, 2, 3, 5), cu: None, gate: "scalar", normalize: false, with_state: true },
        GatedCase {
            dims: dims(1, 10, 2, 4, 3),
            cu: Some(vec![0, 3, 3, 10]),
            gate: "scalar",
            normalize: false,
            with_state: true,
        },
        GatedCase {
            dims: dims(1, 8, 1, 3, 4),
            cu: Some(vec![0, 5, 8]),
            gate: "scalar",
            normalize: true,
            with_state: true,
        },
        GatedCase { dims: dims(2, 6, 2, 4, 3), cu: None, gate: "key", normalize: false, with_state: true },
        GatedCase {
            dims: dims(1, 9, 1, 5, 4),
            cu: Some(vec![0, 2, 9]),
            gate: "key",
            normalize: false,
            with_state: false,
        },
        GatedCase { dims: dims(1, 7, 2, 3, 2), cu: None, gate: "key", normalize: true, with_state: true },
    ];
    for (i, c) in cases.iter().enumerate() {
        run_gated_case(c, 0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
    }
}

#[test]
fn hedgehog_feature_map_backward_matches_finite_differences() {
    let mut rng = Rng(11);
    let map = FeatureMapDims { tokens: 4, heads: 2, in_dim: 3, feature_dim: 5 };
    let x = rng.vec(4 * 2 * 3, -1.5, 1.5);
    let w = rng.vec(2 * 3 * 5, -1.0, 1.0);
    let dphi = rng.vec(4 * 2 * 10, -1.0, 1.0);
    let g = hedgehog::feature_map_backward(&map, &x, &w, &dphi).unwrap();
    let (x64, w64) = (f64s(&x), f64s(&w));
    let loss = |x: &[f64], w: &[f64]| dot(&oracle::feature_map(x, w, 2, 3, 5).unwrap(), &dphi);
    fd_check("phi dx", &x, &g.dx, |p| loss(p, &w64));
    fd_check("phi dW", &w, &g.dw, |p| loss(&x64, p));
    // The f32 forward agrees with the oracle.
    let phi = hedgehog::feature_map(&map, &x, &w).unwrap();
    for (a, b) in phi.iter().zip(oracle::feature_map(&x64, &w64, 2, 3, 5).unwrap()) {
        assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
    }
}

#[test]
fn hedgehog_linear_attn_backward_matches_finite_differences() {
    let mut rng = Rng(23);
    let (f, d) = (2usize, dims(1, 8, 2, 3, 3));
    let cu = vec![0usize, 5, 8];
    let tok = 8 * 2;
    let q = rng.vec(tok * 3, -1.0, 1.0);
    let k = rng.vec(tok * 3, -1.0, 1.0);
    let v = rng.vec(tok * 3, -1.0, 1.0);
    let wq = rng.vec(2 * 3 * f, -1.0, 1.0);
    let wk = rng.vec(2 * 3 * f, -1.0, 1.0);
    let d_out = rng.vec(tok * 3, -1.0, 1.0);
    let eps = 1e-3f32;
    let x = HedgehogLinearAttnInputs {
        dims: d,
        q: &q,
        k: &k,
        v: &v,
        feature_q: &wq,
        feature_k: &wk,
        feature_dim: f,
        initial_state: None,
        cu_seqlens: Some(&cu),
        scale: None,
        normalize: Some(eps),
        initial_normalizer: None,
    };
    let g = hedgehog::linear_attn_reference(&x, &Upstream::output(&d_out)).unwrap();
    let s = 1.0 / ((2 * f) as f64).sqrt();
    let fd = dims(1, 8, 2, 2 * f, 3);
    let loss = |q: &[f64], k: &[f64], v: &[f64], wq: &[f64], wk: &[f64]| {
        let fq = oracle::feature_map(q, wq, 2, 3, f).unwrap();
        let fk = oracle::feature_map(k, wk, 2, 3, f).unwrap();
        let o = oracle::gated_forward(&OracleGated {
            dims: fd,
            q: &fq,
            k: &fk,
            v,
            gate: OracleGate::None,
            initial_state: None,
            initial_normalizer: None,
            cu_seqlens: Some(&cu),
            scale: s,
            normalize: Some(eps as f64),
        })
        .unwrap();
        dot(&o.out, &d_out)
    };
    let (q6, k6, v6, wq6, wk6) = (f64s(&q), f64s(&k), f64s(&v), f64s(&wq), f64s(&wk));
    fd_check("hedgehog dq", &q, &g.dq, |p| loss(p, &k6, &v6, &wq6, &wk6));
    fd_check("hedgehog dk", &k, &g.dk, |p| loss(&q6, p, &v6, &wq6, &wk6));
    fd_check("hedgehog dv", &v, &g.dv, |p| loss(&q6, &k6, p, &wq6, &wk6));
    fd_check("hedgehog dWq", &wq, &g.d_feature_q, |p| loss(&q6, &k6, &v6, p, &wk6));
    fd_check("hedgehog dWk", &wk, &g.d_feature_k, |p| loss(&q6, &k6, &v6, &wq6, p));
}

#[test]
fn window_linear_reference_backward_matches_finite_differences() {
    for (seed, d, cu, window) in [
        (31u64, dims(2, 9, 2, 3, 4), None, 3usize),
        (37, dims(1, 10, 1, 4, 3), Some(vec![0usize, 6, 10]), 2),
        (41, dims(1, 6, 2, 3, 2), None, 1),
        (43, dims(1, 5, 1, 2, 3), None, 8),
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
        let logit = rng.vec(h, -2.0, 1.0);
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
            cu_seqlens: cu.as_deref(),
            scale: None,
        };
        let g = window::reference(&x, &d_out).unwrap();
        let s = 1.0 / (kd as f64).sqrt();
        let all = [f64s(&q), f64s(&k), f64s(&v), f64s(&wq), f64s(&wk), f64s(&logit)];
        let loss = |which: usize, p: &[f64]| {
            let a = |i: usize| if i == which { p } else { &all[i][..] };
            let y = oracle::window_linear_forward(&d, a(0), a(1), a(2), a(3), a(4), f, a(5), window, cu.as_deref(), s)
                .unwrap();
            dot(&y, &d_out)
        };
        let tag = format!("window W={window} {d:?}");
        fd_check(&format!("{tag} dq"), &q, &g.dq, |p| loss(0, p));
        fd_check(&format!("{tag} dk"), &k, &g.dk, |p| loss(1, p));
        fd_check(&format!("{tag} dv"), &v, &g.dv, |p| loss(2, p));
        if d.seq_len > window {
            fd_check(&format!("{tag} dWq"), &wq, &g.d_feature_q, |p| loss(3, p));
            fd_check(&format!("{tag} dWk"), &wk, &g.d_feature_k, |p| loss(4, p));
            fd_check(&format!("{tag} dw"), &logit, &g.d_window_logit, |p| loss(5, p));
        } else {
            // No key is older than the window: the factor cancels, phi is unused.
            let zero = |x: &[f32]| x.iter().all(|a| a.abs() < 1e-6);
            assert!(zero(&g.d_feature_q) && zero(&g.d_feature_k) && zero(&g.d_window_logit), "{tag}");
        }
    }
}
