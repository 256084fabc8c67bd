//! One activation row of the 8-bit-activation products ([`super::batched_q8`]),
//! quantized and laid out for the kernel that reads it: [`GgmlRowActs`] (llama.cpp's
//! 8-bit blocks, [`super::q8`], regrouped per SIMD lane by [`Q8Lanes`] for AVX-512 Q8_0,
//! Q4_0, Q4_K and AVX2 Q4_0) and [`FourBitRowActs`] (NF4/FP4 8-bit codes,
//! [`super::q8_fourbit`], regrouped into 64- or 32-byte steps for the SIMD kernels).
//!
//! Each type's `dot` runs the row kernel of its (kernel, format) pair and `dot_block`
//! the AVX-512 two-by-two block kernel (`x86_512_block`) where `has_block_kernel` says
//! it pays; a pair's block result equals its `dot` bit for bit (the block kernels repeat
//! the single-row operations in order), which is what makes a batched product's row `j`
//! equal the matvec of `x[j]`.

use super::q8::Q8Acts;
#[cfg(target_arch = "x86_64")]
use super::q8_fourbit::FourBitQ8Lanes;
use super::q8_fourbit::{FourBitQ8Acts, FourBitQ8Code};
#[cfg(target_arch = "x86_64")]
use super::q8_lanes::Q8Lanes;
use super::{CpuKernel, q8, q8_fourbit};
#[cfg(target_arch = "x86_64")]
use super::{x86, x86_512, x86_512_block, x86_512_fourbit_q8, x86_fourbit_q8, x86_q6_k};
use crate::ggml::GgmlFormat;

/// One activation row of a ggml product, quantized to 8-bit blocks and laid out for the
/// kernel that reads it; built only by [`GgmlRowActs::new`], so the variant always
/// matches the (kernel, format) pair given there.
pub(super) enum GgmlRowActs {
    /// The blocks as [`Q8Acts`] holds them (scalar kernel; AVX2 Q8_0, Q4_K, Q6_K; AVX-512
    /// Q6_K).
    Blocks(Q8Acts),
    /// Regrouped per SIMD lane (AVX-512 Q8_0, Q4_0, Q4_K; AVX2 Q4_0).
    #[cfg(target_arch = "x86_64")]
    Lanes(Q8Lanes),
}

impl GgmlRowActs {
    pub(super) fn new(kernel: CpuKernel, format: GgmlFormat, x: &[f32]) -> GgmlRowActs {
        let acts = Q8Acts::quantize(x, Q8Acts::block_for(format));
        match (kernel, format) {
            #[cfg(target_arch = "x86_64")]
            (CpuKernel::Avx512, GgmlFormat::Q8_0 | GgmlFormat::Q4_0 | GgmlFormat::Q4K) => {
                GgmlRowActs::Lanes(Q8Lanes::for_avx512(format, &acts))
            }
            #[cfg(target_arch = "x86_64")]
            (CpuKernel::Avx2Fma, GgmlFormat::Q4_0) => GgmlRowActs::Lanes(Q8Lanes::for_avx2_q4_0(&acts)),
            _ => GgmlRowActs::Blocks(acts),
        }
    }

