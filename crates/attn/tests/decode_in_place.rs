//! The in-place decode steps (`*_step_in_place`): the same outputs and states as the
//! steps that return a new state (bit for bit on the CPU: the same products in the same
//! order), other handles of a shared state untouched, and a state left exactly as it
//! was when the step fails (bad shapes, Inf/NaN in the state).

mod common;

use common::{Rng, f32s, token};
use linattn_attn::{AttnOptions, LinearState, gla_step, gla_step_in_place, linear_attn_step};
use linattn_attn::{linear_attn_step_in_place, simple_gla_step, simple_gla_step_in_place};
use linattn_tensor::{DType, Error, Tensor};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Linear,
    SimpleGla,
    Gla,
}

/// A random state `[n, h, kd, vd]` (+ a positive z when normalizing).
fn state(rng: &mut Rng, n: usize, h: usize, kd: usize, vd: usize, normalize: bool) -> LinearState {
    let kv = rng.tensor(&[n, h, kd, vd], 1.0, DType::F32);
    let z = normalize.then(|| {
        let z = rng.tensor(&[n, h, kd], 1.0, DType::F32);
        Tensor::from_vec(f32s(&z).iter().map(|x| x.abs() + 1.0).collect(), [n, h, kd]).unwrap()
    });
    LinearState { kv, z }
}

struct Token {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Option<Tensor>,
}

fn tokens(rng: &mut Rng, kind: Kind, steps: usize, n: usize, h: usize, kd: usize, vd: usize) -> Vec<Token> {
    let positive = |t: Tensor| Tensor::from_vec(f32s(&t).iter().map(|x| x.abs() + 0.05).collect(), t.dims()).unwrap();
    (0..steps)
        .map(|_| Token {
            q: positive(rng.tensor(&[n, h, kd], 1.0, DType::F32)),
            k: positive(rng.tensor(&[n, h, kd], 1.0, DType::F32)),
            v: rng.tensor(&[n, h, vd], 1.0, DType::F32),
            g: match kind {
                Kind::Linear => None,
                Kind::SimpleGla => Some(token(&rng.log_gates(&[n, 1, h], 4.0, 16.0), 0)),
                Kind::Gla => Some(token(&rng.log_gates(&[n, 1, h, kd], 4.0, 16.0), 0)),
            },
        })
        .collect()
}

fn new_state_step(kind: Kind, x: &Token, s: &LinearState, opts: &AttnOptions) -> (Tensor, LinearState) {
    let r = match kind {
        Kind::Linear => linear_attn_step(&x.q, &x.k, &x.v, Some(s), opts),
        Kind::SimpleGla => simple_gla_step(&x.q, &x.k, &x.v, x.g.as_ref().unwrap(), Some(s), opts),
        Kind::Gla => gla_step(&x.q, &x.k, &x.v, x.g.as_ref().unwrap(), Some(s), opts),
    }
    .unwrap();
    (r.output, r.final_state)
}

fn in_place_step(kind: Kind, x: &Token, s: &mut LinearState, opts: &AttnOptions) -> linattn_tensor::Result<Tensor> {
    match kind {
        Kind::Linear => linear_attn_step_in_place(&x.q, &x.k, &x.v, s, opts),
        Kind::SimpleGla => simple_gla_step_in_place(&x.q, &x.k, &x.v, x.g.as_ref().unwrap(), s, opts),
        Kind::Gla => gla_step_in_place(&x.q, &x.k, &x.v, x.g.as_ref().unwrap(), s, opts),
    }
}

fn values(s: &LinearState) -> (Vec<f32>, Option<Vec<f32>>) {
    (f32s(&s.kv), s.z.as_ref().map(f32s))
}

#[test]
fn in_place_steps_equal_steps_into_a_new_state() {
    for kind in [Kind::Linear, Kind::SimpleGla, Kind::Gla] {
        for normalize in [false, true] {
            // V = 20 leaves a 4-wide tail after the 16-lane body of each state row.
            let (n, h, kd, vd) = (3, 2, 16, 20);
            let mut rng = Rng::new(41);
            let start = state(&mut rng, n, h, kd, vd, normalize);
            let xs = tokens(&mut rng, kind, 5, n, h, kd, vd);
            let opts = AttnOptions { normalize, ..Default::default() };
            let mut copied = start.clone();
            // `start` shares its storage with `in_place` until the first write.
            let mut in_place = start.clone();
            for (i, x) in xs.iter().enumerate() {
                let (want, next) = new_state_step(kind, x, &copied, &opts);
                copied = next;
                let got = in_place_step(kind, x, &mut in_place, &opts).unwrap();
                assert_eq!(got.dims(), &[n, h, vd]);
                assert_eq!(f32s(&got), f32s(&want), "{kind:?} normalize={normalize} step {i} output");
                assert_eq!(values(&in_place), values(&copied), "{kind:?} normalize={normalize} step {i} state");
            }
            let fresh = state(&mut Rng::new(41), n, h, kd, vd, normalize);
            assert_eq!(values(&start), values(&fresh), "{kind:?}: a shared handle of the state changed");
        }
    }
}

#[test]
fn failed_steps_leave_the_state_as_it_was() {
    let (n, h, kd, vd) = (2, 2, 16, 16);
    let mut rng = Rng::new(7);
    let xs = tokens(&mut rng, Kind::SimpleGla, 1, n, h, kd, vd);
    let x = &xs[0];
    let opts = AttnOptions { normalize: true, ..Default::default() };
    for (what, poison_kv) in [("state.kv", true), ("state.z", false)] {
        let mut s = state(&mut rng, n, h, kd, vd, true);
        if poison_kv {
            let mut kv = f32s(&s.kv);
            kv[kd * vd + 5] = f32::NAN;
            s.kv = Tensor::from_vec(kv, [n, h, kd, vd]).unwrap();
        } else {
            let mut z = f32s(s.z.as_ref().unwrap());
            z[3] = f32::INFINITY;
            s.z = Some(Tensor::from_vec(z, [n, h, kd]).unwrap());
        }
        let before = values(&s);
        let err = in_place_step(Kind::SimpleGla, x, &mut s, &opts).unwrap_err();
        match &err {
            Error::NonFinite { tensor, index, .. } => {
                assert_eq!(tensor, what, "{err}");
                assert_eq!(*index, if poison_kv { kd * vd + 5 } else { 3 }, "{err}");
            }
            other => panic!("expected NonFinite for {what}, got {other}"),
        }
        let after = values(&s);
        assert_eq!(
            before.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            after.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(
            before.1.map(|z| z.iter().map(|v| v.to_bits()).collect::<Vec<_>>()),
            after.1.map(|z| z.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        );
    }
    // A state of the wrong shape, and a q of the wrong shape.
    let mut wrong = state(&mut rng, n, h, kd, vd + 1, true);
    let before = values(&wrong);
    let err = in_place_step(Kind::SimpleGla, x, &mut wrong, &opts).unwrap_err().to_string();
    assert!(err.contains("initial_state.kv"), "{err}");
    assert_eq!(values(&wrong), before);
    let mut plain = state(&mut rng, n, h, kd, vd, false);
    let before = values(&plain);
    let bad_q =
        Token { q: rng.tensor(&[n, h, kd + 1], 1.0, DType::F32), k: x.k.clone(), v: x.v.clone(), g: x.g.clone() };
    assert!(in_place_step(Kind::SimpleGla, &bad_q, &mut plain, &AttnOptions::default()).is_err());
    assert_eq!(values(&plain), before);
}
