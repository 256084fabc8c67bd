//! `cargo xtask ci`: everything CI checks, in order, stopping at the first failure:
//!
//! 1. `cargo fmt --all --check`
//! 2. `cargo clippy --workspace --all-targets -- -D warnings`
//! 3. `cargo xtask kernels --check` (committed PTX up to date, ptxas clean)
//! 4. `cargo xtask wgsl` (every shader validates with naga)
//! 5. `cargo test --workspace` with `LINATTN_REQUIRE_WGPU=1`, so the WebGPU conformance
//!    cases must run (on Mesa lavapipe in CI) instead of skipping.
//!
//! `--no-lint` skips steps 1 and 2 for a quicker local run.

use std::process::Command;
use std::time::Instant;

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn step(name: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    eprintln!("==> xtask ci: {name}");
    let start = Instant::now();
    let result = f();
    let secs = start.elapsed().as_secs_f64();
    match &result {
        Ok(()) => eprintln!("==> xtask ci: {name}: ok ({secs:.1} s)"),
        Err(e) => eprintln!("==> xtask ci: {name}: FAILED after {secs:.1} s: {e}"),
    }
    result.map_err(|e| format!("{name}: {e}"))
}

fn run_cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(args).current_dir(crate::workspace_root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|e| format!("could not run cargo {}: {e}", args.join(" ")))?;
    if status.success() { Ok(()) } else { Err(format!("cargo {} exited with {status}", args.join(" "))) }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    if let Some(unknown) = args.iter().find(|a| a.as_str() != "--no-lint") {
        return Err(format!("unknown option `{unknown}`; expected --no-lint"));
    }
    let start = Instant::now();
    if lint {
        step("fmt", || run_cargo(&["fmt", "--all", "--", "--check"], &[]))?;
        step("clippy", || run_cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[]))?;
    }
    step("kernels --check", || crate::kernels::run(&["--check".to_string()]))?;
    step("wgsl", || crate::wgsl::run(&[]))?;
    let require_wgpu = std::env::var("LINATTN_REQUIRE_WGPU").unwrap_or_else(|_| "1".into());
    step("tests", || run_cargo(&["test", "--workspace"], &[("LINATTN_REQUIRE_WGPU", require_wgpu.as_str())]))?;
    eprintln!("==> xtask ci: all steps passed in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
