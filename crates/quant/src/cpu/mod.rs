//! CPU fused dequantize-matmul: `y = x W^T` with `W [rows, cols]` quantized row-wise.
//!
//! - Decode (matvec, one activation row): rayon over chunks of output rows; each row is
//!   one fused dot product that never materializes the row (AVX-512 or AVX2+FMA
//!   kernels, or the scalar fallback). Two precisions:
//!   - [`ggml_matvec_into`]: f32 activations, quantized bytes widened to f32 in
//!     registers (exact up to f32 summation order);
//!   - [`ggml_matvec_q8_into`] (every ggml format; what `QuantizedWeight::matvec_into`
//!     uses): `x` quantized once per call to 8-bit blocks ([`q8::Q8Acts`], llama.cpp's
//!     scheme), integer dot products, one f32 scale per block. Added error per output
//!     `<= sum_j |w_j| d_x(j) / 2` (see [`q8`]).
//! - bitsandbytes NF4/FP4 decode, three precisions:
//!   - [`fourbit_matvec_into`]: nibbles looked up in the 16-entry code table in
//!     registers, scaled by the block absmax, f32 FMA with `x` (exact up to f32
//!     summation order);
//!   - [`fourbit_matvec_q16_into`]: `x` and the code table quantized to 15-bit codes
//!     ([`q16`]), exact i32 sums per 8 elements, one f32 scale per 8 elements. Added
//!     error about 3e-5 relative per element (bound in [`q16`]); half the vector work
//!     of the f32 kernel;
//!   - [`fourbit_matvec_q8_into`] (what `QuantizedWeight::matvec_into` uses): the same
//!     scheme with 8-bit codes ([`q8_fourbit`]), about 4e-3 relative per element (a
//!     bf16 rounding of the operands); byte shuffles and `vpdpbusd` instead of word
//!     permutes: 1.45x the q16 kernel's speed in L2, 1.1x from memory (two Zen 4 cores,
//!     14336x4096: 37.4-38.3 against 33.6-34.4 GB/s).
//! - The quantized-activation paths need finite `x`: with a NaN or Inf in `x` they run
//!   the f32 path instead, so the non-finite value reaches the output as in a dense
//!   product rather than being rounded away.
//! - FP8 decode: [`fp8::fp8_matvec_into`], codes decoded to f32 in registers with exact
//!   bit arithmetic, each scale span's partial dot scaled once.
//! - Batched decode and prefill with 8-bit activations ([`ggml_matmul_q8_into`],
//!   [`fourbit_matmul_q8_into`], module `batched_q8`; `QuantizedWeight::matmul_q8_into`):
//!   every activation row quantized once, tiles of weight rows dotted with each of them
//!   by the matvec kernels; row `j` of the result equals the matvec of `x[j]` bit for
//!   bit. The two 8-bit matvecs above are this product with `m = 1`; from 8 activation
//!   rows on, AVX-512 Q4_0 and NF4/FP4 take two weight rows against two activation rows
//!   per pass (`x86_512_block`). 4096x4096 on the 2-core Zen 4 VM against the f32
//!   prefill below: batch 2 0.47 against 5.2 ms (Q4_0) and 0.38 against 15.3 ms (NF4),
//!   batch 64 8.3 against 19.8 ms, batch 512 70 against 142 ms (Q4_0).
//! - Prefill with f32 activations (matrix-matrix, `m` activation rows,
//!   [`rowwise_matmul_into`]): rayon over panels of weight rows; each panel is
//!   dequantized once into a thread-local f32 buffer and multiplied with all `m`
//!   activation rows by the `gemm` crate (SIMD kernels), or dotted row by row (scalar
//!   kernel and `m < 4`).
//! - LLM.int8 runs its mixed-precision product (`bnb::int8`) with exact i8 x i8 row dots
//!   ([`i8dot`]: AVX-512 VNNI, AVX2, scalar).
//! - Products without a fused kernel (4-bit and FP8 prefill) use the same row-decode
//!   driver ([`rowwise_matmul_into`]) with their own row decoder.
//!
//! Per call, the decode paths quantize and re-lay `x` on the calling thread
//! (`act_quant`: vectorized, 2-5 us for 4096 activations on Zen 4) before the rows go
//! to rayon. Call them from a rayon worker (run the decode loop inside `rayon::scope` or
//! `ThreadPool::install`): from any other thread each call also hands its work to the
//! pool and sleeps until it is done, 15-22 us on the 2-core VM, about a tenth of a
//! 4096x4096 Q4_0 matvec (`linattn bench quant --caller outside`).
//!
//! Kernel choice is explicit ([`CpuKernel`]) so tests compare every SIMD path against
//! the scalar one; [`CpuKernel::detect`] picks the best available at run time
//! (`is_x86_feature_detected!`): Avx512, else Avx2Fma, else Scalar. The AVX-512 kernels
//! (`x86_512`, `x86_512_fourbit`, `x86_512_fourbit_q16`, `x86_512_fourbit_q8`) cover the
//! decode hot paths: the 8-bit-activation Q8_0/Q4_0/Q4_K matvec and the NF4/FP4
//! matvecs; every other product of `CpuKernel::Avx512` runs the AVX2 kernels (`x86`,
//! `x86_fourbit_q16`, `x86_fourbit_q8`), whose features it also requires.
//! The SIMD results equal the scalar ones up to f32 summation order (the integer block
//! sums are exact in every kernel). Accumulation is f32 throughout.

