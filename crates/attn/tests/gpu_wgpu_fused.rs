//! WebGPU Hedgehog feature map, fused feature maps, the normalizer and the window hybrid
//! (prefill + decode) through the public ops, against the f64 CPU references.
//!
//! Without a wgpu adapter the tests print a skip reason, unless `LINATTN_REQUIRE_WGPU=1`
//! or `LINATTN_REQUIRE_GPU=1` makes them fail. Tolerance: relative RMS error 1e-4 for
//! f32, 5e-3 for f16 / bf16 (the reference sees the same rounded inputs).

use std::io::Write;

use linattn_attn::{
    AttnOptions, LinearState, WindowOptions, WindowState, gla, gla_reference, hedgehog_feature_map,
    hedgehog_feature_map_reference, linear_attn, linear_attn_reference, simple_gla, simple_gla_reference,
    window_linear, window_linear_reference, window_linear_step,
};
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

/// Deterministic pseudo-random values in [lo, hi).
fn values(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + ((s >> 40) as f32 / (1u64 << 24) as f32) * (hi - lo)
        })
        .collect()
}

fn tensor(data: Vec<f32>, shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_f32(&data, dtype, shape.to_vec()).unwrap()
}

fn tol(dtype: DType) -> f64 {
    if dtype == DType::F32 { 1e-4 } else { 5e-3 }
}

fn check(what: &str, reference: &Tensor, actual: &Tensor, tol: f64) {
    assert_eq!(reference.dims(), actual.dims(), "{what}: shapes");
    let r = reference.to_f32_vec().unwrap();
    let a = actual.to_f32_vec().unwrap();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in r.iter().zip(&a) {
        assert!(y.is_finite(), "{what}: non-finite output {y}");
        num += (x as f64 - y as f64).powi(2);
        den += (x as f64).powi(2);
    }
    let err = (num / den.max(1e-30)).sqrt();
    assert!(err <= tol, "{what}: relative RMS error {err:.3e} > {tol:.1e}");
}

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

