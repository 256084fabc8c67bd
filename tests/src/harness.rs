//! The conformance harness: cases, tolerances, comparison and reports.
//!
//! A [`Case`] computes an op on the device under test and the same op with the CPU
//! reference (the oracle), both as f32 values. [`compare`] measures the maximum absolute
//! error, the relative RMS error `||got - want|| / ||want||`, and collects the first
//! elements outside `atol + rtol * |want|`. A case passes when the relative RMS error is
//! within `tolerance.rel_rms` and no element is outside the element-wise bound.
//! Non-finite outputs always fail.

use linattn_tensor::{DType, Device, DeviceKind, Error, Result};
use serde::Serialize;

/// Explicit tolerances of one case.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    /// Bound on `||got - want||_2 / ||want||_2`.
    pub rel_rms: f64,
    /// Element-wise absolute part: `|got - want| <= atol + rtol * |want|`.
    pub atol: f64,
    /// Element-wise relative part.
    pub rtol: f64,
}

impl Tolerance {
    pub const fn new(rel_rms: f64, atol: f64, rtol: f64) -> Self {
        Tolerance { rel_rms, atol, rtol }
    }

    /// The default tolerance for a device-vs-reference comparison of a simple op whose
    /// output is rounded to `dtype` (one rounding of the output plus f32 accumulation).
    pub fn for_dtype(dtype: DType) -> Self {
        match dtype {
            DType::F32 => Tolerance::new(1e-5, 1e-5, 1e-4),
            DType::F16 => Tolerance::new(2e-3, 1e-3, 4e-3),
            DType::BF16 => Tolerance::new(5e-3, 4e-3, 1.6e-2),
            _ => Tolerance::new(1e-5, 1e-5, 1e-4),
        }
    }
}

/// Outcome of one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

/// Errors measured between a device result and the reference.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    pub max_abs_err: f64,
    /// Flat index of the largest absolute error.
    pub max_abs_index: usize,
    pub rel_rms_err: f64,
    /// Number of elements outside `atol + rtol * |want|` (non-finite counts as outside).
    pub outside: usize,
    /// The first elements outside the bound: (index, got, want).
    pub first_mismatches: Vec<(usize, f32, f32)>,
}

/// Compares `got` with `want` under `tol`.
pub fn compare(got: &[f32], want: &[f32], tol: &Tolerance) -> Comparison {
    let mut c = Comparison::default();
    if got.len() != want.len() {
        c.outside = got.len().max(want.len());
        c.max_abs_err = f64::INFINITY;
        c.rel_rms_err = f64::INFINITY;
        return c;
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let bad = !g.is_finite() || err.is_nan() || err > tol.atol + tol.rtol * (w as f64).abs();
        if bad {
            c.outside += 1;
            if c.first_mismatches.len() < 5 {
                c.first_mismatches.push((i, g, w));
            }
        }
        let err = if err.is_nan() { f64::INFINITY } else { err };
        if err > c.max_abs_err || (i == 0 && err == 0.0) {
            c.max_abs_err = err;
            c.max_abs_index = i;
        }
    }
    c.rel_rms_err = linattn_tensor::compare::relative_rms_error(want, got);
    c
}

/// What a case body returns: the device output and the reference output, as f32.
pub struct CaseOutput {
    pub got: Vec<f32>,
    pub want: Vec<f32>,
}

type CaseBody = Box<dyn Fn(&Device) -> Result<CaseOutput> + Send + Sync>;

/// One conformance case: an op at one dtype and shape.
pub struct Case {
    pub op: String,
    pub dtype: DType,
    pub shape: String,
    pub tolerance: Tolerance,
    /// Tolerances that replace `tolerance` on one kind of device, where that device's
    /// algorithm is documented to differ from the oracle's (none does today).
    pub device_tolerances: Vec<(DeviceKind, Tolerance)>,
    pub body: CaseBody,
}

impl Case {
    pub fn new(
        op: impl Into<String>,
        dtype: DType,
        shape: impl Into<String>,
        tolerance: Tolerance,
        body: impl Fn(&Device) -> Result<CaseOutput> + Send + Sync + 'static,
    ) -> Self {
        Case {
            op: op.into(),
            dtype,
            shape: shape.into(),
            tolerance,
            device_tolerances: Vec::new(),
            body: Box::new(body),
        }
    }

    /// Uses `tolerance` instead of the default on devices of `kind`.
    pub fn with_tolerance_for(mut self, kind: DeviceKind, tolerance: Tolerance) -> Self {
        self.device_tolerances.push((kind, tolerance));
        self
    }

    /// The tolerance that applies on `device`.
    pub fn tolerance_on(&self, device: &Device) -> Tolerance {
        self.device_tolerances.iter().find(|(k, _)| *k == device.kind()).map_or(self.tolerance, |(_, t)| *t)
    }
}

/// The result of running one case.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub suite: String,
    pub op: String,
    pub dtype: String,
    pub shape: String,
    pub max_abs_err: f64,
    pub rel_rms_err: f64,
    pub tolerance: Tolerance,
    pub status: Status,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl CaseResult {
    /// One human-readable line.
    pub fn line(&self) -> String {
        let mark = match self.status {
            Status::Passed => "ok  ",
            Status::Failed => "FAIL",
            Status::Skipped => "skip",
        };
        let mut s = format!(
            "{mark} {:<8} {:<28} {:<5} {:<26} max_abs={:.3e} rel_rms={:.3e} (tol rel_rms {:.1e})",
            self.suite, self.op, self.dtype, self.shape, self.max_abs_err, self.rel_rms_err, self.tolerance.rel_rms
        );
        if !self.detail.is_empty() {
            s.push_str("\n       ");
            s.push_str(&self.detail);
        }
        s
    }
}

