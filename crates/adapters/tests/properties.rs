//! Properties of the CPU adapter paths: fused == reference for every dtype, merged ==
//! unmerged, merge/unmerge round-trip within its bound, per-row adapter choice,
//! weighted combinations, gradients against finite differences.

mod common;

use std::collections::BTreeMap;

use common::{assert_close, random};
use linattn_adapters::multi::combine_adapters;
use linattn_adapters::train::{DropoutMask, init_dora_magnitude, init_lora_module, lora_backward, lora_forward_train};
use linattn_adapters::{
    AdapterSet, BaseLinear, Combination, DenseLinear, LoraAdapter, LoraConfig, LoraModule, ModuleKind, lora_forward,
    lora_forward_reference, merge_dora_weight, merge_weight, unmerge_weight,
};
use linattn_tensor::{DType, Tensor};

fn module(path: &str, n_out: usize, n_in: usize, r: usize, seed: u64, dora: bool) -> LoraModule {
    let a = random(&[r, n_in], seed, 0.3);
    let b = random(&[n_out, r], seed + 1, 0.3);
    let m = dora.then(|| {
        let v = random(&[n_out], seed + 2, 0.3).to_f32_vec().unwrap();
        Tensor::from_vec(v.iter().map(|x| 1.0 + x.abs()).collect::<Vec<f32>>(), [n_out]).unwrap()
    });
    LoraModule::new(path, ModuleKind::Linear, &a, &b, m.as_ref(), 1.7, false).unwrap()
}

#[test]
fn fused_matches_reference_across_shapes_and_dtypes() {
    // Odd sizes, rows not a multiple of the row block, rank 1 and large ranks.
    for (rows, n_in, n_out, r) in [(1, 3, 5, 1), (37, 33, 17, 8), (70, 64, 96, 16), (5, 8, 8, 8)] {
        for dora in [false, true] {
            let w = random(&[n_out, n_in], 7, 0.5);
            let bias = random(&[n_out], 8, 0.5);
            let m = module("p", n_out, n_in, r, 9, dora);
            for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2), (DType::F16, 3e-3)] {
                let lin = DenseLinear::new(w.to_dtype(dtype).unwrap())
                    .unwrap()
                    .with_bias(bias.to_dtype(dtype).unwrap())
                    .unwrap();
                let x = random(&[rows, n_in], 10, 1.0).to_dtype(dtype).unwrap();
                let fused = lora_forward(&lin, &m, &x).unwrap();
                assert_eq!(fused.dtype(), dtype);
                let reference = lora_forward_reference(&lin, &m, &x).unwrap();
                let what = format!("{rows}x{n_in}->{n_out} r{r} dora={dora} {dtype}");
                assert_close(&what, &fused.to_f32_vec().unwrap(), &reference.to_f32_vec().unwrap(), tol);
            }
        }
    }
}

#[test]
fn merged_equals_unmerged_and_round_trip_is_bounded() {
    let (n_out, n_in, r) = (24, 40, 6);
    let x = random(&[9, 3, n_in], 1, 1.0); // rank-3 input: rows are flattened
    for dora in [false, true] {
        let m = module("p", n_out, n_in, r, 2, dora);
        let w = random(&[n_out, n_in], 3, 0.5);
        let lin = DenseLinear::new(w.clone()).unwrap();
        let merged = DenseLinear::new(merge_weight(&w, &m).unwrap()).unwrap();
        let y_merged = merged.forward(&x).unwrap();
        let y_unmerged = lora_forward(&lin, &m, &x).unwrap();
        assert_eq!(y_unmerged.dims(), &[9, 3, n_out]);
        assert_close("merged vs unmerged", &y_merged.to_f32_vec().unwrap(), &y_unmerged.to_f32_vec().unwrap(), 1e-5);
        for (dtype, u) in [(DType::F32, 2f32.powi(-24)), (DType::BF16, 2f32.powi(-8)), (DType::F16, 2f32.powi(-11))] {
            let wd = w.to_dtype(dtype).unwrap();
            let back = if dora {
                let (merged, norm) = merge_dora_weight(&wd, &m).unwrap();
                unmerge_weight(&merged, &m, Some(&norm)).unwrap()
            } else {
                unmerge_weight(&merge_weight(&wd, &m).unwrap(), &m, None).unwrap()
            };
            assert_eq!(back.dtype(), dtype);
            let (orig, back, delta) = (wd.to_f32_vec().unwrap(), back.to_f32_vec().unwrap(), m.delta_weight().unwrap());
            // DoRA rescales by m/n and back: allow for the extra scaling roundings.
            let k = if dora { 6.0 } else { 3.0 };
            for i in 0..orig.len() {
                let bound = k * u * (orig[i].abs() + delta[i].abs()) + 1e-30;
                assert!(
                    (orig[i] - back[i]).abs() <= bound,
                    "{dtype} dora={dora} [{i}]: {} vs {} (bound {bound})",
                    orig[i],
                    back[i]
                );
            }
        }
    }
}

