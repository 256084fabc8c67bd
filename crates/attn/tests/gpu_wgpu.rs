//! WebGPU chunked linear-attention kernels against the f64 CPU reference.
//!
//! Runs on any wgpu adapter (Mesa lavapipe on CPU-only machines). Without an adapter the
//! tests print a skip reason, unless `LINATTN_REQUIRE_WGPU=1` or `LINATTN_REQUIRE_GPU=1`
//! makes them fail. Tolerance: relative RMS error 1e-4 for f32, 5e-3 for f16 / bf16
//! (the reference sees the same rounded inputs).

use std::io::Write;

use linattn_attn::gpu::{Gate, wgpu as gpu};
use linattn_attn::{AttnOptions, LinearState, gla_reference, simple_gla_reference};
use linattn_tensor::wgpu::WgpuDevice;
use linattn_tensor::{DType, Device, Tensor};

fn required() -> bool {
    linattn_tensor::wgpu_required()
}

fn device() -> Option<Device> {
    match WgpuDevice::open_default() {
        Ok(d) => Some(Device::Wgpu(d)),
        Err(e) => {
            assert!(!required(), "wgpu device required but unavailable: {e}");
            let _ = writeln!(std::io::stderr(), "skipping wgpu test: {e}");
            None
        }
    }
}

/// Deterministic pseudo-random values in [-1, 1).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// log-sigmoid(x) / temperature: log-decays <= 0; strong for small temperatures.
fn log_decays(seed: u64, n: usize, temperature: f32) -> Vec<f32> {
    values(seed, n).into_iter().map(|x| -((-(3.0 * x)).exp().ln_1p()) / temperature).collect()
}

