//! The conformance suite instantiated per device: `cpu::`, `wgpu::` and `cuda::` tests
//! run every suite against the CPU reference. A missing GPU prints the reason and skips;
//! `LINATTN_REQUIRE_GPU=1` (any GPU) or `LINATTN_REQUIRE_WGPU=1` (WebGPU) turns that skip
//! into a failure, so a GPU run can never pass by skipping.

use std::io::Write;

use linattn_conformance::harness::{DeviceOutcome, Status, open_device};

fn run(spec: &str, suite: &str) {
    let device = match open_device(spec) {
        DeviceOutcome::Ready(d) => d,
        DeviceOutcome::Skip(reason) => {
            linattn_tensor::report_skip(&format!(
                "conformance suite `{suite}` on {spec}: {reason} (LINATTN_REQUIRE_GPU=1 turns this into a failure)"
            ));
            return;
        }
        DeviceOutcome::Missing(reason) => panic!("{spec} is required but unavailable: {reason}"),
    };
    println!("device: {} ({})", device.name(), device.kind());
    let report = linattn_conformance::run_suites(&device, Some(suite), |r| println!("{}", r.line()));
    let failed: Vec<String> = report.cases.iter().filter(|c| c.status == Status::Failed).map(|c| c.line()).collect();
    let _ = writeln!(std::io::stderr(), "{} [{suite} on {}]", report.summary(), device.name());
    assert!(report.passed > 0, "no case of suite `{suite}` ran on {spec}");
    assert!(failed.is_empty(), "{} case(s) failed on {spec}:\n{}", failed.len(), failed.join("\n"));
}

macro_rules! device_suites {
    ($device:ident, $spec:expr) => {
        mod $device {
            #[test]
            fn tensor_ops() {
                super::run($spec, "tensor");
            }

            #[test]
            fn attn_ops() {
                super::run($spec, "attn");
            }

            #[test]
            fn quant_ops() {
                super::run($spec, "quant");
            }

            #[test]
            fn adapters_ops() {
                super::run($spec, "adapters");
            }
        }
    };
}

device_suites!(cpu, "cpu");
device_suites!(wgpu, "wgpu");
device_suites!(cuda, "cuda");
