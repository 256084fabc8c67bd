//! Prefill + decode == full sequence; varlen == each sequence alone; a state handed on
//! == one long run; long sequences and extreme gates stay finite and match the reference.

mod common;

use common::{Rng, assert_close, f32s, slice_tokens, token};
use linattn_attn::{AttnOptions, AttnOutput, LinearState, gla, gla_reference, gla_step, linear_attn, linear_attn_step};
use linattn_attn::{simple_gla, simple_gla_reference, simple_gla_step};
use linattn_tensor::{DType, Tensor};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Linear,
    SimpleGla,
    Gla,
}

struct Inputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Option<Tensor>,
}

/// Random inputs; with `positive` q and k are > 0 so that normalized attention's
/// denominators stay away from zero (otherwise the comparison measures conditioning).
#[allow(clippy::too_many_arguments)]
fn inputs_with(kind: Kind, b: usize, t: usize, h: usize, kd: usize, vd: usize, seed: u64, positive: bool) -> Inputs {
    let mut rng = Rng::new(seed);
    let qk = |rng: &mut Rng| {
        let x = rng.tensor(&[b, t, h, kd], 1.0, DType::F32);
        if positive {
            Tensor::from_vec(f32s(&x).iter().map(|x| x.abs() + 0.05).collect(), [b, t, h, kd]).unwrap()
        } else {
            x
        }
    };
    let q = qk(&mut rng);
    let k = qk(&mut rng);
    let v = rng.tensor(&[b, t, h, vd], 1.0, DType::F32);
    let g = match kind {
        Kind::Linear => None,
        Kind::SimpleGla => Some(rng.log_gates(&[b, t, h], 4.0, 16.0)),
        Kind::Gla => Some(rng.log_gates(&[b, t, h, kd], 4.0, 16.0)),
    };
    Inputs { q, k, v, g }
}

fn inputs(kind: Kind, b: usize, t: usize, h: usize, kd: usize, vd: usize, seed: u64) -> Inputs {
    inputs_with(kind, b, t, h, kd, vd, seed, false)
}

fn prefill(kind: Kind, x: &Inputs, opts: &AttnOptions) -> AttnOutput {
    match kind {
        Kind::Linear => linear_attn(&x.q, &x.k, &x.v, opts).unwrap(),
        Kind::SimpleGla => simple_gla(&x.q, &x.k, &x.v, x.g.as_ref().unwrap(), opts).unwrap(),
        Kind::Gla => gla(&x.q, &x.k, &x.v, x.g.as_ref().unwrap(), opts).unwrap(),
    }
}

fn sub(x: &Inputs, start: usize, end: usize) -> Inputs {
    Inputs {
        q: slice_tokens(&x.q, start, end),
        k: slice_tokens(&x.k, start, end),
        v: slice_tokens(&x.v, start, end),
        g: x.g.as_ref().map(|g| slice_tokens(g, start, end)),
    }
}

#[test]
fn prefill_then_decode_equals_full_sequence() {
    for kind in [Kind::Linear, Kind::SimpleGla, Kind::Gla] {
        for normalize in [false, true] {
            let (b, t, h, kd, vd, split) = (2, 40, 3, 16, 24, 29);
            let x = inputs_with(kind, b, t, h, kd, vd, 11, normalize);
            let opts = AttnOptions { chunk_size: 16, normalize, ..Default::default() };
            let full = prefill(kind, &x, &opts);
            let head = prefill(kind, &sub(&x, 0, split), &opts);
            let mut state: LinearState = head.final_state;
            for i in split..t {
                let (q, k, v) = (token(&x.q, i), token(&x.k, i), token(&x.v, i));
                let g = x.g.as_ref().map(|g| token(g, i));
                let step = match kind {
                    Kind::Linear => linear_attn_step(&q, &k, &v, Some(&state), &opts).unwrap(),
                    Kind::SimpleGla => simple_gla_step(&q, &k, &v, g.as_ref().unwrap(), Some(&state), &opts).unwrap(),
                    Kind::Gla => gla_step(&q, &k, &v, g.as_ref().unwrap(), Some(&state), &opts).unwrap(),
                };
                assert_eq!(step.output.dims(), &[b, h, vd]);
                assert_close(
                    &format!("{kind:?} norm={normalize} step {i}"),
                    &token(&full.output, i),
                    &step.output,
                    1e-5,
                );
                state = step.final_state;
            }
            assert_close(&format!("{kind:?} final state"), &full.final_state.kv, &state.kv, 1e-5);
        }
    }
}

