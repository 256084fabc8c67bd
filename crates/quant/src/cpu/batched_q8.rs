//! Quantized products with 8-bit activations for any number of activation rows,
//! `y [m, rows] = x [m, cols] W^T`: the decode matvec (`m = 1`), batched decode and
//! prefill alike, for the ggml formats (Q8_0, Q4_0, Q4_K, Q6_K with llama.cpp's 8-bit
//! blocks, [`super::q8`]) and bitsandbytes NF4/FP4 (8-bit codes, [`super::q8_fourbit`]).
//!
//! Layout: the activation rows are quantized and laid out for the kernel once per call
//! ([`super::row_acts`]), in chunks of at most [`ACT_CHUNK`] rows so the
//! copies stay bounded for long prompts (about `4 * cols` bytes per row). rayon splits
//! the weight rows into tiles of about 64 KiB (`super::rows_per_task`); a task takes the
//! activation rows one by one and dots each with every row of its tile, so one
//! activation layout stays in L1 while the tile's rows stay in L2, and the weight is
//! read from memory once per chunk. From [`super::row_acts::BLOCK_MIN_M`] activation rows on, AVX-512
//! Q4_0 and NF4/FP4 (rows of whole 128-element groups) take activation rows two at a
//! time against two weight rows per pass (`x86_512_block`; [`fill_tile`]), which shares
//! the loads of both sides. The tiles fill a `[rows, m]` scratch that is then
//! transposed into `y` (for `m = 1` the scratch is `y` itself).
//!
//! Numerics: every output is the row dot product the matvec of its activation row
//! computes (the block kernels repeat each pair's single-row operations in order), so
//! row `j` of `y` equals, bit for bit, the matvec of `x[j]` (tested), whatever `m` and
//! the thread count. An activation row holding a NaN or Inf runs the
//! f32 matvec instead (its non-finite value reaches its outputs as in a dense product
//! rather than being rounded away), and so does every row of a 4-bit weight whose code
//! table is not finite or whose rows are not whole blocks. Against the f32 products the
//! 8-bit activations add about `d_x / 2` per element (bounds in `q8` and `q8_fourbit`).

use linattn_tensor::Result;
use rayon::prelude::*;

use super::q8_fourbit::FourBitQ8Code;
use super::row_acts::{FourBitRowActs, GgmlRowActs};
#[cfg(target_arch = "x86_64")]
use super::x86_512_nested_absmax;
use super::{CpuKernel, check_dims, fourbit_matvec_into, fourbit_product_dims, ggml_matvec_into};
use crate::bnb::FourBitWeight;
use crate::bnb::four_bit::Absmax;
use crate::ggml::GgmlFormat;

/// Most activation rows quantized at once (their layouts take about `4 * cols` bytes
/// each: 4 MiB for 256 rows of 4096).
const ACT_CHUNK: usize = 256;

/// Fills a tile's `out [tile rows, m]` (row-major) for the finite activation rows
/// `ready` (index, activations): `dot(i, a)` is weight row `i` of the tile against `a`.
/// Where `blocked`, activation rows go two at a time through `block(i, a0, a1)`, which
/// gives rows `i` and `i + 1` against both; a tile's odd last row and an odd last
/// activation row take `dot`.
fn fill_tile<A>(
    out: &mut [f32],
    m: usize,
    ready: &[(usize, &A)],
    blocked: bool,
    dot: impl Fn(usize, &A) -> f32,
    block: impl Fn(usize, &A, &A) -> [[f32; 2]; 2],
) {
    let tile_rows = out.len() / m;
    let mut pairs = ready.chunks_exact(2);
    if blocked {
        for pair in pairs.by_ref() {
            let ((j0, a0), (j1, a1)) = (pair[0], pair[1]);
            let mut i = 0;
            while i + 2 <= tile_rows {
                let dots = block(i, a0, a1);
                for (di, d) in dots.iter().enumerate() {
                    out[(i + di) * m + j0] = d[0];
                    out[(i + di) * m + j1] = d[1];
                }
                i += 2;
            }
            for i in i..tile_rows {
                out[i * m + j0] = dot(i, a0);
                out[i * m + j1] = dot(i, a1);
            }
        }
    }
    let rest = if blocked { pairs.remainder() } else { ready };
    for &(j, a) in rest {
        for i in 0..tile_rows {
            out[i * m + j] = dot(i, a);
        }
    }
}

