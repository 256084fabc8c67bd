//! GPU test cases shared by `gpu_wgpu.rs` and `gpu_cuda.rs` (included with `#[path]`):
//! fused dequantize-matmul of quantized weights against the CPU oracle
//! (`cpu::reference_matmul` on the dequantized weight, f64 accumulation), run on the
//! device the including file opens. LLM.int8's oracle is the CPU scheme
//! `Int8Weight::matmul_f32` instead (outlier columns in f32, the rest int8 x int8; the
//! GPU computes the same codes and integer sums, see [`int8_outlier_decomposition`]).
//! Tolerance: relative RMS error 1e-5 for f32 x; 5e-3 / 2e-2 for f16 / bf16 x (the
//! reference sees the same rounded x; the output is rounded once).
#![allow(dead_code)]

use linattn_quant::ByteView;
use linattn_quant::bnb::Int8Weight;
use linattn_quant::weight::ggml_matmul;
use linattn_quant::{QuantFormat, QuantizedWeight, cpu};
use linattn_tensor::{DType, Device, Error, Result, Tensor};

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
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
pub fn compare(reference: &[f32], actual: &[f32]) -> (f64, usize, f32, f32) {
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

/// Runs `x [m, cols] W^T` for a random `W [rows, cols]` of `w` through
/// `QuantizedWeight::matmul` (host weight, uploaded per call), the device-resident
/// `QuantizedWeight::to_device(..).matmul` and, for ggml formats, `ggml_matmul` (weight
/// tensor already on the device); every path must match the oracle within `tol`.
pub fn check_weight(dev: &Device, w: &QuantizedWeight, m: usize, dtype: DType, seed: u64, tol: f64) {
    check_weight_with_x(dev, w, &values(seed + 1, m * w.cols()), m, dtype, tol);
}

/// The oracle of `w` for the rounded `x [m, cols]`: the exact product with the dequantized
/// weight, or for LLM.int8 the CPU's mixed-precision scheme at the weight's threshold.
pub fn oracle(w: &QuantizedWeight, x: &[f32], m: usize) -> Vec<f32> {
    match w {
        QuantizedWeight::Int8(q) => q.matmul_f32(x, m, q.threshold).unwrap(),
        _ => cpu::reference_matmul(&w.dequantize_f32().unwrap(), w.rows(), w.cols(), x, m),
    }
}

/// [`check_weight`] with the given x values (rounded to `dtype` before the product);
/// returns the device output of the resident weight as f32.
pub fn check_weight_with_x(dev: &Device, w: &QuantizedWeight, x: &[f32], m: usize, dtype: DType, tol: f64) -> Vec<f32> {
    let (format, rows, cols) = (w.format(), w.rows(), w.cols());
    let x_host = Tensor::from_f32(x, dtype, [m, cols]).unwrap();
    let x_rounded = x_host.to_f32_vec().unwrap();
    let reference = oracle(w, &x_rounded, m);

    let x = x_host.to_device(dev).unwrap();
    let resident = w.to_device(dev).unwrap_or_else(|e| panic!("{format} to_device: {e}"));
    let mut paths: Vec<(&str, Result<Tensor>)> =
        vec![("DeviceQuantizedWeight::matmul", resident.matmul(&x)), ("QuantizedWeight::matmul", w.matmul(&x))];
    if format.ggml().is_some() {
        let w_dev = w.to_ggml_tensor().unwrap().to_device(dev).unwrap();
        paths.push(("ggml_matmul", ggml_matmul(&x, &w_dev)));
    }
    let mut resident_output = Vec::new();
    for (path, y) in paths {
        let y = y.unwrap_or_else(|e| panic!("{format} {path} rows {rows} cols {cols} m {m} {dtype}: {e}"));
        assert_eq!(y.dims(), &[m, rows]);
        assert_eq!(y.dtype(), dtype);
        assert!(!y.is_cpu(), "{path}: output left the device");
        let got = y.to_f32_vec().unwrap();
        let (err, i, r, a) = compare(&reference, &got);
        assert!(
            err <= tol,
            "{format} {path} rows {rows} cols {cols} m {m} {dtype}: rel RMS {err:.3e} > {tol:.0e}; \
             worst at {i} (token {}, row {}): reference {r} got {a}",
            i / rows.max(1),
            i % rows.max(1)
        );
        if resident_output.is_empty() {
            resident_output = got;
        }
    }
    resident_output
}

/// x [m, cols] in [-1, 1) with outliers for LLM.int8: entries of 7.5, exactly 6.0 and
/// -9.25 in a few columns, one row whose only non-zero entry is an outlier (m >= 3) and
/// one all-zero row (m >= 3).
pub fn int8_x_with_outliers(seed: u64, m: usize, cols: usize) -> Vec<f32> {
    let mut x = values(seed, m * cols);
    if m >= 3 {
        x[cols..3 * cols].fill(0.0);
        x[cols + cols / 2] = -9.25;
    }
    x[cols.min(5) - 1] = 7.5;
    let edge_row = if m >= 4 { m - 1 } else { 0 };
    x[edge_row * cols + cols / 3] = 6.0;
    x[(m / 2) * cols + cols - 1] = -9.25;
    x
}

/// LLM.int8 with outlier columns, several thresholds (6.0, 0 = pure int8, 0.5 = most
/// columns outliers), a weight code of -128 and x dtypes against the CPU scheme (`Int8Weight::matmul_f32`, rel
/// RMS 1e-5 for f32 x, 5e-3 / 2e-2 for f16 / bf16). Wherever the CPU scheme is more than
/// 1e-4 (rel RMS) from the exact product with the dequantized weight (some column is not
/// an outlier), the f32 device result must be too, so a kernel that skipped the int8
/// quantization of x fails.
pub fn int8_outlier_decomposition(dev: &Device) {
    let mut far_from_exact = 0;
    for (rows, cols, m) in [(7, 33, 1), (64, 4130, 3), (19, 301, 64), (3, 1, 2)] {
        let seed = (rows * 7 + cols + m) as u64;
        let mut base = Int8Weight::quantize(&values(seed, rows * cols), rows, cols).unwrap();
        // A code of -128, which our quantizer never writes but other files may hold.
        let mut codes = base.data.as_slice().to_vec();
        codes[rows * cols - 1] = 0x80;
        base.data = ByteView::from_vec(codes);
        let x = int8_x_with_outliers(seed + 1, m, cols);
        let exact = cpu::reference_matmul(&base.dequantize_f32().unwrap(), rows, cols, &x, m);
        for threshold in [6.0, 0.0, 0.5] {
            let w = QuantizedWeight::Int8(Int8Weight { threshold, ..base.clone() });
            for (dtype, tol) in [(DType::F32, 1e-5), (DType::F16, 5e-3), (DType::BF16, 2e-2)] {
                let got = check_weight_with_x(dev, &w, &x, m, dtype, tol);
                if dtype == DType::F32 && compare(&exact, &oracle(&w, &x, m)).0 > 1e-4 {
                    far_from_exact += 1;
                    let (err, ..) = compare(&exact, &got);
                    assert!(
                        err > 1e-4,
                        "int8 rows {rows} cols {cols} m {m} threshold {threshold}: rel RMS {err:.2e} from the \
                         exact product: the int8 quantization of x is not applied"
                    );
                }
            }
        }
    }
    assert!(far_from_exact >= 8, "only {far_from_exact} cases differ from the exact product");
}

/// LLM.int8 with NaN and infinite activations: they are outlier entries at any threshold,
/// so their rows of y are NaN (or infinite) on the GPU exactly where they are on the CPU,
/// and every other output matches the CPU scheme.
pub fn int8_non_finite_x(dev: &Device) {
    let (rows, cols, m) = (9, 70, 4);
    let base = Int8Weight::quantize(&values(91, rows * cols), rows, cols).unwrap();
    let mut x = values(92, m * cols);
    x[5] = f32::NAN; // row 0
    x[cols + 9] = f32::INFINITY; // row 1
    x[3 * cols + 11] = f32::NEG_INFINITY; // row 3
    for threshold in [6.0, 0.0] {
        let w = QuantizedWeight::Int8(Int8Weight { threshold, ..base.clone() });
        let cpu_y = oracle(&w, &x, m);
        assert!(cpu_y[..rows].iter().all(|v| v.is_nan()), "threshold {threshold}: CPU row 0 {:?}", &cpu_y[..rows]);
        assert!(cpu_y[2 * rows..3 * rows].iter().all(|v| v.is_finite()), "threshold {threshold}: CPU row 2");
        let xd = Tensor::from_f32(&x, DType::F32, [m, cols]).unwrap().to_device(dev).unwrap();
        let gpu_y = w.to_device(dev).unwrap().matmul(&xd).unwrap().to_f32_vec().unwrap();
        for (i, (&c, &g)) in cpu_y.iter().zip(&gpu_y).enumerate() {
            let same = if c.is_finite() {
                (c - g).abs() <= 1e-4 * (1.0 + c.abs())
            } else {
                c.is_nan() == g.is_nan() && (c.is_nan() || c == g)
            };
            assert!(same, "threshold {threshold}: output {i} (token {}, row {}): CPU {c}, GPU {g}", i / rows, i % rows);
        }
    }
}

/// [`check_weight`] for a random weight quantized to `format` with default parameters.
pub fn check(dev: &Device, format: QuantFormat, rows: usize, cols: usize, m: usize, dtype: DType, tol: f64) {
    let seed = (rows * 131 + cols * 7 + m) as u64;
    let w = QuantizedWeight::quantize(&values(seed, rows * cols), [rows, cols], format).unwrap();
    check_weight(dev, &w, m, dtype, seed, tol);
}

pub const ROWS: [usize; 4] = [1, 7, 64, 300];
pub const COLS: [usize; 4] = [32, 64, 4096, 4128];
pub const MS: [usize; 3] = [1, 3, 64];

/// Q8_0 / Q4_0 (blocks of 32) and the codebook formats over rows x cols x m, f32 x.
pub fn sweep(dev: &Device, format: QuantFormat) {
    for rows in ROWS {
        for cols in COLS {
            for m in MS {
                // Keep the f64 oracle cheap: the largest products run with fewer rows of x.
                if rows * cols * m > 300 * 4128 * 3 && m == 64 && rows > 7 {
                    continue;
                }
                check(dev, format, rows, cols, m, DType::F32, 1e-5);
            }
        }
    }
    // One large matmul tile sweep (m = 64 with many rows) at a moderate width.
    check(dev, format, 300, 64, 64, DType::F32, 1e-5);
    check(dev, format, 64, 4128, 64, DType::F32, 1e-5);
}

/// Q4_K / Q6_K: rows hold whole super-blocks of 256.
pub fn k_quant_sweep(dev: &Device, format: QuantFormat) {
    for rows in ROWS {
        for cols in [256, 4096, 4352] {
            for m in MS {
                if m == 64 && rows > 7 && cols > 256 {
                    continue;
                }
                check(dev, format, rows, cols, m, DType::F32, 1e-5);
            }
        }
    }
    check(dev, format, 64, 4352, 64, DType::F32, 1e-5);
    check(dev, format, 7, 512, 5, DType::F16, 5e-3);
    check(dev, format, 7, 512, 5, DType::BF16, 2e-2);
}

/// f16 / bf16 activations for each of `formats`.
pub fn half_precision_inputs(dev: &Device, formats: &[QuantFormat]) {
    for &format in formats {
        for (rows, cols, m) in [(7, 96, 3), (64, 4128, 5), (1, 32, 1)] {
            check(dev, format, rows, cols, m, DType::F16, 5e-3);
            check(dev, format, rows, cols, m, DType::BF16, 2e-2);
        }
    }
}

/// Non-default quant states of the codebook formats: odd widths (NF4 blocks running
/// across rows, a half byte at a row start), double-quantized absmax, other block sizes,
/// FP8 per-tensor and non-square block scales.
pub fn codebook_variants(dev: &Device) {
    use linattn_quant::bnb::{FourBitKind, FourBitWeight, Int8Weight};
    use linattn_quant::fp8::{Fp8Kind, Fp8Weight};
    for (rows, cols) in [(7, 33), (5, 100), (3, 1)] {
        for kind in [FourBitKind::Nf4, FourBitKind::Fp4] {
            for (blocksize, nested) in [(64, false), (64, true), (128, true), (4096, false)] {
                let seed = (rows * 31 + cols + blocksize) as u64;
                let w =
                    FourBitWeight::quantize(&values(seed, rows * cols), [rows, cols], kind, blocksize, nested).unwrap();
                check_weight(dev, &QuantizedWeight::FourBit(w), 3, DType::F32, seed, 1e-5);
            }
        }
        let seed = (rows * 17 + cols) as u64;
        let w = Int8Weight::quantize(&values(seed, rows * cols), rows, cols).unwrap();
        check_weight(dev, &QuantizedWeight::Int8(w), 3, DType::F32, seed, 1e-5);
        for kind in [Fp8Kind::E4M3, Fp8Kind::E5M2] {
            for block in [None, Some((128, 128)), Some((2, 16)), Some((1, 7))] {
                let w = Fp8Weight::quantize(&values(seed + 3, rows * cols), rows, cols, kind, block).unwrap();
                check_weight(dev, &QuantizedWeight::Fp8(w), 3, DType::F32, seed, 1e-5);
            }
        }
    }
    // A double-quantized NF4 weight at decode width with half-precision x.
    let w = FourBitWeight::quantize(&values(77, 64 * 4128), [64, 4128], FourBitKind::Nf4, 64, true).unwrap();
    check_weight(dev, &QuantizedWeight::FourBit(w.clone()), 1, DType::F32, 77, 1e-5);
    check_weight(dev, &QuantizedWeight::FourBit(w), 5, DType::BF16, 77, 2e-2);
}

/// Leading dims of x, a wrong last dim, a format without kernels on `dev` (if any), and
/// a truncated ggml weight rejected by `device_ggml_matmul` before the dispatch.
pub fn batched_leading_dims_and_errors(
    dev: &Device,
    unsupported: Option<QuantFormat>,
    device_ggml_matmul: fn(&Tensor, &Tensor) -> Result<Tensor>,
) {
    // x [2, 3, 64] -> y [2, 3, 5].
    let w = QuantizedWeight::quantize(&values(9, 5 * 64), [5, 64], QuantFormat::Q4_0).unwrap();
    let xs = values(10, 6 * 64);
    let x = Tensor::from_f32(&xs, DType::F32, [2, 3, 64]).unwrap().to_device(dev).unwrap();
    let y = w.matmul(&x).unwrap();
    assert_eq!(y.dims(), &[2, 3, 5]);
    let reference = cpu::reference_matmul(&w.dequantize_f32().unwrap(), 5, 64, &xs, 6);
    let (err, ..) = compare(&reference, &y.to_f32_vec().unwrap());
    assert!(err <= 1e-5, "rel RMS {err:.3e}");
    // The same through a device-resident weight, twice (the buffers are reused).
    let resident = w.to_device(dev).unwrap();
    for _ in 0..2 {
        let y = resident.matmul(&x).unwrap();
        assert_eq!(y.dims(), &[2, 3, 5]);
        let (err, ..) = compare(&reference, &y.to_f32_vec().unwrap());
        assert!(err <= 1e-5, "rel RMS {err:.3e}");
    }
    // A device weight refuses x on the host.
    assert!(resident.matmul(&Tensor::from_f32(&xs, DType::F32, [6, 64]).unwrap()).is_err());

    // Wrong last dim.
    let bad = Tensor::from_f32(&values(11, 32), DType::F32, [1, 32]).unwrap().to_device(dev).unwrap();
    let err = w.matmul(&bad).unwrap_err().to_string();
    assert!(err.contains("[1, 32]") || err.contains("32"), "{err}");
    assert!(resident.matmul(&bad).is_err());
    // Formats without GPU kernels say so.
    if let Some(format) = unsupported {
        let k = QuantizedWeight::quantize(&values(12, 256), [1, 256], format).unwrap();
        let xk = Tensor::from_f32(&values(13, 256), DType::F32, [1, 256]).unwrap().to_device(dev).unwrap();
        assert!(matches!(k.matmul(&xk), Err(Error::NotImplementedOnDevice { .. })));
        assert!(matches!(k.to_device(dev), Err(Error::NotImplementedOnDevice { .. })));
    }
    // The CPU is not a device for device weights.
    assert!(matches!(w.to_device(&Device::Cpu), Err(Error::NotImplementedOnDevice { .. })));
    // A truncated weight buffer is rejected before the dispatch.
    let short = Tensor::from_bytes(&[0u8; 34], DType::Q8_0, [1, 32]).unwrap().to_device(dev).unwrap();
    let x64 = Tensor::from_f32(&values(14, 64), DType::F32, [1, 64]).unwrap().to_device(dev).unwrap();
    assert!(device_ggml_matmul(&short, &x64).is_err());
}

/// Expands to every `#[test]` of the GPU suite for one backend: `$device` is a
/// `fn() -> Option<Device>` that opens the device (or prints why the test is skipped) and
/// `$ggml_matmul` the backend's `ggml_matmul(w, x)` launch. Every format has kernels on
/// both backends, so the error case has no unsupported format.
macro_rules! gpu_case_tests {
    ($device:path, $ggml_matmul:path) => {
        use linattn_quant::QuantFormat;

        #[test]
        fn q8_0_f32_matches_reference() {
            let Some(dev) = $device() else { return };
            gpu_cases::sweep(&dev, QuantFormat::Q8_0);
        }

        #[test]
        fn q4_0_f32_matches_reference() {
            let Some(dev) = $device() else { return };
            gpu_cases::sweep(&dev, QuantFormat::Q4_0);
        }

        #[test]
        fn q4_k_f32_matches_reference() {
            let Some(dev) = $device() else { return };
            gpu_cases::k_quant_sweep(&dev, QuantFormat::Q4K);
        }

        #[test]
        fn q6_k_f32_matches_reference() {
            let Some(dev) = $device() else { return };
            gpu_cases::k_quant_sweep(&dev, QuantFormat::Q6K);
        }

        #[test]
        fn nf4_f32_matches_reference() {
            let Some(dev) = $device() else { return };
            gpu_cases::sweep(&dev, QuantFormat::Nf4);
        }

        #[test]
        fn fp4_f32_matches_reference() {
            let Some(dev) = $device() else { return };
            gpu_cases::sweep(&dev, QuantFormat::Fp4);
        }

        #[test]
        fn int8_f32_matches_reference() {
            let Some(dev) = $device() else { return };
            gpu_cases::sweep(&dev, QuantFormat::Int8);
        }

        #[test]
        fn int8_outlier_decomposition_matches_cpu() {
            let Some(dev) = $device() else { return };
            gpu_cases::int8_outlier_decomposition(&dev);
        }

        #[test]
        fn int8_non_finite_activations_reach_the_output() {
            let Some(dev) = $device() else { return };
            gpu_cases::int8_non_finite_x(&dev);
        }

        #[test]
        fn fp8_e4m3_f32_matches_reference() {
            let Some(dev) = $device() else { return };
            gpu_cases::sweep(&dev, QuantFormat::Fp8E4M3);
        }

        #[test]
        fn fp8_e5m2_f32_matches_reference() {
            let Some(dev) = $device() else { return };
            gpu_cases::sweep(&dev, QuantFormat::Fp8E5M2);
        }

        #[test]
        fn codebook_quant_states() {
            let Some(dev) = $device() else { return };
            gpu_cases::codebook_variants(&dev);
        }

        #[test]
        fn half_precision_inputs() {
            let Some(dev) = $device() else { return };
            gpu_cases::half_precision_inputs(&dev, &[QuantFormat::Q8_0, QuantFormat::Q4_0]);
            gpu_cases::half_precision_inputs(&dev, &[QuantFormat::Nf4, QuantFormat::Int8, QuantFormat::Fp8E4M3]);
        }

        #[test]
        fn batched_leading_dims_and_errors() {
            let Some(dev) = $device() else { return };
            gpu_cases::batched_leading_dims_and_errors(&dev, None, $ggml_matmul);
        }
    };
}