mod act_quant;
mod batched_q8;
pub mod lane_codes;
pub(crate) use act_quant::simd_versions;
mod aligned;
pub mod fp8;
pub mod i8dot;
mod prefill;
pub mod q16;
pub mod q8;
pub mod q8_fourbit;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod q8_lanes;
mod row_acts;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_512;
#[cfg(target_arch = "x86_64")]
mod x86_512_block;
#[cfg(target_arch = "x86_64")]
mod x86_512_fourbit;
#[cfg(target_arch = "x86_64")]
mod x86_512_fourbit_q16;
#[cfg(target_arch = "x86_64")]
mod x86_512_fourbit_q8;
#[cfg(target_arch = "x86_64")]
mod x86_512_nested_absmax;
#[cfg(target_arch = "x86_64")]
mod x86_fourbit_q16;
#[cfg(target_arch = "x86_64")]
mod x86_fourbit_q8;
#[cfg(target_arch = "x86_64")]
mod x86_fp8;
#[cfg(target_arch = "x86_64")]
mod x86_q6_k;

use std::borrow::Cow;

use linattn_tensor::{Error, Result};
use rayon::prelude::*;

use crate::bnb::FourBitWeight;
use crate::ggml::GgmlFormat;
pub use batched_q8::{fourbit_matmul_q8_into, ggml_matmul_q8_into};
pub use prefill::{F32_GEMM_MIN_M, rowwise_matmul_into};
use q16::{Q16Acts, Q16Code};

/// Which CPU kernel family computes a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpuKernel {
    /// Portable scalar Rust.
    Scalar,
    /// x86_64 AVX2 + FMA (+ F16C) intrinsics.
    Avx2Fma,
    /// x86_64 AVX-512 (F, BW, VL, VNNI, VBMI) kernels for the decode matvecs (Q8_0, Q4_0,
    /// Q4_K with 8-bit activations; NF4/FP4); every other product runs the AVX2 + FMA
    /// kernels, whose features this variant also requires.
    Avx512,
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    has_avx2_fma()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512vbmi")
}

impl CpuKernel {
    /// The fastest kernel this CPU supports: Avx512, else Avx2Fma, else Scalar.
    pub fn detect() -> CpuKernel {
        [CpuKernel::Avx512, CpuKernel::Avx2Fma].into_iter().find(|k| k.is_available()).unwrap_or(CpuKernel::Scalar)
    }

    /// Whether this kernel can run on this CPU (`is_x86_feature_detected!`).
    pub fn is_available(self) -> bool {
        match self {
            CpuKernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx2Fma => has_avx2_fma(),
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512 => has_avx512(),
            #[cfg(not(target_arch = "x86_64"))]
            CpuKernel::Avx2Fma | CpuKernel::Avx512 => false,
        }
    }