/// Runs `tile(first_row, scratch, out)` over tiles of weight rows in parallel; `out` is
/// the tile's `[tile rows, m]` block of a `[rows, m]` buffer, which is then transposed
/// into `y [m, rows]` (written straight into `y` when `m = 1`). `scratch` is one value
/// per rayon task.
pub(super) fn for_each_tile<S: Default + Send>(
    y: &mut [f32],
    rows: usize,
    m: usize,
    row_bytes: usize,
    tile: impl Fn(usize, &mut S, &mut [f32]) + Sync,
) {
    let tile_rows = super::rows_per_task(row_bytes, rows);
    let run = |by_row: &mut [f32]| {
        by_row
            .par_chunks_mut(tile_rows * m)
            .enumerate()
            .for_each_init(S::default, |scratch, (ti, out)| tile(ti * tile_rows, scratch, out))
    };
    if m == 1 {
        run(y);
        return;
    }
    let mut by_row = vec![0.0f32; rows * m];
    run(&mut by_row);
    y.par_chunks_mut(rows).enumerate().for_each(|(j, yj)| {
        for (r, v) in yj.iter_mut().enumerate() {
            *v = by_row[r * m + j];
        }
    });
}

/// `x [m, cols]` in chunks of at most [`ACT_CHUNK`] rows: `(first activation row, its
/// rows of x, its rows of y)`.
fn act_chunks<'a>(
    x: &'a [f32],
    y: &'a mut [f32],
    cols: usize,
    rows: usize,
) -> impl Iterator<Item = (usize, &'a [f32], &'a mut [f32])> {
    x.chunks(ACT_CHUNK * cols)
        .zip(y.chunks_mut(ACT_CHUNK * rows))
        .enumerate()
        .map(|(c, (xc, yc))| (c * ACT_CHUNK, xc, yc))
}

/// A double-quantized absmax split into byte planes for the AVX-512 decode, once per
/// call (`None` for plain absmax and the other kernels).
#[cfg(target_arch = "x86_64")]
type AbsmaxPlanes = Option<x86_512_nested_absmax::NestedPlanes>;
#[cfg(not(target_arch = "x86_64"))]
type AbsmaxPlanes = Option<()>;

fn absmax_planes(kernel: CpuKernel, w: &FourBitWeight) -> Result<AbsmaxPlanes> {
    #[cfg(target_arch = "x86_64")]
    if let (CpuKernel::Avx512, Absmax::Nested(nested)) = (kernel, &w.absmax) {
        return Ok(Some(x86_512_nested_absmax::NestedPlanes::new(nested)?));
    }
    let _ = (kernel, w);
    Ok(None)
}

/// The absmax of blocks `start..start + n` of `w`: borrowed when plain, decoded into
/// `buf` when double-quantized. Each scale is decoded on its own, so a tile's range
/// equals its rows' ranges bit for bit.
fn tile_absmax<'s>(
    w: &'s FourBitWeight,
    planes: &AbsmaxPlanes,
    start: usize,
    n: usize,
    buf: &'s mut Vec<f32>,
) -> &'s [f32] {
    #[cfg(target_arch = "x86_64")]
    if let (Absmax::Nested(nested), Some(planes)) = (&w.absmax, planes) {
        buf.clear();
        buf.resize(n, 0.0);
        // SAFETY: planes exist only for CpuKernel::Avx512, which is used only after
        // avx512f, avx512bw and avx512vbmi were detected; slices are bounds-checked inside.
        unsafe { x86_512_nested_absmax::decode_range(nested, planes, start, buf) };
        return buf;
    }
    let _ = planes;
    w.absmax_range(start, n, buf)
}

