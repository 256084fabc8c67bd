//! CPU fused dequantize-matmul: `y = x W^T` with `W [rows, cols]` quantized row-wise.
//!
//! - Decode (matvec, one activation row): rayon over chunks of output rows; each row is
//!   one fused dot product that widens the quantized bytes to f32 in registers and
//!   never materializes the row (AVX2+FMA kernels, or the scalar fallback).
//! - Prefill (matrix-matrix, `m` activation rows): rayon over chunks of weight rows;
//!   each weight row is dequantized once into a thread-local f32 buffer and dotted
//!   with all `m` activation rows (SIMD f32 dot), so decode cost is amortized over `m`.
//! - Formats without a fused kernel (bitsandbytes, FP8, int8) use the same row-decode
//!   driver ([`rowwise_matmul_into`]) with their own row decoder.
//!
//! Kernel choice is explicit ([`CpuKernel`]) so tests compare every SIMD path against
//! the scalar one; [`CpuKernel::detect`] picks the best available at run time
//! (`is_x86_feature_detected!`). AVX-512 machines use the AVX2 path (no AVX-512
//! kernels yet). Accumulation is f32 throughout.

#[cfg(target_arch = "x86_64")]
mod x86;

use linattn_tensor::{Error, Result};
use rayon::prelude::*;

use crate::ggml::GgmlFormat;

/// Which CPU kernel family computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpuKernel {
    /// Portable scalar Rust.
    Scalar,
    /// x86_64 AVX2 + FMA intrinsics.
    Avx2Fma,
}

impl CpuKernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> CpuKernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return CpuKernel::Avx2Fma;
            }
        }
        CpuKernel::Scalar
    }

    /// Whether this kernel can run on this CPU.
    pub fn is_available(self) -> bool {
        match self {
            CpuKernel::Scalar => true,
            CpuKernel::Avx2Fma => CpuKernel::detect() == CpuKernel::Avx2Fma,
        }
    }

    /// All kernels this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<CpuKernel> {
        [CpuKernel::Scalar, CpuKernel::Avx2Fma].into_iter().filter(|k| k.is_available()).collect()
    }

    fn checked(self) -> Result<CpuKernel> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(Error::invalid(format!("CPU kernel {self:?} is not supported by this CPU")))
        }
    }
}

/// f32 dot product with the given kernel.
#[inline]
pub(crate) fn dot_f32(kernel: CpuKernel, a: &[f32], b: &[f32]) -> f32 {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `CpuKernel::Avx2Fma` is only constructed for use after `checked()` /
        // `detect()` confirmed avx2 and fma on this CPU.
        CpuKernel::Avx2Fma => unsafe { x86::dot_f32(a, b) },
        _ => a.iter().zip(b).fold(0.0f32, |s, (x, y)| s + x * y),
    }
}

