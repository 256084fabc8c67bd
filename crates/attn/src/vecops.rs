//! Small f32 vector primitives the CPU kernels are built from.
//!
//! Written over contiguous slices so the compiler vectorizes them: `axpy` is an
//! element-wise loop; `dot` keeps 8 independent partial sums (a float reduction with a
//! single accumulator cannot be reordered, so it would not vectorize).

/// `y += a * x` over `min(x.len(), y.len())` elements.
#[inline(always)]
pub(crate) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `x . y` over `min(x.len(), y.len())` elements, f32 with 8 partial sums.
#[inline(always)]
pub(crate) fn dot(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0.0f32; 8];
    let mut xc = x.chunks_exact(8);
    let mut yc = y.chunks_exact(8);
    for (xa, ya) in (&mut xc).zip(&mut yc) {
        for l in 0..8 {
            acc[l] += xa[l] * ya[l];
        }
    }
    let mut tail = 0.0f32;
    for (&a, &b) in xc.remainder().iter().zip(yc.remainder()) {
        tail += a * b;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_axpy_match_plain_loops() {
        for n in [0usize, 1, 7, 8, 9, 31, 100] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!((dot(&x, &y) as f64 - want).abs() < 1e-4, "n = {n}");
            let mut z = y.clone();
            axpy(2.0, &x, &mut z);
            for i in 0..n {
                assert_eq!(z[i], y[i] + 2.0 * x[i]);
            }
        }
    }
}
