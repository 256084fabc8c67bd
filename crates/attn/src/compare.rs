//! Error metrics for comparing an op's output against its reference.
//!
//! The main metric is flash-linear-attention's relative RMS error
//! `||reference - actual||_2 / ||reference||_2`, computed in f64. When the reference is
//! all zeros the absolute RMS of the difference is returned instead, so an all-zero
//! reference still rejects a non-zero output. A [`Comparison`] also records the largest
//! absolute difference and where it is, for failure messages.

use linattn_tensor::{Error, Result};

pub use linattn_tensor::compare::relative_rms_error;

/// Summary of how far `actual` is from `reference`.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Relative RMS error (see [`relative_rms_error`]).
    pub relative_rms: f64,
    /// Largest `|reference[i] - actual[i]|`.
    pub max_abs: f64,
    /// Index of that largest difference.
    pub max_abs_index: usize,
    /// The first few `(index, reference, actual)` triples whose difference exceeds
    /// `1e-6 + 1e-3 * |reference|` (for diagnostics only).
    pub first_mismatches: Vec<(usize, f32, f32)>,
}

impl std::fmt::Display for Comparison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "relative RMS {:.3e}, max abs {:.3e} at index {}, first mismatches (index, ref, out): {:?}",
            self.relative_rms, self.max_abs, self.max_abs_index, self.first_mismatches
        )
    }
}

/// Compares two equally long slices; errors naming both lengths otherwise.
pub fn compare(reference: &[f32], actual: &[f32]) -> Result<Comparison> {
    if reference.len() != actual.len() {
        return Err(Error::invalid(format!(
            "compare: reference has {} values but actual has {}",
            reference.len(),
            actual.len()
        )));
    }
    let mut max_abs = 0.0f64;
    let mut max_abs_index = 0;
    let mut first_mismatches = Vec::new();
    for (i, (&r, &a)) in reference.iter().zip(actual).enumerate() {
        let d = (r as f64 - a as f64).abs();
        let d = if d.is_nan() { f64::INFINITY } else { d };
        if d > max_abs {
            max_abs = d;
            max_abs_index = i;
        }
        if d > 1e-6 + 1e-3 * (r as f64).abs() && first_mismatches.len() < 4 {
            first_mismatches.push((i, r, a));
        }
    }
    Ok(Comparison { relative_rms: relative_rms_error(reference, actual), max_abs, max_abs_index, first_mismatches })
}

/// `Ok` when the relative RMS error is at most `tolerance`; otherwise an error message
/// naming `what` and the full [`Comparison`].
pub fn check_close(what: &str, reference: &[f32], actual: &[f32], tolerance: f64) -> Result<Comparison, String> {
    let cmp = compare(reference, actual).map_err(|e| format!("{what}: {e}"))?;
    if cmp.relative_rms <= tolerance {
        Ok(cmp)
    } else {
        Err(format!("{what}: relative RMS above tolerance {tolerance:.1e}: {cmp}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_detects_differences() {
        let r = [1.0f32, -2.0, 3.0];
        assert_eq!(relative_rms_error(&r, &r), 0.0);
        let e = relative_rms_error(&r, &[1.0, -2.0, 3.1]);
        assert!((e - 0.1 / 14f64.sqrt()).abs() < 1e-6, "{e}");
        assert!(relative_rms_error(&r, &[1.0, f32::NAN, 3.0]).is_infinite());
        assert!(relative_rms_error(&[0.0, 0.0], &[0.0, 1.0]) > 0.5);
        assert!(compare(&r, &r[..2]).is_err());
        let err = check_close("o", &r, &[1.0, -2.0, 4.0], 1e-3).unwrap_err();
        assert!(err.contains("index 2"), "{err}");
    }
}