#[test]
fn fan_in_fan_out_merges_the_transposed_layout() {
    let (n_out, n_in) = (6, 10);
    let a = random(&[2, n_in], 1, 0.5);
    let b = random(&[n_out, 2], 2, 0.5);
    let plain = LoraModule::new("c", ModuleKind::Linear, &a, &b, None, 2.0, false).unwrap();
    let fifo = LoraModule::new("c", ModuleKind::Linear, &a, &b, None, 2.0, true).unwrap();
    let w = random(&[n_out, n_in], 3, 0.5);
    let w_t = linattn_adapters::base::transpose_2d(&w).unwrap();
    let merged_t = merge_weight(&w_t, &fifo).unwrap();
    let expect = linattn_adapters::base::transpose_2d(&merge_weight(&w, &plain).unwrap()).unwrap();
    assert_close("fifo merge", &merged_t.to_f32_vec().unwrap(), &expect.to_f32_vec().unwrap(), 1e-6);
    let err = merge_weight(&w, &fifo).unwrap_err().to_string();
    assert!(err.contains("[6, 10]") && err.contains("[10, 6]"), "{err}");
}

fn adapter_of(modules: Vec<LoraModule>, r: usize) -> LoraAdapter {
    let paths: Vec<String> = modules.iter().map(|m| m.path().to_string()).collect();
    let config = LoraConfig::new(r, r as f64, paths);
    let modules: BTreeMap<String, LoraModule> = modules.into_iter().map(|m| (m.path().to_string(), m)).collect();
    LoraAdapter { config, modules, saved_modules: BTreeMap::new(), file_dtype: DType::F32 }
}

#[test]
fn per_row_adapters_match_single_adapter_runs() {
    let (n_out, n_in) = (12, 20);
    let lin = DenseLinear::new(random(&[n_out, n_in], 1, 0.5)).unwrap();
    let mut set = AdapterSet::new();
    let m0 = module("q", n_out, n_in, 4, 10, false);
    let m1 = module("q", n_out, n_in, 2, 20, true);
    set.insert("a", adapter_of(vec![m0.clone()], 4)).unwrap();
    set.insert("b", adapter_of(vec![m1.clone()], 2)).unwrap();
    set.insert("other", adapter_of(vec![module("k", n_out, n_in, 2, 30, false)], 2)).unwrap();
    let x = random(&[35, n_in], 2, 1.0);
    let choice: Vec<Option<usize>> = (0..35).map(|i| [None, Some(0), Some(1), Some(2)][i % 4]).collect();
    let y = set.forward_mixed("q", &lin, &x, &choice).unwrap().to_f32_vec().unwrap();
    let (y0, y1, yb) = (
        lora_forward(&lin, &m0, &x).unwrap().to_f32_vec().unwrap(),
        lora_forward(&lin, &m1, &x).unwrap().to_f32_vec().unwrap(),
        lin.forward(&x).unwrap().to_f32_vec().unwrap(),
    );
    for (row, c) in choice.iter().enumerate() {
        let want = match c {
            Some(0) => &y0,
            Some(1) => &y1,
            _ => &yb, // None, or an adapter without module `q`
        };
        let sl = row * n_out..(row + 1) * n_out;
        assert_close(&format!("row {row} ({c:?})"), &y[sl.clone()], &want[sl], 1e-6);
    }
    set.set_active(Some("b")).unwrap();
    assert_eq!(set.active(), Some("b"));
    assert_close("active", &set.forward("q", &lin, &x).unwrap().to_f32_vec().unwrap(), &y1, 1e-6);
    assert!(set.set_active(Some("missing")).unwrap_err().to_string().contains("missing"));
    let err = set.forward_mixed("q", &lin, &x, &choice[..3]).unwrap_err().to_string();
    assert!(err.contains("3 adapter choices") && err.contains("35 rows"), "{err}");
    assert!(set.forward_mixed("q", &lin, &x, &vec![Some(7); 35]).unwrap_err().to_string().contains("index 7"));
}

