//! The integer NF4/FP4 decode paths, 15-bit ([`fourbit_matvec_q16_into`]) and 8-bit
//! ([`fourbit_matvec_q8_into`]), on every CPU kernel: against their scalar definitions
//! (same i32 lane sums, f32 combination only), and the scalar paths against the exact
//! f64 product of the dequantized weight within the bounds documented in [`super::q16`]
//! and [`super::q8_fourbit`]; plus NaN/Inf activations, which must reach the output
//! instead of being rounded away (the 8-bit ggml path too).

use super::*;
use crate::bnb::FourBitKind;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    linattn_tensor::testing::uniform(n, seed, -1.0, 1.0)
}

/// Activations with lanes of very different magnitudes, and an all-zero lane.
fn uneven_activations(cols: usize, seed: u64) -> Vec<f32> {
    let mut x = rand_vec(cols, seed);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= [1.0, 1e-3, 40.0, 0.25][(i / 8) % 4];
    }
    x[8..16.min(cols)].fill(0.0);
    x
}

/// One integer 4-bit path: its matvec, its error bound for a row, and the largest
/// bound per unit of `absmax * dx * code_max` it may reach.
#[derive(Clone, Copy, Debug)]
enum IntPath {
    Q16,
    Q8,
}

impl IntPath {
    fn matvec(self, kernel: CpuKernel, w: &FourBitWeight, x: &[f32], y: &mut [f32]) -> linattn_tensor::Result<()> {
        match self {
            IntPath::Q16 => fourbit_matvec_q16_into(kernel, w, x, y),
            IntPath::Q8 => fourbit_matvec_q8_into(kernel, w, x, y),
        }
    }

    /// The row's error bound and `sum over elements of absmax * dx * code_max`.
    fn bound_and_scales(self, w: &FourBitWeight, row: &[f32], r: usize, x: &[f32]) -> (f64, f64) {
        let (absmax, (rows, cols), bs) = (w.absmax_f32(), (w.shape.dims()[0], w.shape.dims()[1]), w.blocksize);
        assert!(r < rows);
        let absmax_of = |i: usize| absmax[(r * cols + i) / bs];
        let (bound, dx, code_max) = match self {
            IntPath::Q16 => {
                let acts = q16::Q16Acts::quantize(x);
                (acts.error_bound(&q16::Q16Code::new(&w.code), row, absmax_of, x), acts.dx, 16383.0)
            }
            IntPath::Q8 => {
                let acts = q8_fourbit::FourBitQ8Acts::quantize(x);
                (acts.error_bound(&q8_fourbit::FourBitQ8Code::new(&w.code), row, absmax_of, x), acts.dx, 127.0)
            }
        };
        let scales = (0..cols).map(|i| absmax_of(i) as f64 * dx[i / 8] as f64 * code_max).sum();
        (bound, scales)
    }

    /// Largest bound per unit of the operands' scales: `(1/2 + 1/2 + 1/(4 code_max)) /
    /// code_max` with both code tables peaking at 1, rounded up.
    fn relative_bound(self) -> f64 {
        match self {
            IntPath::Q16 => 7e-5,
            IntPath::Q8 => 8e-3,
        }
    }
}

#[test]
fn integer_matvecs_match_scalar_and_exact_product_within_bound() {
    println!("kernels tested: {:?}", CpuKernel::available());
    let whole_groups = [(FourBitKind::Nf4, 19, 256, 64, false), (FourBitKind::Fp4, 19, 256, 64, false)];
    let long_rows = [(FourBitKind::Nf4, 6, 4096, 64, false), (FourBitKind::Fp4, 3, 4096, 128, true)];
    for path in [IntPath::Q16, IntPath::Q8] {
        for &(kind, rows, cols, bs, dq) in whole_groups.iter().chain(super::tests::FOURBIT_TAIL_CASES).chain(&long_rows)
        {
            let w = rand_vec(rows * cols, 41 + cols as u64);
            let x = uneven_activations(cols, 42 + bs as u64);
            let q = FourBitWeight::quantize(&w, [rows, cols], kind, bs, dq).unwrap();
            let values = q.dequantize_f32().unwrap();
            let mut scalar = vec![0.0; rows];
            path.matvec(CpuKernel::Scalar, &q, &x, &mut scalar).unwrap();
            for r in 0..rows {
                let row = &values[r * cols..(r + 1) * cols];
                let exact: f64 = row.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                let abs_dot: f64 = row.iter().zip(&x).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
                let (bound, scales) = path.bound_and_scales(&q, row, r, &x);
                // Beyond the bound: f32 rounding of the lane products and of the final sum.
                let tol = bound * 1.001 + 1e-6 * abs_dot * (cols as f64).log2() + 1e-30;
                let err = (scalar[r] as f64 - exact).abs();
                let what = format!("{path:?} {kind:?} {rows}x{cols} bs {bs} dq {dq} row {r}");
                assert!(err <= tol, "{what}: error {err:e} > {tol:e}");
                assert!(
                    bound <= path.relative_bound() * scales + 1e-30,
                    "{what}: bound {bound:e} vs scales {scales:e}"
                );
            }
            for kernel in CpuKernel::available() {
                let mut y = vec![f32::NAN; rows];
                path.matvec(kernel, &q, &x, &mut y).unwrap();
                for r in 0..rows {
                    // The AVX-512 q8 kernel also rounds `absmax * 128 * dx * sum(xq)` per
                    // block: terms of the size of `absmax * |x|`, bounded by `scales`.
                    let (_, scales) = path.bound_and_scales(&q, &values[r * cols..(r + 1) * cols], r, &x);
                    let abs_dot: f32 = (0..cols).map(|c| (values[r * cols + c] * x[c]).abs()).sum();
                    let tol = 1e-6 * (abs_dot + scales as f32) * (cols as f32).log2() + 1e-30;
                    let what = format!("{path:?} {kind:?} {rows}x{cols} bs {bs} dq {dq} {kernel:?} row {r}");
                    assert!((y[r] - scalar[r]).abs() <= tol, "{what}: {} vs scalar {}", y[r], scalar[r]);
                }
            }
            let mut bad = vec![0.0; rows + 1];
            assert!(path.matvec(CpuKernel::Scalar, &q, &x, &mut bad).is_err());
        }
    }
}