#[test]
fn hedgehog_matches_reference() {
    let Some(dev) = device() else { return };
    for (i, &dtype) in DTYPES.iter().enumerate() {
        for &(b, t, h, d, f) in &[(2usize, 33usize, 2usize, 32usize, 16usize), (1, 5, 3, 100, 128), (1, 1, 1, 7, 3)] {
            let seed = 10 * i as u64 + d as u64;
            let x = tensor(values(seed, b * t * h * d, -2.0, 2.0), &[b, t, h, d], dtype);
            let w = tensor(values(seed + 1, h * d * f, -0.5, 0.5), &[h, d, f], dtype);
            let want = hedgehog_feature_map_reference(&x, &w).unwrap();
            let got = hedgehog_feature_map(&x.to_device(&dev).unwrap(), &w.to_device(&dev).unwrap()).unwrap();
            assert_eq!(got.dtype(), dtype);
            check(&format!("hedgehog {dtype:?} D{d} F{f}"), &want, &got, tol(dtype));
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Linear,
    Simple,
    Gla,
}

/// Prefill with normalizer and/or feature maps, with an initial state, then one decode
/// step through the public `*_step` path (a one-token prefill on the device).
fn gated_case(dev: &Device, op: Op, dtype: DType, normalize: bool, maps: bool, seed: u64) {
    let (b, t, h, kd, vd, f) = (2usize, 70usize, 2usize, 32usize, 24usize, 8usize);
    let kx = if maps { 2 * f } else { kd };
    // Positive q, k so that q . z stays far from zero (docs/kernels.md).
    let (lo, hi) = if normalize && !maps { (0.0, 1.0) } else { (-1.0, 1.0) };
    let q = tensor(values(seed, b * t * h * kd, lo, hi), &[b, t, h, kd], dtype);
    let k = tensor(values(seed + 1, b * t * h * kd, lo, hi), &[b, t, h, kd], dtype);
    let v = tensor(values(seed + 2, b * t * h * vd, -1.0, 1.0), &[b, t, h, vd], dtype);
    let g = match op {
        Op::Linear => None,
        Op::Simple => Some(tensor(values(seed + 3, b * t * h, -0.3, -0.01), &[b, t, h], DType::F32)),
        Op::Gla => Some(tensor(values(seed + 3, b * t * h * kx, -0.3, -0.01), &[b, t, h, kx], DType::F32)),
    };
    let wq = tensor(values(seed + 4, h * kd * f, -0.3, 0.3), &[h, kd, f], DType::F32);
    let wk = tensor(values(seed + 5, h * kd * f, -0.3, 0.3), &[h, kd, f], DType::F32);
    let kv0 = tensor(values(seed + 6, b * h * kx * vd, -0.5, 0.5), &[b, h, kx, vd], DType::F32);
    let z0 = tensor(values(seed + 7, b * h * kx, 0.0, 1.0), &[b, h, kx], DType::F32);
    let on = |x: &Tensor| x.to_device(dev).unwrap();
    let run = |target: &Device, reference: bool| {
        let mv = |x: &Tensor| x.to_device(target).unwrap();
        let (fq, fk) = (mv(&wq), mv(&wk));
        let init = LinearState { kv: mv(&kv0), z: normalize.then(|| mv(&z0)) };
        let opts = AttnOptions {
            chunk_size: 32,
            initial_state: Some(&init),
            normalize,
            q_feature_map: maps.then_some(&fq),
            k_feature_map: maps.then_some(&fk),
            ..Default::default()
        };
        let (q, k, v, g) = (mv(&q), mv(&k), mv(&v), g.as_ref().map(mv));
        match (op, reference) {
            (Op::Linear, false) => linear_attn(&q, &k, &v, &opts),
            (Op::Linear, true) => linear_attn_reference(&q, &k, &v, &opts),
            (Op::Simple, false) => simple_gla(&q, &k, &v, g.as_ref().unwrap(), &opts),
            (Op::Simple, true) => simple_gla_reference(&q, &k, &v, g.as_ref().unwrap(), &opts),
            (Op::Gla, false) => gla(&q, &k, &v, g.as_ref().unwrap(), &opts),
            (Op::Gla, true) => gla_reference(&q, &k, &v, g.as_ref().unwrap(), &opts),
        }
        .unwrap()
    };
    let want = run(&Device::Cpu, true);
    let got = run(dev, false);
    let what = format!("{op:?} {dtype:?} normalize={normalize} maps={maps}");
    assert_eq!(got.output.dtype(), dtype);
    check(&format!("{what} output"), &want.output, &got.output, tol(dtype));
    check(&format!("{what} kv"), &want.final_state.kv, &got.final_state.kv, tol(dtype));
    assert_eq!(got.final_state.z.is_some(), normalize);
    if let (Some(zw), Some(zg)) = (&want.final_state.z, &got.final_state.z) {
        check(&format!("{what} z"), zw, zg, tol(dtype));
    }
    let _ = on;
}

#[test]
fn normalized_and_mapped_gated_ops_match_reference() {
    let Some(dev) = device() else { return };
    let mut seed = 100;
    for &dtype in &DTYPES {
        for op in [Op::Linear, Op::Simple, Op::Gla] {
            for (normalize, maps) in [(true, false), (false, true), (true, true)] {
                gated_case(&dev, op, dtype, normalize, maps, seed);
                seed += 10;
            }
        }
    }
}

fn window_inputs(
    seed: u64,
    dims: (usize, usize, usize, usize, usize, usize),
    dtype: DType,
) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) {
    let (b, t, h, d, v, f) = dims;
    let q = tensor(values(seed, b * t * h * d, -1.0, 1.0), &[b, t, h, d], dtype);
    let k = tensor(values(seed + 1, b * t * h * d, -1.0, 1.0), &[b, t, h, d], dtype);
    let vv = tensor(values(seed + 2, b * t * h * v, -1.0, 1.0), &[b, t, h, v], dtype);
    let wq = tensor(values(seed + 3, h * d * f, -0.3, 0.3), &[h, d, f], DType::F32);
    let wk = tensor(values(seed + 4, h * d * f, -0.3, 0.3), &[h, d, f], DType::F32);
    let logits = tensor(values(seed + 5, h, -2.5, 1.0), &[h], DType::F32);
    (q, k, vv, wq, wk, logits)
}

#[test]
fn window_linear_prefill_matches_reference() {
    let Some(dev) = device() else { return };
    let cases: [(usize, usize, usize, Option<Vec<usize>>); 4] =
        [(2, 150, 64, None), (1, 20, 8, None), (1, 97, 16, Some(vec![0, 5, 40, 40, 97])), (1, 300, 100, None)];
    for (i, &dtype) in DTYPES.iter().enumerate() {
        for (j, (b, t, w, cu)) in cases.iter().enumerate() {
            let dims = (*b, *t, 2, 32, 40, 16);
            let (q, k, v, wq, wk, logits) = window_inputs(1000 + 10 * (i * 4 + j) as u64, dims, dtype);
            let run = |target: &Device, reference: bool| {
                let mv = |x: &Tensor| x.to_device(target).unwrap();
                let (fq, fk) = (mv(&wq), mv(&wk));
                let opts = WindowOptions {
                    window: *w,
                    chunk_size: 32,
                    cu_seqlens: cu.as_deref(),
                    q_feature_map: Some(&fq),
                    k_feature_map: Some(&fk),
                    ..WindowOptions::default()
                };
                let args = (mv(&q), mv(&k), mv(&v), mv(&logits));
                if reference {
                    window_linear_reference(&args.0, &args.1, &args.2, &args.3, &opts).unwrap()
                } else {
                    window_linear(&args.0, &args.1, &args.2, &args.3, &opts).unwrap()
                }
            };
            let want = run(&Device::Cpu, true);
            let got = run(&dev, false);
            let what = format!("window {dtype:?} T{t} W{w} cu={cu:?}");
            assert_eq!(got.output.dtype(), dtype);
            check(&format!("{what} output"), &want.output, &got.output, tol(dtype));
            check(&format!("{what} S"), &want.state.linear.kv, &got.state.linear.kv, tol(dtype));
            let (zw, zg) = (want.state.linear.z.as_ref().unwrap(), got.state.linear.z.as_ref().unwrap());
            check(&format!("{what} z"), zw, zg, tol(dtype));
            // The cache holds the (rounded) inputs exactly.
            assert_eq!(want.state.keys.to_f32_vec().unwrap(), got.state.keys.to_f32_vec().unwrap(), "{what} keys");
            assert_eq!(
                want.state.values.to_f32_vec().unwrap(),
                got.state.values.to_f32_vec().unwrap(),
                "{what} values"
            );
            assert_eq!(
                want.state.tokens_seen.to_vec::<i64>().unwrap(),
                got.state.tokens_seen.to_vec::<i64>().unwrap(),
                "{what} tokens_seen"
            );
        }
    }
}

#[test]
fn window_linear_decode_matches_cpu_steps() {
    let Some(dev) = device() else { return };
    for (i, &dtype) in DTYPES.iter().enumerate() {
        let (n, h, d, v, f, w, steps) = (3usize, 2usize, 32usize, 24usize, 8usize, 6usize, 9usize);
        let (_, _, _, wq, wk, logits) = window_inputs(5000 + i as u64, (1, 1, h, d, v, f), dtype);
        let mut state_cpu = WindowState::empty(n, h, d, 2 * f, v, w).unwrap();
        let mut state_dev = state_cpu.clone();
        state_dev.linear.kv = state_dev.linear.kv.to_device(&dev).unwrap();
        state_dev.linear.z = state_dev.linear.z.map(|z| z.to_device(&dev).unwrap());
        state_dev.keys = state_dev.keys.to_device(&dev).unwrap();
        state_dev.values = state_dev.values.to_device(&dev).unwrap();
        state_dev.tokens_seen = state_dev.tokens_seen.to_device(&dev).unwrap();
        for s in 0..steps {
            let seed = 6000 + 100 * i as u64 + 10 * s as u64;
            let q = tensor(values(seed, n * h * d, -1.0, 1.0), &[n, h, d], dtype);
            let k = tensor(values(seed + 1, n * h * d, -1.0, 1.0), &[n, h, d], dtype);
            let vv = tensor(values(seed + 2, n * h * v, -1.0, 1.0), &[n, h, v], dtype);
            let step = |target: &Device, state: &WindowState| {
                let mv = |x: &Tensor| x.to_device(target).unwrap();
                let (fq, fk) = (mv(&wq), mv(&wk));
                let opts = WindowOptions {
                    window: w,
                    q_feature_map: Some(&fq),
                    k_feature_map: Some(&fk),
                    ..WindowOptions::default()
                };
                window_linear_step(&mv(&q), &mv(&k), &mv(&vv), &mv(&logits), state, &opts).unwrap()
            };
            let want = step(&Device::Cpu, &state_cpu);
            let got = step(&dev, &state_dev);
            let what = format!("window step {s} {dtype:?}");
            check(&format!("{what} output"), &want.output, &got.output, tol(dtype));
            check(&format!("{what} S"), &want.state.linear.kv, &got.state.linear.kv, tol(dtype));
            assert_eq!(want.state.keys.to_f32_vec().unwrap(), got.state.keys.to_f32_vec().unwrap(), "{what} keys");
            state_cpu = want.state;
            state_dev = got.state;
        }
    }
}