/// Fused dot product of one ggml row (`row.len()` = row bytes of `x.len()` elements)
/// with f32 activations.
#[inline]
pub(crate) fn ggml_row_dot(kernel: CpuKernel, format: GgmlFormat, row: &[u8], x: &[f32]) -> f32 {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_f32`: the Avx2Fma kernel exists only after feature
        // detection confirmed avx2 + fma. Slices are bounds-checked inside.
        CpuKernel::Avx2Fma => unsafe {
            match format {
                GgmlFormat::Q8_0 => x86::row_dot_q8_0(row, x),
                GgmlFormat::Q4_0 => x86::row_dot_q4_0(row, x),
                GgmlFormat::Q4K => x86::row_dot_q4_k(row, x),
                GgmlFormat::Q6K => x86::row_dot_q6_k(row, x),
            }
        },
        _ => {
            let (be, bb) = (format.block_elems(), format.block_bytes());
            row.chunks_exact(bb).zip(x.chunks_exact(be)).fold(0.0f32, |s, (b, xb)| s + format.dot_block_scalar(b, xb))
        }
    }
}

#[allow(clippy::too_many_arguments)] // mirrors the kernel entry points it validates
fn check_dims(
    what: &str,
    weight_len: usize,
    row_bytes: usize,
    rows: usize,
    x_len: usize,
    cols: usize,
    m: usize,
    y_len: usize,
) -> Result<()> {
    let want_w = rows.checked_mul(row_bytes).ok_or_else(|| Error::invalid(format!("{what}: {rows} rows overflow")))?;
    if weight_len != want_w {
        return Err(Error::invalid(format!(
            "{what}: weight holds {weight_len} bytes, expected {want_w} for {rows} rows x {cols} columns"
        )));
    }
    if x_len != m * cols {
        return Err(Error::invalid(format!("{what}: x holds {x_len} values, expected {m} x {cols}")));
    }
    if y_len != m * rows {
        return Err(Error::invalid(format!("{what}: y holds {y_len} values, expected {m} x {rows}")));
    }
    Ok(())
}

/// Rows per rayon task for matvec: enough bytes per task to amortize scheduling.
fn rows_per_task(row_bytes: usize, rows: usize) -> usize {
    let by_bytes = (64 * 1024 / row_bytes.max(1)).max(1);
    let by_threads = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
    by_bytes.min(by_threads).max(1)
}

/// Decode matvec into a preallocated output: `y[r] = dot(W[r, :], x)` for a ggml
/// weight of `rows x cols` stored in `weight`. Allocates nothing; benchmark-friendly.
pub fn ggml_matvec_into(
    kernel: CpuKernel,
    format: GgmlFormat,
    weight: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let kernel = kernel.checked()?;
    let rb = format.row_bytes(cols)?;
    check_dims("ggml matvec", weight.len(), rb, rows, x.len(), cols, 1, y.len())?;
    let chunk = rows_per_task(rb, rows);
    y.par_chunks_mut(chunk).enumerate().for_each(|(ci, yc)| {
        let base = ci * chunk;
        for (i, yv) in yc.iter_mut().enumerate() {
            let r = base + i;
            *yv = ggml_row_dot(kernel, format, &weight[r * rb..(r + 1) * rb], x);
        }
    });
    Ok(())
}

/// Generic prefill driver: `y [m, rows] = x [m, cols] W^T` where `decode_row(r, buf)`
/// writes row `r` of `W` as f32 into `buf` (`cols` long). Rows are decoded once each.
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
    let chunk = rows.div_ceil(rayon::current_num_threads() * 4).clamp(1, 64);
    let mut transposed = vec![0.0f32; rows * m];
    transposed.par_chunks_mut(chunk * m).enumerate().for_each_init(
        || vec![0.0f32; cols],
        |buf, (ci, out)| {
            for (i, orow) in out.chunks_mut(m).enumerate() {
                decode_row(ci * chunk + i, buf);
                for (t, o) in orow.iter_mut().enumerate() {
                    *o = dot_f32(kernel, buf, &x[t * cols..(t + 1) * cols]);
                }
            }
        },
    );
    for r in 0..rows {
        for t in 0..m {
            y[t * rows + r] = transposed[r * m + t];
        }
    }
    Ok(())
}

/// Prefill matmul into a preallocated output: `y [m, rows] = x [m, cols] W^T` for a
/// ggml weight. `m == 1` takes the fused matvec path.
#[allow(clippy::too_many_arguments)]
pub fn ggml_matmul_into(
    kernel: CpuKernel,
    format: GgmlFormat,
    weight: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    y: &mut [f32],
) -> Result<()> {
    let rb = format.row_bytes(cols)?;
    check_dims("ggml matmul", weight.len(), rb, rows, x.len(), cols, m, y.len())?;
    if m == 1 {
        return ggml_matvec_into(kernel, format, weight, rows, cols, x, y);
    }
    let (be, bb) = (format.block_elems(), format.block_bytes());
    rowwise_matmul_into(kernel, rows, cols, x, m, y, |r, buf| {
        for (b, o) in weight[r * rb..(r + 1) * rb].chunks_exact(bb).zip(buf.chunks_exact_mut(be)) {
            format.dequantize_block(b, o);
        }
    })
}

/// Naive oracle: `y [m, rows] = x W_f32^T` with a dense f32 `W [rows, cols]`, f64
/// accumulation. Used by tests as the reference the fast paths are compared against.
pub fn reference_matmul(w: &[f32], rows: usize, cols: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; m * rows];
    for t in 0..m {
        for r in 0..rows {
            let mut s = 0.0f64;
            for c in 0..cols {
                s += w[r * cols + c] as f64 * x[t * cols + c] as f64;
            }
            y[t * rows + r] = s as f32;
        }
    }
    y
}
