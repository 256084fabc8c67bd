//! WebGPU fused dequantize-matmul of ggml Q8_0 / Q4_0 / Q4_K weights against the CPU oracle
//! (`cpu::reference_matmul` on the dequantized weight, f64 accumulation).
//!
//! Runs on any wgpu adapter (Mesa lavapipe on CPU-only machines). Without an adapter the
//! tests print a skip reason, unless `LINATTN_REQUIRE_WGPU=1` or `LINATTN_REQUIRE_GPU=1`
//! makes them fail. Tolerance: relative RMS error 1e-5 for f32 x; for f16 / bf16 x the
//! reference sees the same rounded x and the output is rounded once (5e-3 / 2e-2).

use std::io::Write;

use linattn_quant::weight::ggml_matmul;
use linattn_quant::{QuantFormat, QuantizedWeight, cpu};
use linattn_tensor::wgpu::WgpuDevice;
use linattn_tensor::{DType, Device, Error, Tensor};

fn required() -> bool {
    let on = |name: &str| matches!(std::env::var(name).as_deref(), Ok("1") | Ok("true") | Ok("yes"));
    on("LINATTN_REQUIRE_WGPU") || on("LINATTN_REQUIRE_GPU")
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

/// Relative RMS error, and the index and pair of the largest absolute difference.
fn compare(reference: &[f32], actual: &[f32]) -> (f64, usize, f32, f32) {
    assert_eq!(reference.len(), actual.len(), "output lengths differ");
    let (mut num, mut den, mut worst) = (0.0f64, 0.0f64, 0usize);
    for (i, (&r, &a)) in reference.iter().zip(actual).enumerate() {
        assert!(a.is_finite(), "non-finite output {a} at {i}");
        num += (r as f64 - a as f64).powi(2);
        den += (r as f64).powi(2);
        if (r - a).abs() > (reference[worst] - actual[worst]).abs() {
            worst = i;
        }
    }
    ((num / den.max(1e-30)).sqrt(), worst, reference[worst], actual[worst])
}

/// Runs `x [m, cols] W^T` for a random `W [rows, cols]` through `QuantizedWeight::matmul`
/// (host weight, uploaded) and `ggml_matmul` (weight already on the device); both must
/// match the oracle within `tol`.
fn check(dev: &Device, format: QuantFormat, rows: usize, cols: usize, m: usize, dtype: DType, tol: f64) {
    let seed = (rows * 131 + cols * 7 + m) as u64;
    let w = QuantizedWeight::quantize(&values(seed, rows * cols), [rows, cols], format).unwrap();
    let x_host = Tensor::from_f32(&values(seed + 1, m * cols), dtype, [m, cols]).unwrap();
    let x_rounded = x_host.to_f32_vec().unwrap();
    let reference = cpu::reference_matmul(&w.dequantize_f32().unwrap(), rows, cols, &x_rounded, m);

    let x = x_host.to_device(dev).unwrap();
    let w_dev = w.to_ggml_tensor().unwrap().to_device(dev).unwrap();
    for (path, y) in [("QuantizedWeight::matmul", w.matmul(&x)), ("ggml_matmul", ggml_matmul(&x, &w_dev))] {
        let y = y.unwrap_or_else(|e| panic!("{format} {path} rows {rows} cols {cols} m {m} {dtype}: {e}"));
        assert_eq!(y.dims(), &[m, rows]);
        assert_eq!(y.dtype(), dtype);
        assert!(!y.is_cpu(), "{path}: output left the device");
        let (err, i, r, a) = compare(&reference, &y.to_f32_vec().unwrap());
        assert!(
            err <= tol,
            "{format} {path} rows {rows} cols {cols} m {m} {dtype}: rel RMS {err:.3e} > {tol:.0e}; \
             worst at {i} (token {}, row {}): reference {r} got {a}",
            i / rows.max(1),
            i % rows.max(1)
        );
    }
}

const ROWS: [usize; 4] = [1, 7, 64, 300];
const COLS: [usize; 4] = [32, 64, 4096, 4128];
const MS: [usize; 3] = [1, 3, 64];

fn sweep(format: QuantFormat) {
    let Some(dev) = device() else { return };
    for rows in ROWS {
        for cols in COLS {
            for m in MS {
                // Keep the f64 oracle cheap: the largest products run with fewer rows of x.
                if rows * cols * m > 300 * 4128 * 3 && m == 64 && rows > 7 {
                    continue;
                }
                check(&dev, format, rows, cols, m, DType::F32, 1e-5);
            }
        }
    }
    // One large matmul tile sweep (m = 64 with many rows) at a moderate width.
    check(&dev, format, 300, 64, 64, DType::F32, 1e-5);
    check(&dev, format, 64, 4128, 64, DType::F32, 1e-5);
}

#[test]
fn q8_0_f32_matches_reference() {
    sweep(QuantFormat::Q8_0);
}

#[test]
fn q4_0_f32_matches_reference() {
    sweep(QuantFormat::Q4_0);
}

#[test]
fn q4_k_f32_matches_reference() {
    let Some(dev) = device() else { return };
    // Q4_K rows hold whole super-blocks of 256.
    for rows in ROWS {
        for cols in [256, 4096, 4352] {
            for m in MS {
                if m == 64 && rows > 7 && cols > 256 {
                    continue;
                }
                check(&dev, QuantFormat::Q4K, rows, cols, m, DType::F32, 1e-5);
            }
        }
    }
    check(&dev, QuantFormat::Q4K, 64, 4352, 64, DType::F32, 1e-5);
    check(&dev, QuantFormat::Q4K, 7, 512, 5, DType::F16, 5e-3);
    check(&dev, QuantFormat::Q4K, 7, 512, 5, DType::BF16, 2e-2);
}

#[test]
fn half_precision_inputs() {
    let Some(dev) = device() else { return };
    for format in [QuantFormat::Q8_0, QuantFormat::Q4_0] {
        for (rows, cols, m) in [(7, 96, 3), (64, 4128, 5), (1, 32, 1)] {
            check(&dev, format, rows, cols, m, DType::F16, 5e-3);
            check(&dev, format, rows, cols, m, DType::BF16, 2e-2);
        }
    }
}

#[test]
fn batched_leading_dims_and_errors() {
    let Some(dev) = device() else { return };
    // x [2, 3, 64] -> y [2, 3, 5].
    let w = QuantizedWeight::quantize(&values(9, 5 * 64), [5, 64], QuantFormat::Q4_0).unwrap();
    let xs = values(10, 6 * 64);
    let x = Tensor::from_f32(&xs, DType::F32, [2, 3, 64]).unwrap().to_device(&dev).unwrap();
    let y = w.matmul(&x).unwrap();
    assert_eq!(y.dims(), &[2, 3, 5]);
    let reference = cpu::reference_matmul(&w.dequantize_f32().unwrap(), 5, 64, &xs, 6);
    let (err, ..) = compare(&reference, &y.to_f32_vec().unwrap());
    assert!(err <= 1e-5, "rel RMS {err:.3e}");

    // Wrong last dim.
    let bad = Tensor::from_f32(&values(11, 32), DType::F32, [1, 32]).unwrap().to_device(&dev).unwrap();
    let err = w.matmul(&bad).unwrap_err().to_string();
    assert!(err.contains("[1, 32]") || err.contains("32"), "{err}");
    // Formats without GPU kernels say so.
    let k = QuantizedWeight::quantize(&values(12, 256), [1, 256], QuantFormat::Q6K).unwrap();
    let xk = Tensor::from_f32(&values(13, 256), DType::F32, [1, 256]).unwrap().to_device(&dev).unwrap();
    assert!(matches!(k.matmul(&xk), Err(Error::NotImplementedOnDevice { .. })));
    // A truncated weight buffer is rejected before the dispatch.
    let short = Tensor::from_bytes(&[0u8; 34], DType::Q8_0, [1, 32]).unwrap().to_device(&dev).unwrap();
    let x64 = Tensor::from_f32(&values(14, 64), DType::F32, [1, 64]).unwrap().to_device(&dev).unwrap();
    assert!(linattn_quant::gpu::wgpu::ggml_matmul(&short, &x64).is_err());
}
