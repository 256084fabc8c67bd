//! CPU prefill of quantized weights: `y [m, rows] = x [m, cols] W^T` for any weight
//! whose rows can be decoded to f32 (`decode_row(r, buf)`).
//!
//! Layout: the weight rows are cut into panels of up to [`PANEL_ROWS`] rows; a rayon task
//! decodes its panel once into a thread-local f32 buffer `[panel, cols]` and computes
//! `out [panel, m] = panel . x^T` into its part of a `[rows, m]` scratch, which is
//! transposed into `y` at the end. With a SIMD kernel and `m >= F32_GEMM_MIN_M` the panel
//! product is a single-threaded `gemm` call per [`GEMM_M_CHUNK`] activation rows (so
//! the activations `gemm` packs per call stay small; the crate's register-tiled kernels,
//! AVX-512 / AVX2 chosen by its run-time detection), so the weight is decoded once and
//! every decoded value is used `m` times from registers and caches; otherwise each row is
//! dotted with each activation row (`dot_f32`).
//!
//! Numerics: f32 products and sums; the gemm and the dot paths differ only in summation
//! order (tested against the f64 reference in `tests/ggml_formats.rs` and
//! `tests/bnb_formats.rs`).

use linattn_tensor::{Error, Result};
use rayon::prelude::*;

use super::{CpuKernel, dot_f32};

/// Weight rows per panel (64 rows of 4096 f32 = 1 MiB of decoded weights).
const PANEL_ROWS: usize = 64;
/// Activation rows from which the f32 products dequantize panels for a GEMM; fewer rows
/// take fused row dots (ggml: `ggml_matmul_into`'s tiles; NF4/FP4: one fused matvec per
/// activation row in `QuantizedWeight::matmul_into`), and this driver's own row dots
/// only for the scalar kernel.
pub const F32_GEMM_MIN_M: usize = 4;
/// Activation rows per GEMM call (64 rows of 4096 f32 = 1 MiB packed by `gemm`).
const GEMM_M_CHUNK: usize = 64;

/// Generic prefill driver (see the module header): `decode_row(r, buf)` writes row `r`
/// of `W` as f32 into `buf` (`cols` long). Rows are decoded once each.
pub fn rowwise_matmul_into<F>(
    kernel: CpuKernel,
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    decode_row: F,
) -> Result<()>
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let kernel = kernel.checked()?;
    if x.len() != m * cols || y.len() != m * rows {
        return Err(Error::invalid(format!(
            "matmul: x holds {} values (expected {m} x {cols}), y holds {} (expected {m} x {rows})",
            x.len(),
            y.len()
        )));
    }
    if m == 0 || rows == 0 {
        return Ok(());
    }
    let use_gemm = kernel != CpuKernel::Scalar && m >= F32_GEMM_MIN_M && cols > 0;
    let panel = rows.div_ceil(rayon::current_num_threads() * 4).clamp(1, PANEL_ROWS);
    let mut transposed = vec![0.0f32; rows * m];
    transposed.par_chunks_mut(panel * m).enumerate().for_each_init(Vec::new, |buf, (pi, out)| {
        let first = pi * panel;
        let n = out.len() / m;
        buf.resize(n * cols, 0.0);
        for (i, row) in buf.chunks_exact_mut(cols).enumerate() {
            decode_row(first + i, row);
        }
        if use_gemm {
            for t0 in (0..m).step_by(GEMM_M_CHUNK) {
                let t1 = (t0 + GEMM_M_CHUNK).min(m);
                panel_gemm(buf, &x[t0 * cols..t1 * cols], n, cols, (t0, t1, m), out);
            }
        } else {
            for (row, orow) in buf.chunks_exact(cols).zip(out.chunks_mut(m)) {
                for (t, o) in orow.iter_mut().enumerate() {
                    *o = dot_f32(kernel, row, &x[t * cols..(t + 1) * cols]);
                }
            }
        }
    });
    y.par_chunks_mut(rows).enumerate().for_each(|(t, yt)| {
        for (r, v) in yt.iter_mut().enumerate() {
            *v = transposed[r * m + t];
        }
    });
    Ok(())
}

/// Columns `t0..t1` of `out [n, m]` = `w [n, cols] . xs^T` with `xs [t1 - t0, cols]`
/// (activation rows `t0..t1`), single-threaded `gemm`.
fn panel_gemm(w: &[f32], xs: &[f32], n: usize, cols: usize, (t0, t1, m): (usize, usize, usize), out: &mut [f32]) {
    let width = t1 - t0;
    assert!(t1 <= m && w.len() == n * cols && xs.len() == width * cols && out.len() == n * m);
    // SAFETY: `w` holds n x cols (row stride cols, column stride 1); `xs` read as
    // xs^T [cols, width] (row stride 1, column stride cols) holds cols x width; the
    // destination starts at column t0 of `out` (row stride m, column stride 1) and spans
    // n rows of `width <= m - t0` columns. Every index lies inside its slice (asserted
    // lengths). `read_dst` is false, so `out` is only written.
    unsafe {
        gemm::gemm(
            n,
            width,
            cols,
            out.as_mut_ptr().add(t0),
            1,
            m as isize,
            false,
            w.as_ptr(),
            1,
            cols as isize,
            xs.as_ptr(),
            cols as isize,
            1,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
