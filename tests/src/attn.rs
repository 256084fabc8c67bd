//! Conformance cases of the linear-attention ops: `linear_attn` (plain and normalized),
//! `simple_gla` (per-token and per-head decay, extreme gates, a 4500-token sequence),
//! `gla` (mild and extreme per-key gates), varlen batches, an initial state, decode
//! steps, the Hedgehog feature map (standalone and fused) and the LoLCATs window hybrid.
//!
//! The oracle is each op's `*_reference` (token-by-token recurrence in f64 on the host).
//! The compared values are the output followed by the final f32 state. Inputs are
//! rounded to the case dtype before both sides see them. Tolerances: f32 2e-5 relative
//! RMS (2e-4 with extreme gates, whose f32 chunk-local cumsums lose ~4e-4 absolute near
//! -6000), f16/bf16 5e-3 relative RMS (the GPU bound).

use linattn_attn::{self as attn, AttnOptions, AttnOutput, LinearState, WindowOptions};
use linattn_tensor::{DType, Device, Result, Tensor};

use crate::harness::{Case, CaseOutput, TestRng, Tolerance, round_to};
use crate::tensor_ops::upload;

#[derive(Clone, Copy)]
enum Gate {
    None,
    /// log-decay logsigmoid(x) / divisor, one per token and head.
    PerToken(f32),
    /// Constant per head (RetNet-style), -2^-(5+h).
    PerHead,
    /// log-decay logsigmoid(x) / divisor, one per token, head and key dim.
    PerKey(f32),
}

#[derive(Clone)]
struct Spec {
    op: &'static str,
    batch: usize,
    seq_len: usize,
    heads: usize,
    key_dim: usize,
    value_dim: usize,
    chunk: usize,
    gate: Gate,
    normalize: bool,
    cu_seqlens: Option<Vec<usize>>,
    initial_state: bool,
    extreme: bool,
}

impl Spec {
    fn label(&self) -> String {
        let mut s = format!(
            "B{} T{} H{} K{} V{} C{}",
            self.batch, self.seq_len, self.heads, self.key_dim, self.value_dim, self.chunk
        );
        if let Some(cu) = &self.cu_seqlens {
            s.push_str(&format!(" cu{cu:?}"));
        }
        if self.initial_state {
            s.push_str(" +h0");
        }
        s
    }

    fn sequences(&self) -> usize {
        self.cu_seqlens.as_ref().map_or(self.batch, |cu| cu.len() - 1)
    }
}

fn logsigmoid(x: f32) -> f32 {
    -((-x).exp().ln_1p())
}

fn tolerance(dtype: DType, extreme: bool) -> Tolerance {
    match dtype {
        DType::F32 if extreme => Tolerance::new(2e-4, 2e-3, 2e-3),
        DType::F32 => Tolerance::new(2e-5, 1e-3, 1e-3),
        _ => Tolerance::new(5e-3, 6e-2, 6e-2),
    }
}

fn flatten(out: &AttnOutput) -> Result<Vec<f32>> {
    let mut v = out.output.to_f32_vec()?;
    v.extend(out.final_state.kv.to_f32_vec()?);
    if let Some(z) = &out.final_state.z {
        v.extend(z.to_f32_vec()?);
    }
    Ok(v)
}

