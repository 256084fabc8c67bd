//! Small f32 vector primitives the CPU kernels are built from.
//!
//! Written over contiguous slices so the compiler vectorizes them: `axpy` is an
//! element-wise loop; `dot` and `dot_exp_diff` keep 8 independent partial sums (a float
//! reduction with a single accumulator cannot be reordered, so it would not vectorize).
//! `exp_fast` is a branch-free `exp` (Cephes `expf` polynomial, error ~2 ulp) that
//! vectorizes inside loops, unlike the libm call of `f32::exp`.
//!
//! All functions are `#[inline(always)]`: the kernels call them from a generic body
//! that is compiled twice, once for the baseline target and once inside a
//! `#[target_feature(enable = "avx2,fma")]` function selected at runtime
//! ([`Isa::detect`]), so the same source gets 4-wide SSE2 and 8-wide AVX2 code.

/// Instruction set a kernel body was compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Isa {
    /// The build target's baseline (SSE2 on x86-64), always available.
    Portable,
    /// x86-64 AVX2 + FMA, detected at runtime.
    Avx2Fma,
    /// x86-64 AVX-512 (F) on top of AVX2 + FMA, detected at runtime. Kernels without an
    /// AVX-512 body run their AVX2 + FMA one.
    Avx512,
}

impl Isa {
    /// The best instruction set this CPU supports.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                if std::is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                return Isa::Avx2Fma;
            }
        }
        Isa::Portable
    }

    /// Every instruction set this CPU can run, baseline first (for tests).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Portable, Isa::Avx2Fma, Isa::Avx512].into_iter().filter(|&isa| isa <= best).collect()
    }
}

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
    reduce8(&acc) + tail
}

#[inline(always)]
fn reduce8(acc: &[f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Smallest argument whose `exp` is a normal f32; below it `exp_fast` returns 0.
const EXP_LO: f32 = -87.336_55;
/// Largest argument whose `exp` is finite; above it `exp_fast` returns +inf.
const EXP_HI: f32 = 88.722_83;

/// `e^x` without a libm call: `x = n ln2 + r`, `|r| <= ln2 / 2`, Cephes' degree-6
/// polynomial for `e^r`, and `2^n` built from exponent bits (as two factors so that
/// n = 128 stays finite). Below `EXP_LO` the result is 0 (the exact value is a
/// subnormal below 1.2e-38), above `EXP_HI` +inf, NaN stays NaN.
#[inline(always)]
pub(crate) fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Not `clamp`: it would keep NaN, max/min map it into range (restored below).
    #[allow(clippy::manual_clamp)]
    let xc = x.max(EXP_LO).min(EXP_HI);
    let t = xc * LOG2E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    // n in [-126, 128]; split 2^n = 2^(n/2) * 2^(n - n/2), each factor a normal f32.
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    let e = y * s1 * s2;
    let e = if x < EXP_LO { 0.0 } else { e };
    let e = if x > EXP_HI { f32::INFINITY } else { e };
    if x.is_nan() { x } else { e }
}

/// `x[i] = e^x[i]` with [`exp_fast`].
#[inline(always)]
pub(crate) fn exp_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = exp_fast(*v);
    }
}

/// `sum_r x_r y_r e^(a_r - b_r)` over the common length, 8 partial sums.
#[inline(always)]
pub(crate) fn dot_exp_diff(x: &[f32], y: &[f32], a: &[f32], b: &[f32]) -> f32 {
    let n = x.len().min(y.len()).min(a.len()).min(b.len());
    let (x, y, a, b) = (&x[..n], &y[..n], &a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let whole = n / 8 * 8;
    for base in (0..whole).step_by(8) {
        let (xs, ys, as_, bs) = (&x[base..base + 8], &y[base..base + 8], &a[base..base + 8], &b[base..base + 8]);
        for l in 0..8 {
            acc[l] += xs[l] * ys[l] * exp_fast(as_[l] - bs[l]);
        }
    }
    let mut tail = 0.0f32;
    for r in whole..n {
        tail += x[r] * y[r] * exp_fast(a[r] - b[r]);
    }
    reduce8(&acc) + tail
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

    #[test]
    fn exp_fast_matches_libm() {
        let mut x = -100.0f32;
        while x < 100.0 {
            let (got, want) = (exp_fast(x), (x as f64).exp());
            if x < EXP_LO {
                assert_eq!(got, 0.0, "x = {x}");
            } else if x > EXP_HI {
                assert_eq!(got, f32::INFINITY, "x = {x}");
            } else {
                let rel = ((got as f64 - want) / want).abs();
                assert!(rel < 5e-7, "x = {x}: {got} vs {want} (rel {rel:e})");
            }
            x += 0.0137;
        }
        assert_eq!(exp_fast(0.0), 1.0);
        assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_fast(f32::INFINITY), f32::INFINITY);
        assert!(exp_fast(f32::NAN).is_nan());
        let mut v: Vec<f32> = (0..37).map(|i| -0.3 * i as f32).collect();
        let want: Vec<f32> = v.iter().map(|&a| exp_fast(a)).collect();
        exp_in_place(&mut v);
        assert_eq!(v, want);
    }

    #[test]
    fn dot_exp_diff_matches_plain_loop() {
        for n in [1usize, 8, 13, 64] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let y: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let a: Vec<f32> = (0..n).map(|i| -0.1 * i as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| -0.05 * i as f32).collect();
            let want: f64 = (0..n).map(|r| x[r] as f64 * y[r] as f64 * ((a[r] - b[r]) as f64).exp()).sum();
            assert!((dot_exp_diff(&x, &y, &a, &b) as f64 - want).abs() < 1e-5, "n = {n}");
        }
    }
}