#[test]
fn decode_from_no_state_equals_first_token() {
    let x = inputs(Kind::SimpleGla, 2, 1, 2, 16, 8, 5);
    let full = prefill(Kind::SimpleGla, &x, &AttnOptions::default());
    let step = simple_gla_step(
        &token(&x.q, 0),
        &token(&x.k, 0),
        &token(&x.v, 0),
        &token(x.g.as_ref().unwrap(), 0),
        None,
        &AttnOptions::default(),
    )
    .unwrap();
    assert_close("first token", &token(&full.output, 0), &step.output, 1e-6);
}

#[test]
fn varlen_equals_each_sequence_alone() {
    for kind in [Kind::Linear, Kind::SimpleGla, Kind::Gla] {
        let cu = [0usize, 1, 66, 66, 130, 200];
        let x = inputs(kind, 1, 200, 2, 32, 20, 21);
        let opts = AttnOptions { cu_seqlens: Some(&cu), chunk_size: 32, ..Default::default() };
        let packed = prefill(kind, &x, &opts);
        assert_eq!(packed.final_state.kv.dims(), &[5, 2, 32, 20]);
        let states = f32s(&packed.final_state.kv);
        let per_state = 2 * 32 * 20;
        for n in 0..cu.len() - 1 {
            let (s, e) = (cu[n], cu[n + 1]);
            let alone_state = if s == e {
                vec![0.0f32; per_state]
            } else {
                let alone = prefill(kind, &sub(&x, s, e), &AttnOptions { chunk_size: 32, ..Default::default() });
                assert_close(
                    &format!("{kind:?} seq {n} output"),
                    &alone.output,
                    &slice_tokens(&packed.output, s, e),
                    1e-6,
                );
                f32s(&alone.final_state.kv)
            };
            let got = &states[n * per_state..(n + 1) * per_state];
            linattn_attn::check_close(&format!("{kind:?} seq {n} state"), &alone_state, got, 1e-6).unwrap();
        }
    }
}

#[test]
fn handing_on_the_state_equals_one_long_run() {
    for kind in [Kind::Linear, Kind::SimpleGla, Kind::Gla] {
        for normalize in [false, true] {
            let x = inputs_with(kind, 2, 150, 2, 16, 16, 3, normalize);
            let opts = AttnOptions { normalize, ..Default::default() };
            let full = prefill(kind, &x, &opts);
            let first = prefill(kind, &sub(&x, 0, 77), &opts);
            let second =
                prefill(kind, &sub(&x, 77, 150), &AttnOptions { initial_state: Some(&first.final_state), ..opts });
            assert_close(&format!("{kind:?} second half"), &slice_tokens(&full.output, 77, 150), &second.output, 1e-5);
            assert_close(&format!("{kind:?} state"), &full.final_state.kv, &second.final_state.kv, 1e-5);
        }
    }
}

#[test]
fn long_sequence_beyond_4096_tokens() {
    let (t, kd, vd) = (4500, 16, 16);
    let mut rng = Rng::new(99);
    let q = rng.tensor(&[1, t, 1, kd], 1.0, DType::F32);
    let k = rng.tensor(&[1, t, 1, kd], 1.0, DType::F32);
    let v = rng.tensor(&[1, t, 1, vd], 1.0, DType::F32);
    // Constant RetNet-style decay per head: ln(1 - 2^-5).
    let g_head = Tensor::from_vec(vec![(1.0f32 - 2f32.powi(-5)).ln()], [1]).unwrap();
    let g_key = rng.log_gates(&[1, t, 1, kd], 4.0, 16.0);
    let opts = AttnOptions::default();
    let want = simple_gla_reference(&q, &k, &v, &g_head, &opts).unwrap();
    let got = simple_gla(&q, &k, &v, &g_head, &opts).unwrap();
    assert_close("retention T=4500", &want.output, &got.output, 1e-5);
    let want = gla_reference(&q, &k, &v, &g_key, &opts).unwrap();
    let got = gla(&q, &k, &v, &g_key, &opts).unwrap();
    assert_close("gla T=4500", &want.output, &got.output, 1e-5);
    assert_close("gla T=4500 state", &want.final_state.kv, &got.final_state.kv, 1e-5);
}

