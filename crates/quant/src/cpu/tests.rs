//! Every CPU kernel ([`CpuKernel::available`]) against the scalar path and the f64
//! reference, on shapes that hit the SIMD kernels' tails: odd row counts, rows of an odd
//! number of blocks (a lone block after the last Q8_0 pair / Q4_0 quad), 4-bit rows that
//! end in a partial 128-element group, and inputs whose exact result is known.

use super::q8::Q8Acts;
use super::*;
use crate::bnb::FourBitKind;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    linattn_tensor::testing::uniform(n, seed, -1.0, 1.0)
}

/// Every kernel of the 8-bit-activation path against the scalar path (same integer
/// sums, f32 combination order only) and against the f32 reference within the
/// documented bound `sum_j |w_j| d_x(j) / 2` (plus f32 rounding).
#[test]
fn q8_matvec_matches_scalar_and_reference_within_bound() {
    println!("kernels tested: {:?}", CpuKernel::available());
    for fmt in GgmlFormat::ALL {
        // 32-element blocks: 1, 2, 3, 5, 6, 7, 12, 13 and 24 blocks per row plus a
        // 4096-column row (every remainder after pairs, quads and Q4_0's 8-block octets);
        // K formats: 1, 3 and 16 super-blocks.
        let shapes: &[(usize, usize)] = match fmt {
            GgmlFormat::Q4K | GgmlFormat::Q6K => &[(37, 768), (3, 256), (5, 4096)],
            _ => &[(37, 768), (1, 32), (3, 64), (5, 96), (7, 160), (2, 192), (9, 224), (2, 384), (4, 416), (3, 4096)],
        };
        for &(rows, cols) in shapes {
            q8_matvec_case(fmt, rows, cols);
        }
    }
}

fn q8_matvec_case(fmt: GgmlFormat, rows: usize, cols: usize) {
    let w = rand_vec(rows * cols, 21 + cols as u64);
    let mut x = rand_vec(cols, 22);
    x[5] = 7.5; // one large activation widens its block's step
    let bytes = crate::ggml::quantize(fmt, &w).unwrap();
    let deq = crate::ggml::dequantize(fmt, &bytes).unwrap();
    let reference = reference_matmul(&deq, rows, cols, &x, 1);
    let acts = Q8Acts::quantize(&x, Q8Acts::block_for(fmt));
    let mut scalar = vec![0.0; rows];
    ggml_matvec_q8_into(CpuKernel::Scalar, fmt, &bytes, rows, cols, &x, &mut scalar).unwrap();
    for kernel in CpuKernel::available() {
        let mut y = vec![0.0; rows];
        ggml_matvec_q8_into(kernel, fmt, &bytes, rows, cols, &x, &mut y).unwrap();
        for r in 0..rows {
            let wr = &deq[r * cols..(r + 1) * cols];
            let abs_dot: f32 = wr.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            let bound: f32 = wr.iter().enumerate().map(|(j, v)| v.abs() * acts.d[j / acts.block] / 2.0).sum();
            let tol = 1e-5 * abs_dot + 1e-6;
            assert!(
                (y[r] - scalar[r]).abs() <= tol,
                "{fmt} {kernel:?} {rows}x{cols} row {r}: {} vs scalar {}",
                y[r],
                scalar[r]
            );
            let err = (y[r] - reference[r]).abs();
            assert!(err <= bound + tol, "{fmt} {kernel:?} {rows}x{cols} row {r}: err {err} > bound {bound}");
        }
    }
}

#[test]
fn q8_matvec_rejects_bad_dims() {
    let bytes = crate::ggml::quantize(GgmlFormat::Q4_0, &rand_vec(4 * 64, 1)).unwrap();
    let mut y = vec![0.0; 4];
    assert!(ggml_matvec_q8_into(CpuKernel::Scalar, GgmlFormat::Q4_0, &bytes, 4, 64, &[0.0; 63], &mut y).is_err());
    assert!(ggml_matvec_q8_into(CpuKernel::Scalar, GgmlFormat::Q4_0, &bytes, 4, 48, &[0.0; 48], &mut y).is_err());
    let mut short = vec![0.0; 3];
    assert!(ggml_matvec_q8_into(CpuKernel::Scalar, GgmlFormat::Q4_0, &bytes, 4, 64, &[0.0; 64], &mut short).is_err());
}

