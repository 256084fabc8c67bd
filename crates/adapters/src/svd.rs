//! A small dense SVD: one-sided Jacobi (Hestenes) in f64.
//!
//! For `M [m, n]` with `m >= n` (otherwise we factor `M^T` and swap), columns of a
//! working copy `U = M` are rotated in pairs `(p, q)` until every pair is orthogonal to
//! within `1e-15` relative; the same rotations applied to `V = I` give `M V = U`. Then
//! `sigma_j = ||U[:, j]||`, `U[:, j] /= sigma_j`, and `M = U diag(sigma) V^T`.
//! Singular values come out sorted in decreasing order. Cost `O(sweeps * m n^2)`, fine
//! for the LoRA-sized deltas it is used on (combining adapters by SVD), not for
//! whole-model factorization. Accurate to a few ulps of `sigma_max` in f64.

use linattn_tensor::{Error, Result};

/// `M = U diag(S) V^T` with `k = min(m, n)` components, `S` decreasing.
#[derive(Clone, Debug)]
pub struct Svd {
    /// `[m, k]`, row-major, orthonormal columns.
    pub u: Vec<f64>,
    /// `[k]`, decreasing, >= 0.
    pub s: Vec<f64>,
    /// `[k, n]`, row-major, orthonormal rows (`V^T`).
    pub vt: Vec<f64>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

const MAX_SWEEPS: usize = 60;

/// Thin SVD of the row-major `m x n` matrix `a`.
pub fn svd(a: &[f64], m: usize, n: usize) -> Result<Svd> {
    if a.len() != m * n || m == 0 || n == 0 {
        return Err(Error::invalid(format!("svd: {} values for a {m} x {n} matrix", a.len())));
    }
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!("svd: non-finite value {} at flat index {i}", a[i])));
    }
    if m < n {
        let mut t = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                t[j * m + i] = a[i * n + j];
            }
        }
        let f = svd_tall(&t, n, m);
        // M^T = U S V^T  =>  M = V S U^T.
        let k = f.k;
        let mut u = vec![0f64; m * k];
        let mut vt = vec![0f64; k * n];
        for c in 0..k {
            for i in 0..m {
                u[i * k + c] = f.vt[c * m + i];
            }
            for j in 0..n {
                vt[c * n + j] = f.u[j * k + c];
            }
        }
        return Ok(Svd { u, s: f.s, vt, m, n, k });
    }
    Ok(svd_tall(a, m, n))
}

/// Jacobi SVD for `m >= n`; columns are stored contiguously for the rotations.
fn svd_tall(a: &[f64], m: usize, n: usize) -> Svd {
    // cols[j] = column j of M; v[j] = column j of V.
    let mut cols: Vec<Vec<f64>> = (0..n).map(|j| (0..m).map(|i| a[i * n + j]).collect()).collect();
    let mut v: Vec<Vec<f64>> = (0..n).map(|j| (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let alpha: f64 = cols[p].iter().map(|x| x * x).sum();
                let beta: f64 = cols[q].iter().map(|x| x * x).sum();
                let gamma: f64 = cols[p].iter().zip(&cols[q]).map(|(x, y)| x * y).sum();
                if gamma == 0.0 || gamma.abs() <= 1e-15 * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                rotate(&mut cols, p, q, c, s);
                rotate(&mut v, p, q, c, s);
            }
        }
        if !rotated {
            break;
        }
    }
    let sigma: Vec<f64> = cols.iter().map(|c| c.iter().map(|x| x * x).sum::<f64>().sqrt()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| sigma[y].total_cmp(&sigma[x]));
    let k = n;
    let mut u = vec![0f64; m * k];
    let mut vt = vec![0f64; k * n];
    let mut s = vec![0f64; k];
    for (c, &j) in order.iter().enumerate() {
        s[c] = sigma[j];
        let inv = if sigma[j] > 0.0 { 1.0 / sigma[j] } else { 0.0 };
        for i in 0..m {
            u[i * k + c] = cols[j][i] * inv;
        }
        for i in 0..n {
            vt[c * n + i] = v[j][i];
        }
    }
    Svd { u, s, vt, m, n, k }
}

fn rotate(cols: &mut [Vec<f64>], p: usize, q: usize, c: f64, s: f64) {
    let (left, right) = cols.split_at_mut(q);
    for (x, y) in left[p].iter_mut().zip(right[0].iter_mut()) {
        let (xp, yq) = (*x, *y);
        *x = c * xp - s * yq;
        *y = s * xp + c * yq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebuild(f: &Svd, rank: usize) -> Vec<f64> {
        let mut out = vec![0f64; f.m * f.n];
        for i in 0..f.m {
            for j in 0..f.n {
                out[i * f.n + j] = (0..rank).map(|c| f.u[i * f.k + c] * f.s[c] * f.vt[c * f.n + j]).sum();
            }
        }
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    #[test]
    fn reconstructs_tall_and_wide_matrices() {
        for (m, n) in [(7, 4), (4, 7), (5, 5), (1, 3), (3, 1)] {
            let a = pseudo_random(m * n, (m * 31 + n) as u64);
            let f = svd(&a, m, n).unwrap();
            let back = rebuild(&f, f.k);
            let err = a.iter().zip(&back).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(err < 1e-12, "{m}x{n}: {err}");
            assert!(f.s.windows(2).all(|w| w[0] >= w[1]), "{:?}", f.s);
            // Orthonormal columns of U.
            for c in 0..f.k {
                for d in 0..f.k {
                    let g: f64 = (0..m).map(|i| f.u[i * f.k + c] * f.u[i * f.k + d]).sum();
                    assert!((g - if c == d { 1.0 } else { 0.0 }).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn exact_low_rank_is_recovered_by_truncation() {
        // Rank-2 matrix 6 x 5: truncating to 2 components is exact.
        let (x, y) = (pseudo_random(12, 1), pseudo_random(10, 2));
        let a: Vec<f64> = (0..30).map(|idx| (0..2).map(|c| x[(idx / 5) * 2 + c] * y[c * 5 + idx % 5]).sum()).collect();
        let f = svd(&a, 6, 5).unwrap();
        assert!(f.s[2] < 1e-12, "{:?}", f.s);
        let back = rebuild(&f, 2);
        assert!(a.iter().zip(&back).all(|(p, q)| (p - q).abs() < 1e-12));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(svd(&[1.0, 2.0, 3.0], 2, 2).is_err());
        assert!(svd(&[1.0, f64::NAN], 1, 2).unwrap_err().to_string().contains("index 1"));
    }
}
