//! `linattn devices`: which devices this machine can open, and why not when it cannot.

use std::process::ExitCode;

use linattn_tensor::{Device, Result};

pub fn run() -> Result<ExitCode> {
    for spec in ["cpu", "cuda", "wgpu"] {
        match Device::parse(spec) {
            Ok(device) => println!("{spec:<5} available: {}", device.name()),
            Err(err) => println!("{spec:<5} unavailable: {err}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
