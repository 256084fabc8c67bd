//! CUDA chunked linear-attention kernels against the f64 CPU reference.
//!
//! Without a CUDA device the tests print a skip reason, unless `LINATTN_REQUIRE_CUDA=1`
//! or `LINATTN_REQUIRE_GPU=1` makes them fail. The entry-point test needs no GPU: it
//! checks that the embedded PTX declares every kernel the Rust side launches.

use linattn_attn::gpu::{Gate, cuda as gpu};
use linattn_attn::{AttnOptions, LinearState, gla_reference, simple_gla_reference};
use linattn_tensor::{DType, Device, Tensor};

fn required() -> bool {
    linattn_tensor::cuda_required()
}

fn device() -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(!required(), "CUDA device required but unavailable: {e}");
            linattn_tensor::report_skip(&format!("CUDA test: no device ({e})"));
            None
        }
    }
}

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

fn log_decays(seed: u64, n: usize, temperature: f32) -> Vec<f32> {
    values(seed, n).into_iter().map(|x| -((-(3.0 * x)).exp().ln_1p()) / temperature).collect()
}

fn check(what: &str, reference: &Tensor, actual: &Tensor, tol: f64) {
    let r = reference.to_f32_vec().unwrap();
    let a = actual.to_f32_vec().unwrap();
    assert_eq!(reference.dims(), actual.dims(), "{what}: shapes");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &y) in r.iter().zip(&a) {
        assert!(y.is_finite(), "{what}: non-finite output");
        num += (x as f64 - y as f64).powi(2);
        den += (x as f64).powi(2);
    }
    let err = (num / den.max(1e-30)).sqrt();
    assert!(err <= tol, "{what}: relative RMS error {err:.3e} > {tol:.1e}");
}

#[test]
fn every_launched_entry_is_in_the_embedded_ptx() {
    for (module, entry) in gpu::launched_entries() {
        assert!(module.has_entry(&entry), "{} lacks .entry {entry}; found {:?}", module.name, module.entry_names());
    }
}

#[test]
fn chunk_forward_matches_reference() {
    let Some(dev) = device() else { return };
    // (T, K, V, chunk, dtype, per_key, cu, temperature, init)
    #[allow(clippy::type_complexity)]
    let cases: [(usize, usize, usize, usize, DType, bool, Option<Vec<usize>>, f32, bool); 6] = [
        (1, 16, 16, 64, DType::F32, false, None, 1.0, false),
        (300, 128, 100, 64, DType::F32, false, None, 1.0, true),
        (65, 60, 64, 32, DType::BF16, false, None, 1.0, false),
        (201, 32, 48, 16, DType::F16, false, Some(vec![0, 1, 1, 70, 201]), 0.1, true),
        (130, 64, 32, 64, DType::F32, true, None, 0.1, true),
        (97, 100, 60, 32, DType::BF16, true, Some(vec![0, 63, 97]), 1.0, false),
    ];
    for (i, (t, kd, vd, chunk, dtype, per_key, cu, temp, init)) in cases.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let b = if cu.is_some() { 1 } else { 2 };
        let h = 2;
        let n = cu.as_ref().map_or(b, |c| c.len() - 1);
        let q = Tensor::from_f32(&values(seed, b * t * h * kd), dtype, [b, t, h, kd]).unwrap();
        let k = Tensor::from_f32(&values(seed + 1, b * t * h * kd), dtype, [b, t, h, kd]).unwrap();
        let v = Tensor::from_f32(&values(seed + 2, b * t * h * vd), dtype, [b, t, h, vd]).unwrap();
        let g = if per_key {
            Tensor::from_f32(&log_decays(seed + 3, b * t * h * kd, temp), DType::F32, [b, t, h, kd]).unwrap()
        } else {
            Tensor::from_f32(&log_decays(seed + 3, b * t * h, temp), dtype, [b, t, h]).unwrap()
        };
        let s0 = Tensor::from_f32(&values(seed + 4, n * h * kd * vd), DType::F32, [n, h, kd, vd]).unwrap();
        let state = LinearState { kv: s0.clone(), z: None };
        let opts = AttnOptions {
            scale: Some(0.2),
            chunk_size: chunk,
            cu_seqlens: cu.as_deref(),
            initial_state: init.then_some(&state),
            ..Default::default()
        };
        let reference = if per_key {
            gla_reference(&q, &k, &v, &g, &opts).unwrap()
        } else {
            simple_gla_reference(&q, &k, &v, &g, &opts).unwrap()
        };
        let on = |x: &Tensor| x.to_device(&dev).unwrap();
        let (gd, s0d) = (on(&g), on(&s0));
        let gate = if per_key { Gate::PerKey(&gd) } else { Gate::PerToken(&gd) };
        let (o, s) =
            gpu::chunk_forward(&on(&q), &on(&k), &on(&v), gate, init.then_some(&s0d), cu.as_deref(), 0.2, chunk)
                .unwrap();
        let tol = if dtype == DType::F32 { 1e-4 } else { 5e-3 };
        check(&format!("case {i} output"), &reference.output, &o, tol);
        check(&format!("case {i} state"), &reference.final_state.kv, &s, tol);
    }
}