fn weighted_delta(parts: &[(&LoraModule, f32)]) -> Vec<f32> {
    let mut d = vec![0f32; parts[0].0.out_features() * parts[0].0.in_features()];
    for (m, w) in parts {
        d.iter_mut().zip(m.delta_weight().unwrap()).for_each(|(acc, v)| *acc += w * v);
    }
    d
}

#[test]
fn combinations_follow_their_definitions() {
    let (n_out, n_in) = (10, 14);
    let (m1, m2) = (module("q", n_out, n_in, 3, 1, false), module("q", n_out, n_in, 3, 5, false).with_scaling(0.5));
    let (a1, a2) = (adapter_of(vec![m1.clone()], 3), adapter_of(vec![m2.clone()], 3));
    let (w1, w2) = (0.7f32, -1.3f32);
    let want = weighted_delta(&[(&m1, w1), (&m2, w2)]);

    let cat = combine_adapters(&[(&a1, w1), (&a2, w2)], Combination::Cat).unwrap();
    let c = cat.module("q").unwrap();
    assert_eq!((c.rank(), c.scaling(), cat.config.r), (6, 1.0, 6));
    assert_close("cat == weighted sum", &c.delta_weight().unwrap(), &want, 1e-5);

    let lin = combine_adapters(&[(&a1, w1), (&a2, w2)], Combination::Linear).unwrap();
    let l = lin.module("q").unwrap();
    let (s1, s2) = ((w1 * m1.scaling()).abs().sqrt(), (w2 * m2.scaling()).abs().sqrt());
    let a_want: Vec<f32> =
        m1.a().to_f32_vec().unwrap().iter().zip(m2.a().to_f32_vec().unwrap()).map(|(x, y)| s1 * x - s2 * y).collect();
    assert_close("linear A", &l.a().to_f32_vec().unwrap(), &a_want, 1e-6);

    // Full-rank SVD reproduces the weighted delta; truncation keeps the top components.
    let full = combine_adapters(&[(&a1, w1), (&a2, w2)], Combination::Svd { rank: 6 }).unwrap();
    assert_close("svd rank 6", &full.module("q").unwrap().delta_weight().unwrap(), &want, 1e-5);
    let trunc = combine_adapters(&[(&a1, w1), (&a2, w2)], Combination::Svd { rank: 2 }).unwrap();
    let t = trunc.module("q").unwrap();
    assert_eq!(t.rank(), 2);
    let err: f32 = t.delta_weight().unwrap().iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
    // Eckart-Young: the error equals the norm of the dropped singular values (> 0 here).
    let svd = linattn_adapters::svd::svd(&want.iter().map(|&v| v as f64).collect::<Vec<_>>(), n_out, n_in).unwrap();
    let tail = svd.s[2..].iter().map(|s| s * s).sum::<f64>().sqrt() as f32;
    assert!(tail > 1e-3 && (err - tail).abs() < 1e-4 * tail.max(1.0), "err {err} tail {tail}");

    let other_rank = adapter_of(vec![module("q", n_out, n_in, 2, 9, false)], 2);
    let e = combine_adapters(&[(&a1, 1.0), (&other_rank, 1.0)], Combination::Linear).unwrap_err().to_string();
    assert!(e.contains("`q`") && e.contains("ranks 3 and 2"), "{e}");
    let dora = adapter_of(vec![module("q", n_out, n_in, 3, 9, true)], 3);
    assert!(combine_adapters(&[(&a1, 1.0), (&dora, 1.0)], Combination::Cat).is_err());

    let mut set = AdapterSet::new();
    set.insert("x", a1).unwrap();
    set.insert("y", a2).unwrap();
    let idx = set.add_weighted_adapter("xy", &[("x", w1), ("y", w2)], Combination::Cat).unwrap();
    assert_eq!(set.names()[idx], "xy");
}

