//! linattn-conformance: one cross-device suite, written once against a `Device`
//! parameter and run on CPU, WebGPU and CUDA. The oracle is always the CPU reference.
//!
//! - [`harness`]: cases, tolerances, comparison, device opening with skip/require rules.
//! - [`tensor_ops`]: the tensor core ops.
//! - [`attn`]: the linear-attention ops (prefill, decode, varlen, feature maps, window).
//! - [`quant`]: quantized matmul of every format; [`quant_int8`]: LLM.int8's outlier
//!   decomposition (cases of the `quant` suite).
//! - [`adapters`]: the fused unmerged LoRA forward.
//! - [`suites`] lists every suite; [`run_suites`] runs them on a device and returns a
//!   [`Report`] (the `linattn conformance` command prints it as text or JSON).

pub mod adapters;
pub mod attn;
pub mod harness;
pub mod quant;
pub mod quant_int8;
pub mod tensor_ops;

use harness::{CaseResult, Status, Suite};
use linattn_tensor::Device;
use serde::Serialize;

/// Every suite, in run order.
pub fn suites() -> Vec<Suite> {
    vec![
        Suite { name: "tensor", cases: tensor_ops::cases },
        Suite { name: "attn", cases: attn::cases },
        Suite { name: "quant", cases: quant::cases },
        Suite { name: "adapters", cases: adapters::cases },
    ]
}

/// Results of a run on one device.
#[derive(Debug, Serialize)]
pub struct Report {
    pub device: String,
    pub backend: String,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub cases: Vec<CaseResult>,
}

impl Report {
    /// An empty report for `device`.
    pub fn new(device: &Device) -> Report {
        Report {
            device: device.name(),
            backend: device.kind().to_string(),
            passed: 0,
            failed: 0,
            skipped: 0,
            cases: Vec::new(),
        }
    }

    /// A report of a device that could not be opened: one skipped (or failed) entry.
    pub fn unavailable(spec: &str, reason: &str, required: bool) -> Report {
        let status = if required { Status::Failed } else { Status::Skipped };
        let case = CaseResult {
            suite: "device".into(),
            op: "open".into(),
            dtype: "-".into(),
            shape: "-".into(),
            max_abs_err: f64::NAN,
            rel_rms_err: f64::NAN,
            tolerance: harness::Tolerance::new(0.0, 0.0, 0.0),
            status,
            detail: reason.to_string(),
        };
        Report {
            device: spec.to_string(),
            backend: spec.split(':').next().unwrap_or(spec).to_string(),
            passed: 0,
            failed: usize::from(required),
            skipped: usize::from(!required),
            cases: vec![case],
        }
    }

    fn push(&mut self, r: CaseResult) {
        match r.status {
            Status::Passed => self.passed += 1,
            Status::Failed => self.failed += 1,
            Status::Skipped => self.skipped += 1,
        }
        self.cases.push(r);
    }

    /// The closing summary line (`N passed, N failed, N skipped`).
    pub fn summary(&self) -> String {
        format!("conformance: {} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }
}

/// Runs the suites whose name matches `filter` (all when `None`) on `device`, calling
/// `on_case` after each case (for progress output).
pub fn run_suites(device: &Device, filter: Option<&str>, mut on_case: impl FnMut(&CaseResult)) -> Report {
    let mut report = Report::new(device);
    for suite in suites() {
        if filter.is_some_and(|f| !suite.name.contains(f)) {
            continue;
        }
        for case in (suite.cases)() {
            let r = harness::run_case(suite.name, &case, device);
            on_case(&r);
            report.push(r);
        }
    }
    report
}