/// NF4/FP4 matvec: SIMD against scalar and both against the f32 reference on the
/// dequantized weight, for several block sizes, double-quantized absmax, and a
/// shape whose rows cut blocks (row-decode fallback).
#[test]
fn fourbit_matvec_matches_scalar_and_reference() {
    for (kind, rows, cols, bs, dq) in [
        (FourBitKind::Nf4, 19, 256, 64, false),
        (FourBitKind::Fp4, 19, 256, 64, false),
        (FourBitKind::Nf4, 7, 512, 32, true),
        (FourBitKind::Nf4, 5, 512, 256, false),
        (FourBitKind::Fp4, 6, 96, 64, false),
        (FourBitKind::Nf4, 3, 33, 64, false),
    ] {
        let w = rand_vec(rows * cols, 7 + cols as u64);
        let x = rand_vec(cols, 8);
        let q = FourBitWeight::quantize(&w, [rows, cols], kind, bs, dq).unwrap();
        let reference = reference_matmul(&q.dequantize_f32().unwrap(), rows, cols, &x, 1);
        let mut scalar = vec![0.0; rows];
        fourbit_matvec_into(CpuKernel::Scalar, &q, &x, &mut scalar).unwrap();
        for kernel in CpuKernel::available() {
            let mut y = vec![0.0; rows];
            fourbit_matvec_into(kernel, &q, &x, &mut y).unwrap();
            for r in 0..rows {
                let tol = 1e-5 * (1.0 + reference[r].abs()) * (cols as f32).sqrt();
                assert!((y[r] - scalar[r]).abs() <= tol, "{kind:?} bs {bs} {kernel:?} row {r} vs scalar");
                assert!((y[r] - reference[r]).abs() <= tol, "{kind:?} bs {bs} {kernel:?} row {r} vs reference");
            }
        }
        let mut bad = vec![0.0; rows + 1];
        assert!(fourbit_matvec_into(CpuKernel::Scalar, &q, &x, &mut bad).is_err());
    }
}

/// Integer-valued weights and activations whose quantization is exact (every block holds
/// its format's extreme code, so every scale is 1.0): the 8-bit path must return the
/// exact integer dot product on every kernel, whatever the summation order.
#[test]
fn q8_matvec_is_exact_on_integer_inputs() {
    let pick = |i: usize, m: i64, span: i64| (((i * 2_654_435_761) >> 7) as i64 % span + m) as f32;
    for (fmt, lo, hi) in [(GgmlFormat::Q8_0, -127, 127), (GgmlFormat::Q4_0, -8, 7)] {
        for (rows, cols) in [(5, 416), (3, 4096 + 96), (1, 32)] {
            let mut w: Vec<f32> = (0..rows * cols).map(|i| pick(i, lo, hi - lo + 1)).collect();
            let mut x: Vec<f32> = (0..cols).map(|i| pick(i + 7, -127, 255)).collect();
            // The extreme code in every block fixes the scale to 1.
            w.chunks_mut(32).for_each(|b| b[(b.len() * 7) % 32] = if fmt == GgmlFormat::Q4_0 { -8.0 } else { 127.0 });
            x.chunks_mut(32).for_each(|b| b[3] = -127.0);
            let bytes = crate::ggml::quantize(fmt, &w).unwrap();
            assert_eq!(crate::ggml::dequantize(fmt, &bytes).unwrap(), w, "{fmt}: weights not exact");
            for kernel in CpuKernel::available() {
                let mut y = vec![0.0; rows];
                ggml_matvec_q8_into(kernel, fmt, &bytes, rows, cols, &x, &mut y).unwrap();
                for r in 0..rows {
                    let exact: i64 = (0..cols).map(|c| w[r * cols + c] as i64 * x[c] as i64).sum();
                    assert_eq!(y[r], exact as f32, "{fmt} {kernel:?} {rows}x{cols} row {r}");
                }
            }
        }
    }
}