/// Loss `sum(y * r)`; gradients vs central differences with the DoRA norm held fixed.
#[test]
fn gradients_match_finite_differences() {
    let (rows, n_in, n_out, r) = (5, 7, 6, 3);
    let w = random(&[n_out, n_in], 1, 0.5);
    let lin = DenseLinear::new(w.clone()).unwrap().with_bias(random(&[n_out], 2, 0.5)).unwrap();
    let x = random(&[rows, n_in], 3, 1.0);
    let upstream = random(&[rows, n_out], 4, 1.0);
    let loss = |m: &LoraModule, x: &Tensor, mask: Option<&DropoutMask>, norm: Option<&[f32]>| -> f64 {
        let y = linattn_adapters::train::forward_with_fixed_norm(&lin, m, x, mask, norm).unwrap();
        y.to_f32_vec().unwrap().iter().zip(upstream.to_f32_vec().unwrap()).map(|(a, b)| *a as f64 * b as f64).sum()
    };
    for dora in [false, true] {
        for use_mask in [false, true] {
            let m = module("p", n_out, n_in, r, 5, dora);
            let mask = use_mask.then(|| DropoutMask::sample(0.3, rows, n_in, 11).unwrap());
            let norm = dora.then(|| m.dora_weight_norm(&w.to_f32_vec().unwrap()).unwrap());
            let g = lora_backward(&lin, &m, &x, &upstream, mask.as_ref()).unwrap();
            let eps = 1e-2f32;
            let perturb = |t: &Tensor, i: usize, d: f32| {
                let mut v = t.to_f32_vec().unwrap();
                v[i] += d;
                Tensor::from_vec(v, t.dims().to_vec()).unwrap()
            };
            let rebuild = |a: &Tensor, b: &Tensor, mag: Option<&Tensor>| {
                LoraModule::new("p", ModuleKind::Linear, a, b, mag, m.scaling(), false).unwrap()
            };
            let what = format!("dora={dora} dropout={use_mask}");
            let check = |name: &str, analytic: &Tensor, f: &dyn Fn(usize, f32) -> f64| {
                let an = analytic.to_f32_vec().unwrap();
                let fd: Vec<f32> =
                    (0..an.len()).map(|i| ((f(i, eps) - f(i, -eps)) / (2.0 * eps as f64)) as f32).collect();
                assert_close(&format!("{what} {name}"), &an, &fd, 2e-3);
            };
            let n = norm.as_deref();
            check("dA", &g.d_a, &|i, d| {
                loss(&rebuild(&perturb(m.a(), i, d), m.b(), m.magnitude()), &x, mask.as_ref(), n)
            });
            check("dB", &g.d_b, &|i, d| {
                loss(&rebuild(m.a(), &perturb(m.b(), i, d), m.magnitude()), &x, mask.as_ref(), n)
            });
            check("dx", &g.d_x, &|i, d| loss(&m, &perturb(&x, i, d), mask.as_ref(), n));
            if let (Some(dm), Some(mag)) = (&g.d_magnitude, m.magnitude()) {
                check("dm", dm, &|i, d| loss(&rebuild(m.a(), m.b(), Some(&perturb(mag, i, d))), &x, mask.as_ref(), n));
            }
            // Inference forward == training forward without dropout.
            if !use_mask {
                let train = lora_forward_train(&lin, &m, &x, None).unwrap().to_f32_vec().unwrap();
                assert_close(&what, &train, &lora_forward(&lin, &m, &x).unwrap().to_f32_vec().unwrap(), 1e-5);
            }
        }
    }
}

#[test]
fn peft_init_starts_at_the_base_model() {
    let m = init_lora_module("q", ModuleKind::Linear, 64, 32, 8, 2.0, 42).unwrap();
    let a = m.a().to_f32_vec().unwrap();
    let bound = 1.0 / 8.0;
    assert!(a.iter().all(|v| v.abs() <= bound) && a.iter().any(|v| v.abs() > 0.9 * bound));
    assert!(m.b().to_f32_vec().unwrap().iter().all(|&v| v == 0.0));
    assert_eq!(init_lora_module("q", ModuleKind::Linear, 64, 32, 8, 2.0, 42).unwrap().a().to_f32_vec().unwrap(), a);
    let w = random(&[32, 64], 1, 0.5);
    let d = init_dora_magnitude(&m, &w).unwrap();
    let lin = DenseLinear::new(w).unwrap();
    let x = random(&[3, 64], 2, 1.0);
    let base = lin.forward(&x).unwrap().to_f32_vec().unwrap();
    assert_close("dora init", &lora_forward(&lin, &d, &x).unwrap().to_f32_vec().unwrap(), &base, 1e-6);
    let e = init_lora_module("e", ModuleKind::Embedding, 10, 4, 2, 1.0, 1).unwrap();
    assert!(e.a().to_f32_vec().unwrap().iter().all(|&v| v == 0.0));
    let mask = DropoutMask::sample(0.25, 100, 40, 3).unwrap();
    let dropped = mask.factors().iter().filter(|&&f| f == 0.0).count() as f32 / 4000.0;
    assert!((dropped - 0.25).abs() < 0.03, "{dropped}");
    assert!(mask.factors().iter().all(|&f| f == 0.0 || (f - 1.0 / 0.75).abs() < 1e-6));
}
