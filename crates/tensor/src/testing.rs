//! Deterministic pseudo-random inputs for the workspace's tests and benchmarks.
//!
//! [`uniform`] is a xorshift64 stream (shifts 13, 7, 17) seeded with `seed * 0x9E37...15
//! | 1` (never zero); each draw takes the top 24 bits of the state as `u` in [0, 1) and
//! returns `lo + (hi - lo) * u` in f32. The same seed always gives the same values on
//! every platform, so a failing case can be replayed from its seed. Not for anything
//! that needs statistical quality.

/// `n` values in `[lo, hi)` from the xorshift stream of `seed` (see the module header).
pub fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_deterministic_and_in_range() {
        let a = uniform(10_000, 7, -8.0, 8.0);
        assert_eq!(a, uniform(10_000, 7, -8.0, 8.0));
        assert_ne!(a, uniform(10_000, 8, -8.0, 8.0));
        assert!(a.iter().all(|&x| (-8.0..8.0).contains(&x)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.2, "mean {mean}");
    }
}
