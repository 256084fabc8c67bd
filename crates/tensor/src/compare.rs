//! The error metric every linattn test and the conformance suite report: the relative
//! RMS error `||reference - actual||_2 / ||reference||_2`, accumulated in f64. A length
//! mismatch or any non-finite value gives infinity (so it can never pass a bound); an
//! all-zero reference gives the plain RMS of the difference.

/// Relative RMS error of `actual` against `reference`.
pub fn relative_rms_error(reference: &[f32], actual: &[f32]) -> f64 {
    if reference.len() != actual.len() {
        return f64::INFINITY;
    }
    let (mut diff_sq, mut ref_sq) = (0.0f64, 0.0f64);
    for (&r, &a) in reference.iter().zip(actual) {
        if !a.is_finite() || !r.is_finite() {
            return f64::INFINITY;
        }
        let d = r as f64 - a as f64;
        diff_sq += d * d;
        ref_sq += r as f64 * r as f64;
    }
    if ref_sq == 0.0 { (diff_sq / reference.len().max(1) as f64).sqrt() } else { (diff_sq / ref_sq).sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values() {
        assert_eq!(relative_rms_error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((relative_rms_error(&[3.0, 4.0], &[3.0, 4.5]) - 0.1).abs() < 1e-12);
        assert!(relative_rms_error(&[1.0], &[f32::NAN]).is_infinite());
        assert!(relative_rms_error(&[1.0], &[1.0, 2.0]).is_infinite());
        assert_eq!(relative_rms_error(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
    }
}