#[test]
fn extreme_gates_stay_finite_and_match() {
    // logsigmoid(x) / 0.1 with x in [-20, 20): per-step log-decays down to -200, and the
    // chunk cumsums reach thousands; every exponent the kernels take must be <= 0.
    // Tolerance 1e-4: a chunk-local f32 cumsum near -6000 carries an absolute error of
    // ~4e-4, which becomes the relative error of exp(b_i - b_j) (docs/kernels.md).
    let (b, t, h, kd, vd) = (1, 2000, 2, 32, 16);
    let mut rng = Rng::new(1234);
    let q = rng.tensor(&[b, t, h, kd], 1.0, DType::F32);
    let k = rng.tensor(&[b, t, h, kd], 1.0, DType::F32);
    let v = rng.tensor(&[b, t, h, vd], 1.0, DType::F32);
    let g_tok = rng.log_gates(&[b, t, h], 20.0, 0.1);
    let g_key = rng.log_gates(&[b, t, h, kd], 20.0, 0.1);
    assert!(f32s(&g_key).iter().cloned().fold(0.0f32, f32::min) < -150.0);
    for chunk in [16, 64] {
        let opts = AttnOptions { chunk_size: chunk, ..Default::default() };
        let got = gla(&q, &k, &v, &g_key, &opts).unwrap();
        assert!(f32s(&got.output).iter().all(|x| x.is_finite()), "gla output not finite");
        assert!(f32s(&got.final_state.kv).iter().all(|x| x.is_finite()));
        let want = gla_reference(&q, &k, &v, &g_key, &opts).unwrap();
        assert_close("extreme gla", &want.output, &got.output, 1e-4);
        let got = simple_gla(&q, &k, &v, &g_tok, &opts).unwrap();
        assert!(f32s(&got.output).iter().all(|x| x.is_finite()), "simple_gla output not finite");
        let want = simple_gla_reference(&q, &k, &v, &g_tok, &opts).unwrap();
        assert_close("extreme simple_gla", &want.output, &got.output, 1e-4);
    }
}

#[test]
fn half_precision_inputs_compute_in_f32() {
    for dtype in [DType::BF16, DType::F16] {
        let mut rng = Rng::new(8);
        let (b, t, h, kd, vd) = (2, 70, 2, 32, 16);
        let q = rng.tensor(&[b, t, h, kd], 1.0, dtype);
        let k = rng.tensor(&[b, t, h, kd], 1.0, dtype);
        let v = rng.tensor(&[b, t, h, vd], 1.0, dtype);
        let g = rng.log_gates(&[b, t, h, kd], 4.0, 16.0).to_dtype(dtype).unwrap();
        let got = gla(&q, &k, &v, &g, &AttnOptions::default()).unwrap();
        assert_eq!(got.output.dtype(), dtype);
        assert_eq!(got.final_state.kv.dtype(), DType::F32);
        // The reference on the same (rounded) inputs, upcast to f32 first.
        let up = |x: &Tensor| x.to_dtype(DType::F32).unwrap();
        let want = gla_reference(&up(&q), &up(&k), &up(&v), &up(&g), &AttnOptions::default()).unwrap();
        // Only the final rounding of the output to 16 bits differs.
        let tol = if dtype == DType::BF16 { 6e-3 } else { 1e-3 };
        assert_close(&format!("{dtype} output"), &want.output, &got.output.to_dtype(DType::F32).unwrap(), tol);
        assert_close(&format!("{dtype} state"), &want.final_state.kv, &got.final_state.kv, 1e-5);
    }
}