/// The default matvec of a 4-bit weight is the q8 path; `matmul_into` with one row is
/// the f32 one. They agree within the q8 bound.
#[test]
fn quantized_weight_matvec_uses_q8() {
    let (rows, cols) = (7, 512);
    let w = rand_vec(rows * cols, 5);
    let x = rand_vec(cols, 6);
    let qw = crate::QuantizedWeight::quantize(&w, [rows, cols], crate::QuantFormat::Nf4).unwrap();
    let crate::QuantizedWeight::FourBit(q) = &qw else { panic!("nf4 gives a 4-bit weight") };
    let kernel = CpuKernel::detect();
    let (mut via_matvec, mut q8_direct, mut f32_path) = (vec![0.0; rows], vec![0.0; rows], vec![0.0; rows]);
    qw.matvec_into(kernel, &x, &mut via_matvec).unwrap();
    fourbit_matvec_q8_into(kernel, q, &x, &mut q8_direct).unwrap();
    qw.matmul_into(kernel, &x, 1, &mut f32_path).unwrap();
    assert_eq!(via_matvec, q8_direct);
    let values = q.dequantize_f32().unwrap();
    for r in 0..rows {
        let (bound, _) = IntPath::Q8.bound_and_scales(q, &values[r * cols..(r + 1) * cols], r, &x);
        let abs_dot: f32 = (0..cols).map(|c| (values[r * cols + c] * x[c]).abs()).sum();
        let tol = bound as f32 * 1.001 + 1e-5 * abs_dot;
        assert!((via_matvec[r] - f32_path[r]).abs() <= tol, "row {r}: {} vs f32 {}", via_matvec[r], f32_path[r]);
    }
}

/// A NaN or Inf in `x` (or in the code table) must show in the output on every kernel,
/// as in a dense product: the quantized-activation paths hand such inputs to the f32
/// kernels instead of rounding the value to a code.
#[test]
fn non_finite_activations_reach_the_output() {
    let (rows, cols) = (5, 256);
    let w = rand_vec(rows * cols, 9);
    let q = FourBitWeight::quantize(&w, [rows, cols], FourBitKind::Nf4, 64, false).unwrap();
    let ggml = crate::ggml::quantize(GgmlFormat::Q4_0, &w).unwrap();
    for bad in [f32::NAN, f32::INFINITY] {
        let mut x = rand_vec(cols, 10);
        x[77] = bad;
        for kernel in CpuKernel::available() {
            for path in [IntPath::Q16, IntPath::Q8] {
                let mut y = vec![0.0; rows];
                path.matvec(kernel, &q, &x, &mut y).unwrap();
                assert!(y.iter().all(|v| !v.is_finite()), "4-bit {path:?} {kernel:?} with {bad} in x: {y:?}");
            }
            let mut y = vec![0.0; rows];
            ggml_matvec_q8_into(kernel, GgmlFormat::Q4_0, &ggml, rows, cols, &x, &mut y).unwrap();
            assert!(y.iter().all(|v| !v.is_finite()), "q4_0 {kernel:?} with {bad} in x: {y:?}");
        }
    }
    // LLM.int8 (CPU scheme): a NaN or Inf entry is an outlier at any threshold, so its
    // row of y is non-finite and the other rows are untouched.
    let int8 = crate::bnb::Int8Weight::quantize(&w, rows, cols).unwrap();
    for threshold in [6.0, 0.0] {
        for bad in [f32::NAN, f32::INFINITY] {
            let mut x = rand_vec(2 * cols, 12);
            x[cols + 40] = bad;
            let y = int8.matmul_f32(&x, 2, threshold).unwrap();
            assert!(y[..rows].iter().all(|v| v.is_finite()), "int8 threshold {threshold}: clean row {y:?}");
            assert!(y[rows..].iter().all(|v| !v.is_finite()), "int8 threshold {threshold} with {bad}: {y:?}");
        }
    }
    let mut nan_code = q.clone();
    nan_code.code = [f32::NAN; 16];
    for path in [IntPath::Q16, IntPath::Q8] {
        let mut y = vec![0.0; rows];
        path.matvec(CpuKernel::detect(), &nan_code, &rand_vec(cols, 11), &mut y).unwrap();
        assert!(y.iter().all(|v| v.is_nan()), "{path:?} NaN code table: {y:?}");
    }
}
