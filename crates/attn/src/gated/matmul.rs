//! Strided f32 matrix views and a checked wrapper over the `gemm` crate.
//!
//! The chunked kernels express each chunk as dense products (`Q K^T`, `A V`, `Q S`,
//! `K^T V`) on blocks of at most 64 x 256. `gemm` picks AVX2 / AVX-512 / FMA / NEON
//! micro-kernels at runtime; it is always called single-threaded here (the kernels
//! are already parallel over sequences x heads).
//!
//! A [`Mat`] / [`MatMut`] is a pointer with row and column strides in elements. The
//! constructors from slices check that every element lies inside the slice, so
//! [`matmul`] is safe to call; [`MatMut::from_raw`] (output rows interleaved with
//! other heads' rows in one shared buffer) is `unsafe` and its caller vouches for the
//! bounds and for exclusive access.

use std::marker::PhantomData;

/// Read-only `rows x cols` view: element (i, j) at `ptr + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'s> {
    ptr: *const f32,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
    _data: PhantomData<&'s [f32]>,
}

/// Checks that a `rows x cols` matrix with non-negative strides fits in `len` elements.
fn check_fits(rows: usize, cols: usize, rs: usize, cs: usize, len: usize) {
    if rows > 0 && cols > 0 {
        let last = (rows - 1) * rs + (cols - 1) * cs;
        assert!(last < len, "matrix {rows}x{cols} (strides {rs}, {cs}) exceeds a slice of {len}");
    }
}

impl<'s> Mat<'s> {
    /// Row-major view of `data`: row i starts at `i * rs`.
    pub(crate) fn rows(data: &'s [f32], rows: usize, cols: usize, rs: usize) -> Mat<'s> {
        check_fits(rows, cols, rs, 1, data.len());
        Mat { ptr: data.as_ptr(), rows, cols, rs: rs as isize, cs: 1, _data: PhantomData }
    }

    /// Rows `r0..r1` of this view.
    pub(crate) fn sub_rows(self, r0: usize, r1: usize) -> Mat<'s> {
        assert!(r0 <= r1 && r1 <= self.rows, "rows {r0}..{r1} of a {}-row matrix", self.rows);
        // SAFETY: r0 <= rows, so the offset stays inside (or one past) the viewed memory.
        let ptr = unsafe { self.ptr.offset(r0 as isize * self.rs) };
        Mat { ptr, rows: r1 - r0, ..self }
    }

    /// Row `i` as a slice (row-major views only).
    pub(crate) fn row(&self, i: usize) -> &'s [f32] {
        assert!(i < self.rows && self.cs == 1, "row {i} of a {}-row matrix with column stride {}", self.rows, self.cs);
        // SAFETY: with cs == 1, row i is `cols` contiguous elements inside the borrowed
        // slice the view was built from (checked by the constructor).
        unsafe { std::slice::from_raw_parts(self.ptr.offset(i as isize * self.rs), self.cols) }
    }

    /// The transposed view (no data moves).
    pub(crate) fn t(self) -> Mat<'s> {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

/// Writable `rows x cols` view: element (i, j) at `ptr + i * rs + j`.
pub(crate) struct MatMut<'s> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: isize,
    _data: PhantomData<&'s mut [f32]>,
}

impl<'s> MatMut<'s> {
    /// Row-major view of `data`: row i starts at `i * rs`.
    pub(crate) fn rows(data: &'s mut [f32], rows: usize, cols: usize, rs: usize) -> MatMut<'s> {
        check_fits(rows, cols, rs, 1, data.len());
        MatMut { ptr: data.as_mut_ptr(), rows, cols, rs: rs as isize, _data: PhantomData }
    }

    /// View over raw memory.
    ///
    /// # Safety
    /// For the lifetime `'s`, elements `ptr + i * rs + j` (i < rows, j < cols) must be
    /// valid for reads and writes and accessed by nobody else.
    pub(crate) unsafe fn from_raw(ptr: *mut f32, rows: usize, cols: usize, rs: usize) -> MatMut<'s> {
        MatMut { ptr, rows, cols, rs: rs as isize, _data: PhantomData }
    }

    /// Rows `r0..r1` of this view.
    pub(crate) fn sub_rows(&mut self, r0: usize, r1: usize) -> MatMut<'_> {
        assert!(r0 <= r1 && r1 <= self.rows, "rows {r0}..{r1} of a {}-row matrix", self.rows);
        // SAFETY: r0 <= rows, so the offset stays inside (or one past) the viewed memory.
        let ptr = unsafe { self.ptr.offset(r0 as isize * self.rs) };
        MatMut { ptr, rows: r1 - r0, cols: self.cols, rs: self.rs, _data: PhantomData }
    }

    /// Columns of the view.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// Start of row `i` (`cols` elements valid for writes), for kernels that write rows
    /// which may not be initialized yet and so must not form a reference to them.
    pub(crate) fn row_ptr(&mut self, i: usize) -> *mut f32 {
        assert!(i < self.rows, "row {i} of a {}-row matrix", self.rows);
        // SAFETY: i < rows, so the offset stays inside the viewed memory.
        unsafe { self.ptr.offset(i as isize * self.rs) }
    }

    /// Row `i` as a slice.
    pub(crate) fn row_mut(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows, "row {i} of a {}-row matrix", self.rows);
        // SAFETY: row i of the view is `cols` contiguous elements the view owns exclusively
        // (constructor contract), borrowed mutably through `self` for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.offset(i as isize * self.rs), self.cols) }
    }
}

/// `dst = alpha * a b` (`accumulate = false`) or `dst += alpha * a b`.
/// Panics if the shapes do not chain (`a: m x k`, `b: k x n`, `dst: m x n`).
pub(crate) fn matmul(dst: &mut MatMut, a: Mat, b: Mat, alpha: f32, accumulate: bool) {
    assert!(
        a.rows == dst.rows && b.cols == dst.cols && a.cols == b.rows,
        "matmul: {}x{} * {}x{} -> {}x{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        dst.rows,
        dst.cols
    );
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst.row_mut(i).fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the views' constructors guarantee that every (i, j) element of `a`, `b`
    // and `dst` for the shapes checked above lies in live memory (`dst` exclusively
    // borrowed, `a`, `b` shared and not aliased by `dst` since `dst` is a unique
    // borrow); gemm reads `dst` only when `read_dst` is true.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            1,
            dst.rs,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_loops_with_strides_and_transposes() {
        let (m, n, k) = (5usize, 7usize, 9usize);
        let a: Vec<f32> = (0..m * 11).map(|i| (i as f32 * 0.3).sin()).collect(); // rs 11
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.7).cos()).collect(); // b^T, n x k
        let mut d = vec![1.0f32; m * 8];
        let mut dst = MatMut::rows(&mut d, m, n, 8);
        matmul(&mut dst, Mat::rows(&a, m, k, 11), Mat::rows(&bt, n, k, k).t(), 0.5, true);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + 0.5 * (0..k).map(|r| a[i * 11 + r] * bt[j * k + r]).sum::<f32>();
                assert!((d[i * 8 + j] - want).abs() < 1e-5, "({i}, {j})");
            }
            assert_eq!(d[i * 8 + 7], 1.0, "column past n untouched");
        }
    }
}
