//! CPU decode matvec of FP8 weights (E4M3 / E5M2, per-tensor or block scales):
//! `y[r] = sum over the row's scale spans of scale * sum(fp8_to_f32(q) * x)`.
//!
//! Layout: a row is `cols` code bytes; its scales come from [`Fp8Weight::row_scales`],
//! one per span of [`Fp8Weight::scale_span`] columns (128 for Hugging Face block
//! scales, the whole row for a per-tensor scale).
//!
//! Numerics: every code decodes exactly to f32 (both encodings are subsets of f32); the
//! products with `x` and their sums are f32, each span's sum is scaled once. The SIMD
//! kernels (`x86_fp8`) decode 8 or 16 codes per instruction sequence with exact bit
//! arithmetic and differ from [`fp8_row_dot_scalar`] only in summation order; the
//! row-decode path (`decode_row`, then a dot) scales each element before summing,
//! which differs by f32 rounding only.

use linattn_tensor::{Error, Result};

use super::{CpuKernel, for_each_row};
use crate::fp8::Fp8Weight;

/// Scalar dot of one FP8 row (`codes`, one scale per `span` columns) with `x`.
pub fn fp8_row_dot_scalar(codes: &[u8], scales: &[f32], span: usize, table: &[f32; 256], x: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for ((cs, xs), &scale) in codes.chunks(span).zip(x.chunks(span)).zip(scales) {
        let s: f32 = cs.iter().zip(xs).map(|(&b, &xv)| table[b as usize] * xv).sum();
        acc += scale * s;
    }
    acc
}

/// Decode matvec `y = W x` for an FP8 weight `[rows, cols]`, fused: codes are decoded
/// in registers (AVX-512 or AVX2 bit arithmetic, a table on the scalar path) and each
/// scale span's partial dot is scaled once. Allocates nothing.
pub fn fp8_matvec_into(kernel: CpuKernel, w: &Fp8Weight, x: &[f32], y: &mut [f32]) -> Result<()> {
    let kernel = kernel.checked()?;
    w.validate()?;
    if x.len() != w.cols || y.len() != w.rows {
        return Err(Error::invalid(format!(
            "fp8 matvec: x holds {} values (expected {}), y holds {} (expected {})",
            x.len(),
            w.cols,
            y.len(),
            w.rows
        )));
    }
    let span = w.scale_span();
    let table = w.kind.decode_table();
    match kernel {
        #[cfg(target_arch = "x86_64")]
        CpuKernel::Avx512 => for_each_row(y, w.cols, |r| {
            // SAFETY: Avx512 is used only after avx512f/bw/vl (and more) were detected;
            // slices are bounds-checked inside.
            unsafe { super::x86_fp8::row_dot_avx512(w.kind, w.row(r), w.row_scales(r), span, x) }
        }),
        #[cfg(target_arch = "x86_64")]
        CpuKernel::Avx2Fma => for_each_row(y, w.cols, |r| {
            // SAFETY: Avx2Fma is used only after avx2 + fma detection; slices are
            // bounds-checked inside.
            unsafe { super::x86_fp8::row_dot_avx2(w.kind, w.row(r), w.row_scales(r), span, x) }
        }),
        _ => for_each_row(y, w.cols, |r| fp8_row_dot_scalar(w.row(r), w.row_scales(r), span, table, x)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::reference_matmul;
    use crate::fp8::Fp8Kind;

    /// Every kernel against the scalar path (same decoded values and products, f32
    /// summation order only) and the f32 reference on the dequantized weight; per-tensor
    /// and block scales (128 x 128 and odd blocks that cut rows into ragged spans), odd
    /// column counts (masked tails), and every code value.
    #[test]
    fn fp8_matvec_matches_scalar_and_reference() {
        println!("kernels tested: {:?}", CpuKernel::available());
        for kind in [Fp8Kind::E4M3, Fp8Kind::E5M2] {
            for (rows, cols, block) in [
                (7, 256, None),
                (5, 300, Some((128, 128))),
                (9, 37, Some((2, 5))),
                (3, 1000, Some((3, 17))),
                (2, 8, None),
            ] {
                let w = linattn_tensor::testing::uniform(rows * cols, 3 + cols as u64, -2.0, 2.0);
                let x = linattn_tensor::testing::uniform(cols, 4 + rows as u64, -1.0, 1.0);
                let q = Fp8Weight::quantize(&w, rows, cols, kind, block).unwrap();
                let reference = reference_matmul(&q.dequantize_f32().unwrap(), rows, cols, &x, 1);
                let mut scalar = vec![0.0; rows];
                fp8_matvec_into(CpuKernel::Scalar, &q, &x, &mut scalar).unwrap();
                for kernel in CpuKernel::available() {
                    let mut y = vec![f32::NAN; rows];
                    fp8_matvec_into(kernel, &q, &x, &mut y).unwrap();
                    let deq = q.dequantize_f32().unwrap();
                    for r in 0..rows {
                        let abs_dot: f32 = (0..cols).map(|c| (deq[r * cols + c] * x[c]).abs()).sum();
                        let tol = 2e-6 * abs_dot * (cols as f32).log2().max(1.0) + 1e-30;
                        let what = format!("{kind:?} {rows}x{cols} {block:?} {kernel:?} row {r}");
                        assert!((y[r] - scalar[r]).abs() <= tol, "{what}: {} vs scalar {}", y[r], scalar[r]);
                        assert!((y[r] - reference[r]).abs() <= tol, "{what}: {} vs reference {}", y[r], reference[r]);
                    }
                }
                let mut bad = vec![0.0; rows + 1];
                assert!(fp8_matvec_into(CpuKernel::Scalar, &q, &x, &mut bad).is_err());
            }
        }
    }

    /// Every code of each encoding (NaN and infinity codes included) decodes to the
    /// table's value on every kernel: a row of zeros holding the code at one position
    /// (in the vector body and in the masked tail) against x one-hot at that position,
    /// so the result is exactly that value (infinities keep their sign, NaN stays NaN).
    #[test]
    fn every_code_decodes_like_the_table() {
        for kind in [Fp8Kind::E4M3, Fp8Kind::E5M2] {
            let table = kind.decode_table();
            for b in 0..=255u8 {
                let want = table[b as usize];
                for hot in [0, 7, 16, 33, 39] {
                    let mut codes = vec![0u8; 40];
                    codes[hot] = b;
                    let w = Fp8Weight {
                        kind,
                        rows: 1,
                        cols: 40,
                        data: crate::bytes::ByteView::from_vec(codes),
                        scale: crate::fp8::Fp8Scale::PerTensor(1.0),
                    };
                    let mut x = vec![0.0f32; 40];
                    x[hot] = 1.0;
                    for kernel in CpuKernel::available() {
                        let mut y = [0.0f32];
                        fp8_matvec_into(kernel, &w, &x, &mut y).unwrap();
                        let what = format!("{kind:?} {kernel:?} code {b:#04x} at {hot}: {} for {want}", y[0]);
                        assert!(y[0] == want || (want.is_nan() && y[0].is_nan()), "{what}");
                    }
                }
            }
        }
    }
}