/// Runs a gated op with inputs on `device`; `reference` selects the oracle.
fn run_gated(spec: &Spec, dtype: DType, device: &Device, reference: bool) -> Result<Vec<f32>> {
    let (b, t, h, k, v) = (spec.batch, spec.seq_len, spec.heads, spec.key_dim, spec.value_dim);
    let mut rng = TestRng::new(0xA77 + t as u64 * 31 + k as u64);
    let positive = spec.normalize;
    let (lo, hi) = if positive { (0.05, 1.0) } else { (-1.0, 1.0) };
    let q = round_to(&rng.vec(b * t * h * k, lo, hi), dtype);
    let kk = round_to(&rng.vec(b * t * h * k, lo, hi), dtype);
    let vv = round_to(&rng.vec(b * t * h * v, -1.0, 1.0), dtype);
    let dev = if reference { Device::Cpu } else { device.clone() };
    let qt = upload(&q, dtype, &[b, t, h, k], &dev)?;
    let kt = upload(&kk, dtype, &[b, t, h, k], &dev)?;
    let vt = upload(&vv, dtype, &[b, t, h, v], &dev)?;
    let n = spec.sequences();
    let h0 = if spec.initial_state {
        let kv = rng.vec(n * h * k * v, -0.5, 0.5);
        let z = if spec.normalize {
            Some(Tensor::from_f32(&rng.vec(n * h * k, 0.1, 1.0), DType::F32, [n, h, k])?.to_device(&dev)?)
        } else {
            None
        };
        Some(LinearState { kv: Tensor::from_f32(&kv, DType::F32, [n, h, k, v])?.to_device(&dev)?, z })
    } else {
        None
    };
    let opts = AttnOptions {
        chunk_size: spec.chunk,
        cu_seqlens: spec.cu_seqlens.as_deref(),
        initial_state: h0.as_ref(),
        normalize: spec.normalize,
        ..AttnOptions::default()
    };
    // Gates stay f32: they are log-space quantities the kernels accumulate in f32.
    let out = match spec.gate {
        Gate::None if reference => attn::linear_attn_reference(&qt, &kt, &vt, &opts)?,
        Gate::None => attn::linear_attn(&qt, &kt, &vt, &opts)?,
        Gate::PerToken(div) | Gate::PerKey(div) => {
            let per_key = matches!(spec.gate, Gate::PerKey(_));
            let dims: Vec<usize> = if per_key { vec![b, t, h, k] } else { vec![b, t, h] };
            let g: Vec<f32> =
                rng.vec(dims.iter().product(), -4.0, 4.0).into_iter().map(|x| logsigmoid(x) / div).collect();
            let gt = upload(&g, DType::F32, &dims, &dev)?;
            match (per_key, reference) {
                (false, true) => attn::simple_gla_reference(&qt, &kt, &vt, &gt, &opts)?,
                (false, false) => attn::simple_gla(&qt, &kt, &vt, &gt, &opts)?,
                (true, true) => attn::gla_reference(&qt, &kt, &vt, &gt, &opts)?,
                (true, false) => attn::gla(&qt, &kt, &vt, &gt, &opts)?,
            }
        }
        Gate::PerHead => {
            let g: Vec<f32> = (0..h).map(|i| -(2f32.powi(-(5 + i as i32)))).collect();
            let gt = upload(&g, DType::F32, &[h], &dev)?;
            if reference {
                attn::simple_gla_reference(&qt, &kt, &vt, &gt, &opts)?
            } else {
                attn::simple_gla(&qt, &kt, &vt, &gt, &opts)?
            }
        }
    };
    flatten(&out)
}

fn gated_case(spec: Spec, dtype: DType) -> Case {
    let tol = tolerance(dtype, spec.extreme);
    Case::new(spec.op, dtype, spec.label(), tol, move |dev| {
        Ok(CaseOutput { got: run_gated(&spec, dtype, dev, false)?, want: run_gated(&spec, dtype, dev, true)? })
    })
}

fn spec(op: &'static str, dims: (usize, usize, usize, usize, usize), chunk: usize, gate: Gate) -> Spec {
    let (batch, seq_len, heads, key_dim, value_dim) = dims;
    Spec {
        op,
        batch,
        seq_len,
        heads,
        key_dim,
        value_dim,
        chunk,
        gate,
        normalize: false,
        cu_seqlens: None,
        initial_state: false,
        extreme: false,
    }
}

