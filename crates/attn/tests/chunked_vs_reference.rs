//! Fast chunked kernels == f64 token-by-token reference (f32 inputs, relative RMS 1e-5).

mod common;

use common::{Rng, assert_close};
use linattn_attn::{
    AttnOptions, AttnOutput, gla, gla_reference, hedgehog_identity_init, linear_attn, linear_attn_reference,
};
use linattn_attn::{simple_gla, simple_gla_reference};
use linattn_tensor::{DType, Tensor};
use proptest::prelude::*;

const TOL: f64 = 1e-5;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Linear,
    LinearNormalized,
    SimpleGlaPerToken,
    SimpleGlaPerHead,
    Gla,
}

fn run_both(
    kind: Kind,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    g: Option<&Tensor>,
    opts: &AttnOptions,
) -> (AttnOutput, AttnOutput) {
    match kind {
        Kind::Linear | Kind::LinearNormalized => {
            (linear_attn_reference(q, k, v, opts).unwrap(), linear_attn(q, k, v, opts).unwrap())
        }
        Kind::SimpleGlaPerToken | Kind::SimpleGlaPerHead => {
            let g = g.unwrap();
            (simple_gla_reference(q, k, v, g, opts).unwrap(), simple_gla(q, k, v, g, opts).unwrap())
        }
        Kind::Gla => {
            let g = g.unwrap();
            (gla_reference(q, k, v, g, opts).unwrap(), gla(q, k, v, g, opts).unwrap())
        }
    }
}

fn gates(rng: &mut Rng, kind: Kind, b: usize, t: usize, h: usize, kd: usize) -> Option<Tensor> {
    match kind {
        Kind::Linear | Kind::LinearNormalized => None,
        Kind::SimpleGlaPerToken => Some(rng.log_gates(&[b, t, h], 4.0, 16.0)),
        Kind::SimpleGlaPerHead => Some(rng.log_gates(&[h], 4.0, 8.0)),
        Kind::Gla => Some(rng.log_gates(&[b, t, h, kd], 4.0, 16.0)),
    }
}

#[allow(clippy::too_many_arguments)]
fn check_case(kind: Kind, b: usize, t: usize, h: usize, kd: usize, vd: usize, chunk: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let q = rng.tensor(&[b, t, h, kd], 1.0, DType::F32);
    let k = rng.tensor(&[b, t, h, kd], 1.0, DType::F32);
    let v = rng.tensor(&[b, t, h, vd], 1.0, DType::F32);
    let g = gates(&mut rng, kind, b, t, h, kd);
    let normalize = matches!(kind, Kind::LinearNormalized);
    // Normalized attention needs positive scores to be well conditioned: use |k|, |q|.
    let (q, k) = if normalize {
        let abs = |x: &Tensor| {
            Tensor::from_vec(common::f32s(x).iter().map(|v| v.abs() + 0.05).collect(), x.dims().to_vec()).unwrap()
        };
        (abs(&q), abs(&k))
    } else {
        (q, k)
    };
    let opts = AttnOptions { chunk_size: chunk, normalize, ..Default::default() };
    let (want, got) = run_both(kind, &q, &k, &v, g.as_ref(), &opts);
    let what = format!("{kind:?} B={b} T={t} H={h} K={kd} V={vd} C={chunk}");
    assert_close(&format!("{what} output"), &want.output, &got.output, TOL);
    assert_close(&format!("{what} state"), &want.final_state.kv, &got.final_state.kv, TOL);
    assert_eq!(want.final_state.z.is_some(), normalize);
    if let (Some(zw), Some(zg)) = (&want.final_state.z, &got.final_state.z) {
        assert_close(&format!("{what} z"), zw, zg, TOL);
    }
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Linear),
        Just(Kind::LinearNormalized),
        Just(Kind::SimpleGlaPerToken),
        Just(Kind::SimpleGlaPerHead),
        Just(Kind::Gla),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn chunked_matches_reference(
        kind in kind_strategy(),
        b in 1usize..=3,
        t in prop::sample::select(vec![1usize, 2, 17, 63, 64, 65, 130, 500]),
        h in 1usize..=4,
        kd in prop::sample::select(vec![16usize, 32, 60, 64, 100, 128]),
        vd in prop::sample::select(vec![16usize, 32, 60, 64, 100, 128]),
        chunk in prop::sample::select(vec![16usize, 32, 64]),
        seed in any::<u64>(),
    ) {
        // Keep each case well under a second: shrink T when the problem is large.
        let t = if b * t * h * kd * vd > 4_000_000 { 65 } else { t };
        check_case(kind, b, t, h, kd, vd, chunk, seed);
    }
}

#[test]
fn edge_lengths_for_every_op_and_chunk() {
    for kind in [Kind::Linear, Kind::LinearNormalized, Kind::SimpleGlaPerToken, Kind::SimpleGlaPerHead, Kind::Gla] {
        for chunk in [16, 32, 64] {
            for t in [1, 63, 64, 65] {
                check_case(kind, 2, t, 2, 60, 100, chunk, t as u64 * 31 + chunk as u64);
            }
        }
    }
}

#[test]
fn fused_feature_maps_match_reference() {
    let (b, t, h, d, f, vd) = (2, 70, 2, 32, 16, 24);
    let mut rng = Rng::new(7);
    let q = rng.tensor(&[b, t, h, d], 2.0, DType::F32);
    let k = rng.tensor(&[b, t, h, d], 2.0, DType::F32);
    let v = rng.tensor(&[b, t, h, vd], 1.0, DType::F32);
    let wq = rng.tensor(&[h, d, f], 0.5, DType::F32);
    let wk = rng.tensor(&[h, d, f], 0.5, DType::F32);
    let opts = AttnOptions { q_feature_map: Some(&wq), k_feature_map: Some(&wk), chunk_size: 32, ..Default::default() };
    let norm = AttnOptions { normalize: true, ..opts };
    let g_tok = rng.log_gates(&[b, t, h], 4.0, 16.0);
    let g_key = rng.log_gates(&[b, t, h, 2 * f], 4.0, 16.0);
    for (kind, g, o) in [
        (Kind::Linear, None, &opts),
        (Kind::LinearNormalized, None, &norm),
        (Kind::SimpleGlaPerToken, Some(&g_tok), &opts),
        (Kind::Gla, Some(&g_key), &opts),
    ] {
        let (want, got) = run_both(kind, &q, &k, &v, g, o);
        assert_eq!(got.final_state.kv.dims(), &[b, h, 2 * f, vd]);
        assert_close(&format!("{kind:?} mapped output"), &want.output, &got.output, TOL);
        assert_close(&format!("{kind:?} mapped state"), &want.final_state.kv, &got.final_state.kv, TOL);
    }
    // The identity init maps into the probability simplex: outputs are finite and the
    // normalized attention of a constant value row is that constant.
    let wi = hedgehog_identity_init(h, d, f).unwrap();
    let ones = Tensor::from_vec(vec![0.5f32; b * t * h * vd], [b, t, h, vd]).unwrap();
    let o = AttnOptions { q_feature_map: Some(&wi), k_feature_map: Some(&wi), normalize: true, ..Default::default() };
    let out = linear_attn(&q, &k, &ones, &o).unwrap();
    assert!(common::f32s(&out.output).iter().all(|x| (x - 0.5).abs() < 1e-5));
}