/// `(kind, rows, cols, blocksize, double-quantized absmax)` of 4-bit weights whose rows
/// end in a partial 128-element group (blocks of 32 and 64, the 64-byte AVX-512 step)
/// or a partial 64-element step (the AVX2 q16 kernel), plus large blocks.
pub(super) const FOURBIT_TAIL_CASES: &[(FourBitKind, usize, usize, usize, bool)] = &[
    (FourBitKind::Nf4, 3, 32, 32, false),
    (FourBitKind::Nf4, 5, 96, 32, false),
    (FourBitKind::Fp4, 7, 160, 32, true),
    (FourBitKind::Nf4, 4, 224, 32, false),
    (FourBitKind::Nf4, 9, 64, 64, false),
    (FourBitKind::Nf4, 11, 192, 64, true),
    (FourBitKind::Fp4, 2, 320, 64, false),
    (FourBitKind::Nf4, 3, 384, 128, false),
    (FourBitKind::Nf4, 5, 768, 256, true),
    (FourBitKind::Fp4, 2, 8192, 4096, false),
];

/// NF4/FP4 matvec on rows that end in a partial 128-element group (blocks of 32 and 64),
/// and large blocks, for every kernel: same f32 products as the scalar path, so agreement
/// to f32 summation order.
#[test]
fn fourbit_matvec_tails_match_scalar() {
    for &(kind, rows, cols, bs, dq) in FOURBIT_TAIL_CASES {
        let w = rand_vec(rows * cols, 31 + cols as u64);
        let x = rand_vec(cols, 32 + bs as u64);
        let q = FourBitWeight::quantize(&w, [rows, cols], kind, bs, dq).unwrap();
        let mut scalar = vec![0.0; rows];
        fourbit_matvec_into(CpuKernel::Scalar, &q, &x, &mut scalar).unwrap();
        let reference = reference_matmul(&q.dequantize_f32().unwrap(), rows, cols, &x, 1);
        for kernel in CpuKernel::available() {
            let mut y = vec![0.0; rows];
            fourbit_matvec_into(kernel, &q, &x, &mut y).unwrap();
            for r in 0..rows {
                let abs_dot: f32 = (0..cols).map(|c| (w[r * cols + c] * x[c]).abs()).sum();
                let tol = 1e-6 * abs_dot * (cols as f32).log2() + 1e-6;
                let what = format!("{kind:?} {rows}x{cols} bs {bs} dq {dq} {kernel:?} row {r}");
                assert!((y[r] - scalar[r]).abs() <= tol, "{what}: {} vs scalar {}", y[r], scalar[r]);
                assert!((y[r] - reference[r]).abs() <= tol, "{what}: {} vs reference {}", y[r], reference[r]);
            }
        }
    }
}

/// Kernel names, availability and the fallback order.
#[test]
fn kernel_detection_and_parsing() {
    let available = CpuKernel::available();
    assert_eq!(available[0], CpuKernel::Scalar);
    assert_eq!(*available.last().unwrap(), CpuKernel::detect(), "detect() is the last (fastest) available");
    if CpuKernel::Avx512.is_available() {
        assert!(CpuKernel::Avx2Fma.is_available(), "AVX-512 kernels fall back to AVX2 for the f32 paths");
    }
    for (name, kernel) in [("scalar", CpuKernel::Scalar), ("AVX2", CpuKernel::Avx2Fma), ("avx512", CpuKernel::Avx512)] {
        assert_eq!(CpuKernel::parse(name).unwrap(), kernel);
    }
    assert!(CpuKernel::parse("neon").unwrap_err().to_string().contains("neon"));
}
