//! The 8-bit-activation products with several activation rows ([`ggml_matmul_q8_into`],
//! [`fourbit_matmul_q8_into`]) against the matvec of each row: bit for bit on every
//! kernel, with rows spread over several tiles, more activation rows than one
//! quantization chunk, rows holding a NaN or Inf, and double-quantized absmax.

use super::*;
use crate::bnb::FourBitKind;

fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    linattn_tensor::testing::uniform(n, seed, -1.0, 1.0)
}

/// `m` activation rows, row `j` scaled by `1 + j % 5` (different block scales per row),
/// with `bad` written into row `bad_row` when given.
fn activations(m: usize, cols: usize, seed: u64, bad: Option<(usize, f32)>) -> Vec<f32> {
    let mut x = rand_vec(m * cols, seed);
    for (j, row) in x.chunks_mut(cols).enumerate() {
        row.iter_mut().for_each(|v| *v *= (1 + j % 5) as f32);
    }
    if let Some((row, value)) = bad {
        x[row * cols + cols / 3] = value;
    }
    x
}

/// Asserts that row `j` of `y` is `matvec(x[j])` bit for bit (NaN matches NaN).
fn assert_rows_equal_matvecs(what: &str, y: &[f32], m: usize, rows: usize, matvec: impl Fn(usize, &mut [f32])) {
    for j in 0..m {
        let mut single = vec![0.0; rows];
        matvec(j, &mut single);
        for r in 0..rows {
            let (got, want) = (y[j * rows + r], single[r]);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{what}: activation row {j}, output {r}: {got} vs matvec {want}"
            );
        }
    }
}

#[test]
fn ggml_batched_rows_equal_their_matvecs() {
    // 37 rows cut into several tiles; 300 activation rows span two quantization chunks.
    let cases = [(2, None), (5, Some((3, f32::NAN))), (3, Some((0, f32::INFINITY))), (300, Some((260, f32::NAN)))];
    for fmt in GgmlFormat::ALL {
        let (rows, cols) = (37, if matches!(fmt, GgmlFormat::Q4K | GgmlFormat::Q6K) { 512 } else { 160 });
        let w = crate::ggml::quantize(fmt, &rand_vec(rows * cols, 3)).unwrap();
        for &(m, bad) in &cases {
            let x = activations(m, cols, 4 + m as u64, bad);
            for kernel in CpuKernel::available() {
                let mut y = vec![0.0; m * rows];
                ggml_matmul_q8_into(kernel, fmt, &w, rows, cols, &x, m, &mut y).unwrap();
                let what = format!("{fmt} {kernel:?} m {m}");
                assert_rows_equal_matvecs(&what, &y, m, rows, |j, yj| {
                    ggml_matvec_q8_into(kernel, fmt, &w, rows, cols, &x[j * cols..(j + 1) * cols], yj).unwrap()
                });
                if let Some((bad_row, _)) = bad {
                    assert!(y[bad_row * rows..(bad_row + 1) * rows].iter().all(|v| !v.is_finite()), "{what}");
                    assert!(y[..bad_row * rows].iter().all(|v| v.is_finite()), "{what}: rows before the bad one");
                }
            }
        }
    }
}