    /// The dot of one weight `row` with these activations (`kernel` and `format` as given
    /// to [`GgmlRowActs::new`]).
    pub(super) fn dot(&self, kernel: CpuKernel, format: GgmlFormat, row: &[u8]) -> f32 {
        match (kernel, self) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx512 is used only after feature detection confirmed the AVX-512
            // subsets these kernels enable (and AVX2, FMA, F16C). Slices are
            // bounds-checked inside.
            (CpuKernel::Avx512, acts) => unsafe {
                match (format, acts) {
                    (GgmlFormat::Q8_0, GgmlRowActs::Lanes(lanes)) => x86_512::row_dot_q8_0(row, lanes),
                    (GgmlFormat::Q4_0, GgmlRowActs::Lanes(lanes)) => x86_512::row_dot_q4_0(row, lanes),
                    (GgmlFormat::Q4K, GgmlRowActs::Lanes(lanes)) => x86_512::row_dot_q4_k(row, lanes),
                    (GgmlFormat::Q6K, GgmlRowActs::Blocks(acts)) => x86_q6_k::row_dot_q6_k_avx512(row, acts),
                    _ => unreachable!("GgmlRowActs::new lays out {format} for AVX-512 otherwise"),
                }
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx2Fma is used only after feature detection confirmed avx2, fma and
            // f16c. Slices are bounds-checked inside.
            (CpuKernel::Avx2Fma, acts) => unsafe {
                match (format, acts) {
                    (GgmlFormat::Q8_0, GgmlRowActs::Blocks(a)) => x86::row_dot_q8_0_i8(row, &a.qs, &a.d),
                    (GgmlFormat::Q4_0, GgmlRowActs::Lanes(lanes)) => x86::row_dot_q4_0_i8(row, lanes),
                    (GgmlFormat::Q4K, GgmlRowActs::Blocks(a)) => x86::row_dot_q4_k_i8(row, &a.qs, &a.d, &a.bsums),
                    (GgmlFormat::Q6K, GgmlRowActs::Blocks(a)) => x86_q6_k::row_dot_q6_k_avx2(row, a),
                    _ => unreachable!("GgmlRowActs::new lays out {format} for AVX2 otherwise"),
                }
            },
            (_, GgmlRowActs::Blocks(acts)) => q8::row_dot_scalar(format, row, acts),
            #[cfg(target_arch = "x86_64")]
            (_, GgmlRowActs::Lanes(_)) => unreachable!("lanes are laid out for SIMD kernels only"),
        }
    }
}

/// Activation rows from which the Q4_0 block kernel runs (see
/// [`GgmlRowActs::has_block_kernel`]).
pub(super) const BLOCK_MIN_M: usize = 8;

impl GgmlRowActs {
    /// Whether [`GgmlRowActs::dot_block`] has a kernel for `(kernel, format)` and pays
    /// for `m` activation rows: two Zen 4 threads, 4096x4096 Q4_0, against single-row
    /// dots: batch 2 0.67 vs 0.42 ms and batch 4 0.92 vs 0.79 (two weight rows read
    /// at once stream worse while memory still matters), batch 8 1.39 vs 1.45, batch 64
    /// 8.2 vs 10.7, batch 512 65 vs 85.
    pub(super) fn has_block_kernel(kernel: CpuKernel, format: GgmlFormat, m: usize) -> bool {
        cfg!(target_arch = "x86_64") && kernel == CpuKernel::Avx512 && format == GgmlFormat::Q4_0 && m >= BLOCK_MIN_M
    }

    /// `[[w0 . a0, w0 . a1], [w1 . a0, w1 . a1]]` for two Q4_0 weight rows and two
    /// activation rows on AVX-512 (where [`GgmlRowActs::has_block_kernel`]), each bit for
    /// bit [`GgmlRowActs::dot`].
    #[cfg(target_arch = "x86_64")]
    pub(super) fn dot_block(w0: &[u8], w1: &[u8], a0: &GgmlRowActs, a1: &GgmlRowActs) -> [[f32; 2]; 2] {
        let (GgmlRowActs::Lanes(l0), GgmlRowActs::Lanes(l1)) = (a0, a1) else {
            unreachable!("GgmlRowActs::new lays out Q4_0 for AVX-512 as lanes")
        };
        // SAFETY: has_block_kernel admits only CpuKernel::Avx512, used only after feature
        // detection confirmed the AVX-512 subsets the kernel enables. Slices are
        // bounds-checked inside.
        unsafe { x86_512_block::rows_dot_q4_0([w0, w1], [l0, l1]) }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn dot_block(_: &[u8], _: &[u8], _: &GgmlRowActs, _: &GgmlRowActs) -> [[f32; 2]; 2] {
        unreachable!("has_block_kernel is false off x86_64")
    }
}

/// One activation row of an NF4/FP4 product, quantized to 8-bit codes and laid out for
/// the kernel that reads it (built only by [`FourBitRowActs::new`]).
pub(super) enum FourBitRowActs {
    /// The scalar kernel reads the codes as quantized.
    Codes(FourBitQ8Acts),
    /// Regrouped for the AVX-512 (64-byte steps) or AVX2 (32-byte steps) kernel.
    #[cfg(target_arch = "x86_64")]
    Lanes(FourBitQ8Lanes),
}

impl FourBitRowActs {
    pub(super) fn new(kernel: CpuKernel, x: &[f32], blocksize: usize) -> FourBitRowActs {
        let acts = FourBitQ8Acts::quantize(x);
        match kernel {
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512 => {
                FourBitRowActs::Lanes(FourBitQ8Lanes::new(&acts, x86_512_fourbit_q8::GROUP_BYTES, blocksize))
            }
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx2Fma => {
                FourBitRowActs::Lanes(FourBitQ8Lanes::new(&acts, x86_fourbit_q8::STEP_BYTES, blocksize))
            }
            _ => FourBitRowActs::Codes(acts),
        }
    }