#[test]
fn decode_step_matches_reference() {
    let Some(dev) = device() else { return };
    let (n, h, kd, vd) = (3, 2, 60, 20);
    for per_key in [false, true] {
        let q = Tensor::from_f32(&values(600, n * h * kd), DType::BF16, [n, h, kd]).unwrap();
        let k = Tensor::from_f32(&values(601, n * h * kd), DType::BF16, [n, h, kd]).unwrap();
        let v = Tensor::from_f32(&values(602, n * h * vd), DType::BF16, [n, h, vd]).unwrap();
        let s0 = Tensor::from_f32(&values(603, n * h * kd * vd), DType::F32, [n, h, kd, vd]).unwrap();
        let g = if per_key {
            Tensor::from_f32(&log_decays(604, n * h * kd, 1.0), DType::F32, [n, h, kd]).unwrap()
        } else {
            Tensor::from_f32(&log_decays(604, n * h, 1.0), DType::F32, [n, h]).unwrap()
        };
        let state = LinearState { kv: s0.clone(), z: None };
        let opts = AttnOptions { scale: Some(0.25), ..Default::default() };
        let reference = if per_key {
            linattn_attn::gla_step(&q, &k, &v, &g, Some(&state), &opts).unwrap()
        } else {
            linattn_attn::simple_gla_step(&q, &k, &v, &g, Some(&state), &opts).unwrap()
        };
        let on = |x: &Tensor| x.to_device(&dev).unwrap();
        let gd = on(&g);
        let gate = if per_key { Gate::PerKey(&gd) } else { Gate::PerToken(&gd) };
        let (o, s) = gpu::decode_step(&on(&q), &on(&k), &on(&v), gate, &on(&s0), 0.25).unwrap();
        check(&format!("decode per_key={per_key} output"), &reference.output, &o, 5e-3);
        check(&format!("decode per_key={per_key} state"), &reference.final_state.kv, &s, 1e-5);
    }
}

/// Values in [0, 1): positive q, k keep q . z far from zero for the normalizer.
fn positive(seed: u64, n: usize) -> Vec<f32> {
    values(seed, n).into_iter().map(|x| 0.5 * (x + 1.0)).collect()
}

#[test]
fn hedgehog_normalizer_and_window_match_reference() {
    let Some(dev) = device() else { return };
    for (i, dtype) in [DType::F32, DType::BF16, DType::F16].into_iter().enumerate() {
        let tol = if dtype == DType::F32 { 1e-4 } else { 5e-3 };
        let seed = 900 + 10 * i as u64;
        let (b, t, h, d, vd, f) = (2usize, 70usize, 2usize, 32usize, 24usize, 8usize);
        let host = |data: Vec<f32>, shape: &[usize], dt: DType| Tensor::from_f32(&data, dt, shape.to_vec()).unwrap();
        let on = |x: &Tensor| x.to_device(&dev).unwrap();
        // Standalone Hedgehog.
        let x = host(values(seed, b * t * h * d), &[b, t, h, d], dtype);
        let w = host(values(seed + 1, h * d * f), &[h, d, f], DType::F32);
        let want = linattn_attn::hedgehog_feature_map_reference(&x, &w).unwrap();
        let got = linattn_attn::hedgehog_feature_map(&on(&x), &on(&w)).unwrap();
        check(&format!("hedgehog {dtype:?}"), &want, &got, tol);
        // Normalized simple GLA with fused feature maps.
        let q = host(positive(seed + 2, b * t * h * d), &[b, t, h, d], dtype);
        let k = host(positive(seed + 3, b * t * h * d), &[b, t, h, d], dtype);
        let v = host(values(seed + 4, b * t * h * vd), &[b, t, h, vd], dtype);
        let g = host(log_decays(seed + 5, b * t * h, 16.0), &[b, t, h], DType::F32);
        let w2 = host(values(seed + 6, h * d * f), &[h, d, f], DType::F32);
        let run = |target: &Device, reference: bool| {
            let mv = |x: &Tensor| x.to_device(target).unwrap();
            let (fq, fk) = (mv(&w), mv(&w2));
            let opts = AttnOptions {
                chunk_size: 32,
                normalize: true,
                q_feature_map: Some(&fq),
                k_feature_map: Some(&fk),
                ..Default::default()
            };
            let (q, k, v, g) = (mv(&q), mv(&k), mv(&v), mv(&g));
            if reference {
                simple_gla_reference(&q, &k, &v, &g, &opts).unwrap()
            } else {
                linattn_attn::simple_gla(&q, &k, &v, &g, &opts).unwrap()
            }
        };
        let (want, got) = (run(&Device::Cpu, true), run(&dev, false));
        check(&format!("normalized mapped simple_gla {dtype:?}"), &want.output, &got.output, tol);
        check(&format!("normalized mapped simple_gla {dtype:?} kv"), &want.final_state.kv, &got.final_state.kv, tol);
        let (zw, zg) = (want.final_state.z.unwrap(), got.final_state.z.unwrap());
        check(&format!("normalized mapped simple_gla {dtype:?} z"), &zw, &zg, tol);
        // Window hybrid prefill.
        let logits = host(vec![-2.2, 0.5], &[h], DType::F32);
        let win = |target: &Device, reference: bool| {
            let mv = |x: &Tensor| x.to_device(target).unwrap();
            let (fq, fk) = (mv(&w), mv(&w2));
            let opts = linattn_attn::WindowOptions {
                window: 16,
                chunk_size: 32,
                q_feature_map: Some(&fq),
                k_feature_map: Some(&fk),
                ..Default::default()
            };
            let (q, k, v, l) = (mv(&q), mv(&k), mv(&v), mv(&logits));
            if reference {
                linattn_attn::window_linear_reference(&q, &k, &v, &l, &opts).unwrap()
            } else {
                linattn_attn::window_linear(&q, &k, &v, &l, &opts).unwrap()
            }
        };
        let (want, got) = (win(&Device::Cpu, true), win(&dev, false));
        check(&format!("window_linear {dtype:?}"), &want.output, &got.output, tol);
        check(&format!("window_linear {dtype:?} S"), &want.state.linear.kv, &got.state.linear.kv, tol);
        assert_eq!(want.state.keys.to_f32_vec().unwrap(), got.state.keys.to_f32_vec().unwrap(), "window keys");
    }
}