#[test]
fn fourbit_batched_rows_equal_their_matvecs() {
    // (kind, rows, cols, blocksize, double-quantized absmax); 4096-column rows make
    // tiles of a few rows with the nested absmax decoded per tile.
    let weights = [
        (FourBitKind::Nf4, 37, 256, 64, false),
        (FourBitKind::Nf4, 21, 4096, 64, true),
        (FourBitKind::Fp4, 9, 384, 128, true),
        (FourBitKind::Nf4, 5, 96, 32, false),
    ];
    for &(kind, rows, cols, bs, dq) in &weights {
        let q = FourBitWeight::quantize(&rand_vec(rows * cols, 7), [rows, cols], kind, bs, dq).unwrap();
        // m >= 8 takes the two-by-two block kernel on AVX-512 (rows of whole 128-element
        // groups), with an odd activation row left over when one row is not finite.
        for &(m, bad) in
            &[(4, None), (3, Some((1, f32::NAN))), (9, Some((4, f32::NAN))), (260, Some((259, f32::INFINITY)))]
        {
            if m > 9 && cols > 256 {
                continue; // the chunk boundary is covered by the small shapes
            }
            let x = activations(m, cols, 8 + m as u64, bad);
            for kernel in CpuKernel::available() {
                let mut y = vec![0.0; m * rows];
                fourbit_matmul_q8_into(kernel, &q, &x, m, &mut y).unwrap();
                let what = format!("{kind:?} {rows}x{cols} bs {bs} dq {dq} {kernel:?} m {m}");
                assert_rows_equal_matvecs(&what, &y, m, rows, |j, yj| {
                    fourbit_matvec_q8_into(kernel, &q, &x[j * cols..(j + 1) * cols], yj).unwrap()
                });
                if let Some((bad_row, _)) = bad {
                    assert!(y[bad_row * rows..(bad_row + 1) * rows].iter().all(|v| !v.is_finite()), "{what}");
                }
            }
        }
    }
    // A code table with a NaN: every activation row takes the f32 path.
    let mut q = FourBitWeight::quantize(&rand_vec(6 * 128, 9), [6, 128], FourBitKind::Nf4, 64, false).unwrap();
    q.code[3] = f32::NAN;
    let x = activations(3, 128, 10, None);
    let mut y = vec![0.0; 3 * 6];
    fourbit_matmul_q8_into(CpuKernel::detect(), &q, &x, 3, &mut y).unwrap();
    assert_rows_equal_matvecs("NaN code table", &y, 3, 6, |j, yj| {
        fourbit_matvec_into(CpuKernel::detect(), &q, &x[j * 128..(j + 1) * 128], yj).unwrap()
    });
}

#[test]
fn batched_products_reject_bad_dims() {
    let (rows, cols) = (4, 64);
    let w = crate::ggml::quantize(GgmlFormat::Q8_0, &rand_vec(rows * cols, 1)).unwrap();
    let x = rand_vec(3 * cols, 2);
    let mut y = vec![0.0; 3 * rows];
    let err = ggml_matmul_q8_into(CpuKernel::Scalar, GgmlFormat::Q8_0, &w, rows, cols, &x[1..], 3, &mut y).unwrap_err();
    assert!(err.to_string().contains("expected 3 x 64"), "{err}");
    let err = ggml_matmul_q8_into(CpuKernel::Scalar, GgmlFormat::Q8_0, &w, rows, cols, &x, 3, &mut y[1..]).unwrap_err();
    assert!(err.to_string().contains("expected 3 x 4"), "{err}");
    let q = FourBitWeight::quantize(&rand_vec(rows * cols, 3), [rows, cols], FourBitKind::Nf4, 64, false).unwrap();
    let err = fourbit_matmul_q8_into(CpuKernel::Scalar, &q, &x, 2, &mut y).unwrap_err();
    assert!(err.to_string().contains("expected 2 x 64"), "{err}");
    // m = 0 is an empty product.
    ggml_matmul_q8_into(CpuKernel::Scalar, GgmlFormat::Q8_0, &w, rows, cols, &[], 0, &mut []).unwrap();
    fourbit_matmul_q8_into(CpuKernel::Scalar, &q, &[], 0, &mut []).unwrap();
}

#[test]
fn quantized_weight_matmul_q8_rows_equal_matvec_into() {
    let (rows, cols, m) = (11, 256, 3);
    let values = rand_vec(rows * cols, 12);
    let x = activations(m, cols, 13, None);
    let kernel = CpuKernel::detect();
    for format in [crate::QuantFormat::Q4K, crate::QuantFormat::Q8_0, crate::QuantFormat::Nf4] {
        let qw = crate::QuantizedWeight::quantize(&values, [rows, cols], format).unwrap();
        let mut y = vec![0.0; m * rows];
        qw.matmul_q8_into(kernel, &x, m, &mut y).unwrap();
        assert_rows_equal_matvecs(&format!("{format}"), &y, m, rows, |j, yj| {
            qw.matvec_into(kernel, &x[j * cols..(j + 1) * cols], yj).unwrap()
        });
    }
    // Formats without an 8-bit-activation path run the f32 product.
    let fp8 = crate::QuantizedWeight::quantize(&values, [rows, cols], crate::QuantFormat::Fp8E4M3).unwrap();
    let (mut q8_path, mut f32_path) = (vec![0.0; m * rows], vec![0.0; m * rows]);
    fp8.matmul_q8_into(kernel, &x, m, &mut q8_path).unwrap();
    fp8.matmul_into(kernel, &x, m, &mut f32_path).unwrap();
    assert_eq!(q8_path, f32_path);
}