    /// The dot of one packed row (scales `absmax`) with these activations.
    pub(super) fn dot(
        &self,
        kernel: CpuKernel,
        row: &[u8],
        absmax: &[f32],
        code: &FourBitQ8Code,
        blocksize: usize,
    ) -> f32 {
        match (kernel, self) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx512 is used only after avx512f, avx512bw and avx512vnni (and more)
            // were detected; slices are bounds-checked inside.
            (CpuKernel::Avx512, FourBitRowActs::Lanes(lanes)) => unsafe {
                x86_512_fourbit_q8::fourbit_row_dot_q8(row, absmax, code, lanes)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx2Fma is used only after avx2 + fma detection; slices are
            // bounds-checked inside.
            (CpuKernel::Avx2Fma, FourBitRowActs::Lanes(lanes)) => unsafe {
                x86_fourbit_q8::fourbit_row_dot_q8(row, absmax, code, lanes)
            },
            (_, FourBitRowActs::Codes(acts)) => {
                q8_fourbit::fourbit_row_dot_q8_scalar(row, absmax, code, blocksize, acts)
            }
            #[cfg(target_arch = "x86_64")]
            (_, FourBitRowActs::Lanes(_)) => unreachable!("lanes are laid out for SIMD kernels only"),
        }
    }
}

impl FourBitRowActs {
    /// Whether [`FourBitRowActs::dot_block`] has a kernel for `kernel`, rows of `cols`
    /// elements and `m` activation rows (whole 128-element groups; from
    /// [`BLOCK_MIN_M`] rows on, as for Q4_0).
    pub(super) fn has_block_kernel(kernel: CpuKernel, cols: usize, m: usize) -> bool {
        cfg!(target_arch = "x86_64") && kernel == CpuKernel::Avx512 && cols.is_multiple_of(128) && m >= BLOCK_MIN_M
    }

    /// `[[w0 . a0, w0 . a1], [w1 . a0, w1 . a1]]` for two packed rows with their absmax
    /// and two activation rows on AVX-512 (where [`FourBitRowActs::has_block_kernel`]),
    /// each bit for bit [`FourBitRowActs::dot`].
    #[cfg(target_arch = "x86_64")]
    pub(super) fn dot_block(
        (p0, a0): (&[u8], &[f32]),
        (p1, a1): (&[u8], &[f32]),
        code: &FourBitQ8Code,
        x0: &FourBitRowActs,
        x1: &FourBitRowActs,
    ) -> [[f32; 2]; 2] {
        let (FourBitRowActs::Lanes(l0), FourBitRowActs::Lanes(l1)) = (x0, x1) else {
            unreachable!("FourBitRowActs::new lays out lanes for AVX-512")
        };
        // SAFETY: has_block_kernel admits only CpuKernel::Avx512, used only after
        // avx512f, avx512bw and avx512vnni (and more) were detected; slices are
        // bounds-checked inside.
        unsafe { x86_512_block::fourbit_rows_dot_q8([p0, p1], [a0, a1], code, [l0, l1]) }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn dot_block(
        _: (&[u8], &[f32]),
        _: (&[u8], &[f32]),
        _: &FourBitQ8Code,
        _: &FourBitRowActs,
        _: &FourBitRowActs,
    ) -> [[f32; 2]; 2] {
        unreachable!("has_block_kernel is false off x86_64")
    }
}
