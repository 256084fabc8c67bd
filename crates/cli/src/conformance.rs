//! `linattn conformance --device cpu|cuda|wgpu [--json] [--suite NAME]`: the
//! conformance suite as a command, so a release binary can verify a GPU machine that
//! has no Rust toolchain. Text mode prints one line per case and a summary; `--json`
//! prints one object (`device`, `backend`, `passed`, `failed`, `skipped`, `cases`). The
//! exit status is 1 when any case failed, or when the device is missing and
//! `LINATTN_REQUIRE_GPU=1` is set.

use std::process::ExitCode;

use linattn_conformance::Report;
use linattn_conformance::harness::{DeviceOutcome, open_device};
use linattn_tensor::{Error, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Device to test: cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Run only suites whose name contains this (tensor, attn, quant, adapters).
    #[arg(long)]
    suite: Option<String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let report = match open_device(&args.device) {
        DeviceOutcome::Ready(device) => {
            if !args.json {
                println!("device: {} ({})", device.name(), device.kind());
            }
            linattn_conformance::run_suites(&device, args.suite.as_deref(), |r| {
                if !args.json {
                    println!("{}", r.line());
                }
            })
        }
        DeviceOutcome::Skip(reason) => Report::unavailable(&args.device, &reason, false),
        DeviceOutcome::Missing(reason) => Report::unavailable(&args.device, &reason, true),
    };
    if args.json {
        let text = serde_json::to_string(&report).map_err(|e| Error::invalid(format!("JSON: {e}")))?;
        println!("{text}");
    } else {
        if report.passed + report.failed == 0 {
            for case in &report.cases {
                println!("{}", case.line());
            }
        }
        println!("{}", report.summary());
    }
    Ok(if report.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