/// The window hybrid's decode step on CUDA against the CPU step, every dtype: W = 6 and
/// nine steps, so the ring buffer wraps and tokens are evicted into S and z; Hedgehog
/// maps on q and k.
#[test]
fn window_linear_decode_matches_cpu_steps() {
    let Some(dev) = device() else { return };
    for (i, dtype) in [DType::F32, DType::BF16, DType::F16].into_iter().enumerate() {
        let tol = if dtype == DType::F32 { 1e-4 } else { 5e-3 };
        let (n, h, d, vd, f, w, steps) = (3usize, 2usize, 32usize, 24usize, 8usize, 6usize, 9usize);
        let host = |data: Vec<f32>, shape: &[usize], dt: DType| Tensor::from_f32(&data, dt, shape.to_vec()).unwrap();
        let seed = 7000 + 100 * i as u64;
        let wq = host(values(seed, h * d * f), &[h, d, f], DType::F32);
        let wk = host(values(seed + 1, h * d * f), &[h, d, f], DType::F32);
        let logits = host(vec![-2.2, 0.5], &[h], DType::F32);
        let mut state_cpu = linattn_attn::WindowState::empty(n, h, d, 2 * f, vd, w).unwrap();
        let mut state_dev = state_cpu.clone();
        state_dev.linear.kv = state_dev.linear.kv.to_device(&dev).unwrap();
        state_dev.linear.z = state_dev.linear.z.map(|z| z.to_device(&dev).unwrap());
        state_dev.keys = state_dev.keys.to_device(&dev).unwrap();
        state_dev.values = state_dev.values.to_device(&dev).unwrap();
        state_dev.tokens_seen = state_dev.tokens_seen.to_device(&dev).unwrap();
        for s in 0..steps {
            let seed = seed + 10 * (s as u64 + 1);
            let q = host(values(seed, n * h * d), &[n, h, d], dtype);
            let k = host(values(seed + 1, n * h * d), &[n, h, d], dtype);
            let v = host(values(seed + 2, n * h * vd), &[n, h, vd], dtype);
            let step = |target: &Device, state: &linattn_attn::WindowState| {
                let mv = |x: &Tensor| x.to_device(target).unwrap();
                let (fq, fk) = (mv(&wq), mv(&wk));
                let opts = linattn_attn::WindowOptions {
                    window: w,
                    q_feature_map: Some(&fq),
                    k_feature_map: Some(&fk),
                    ..Default::default()
                };
                linattn_attn::window_linear_step(&mv(&q), &mv(&k), &mv(&v), &mv(&logits), state, &opts).unwrap()
            };
            let want = step(&Device::Cpu, &state_cpu);
            let got = step(&dev, &state_dev);
            let what = format!("window step {s} {dtype:?}");
            check(&format!("{what} output"), &want.output, &got.output, tol);
            check(&format!("{what} S"), &want.state.linear.kv, &got.state.linear.kv, tol);
            let (zw, zg) = (want.state.linear.z.as_ref().unwrap(), got.state.linear.z.as_ref().unwrap());
            check(&format!("{what} z"), zw, zg, tol);
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
            state_cpu = want.state;
            state_dev = got.state;
        }
    }
}