/// Whether `x` holds only finite values (the quantized paths need them).
fn all_finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// ggml product with 8-bit activations (see the module header): `y [m, rows] = x [m,
/// cols] W^T` for a weight of `rows x cols` stored in `weight`. Row `j` of `y` equals
/// [`super::ggml_matvec_q8_into`] of `x[j]` bit for bit.
#[allow(clippy::too_many_arguments)] // mirrors the other product entry points
pub fn ggml_matmul_q8_into(
    kernel: CpuKernel,
    format: GgmlFormat,
    weight: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    y: &mut [f32],
) -> Result<()> {
    let kernel = kernel.checked()?;
    let rb = format.row_bytes(cols)?;
    check_dims("ggml matmul", weight.len(), rb, rows, x.len(), cols, m, y.len())?;
    if m == 0 || rows == 0 {
        return Ok(());
    }
    for (_, xc, yc) in act_chunks(x, y, cols, rows) {
        let mc = xc.len() / cols;
        let acts: Vec<Option<GgmlRowActs>> =
            xc.par_chunks(cols).map(|xj| all_finite(xj).then(|| GgmlRowActs::new(kernel, format, xj))).collect();
        if acts.iter().any(Option::is_some) {
            // The finite activation rows with their index.
            let ready: Vec<(usize, &GgmlRowActs)> =
                acts.iter().enumerate().filter_map(|(j, a)| a.as_ref().map(|a| (j, a))).collect();
            for_each_tile(yc, rows, mc, rb, |first, _: &mut (), out: &mut [f32]| {
                let row = |i: usize| &weight[(first + i) * rb..(first + i + 1) * rb];
                fill_tile(
                    out,
                    mc,
                    &ready,
                    GgmlRowActs::has_block_kernel(kernel, format, mc),
                    |i, a| a.dot(kernel, format, row(i)),
                    |i, a0, a1| GgmlRowActs::dot_block(row(i), row(i + 1), a0, a1),
                );
            });
        }
        for (j, a) in acts.iter().enumerate() {
            if a.is_none() {
                let (xj, yj) = (&xc[j * cols..(j + 1) * cols], &mut yc[j * rows..(j + 1) * rows]);
                ggml_matvec_into(kernel, format, weight, rows, cols, xj, yj)?;
            }
        }
    }
    Ok(())
}

/// bitsandbytes NF4/FP4 product with 8-bit activations and code table (see the module
/// header): `y [m, rows] = x [m, cols] W^T`. Row `j` of `y` equals
/// [`super::fourbit_matvec_q8_into`] of `x[j]` bit for bit. Rows that are not whole
/// blocks, or a code table with a NaN or Inf, run the f32 matvec for every activation
/// row.
pub fn fourbit_matmul_q8_into(kernel: CpuKernel, w: &FourBitWeight, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
    let kernel = kernel.checked()?;
    let (rows, cols) = fourbit_product_dims(w, x, m, y)?;
    let bs = w.blocksize;
    if m == 0 || rows == 0 {
        return Ok(());
    }
    if !cols.is_multiple_of(bs) || !all_finite(&w.code) {
        for (xj, yj) in x.chunks(cols).zip(y.chunks_mut(rows)) {
            fourbit_matvec_into(kernel, w, xj, yj)?;
        }
        return Ok(());
    }
    let code = FourBitQ8Code::new(&w.code);
    let packed = w.packed.as_slice();
    let (rb, nb) = (cols / 2, cols / bs);
    let planes = absmax_planes(kernel, w)?;
    for (_, xc, yc) in act_chunks(x, y, cols, rows) {
        let mc = xc.len() / cols;
        let acts: Vec<Option<FourBitRowActs>> =
            xc.par_chunks(cols).map(|xj| all_finite(xj).then(|| FourBitRowActs::new(kernel, xj, bs))).collect();
        if acts.iter().any(Option::is_some) {
            let ready: Vec<(usize, &FourBitRowActs)> =
                acts.iter().enumerate().filter_map(|(j, a)| a.as_ref().map(|a| (j, a))).collect();
            let blocked = FourBitRowActs::has_block_kernel(kernel, cols, mc);
            for_each_tile(yc, rows, mc, rb, |first, buf: &mut Vec<f32>, out: &mut [f32]| {
                let tile_rows = out.len() / mc;
                let absmax = tile_absmax(w, &planes, first * nb, tile_rows * nb, buf);
                let row = |i: usize| (&packed[(first + i) * rb..(first + i + 1) * rb], &absmax[i * nb..(i + 1) * nb]);
                fill_tile(
                    out,
                    mc,
                    &ready,
                    blocked,
                    |i, acts| {
                        let (p, a) = row(i);
                        acts.dot(kernel, p, a, &code, bs)
                    },
                    |i, x0, x1| FourBitRowActs::dot_block(row(i), row(i + 1), &code, x0, x1),
                );
            });
        }
        for (j, a) in acts.iter().enumerate() {
            if a.is_none() {
                fourbit_matvec_into(kernel, w, &xc[j * cols..(j + 1) * cols], &mut yc[j * rows..(j + 1) * rows])?;
            }
        }
    }
    Ok(())
}