fn rel_rms(reference: &[f32], actual: &[f32]) -> f64 {
    assert_eq!(reference.len(), actual.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&r, &a) in reference.iter().zip(actual) {
        assert!(a.is_finite(), "non-finite output {a}");
        num += (r as f64 - a as f64).powi(2);
        den += (r as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

fn check(what: &str, reference: &Tensor, actual: &Tensor, tol: f64) {
    let r = reference.to_f32_vec().unwrap();
    let a = actual.to_f32_vec().unwrap();
    assert_eq!(reference.dims(), actual.dims(), "{what}: shapes");
    let err = rel_rms(&r, &a);
    let worst = r.iter().zip(&a).enumerate().max_by(|x, y| (x.1.0 - x.1.1).abs().total_cmp(&(y.1.0 - y.1.1).abs()));
    assert!(err <= tol, "{what}: relative RMS error {err:.3e} > {tol:.1e}; worst {worst:?}");
}

#[derive(Clone, Copy, Debug)]
enum GateKind {
    None,
    PerHead,
    PerToken,
    PerKey,
}

struct Case {
    batch: usize,
    seq: usize,
    heads: usize,
    kd: usize,
    vd: usize,
    chunk: usize,
    dtype: DType,
    gate: GateKind,
    temperature: f32,
    cu: Option<Vec<usize>>,
    init: bool,
}

impl Case {
    fn new(seq: usize, kd: usize, vd: usize, chunk: usize, dtype: DType, gate: GateKind) -> Case {
        Case { batch: 2, seq, heads: 2, kd, vd, chunk, dtype, gate, temperature: 1.0, cu: None, init: false }
    }

    fn tol(&self) -> f64 {
        if self.dtype == DType::F32 { 1e-4 } else { 5e-3 }
    }

    fn run(&self, dev: &Device, seed: u64) {
        let (b, t, h, kd, vd) = (self.batch, self.seq, self.heads, self.kd, self.vd);
        let n = self.cu.as_ref().map_or(b, |cu| cu.len() - 1);
        // Round the inputs to the dtype on the host so both sides see the same values.
        let host = |data: Vec<f32>, shape: Vec<usize>, dtype: DType| Tensor::from_f32(&data, dtype, shape).unwrap();
        let q = host(values(seed, b * t * h * kd), vec![b, t, h, kd], self.dtype);
        let k = host(values(seed + 1, b * t * h * kd), vec![b, t, h, kd], self.dtype);
        let v = host(values(seed + 2, b * t * h * vd), vec![b, t, h, vd], self.dtype);
        let g = match self.gate {
            GateKind::None => None,
            GateKind::PerHead => Some(host(log_decays(seed + 3, h, self.temperature), vec![h], DType::F32)),
            GateKind::PerToken => {
                Some(host(log_decays(seed + 3, b * t * h, self.temperature), vec![b, t, h], self.dtype))
            }
            GateKind::PerKey => {
                Some(host(log_decays(seed + 3, b * t * h * kd, self.temperature), vec![b, t, h, kd], self.dtype))
            }
        };
        let init = self.init.then(|| host(values(seed + 4, n * h * kd * vd), vec![n, h, kd, vd], DType::F32));
        let init_state = init.as_ref().map(|kv| LinearState { kv: kv.clone(), z: None });
        let scale = (kd as f32).powf(-0.5);
        let opts = AttnOptions {
            scale: Some(scale),
            chunk_size: self.chunk,
            cu_seqlens: self.cu.as_deref(),
            initial_state: init_state.as_ref(),
            ..Default::default()
        };
        let reference = match (&self.gate, &g) {
            (GateKind::PerKey, Some(g)) => gla_reference(&q, &k, &v, g, &opts).unwrap(),
            (_, Some(g)) => simple_gla_reference(&q, &k, &v, g, &opts).unwrap(),
            (_, None) => {
                let zero = Tensor::from_f32(&vec![0.0; h], DType::F32, [h]).unwrap();
                simple_gla_reference(&q, &k, &v, &zero, &opts).unwrap()
            }
        };
        let on = |x: &Tensor| x.to_device(dev).unwrap();
        let (qd, kd_, vd_) = (on(&q), on(&k), on(&v));
        let gd = g.as_ref().map(on);
        let initd = init.as_ref().map(on);
        let gate = match (self.gate, &gd) {
            (GateKind::None, _) => Gate::None,
            (GateKind::PerHead, Some(g)) => Gate::PerHead(g),
            (GateKind::PerToken, Some(g)) => Gate::PerToken(g),
            (GateKind::PerKey, Some(g)) => Gate::PerKey(g),
            _ => unreachable!(),
        };
        let (out, state) =
            gpu::chunk_forward(&qd, &kd_, &vd_, gate, initd.as_ref(), self.cu.as_deref(), scale, self.chunk).unwrap();
        assert_eq!(out.dtype(), self.dtype);
        let what = format!(
            "B={b} T={t} H={h} K={kd} V={vd} C={} {:?} {:?} temp={} cu={:?} init={}",
            self.chunk, self.dtype, self.gate, self.temperature, self.cu, self.init
        );
        check(&format!("{what} output"), &reference.output, &out, self.tol());
        check(&format!("{what} state"), &reference.final_state.kv, &state, self.tol());
    }
}

#[test]
fn simple_gla_matches_reference_over_shapes() {
    let Some(dev) = device() else { return };
    let shapes = [
        (1, 16, 16, 64),
        (63, 32, 60, 64),
        (64, 64, 64, 64),
        (65, 100, 32, 32),
        (300, 128, 128, 64),
        (300, 60, 100, 16),
        (65, 16, 128, 32),
    ];
    for (i, &(t, kd, vd, chunk)) in shapes.iter().enumerate() {
        for gate in [GateKind::None, GateKind::PerToken, GateKind::PerHead] {
            Case::new(t, kd, vd, chunk, DType::F32, gate).run(&dev, 10 * i as u64);
        }
    }
}

#[test]
fn simple_gla_half_precision() {
    let Some(dev) = device() else { return };
    for (i, dtype) in [DType::F16, DType::BF16].into_iter().enumerate() {
        Case::new(65, 60, 33, 32, dtype, GateKind::PerToken).run(&dev, 100 + i as u64);
        Case::new(130, 64, 64, 64, dtype, GateKind::None).run(&dev, 200 + i as u64);
    }
}

#[test]
fn simple_gla_varlen_init_and_strong_gates() {
    let Some(dev) = device() else { return };
    let mut case = Case::new(301, 32, 48, 64, DType::F32, GateKind::PerToken);
    case.batch = 1;
    case.cu = Some(vec![0, 1, 1, 70, 200, 301]);
    case.init = true;
    case.run(&dev, 300);
    let mut strong = Case::new(400, 32, 32, 64, DType::F32, GateKind::PerToken);
    strong.temperature = 0.1;
    strong.init = true;
    strong.run(&dev, 301);
}

#[test]
fn gla_matches_reference() {
    let Some(dev) = device() else { return };
    for (i, &(t, kd, vd, chunk)) in [(1, 16, 16, 16), (65, 60, 100, 64), (300, 64, 32, 32)].iter().enumerate() {
        Case::new(t, kd, vd, chunk, DType::F32, GateKind::PerKey).run(&dev, 400 + i as u64);
    }
    let mut strong = Case::new(200, 32, 32, 64, DType::F32, GateKind::PerKey);
    strong.temperature = 0.1;
    strong.init = true;
    strong.batch = 1;
    strong.cu = Some(vec![0, 63, 64, 200]);
    strong.run(&dev, 410);
    Case::new(97, 32, 40, 32, DType::BF16, GateKind::PerKey).run(&dev, 420);
}

/// Prefill of T0 tokens, then decode steps for the rest == the full reference.
fn prefill_then_decode(dev: &Device, gate_kind: GateKind, dtype: DType, seed: u64) {
    let (b, t, t0, h, kd, vd) = (3, 70, 50, 2, 32, 24);
    let q = Tensor::from_f32(&values(seed, b * t * h * kd), dtype, [b, t, h, kd]).unwrap();
    let k = Tensor::from_f32(&values(seed + 1, b * t * h * kd), dtype, [b, t, h, kd]).unwrap();
    let v = Tensor::from_f32(&values(seed + 2, b * t * h * vd), dtype, [b, t, h, vd]).unwrap();
    let per_key = matches!(gate_kind, GateKind::PerKey);
    let gw = if per_key { kd } else { 1 };
    let g_host = log_decays(seed + 3, b * t * h * gw, 0.5);
    let g_shape = if per_key { vec![b, t, h, kd] } else { vec![b, t, h] };
    let g = Tensor::from_f32(&g_host, DType::F32, g_shape).unwrap();
    let scale = 0.3;
    let opts = AttnOptions { scale: Some(scale), ..Default::default() };
    let reference = if per_key {
        gla_reference(&q, &k, &v, &g, &opts).unwrap()
    } else {
        simple_gla_reference(&q, &k, &v, &g, &opts).unwrap()
    };
    let (qh, kh, vh) = (q.to_f32_vec().unwrap(), k.to_f32_vec().unwrap(), v.to_f32_vec().unwrap());
    // Token slice [b, t0..t1, ...] of a host array with `w` values per (token, head).
    let slice = |data: &[f32], w: usize, t0: usize, t1: usize| -> Vec<f32> {
        (0..b).flat_map(|bi| data[(bi * t + t0) * h * w..(bi * t + t1) * h * w].to_vec()).collect()
    };
    let to = |data: Vec<f32>, shape: Vec<usize>, dt: DType| {
        Tensor::from_f32(&data, dt, shape).unwrap().to_device(dev).unwrap()
    };
    let (qp, kp, vp) = (
        to(slice(&qh, kd, 0, t0), vec![b, t0, h, kd], dtype),
        to(slice(&kh, kd, 0, t0), vec![b, t0, h, kd], dtype),
        to(slice(&vh, vd, 0, t0), vec![b, t0, h, vd], dtype),
    );
    let gp_shape = if per_key { vec![b, t0, h, kd] } else { vec![b, t0, h] };
    let gp = to(slice(&g_host, gw, 0, t0), gp_shape, DType::F32);
    let gate = if per_key { Gate::PerKey(&gp) } else { Gate::PerToken(&gp) };
    let (out_p, mut state) = gpu::chunk_forward(&qp, &kp, &vp, gate, None, None, scale, 32).unwrap();
    let mut outputs: Vec<Vec<f32>> = vec![out_p.to_f32_vec().unwrap()];
    for step in t0..t {
        let qs = to(slice(&qh, kd, step, step + 1), vec![b, h, kd], dtype);
        let ks = to(slice(&kh, kd, step, step + 1), vec![b, h, kd], dtype);
        let vs = to(slice(&vh, vd, step, step + 1), vec![b, h, vd], dtype);
        let gs_shape = if per_key { vec![b, h, kd] } else { vec![b, h] };
        let gs = to(slice(&g_host, gw, step, step + 1), gs_shape, DType::F32);
        let gate = if per_key { Gate::PerKey(&gs) } else { Gate::PerToken(&gs) };
        let (o, s) = gpu::decode_step(&qs, &ks, &vs, gate, &state, scale).unwrap();
        assert_eq!(o.dims(), &[b, h, vd]);
        outputs.push(o.to_f32_vec().unwrap());
        state = s;
    }
    // Reassemble [B, T, H, V] from the prefill block and the steps.
    let mut full = vec![0.0f32; b * t * h * vd];
    for bi in 0..b {
        let row = h * vd;
        full[bi * t * row..][..t0 * row].copy_from_slice(&outputs[0][bi * t0 * row..][..t0 * row]);
        for (s, o) in outputs[1..].iter().enumerate() {
            full[(bi * t + t0 + s) * row..][..row].copy_from_slice(&o[bi * row..][..row]);
        }
    }
    let full = Tensor::from_f32(&full, DType::F32, [b, t, h, vd]).unwrap();
    let tol = if dtype == DType::F32 { 1e-4 } else { 5e-3 };
    check(&format!("prefill+decode {gate_kind:?} {dtype:?} output"), &reference.output, &full, tol);
    check(&format!("prefill+decode {gate_kind:?} {dtype:?} state"), &reference.final_state.kv, &state, 1e-4);
}

#[test]
fn prefill_then_decode_equals_full_sequence() {
    let Some(dev) = device() else { return };
    prefill_then_decode(&dev, GateKind::PerToken, DType::F32, 500);
    prefill_then_decode(&dev, GateKind::PerKey, DType::F32, 510);
    prefill_then_decode(&dev, GateKind::PerToken, DType::BF16, 520);
}

#[test]
fn decode_step_without_gates_and_per_head() {
    let Some(dev) = device() else { return };
    let (n, h, kd, vd) = (3, 2, 60, 20);
    let q = Tensor::from_f32(&values(600, n * h * kd), DType::F16, [n, h, kd]).unwrap();
    let k = Tensor::from_f32(&values(601, n * h * kd), DType::F16, [n, h, kd]).unwrap();
    let v = Tensor::from_f32(&values(602, n * h * vd), DType::F16, [n, h, vd]).unwrap();
    let s0 = Tensor::from_f32(&values(603, n * h * kd * vd), DType::F32, [n, h, kd, vd]).unwrap();
    let g = Tensor::from_f32(&log_decays(604, h, 1.0), DType::F32, [h]).unwrap();
    for per_head in [false, true] {
        let state = LinearState { kv: s0.clone(), z: None };
        let opts = AttnOptions { scale: Some(0.25), ..Default::default() };
        let reference = if per_head {
            linattn_attn::simple_gla_step(&q, &k, &v, &g, Some(&state), &opts).unwrap()
        } else {
            linattn_attn::linear_attn_step(&q, &k, &v, Some(&state), &opts).unwrap()
        };
        let on = |x: &Tensor| x.to_device(&dev).unwrap();
        let gd = on(&g);
        let gate = if per_head { Gate::PerHead(&gd) } else { Gate::None };
        let (o, s) = gpu::decode_step(&on(&q), &on(&k), &on(&v), gate, &on(&s0), 0.25).unwrap();
        check(&format!("decode per_head={per_head} output"), &reference.output, &o, 5e-3);
        check(&format!("decode per_head={per_head} state"), &reference.final_state.kv, &s, 1e-5);
    }
}

/// The in-place step on GPU tensors (the new state replaces the old one) against the
/// CPU step: output within the half-precision tolerance, state within f32 rounding.
#[test]
fn in_place_decode_step_matches_cpu() {
    let Some(dev) = device() else { return };
    let (n, h, kd, vd) = (3, 2, 32, 24);
    let q = Tensor::from_f32(&values(700, n * h * kd), DType::F16, [n, h, kd]).unwrap();
    let k = Tensor::from_f32(&values(701, n * h * kd), DType::F16, [n, h, kd]).unwrap();
    let v = Tensor::from_f32(&values(702, n * h * vd), DType::F16, [n, h, vd]).unwrap();
    let s0 = Tensor::from_f32(&values(703, n * h * kd * vd), DType::F32, [n, h, kd, vd]).unwrap();
    let g = Tensor::from_f32(&log_decays(704, n * h, 1.0), DType::F32, [n, h]).unwrap();
    let opts = AttnOptions { scale: Some(0.25), ..Default::default() };
    let reference =
        linattn_attn::simple_gla_step(&q, &k, &v, &g, Some(&LinearState { kv: s0.clone(), z: None }), &opts).unwrap();
    let on = |x: &Tensor| x.to_device(&dev).unwrap();
    let mut state = LinearState { kv: on(&s0), z: None };
    let o = linattn_attn::simple_gla_step_in_place(&on(&q), &on(&k), &on(&v), &on(&g), &mut state, &opts).unwrap();
    assert!(!state.kv.is_cpu(), "the new state stays on the device");
    check("in-place step output", &reference.output, &o, 5e-3);
    check("in-place step state", &reference.final_state.kv, &state.kv, 1e-5);
}

#[test]
fn bad_inputs_are_errors() {
    let Some(dev) = device() else { return };
    let t = |shape: Vec<usize>| Tensor::zeros(shape, DType::F32, &dev).unwrap();
    let (q, v) = (t(vec![1, 8, 2, 16]), t(vec![1, 8, 2, 16]));
    let cases: Vec<(String, linattn_tensor::Result<(Tensor, Tensor)>)> = vec![
        ("k shape".into(), gpu::chunk_forward(&q, &t(vec![1, 8, 2, 8]), &v, Gate::None, None, None, 1.0, 64)),
        ("chunk".into(), gpu::chunk_forward(&q, &q, &v, Gate::None, None, None, 1.0, 48)),
        ("cu_seqlens".into(), gpu::chunk_forward(&q, &q, &v, Gate::None, None, Some(&[0, 9]), 1.0, 64)),
        ("gate".into(), gpu::chunk_forward(&q, &q, &v, Gate::PerKey(&t(vec![1, 8, 2])), None, None, 1.0, 64)),
        ("state".into(), gpu::chunk_forward(&q, &q, &v, Gate::None, Some(&t(vec![1, 2, 16, 8])), None, 1.0, 64)),
        (
            "step state".into(),
            gpu::decode_step(
                &t(vec![2, 2, 16]),
                &t(vec![2, 2, 16]),
                &t(vec![2, 2, 8]),
                Gate::None,
                &t(vec![2, 2, 8, 16]),
                1.0,
            ),
        ),
    ];
    for (what, result) in cases {
        let err = result.err().unwrap_or_else(|| panic!("{what}: expected an error"));
        writeln!(std::io::stderr(), "{what}: {err}").unwrap();
    }
}