    /// All kernels this CPU can run (for tests and benchmarks).
    pub fn available() -> Vec<CpuKernel> {
        [CpuKernel::Scalar, CpuKernel::Avx2Fma, CpuKernel::Avx512].into_iter().filter(|k| k.is_available()).collect()
    }

    /// Parses `scalar`, `avx2` or `avx512` (case-insensitive).
    pub fn parse(name: &str) -> Result<CpuKernel> {
        match name.to_ascii_lowercase().as_str() {
            "scalar" => Ok(CpuKernel::Scalar),
            "avx2" | "avx2fma" => Ok(CpuKernel::Avx2Fma),
            "avx512" => Ok(CpuKernel::Avx512),
            _ => Err(Error::invalid(format!("unknown CPU kernel `{name}`: expected scalar, avx2 or avx512"))),
        }
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
        // SAFETY: the SIMD kernels are only used after `checked()` / `detect()` confirmed
        // their features; Avx512 requires avx2 + fma + f16c as well.
        CpuKernel::Avx2Fma | CpuKernel::Avx512 => unsafe { x86::dot_f32(a, b) },
        _ => a.iter().zip(b).fold(0.0f32, |s, (x, y)| s + x * y),
    }
}

/// Fused dot product of one ggml row (`row.len()` = row bytes of `x.len()` elements)
/// with f32 activations.
#[inline]
pub(crate) fn ggml_row_dot(kernel: CpuKernel, format: GgmlFormat, row: &[u8], x: &[f32]) -> f32 {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `dot_f32`: both SIMD kernels are used only after feature detection
        // confirmed avx2 + fma + f16c (no AVX-512 f32 kernels). Slices are bounds-checked
        // inside.
        CpuKernel::Avx2Fma | CpuKernel::Avx512 => unsafe {
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
    for_each_row(y, rb, |r| ggml_row_dot(kernel, format, &weight[r * rb..(r + 1) * rb], x));
    Ok(())
}

/// Decode matvec with 8-bit quantized activations (see the module header): `x` is
/// quantized once per call to Q8 blocks (32 elements for Q8_0/Q4_0, 256 for Q4_K and
/// Q6_K) and every row is an integer dot product scaled once per block. Allocates only
/// the quantized copy of `x` (`cols` bytes plus scales; the AVX-512 kernels of Q8_0,
/// Q4_0 and Q4_K lay out a second copy with per-lane scales and offsets, about
/// `3 * cols` more bytes).
pub fn ggml_matvec_q8_into(
    kernel: CpuKernel,
    format: GgmlFormat,
    weight: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    ggml_matmul_q8_into(kernel, format, weight, rows, cols, x, 1, y)
}

/// Matvec driver: `y[r] = row_dot(r)` for every row, rayon over chunks of rows sized by
/// [`rows_per_task`] (`row_bytes` bytes of weight per row).
fn for_each_row(y: &mut [f32], row_bytes: usize, row_dot: impl Fn(usize) -> f32 + Sync) {
    let chunk = rows_per_task(row_bytes, y.len());
    y.par_chunks_mut(chunk).enumerate().for_each(|(ci, yc)| {
        for (i, yv) in yc.iter_mut().enumerate() {
            *yv = row_dot(ci * chunk + i);
        }
    });
}

/// [`for_each_row`] with a scratch value per task (a buffer for the row's decoded
/// scales, say), handed to every `row_dot` call of that task.
fn for_each_row_with<S: Default + Send>(
    y: &mut [f32],
    row_bytes: usize,
    row_dot: impl Fn(&mut S, usize) -> f32 + Sync,
) {
    let chunk = rows_per_task(row_bytes, y.len());
    y.par_chunks_mut(chunk).enumerate().for_each_init(S::default, |scratch, (ci, yc)| {
        for (i, yv) in yc.iter_mut().enumerate() {
            *yv = row_dot(scratch, ci * chunk + i);
        }
    });
}

/// Scalar dot of one bitsandbytes 4-bit row (whole blocks of `bs`) with f32 `x`.
fn fourbit_row_dot_scalar(packed: &[u8], absmax: &[f32], code: &[f32; 16], bs: usize, x: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (bi, &am) in absmax.iter().enumerate() {
        let mut s = 0.0f32;
        let (pb, xb) = (&packed[bi * bs / 2..(bi + 1) * bs / 2], &x[bi * bs..(bi + 1) * bs]);
        for (j, &byte) in pb.iter().enumerate() {
            s += code[(byte >> 4) as usize] * xb[2 * j] + code[(byte & 0x0F) as usize] * xb[2 * j + 1];
        }
        acc += am * s;
    }
    acc
}

/// Validates a 4-bit weight and the operands of a product with `m` activation rows;
/// returns `(rows, cols)`.
fn fourbit_product_dims(w: &FourBitWeight, x: &[f32], m: usize, y: &[f32]) -> Result<(usize, usize)> {
    w.validate()?;
    let (rows, cols) = match w.shape.dims() {
        [r, c] => (*r, *c),
        _ => return Err(Error::invalid(format!("4-bit product: weight shape {} is not 2D", w.shape))),
    };
    if x.len() != m * cols || y.len() != m * rows {
        return Err(Error::invalid(format!(
            "4-bit product: x holds {} values (expected {m} x {cols}), y holds {} (expected {m} x {rows})",
            x.len(),
            y.len()
        )));
    }
    Ok((rows, cols))
}

/// Decode matvec `y = W x` for a bitsandbytes NF4/FP4 weight `[rows, cols]`: nibbles
/// are looked up in the code table in registers, each block's partial dot is scaled
/// by its absmax. Needs rows made of whole blocks (`cols % blocksize == 0`); other
/// shapes run the row-decode driver. Double-quantized absmax is decoded a row at a time
/// in each worker (one buffer per task; decoding all of it up front is a serial pass
/// over `rows * cols / blocksize` scales per call), and the AVX-512 kernel regroups `x`
/// once per call.
pub fn fourbit_matvec_into(kernel: CpuKernel, w: &FourBitWeight, x: &[f32], y: &mut [f32]) -> Result<()> {
    let kernel = kernel.checked()?;
    let (rows, cols) = fourbit_product_dims(w, x, 1, y)?;
    let bs = w.blocksize;
    if !cols.is_multiple_of(bs) {
        let absmax: Cow<'_, [f32]> = w.absmax_cow();
        return rowwise_matmul_into(kernel, rows, cols, x, 1, y, |r, buf| w.decode_range(&absmax, r * cols, buf));
    }
    let packed = w.packed.as_slice();
    let (rb, nb) = (cols / 2, cols / bs);
    let row = |r: usize| &packed[r * rb..(r + 1) * rb];
    match kernel {
        #[cfg(target_arch = "x86_64")]
        CpuKernel::Avx512 => {
            let lanes = x86_512_fourbit::FourBitLanes::new(x, bs);
            for_each_row_with(y, rb, |buf: &mut Vec<f32>, r| {
                let a = w.absmax_range(r * nb, nb, buf);
                // SAFETY: Avx512 is used only after avx512f (and more) was detected; slices
                // are bounds-checked inside.
                unsafe { x86_512_fourbit::fourbit_row_dot(row(r), a, &w.code, &lanes) }
            })
        }
        #[cfg(target_arch = "x86_64")]
        CpuKernel::Avx2Fma => for_each_row_with(y, rb, |buf: &mut Vec<f32>, r| {
            let a = w.absmax_range(r * nb, nb, buf);
            // SAFETY: Avx2Fma is used only after avx2 + fma detection; slices are
            // bounds-checked inside.
            unsafe { x86::fourbit_row_dot(row(r), a, &w.code, bs, x) }
        }),
        _ => for_each_row_with(y, rb, |buf: &mut Vec<f32>, r| {
            fourbit_row_dot_scalar(row(r), w.absmax_range(r * nb, nb, buf), &w.code, bs, x)
        }),
    }
    Ok(())
}

/// Decode matvec `y = W x` for a bitsandbytes NF4/FP4 weight with 15-bit activations
/// and code table ([`q16`]): exact i32 sums of 8 products, scaled by `absmax * dx` in
/// f32. Falls back to [`fourbit_matvec_into`] (f32) when the row is not whole blocks, or
/// `x` or the code table holds a NaN or Inf. Allocates the quantized copy of `x` and its
/// kernel layout (about `4 * cols` bytes), once per call.
pub fn fourbit_matvec_q16_into(kernel: CpuKernel, w: &FourBitWeight, x: &[f32], y: &mut [f32]) -> Result<()> {
    let kernel = kernel.checked()?;
    let (_, cols) = fourbit_product_dims(w, x, 1, y)?;
    let bs = w.blocksize;
    if !cols.is_multiple_of(bs) || !x.iter().chain(&w.code).all(|v| v.is_finite()) {
        return fourbit_matvec_into(kernel, w, x, y);
    }
    let (acts, code) = (Q16Acts::quantize(x), Q16Code::new(&w.code));
    let packed = w.packed.as_slice();
    let (rb, nb) = (cols / 2, cols / bs);
    let row = |r: usize| &packed[r * rb..(r + 1) * rb];
    match kernel {
        #[cfg(target_arch = "x86_64")]
        CpuKernel::Avx512 => {
            let lanes = x86_512_fourbit_q16::Q16Lanes::new(&acts, bs);
            for_each_row_with(y, rb, |buf: &mut Vec<f32>, r| {
                let a = w.absmax_range(r * nb, nb, buf);
                // SAFETY: Avx512 is used only after avx512f, avx512bw and avx512vnni (and
                // more) were detected; slices are bounds-checked inside.
                unsafe { x86_512_fourbit_q16::fourbit_row_dot_q16(row(r), a, &code, &lanes) }
            })
        }
        #[cfg(target_arch = "x86_64")]
        CpuKernel::Avx2Fma => {
            let lanes = x86_fourbit_q16::Q16Lanes2::new(&acts, bs);
            for_each_row_with(y, rb, |buf: &mut Vec<f32>, r| {
                let a = w.absmax_range(r * nb, nb, buf);
                // SAFETY: Avx2Fma is used only after avx2 + fma detection; slices are
                // bounds-checked inside.
                unsafe { x86_fourbit_q16::fourbit_row_dot_q16(row(r), a, &code, &lanes) }
            })
        }
        _ => for_each_row_with(y, rb, |buf: &mut Vec<f32>, r| {
            q16::fourbit_row_dot_q16_scalar(row(r), w.absmax_range(r * nb, nb, buf), &code, bs, &acts)
        }),
    }
    Ok(())
}

/// Decode matvec `y = W x` for a bitsandbytes NF4/FP4 weight with 8-bit activations
/// and code table ([`q8_fourbit`]): exact i32 sums of 8 products, scaled by
/// `absmax * dx` in f32. Falls back to [`fourbit_matvec_into`] (f32) when the row is not
/// whole blocks, or `x` or the code table holds a NaN or Inf. Allocates
/// the quantized copy of `x` and its kernel layout (about `3 * cols` bytes), once per
/// call.
pub fn fourbit_matvec_q8_into(kernel: CpuKernel, w: &FourBitWeight, x: &[f32], y: &mut [f32]) -> Result<()> {
    fourbit_matmul_q8_into(kernel, w, x, 1, y)
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
    if m < F32_GEMM_MIN_M {
        // A few activation rows: fused f32 row dots over tiles of weight rows (each tile
        // read once for all of them) instead of dequantizing panels for row dots.
        let kernel = kernel.checked()?;
        batched_q8::for_each_tile(y, rows, m, rb, |first, _: &mut (), out: &mut [f32]| {
            for (i, out_row) in out.chunks_exact_mut(m).enumerate() {
                let row = &weight[(first + i) * rb..(first + i + 1) * rb];
                for (j, o) in out_row.iter_mut().enumerate() {
                    *o = ggml_row_dot(kernel, format, row, &x[j * cols..(j + 1) * cols]);
                }
            }
        });
        return Ok(());
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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_batched;
#[cfg(test)]
mod tests_int4;