fn gated_specs() -> Vec<Spec> {
    let mut specs = vec![
        spec("linear_attn", (1, 1, 1, 16, 16), 64, Gate::None),
        spec("linear_attn", (2, 63, 2, 32, 60), 16, Gate::None),
        spec("linear_attn", (1, 130, 3, 64, 100), 64, Gate::None),
        Spec { normalize: true, ..spec("linear_attn_normalized", (2, 65, 2, 32, 32), 32, Gate::None) },
        spec("simple_gla", (1, 65, 2, 60, 32), 64, Gate::PerToken(16.0)),
        spec("simple_gla", (3, 64, 1, 128, 64), 32, Gate::PerToken(16.0)),
        spec("simple_gla", (1, 300, 2, 100, 128), 64, Gate::PerToken(16.0)),
        spec("simple_gla_retnet", (1, 4500, 1, 32, 32), 64, Gate::PerHead),
        Spec { extreme: true, ..spec("simple_gla_extreme", (1, 700, 2, 32, 32), 64, Gate::PerToken(0.1)) },
        Spec {
            cu_seqlens: Some(vec![0, 5, 70, 70, 133]),
            ..spec("simple_gla_varlen", (1, 133, 2, 32, 48), 64, Gate::PerToken(16.0))
        },
        Spec { initial_state: true, ..spec("simple_gla_h0", (2, 77, 2, 32, 16), 16, Gate::PerToken(16.0)) },
        spec("gla", (1, 65, 2, 32, 64), 16, Gate::PerKey(16.0)),
        spec("gla", (2, 200, 1, 64, 60), 64, Gate::PerKey(16.0)),
        Spec { extreme: true, ..spec("gla_extreme", (1, 500, 2, 32, 32), 64, Gate::PerKey(0.1)) },
        Spec {
            cu_seqlens: Some(vec![0, 1, 64, 150]),
            initial_state: true,
            ..spec("gla_varlen_h0", (1, 150, 2, 16, 32), 32, Gate::PerKey(16.0))
        },
    ];
    specs.push(spec("linear_attn", (1, 500, 2, 256, 64), 64, Gate::None));
    specs
}

/// Decode steps: prefill 40 tokens, then 3 single-token steps, batched over sequences.
fn decode_case(dtype: DType, per_key: bool) -> Case {
    let (n, h, k, v, steps) = (3usize, 2usize, 32usize, 48usize, 3usize);
    let op = if per_key { "gla_step" } else { "simple_gla_step" };
    let label = format!("N{n} H{h} K{k} V{v} x{steps} steps");
    Case::new(op, dtype, label, tolerance(dtype, false), move |dev| {
        let mut rng = TestRng::new(77);
        let mut got = Vec::new();
        let mut want = Vec::new();
        let kv0 = rng.vec(n * h * k * v, -0.5, 0.5);
        let mut state_dev =
            LinearState { kv: Tensor::from_f32(&kv0, DType::F32, [n, h, k, v])?.to_device(dev)?, z: None };
        let mut state_ref = LinearState { kv: Tensor::from_f32(&kv0, DType::F32, [n, h, k, v])?, z: None };
        for _ in 0..steps {
            let q = round_to(&rng.vec(n * h * k, -1.0, 1.0), dtype);
            let kk = round_to(&rng.vec(n * h * k, -1.0, 1.0), dtype);
            let vv = round_to(&rng.vec(n * h * v, -1.0, 1.0), dtype);
            let gdims: Vec<usize> = if per_key { vec![n, h, k] } else { vec![n, h] };
            let g: Vec<f32> =
                rng.vec(gdims.iter().product(), -4.0, 4.0).into_iter().map(|x| logsigmoid(x) / 16.0).collect();
            // Device: the batched decode step. Oracle: the f64 reference run as a one-token
            // prefill of each sequence from the same state.
            let qt = upload(&q, dtype, &[n, h, k], dev)?;
            let kt = upload(&kk, dtype, &[n, h, k], dev)?;
            let vt = upload(&vv, dtype, &[n, h, v], dev)?;
            let gt = upload(&g, DType::F32, &gdims, dev)?;
            let opts = AttnOptions::default();
            let out = if per_key {
                attn::gla_step(&qt, &kt, &vt, &gt, Some(&state_dev), &opts)?
            } else {
                attn::simple_gla_step(&qt, &kt, &vt, &gt, Some(&state_dev), &opts)?
            };
            got.extend(out.output.to_f32_vec()?);
            state_dev = out.final_state;

            let one_token = |dims: &[usize]| -> Vec<usize> { [&dims[..1], &[1], &dims[1..]].concat() };
            let qr = upload(&q, dtype, &one_token(&[n, h, k]), &Device::Cpu)?;
            let kr = upload(&kk, dtype, &one_token(&[n, h, k]), &Device::Cpu)?;
            let vr = upload(&vv, dtype, &one_token(&[n, h, v]), &Device::Cpu)?;
            let gr = upload(&g, DType::F32, &one_token(&gdims), &Device::Cpu)?;
            let ref_opts = AttnOptions { initial_state: Some(&state_ref), ..AttnOptions::default() };
            let out = if per_key {
                attn::gla_reference(&qr, &kr, &vr, &gr, &ref_opts)?
            } else {
                attn::simple_gla_reference(&qr, &kr, &vr, &gr, &ref_opts)?
            };
            want.extend(out.output.to_f32_vec()?);
            state_ref = out.final_state;
        }
        got.extend(state_dev.kv.to_f32_vec()?);
        want.extend(state_ref.kv.to_f32_vec()?);
        Ok(CaseOutput { got, want })
    })
}