/// Runs one case on `device`. An op that reports `NotImplementedOnDevice` is skipped
/// with that reason (counted and printed), and fails when `LINATTN_REQUIRE_GPU=1`.
pub fn run_case(suite: &str, case: &Case, device: &Device) -> CaseResult {
    let tolerance = case.tolerance_on(device);
    let mut result = CaseResult {
        suite: suite.to_string(),
        op: case.op.clone(),
        dtype: case.dtype.to_string(),
        shape: case.shape.clone(),
        max_abs_err: f64::NAN,
        rel_rms_err: f64::NAN,
        tolerance,
        status: Status::Failed,
        detail: String::new(),
    };
    let output = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.body)(device)));
    match output {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            result.detail = format!("panicked: {msg}");
        }
        Ok(Err(err @ Error::NotImplementedOnDevice { .. })) => {
            // Visible in every summary; a GPU run that must be complete fails instead.
            if !linattn_tensor::gpu_required() {
                result.status = Status::Skipped;
            }
            result.detail = format!("{err}");
        }
        Ok(Err(err)) => result.detail = format!("error: {err}"),
        Ok(Ok(out)) => {
            let c = compare(&out.got, &out.want, &tolerance);
            result.max_abs_err = c.max_abs_err;
            result.rel_rms_err = c.rel_rms_err;
            if out.got.len() != out.want.len() {
                result.detail =
                    format!("length mismatch: got {} values, reference has {}", out.got.len(), out.want.len());
            } else if c.outside == 0 && c.rel_rms_err <= tolerance.rel_rms {
                result.status = Status::Passed;
            } else {
                let pairs: Vec<String> =
                    c.first_mismatches.iter().map(|(i, g, w)| format!("[{i}] got {g} want {w}")).collect();
                result.detail = format!(
                    "{} of {} elements outside atol {:.1e} + rtol {:.1e}; largest error at index {}; first mismatches: {}",
                    c.outside,
                    out.want.len(),
                    tolerance.atol,
                    tolerance.rtol,
                    c.max_abs_index,
                    if pairs.is_empty() { "none (relative RMS over bound)".into() } else { pairs.join(", ") }
                );
            }
        }
    }
    result
}

/// A named group of cases, built lazily.
pub struct Suite {
    pub name: &'static str,
    pub cases: fn() -> Vec<Case>,
}

/// The outcome of opening a device for the suite.
pub enum DeviceOutcome {
    Ready(Device),
    /// The device is missing and skipping is allowed: the reason.
    Skip(String),
    /// The device is missing and required (`LINATTN_REQUIRE_GPU=1`, or
    /// `LINATTN_REQUIRE_WGPU=1` for WebGPU): the reason.
    Missing(String),
}

/// Opens the device named `spec` (`cpu`, `cuda`, `cuda:N`, `wgpu`), deciding whether a
/// missing GPU skips or fails.
pub fn open_device(spec: &str) -> DeviceOutcome {
    match Device::parse(spec) {
        Ok(d) => DeviceOutcome::Ready(d),
        Err(err @ Error::DeviceUnavailable { .. }) => {
            let required = if spec.starts_with("wgpu") {
                linattn_tensor::wgpu_required()
            } else {
                linattn_tensor::cuda_required()
            };
            if required { DeviceOutcome::Missing(err.to_string()) } else { DeviceOutcome::Skip(err.to_string()) }
        }
        Err(err) => DeviceOutcome::Missing(err.to_string()),
    }
}

/// A deterministic generator of test data (SplitMix64), so every device sees the same
/// inputs and failures reproduce.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform(1e-7, 1.0);
        let u2 = self.uniform(0.0, 1.0);
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
}

/// `values` rounded to `dtype` and back to f32, so references see what the device sees.
pub fn round_to(values: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => values.iter().map(|&v| linattn_tensor::f16::from_f32(v).to_f32()).collect(),
        DType::BF16 => values.iter().map(|&v| linattn_tensor::bf16::from_f32(v).to_f32()).collect(),
        _ => values.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_reports_index_and_pairs() {
        let tol = Tolerance::new(1e-6, 1e-6, 0.0);
        let c = compare(&[1.0, 2.0, 3.5], &[1.0, 2.0, 3.0], &tol);
        assert_eq!(c.outside, 1);
        assert_eq!(c.max_abs_index, 2);
        assert_eq!(c.first_mismatches, vec![(2, 3.5, 3.0)]);
        assert!((c.rel_rms_err - 0.5 / 14f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn nan_never_passes() {
        let tol = Tolerance::new(1.0, 1.0, 1.0);
        let c = compare(&[f32::NAN], &[1.0], &tol);
        assert_eq!(c.outside, 1);
    }

    #[test]
    fn failing_case_is_reported_as_failed() {
        let case = Case::new("wrong", DType::F32, "[3]", Tolerance::for_dtype(DType::F32), |_| {
            Ok(CaseOutput { got: vec![1.0, 2.0, 3.1], want: vec![1.0, 2.0, 3.0] })
        });
        let r = run_case("self", &case, &Device::Cpu);
        assert_eq!(r.status, Status::Failed);
        assert!(r.detail.contains("[2] got 3.1 want 3"), "{}", r.detail);
        let err_case =
            Case::new("err", DType::F32, "[1]", Tolerance::for_dtype(DType::F32), |_| Err(Error::invalid("boom")));
        assert_eq!(run_case("self", &err_case, &Device::Cpu).status, Status::Failed);
    }
}