fn hedgehog_case(dtype: DType) -> Case {
    let (b, t, h, d, f) = (2usize, 33usize, 2usize, 32usize, 16usize);
    Case::new("hedgehog", dtype, format!("[{b}, {t}, {h}, {d}] F{f}"), tolerance(dtype, false), move |dev| {
        let mut rng = TestRng::new(5);
        let x = round_to(&rng.vec(b * t * h * d, -2.0, 2.0), dtype);
        let w = round_to(&rng.vec(h * d * f, -0.5, 0.5), dtype);
        let got =
            attn::hedgehog_feature_map(&upload(&x, dtype, &[b, t, h, d], dev)?, &upload(&w, dtype, &[h, d, f], dev)?)?;
        let want = attn::hedgehog_feature_map_reference(
            &upload(&x, dtype, &[b, t, h, d], &Device::Cpu)?,
            &upload(&w, dtype, &[h, d, f], &Device::Cpu)?,
        )?;
        Ok(CaseOutput { got: got.to_f32_vec()?, want: want.to_f32_vec()? })
    })
}

fn window_case(dtype: DType, seq_len: usize, window: usize) -> Case {
    let (b, h, d, v, f) = (1usize, 2usize, 32usize, 32usize, 16usize);
    let label = format!("B{b} T{seq_len} H{h} D{d} V{v} F{f} W{window}");
    Case::new("window_linear", dtype, label, tolerance(dtype, false), move |dev| {
        let mut rng = TestRng::new(9);
        let q = round_to(&rng.vec(b * seq_len * h * d, -1.0, 1.0), dtype);
        let k = round_to(&rng.vec(b * seq_len * h * d, -1.0, 1.0), dtype);
        let vv = round_to(&rng.vec(b * seq_len * h * v, -1.0, 1.0), dtype);
        let wq = rng.vec(h * d * f, -0.3, 0.3);
        let wk = rng.vec(h * d * f, -0.3, 0.3);
        let logits = vec![-2.2f32, 0.5];
        let mut sides = Vec::new();
        for (target, reference) in [(dev.clone(), false), (Device::Cpu, true)] {
            let fq = upload(&wq, DType::F32, &[h, d, f], &target)?;
            let fk = upload(&wk, DType::F32, &[h, d, f], &target)?;
            let opts = WindowOptions {
                window,
                q_feature_map: Some(&fq),
                k_feature_map: Some(&fk),
                ..WindowOptions::default()
            };
            let (qt, kt, vt) = (
                upload(&q, dtype, &[b, seq_len, h, d], &target)?,
                upload(&k, dtype, &[b, seq_len, h, d], &target)?,
                upload(&vv, dtype, &[b, seq_len, h, v], &target)?,
            );
            let lt = upload(&logits, DType::F32, &[h], &target)?;
            let out = if reference {
                attn::window_linear_reference(&qt, &kt, &vt, &lt, &opts)?
            } else {
                attn::window_linear(&qt, &kt, &vt, &lt, &opts)?
            };
            let mut values = out.output.to_f32_vec()?;
            values.extend(out.state.linear.kv.to_f32_vec()?);
            sides.push(values);
        }
        let want = sides.pop().expect("two sides");
        let got = sides.pop().expect("two sides");
        Ok(CaseOutput { got, want })
    })
}

/// Every attention case.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for s in gated_specs() {
            // Half precision on the largest shapes adds time, not coverage.
            if dtype != DType::F32 && s.seq_len > 1000 {
                continue;
            }
            out.push(gated_case(s, dtype));
        }
        out.push(decode_case(dtype, false));
        out.push(decode_case(dtype, true));
        out.push(hedgehog_case(dtype));
        out.push(window_case(dtype, 150, 64));
        out.push(window_case(dtype, 20, 8));
    }
    out
}
